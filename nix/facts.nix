# The facts about a host that tests/nix asserts on the stub evaluation (nix/eval.nix), in one
# shape for both: scripts/nixos-facts prints them from the real nixosConfigurations.<host> and
# from the stub, so the two can be compared on a machine with nixpkgs. Store paths are shown as
# <store>/..., since the stub's packages are stand-ins.
{ lib, config }:
let
  table = builtins.fromJSON (builtins.readFile ../src/pantheros/data/hardening.json);
  tableKeys = area: map (c: c.key) (lib.filter (c: c.area == area) table.checks);
  # NixOS's own sysctl defaults (nixos/modules/config/sysctl.nix) that meet the table's.
  sysctlKeys = tableKeys "sysctl" ++ [ "vm.max_map_count" ];

  unstore =
    v:
    if lib.isString v then
      lib.concatStrings (
        map (part: if lib.isList part then "<store>" else part) (builtins.split "/nix/store/[^/ ]+" v)
      )
    else if lib.isList v then
      map unstore v
    else if lib.isAttrs v && v ? outPath then
      unstore (toString v)
    else if lib.isAttrs v then
      lib.mapAttrs (_: unstore) v
    else
      v;

  unit = u: {
    inherit (u) wantedBy requiredBy after before requires unitConfig serviceConfig;
  };
  ours = lib.filterAttrs (name: _: lib.hasPrefix "pantheros-" name);
in
unstore {
  sysctl = lib.filterAttrs (k: v: lib.elem k sysctlKeys && v != null) config.boot.kernel.sysctl;
  sshSettings = lib.filterAttrs (k: _: lib.elem k (tableKeys "ssh")) config.services.openssh.settings;
  inherit (config.boot) blacklistedKernelModules extraModprobeConfig;
  # Sorted: their order follows the order NixOS's modules are listed in, not a fact of the host.
  kernelParams = lib.sort lib.lessThan config.boot.kernelParams;
  # Sorted: the order of merged definitions differs between the two evaluations.
  fileSystems = lib.mapAttrs (_: fs: {
    inherit (fs) device fsType neededForBoot;
    options = lib.sort lib.lessThan fs.options;
  }) config.fileSystems;
  tmpOnTmpfs = config.boot.tmp.useTmpfs;
  loader = {
    systemd-boot = config.boot.loader.systemd-boot.configurationLimit;
    grub = config.boot.loader.grub.configurationLimit;
  };
  initrd = {
    services = lib.mapAttrs (_: unit) (ours config.boot.initrd.systemd.services);
    storePaths = lib.filter (p: lib.hasInfix "pantheros" p) (
      map (p: toString p.source) config.boot.initrd.systemd.storePaths
    );
    extraBin = lib.filterAttrs (name: _: lib.elem name [ "flock" "btrfs" ]) (
      lib.mapAttrs (_: toString) config.boot.initrd.systemd.extraBin
    );
  };
  services = lib.mapAttrs (_: unit) (ours config.systemd.services);
  manifest = config.pantheros.manifest;
  # As NixOS reports them: the assertions that fail and the warnings.
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
  # Who can log in and become root after any number of reboots (nix/modules/users.nix).
  users = {
    inherit (config.users) mutableUsers;
    loginUsers = config.pantheros.users.loginUsers or null;
    administrators = config.pantheros.users.administrators or null;
    hostKeys = map (k: k.path) config.services.openssh.hostKeys;
  };
  firstBoot = config.pantheros.impermanence.firstBoot or null;
}
