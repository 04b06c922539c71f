# pantheros.storage: one btrfs filesystem (optionally inside LUKS2) with the PantherOS subvolumes.
# The same declaration feeds `fileSystems` here and, through the manifest, `panther disk`.
{ config, lib, ... }:
let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cfg = config.pantheros.storage;

  subvolumeType = types.submodule ({ name, config, ... }: {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Whether this subvolume is part of the layout (false drops a default one).";
      };
      name = mkOption {
        type = topLevelName;
        default = name;
        description = "Subvolume path relative to the btrfs top level.";
      };
      mountPoint = mkOption {
        type = types.strMatching "/.*";
        description = "Where the subvolume is mounted.";
        example = "/var/log";
      };
      role = mkOption {
        type = types.enum layout.roles;
        default = "other";
        description = "What the subvolume is for; the rollback and the tools find root and persist by role.";
      };
      mountOptions = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Options added to `pantheros.storage.mountOptions` for this subvolume.";
      };
      neededForBoot = mkOption {
        type = types.bool;
        default = lib.elem config.role layout.defaults.needed_for_boot_roles;
        defaultText = lib.literalExpression
          "lib.elem role [ ${lib.concatMapStringsSep " " builtins.toJSON layout.defaults.needed_for_boot_roles} ]";
        description = "Mount in the initrd (needed for persistent storage and the log).";
      };
    };
  });

  defaultSubvolumes = {
    root = { mountPoint = "/"; role = "root"; };
    nix = { mountPoint = "/nix"; role = "nix"; };
    persist = { mountPoint = "/persist"; role = "persist"; };
    log = { mountPoint = "/var/log"; role = "log"; };
    home = { mountPoint = "/home"; role = "home"; };
  };
  enabled = cfg.enabledSubvolumes;
  device = cfg.btrfsDevice;
  names = map (s: s.name) (lib.attrValues enabled);
  mountPoints = map (s: s.mountPoint) (lib.attrValues enabled);
  twice = list: lib.unique (lib.filter (x: lib.count (y: y == x) list > 1) list);
  # One name at the top level is, or lies inside, the other.
  overlaps = a: b: a == b || lib.hasPrefix "${a}/" b || lib.hasPrefix "${b}/" a;
  overlapping =
    lib.filter (n: overlaps cfg.blankSnapshot n || overlaps cfg.oldRoots n) names
    ++ lib.optional (overlaps cfg.blankSnapshot cfg.oldRoots) "${cfg.blankSnapshot} and ${cfg.oldRoots}";
  # The layout's name rules and defaults: one table, which panther reads too and whose name
  # rules are rendered into the manifest's schema and the boot step (scripts/render-layout).
  layout = builtins.fromJSON (builtins.readFile ../../src/pantheros/data/layout.json);
  nameRule = layout.names.subvolume;
  # Subvolume and directory names at the btrfs top level (the boot step takes them as
  # arguments, so they are plain names), checked part by part so a long string never reaches
  # the regex engine.
  topLevelName = types.addCheck types.str (name:
    lib.stringLength name <= nameRule.max
    && lib.all (part:
      lib.stringLength part >= 1 && lib.stringLength part <= nameRule.component_max
      && part != "." && part != ".."
      && builtins.match "[${nameRule.characters}]+" part != null)
      (lib.splitString "/" name)) // {
    description = "path below the btrfs top level (parts of ${nameRule.characters}, at most ${toString nameRule.component_max} each and ${toString nameRule.max} in all, none `.` or `..`)";
  };
  # A label or mapping name of the table.
  labelType = rule: types.strMatching "[${rule.characters}]{1,${toString rule.max}}";
in
{
  imports = [ ./manifest.nix ./users.nix ./disko.nix ./install.nix ];

  options.pantheros.storage = {
    enable = mkEnableOption "the PantherOS btrfs layout (fileSystems for every subvolume)";

    device = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/dev/nvme0n1";
      description = "The whole disk `panther disk format` lays out. Only recorded in the manifest.";
    };

    label = mkOption {
      type = labelType layout.names.btrfs_label;
      default = "pantheros";
      description = "Label of the btrfs filesystem.";
    };

    partitionLabel = mkOption {
      type = labelType layout.names.partition_label;
      default = layout.defaults.partition_label;
      description = "GPT partition name of the main (btrfs or LUKS) partition.";
    };

    luks = {
      enable = mkEnableOption "LUKS2 encryption of the btrfs partition";
      name = mkOption {
        type = labelType layout.names.luks_name;
        default = "cryptroot";
        description = "Name of the opened mapping (/dev/mapper/NAME).";
      };
      label = mkOption {
        type = types.nullOr (labelType layout.names.luks_label);
        default = "pantheros-luks";
        description = "LUKS2 header label.";
      };
      allowDiscards = mkOption {
        type = types.bool;
        default = false;
        description = "Pass discards through the encryption (TRIM on SSDs; leaks which blocks are used).";
      };
    };

    esp = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Whether the disk has an EFI system partition.";
      };
      sizeMiB = mkOption {
        type = types.ints.between 32 65536;
        default = 512;
        description = "Size of the EFI system partition.";
      };
      label = mkOption {
        type = labelType layout.names.esp_label;
        default = "PANTHER-ESP";
        description = "FAT label of the EFI system partition.";
      };
      mountPoint = mkOption {
        type = types.str;
        default = "/boot";
        description = "Where the EFI system partition is mounted.";
      };
    };

    mountOptions = mkOption {
      type = types.listOf types.str;
      default = layout.defaults.btrfs_mount_options;
      description = "Mount options of every subvolume.";
    };

    subvolumes = mkOption {
      type = types.attrsOf subvolumeType;
      default = { };
      description = ''
        Subvolumes and where they are mounted. root, nix, persist, log and home are defined by
        default (each field with mkDefault): set a field to change it, `enable = false` to drop
        one, or add your own.
      '';
      example = lib.literalExpression ''{ home.name = "@home"; containers = { mountPoint = "/var/lib/containers"; }; }'';
    };

    blankSnapshot = mkOption {
      type = topLevelName;
      default = "root-blank";
      description = "Read-only snapshot of the empty root that every boot starts from.";
    };

    oldRoots = mkOption {
      type = topLevelName;
      default = "old_roots";
      description = "Directory at the btrfs top level where previous roots are kept.";
    };

    swap = {
      sizeMiB = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "Size of a swap file in its own subvolume `swap` (0: no swap).";
      };
    };

    # Derived once, read by the other PantherOS modules.
    enabledSubvolumes = mkOption {
      type = types.attrsOf types.anything;
      internal = true;
      readOnly = true;
      description = "The subvolumes with enable = true.";
    };
    btrfsDevice = mkOption {
      type = types.str;
      internal = true;
      readOnly = true;
      description = "The btrfs device as the running system and the initrd address it.";
    };
    inUse = mkOption {
      type = types.bool;
      internal = true;
      readOnly = true;
      description = ''
        Whether the layout is the machine's: enabled, and the root file system NixOS mounts is
        its root subvolume (btrfs, `subvol=` the root's name; the device may be named otherwise). It is not when a definition of higher priority replaces `fileSystems`
        (qemu-vm.nix does, with mkVMOverride, for `nixos-rebuild build-vm`): the other PantherOS
        modules then leave the boot alone, and a warning says so.
      '';
    };
    fileSystems = mkOption {
      type = types.attrsOf types.anything;
      internal = true;
      readOnly = true;
      description = ''
        The layout as `fileSystems` entries (a VM test hands them to
        virtualisation.fileSystems, which overrides fileSystems).
      '';
    };
  };

  config = lib.mkMerge [
    {
      # Defined even when the layout is off: the manifest (which `panther audit` reads on a host
      # that uses only pantheros.security) always describes a complete layout.
      pantheros.storage.subvolumes = lib.mapAttrs (_: lib.mapAttrs (_: mkDefault)) defaultSubvolumes;
      pantheros.storage.enabledSubvolumes = lib.filterAttrs (_: sv: sv.enable) cfg.subvolumes;
      pantheros.storage.btrfsDevice =
        if cfg.luks.enable then "/dev/mapper/${cfg.luks.name}" else "/dev/disk/by-label/${cfg.label}";
      # Read from fileSystems as NixOS resolved it; the layout's own definition (below) depends
      # on cfg.enable only, so this cannot feed back into it.
      pantheros.storage.inUse =
        let
          root = lib.findFirst (s: s.role == "root") null (lib.attrValues enabled);
          mounted = config.fileSystems."/" or { };
        in
        cfg.enable && root != null
        && (mounted.fsType or null) == "btrfs"
        && lib.elem "subvol=${root.name}" (mounted.options or [ ]);

      pantheros.storage.fileSystems = lib.mapAttrs' (_: sv: lib.nameValuePair sv.mountPoint {
        inherit device;
        fsType = "btrfs";
        options = cfg.mountOptions ++ sv.mountOptions ++ [ "subvol=${sv.name}" ];
        inherit (sv) neededForBoot;
      }) enabled
      // lib.optionalAttrs cfg.esp.enable {
        ${cfg.esp.mountPoint} = {
          device = "/dev/disk/by-label/${cfg.esp.label}";
          fsType = "vfat";
          options = layout.defaults.esp_mount_options;
        };
      };

      pantheros.manifest.storage = {
        inherit (cfg) device;
        esp =
          if cfg.esp.enable then {
            size_mib = cfg.esp.sizeMiB;
            inherit (cfg.esp) label;
            mountpoint = cfg.esp.mountPoint;
            mount_options = layout.defaults.esp_mount_options;
          } else null;
        partition_label = cfg.partitionLabel;
        luks =
          if cfg.luks.enable then
            { inherit (cfg.luks) name; allow_discards = cfg.luks.allowDiscards; }
            // lib.optionalAttrs (cfg.luks.label != null) { inherit (cfg.luks) label; }
          else null;
        btrfs = { inherit (cfg) label; mount_options = cfg.mountOptions; };
        subvolumes = map (sv: {
          inherit (sv) name role;
          mountpoint = sv.mountPoint;
          mount_options = sv.mountOptions;
          needed_for_boot = sv.neededForBoot;
        }) (lib.attrValues enabled);
        blank_snapshot = cfg.blankSnapshot;
        old_roots = cfg.oldRoots;
      };
    }
    (mkIf cfg.enable {
      pantheros.installManifest = true;

      assertions = [
        {
          assertion = lib.length (lib.filter (s: s.role == "root") (lib.attrValues enabled)) == 1;
          message = "pantheros.storage.subvolumes needs exactly one subvolume with role \"root\".";
        }
        {
          assertion = lib.length (lib.filter (s: s.role == "persist") (lib.attrValues enabled)) == 1;
          message = "pantheros.storage.subvolumes needs exactly one subvolume with role \"persist\".";
        }
        # The rules the manifest's reader (pantheros.manifest) applies, so that a host panther
        # would refuse does not evaluate.
        {
          assertion = lib.all (s: s.role != "root" || s.mountPoint == "/") (lib.attrValues enabled);
          message = "pantheros.storage.subvolumes: the subvolume with role \"root\" mounts at \"/\".";
        }
        {
          assertion = twice names == [ ] && twice mountPoints == [ ];
          message = "pantheros.storage.subvolumes: used twice: ${lib.concatStringsSep ", " (twice names ++ twice mountPoints)}";
        }
        {
          assertion = overlapping == [ ];
          message = "pantheros.storage: blankSnapshot and oldRoots must not overlap each other or a subvolume: ${lib.concatStringsSep ", " overlapping}";
        }
        {
          assertion = !(cfg.esp.enable && lib.elem cfg.esp.mountPoint mountPoints);
          message = "pantheros.storage.esp.mountPoint ${cfg.esp.mountPoint} is also a subvolume's mount point.";
        }
      ];

      boot.supportedFilesystems = [ "btrfs" ];
      # Every boot entry keeps a kernel and an initrd on the ESP (512 MiB by default): without a
      # limit they fill it and the next switch fails.
      boot.loader.systemd-boot.configurationLimit = mkDefault 10;
      boot.loader.grub.configurationLimit = mkDefault 10;

      # With disko's config on, disko declares them from the same layout (disko.nix).
      fileSystems = lib.mkIf (!cfg.fromDisko) cfg.fileSystems;

      warnings = lib.optional (!cfg.inUse) ''
        pantheros.storage: the file systems of this configuration are not the PantherOS layout
        (a definition of higher priority replaced `fileSystems`, as qemu-vm.nix does for
        `nixos-rebuild build-vm`): the LUKS device, the swap file and the rollback are left out,
        and nothing is rolled back. Hardening and users apply as declared. To boot the layout
        itself, use the flake's VM tests (`nix flake check`) or `panther lab boot`.
      '';
    })

    (mkIf (cfg.inUse && cfg.luks.enable) {
      boot.initrd.luks.devices.${cfg.luks.name} = {
        device = cfg.mainPartition;
        inherit (cfg.luks) allowDiscards;
      };
    })

    # The subvolume is part of the layout (fileSystems depend on it); the swap file is used only
    # where the layout is mounted.
    (mkIf (cfg.enable && cfg.swap.sizeMiB > 0) {
      pantheros.storage.subvolumes.swap = {
        mountPoint = "/swap";
        mountOptions = [ "noatime" ];
      };
    })
    (mkIf (cfg.inUse && cfg.swap.sizeMiB > 0) {
      swapDevices = [{ device = "/swap/swapfile"; size = cfg.swap.sizeMiB; }];
    })
  ];
}
