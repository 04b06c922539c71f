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
  packages = lib.genAttrs [
    "bash"
    "bashInteractive"
    "btrfs-progs"
    "coreutils"
    "cryptsetup"
    "findutils"
    "gawk"
    "gnugrep"
    "gnused"
    "systemd"
    "util-linux"
  ] package;
in
packages
// {
  inherit lib;
  path = "/nonexistent";
  stdenv.hostPlatform.system = "x86_64-linux";
  writeText = name: _: file name;
  writeShellScript = name: _: package name;
  writeShellScriptBin = name: _: package name;
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
