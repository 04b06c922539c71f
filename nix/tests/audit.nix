# Each level passes its own audit after a reboot into a rolled-back root (strict's hidepid
# check is waived on NixOS, with its reason; lockdown is not applicable on NixOS's kernel).
{ pkgs, self }:
let
  common = import ./lib.nix { inherit pkgs self; };
in
pkgs.testers.runNixOSTest {
  name = "pantheros-audit";
  nodes.machine = common.node {
    pantheros.security = {
      enable = true;
      level = "strict";
      # The audit checks perf_event_paranoid by its effect: NixOS's default (mainline) kernel
      # treats 3 as 2, so without a hardened kernel the honest answer is a waiver.
      waivers."sysctl.kernel.perf_event_paranoid".reason =
        "the test VM runs NixOS's default kernel, which lacks the paranoid=3 patch";
    };
    # strict forbids root over SSH; the test logs in through the test driver's own console.
    users.users.op = {
      isNormalUser = true;
      extraGroups = [ "wheel" ];
      initialPassword = "op";
    };
  };
  testScript = ''
    ${common.firstBoot}

    for boot in range(2):
        machine.reboot()
        boot_pantheros()
        report = json.loads(machine.succeed("panther audit --fail-on low --json"))
        assert "mount.proc" in json.dumps(report), report
    # A login shares the system's mount namespace: what root mounts there, the rest sees.
    machine.succeed("mkdir -p /run/probe && mount -t tmpfs probe /run/probe")
    machine.succeed("su - op -c 'findmnt /run/probe'")
    machine.succeed("umount /run/probe")
  '';
}
