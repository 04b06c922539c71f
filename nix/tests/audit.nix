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
    ${common.firstBoot}
    machine.succeed("panther audit --fail-on low --json > /tmp/audit.json")
  '';
}
