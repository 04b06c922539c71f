# The NixOS options that PantherOS, the example hosts and the template use and that neither the
# stand-in of nix/eval/nixos.nix nor the NixOS files read for the real-modules check
# (nix/eval/real-files.nix) declare: stage-1, the boot loaders, systemd's stage-2 unit sets,
# networking and a few more, with the types NixOS gives them. `real`: also what those real files
# read or define and whose module is not among them (declared here by hand, with NixOS's types
# and defaults, each naming its nixpkgs file).
{ real }:
let
  # The option shapes both modules below declare with.
  optionMakers =
    lib:
    let
      inherit (lib) mkOption types;
    in
    rec {
      bool = default: mkOption { type = types.bool; inherit default; };
      enableOption = bool false;
      lines = mkOption {
        type = types.lines;
        default = "";
      };
      strings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      anything = default: mkOption { type = types.anything; inherit default; };
    };

  common =
    {
      config,
      lib,
      pkgs,
      utils,
      ...
    }:
    let
      inherit (lib) mkOption types;
      inherit (optionMakers lib) bool enableOption lines strings anything;
      # The unit set types: NixOS's own (nixos/lib/systemd-types.nix) over the real files, the
      # stand-in's (nix/eval/systemd.nix) otherwise.
      sdTypes =
        if real then utils.systemdUtils.types else (import ./systemd.nix { inherit lib pkgs; }).types;
      attrNamesToTrue = types.coercedTo (types.listOf types.str) (
        names: lib.genAttrs names (_: true)
      ) (types.attrsOf types.bool);
    in
    {
      options = {
        # nixos/modules/misc/nixpkgs.nix
        nixpkgs.hostPlatform = mkOption { type = types.either types.str types.attrs; };
        # nixos/modules/misc/version.nix
        system.stateVersion = mkOption { type = types.str; };
        # nixos/modules/misc/documentation.nix
        documentation.enable = bool true;
        # nixos/modules/hardware/cpu/intel-microcode.nix, nixos/modules/hardware/all-firmware.nix
        hardware.cpu.intel.updateMicrocode = enableOption;
        hardware.enableRedistributableFirmware = enableOption;
        # nixos/modules/services/hardware/bluetooth.nix
        hardware.bluetooth.enable = enableOption;

        # nixos/modules/tasks/network-interfaces.nix
        networking.hostName = mkOption {
          type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
          default = "nixos";
        };
        # nixos/modules/services/networking/firewall.nix
        networking.firewall.enable = bool true;
        networking.firewall.allowedTCPPorts = mkOption {
          type = types.listOf types.port;
          default = [ ];
        };
        # nixos/modules/services/networking/networkmanager.nix
        networking.networkmanager.enable = enableOption;

        # nixos/modules/security/auditd.nix, nixos/modules/security/apparmor.nix
        security.auditd.enable = enableOption;
        security.apparmor.enable = enableOption;

        # nixos/modules/config/shells-environment.nix
        environment.loginShellInit = lines;
        # nixos/modules/config/system-path.nix
        environment.systemPackages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };

        # nixos/modules/config/swap.nix
        swapDevices = mkOption {
          type = types.listOf (
            types.submodule {
              options = {
                device = mkOption { type = types.str; };
                label = mkOption {
                  type = types.nullOr types.str;
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
                options = mkOption {
                  type = types.nonEmptyListOf types.str;
                  default = [ "defaults" ];
                };
              };
            }
          );
          default = [ ];
        };

        boot = {
          # nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix
          loader.systemd-boot = {
            enable = enableOption;
            configurationLimit = mkOption {
              type = types.nullOr types.int;
              default = null;
            };
          };
          # nixos/modules/system/boot/loader/grub/grub.nix
          loader.grub = {
            enable = bool true;
            configurationLimit = mkOption {
              type = types.int;
              default = 100;
            };
          };
          # nixos/modules/system/boot/loader/efi.nix
          loader.efi.canTouchEfiVariables = enableOption;
          loader.efi.efiSysMountPoint = mkOption {
            type = types.str;
            default = "/boot";
          };

          # nixos/modules/system/boot/stage-1.nix
          initrd = {
            enable = bool true;
            supportedFilesystems = mkOption {
              type = attrNamesToTrue;
              default = { };
            };
            postMountCommands = lines;
          };
        };

        # nixos/modules/system/boot/stage-1.nix adds neededForBoot to every file system.
        fileSystems = mkOption {
          type = types.attrsOf (
            types.submodule {
              options.neededForBoot = bool false;
            }
          );
        };

        # nixos/modules/system/boot/systemd.nix
        systemd = {
          globalEnvironment = mkOption {
            type = sdTypes.environment or (
              types.attrsOf (
                types.nullOr (
                  types.oneOf [
                    types.str
                    types.path
                    types.package
                  ]
                )
              )
            );
            default = { };
          };
          services = mkOption {
            type = sdTypes.services;
            default = { };
          };
          timers = mkOption {
            type = sdTypes.timers;
            default = { };
          };
          mounts = mkOption {
            type = sdTypes.mounts;
            default = [ ];
          };
          # nixos/modules/system/boot/systemd/tmpfiles.nix
          tmpfiles.rules = strings;
        };
      };
      config = {
        # nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix
        boot.loader.grub.enable = lib.mkIf config.boot.loader.systemd-boot.enable (lib.mkDefault false);
      };
    };

  # What the real files read or define and whose module is not among them.
  realOnly =
    {
      config,
      lib,
      pkgs,
      utils,
      ...
    }:
    let
      inherit (lib) mkOption types;
      inherit (optionMakers lib) bool enableOption lines strings anything;
    in
    {
      options = {
        # nixos/modules/misc/ids.nix (the ids these files read; unique, as the real ones are)
        ids = {
          uids = anything { };
          gids = anything { };
        };
        # nixos/modules/config/users-groups.nix reads these from other modules.
        users.defaultUserShell = mkOption {
          type = types.either types.path types.shellPackage;
          default = pkgs.bashInteractive;
        };
        programs.fish.enable = enableOption;
        programs.xonsh.enable = enableOption;
        programs.zsh.enable = enableOption;
        # nixos/modules/programs/ssh.nix
        programs.ssh = {
          package = mkOption {
            type = types.package;
            default = pkgs.openssh;
          };
          setXAuthLocation = enableOption;
          knownHosts = anything { };
        };
        # nixos/modules/security/google_oslogin.nix, pam.nix, wrappers/default.nix
        security.googleOsLogin.enable = enableOption;
        security.pam.services = mkOption {
          type = types.attrsOf (types.attrsOf types.anything);
          default = { };
        };
        security.wrappers = mkOption {
          type = types.attrsOf (types.attrsOf types.anything);
          default = { };
        };
        # nixos/modules/services/system/userborn.nix, nixos/modules/system/boot/systemd/sysusers.nix
        services.userborn.enable = enableOption;
        systemd.sysusers.enable = enableOption;
        # nixos/modules/services/hardware/lvm.nix
        services.lvm.enable = enableOption;
        # nixos/modules/system/boot/systemd.nix
        systemd.package = mkOption {
          type = types.package;
          default = pkgs.systemd;
        };
        systemd.packages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        systemd.defaultPath = mkOption {
          type = types.listOf (types.either types.package types.str);
          default = [
            pkgs.coreutils
            pkgs.findutils
            pkgs.gnugrep
            pkgs.gnused
            pkgs.systemd
          ];
        };
        systemd.enableStrictShellChecks = enableOption;
        systemd.enableEmergencyMode = bool true;
        systemd.defaultUnit = mkOption {
          type = types.str;
          default = "multi-user.target";
        };
        systemd.ctrlAltDelUnit = mkOption {
          type = types.str;
          default = "reboot.target";
        };
        systemd.targets = mkOption {
          type = utils.systemdUtils.types.targets;
          default = { };
        };
        systemd.sockets = mkOption {
          type = utils.systemdUtils.types.sockets;
          default = { };
        };
        systemd.user = anything { };
        systemd.generatorPath = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        systemd.tmpfiles.settings = anything { };
        # nixos/modules/system/activation/top-level.nix, checks.nix
        system.checks = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        system.systemBuilderArgs = mkOption {
          type = types.attrsOf types.unspecified;
          default = { };
        };
        system.systemBuilderCommands = lines;
        system.activatable = bool true;
        system.path = anything { };
        system.boot.loader.kernelFile = mkOption {
          type = types.str;
          default = "bzImage";
        };
        system.boot.loader.initrdFile = mkOption {
          type = types.str;
          default = "initrd";
        };
        system.nssModules.path = mkOption {
          type = types.str;
          default = "";
        };
        # nixos/modules/system/boot/nixos-init.nix
        system.nixos-init = {
          enable = enableOption;
          package = mkOption {
            type = types.package;
            default = pkgs.nixos-init;
          };
        };
        # nixos/modules/config/shells-environment.nix, system-path.nix, nix.nix
        environment.profiles = strings;
        environment.pathsToLink = strings;
        environment.extraOutputsToInstall = strings;
        environment.shell.enable = bool true;
        nix.enable = bool true;
        # nixos/modules/hardware/device-tree.nix, all-firmware.nix
        hardware.deviceTree.package = mkOption {
          type = types.nullOr types.path;
          default = null;
        };
        hardware.firmware = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        # nixos/modules/tasks/network-interfaces.nix
        networking.enableIPv6 = bool true;
        # nixos/modules/system/boot/stage-1.nix and its scripted-stage-1 hooks (initrd.nix refuses
        # them under the systemd initrd, listing their definitions)
        boot.initrd = {
          checkJournalingFS = bool true;
          osRelease = mkOption {
            type = types.path;
            default = pkgs.writeText "initrd-release" "";
          };
          compressor = mkOption {
            type = types.either types.str (types.functionTo types.str);
            default = "zstd";
          };
          compressorArgs = mkOption {
            type = types.nullOr (types.listOf types.str);
            default = null;
          };
          prepend = strings;
          secrets = anything { };
          preFailCommands = lines;
          preDeviceCommands = lines;
          preLVMCommands = lines;
          postDeviceCommands = lines;
          postResumeCommands = lines;
          extraUtilsCommands = lines;
          extraUtilsCommandsTest = lines;
          extraUdevRulesCommands = lines;
          network.postCommands = lines;
          services.lvm.enable = enableOption;
          # nixos/modules/system/boot/clevis.nix
          clevis = {
            enable = enableOption;
            useTang = enableOption;
            devices = anything { };
          };
          # nixos/modules/system/boot/systemd/tpm2.nix
          systemd.tpm2.enable = enableOption;
        };
        # nixos/modules/system/boot/resume.nix? (kernel.nix, initrd.nix read it)
        boot.resumeDevice = mkOption {
          type = types.str;
          default = "";
        };
        # nixos/modules/virtualisation/container-config.nix, nspawn-container
        boot.isContainer = enableOption;
        boot.isNspawnContainer = enableOption;
      };
      config = {
        # nixos/modules/misc/ids.nix: the ids the real files name.
        ids.uids = {
          root = 0;
          nobody = 65534;
        };
        ids.gids = {
          root = 0;
          wheel = 1;
          kmem = 2;
          tty = 3;
          disk = 6;
          audio = 17;
          floppy = 18;
          uucp = 19;
          lp = 20;
          cdrom = 24;
          tape = 25;
          video = 26;
          dialout = 27;
          utmp = 29;
          adm = 55;
          keys = 96;
          users = 100;
          input = 174;
          kvm = 302;
          render = 303;
          sgx = 304;
          clock = 305;
          shadow = 318;
          nixbld = 30000;
          nogroup = 65534;
        };
        # nixos/modules/system/boot/stage-1.nix: the kernel modules the initrd carries.
        system.build.modulesClosure = pkgs.writeText "linux-modules-closure" "";
        # nixos/modules/system/boot/systemd/journald.nix: the group the initrd's users need.
        users.groups.systemd-journal.gid = 62;
      };
    };
in
{
  imports = [ common ] ++ (if real then [ realOnly ] else [ ]);
}
