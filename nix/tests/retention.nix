# Old roots accumulate across boots and retention keeps at most maxCount of them.
{ pkgs, self }:
let common = import ./lib.nix { inherit pkgs self; };
in
pkgs.testers.runNixOSTest {
  name = "pantheros-retention";
  nodes.machine = common.node;
  testScript = ''
    import json
    ${common.firstBoot}
    for boot in range(5):
        machine.reboot()
        machine.wait_for_unit("multi-user.target")
        machine.succeed(f"echo {boot} > /etc/boot-{boot}")
        machine.succeed("panther roots gc")
    roots = json.loads(machine.succeed("panther roots list --json"))["roots"]
    assert len(roots) == 3, roots
    newest = roots[0]["name"]
    machine.succeed(f"panther restore /etc/boot-3 --from {newest} --to /root/restored")
    assert machine.succeed("cat /root/restored").strip() == "3"
  '';
}
