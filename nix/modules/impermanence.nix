# pantheros.impermanence: the root is rolled back at every boot, in the systemd initrd, by
# `panther rollback`; what is declared persistent is bind-mounted from the persistent subvolume by
# nix-community/impermanence (`environment.persistence`), which this module configures.
{ config, lib, pkgs, utils, ... }:
let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cfg = config.pantheros.impermanence;
  storage = config.pantheros.storage;
  panther = config.pantheros.package;

  entryOptions = kind: {
    options = {
      ${kind} = mkOption {
        type = types.strMatching "/.*";
        description = "Absolute path, as the running system sees it.";
      };
      user = mkOption { type = types.str; default = "root"; description = "Owner."; };
      group = mkOption { type = types.str; default = "root"; description = "Group."; };
      mode = mkOption {
        type = types.strMatching "0?[0-7]{3,4}";
        default = if kind == "directory" then "0755" else "0644";
        description = "Permissions.";
      };
    };
  };
  entry = kind: types.coercedTo types.str (path: { ${kind} = path; }) (types.submodule (entryOptions kind));

  # What `panther persist` recorded for this host (a JSON file in the host's directory).
  fromFile =
    if cfg.persistenceFile == null then { directories = [ ]; files = [ ]; }
    else
      let
        data = builtins.fromJSON (builtins.readFile cfg.persistenceFile);
        withDefaults = kind: e: {
          user = "root";
          group = "root";
          mode = if kind == "directory" then "0755" else "0644";
        } // e;
      in
      {
        directories = map (withDefaults "directory") (data.directories or [ ]);
        files = map (withDefaults "file") (data.files or [ ]);
      };

  directories = cfg.directories ++ fromFile.directories;
  files = cfg.files ++ fromFile.files;

  byRole = role: lib.findFirst (s: s.role == role) null (lib.attrValues (lib.filterAttrs (_: sv: sv.enable) storage.subvolumes));
  persistSubvolume = byRole "persist";
  mountPoints = map (s: s.mountPoint) (lib.attrValues (lib.filterAttrs (_: sv: sv.enable) storage.subvolumes));
  # The deepest subvolume mount point that contains path.
  owner = path: lib.foldl'
    (best: mp: if (mp == "/" || path == mp || lib.hasPrefix "${mp}/" path)
      && lib.stringLength mp > lib.stringLength best then mp else best) "/" mountPoints;
  misplaced = lib.filter (p: owner p != "/")
    (map (d: d.directory) directories ++ map (f: f.file) files);

  btrfsDevice =
    if storage.luks.enable then "/dev/mapper/${storage.luks.name}"
    else "/dev/disk/by-label/${storage.label}";
  deviceUnit = "${utils.escapeSystemdPath btrfsDevice}.device";
  cryptUnit = "systemd-cryptsetup@${utils.escapeSystemdPath storage.luks.name}.service";
  failClosed = cfg.failPolicy == "fail-closed";
in
{
  options.pantheros.impermanence = {
    enable = mkEnableOption "rolling the root back to a blank state at every boot";

    design = mkOption {
      type = types.enum [ "blank-snapshot" "empty-subvolume" ];
      default = "blank-snapshot";
      description = ''
        How the fresh root is made: a writable snapshot of the read-only blank snapshot (it keeps
        the mount points and anything put in the blank on purpose), or an empty subvolume.
      '';
    };

    failPolicy = mkOption {
      type = types.enum [ "fail-closed" "boot-dirty" ];
      default = "boot-dirty";
      description = ''
        What happens when no fresh root can be made. `fail-closed`: the rollback unit is required
        by the initrd, so the boot stops. `boot-dirty`: the previous root is booted, the failure is
        recorded, and `panther status` and the login message say so.
      '';
    };

    persistentStoragePath = mkOption {
      type = types.str;
      default = if persistSubvolume == null then "/persist" else persistSubvolume.mountPoint;
      defaultText = lib.literalExpression "the mount point of the subvolume with role \"persist\"";
      description = "Where persistent state lives.";
    };

    directories = mkOption {
      type = types.listOf (entry "directory");
      default = [ ];
      example = [ "/var/lib/bluetooth" { directory = "/var/lib/private"; mode = "0700"; } ];
      description = "Directories kept across reboots (bind-mounted from persistent storage).";
    };

    files = mkOption {
      type = types.listOf (entry "file");
      default = [ ];
      example = [ "/etc/adjtime" ];
      description = "Files kept across reboots.";
    };

    persistenceFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./persistence.json";
      description = "JSON file of further entries, written by `panther persist add`.";
    };

    retention = {
      keepMin = mkOption {
        type = types.ints.between 1 10000;
        default = 3;
        description = "Old roots always kept, whatever their age.";
      };
      maxAgeDays = mkOption {
        type = types.nullOr types.ints.positive;
        default = 30;
        description = "Old roots older than this (btrfs creation time) are pruned.";
      };
      maxCount = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "At most this many old roots are kept.";
      };
      minFreePercent = mkOption {
        type = types.nullOr (types.ints.between 0 90);
        default = null;
        description = "Prune the oldest roots while free space is below this.";
      };
    };

    resolved = mkOption {
      type = types.attrsOf types.anything;
      internal = true;
      readOnly = true;
      description = "Every persisted directory and file: the options and the persistence file together.";
    };

    gc.dates = mkOption {
      type = types.str;
      default = "daily";
      description = "When `panther roots gc` prunes old roots (systemd calendar event).";
    };
  };

  config = mkIf cfg.enable {
    pantheros.impermanence.resolved = { inherit directories files; };

    assertions = [
      {
        assertion = config.boot.initrd.systemd.enable or false;
        message = "pantheros.impermanence runs the rollback in the systemd initrd: set boot.initrd.systemd.enable = true.";
      }
      {
        assertion = storage.enable;
        message = "pantheros.impermanence needs pantheros.storage.enable = true (it rolls back its root subvolume).";
      }
      {
        assertion = (config.fileSystems.${cfg.persistentStoragePath}.neededForBoot or false);
        message = "pantheros.impermanence: ${cfg.persistentStoragePath} must be mounted in the initrd (fileSystems.\"${cfg.persistentStoragePath}\".neededForBoot = true), or persisted files are missing at boot.";
      }
      {
        assertion = misplaced == [ ];
        message = "pantheros.impermanence: these persisted paths lie on a subvolume that is never rolled back, so persisting them does nothing: ${lib.concatStringsSep ", " misplaced}";
      }
    ];

    # Sensible defaults: the machine's identity and NixOS's own state.
    pantheros.impermanence.directories = [
      "/var/lib/nixos"
      "/var/lib/systemd/coredump"
      "/var/lib/systemd/timers"
    ];
    pantheros.impermanence.files = [ "/etc/machine-id" ]
      ++ lib.optionals (config.services.openssh.enable or false) [
        { file = "/etc/ssh/ssh_host_ed25519_key"; mode = "0600"; }
        "/etc/ssh/ssh_host_ed25519_key.pub"
      ];

    environment.persistence.${cfg.persistentStoragePath} = {
      hideMounts = mkDefault true;
      directories = map (d: { inherit (d) directory user group mode; }) directories;
      files = map (f: { inherit (f) file; parentDirectory = { inherit (f) user group; mode = "0755"; }; }) files;
    };

    boot.initrd.systemd.services.pantheros-rollback = {
      description = "PantherOS: archive the root and start from a fresh one";
      unitConfig.DefaultDependencies = false;
      wantedBy = [ "initrd.target" ];
      requiredBy = lib.optional failClosed "sysroot.mount";
      requires = [ deviceUnit ];
      after = [ deviceUnit "systemd-hibernate-resume.service" ]
        ++ lib.optional storage.luks.enable cryptUnit;
      before = [ "sysroot.mount" ];
      # fail-closed: sysroot.mount requires this unit, so a failure stops the boot. boot-dirty:
      # the unit fails visibly (exit 6), the boot goes on with the previous root, and the record
      # in persistent storage makes `panther status` and the login message say so.
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${panther}/bin/panther rollback --manifest /etc/pantheros/manifest.json --device ${btrfsDevice}";
      };
    };
    boot.initrd.systemd.storePaths = [ panther ];
    boot.initrd.systemd.contents."/etc/pantheros/manifest.json".source = config.pantheros.manifestFile;
    boot.initrd.supportedFilesystems = [ "btrfs" ];

    systemd.services.pantheros-roots-gc = {
      description = "PantherOS: prune old roots by the retention policy";
      after = [ "local-fs.target" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${panther}/bin/panther roots gc";
      };
    };
    systemd.timers.pantheros-roots-gc = {
      wantedBy = [ "timers.target" ];
      timerConfig = { OnCalendar = cfg.gc.dates; OnBootSec = "10min"; Persistent = true; };
    };

    # The login message reports a boot that kept the previous root.
    environment.loginShellInit = ''
      if [ -r ${cfg.persistentStoragePath}/.pantheros/rollback.json ] \
        && grep -q '"result": "dirty"' ${cfg.persistentStoragePath}/.pantheros/rollback.json; then
        echo "PantherOS: the root was NOT rolled back at this boot; run 'panther status'." >&2
      fi
    '';
  };
}
