# pantheros.manifest: what the NixOS configuration declares, exported as the JSON manifest that
# `panther` reads (/etc/pantheros/manifest.json, and in the initrd for the rollback). Its schema is
# src/pantheros/data/manifest.schema.json; Python rejects a manifest that does not match it.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  st = config.pantheros.storage;
  im = config.pantheros.impermanence;
  sec = config.pantheros.security;

  persistenceEntries =
    map (d: { path = d.directory; kind = "directory"; inherit (d) user group mode; }) im.resolved.directories
    ++ map (f: { path = f.file; kind = "file"; inherit (f) user group mode; }) im.resolved.files;

  manifest = {
    version = 1;
    host = config.networking.hostName;
    storage = {
      inherit (st) device;
      esp =
        if st.esp.enable then {
          size_mib = st.esp.sizeMiB;
          inherit (st.esp) label;
          mountpoint = st.esp.mountPoint;
          mount_options = [ "umask=0077" ];
        } else null;
      partition_label = st.partitionLabel;
      luks =
        if st.luks.enable then
          { inherit (st.luks) name; allow_discards = st.luks.allowDiscards; }
          // lib.optionalAttrs (st.luks.label != null) { inherit (st.luks) label; }
        else null;
      btrfs = { inherit (st) label; mount_options = st.mountOptions; };
      subvolumes = map (sv: {
        inherit (sv) name role;
        mountpoint = sv.mountPoint;
        mount_options = sv.mountOptions;
        needed_for_boot = sv.neededForBoot;
      }) (lib.attrValues (lib.filterAttrs (_: sv: sv.enable) st.subvolumes));
      blank_snapshot = st.blankSnapshot;
      old_roots = st.oldRoots;
    };
    impermanence = {
      inherit (im) enable design;
      fail_policy = im.failPolicy;
      retention = {
        keep_min = im.retention.keepMin;
        max_age_days = im.retention.maxAgeDays;
        max_count = im.retention.maxCount;
        min_free_percent = im.retention.minFreePercent;
      };
    };
    persistence = if im.enable then persistenceEntries else [ ];
    security = {
      inherit (sec) level;
      waivers = lib.mapAttrs (_: w: { inherit (w) reason; }) sec.waivers;
    };
  };
in
{
  options.pantheros = {
    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The panther toolkit used by the rollback, the timers and the shell.";
    };
    manifest = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      description = "The manifest, as a Nix value (see manifestFile).";
    };
    manifestFile = mkOption {
      type = types.path;
      readOnly = true;
      description = "The manifest as a JSON file, installed at /etc/pantheros/manifest.json.";
    };
  };

  config = {
    pantheros.manifest = manifest;
    pantheros.manifestFile = pkgs.writeText "pantheros-manifest.json" (builtins.toJSON manifest);
    environment.etc."pantheros/manifest.json".source = config.pantheros.manifestFile;
    environment.systemPackages = [ config.pantheros.package ];
  };
}
