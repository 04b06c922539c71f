# Old roots accumulate across boots and stage 2's retention keeps at most maxCount of them; a
# file is restored from an old root.
{ pkgs, self }:
let
  common = import ./lib.nix { inherit pkgs self; };
in
pkgs.testers.runNixOSTest {
  name = "pantheros-retention";
  nodes.machine = common.node { };
  testScript = ''
    ${common.firstBoot}

    for boot in range(5):
        machine.succeed(f"echo {boot} > /etc/boot-{boot}")
        machine.reboot()
        boot_pantheros()
        assert len(old_roots()) <= 3, old_roots()
    roots = old_roots()
    assert len(roots) == 3, roots
    newest = roots[0]["name"]
    machine.succeed(f"panther restore /etc/boot-4 --from {newest} --to /root/restored")
    assert machine.succeed("cat /root/restored").strip() == "4"
  '';
}
