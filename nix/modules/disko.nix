# pantheros.storage as nix-community/disko's `disko.devices`, for a host that imports disko's
# module (detected: `options ? disko.devices`). One declaration, the same rules as the manifest:
# GPT with the ESP and the main partition named as `panther disk format` names them, LUKS2 when
# asked, btrfs with the layout's subvolumes and mount options. What disko cannot say is done
# beside it: a hook after the btrfs is made runs `panther disk finish` (the mount points in the
# root, the read-only blank, the old-roots directory and the directories the first boot needs,
# each only when missing, so the hook can run again), and `neededForBoot` is set here on the
# file systems disko declares. With disko's config on, the file systems come from disko alone
# (storage.nix then defines none); the LUKS device of the initrd stays storage.nix's.
# docs/decisions.md D130-D132.
{ config, options, lib, ... }:
let
  inherit (lib) mkIf mkOption types;
  cfg = config.pantheros.storage;
  enabled = lib.attrValues cfg.enabledSubvolumes;

  imported = options ? disko.devices;
  # disko defines fileSystems (and swap, luks) from the declaration unless told not to.
  diskoConfig = imported && config.disko.enableConfig;

  # `panther disk format`'s partition type codes (pantheros.storage.layout).
  espType = "ef00";
  linuxType = "8300";
  luksType = "8309";
  # A partition's GUID, fixed by the host, its disk and the partition: disko gives a partition
  # without one a new random GUID each time its format script runs, so a rerun would change
  # the table. An RFC 9562 UUID of version 8 (made from a hash, not random) and variant 10.
  partitionUuid = name:
    let
      h = builtins.hashString "sha256" "pantheros:${config.networking.hostName}:${toString cfg.device}:${name}";
      part = start: length: builtins.substring start length h;
    in
    "${part 0 8}-${part 8 4}-8${part 13 3}-8${part 17 3}-${part 20 12}";
  # As disko names a partition with a GUID: unique, where a second PantherOS disk attached to
  # the machine would share the partition label.
  mainDevice = "/dev/disk/by-partuuid/${partitionUuid "main"}";
  btrfsDevice = if cfg.luks.enable then "/dev/mapper/${cfg.luks.name}" else mainDevice;

  # The manifest on the hook's stdin: the hook needs no file of its own, and what it lays out
  # is what the running system's /etc/pantheros/manifest.json describes.
  finish = ''
    printf '%s\n' ${lib.escapeShellArg (builtins.toJSON config.pantheros.manifest)} \
      | ${config.pantheros.package}/bin/panther disk finish --manifest - ${lib.escapeShellArg btrfsDevice}
  '';

  btrfs = {
    type = "btrfs";
    # The arguments of `panther disk format`'s mkfs.btrfs (disko adds them after the device).
    extraArgs = [ "--force" "--label" cfg.label ];
    subvolumes = lib.listToAttrs (map (sv: lib.nameValuePair sv.name {
      mountpoint = sv.mountPoint;
      # As storage.nix writes fileSystems: the filesystem's options, then the subvolume's.
      mountOptions = cfg.mountOptions ++ sv.mountOptions;
    }) enabled);
    postCreateHook = finish;
  };

  luks = {
    type = "luks";
    inherit (cfg.luks) name;
    extraFormatArgs = [ "--type" "luks2" ] ++ lib.optionals (cfg.luks.label != null) [ "--label" cfg.luks.label ];
    # Opened with discards at install as at boot; disko keeps the flag in the LUKS2 header.
    settings.allowDiscards = cfg.luks.allowDiscards;
    # null: disko asks for the passphrase (twice) when it formats.
    passwordFile = cfg.luks.passphraseFile;
    # The initrd's LUKS device is storage.nix's (left out where the layout is not the one
    # booted, D95): one definition of it.
    initrdUnlock = false;
    content = btrfs;
  };

  devices = {
    disk.pantheros = {
      type = "disk";
      device = if cfg.device == null then "/dev/disk/by-id/MISSING" else cfg.device;
      content = {
        type = "gpt";
        partitions =
          lib.optionalAttrs cfg.esp.enable {
            esp = {
              # Before the main partition: disko creates partitions by priority.
              priority = 100;
              uuid = partitionUuid "esp";
              size = "${toString cfg.esp.sizeMiB}M";
              type = espType;
              inherit (cfg.esp) label;
              content = {
                type = "filesystem";
                format = "vfat";
                extraArgs = [ "-F" "32" "-n" cfg.esp.label ];
                mountpoint = cfg.esp.mountPoint;
                mountOptions = [ "umask=0077" ];
              };
            };
          }
          // {
            main = {
              priority = 200;
              uuid = partitionUuid "main";
              size = "100%";
              # To the disk's last usable sector, as `panther disk format` makes it: disko runs
              # sgdisk with --align-end, which with the default alignment would end the
              # partition up to 1 MiB earlier. With no ESP before it, it starts at 1 MiB.
              alignment = 1;
              start = if cfg.esp.enable then "0" else "1M";
              type = if cfg.luks.enable then luksType else linuxType;
              label = cfg.partitionLabel;
              content = if cfg.luks.enable then luks else btrfs;
            };
          };
      };
    };
  };

  # Mount points of the layout; a second file defining one of them would merge its options
  # into disko's (a hardware-configuration.nix from nixos-generate-config does). The PantherOS
  # modules that add to them on purpose: this one (neededForBoot) and security.nix (the
  # hardening's mount options).
  layoutMounts = map (sv: sv.mountPoint) enabled ++ lib.optional cfg.esp.enable cfg.esp.mountPoint;
  adding = map toString [ ./disko.nix ./security.nix ];
  definers = mp: lib.unique (map (d: d.file)
    (lib.filter (d: lib.isAttrs d.value && d.value ? ${mp} && !(lib.elem d.file adding))
      options.fileSystems.definitionsWithLocations));
  defined = lib.filter (mp: lib.length (definers mp) > 1) layoutMounts;
in
{
  options.pantheros.storage = {
    luks.passphraseFile = mkOption {
      type = types.nullOr (types.strMatching "/[^[:cntrl:]]*");
      default = null;
      example = "/tmp/pantheros-disk.key";
      description = ''
        With disko: the file disko reads the LUKS passphrase from when it formats the disk (its
        `passwordFile`); its text without the trailing newline is the passphrase typed at boot.
        `panther install` sends it there (nixos-anywhere's `--disk-encryption-keys`). null: disko
        asks for it.
      '';
    };
    fromDisko = mkOption {
      type = types.bool;
      internal = true;
      readOnly = true;
      description = "Whether disko declares the layout's file systems (its module is imported, its config on).";
    };
    mainPartition = mkOption {
      type = types.str;
      internal = true;
      readOnly = true;
      description = "The main (LUKS or btrfs) partition as the initrd addresses it.";
    };
    diskoDevices = mkOption {
      type = types.attrsOf types.anything;
      internal = true;
      readOnly = true;
      description = ''
        The layout as disko's `disko.devices` (set there when the host imports disko's module).
      '';
    };
  };

  config = lib.mkMerge [
    {
      pantheros.storage.diskoDevices = devices;
      pantheros.storage.fromDisko = diskoConfig;
      pantheros.storage.mainPartition =
        if diskoConfig then mainDevice else "/dev/disk/by-partlabel/${cfg.partitionLabel}";
    }
    (lib.optionalAttrs imported {
      disko.devices = mkIf cfg.enable devices;
    })
    (lib.optionalAttrs imported (mkIf cfg.enable {
      assertions = [
        {
          assertion = cfg.device != null;
          message = "pantheros.storage.device: disko lays out this disk, so name it (a /dev/disk/by-id/ path: it names the same disk at every boot and on any machine).";
        }
        {
          assertion = defined == [ ];
          message = "fileSystems: ${lib.concatMapStringsSep "; " (mp: "\"${mp}\" is defined in ${lib.concatStringsSep " and " (definers mp)}") defined}. With disko the layout's file systems come from disko.devices alone (pantheros.storage declares them): remove the other definition (a hardware-configuration.nix from nixos-generate-config has them; nixos-generate-config --no-filesystems, or nixos-facter, does not).";
        }
      ];
    }))
    # What disko cannot say: these are mounted in the initrd (persist and log for the first
    # boot's binds and credentials, / and /nix for the boot itself).
    (lib.optionalAttrs imported (mkIf (cfg.enable && diskoConfig) {
      fileSystems = lib.listToAttrs (map (sv: lib.nameValuePair sv.mountPoint { neededForBoot = true; })
        (lib.filter (sv: sv.neededForBoot) enabled));
    }))
  ];
}
