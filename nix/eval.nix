# Evaluates the PantherOS modules with nixpkgs' lib.evalModules and NixOS's semantics, without
# nixpkgs itself: nix/eval/nixos.nix declares every NixOS option the modules, the example hosts
# and the template touch, with NixOS's types and merges, and the NixOS definitions that can
# collide with ours; an undeclared option fails as it does in NixOS. Packages are stand-ins
# (nix/eval/pkgs.nix). nix-community/impermanence's real module is used when its checkout is
# given, a declaration of the options PantherOS sets otherwise.
# Output: what the tests assert on (as JSON with --json); with -A optionDocs the declarations that
# scripts/gen-options renders into docs/options.md; with -A initrdUnits what
# scripts/render-initrd-units writes to nix/generated/initrd-units.json.
{
  nixpkgsLib,
  impermanence ? null,
  host ? { },
  # false: the same evaluation without PantherOS's modules, to show that importing them changes
  # nothing until the host opts in.
  withPantheros ? true,
  # Which of the flake's nixosModules the host imports.
  module ? "default",
  # Where the host imports nix-community/impermanence's module: before ours ("first", as the
  # example hosts do), after them ("last"), or not at all ("none").
  upstream ? "first",
  # A directory with NixOS's own module files (see above), or null for the stand-in.
  nixosModules ? null,
  # true: add what `nixos-rebuild build-vm` adds (qemu-vm.nix, modelled in nix/eval/qemu-vm.nix).
  qemuVm ? false,
  # A nix-community/disko checkout: the host imports its module as its flake exports it
  # (nixosModules.disko), as the flake's hosts do. null: the host does not import disko.
  disko ? null,
}:
let
  # Paths given as strings (--argstr), so nothing is copied into the store.
  lib = import (/. + nixpkgsLib + "/lib");
  pkgs = import ./eval/pkgs.nix { inherit lib; };
  systemd = import ./eval/systemd.nix { inherit lib pkgs; };
  real = nixosModules != null;
  # nix-community/impermanence's module exactly as its flake exports it (a function value), or,
  # without a checkout, a declaration of its options imported the same way.
  upstreamModule =
    if impermanence != null then
      let
        upstreamFlake = (import (/. + impermanence + "/flake.nix")).outputs {
          self = upstreamFlake;
          nixpkgs = {
            inherit lib;
            legacyPackages = { };
          };
          home-manager = { };
        };
      in
      upstreamFlake.nixosModules.impermanence
    else
      import ./eval/persistence.nix;
  # The modules as users import them: the flake's nixosModules.
  flake = (import ../flake.nix).outputs {
    self = flake;
    nixpkgs = {
      inherit lib;
      legacyPackages = { };
    };
    impermanence.nixosModules.impermanence = upstreamModule;
  };
  pantherosModules = lib.optional withPantheros flake.nixosModules.${module};
  diskoFlake =
    let
      outputs = (import (/. + disko + "/flake.nix")).outputs {
        self = outputs;
        nixpkgs = {
          inherit lib;
          legacyPackages = { };
        };
      };
    in
    outputs;
  diskoModules = lib.optional (disko != null) diskoFlake.nixosModules.disko;
  hostModules =
    if upstream == "first" then
      [ upstreamModule ] ++ pantherosModules
    else if upstream == "last" then
      pantherosModules ++ [ upstreamModule ]
    else
      pantherosModules;

  # NixOS's own files for the options the stand-in declares (nix/eval/real-files.nix names them).
  nixosFiles = import ./eval/real-files.nix { root = /. + nixosModules; };
  # nixos/lib/utils.nix: what the modules and impermanence use.
  utils = rec {
    inherit (systemd) escapeSystemdPath;
    pathsNeededForBoot = [
      "/"
      "/nix"
      "/nix/store"
      "/var"
      "/var/log"
      "/var/lib"
      "/var/lib/nixos"
      "/etc"
      "/usr"
    ];
    fsNeededForBoot = fs: fs.neededForBoot || lib.elem fs.mountPoint pathsNeededForBoot;
  };

  eval = lib.evalModules {
    # `modulesPath + "/profiles/..."` in a host resolves to the stand-ins in nix/eval-stubs, or
    # to NixOS's own files.
    specialArgs.modulesPath = if real then nixosFiles.modulesPath else ./eval-stubs;
    modules =
      (
        if real then
          nixosFiles.modules
          ++ [
            (import ./eval/nixos-rest.nix { real = true; })
            { _module.args = { inherit pkgs; }; }
          ]
        else
          [
            ./eval/nixos.nix
            (import ./eval/nixos-rest.nix { real = false; })
            { _module.args = { inherit pkgs utils; }; }
          ]
      )
      ++ [ host ]
      ++ diskoModules
      ++ hostModules
      ++ lib.optional qemuVm ./eval/qemu-vm.nix;
  };
  inherit (eval) config;

  unit = u: {
    inherit (u)
      name
      description
      wantedBy
      requiredBy
      requires
      after
      before
      unitConfig
      serviceConfig
      environment
      ;
  };
  # What NixOS's systemd-lib.nix `generateUnits` makes of the initrd services: a unit file each,
  # and the `.wants`/`.requires` links of wantedBy/requiredBy.
  links =
    field: services:
    lib.zipAttrs (
      lib.concatLists (
        lib.mapAttrsToList (_: s: map (target: { ${target} = s.name; }) s.${field}) services
      )
    );
  initrdServices = lib.filterAttrs (
    name: _: lib.hasPrefix "pantheros-" name
  ) config.boot.initrd.systemd.services;
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # What NixOS makes of the configuration: compared with and without PantherOS's modules.
  nixosFacts = {
    inherit failedAssertions;
    inherit (config) warnings;
    fileSystems = lib.mapAttrs (_: fs: {
      inherit (fs)
        device
        fsType
        options
        neededForBoot
        ;
    }) config.fileSystems;
    specialFileSystems = lib.mapAttrs (_: fs: { inherit (fs) fsType options; }) config.boot.specialFileSystems;
    sysctl = lib.filterAttrs (_: v: v != null) config.boot.kernel.sysctl;
    inherit (config.boot)
      kernelParams
      blacklistedKernelModules
      extraModprobeConfig
      tmp
      supportedFilesystems
      ;
    loader = {
      systemdBootLimit = config.boot.loader.systemd-boot.configurationLimit;
      grubLimit = config.boot.loader.grub.configurationLimit;
    };
    sshSettings = config.services.openssh.settings;
    luks = lib.mapAttrs (_: d: { inherit (d) device allowDiscards; }) config.boot.initrd.luks.devices;
    initrd = {
      services = lib.mapAttrs (_: unit) config.boot.initrd.systemd.services;
      storePaths = map (p: toString p.source) config.boot.initrd.systemd.storePaths;
      extraBin = lib.mapAttrs (_: toString) config.boot.initrd.systemd.extraBin;
      initrdBin = map toString config.boot.initrd.systemd.initrdBin;
      inherit (config.boot.initrd) supportedFilesystems;
    };
    services = lib.mapAttrs (_: unit) config.systemd.services;
    timers = lib.mapAttrs (_: t: { inherit (t) wantedBy timerConfig; }) config.systemd.timers;
    mounts = map (m: { inherit (m) name mountConfig; }) config.systemd.mounts;
    tmpfilesRules = config.systemd.tmpfiles.rules;
    inherit (config.environment) loginShellInit;
    etc = lib.attrNames config.environment.etc;
    systemPackages = map (p: p.name) config.environment.systemPackages;
    users = lib.mapAttrs (_: u: {
      inherit (u) group extraGroups isNormalUser;
      keys = u.openssh.authorizedKeys.keys;
    }) config.users.users;
    groups = lib.attrNames config.users.groups;
  };

  pantherosFacts = {
    # What scripts/nixos-facts prints for a real NixOS evaluation of the same host.
    facts = import ./facts.nix { inherit lib config; };

    # Only what the tests read: the whole value holds throwing stubs for removed options.
    persistence = lib.mapAttrs (_: p: {
      directories = map (d: { inherit (d) directory user group mode; }) p.directories;
      files = map (f: {
        inherit (f) file;
        parentDirectory = { inherit (f.parentDirectory) user group mode; };
      }) p.files;
      inherit (p) hideMounts;
    }) (config.environment.persistence or { });
    manifest = config.pantheros.manifest;
    # What `panther install` reads (nix/modules/install.nix).
    installPlan = config.pantheros.install.plan or null;

    # The initrd units as NixOS writes them (nixos/lib/systemd-lib.nix `serviceToUnit`), and
    # the links its `generateUnits` makes from wantedBy and requiredBy.
    # Over the real files, the units as NixOS's own initrd.nix renders them.
    initrdUnits = {
      bootstep = toString config.pantheros.bootstep;
      units = lib.mapAttrs' (
        _: s:
        lib.nameValuePair s.name (
          if real then
            config.boot.initrd.systemd.units.${s.name}.text
          else
            systemd.serviceText config.systemd.globalEnvironment s
        )
      ) initrdServices;
      wants = links "wantedBy" initrdServices;
      requires = links "requiredBy" initrdServices;
    };

    # disko's own scripts, made by its types from the declaration the storage module wrote
    # (with a disko checkout): format (_create), mount (_mount), and unmount, wipe, format and
    # mount (_disko); `panther install` runs them through nixos-anywhere.
    diskoScripts = lib.optionalAttrs (disko != null && config.pantheros.storage.enable) {
      inherit (config.disko.devices)
        _create
        _mount
        _unmount
        _disko
        _formatMount
        ;
    };

    optionDocs =
      map
        (o: {
          inherit (o) name description type;
          default = o.default.text or null;
          example = o.example.text or null;
        })
        (
          lib.filter (o: lib.hasPrefix "pantheros." o.name && !o.internal) (
            lib.optionAttrSetToDocList eval.options
          )
        );
  };
in
# As in NixOS, a failed assertion stops the evaluation before anything is built from the
# configuration.
if failedAssertions != [ ] then
  { inherit failedAssertions; }
else
  nixosFacts // lib.optionalAttrs withPantheros pantherosFacts
