# The root is wiped across two reboots; persisted files keep their contents, owner and mode.
{ pkgs, self }:
let common = import ./lib.nix { inherit pkgs self; };
in
pkgs.testers.runNixOSTest {
  name = "pantheros-rollback";
  nodes.machine = common.node;
  testScript = ''
    ${common.firstBoot}

    machine.succeed("echo scratch > /etc/scratch")
    machine.succeed("echo kept > /var/lib/kept/data && echo conf > /etc/kept.conf")
    for boot in range(2):
        machine.reboot()
        machine.wait_for_unit("multi-user.target")
        machine.fail("test -e /etc/scratch")
        assert machine.succeed("cat /var/lib/kept/data").strip() == "kept"
        assert machine.succeed("cat /etc/kept.conf").strip() == "conf"
        assert machine.succeed("stat -c '%U %G %a' /var/lib/kept").strip() == "nobody nogroup 750"
        status = machine.succeed("panther status --json")
        assert '"state": "fresh"' in status, status
  '';
}
