# pantheros.impermanence: the root is rolled back at every boot, in the systemd initrd, by the
# boot step (nix/bootstep.nix: a bash script and a small C helper, no Python); stage 2 records the
# outcome and prunes old roots with `panther`. What is declared persistent is bind-mounted from the
# persistent subvolume by nix-community/impermanence (`environment.persistence`), which this
# module configures; the host imports that module itself, beside PantherOS's (docs/decisions.md
# D92). Credentials and the state the first boot needs live on the persistent subvolume (D90, D91).
{ config, options, lib, pkgs, utils, ... }:
let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cfg = config.pantheros.impermanence;
  storage = config.pantheros.storage;
  panther = config.pantheros.package;
  bootstep = config.pantheros.bootstep;

  # What the manifest accepts: absolute and normalised (no empty, `.` or `..` component).
  absolutePath = types.addCheck (types.strMatching "(/[^/[:cntrl:]]+)+")
    (path: !lib.any (part: part == "." || part == "..") (lib.splitString "/" path)) // {
      description = "normalised absolute path";
    };
  # The owner and mode of an entry that names none; `panther` reads the same file.
  entryDefaults = builtins.fromJSON (builtins.readFile ../../src/pantheros/data/persistence-defaults.json);
  defaultsFor = kind: { inherit (entryDefaults) user group; mode = entryDefaults.mode.${kind}; };
  entryOptions = kind: {
    options = {
      ${kind} = mkOption {
        type = absolutePath;
        description = "Absolute path, as the running system sees it.";
      };
      user = mkOption { type = types.str; default = (defaultsFor kind).user; description = "Owner."; };
      group = mkOption { type = types.str; default = (defaultsFor kind).group; description = "Group."; };
      mode = mkOption {
        type = types.strMatching "0?[0-7]{3,4}";
        default = (defaultsFor kind).mode;
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
        withDefaults = kind: e: defaultsFor kind // e;
      in
      {
        directories = map (withDefaults "directory") (data.directories or [ ]);
        files = map (withDefaults "file") (data.files or [ ]);
      };

  directories = cfg.directories ++ fromFile.directories;
  files = cfg.files ++ fromFile.files;

  subvolumes = lib.attrValues storage.enabledSubvolumes;
  persistSubvolume = lib.findFirst (s: s.role == "persist") null subvolumes;
  rootSubvolume = lib.findFirst (s: s.role == "root") null subvolumes;
  mountPoints = map (s: s.mountPoint) subvolumes;
  # The deepest subvolume mount point that contains path.
  owner = path: lib.foldl'
    (best: mp: if (mp == "/" || path == mp || lib.hasPrefix "${mp}/" path)
      && lib.stringLength mp > lib.stringLength best then mp else best) "/" mountPoints;
  holding = lib.filter
    (p: lib.any (mp: lib.hasPrefix "${p}/" mp) (mountPoints ++ lib.optional storage.esp.enable storage.esp.mountPoint))
    (map (d: d.directory) directories);
  misplaced = lib.filter (p: owner p != "/")
    (map (d: d.directory) directories ++ map (f: f.file) files);

  # A persisted file's parent directory is made by impermanence with the owner and mode given
  # here: those of the directory's own entry when it is declared, a directory's defaults otherwise.
  declaredDirectory = path: lib.findFirst (d: d.directory == path) null directories;
  parentOf = file:
    let
      parent = dirOf file;
      declared = declaredDirectory parent;
    in
    if declared == null then defaultsFor "directory"
    else { inherit (declared) user group mode; };

  # The layout is the one this machine boots (qemu-vm.nix's file systems replace it for
  # `nixos-rebuild build-vm`: then nothing is rolled back, see pantheros.storage.inUse).
  active = cfg.enable && storage.inUse;
  # nix-community/impermanence's module, imported by the host (D92).
  upstream = options ? environment.persistence;
  persist = cfg.persistentStoragePath;

  # The deepest file system NixOS mounts that holds path.
  fileSystemOf = path: lib.foldl'
    (best: mp: if (mp == "/" || path == mp || lib.hasPrefix "${mp}/" path)
      && lib.stringLength mp > lib.stringLength best then mp else best) "/"
    (lib.attrNames config.fileSystems);
  # A credential survives the rollback, and is there when the users activation reads it, only on
  # a file system mounted in the initrd that is not the root the rollback replaces.
  survives = path:
    let mp = fileSystemOf path; in
    mp != "/" && config.fileSystems ? ${mp} && utils.fsNeededForBoot config.fileSystems.${mp};
  loginUsers = lib.filterAttrs (_: u: u.enable or true) config.users.users;
  passwordFiles = lib.filterAttrs (_: u: u.hashedPasswordFile != null) loginUsers;
  lostCredentials = lib.attrNames (lib.filterAttrs (_: u: !(survives u.hashedPasswordFile)) passwordFiles);

  # SSH host keys on the root are persisted (and only the types listed are generated at all);
  # keys a host keeps elsewhere already survive.
  # ed25519 only unless the host lists others (sshd.nix declares hostKeys; a configuration
  # without it gets sshd's usual ed25519 key).
  keptHostKeys = [ { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; } ];
  hostKeys = if options ? services.openssh.hostKeys then config.services.openssh.hostKeys else keptHostKeys;
  hostKeysOnRoot = lib.filter (k: fileSystemOf k.path == "/")
    (lib.optionals config.services.openssh.enable hostKeys);
  # Persisted directories that impermanence binds in the initrd (NixOS's paths needed for
  # boot, /var/lib/nixos among them): their persistent copy must exist before the bind, also on
  # the first boot, so an initrd unit makes them.
  bootDirectories = lib.filter (d: lib.elem d.directory utils.pathsNeededForBoot) directories;
  sysrootPath = path: "/sysroot${persist}${path}";

  deviceUnit = "${utils.escapeSystemdPath storage.btrfsDevice}.device";
  cryptUnit = "systemd-cryptsetup@${utils.escapeSystemdPath storage.luks.name}.service";
  failClosed = cfg.failPolicy == "fail-closed";
  # The numeric owner of a first-boot entry where the declaration fixes it (null: NixOS
  # allocates it at the first activation, so the installer cannot know it).
  withIds = e: e // {
    uid = if e.user == "root" then 0 else config.users.users.${e.user}.uid or null;
    gid = if e.group == "root" then 0 else config.users.groups.${e.group}.gid or null;
  };
  report = "/run/pantheros/rollback.report";
in
{
  imports = [ ./storage.nix ./manifest.nix ./users.nix ];

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
        type = types.nullOr (types.ints.between 1 36500);
        default = 30;
        description = "Old roots older than this (btrfs creation time) are pruned.";
      };
      maxCount = mkOption {
        type = types.nullOr (types.ints.between 1 100000);
        default = null;
        description = "At most this many old roots are kept.";
      };
      minFreePercent = mkOption {
        type = types.nullOr (types.ints.between 0 90);
        default = null;
        description = "Prune the oldest roots while free space is below this.";
      };
    };

    gc.dates = mkOption {
      type = types.str;
      default = "daily";
      description = "When `panther roots gc` prunes old roots (systemd calendar event).";
    };

    firstBoot = mkOption {
      type = types.attrsOf (types.listOf (types.attrsOf types.anything));
      default = { directories = [ ]; files = [ ]; };
      internal = true;
      description = ''
        What must or may be on the persistent subvolume before the first boot, for the
        installer (`nix eval .#nixosConfigurations.HOST.config.pantheros.impermanence.firstBoot`):
        `directories` (made at boot by the module too: the initrd unit and impermanence), and
        `files`, each with its owner, mode, whether it is `required` (a password hash: without it
        the user cannot log in with a password) and `what` it is. docs/decisions.md D91.
      '';
    };
  };

  config = lib.mkMerge [ {
    pantheros.manifest.impermanence = {
      enable = active;
      inherit (cfg) design;
      fail_policy = cfg.failPolicy;
      retention = {
        keep_min = cfg.retention.keepMin;
        max_age_days = cfg.retention.maxAgeDays;
        max_count = cfg.retention.maxCount;
        min_free_percent = cfg.retention.minFreePercent;
      };
    };
  } (mkIf cfg.enable {
    pantheros.installManifest = true;
    assertions = [
      {
        assertion = config.boot.initrd.systemd.enable;
        message = "pantheros.impermanence runs the rollback in the systemd initrd: set boot.initrd.systemd.enable = true.";
      }
      {
        assertion = storage.enable;
        message = "pantheros.impermanence needs pantheros.storage.enable = true (it rolls back its root subvolume).";
      }
    ];
  }) (mkIf active {
    pantheros.manifest.persistence =
      map (d: { path = d.directory; kind = "directory"; inherit (d) user group mode; }) directories
      ++ map (f: { path = f.file; kind = "file"; inherit (f) user group mode; }) files;

    assertions = [
      {
        assertion = upstream;
        message = "pantheros.impermanence binds the persisted paths with nix-community/impermanence's module, which the host imports itself: add inputs.impermanence.nixosModules.impermanence to the host's modules (PantherOS does not bring it along, so that a host that already imports it works; docs/decisions.md D92).";
      }
      {
        assertion = (config.fileSystems.${cfg.persistentStoragePath}.neededForBoot or false);
        message = "pantheros.impermanence: ${cfg.persistentStoragePath} must be mounted in the initrd (fileSystems.\"${cfg.persistentStoragePath}\".neededForBoot = true), or persisted files are missing at boot.";
      }
      {
        assertion = holding == [ ];
        message = "pantheros.impermanence: these persisted directories hold a mount point (persist what is beside it): ${lib.concatStringsSep ", " holding}";
      }
      {
        assertion = misplaced == [ ];
        message = "pantheros.impermanence: these persisted paths lie on a subvolume that is never rolled back, so persisting them does nothing: ${lib.concatStringsSep ", " misplaced}";
      }
      {
        assertion = !config.users.mutableUsers;
        message = "pantheros.impermanence: users.mutableUsers = true keeps users and passwords in /etc/passwd and /etc/shadow on the root that every boot archives: the root password nixos-install sets and every password set with passwd are gone after the first reboot. Leave users.mutableUsers = false (PantherOS's default) and declare each login user's credential: openssh.authorizedKeys.keys, or hashedPasswordFile on ${persist} (docs/decisions.md D90).";
      }
      {
        assertion = lostCredentials == [ ];
        message = "pantheros.impermanence: the hashedPasswordFile of ${lib.concatMapStringsSep ", " (n: "users.users.${n} (${passwordFiles.${n}.hashedPasswordFile})") lostCredentials} is not on a file system mounted in the initrd that survives the rollback, so the user is locked out after a reboot (the users activation reads it at every boot). Keep it under ${persist}, for example ${persist}/secrets/passwords/NAME (docs/decisions.md D90).";
      }
    ];

    # NixOS rewrites /etc/passwd and /etc/shadow from the declaration at every activation: what
    # is declared is what survives (D90).
    users.mutableUsers = mkDefault false;

    # Only the host key types that are kept are generated (sshd-keygen makes every type listed).
    services.openssh = lib.optionalAttrs (options ? services.openssh.hostKeys) {
      hostKeys = mkDefault keptHostKeys;
    };

    # Sensible defaults: the machine's identity and NixOS's own state.
    pantheros.impermanence.directories = [
      "/var/lib/nixos"
      "/var/lib/systemd/coredump"
      "/var/lib/systemd/timers"
    ];
    pantheros.impermanence.files = [ { file = "/etc/machine-id"; mode = "0444"; } ]
      ++ lib.concatMap (k: [ { file = k.path; mode = "0600"; } "${k.path}.pub" ]) hostKeysOnRoot;

    pantheros.impermanence.firstBoot = {
      directories = map withIds (
        map (d: { path = "${persist}${d.directory}"; inherit (d) user group mode; }) bootDirectories
        ++ lib.optional (hostKeysOnRoot != [ ]) { path = "${persist}/etc/ssh"; user = "root"; group = "root"; mode = "0755"; }
        # A password file directly in ${persist} needs no directory of its own (and the
        # subvolume's root keeps its mode).
        ++ map (dir: { path = dir; user = "root"; group = "root"; mode = "0700"; })
          (lib.filter (dir: dir != persist)
            (lib.unique (map (u: dirOf u.hashedPasswordFile) (lib.attrValues passwordFiles)))));
      files = map withIds (
        map (u: { path = u.hashedPasswordFile; user = "root"; group = "root"; mode = "0600"; required = true;
          login = u.name; what = "the password hash of ${u.name} (mkpasswd -m yescrypt)"; }) (lib.attrValues passwordFiles)
        ++ lib.concatMap (k: [
          { path = "${persist}${k.path}"; user = "root"; group = "root"; mode = "0600"; required = false;
            what = "the ${k.type} SSH host key (generated at the first boot when absent)"; }
          { path = "${persist}${k.path}.pub"; user = "root"; group = "root"; mode = "0644"; required = false;
            what = "its public half"; }
        ]) hostKeysOnRoot
        ++ map (f: { path = "${persist}${f.file}"; inherit (f) user group mode; required = false;
          what = "the machine id (systemd writes one at the first boot when absent)"; })
          (lib.filter (f: f.file == "/etc/machine-id") files));
    };
    # The installer's copy: `panther disk finish` and `format` make the directories, and
    # `panther install` stages the files (D134).
    pantheros.manifest.first_boot = cfg.firstBoot;

    # The persistent copies of the directories impermanence binds in the initrd exist before the
    # binds, on the first boot too (the installer does not have to make them); owner and mode
    # are applied in stage 2 by tmpfiles.
    boot.initrd.systemd.services.pantheros-persist-dirs = mkIf (bootDirectories != [ ]) {
      description = "PantherOS: make the persistent directories bound in the initrd";
      wantedBy = [ "initrd.target" ];
      before = map (d: "${utils.escapeSystemdPath "/sysroot${d.directory}"}.mount") bootDirectories;
      unitConfig = {
        DefaultDependencies = false;
        RequiresMountsFor = "/sysroot${persist}";
      };
      serviceConfig = {
        Type = "oneshot";
        ExecStart = map (d: "/bin/mkdir -p -m ${d.mode} ${sysrootPath d.directory}") bootDirectories;
      };
    };
  }) (lib.optionalAttrs upstream (mkIf active {
    environment.persistence.${cfg.persistentStoragePath} = {
      hideMounts = mkDefault true;
      directories = map (d: { inherit (d) directory user group mode; }) directories;
      files = map (f: { inherit (f) file; parentDirectory = parentOf f.file; }) files;
    };
  })) (mkIf active {
    # impermanence has no owner or mode for a file: tmpfiles sets them on the persistent copy
    # (which the bind mount shows), at every boot, once the file exists.
    systemd.tmpfiles.rules = map
      (f: "z ${cfg.persistentStoragePath}${f.file} ${f.mode} ${f.user} ${f.group} - -")
      files
      ++ map (d: "z ${cfg.persistentStoragePath}${d.directory} ${d.mode} ${d.user} ${d.group} - -") bootDirectories;

    # The boot step: a bash script and its C helper (nix/bootstep.nix), nothing else, so the
    # initrd carries no Python. The helper's `rollback` runs the usual boot itself and the
    # script for anything else (D155). It needs bash and coreutils (in every systemd initrd),
    # mount/umount (there too) and btrfs (added below); the helper takes the top level's lock.
    boot.initrd.systemd.services.pantheros-rollback = {
      description = "PantherOS: archive the root and start from a fresh one";
      wantedBy = [ "initrd.target" ];
      # fail-closed: sysroot.mount requires this unit, so a failure stops the boot. boot-dirty:
      # the unit fails visibly (exit 6), the boot goes on with the previous root, and stage 2
      # (pantheros-rollback-finish) records it and warns at login.
      requiredBy = lib.optional failClosed "sysroot.mount";
      requires = [ deviceUnit ];
      after = [ deviceUnit "systemd-hibernate-resume.service" ]
        ++ lib.optional storage.luks.enable cryptUnit;
      before = [ "sysroot.mount" ];
      unitConfig = {
        DefaultDependencies = false;
        # Recovery: booting with `pantheros.norollback` keeps the previous root.
        ConditionKernelCommandLine = "!pantheros.norollback";
      };
      serviceConfig = {
        Type = "oneshot";
        # The step takes well under a second; this bounds a hung device or filesystem.
        TimeoutStartSec = mkDefault "2min";
        # Each argument escaped (the option types leave no `%` or `$` for systemd to expand);
        # the options after --device are what `panther` renders for the same host
        # (pantheros.impermanence.bootstep.options, tested equal for every example host).
        ExecStart = lib.escapeShellArgs [
          "${bootstep}/bin/pantheros-btrfs"
          "rollback"
          "--device" storage.btrfsDevice
          "--root" rootSubvolume.name
          "--blank" storage.blankSnapshot
          "--old-roots" storage.oldRoots
          "--design" cfg.design
          "--keep-min" (toString cfg.retention.keepMin)
          "--fail-policy" cfg.failPolicy
          "--report" report
        ];
      };
    };
    boot.initrd.systemd.storePaths = [ bootstep ];
    boot.initrd.systemd.extraBin = {
      btrfs = "${pkgs.btrfs-progs}/bin/btrfs";
    };
    boot.initrd.supportedFilesystems = [ "btrfs" ];

    # Stage 2: the record, retention and the login warning, off the boot path.
    systemd.services.pantheros-rollback-finish = {
      description = "PantherOS: record this boot's rollback and prune old roots";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" ];
      # Logins wait for it, so the first one already sees the warning of a dirty boot.
      before = [ "systemd-user-sessions.service" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${panther}/bin/panther rollback --finish --report ${report}";
      };
    };
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

    # Stage 2 writes one line there when this boot kept the previous root.
    environment.loginShellInit = ''
      if [ -s /run/pantheros/login-warning ]; then
        cat /run/pantheros/login-warning >&2
      fi
    '';
  }) ];
}
