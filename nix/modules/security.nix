# pantheros.security: hardening in levels. Every value comes from the hardening table
# (src/pantheros/data/hardening.json), the same table `panther audit` checks the live system
# against: one table, two readers. Nothing changes until `enable`; every value is set at a priority
# a host's own definition overrides; a waiver drops a check on purpose, with a reason that the
# audit reports.
{ config, options, lib, pkgs, ... }:
let
  inherit (lib) mkDefault mkIf mkOption types;
  cfg = config.pantheros.security;
  table = builtins.fromJSON (builtins.readFile ../../src/pantheros/data/hardening.json);
  knownIds = map (c: c.id) table.checks;

  active = lib.filter (c: c.levels ? ${cfg.level} && !(cfg.waivers ? ${c.id})) table.checks;
  area = name: lib.filter (c: c.area == name) active;
  value = c: c.levels.${cfg.level}.set;
  has = id: lib.any (c: c.id == id) active;
  esp = config.pantheros.storage.esp // { enable = config.pantheros.storage.enable && config.pantheros.storage.esp.enable; };
  mountOptions = path: lib.concatMap value (lib.filter (c: c.path == path) (area "mount"));

  # Above NixOS's and its profiles' mkDefault (1000), below a host's plain definition (100), as
  # nixpkgs' profiles/hardened.nix does: NixOS's own sysctl defaults would otherwise collide
  # with ours, and a host can still override any value.
  hardening = lib.mkOverride 900;

  # NixOS's /tmp (boot.tmp.useTmpfs) is nosuid,nodev, with the options of boot/tmp.nix (newer
  # NixOS exposes them as boot.tmp.tmpfsFinalOptions, older NixOS writes the same list into its
  # mount unit). A level that wants more (noexec) mounts /tmp itself with those options plus its
  # own.
  tmpfsOptions =
    if options.boot.tmp ? tmpfsFinalOptions then config.boot.tmp.tmpfsFinalOptions
    else [
      "mode=1777"
      "strictatime"
      "rw"
      "nosuid"
      "nodev"
      "size=${toString config.boot.tmp.tmpfsSize}"
      "huge=${config.boot.tmp.tmpfsHugeMemoryPages}"
    ];
  tmpOptions = mountOptions "/tmp";
  tmpExtra = lib.subtractLists tmpfsOptions tmpOptions;

  # hidepid on /proc breaks logind and user sessions with cgroups v2 (NixOS removed
  # security.hideProcessInformation for that reason), and systemd's per-service ProtectProc on
  # the login services gives every login a private mount namespace (a mount made in a session,
  # `panther roots mount` included, is invisible to the rest of the system): the table's check is
  # waived on NixOS with that reason (docs/decisions.md D94).
  hidepidInTable = lib.any (c: c.id == "mount.proc" && c.levels ? ${cfg.level}) table.checks;
  # Users other than root who can log in at all.
  canLogIn = lib.attrNames (lib.filterAttrs (name: u: name != "root" && (
    u.openssh.authorizedKeys.keys != [ ] || u.openssh.authorizedKeys.keyFiles != [ ]
    || lib.any (p: p != null) [ u.hashedPassword u.hashedPasswordFile u.password u.initialPassword u.initialHashedPassword ]
  )) config.users.users);
in
{
  imports = [ ./storage.nix ./manifest.nix ./users.nix ];

  options.pantheros.security = {
    enable = lib.mkEnableOption "the PantherOS hardening at `level`";
    level = mkOption {
      type = types.enum table.levels;
      default = "baseline";
      description = ''
        Hardening level (with `enable`). `baseline` changes no mount, no service and no boot
        parameter: it sets sysctls most distributions ship (kernel pointers and log for root,
        ptrace of descendants only, no unprivileged BPF, protected links, no ICMP redirects) and
        keeps NixOS's defaults for SSH root login (keys only) and the firewall. `hardened` adds
        kernel parameters, module blacklists, strict SSH, auditd, sudo for wheel only, and /tmp
        on a RAM tmpfs (nosuid,nodev; NixOS's boot.tmp.useTmpfs, half the RAM at most).
        `strict` adds AppArmor, io_uring off, auditing from early boot, `lockdown=confidentiality`
        (in force only on a kernel built with the lockdown LSM, which NixOS's kernels are not:
        the audit reports that check as not applicable there), and noexec on /tmp, which can break
        some workloads. /proc is not restricted: docs/decisions.md D94.
      '';
    };
    waivers = mkOption {
      type = types.attrsOf (types.submodule {
        options.reason = mkOption {
          type = types.strMatching ".*[^ ].*";
          description = "Why this check is waived on this host.";
        };
      });
      default = { };
      example = { "sysctl.kernel.yama.ptrace_scope".reason = "debuggers are used on this host"; };
      description = "Checks not applied (and reported as waived by `panther audit`), by check id.";
    };
  };

  config = lib.mkMerge [ {
    pantheros.manifest.security = {
      inherit (cfg) level;
      waivers = lib.mapAttrs (_: w: { inherit (w) reason; }) cfg.waivers;
    };
  } (mkIf cfg.enable (lib.mkMerge [
    {
      pantheros.installManifest = true;
      assertions = [{
        assertion = !(config.services.openssh.enable && config.services.openssh.settings.PermitRootLogin == "no") || canLogIn != [ ];
        message = "pantheros.security: SSH is on and root may not log in over it, but no other user has an SSH key or a password: the owner would be locked out. Give a wheel user openssh.authorizedKeys.keys (see hosts/server).";
      }] ++ map (id: {
        assertion = lib.elem id knownIds;
        message = "pantheros.security.waivers: unknown check id \"${id}\" (see src/pantheros/data/hardening.json)";
      }) (lib.attrNames cfg.waivers);

      boot.kernel.sysctl = lib.listToAttrs (map (c: lib.nameValuePair c.key (hardening (value c))) (area "sysctl"));
      boot.kernelParams = map (c: c.param) (area "cmdline");
      boot.blacklistedKernelModules = map (c: c.module) (area "module");
      # A blacklist stops autoloading only; `install X false` stops explicit loads too. NixOS has
      # no /bin/false, hence the store path.
      boot.extraModprobeConfig = lib.concatMapStrings (c: "install ${c.module} ${pkgs.coreutils}/bin/false\n") (area "module");

      services.openssh.settings = lib.listToAttrs (map (c: lib.nameValuePair c.key (hardening (value c))) (area "ssh"));
      networking.firewall.enable = mkIf (has "firewall.enabled") (hardening true);
      security.auditd.enable = mkIf (has "audit.auditd") (hardening true);
      security.apparmor.enable = mkIf (has "mac.apparmor") (hardening true);
      security.sudo.execWheelOnly = mkIf (has "sudo.wheel_only") (hardening true);
    }

    (mkIf (tmpOptions != [ ] && tmpExtra == [ ]) {
      boot.tmp.useTmpfs = hardening true;
    })
    (mkIf (tmpExtra != [ ]) {
      assertions = [{
        assertion = !config.boot.tmp.useTmpfs;
        message = "pantheros.security level \"${cfg.level}\" mounts /tmp itself (with ${lib.concatStringsSep "," tmpExtra}); unset boot.tmp.useTmpfs, or waive mount.tmp.";
      }];
      fileSystems."/tmp" = {
        device = "tmpfs";
        fsType = "tmpfs";
        options = tmpfsOptions ++ tmpExtra;
      };
      # Nix builds run programs from their build directory: keep it off a noexec /tmp.
      systemd.services.nix-daemon.environment.TMPDIR = mkDefault "/var/tmp";
    })
    (mkIf (mountOptions "/dev/shm" != [ ]) {
      boot.specialFileSystems."/dev/shm".options = mountOptions "/dev/shm";
    })
    (mkIf hidepidInTable {
      pantheros.security.waivers."mount.proc".reason = mkDefault
        "not applied on NixOS: hidepid on /proc breaks logind and user sessions with cgroups v2, and ProtectProc on the login services would give every login a private mount namespace";
    })
    # Only the ESP that pantheros.storage mounts at /boot (reading config.fileSystems here to
    # find out would make the definition depend on itself).
    (mkIf (mountOptions "/boot" != [ ] && esp.enable && esp.mountPoint == "/boot") {
      fileSystems."/boot".options = mountOptions "/boot";
    })
  ])) ];
}
