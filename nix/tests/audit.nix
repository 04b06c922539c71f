# The hardened level passes its own audit.
{ pkgs, self }:
let common = import ./lib.nix { inherit pkgs self; };
in
pkgs.testers.runNixOSTest {
  name = "pantheros-audit";
  nodes.machine = { ... }: {
    imports = [ common.node ];
    pantheros.security.level = "hardened";
  };
  testScript = ''
    machine.start()
    ${common.format}
    machine.reboot()
    machine.wait_for_unit("multi-user.target")
    machine.succeed("panther audit --fail-on low --json > /tmp/audit.json")
  '';
}
