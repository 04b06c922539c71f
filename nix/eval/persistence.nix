# environment.persistence when no nix-community/impermanence checkout is given: the options
# PantherOS sets, declared as impermanence's nixos.nix and submodule-options.nix declare them
# (types, defaults and string coercions), without its implementation.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  str = default: mkOption {
    type = types.str;
    inherit default;
  };
  permissions = {
    user = str "root";
    group = str "root";
    mode = str "0755";
  };
  directory = types.coercedTo types.str (directory: { inherit directory; }) (
    types.submodule {
      options = permissions // {
        directory = mkOption { type = types.str; };
      };
    }
  );
  file = types.coercedTo types.str (file: { inherit file; }) (
    types.submodule {
      options = {
        file = mkOption { type = types.str; };
        parentDirectory = permissions;
      };
    }
  );
in
{
  options.environment.persistence = mkOption {
    type = types.attrsOf (
      types.submodule (
        { name, ... }:
        {
          options = {
            enable = mkOption {
              type = types.bool;
              default = true;
            };
            persistentStoragePath = mkOption {
              type = types.path;
              default = name;
            };
            hideMounts = mkOption {
              type = types.bool;
              default = false;
            };
            directories = mkOption {
              type = types.listOf directory;
              default = [ ];
            };
            files = mkOption {
              type = types.listOf file;
              default = [ ];
            };
          };
        }
      )
    );
    default = { };
  };
}
