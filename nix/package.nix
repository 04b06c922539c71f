# The panther toolkit, built from pyproject.toml, with the system tools it runs on its PATH, the
# boot step it runs (`panther rollback`, `panther lab reboot`) from nix/bootstep.nix, and the
# audit's file walker built from its C source (elsewhere panther compiles it at first use).
{
  lib,
  python3Packages,
  btrfs-progs,
  cryptsetup,
  gptfdisk,
  util-linux,
  dosfstools,
  coreutils,
  acl,
  pantheros-bootstep,
}:
python3Packages.buildPythonApplication {
  pname = "pantheros";
  version = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project.version;
  pyproject = true;
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../README.md
      ../src
    ];
  };
  build-system = [ python3Packages.setuptools ];
  # Runtime: jsonschema checks the manifest (D72); shtab writes `panther completion`.
  dependencies = [
    python3Packages.jsonschema
    python3Packages.shtab
  ];
  # pantheros.audit.inventory: the walker, not a compile at run time (D156).
  postInstall = ''
    $CC -O2 -Wall -pthread -o pantheros-walk src/pantheros/data/audit/pantheros-walk.c
    install -Dm755 pantheros-walk $out/libexec/pantheros/pantheros-walk
  '';
  makeWrapperArgs = [
    "--prefix"
    "PATH"
    ":"
    (lib.makeBinPath [
      btrfs-progs
      cryptsetup
      gptfdisk
      util-linux
      dosfstools
      coreutils
      acl
    ])
    # pantheros.impermanence.bootstep.artifact_dir(): the built step, not a compile at run time.
    "--set"
    "PANTHER_BOOTSTEP_DIR"
    "${pantheros-bootstep}/bin"
    "--set"
    "PANTHER_WALKER"
    "${placeholder "out"}/libexec/pantheros/pantheros-walk"
  ];
  pythonImportsCheck = [ "pantheros" ];
  meta = {
    description = "PantherOS toolkit: btrfs impermanence made safe, hardening made provable";
    mainProgram = "panther";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
