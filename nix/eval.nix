# Evaluates the PantherOS modules with nixpkgs' lib.evalModules, without nixpkgs itself: the
# NixOS options the modules and the example hosts set are declared loosely, pkgs and utils are
# stubs; a typo under pantheros.* fails as it does in NixOS.
# nix-community/impermanence's real module is used when its checkout is given.
# Output: what the tests assert on (as JSON with --json), and with -A optionDocs the
# declarations that scripts/gen-options renders into docs/options.md.
{ nixpkgsLib, impermanence ? null, host ? { } }:
let
  # Paths given as strings (--argstr), so nothing is copied into the store.
  lib = import (/. + nixpkgsLib + "/lib");

  # Stands in for NixOS option types: attribute sets merge, lists concatenate, the rest must agree.
  loose = lib.mkOptionType {
    name = "loose";
    merge = loc: defs:
      let values = map (d: d.value) defs;
      in
      if lib.all lib.isList values then lib.concatLists values
      else if lib.all (v: lib.isAttrs v && !(v ? outPath)) values then (lib.types.lazyAttrsOf loose).merge loc defs
      else lib.types.anything.merge loc defs;
  };
  nixosOption = lib.mkOption { type = loose; default = { }; };

  fakePackage = name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  stubs = {
    config._module.args = {
      pkgs = {
        # impermanence builds its helper library with callPackage; everything else is a package.
        callPackage = f: _:
          if builtins.isPath f && baseNameOf f == "lib.nix" then import f { inherit lib; }
          else fakePackage "pantheros";
        writeText = name: _: "/nix/store/00000000000000000000000000000000-${name}";
        # impermanence's module refers to these only inside values that are never forced here.
        writeShellScript = name: _: fakePackage name;
        runCommand = name: _: _: fakePackage name;
        util-linux = fakePackage "util-linux";
        bash = fakePackage "bash";
        coreutils = fakePackage "coreutils";
        gnugrep = fakePackage "gnugrep";
        gnused = fakePackage "gnused";
        gawk = fakePackage "gawk";
        findutils = fakePackage "findutils";
        lib = lib;
        path = "/nonexistent";
        stdenv = { hostPlatform = { system = "x86_64-linux"; }; };
      };
      utils = {
        pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
        escapeSystemdPath = s:
          lib.replaceStrings [ "/" "-" " " ] [ "-" "\\x2d" "\\x20" ] (lib.removePrefix "/" s);
      };
    };
    # Declared (not free-form) so that reading one of them does not force every definition.
    options.fileSystems = nixosOption;
    options.boot = nixosOption;
    options.systemd = nixosOption;
    options.services = nixosOption;
    options.networking = nixosOption;
    options.security = nixosOption;
    options.swapDevices = lib.mkOption { type = loose; default = [ ]; };
    options.documentation = nixosOption;
    options.hardware = nixosOption;
    options.nixpkgs = nixosOption;
    options.system = nixosOption;
    options.virtualisation = nixosOption;
    options.environment.etc = nixosOption;
    options.environment.systemPackages = lib.mkOption { type = loose; default = [ ]; };
    options.environment.loginShellInit = lib.mkOption { type = lib.types.lines; default = ""; };
    options.assertions = lib.mkOption { type = lib.types.listOf lib.types.unspecified; default = [ ]; };
    options.warnings = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
    # impermanence reads users and groups; a minimal declaration (uid/gid optional) is enough.
    options.users.users = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule {
        freeformType = lib.types.attrsOf lib.types.anything;
        options.uid = lib.mkOption { type = lib.types.nullOr lib.types.int; default = null; };
        options.home = lib.mkOption { type = lib.types.str; default = "/var/empty"; };
        options.group = lib.mkOption { type = lib.types.str; default = ""; };
      });
      default = { };
    };
    options.users.mutableUsers = lib.mkOption { type = lib.types.bool; default = true; };
    options.users.groups = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule {
        freeformType = lib.types.attrsOf lib.types.anything;
        options.gid = lib.mkOption { type = lib.types.nullOr lib.types.int; default = null; };
      });
      default = { };
    };
  };

  eval = lib.evalModules {
    # `modulesPath + "/profiles/..."` in a host resolves to empty stand-ins.
    specialArgs.modulesPath = ./eval-stubs;
    modules = [
      stubs
      ./modules/storage.nix
      ./modules/impermanence.nix
      ./modules/security.nix
      ./modules/roles.nix
      ./modules/manifest.nix
      host
    ] ++ (if impermanence != null then [ (/. + impermanence + "/nixos.nix") ]
      else [{ options.environment.persistence = nixosOption; }]);
  };
  config = eval.config;
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  fileSystems = config.fileSystems or { };
  rollbackUnit = config.boot.initrd.systemd.services.pantheros-rollback or null;
  sysctl = config.boot.kernel.sysctl or { };
  kernelParams = config.boot.kernelParams or [ ];
  blacklistedKernelModules = config.boot.blacklistedKernelModules or [ ];
  sshSettings = config.services.openssh.settings or { };
  luks = config.boot.initrd.luks.devices or { };
  # Only what the tests read: the whole value holds throwing stubs for removed options.
  persistence = lib.mapAttrs (_: p: {
    directories = map (d: { inherit (d) directory user group mode; }) p.directories;
    files = map (f: f.file) p.files;
    inherit (p) hideMounts;
  }) (config.environment.persistence or { });
  manifest = config.pantheros.manifest;

  optionDocs = map
    (o: { inherit (o) name description type; default = o.default.text or null; example = o.example.text or null; })
    (lib.filter (o: lib.hasPrefix "pantheros." o.name && !o.internal)
      (lib.optionAttrSetToDocList eval.options));
}
