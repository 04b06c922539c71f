# `panther diff` shows a stray file in the root and nothing that is declared persistent; both
# reboots wipe the stray file.
{ pkgs, self }:
let
  common = import ./lib.nix { inherit pkgs self; };
in
pkgs.testers.runNixOSTest {
  name = "pantheros-diff";
  nodes.machine = common.node { };
  testScript = ''
    ${common.firstBoot}

    for boot in range(2):
        machine.succeed("echo stray > /etc/stray && echo kept > /var/lib/kept/data")
        out = machine.succeed("panther diff --json")
        assert "/etc/stray" in out, out
        assert "/var/lib/kept" not in out, out
        machine.reboot()
        boot_pantheros()
        machine.fail("test -e /etc/stray")
  '';
}
