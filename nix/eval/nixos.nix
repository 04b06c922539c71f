# The NixOS options that PantherOS's modules, the example hosts, the template and
# nix-community/impermanence set or read, declared with the types and merges NixOS uses, plus the
# definitions NixOS itself makes that can collide with ours. Each block names the nixpkgs file
# that declares the option; the declarations are written for PantherOS (D26). Anything not
# declared here does not exist: setting it fails as it does in NixOS.
{
  config,
  lib,
  options,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib) mkDefault mkOption types;
  systemd = import ./systemd.nix { inherit lib pkgs; };
  usersConfig = config.users;
  osConfig = config;

  bool = default: mkOption { type = types.bool; inherit default; };
  enableOption = bool false;
  strings = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  lines = mkOption {
    type = types.lines;
    default = "";
  };

  # nixos/modules/tasks/filesystems.nix: `attrNamesToTrue`, `nonEmptyStr`,
  # `nonEmptyWithoutTrailingSlash`.
  attrNamesToTrue = types.coercedTo (types.listOf types.str) (
    names: lib.genAttrs names (_: true)
  ) (types.attrsOf types.bool);
  nonEmpty = s: builtins.match "[ \t\n]*" s == null;
  nonEmptyStr = types.addCheck types.str nonEmpty // {
    description = "non-empty string";
  };
  mountPointType = types.addCheck types.str (s: nonEmpty s && builtins.match ".+/" s == null) // {
    description = "non-empty string without trailing slash";
  };

  # nixos/modules/tasks/filesystems.nix `coreFileSystemOpts` (fileSystems and
  # boot.specialFileSystems).
  coreFileSystem =
    { name, config, ... }:
    {
      options = {
        enable = bool true;
        mountPoint = mkOption {
          type = mountPointType;
          default = name;
        };
        device = mkOption {
          type = types.nullOr nonEmptyStr;
          default = null;
        };
        fsType = mkOption {
          type = nonEmptyStr;
          default = "auto";
        };
        options = mkOption {
          type = types.nonEmptyListOf nonEmptyStr;
          default = [ "defaults" ];
        };
        depends = mkOption {
          type = types.listOf mountPointType;
          default = [ ];
        };
      };
      config.device = lib.mkIf (lib.elem config.fsType [
        "proc"
        "sysfs"
        "tmpfs"
        "ramfs"
        "devtmpfs"
        "devpts"
      ]) (mkDefault config.fsType);
    };

  # nixos/modules/tasks/filesystems.nix `fileSystemOpts` (`neededForBoot` comes from
  # nixos/modules/system/boot/stage-1.nix, declared in nixos-rest.nix).
  fileSystem =
    { config, ... }:
    {
      options = {
        label = mkOption {
          type = types.nullOr nonEmptyStr;
          default = null;
        };
        autoFormat = bool false;
        autoResize = bool false;
        noCheck = bool false;
      };
      config.device = lib.mkIf (config.label != null) (mkDefault "/dev/disk/by-label/${config.label}");
      config.options =
        let
          inInitrd = utils.fsNeededForBoot config;
        in
        lib.mkMerge [
          (lib.mkIf config.autoResize [ "x-systemd.growfs" ])
          (lib.mkIf config.autoFormat [ "x-systemd.makefs" ])
          (lib.mkIf inInitrd [ "x-initrd.mount" ])
          # `depends`: under the systemd initrd, a requirement on the mounts that hold them.
          (lib.mkIf (config.depends != [ ] && (inInitrd -> osConfig.boot.initrd.systemd.enable)) (
            map (
              x: "x-systemd.requires-mounts-for=${lib.optionalString inInitrd "/sysroot"}${x}"
            ) config.depends
          ))
        ];
    };

  # nixos/modules/config/sysctl.nix: each key is defined once after priorities
  # (mergeOneOption over filterOverrides), so two definitions at the same priority fail.
  sysctlValue = lib.mkOptionType {
    name = "sysctl option value";
    check =
      v:
      let
        atom = x: lib.isBool x || lib.isString x || lib.isInt x || x == null;
      in
      atom v || (v._type or "" == "override" && atom v.content);
    merge = loc: defs: lib.mergeOneOption loc (lib.filterOverrides defs);
  };
  largestBuffer = mkOption {
    type = types.nullOr types.ints.unsigned // {
      merge =
        _: defs:
        lib.foldl (a: b: if b.value == null then null else lib.max a b.value) 0 (lib.filterOverrides defs);
    };
    default = null;
  };

  # nixos/modules/config/users-groups.nix `passwdEntry`-checked strings, and the user options
  # (with `openssh.authorizedKeys` from nixos/modules/services/networking/ssh/sshd.nix).
  passwdStr = types.passwdEntry types.str;
  # users-groups.nix `allowsLogin`.
  allowsLogin =
    hash:
    hash == ""
    || !(lib.elem hash [
      null
      "!"
      "!!"
      "*"
    ]);
  nullStr = mkOption {
    type = types.nullOr passwdStr;
    default = null;
  };
  userOptions =
    { name, config, ... }:
    {
      options = {
        enable = bool true;
        name = mkOption {
          type = passwdStr;
          default = name;
        };
        description = mkOption {
          type = passwdStr;
          default = "";
        };
        uid = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        isSystemUser = bool false;
        isNormalUser = bool false;
        group = mkOption {
          type = types.str;
          default = "";
        };
        extraGroups = strings;
        home = mkOption {
          type = types.passwdEntry types.path;
          default = "/var/empty";
        };
        createHome = bool false;
        shell = mkOption {
          type = types.nullOr (types.either types.shellPackage (types.passwdEntry types.path));
          default = null;
        };
        hashedPassword = nullStr;
        password = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        hashedPasswordFile = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        initialHashedPassword = nullStr;
        initialPassword = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        openssh.authorizedKeys = {
          keys = strings;
          keyFiles = mkOption {
            type = types.listOf types.path;
            default = [ ];
          };
        };
      };
      config = lib.mkMerge [
        (lib.mkIf config.isNormalUser {
          group = mkDefault "users";
          createHome = mkDefault true;
          home = mkDefault "/home/${config.name}";
        })
        # With immutable users the initial password is the password.
        (lib.mkIf (!usersConfig.mutableUsers && config.initialPassword != null) {
          password = mkDefault config.initialPassword;
        })
        (lib.mkIf (!usersConfig.mutableUsers && config.initialHashedPassword != null) {
          hashedPassword = mkDefault config.initialHashedPassword;
        })
      ];
    };

  # nixos/modules/system/etc/etc.nix: one file of /etc.
  etcFile =
    {
      name,
      config,
      options,
      ...
    }:
    {
      options = {
        enable = bool true;
        target = mkOption {
          type = types.str;
          default = name;
        };
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
        source = mkOption { type = types.path; };
        mode = mkOption {
          type = types.str;
          default = "symlink";
        };
        uid = mkOption {
          type = types.int;
          default = 0;
        };
        gid = mkOption {
          type = types.int;
          default = 0;
        };
        user = mkOption {
          type = types.str;
          default = "+${toString config.uid}";
        };
        group = mkOption {
          type = types.str;
          default = "+${toString config.gid}";
        };
      };
      config.source = lib.mkIf (config.text != null) (
        lib.mkDerivedConfig options.text (pkgs.writeText "etc-${baseNameOf name}")
      );
    };

  # nixos/lib/systemd-types.nix `initrdContents`.
  initrdFile =
    { name, config, ... }:
    {
      options = {
        enable = bool true;
        target = mkOption {
          type = types.path;
          default = name;
        };
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
        source = mkOption { type = types.path; };
      };
      config.source = lib.mkIf (config.text != null) (
        pkgs.writeText "initrd-${baseNameOf name}" config.text
      );
    };

  # nixos/lib/systemd-types.nix `initrdStorePath`: a store path (or package) copied into the
  # initrd with what its ELF files and symlinks need.
  initrdStorePath = types.coercedTo (types.oneOf [
    types.singleLineStr
    types.package
  ]) (source: { inherit source; }) (
    types.submodule {
      options = {
        enable = bool true;
        source = mkOption { type = types.path; };
        target = mkOption {
          type = types.nullOr types.path;
          default = null;
        };
      };
    }
  );

  # nixos/modules/system/activation/activation-script.nix: an activation snippet.
  activationScript = types.coercedTo types.str (text: { inherit text; }) (
    types.submodule {
      options = {
        deps = strings;
        text = mkOption { type = types.lines; };
        supportsDryActivation = bool false;
      };
    }
  );

  # nixos/modules/system/boot/luksroot.nix: one LUKS device opened in the initrd.
  luksDevice =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
        };
        device = mkOption { type = types.str; };
        header = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        keyFile = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        allowDiscards = bool false;
        bypassWorkqueues = bool false;
        preLVM = bool true;
        crypttabExtraOpts = strings;
      };
    };

  # nixos/modules/config/swap.nix: one swap device or file.
  swapDevice = {
    options = {
      device = mkOption { type = nonEmptyStr; };
      label = mkOption {
        type = types.nullOr nonEmptyStr;
        default = null;
      };
      size = mkOption {
        type = types.nullOr types.int;
        default = null;
      };
      priority = mkOption {
        type = types.nullOr types.int;
        default = null;
      };
      discardPolicy = mkOption {
        type = types.nullOr (
          types.enum [
            "once"
            "pages"
            "both"
          ]
        );
        default = null;
      };
      options = mkOption {
        type = types.nonEmptyListOf nonEmptyStr;
        default = [ "defaults" ];
      };
    };
  };

  # nixos/modules/services/networking/ssh/sshd.nix `settings`: a key-value file (the freeform
  # part, pkgs.formats.keyValue) with the commonly set keys declared and typed.
  sshAtom = types.nullOr (
    types.oneOf [
      types.bool
      types.int
      types.float
      types.str
    ]
  );
  sshSettings = {
    freeformType = types.attrsOf (types.either sshAtom (types.listOf sshAtom));
    options = {
      PermitRootLogin = mkOption {
        type = types.enum [
          "yes"
          "without-password"
          "prohibit-password"
          "forced-commands-only"
          "no"
        ];
        default = "prohibit-password";
      };
      PasswordAuthentication = bool true;
      KbdInteractiveAuthentication = bool true;
      X11Forwarding = bool false;
      UsePAM = bool true;
      UseDns = bool false;
      StrictModes = bool true;
      PrintMotd = bool false;
      GatewayPorts = mkOption {
        type = types.str;
        default = "no";
      };
      LogLevel = mkOption {
        type = types.nullOr (
          types.enum [
            "QUIET"
            "FATAL"
            "ERROR"
            "INFO"
            "VERBOSE"
            "DEBUG"
            "DEBUG1"
            "DEBUG2"
            "DEBUG3"
          ]
        );
        default = "INFO";
      };
      AuthorizedPrincipalsFile = mkOption {
        type = types.nullOr types.str;
        default = "none";
      };
    };
  };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      internal = true;
      default = [ ];
    };

    # nixos/modules/system/activation/activation-script.nix
    system.activationScripts = mkOption {
      type = types.attrsOf activationScript;
      default = { };
    };

    # nixos/modules/services/networking/ssh/sshd.nix
    services.openssh = {
      enable = enableOption;
      openFirewall = bool true;
      ports = mkOption {
        type = types.listOf types.port;
        default = [ 22 ];
      };
      settings = mkOption {
        type = types.submodule sshSettings;
        default = { };
      };
      hostKeys = mkOption {
        type = types.listOf types.attrs;
        default = [
          {
            bits = 4096;
            path = "/etc/ssh/ssh_host_rsa_key";
            type = "rsa";
          }
          {
            path = "/etc/ssh/ssh_host_ed25519_key";
            type = "ed25519";
          }
        ];
      };
    };

    # nixos/modules/security/sudo.nix
    security.sudo = {
      enable = bool true;
      wheelNeedsPassword = bool true;
      execWheelOnly = enableOption;
    };


    # nixos/modules/config/users-groups.nix
    users.mutableUsers = bool true;
    users.allowNoPasswordLogin = bool false;
    users.users = mkOption {
      type = types.attrsOf (types.submodule userOptions);
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              name = mkOption {
                type = passwdStr;
                default = name;
              };
              gid = mkOption {
                type = types.nullOr types.int;
                default = null;
              };
              members = mkOption {
                type = types.listOf passwdStr;
                default = [ ];
              };
            };
          }
        )
      );
      default = { };
    };

    # nixos/modules/system/build.nix (what disko's module adds its scripts to)
    system.build = mkOption {
      default = { };
      type = types.submoduleWith {
        modules = [ { freeformType = with types; lazyAttrsOf (uniq unspecified); } ];
      };
    };

    # nixos/modules/system/etc/etc.nix
    environment.etc = mkOption {
      type = types.attrsOf (types.submodule etcFile);
      default = { };
    };

    # nixos/modules/tasks/filesystems.nix (+ neededForBoot from stage-1.nix)
    fileSystems = mkOption {
      type = types.attrsOf (
        types.submodule [
          coreFileSystem
          fileSystem
        ]
      );
      default = { };
      apply = lib.filterAttrs (_: fs: fs.enable);
    };

    boot = {
      # nixos/modules/config/sysctl.nix
      kernel.sysctl = mkOption {
        type = types.submodule {
          freeformType = types.attrsOf sysctlValue;
          options."net.core.rmem_max" = largestBuffer;
          options."net.core.wmem_max" = largestBuffer;
        };
        default = { };
      };
      # nixos/modules/system/boot/kernel.nix
      kernelParams = mkOption {
        type = types.listOf (
          types.strMatching ''([^"[:space:]]|"[^"]*")+''
          // {
            name = "kernelParam";
          }
        );
        default = [ ];
      };
      consoleLogLevel = mkOption {
        type = types.int;
        default = 4;
      };
      kernelModules = strings;
      initrd.availableKernelModules = strings;
      initrd.kernelModules = strings;
      # nixos/modules/system/boot/modprobe.nix
      blacklistedKernelModules = mkOption {
        type = attrNamesToTrue;
        default = { };
        # A set of names: the list NixOS uses is sorted and without duplicates.
        apply = mods: lib.attrNames (lib.filterAttrs (_: v: v) mods);
      };
      extraModprobeConfig = lines;
      # nixos/modules/tasks/filesystems.nix
      supportedFilesystems = mkOption {
        type = attrNamesToTrue;
        default = { };
      };
      specialFileSystems = mkOption {
        type = types.attrsOf (types.submodule coreFileSystem);
        internal = true;
        default = { };
        apply = lib.filterAttrs (_: fs: fs.enable);
      };
      devShmSize = mkOption {
        type = types.str;
        default = "50%";
      };
      # nixos/modules/system/boot/tmp.nix
      tmp = {
        cleanOnBoot = bool false;
        useTmpfs = bool false;
        tmpfsSize = mkOption {
          type = types.oneOf [
            types.str
            types.ints.positive
          ];
          default = "50%";
        };
        tmpfsHugeMemoryPages = mkOption {
          type = types.enum [
            "never"
            "always"
            "within_size"
            "advise"
          ];
          default = "never";
        };
      };

      initrd = {
        # nixos/modules/system/boot/luksroot.nix
        luks.devices = mkOption {
          type = types.attrsOf (types.submodule luksDevice);
          default = { };
        };
        luks.mitigateDMAAttacks = bool true;
        # nixos/modules/system/boot/systemd/initrd.nix (on by default since NixOS 26.05)
        systemd = {
          enable = bool true;
          root = mkOption {
            type = types.nullOr (
              types.enum [
                "fstab"
                "gpt-auto"
              ]
            );
            default = "fstab";
          };
          emergencyAccess = mkOption {
            type = types.oneOf [
              types.bool
              (types.nullOr (types.passwdEntry types.str))
            ];
            default = false;
          };
          contents = mkOption {
            type = types.attrsOf (types.submodule initrdFile);
            default = { };
          };
          storePaths = mkOption {
            type = types.listOf initrdStorePath;
            default = [ ];
          };
          extraBin = mkOption {
            type = types.attrsOf types.path;
            default = { };
          };
          initrdBin = mkOption {
            type = types.listOf types.package;
            default = [ ];
          };
          suppressedUnits = strings;
          additionalUpstreamUnits = strings;
          services = mkOption {
            type = systemd.types.initrdServices;
            default = { };
          };
          targets = mkOption {
            type = systemd.types.initrdTargets;
            default = { };
          };
          mounts = mkOption {
            type = systemd.types.initrdMounts;
            default = [ ];
          };
        };
      };
    };
  };

  config = {
    # nixos/modules/config/sysctl.nix (and kernel.nix): NixOS's own sysctl defaults, at mkDefault
    # priority. A module that sets the same key with mkDefault collides with them.
    boot.kernel.sysctl = {
      "fs.inotify.max_user_instances" = mkDefault 524288;
      "fs.inotify.max_user_watches" = mkDefault 524288;
      "kernel.kptr_restrict" = mkDefault 1;
      "vm.max_map_count" = mkDefault 1048576;
      # nixos/modules/system/boot/kernel.nix
      "kernel.printk" = mkDefault config.boot.consoleLogLevel;
    };
    boot.kernelParams = [
      "loglevel=${toString config.boot.consoleLogLevel}"
    ]
    # nixos/modules/system/boot/systemd/initrd.nix: the systemd initrd finds the root in fstab.
    ++ lib.optional (
      config.boot.initrd.systemd.enable && config.boot.initrd.systemd.root != null
    ) "root=${config.boot.initrd.systemd.root}";
    # nixos/modules/system/boot/luksroot.nix: with a LUKS device, FireWire (DMA) is blacklisted.
    boot.blacklistedKernelModules =
      lib.optionals
        (config.boot.initrd.luks.devices != { } && config.boot.initrd.luks.mitigateDMAAttacks)
        [
          "firewire_ohci"
          "firewire_core"
          "firewire_sbp2"
        ];

    # nixos/modules/tasks/filesystems.nix: the special file systems (the ones PantherOS
    # changes, with NixOS's options).
    boot.specialFileSystems = {
      "/proc" = {
        fsType = "proc";
        options = [
          "nosuid"
          "noexec"
          "nodev"
        ];
      };
      "/dev/shm" = {
        fsType = "tmpfs";
        options = [
          "nosuid"
          "nodev"
          "strictatime"
          "mode=1777"
          "size=${config.boot.devShmSize}"
        ];
      };
    };
    # nixos/modules/tasks/filesystems.nix: every mounted file system type is supported.
    boot.supportedFilesystems = map (fs: fs.fsType) (lib.attrValues config.fileSystems);

    # nixos/modules/system/boot/tmp.nix
    systemd.mounts = lib.mkIf config.boot.tmp.useTmpfs [
      {
        what = "tmpfs";
        where = "/tmp";
        type = "tmpfs";
        mountConfig.Options = lib.concatStringsSep "," [
          "mode=1777"
          "strictatime"
          "rw"
          "nosuid"
          "nodev"
          "size=${toString config.boot.tmp.tmpfsSize}"
          "huge=${config.boot.tmp.tmpfsHugeMemoryPages}"
        ];
      }
    ];

    # nixos/modules/config/users-groups.nix (ids from nixos/modules/misc/ids.nix): the users and
    # groups NixOS always has, and the rule that every user has a group.
    users.users.root = {
      uid = 0;
      description = "System administrator";
      home = "/root";
      group = "root";
    };
    users.users.nobody = {
      uid = 65534;
      isSystemUser = true;
      group = "nogroup";
    };
    users.groups = {
      root.gid = 0;
      wheel.gid = 1;
      users.gid = 100;
      nogroup.gid = 65534;
    };
    assertions =
      lib.mapAttrsToList (name: user: {
        assertion = user.group != "";
        message = "users.users.${name}.group is unset.";
      }) config.users.users
      # users-groups.nix: with immutable users, root or a wheel user must be able to log in.
      ++ [
        {
          assertion =
            !config.users.mutableUsers
            -> !config.users.allowNoPasswordLogin
            -> lib.any lib.id (
              lib.mapAttrsToList (
                name: user:
                (name == "root" || user.group == "wheel" || lib.elem "wheel" user.extraGroups)
                && (
                  allowsLogin user.hashedPassword
                  || user.password != null
                  || user.hashedPasswordFile != null
                  || user.openssh.authorizedKeys.keys != [ ]
                  || user.openssh.authorizedKeys.keyFiles != [ ]
                )
              ) config.users.users
            );
          message = "Neither the root account nor any wheel user has a password or SSH authorized key.";
        }
      ]
      ++ lib.mapAttrsToList (name: user: {
        assertion = !(user.isNormalUser && user.isSystemUser);
        message = "Exactly one of users.users.${name}.isSystemUser and users.users.${name}.isNormalUser must be set.";
      }) config.users.users
      # nixos/modules/system/boot/systemd/initrd.nix: scripted-stage-1 hooks are refused.
      ++ [
        {
          assertion = config.boot.initrd.systemd.enable -> config.boot.initrd.postMountCommands == "";
          message = "systemd stage 1 does not support 'boot.initrd.postMountCommands'. Please convert it to analogous systemd units in 'boot.initrd.systemd'.";
        }
      ];
  };
}
