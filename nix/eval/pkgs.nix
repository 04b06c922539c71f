# Stand-ins for the packages and builders the modules name. A package is a derivation-shaped
# attribute set with a fixed, recognisable store path, so option types that want a package or a
# path accept it and the tests can see which package a unit runs. The evaluation over NixOS's own
# module files (nix/eval/real-files.nix) names more of them; they are declared the same way.
{ lib }:
let
  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  package =
    name:
    let
      self = {
        type = "derivation";
        inherit name;
        pname = name;
        version = "0";
        outPath = store name;
        drvPath = store "${name}.drv";
        # nixpkgs' lib.getExe reads this.
        meta.mainProgram = name;
        out = self;
        bin = self;
        outputs = [ "out" ];
        override = _: self;
        overrideAttrs = _: self;
        # What NixOS's modules ask of a few packages (openssh, systemd).
        withKerberos = false;
        withEfi = true;
        util-linux = package "util-linux";
        kmod = package "kmod";
      };
    in
    self;
  shell =
    name: path:
    package name
    // {
      shellPath = path;
    };
  file = name: store name;
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
    # Named by NixOS's module files.
    "shadow"
    "openssh"
    "sudo"
    "kmod"
    "kmod-debian-aliases"
    "kmod-blacklist-ubuntu"
    "cryptsetup"
    "dosfstools"
    "less"
    "bashNonInteractive"
    "glibc"
    "lndir"
    "openssl"
    "jq"
    "getent"
    "nixos-init"
    "xauth"
    "python3"
    "composefs"
    "erofs-utils"
  ] package;
  # A kernel as NixOS's modules read it: its config and features (nixpkgs kernels have all the
  # features NixOS requires).
  kernel = package "linux" // {
    override = _: kernel;
    version = "6.12.0";
    features = { };
    configfile = file "linux-config";
    config = {
      isSet = _: true;
      isYes = _: true;
      isNo = _: false;
      isModule = _: false;
      isEnabled = _: true;
      isDisabled = _: false;
    };
  };
  linuxPackages = {
    inherit kernel;
    extend = f: linuxPackages // f linuxPackages linuxPackages;
  };
in
packages
// {
  inherit linuxPackages;
  bashInteractive = shell "bash-interactive" "/bin/bash";
  fish = shell "fish" "/bin/fish";
  xonsh = shell "xonsh" "/bin/xonsh";
  zsh = shell "zsh" "/bin/zsh";
  runtimeShell = "${store "bash"}/bin/bash";
  libxcrypt.enabledCryptSchemeIds = [
    "y"
    "gy"
    "7"
    "2b"
    "2y"
    "2a"
    "6"
    "5"
    "sha1"
    "md5"
    "1"
  ];
  perl.withPackages = _: package "perl-with-packages";
  stdenv = {
    hostPlatform = {
      system = "x86_64-linux";
      isx86 = true;
      isAarch = false;
      is32bit = false;
      isLoongArch64 = false;
      libc = "glibc";
    };
    buildPlatform = {
      system = "x86_64-linux";
    };
    shell = "${store "bash"}/bin/bash";
  };
  buildPackages = packages;
  # pkgs.formats.keyValue: the freeform type NixOS gives sshd's settings, and a file.
  formats.keyValue = _: {
    type = lib.types.attrsOf (
      lib.types.nullOr (
        lib.types.oneOf [
          lib.types.bool
          lib.types.int
          lib.types.float
          lib.types.str
          lib.types.path
        ]
      )
    );
    generate = name: _: file name;
  };
  writeText = name: _: file name;
  # A unit's `script` becomes one (nix/eval/systemd.nix); impermanence builds its helpers with
  # these two.
  writeShellScriptBin = name: _: package name;
  writeShellScript = name: _: package name;
  writeScriptBin = name: _: package name;
  runCommand =
    name: _: _:
    package name;
  runCommandLocal =
    name: _: _:
    package name;
  runCommandCC =
    name: _: _:
    package name;
  buildEnv = args: package args.name;
  makeInitrdNG = args: package args.name;
  aggregateModules = _: package "kernel-modules";
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
