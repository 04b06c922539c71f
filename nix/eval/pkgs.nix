# Stand-ins for the packages and builders the modules name. A package is a derivation-shaped
# attribute set with a fixed, recognisable store path, so option types that want a package or a
# path accept it and the tests can see which package a unit runs.
{ lib }:
let
  package = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    # nixpkgs' lib.getExe reads this.
    meta.mainProgram = name;
  };
  file = name: "/nix/store/00000000000000000000000000000000-${name}";
  # What the modules, the unit options (a stage 2 service's default PATH) and
  # nix-community/impermanence name.
  packages = lib.genAttrs [
    "bash"
    "btrfs-progs"
    "coreutils"
    "findutils"
    "gnugrep"
    "gnused"
    "systemd"
    "util-linux"
  ] package;
in
packages
// {
  writeText = name: _: file name;
  # A unit's `script` becomes one (nix/eval/systemd.nix); impermanence builds its helpers with
  # these two.
  writeShellScriptBin = name: _: package name;
  writeShellScript = name: _: package name;
  runCommand =
    name: _: _:
    package name;
  # nix/modules/manifest.nix builds the toolkit and the boot step with callPackage; the real
  # impermanence module builds its helper library the same way.
  callPackage =
    f: _:
    if builtins.isPath f && baseNameOf f == "lib.nix" then
      import f { inherit lib; }
    else if builtins.isPath f && baseNameOf f == "bootstep.nix" then
      package "pantheros-bootstep"
    else
      package "pantheros";
}
