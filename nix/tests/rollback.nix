# Two reboots: the root is wiped each time by the boot step in the initrd, persisted files keep
# their contents, owner and mode, one more old root is kept each boot, stage 2 records a fresh
# root and the login warning stays empty, and the machine passes its own audit.
{ pkgs, self }:
let
  common = import ./lib.nix { inherit pkgs self; };
in
pkgs.testers.runNixOSTest {
  name = "pantheros-rollback";
  nodes.machine = common.node {
    pantheros.security = {
      enable = true;
      level = "hardened";
    };
  };
  testScript = ''
    ${common.firstBoot}

    machine.succeed("echo scratch > /etc/scratch")
    machine.succeed("echo kept > /var/lib/kept/data && echo conf > /etc/kept.conf")
    for boot in range(2):
        before = len(old_roots())
        machine.reboot()
        boot_pantheros()
        machine.fail("test -e /etc/scratch")
        assert machine.succeed("cat /var/lib/kept/data").strip() == "kept"
        assert machine.succeed("cat /etc/kept.conf").strip() == "conf"
        assert machine.succeed("stat -c '%U %G %a' /var/lib/kept").strip() == "nobody nogroup 750"
        assert machine.succeed("stat -c '%a' /persist/etc/kept.conf").strip() == "600"
        assert "result=fresh" in machine.succeed("cat /run/pantheros/rollback.report")
        machine.fail("test -s /run/pantheros/login-warning")
        status = machine.succeed("panther status --json")
        assert '"state": "fresh"' in status, status
        assert len(old_roots()) == before + 1
        machine.succeed("echo scratch > /etc/scratch")

    machine.succeed("panther audit --fail-on low --json > /tmp/audit.json")
  '';
}
