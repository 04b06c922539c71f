# pantheros.manifest: what the NixOS configuration declares, exported as the JSON manifest that
# `panther` reads (/etc/pantheros/manifest.json). Its schema is
# src/pantheros/data/manifest.schema.json; Python rejects a manifest that does not match it.
# storage.nix, impermanence.nix and security.nix each import this module and write their own
# section, so each of them works alone; a section whose module is not imported says "off".
# The packages the other modules run are declared here too, for the same reason.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkOptionDefault types;
in
{
  options.pantheros = {
    bootstep = mkOption {
      type = types.package;
      default = pkgs.callPackage ../bootstep.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/bootstep.nix { }";
      description = "The boot step (a bash script and its C helper) that the initrd runs.";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { pantheros-bootstep = config.pantheros.bootstep; };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { pantheros-bootstep = config.pantheros.bootstep; }";
      description = "The panther toolkit used by stage 2 (the record, the timers) and the shell.";
    };
    manifest = mkOption {
      type = types.submodule { freeformType = types.attrsOf types.anything; };
      description = "The manifest, as a Nix value (see manifestFile); each module writes its section.";
    };
    manifestFile = mkOption {
      type = types.path;
      readOnly = true;
      description = "The manifest as a JSON file, installed at /etc/pantheros/manifest.json.";
    };
    installManifest = mkOption {
      type = types.bool;
      default = false;
      internal = true;
      description = "Whether a PantherOS feature is on, so the manifest and `panther` are installed.";
    };
  };

  config = lib.mkMerge [
    {
      pantheros.manifest = {
        version = 1;
        host = config.networking.hostName;
        impermanence = mkOptionDefault {
          enable = false;
          design = "blank-snapshot";
          fail_policy = "boot-dirty";
          retention.keep_min = 1;
        };
        persistence = mkOptionDefault [ ];
        first_boot = mkOptionDefault { directories = [ ]; files = [ ]; };
        security = mkOptionDefault { level = "baseline"; waivers = { }; };
      };
      pantheros.manifestFile = pkgs.writeText "pantheros-manifest.json" (builtins.toJSON config.pantheros.manifest);
    }
    (lib.mkIf config.pantheros.installManifest {
      environment.etc."pantheros/manifest.json".source = config.pantheros.manifestFile;
      environment.systemPackages = [ config.pantheros.package ];
    })
  ];
}
