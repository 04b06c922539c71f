# pantheros.security: hardening in levels. Every value comes from the hardening table
# (src/pantheros/data/hardening.json), the same table `panther audit` checks the live system
# against: one table, two readers. Everything is set with mkDefault, so a host can override it;
# a waiver drops a check on purpose, with a reason that the audit reports.
{ config, lib, ... }:
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
in
{
  options.pantheros.security = {
    level = mkOption {
      type = types.enum table.levels;
      default = "baseline";
      description = ''
        Hardening level. `baseline` is on for every host and breaks nothing; `hardened` adds kernel
        parameters, module blacklists, strict SSH, auditd and sudo for wheel only; `strict` adds
        AppArmor, lockdown, hidepid and noexec /tmp (which can break some workloads).
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

  config = lib.mkMerge [
    {
      assertions = map (id: {
        assertion = lib.elem id knownIds;
        message = "pantheros.security.waivers: unknown check id \"${id}\" (see src/pantheros/data/hardening.json)";
      }) (lib.attrNames cfg.waivers);

      boot.kernel.sysctl = lib.listToAttrs (map (c: lib.nameValuePair c.key (mkDefault (value c))) (area "sysctl"));
      boot.kernelParams = map (c: c.param) (area "cmdline");
      boot.blacklistedKernelModules = map (c: c.module) (area "module");
      # A blacklist stops autoloading only; `install X /bin/false` stops explicit loads too.
      boot.extraModprobeConfig = lib.concatMapStrings (c: "install ${c.module} /bin/false\n") (area "module");

      services.openssh.settings = lib.listToAttrs (map (c: lib.nameValuePair c.key (mkDefault (value c))) (area "ssh"));
      networking.firewall.enable = mkIf (has "firewall.enabled") (mkDefault true);
      security.auditd.enable = mkIf (has "audit.auditd") (mkDefault true);
      security.apparmor.enable = mkIf (has "mac.apparmor") (mkDefault true);
      security.sudo.execWheelOnly = mkIf (has "sudo.wheel_only") (mkDefault true);
    }

    (mkIf (mountOptions "/tmp" != [ ]) {
      fileSystems."/tmp" = {
        device = mkDefault "tmpfs";
        fsType = mkDefault "tmpfs";
        options = [ "mode=1777" "size=50%" ] ++ mountOptions "/tmp";
      };
    })
    (mkIf (mountOptions "/dev/shm" != [ ]) {
      boot.specialFileSystems."/dev/shm".options = mountOptions "/dev/shm";
    })
    (mkIf (mountOptions "/proc" != [ ]) {
      boot.specialFileSystems."/proc".options = mountOptions "/proc" ++ [ "gid=proc" ];
      users.groups.proc = { };
      systemd.services.systemd-logind.serviceConfig.SupplementaryGroups = [ "proc" ];
    })
    # Only the ESP that pantheros.storage mounts at /boot (reading config.fileSystems here to
    # find out would make the definition depend on itself).
    (mkIf (mountOptions "/boot" != [ ] && esp.enable && esp.mountPoint == "/boot") {
      fileSystems."/boot".options = mountOptions "/boot";
    })
  ];
}
