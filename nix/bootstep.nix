# The boot step (issue 10, docs/decisions.md): the `pantheros-rollback` bash script and its C
# helper `pantheros-btrfs`, side by side in $out/bin, as each expects (`pantheros-btrfs rollback`
# runs the usual boot and execs the script for anything else, D155). This is all the initrd
# runs: no Python.
{
  lib,
  stdenv,
  bashInteractive,
}:
let
  boot = ../src/pantheros/data/boot;
in
stdenv.mkDerivation {
  pname = "pantheros-bootstep";
  version = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project.version;
  src = lib.fileset.toSource {
    root = boot;
    fileset = lib.fileset.unions [
      (boot + "/pantheros-rollback")
      (boot + "/pantheros-btrfs.c")
    ];
  };

  buildPhase = ''
    runHook preBuild
    $CC -O2 -Wall -o pantheros-btrfs pantheros-btrfs.c
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    install -Dm755 pantheros-btrfs $out/bin/pantheros-btrfs
    install -Dm755 pantheros-rollback $out/bin/pantheros-rollback
    runHook postInstall
  '';

  # The interpreter must be in the initrd, and the initrd builder does not follow a script's
  # interpreter. NixOS's systemd initrd always carries bashInteractive
  # (boot.initrd.systemd.initrdBin), so the script names that bash, not stdenv's.
  dontPatchShebangs = true;
  postFixup = ''
    substituteInPlace $out/bin/pantheros-rollback \
      --replace-fail '#!/usr/bin/env bash' '#!${bashInteractive}/bin/bash'
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    # Bad arguments exit 2 with the usage: the shebang and the script are sound.
    status=0
    usage=$($out/bin/pantheros-rollback --no-such-option 2>&1) || status=$?
    [[ $status == 2 && $usage == *"usage: pantheros-rollback"* ]]
    # The helper's `rollback` runs the script beside it for anything but the usual boot.
    status=0
    usage=$($out/bin/pantheros-btrfs rollback --no-such-option 2>&1) || status=$?
    [[ $status == 2 && $usage == *"usage: pantheros-rollback"* ]]
    $out/bin/pantheros-btrfs info $out >/dev/null
    runHook postInstallCheck
  '';

  meta = {
    description = "PantherOS boot step: roll the btrfs root back before it is mounted";
    mainProgram = "pantheros-rollback";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
