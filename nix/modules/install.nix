# What `panther install` reads from a host (`nix eval --json .#nixosConfigurations.HOST.config.pantheros.install.plan`):
# the manifest (the layout, and the first-boot state to stage under /persist), whether disko
# lays the disk out, where disko reads the LUKS passphrase, and the host's hardware report.
# The report (nixos-facter's facter.json) is read by NixOS's `hardware.facter` when the file
# exists; `panther install` asks nixos-anywhere to write it on the first install.
# docs/decisions.md D133.
{ config, options, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.pantheros.install;
  storage = config.pantheros.storage;
  report = cfg.hardwareReport;
  reportPresent = report != null && builtins.pathExists report;
in
{
  options.pantheros.install = {
    hardwareReport = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./facter.json";
      description = ''
        The host's nixos-facter report (facter.json), read through NixOS's `hardware.facter`
        once the file exists. `panther install` has nixos-anywhere write it
        (`--generate-hardware-config nixos-facter`) when it is missing.
      '';
    };
    plan = mkOption {
      type = types.attrsOf types.anything;
      internal = true;
      readOnly = true;
      description = "What `panther install` reads from the host, as one JSON document.";
    };
  };

  config = lib.mkMerge [
    {
      pantheros.install.plan = {
        version = 1;
        manifest = config.pantheros.manifest;
        disko = options ? disko.devices;
        luks_passphrase_file = if storage.luks.enable then storage.luks.passphraseFile else null;
        hardware_report = if report == null then null else toString report;
        hardware_report_present = reportPresent;
      };
    }
    (lib.optionalAttrs (options ? hardware.facter.reportPath) {
      hardware.facter.reportPath = lib.mkIf reportPresent report;
    })
    {
      warnings = lib.optional (reportPresent && !(options ? hardware.facter.reportPath)) ''
        pantheros.install.hardwareReport: ${toString report} is there, but this NixOS has no
        hardware.facter module to read it: use a nixpkgs that has it, or import
        nix-community/nixos-facter-modules' module.
      '';
    }
  ];
}
