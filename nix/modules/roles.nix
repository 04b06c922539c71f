# pantheros.roles: workstation and server profiles. Only mkDefault values, so a host can change
# any of them.
{ config, lib, ... }:
let
  inherit (lib) mkDefault mkIf mkOption types;
  role = config.pantheros.role;
in
{
  imports = [ ./storage.nix ./impermanence.nix ./security.nix ];

  options.pantheros.role = mkOption {
    type = types.nullOr (types.enum [ "workstation" "server" ]);
    default = null;
    description = "A profile of defaults for the machine's job.";
  };

  config = lib.mkMerge [
    (mkIf (role == "workstation") {
      pantheros.security.enable = mkDefault true;
      pantheros.security.level = mkDefault "hardened";
      pantheros.impermanence.failPolicy = mkDefault "boot-dirty";
      pantheros.impermanence.retention = { keepMin = mkDefault 5; maxAgeDays = mkDefault 30; };
      pantheros.storage.luks.enable = mkDefault true;
      # Only the state of services the host runs.
      pantheros.impermanence.directories =
        lib.optional config.hardware.bluetooth.enable "/var/lib/bluetooth"
        ++ lib.optional config.networking.networkmanager.enable
          { directory = "/etc/NetworkManager/system-connections"; mode = "0700"; };
      networking.networkmanager.enable = mkDefault true;
      services.openssh.enable = mkDefault false;
    })
    (mkIf (role == "server") {
      pantheros.security.enable = mkDefault true;
      pantheros.security.level = mkDefault "strict";
      pantheros.impermanence.failPolicy = mkDefault "fail-closed";
      pantheros.impermanence.retention = {
        keepMin = mkDefault 3;
        maxAgeDays = mkDefault 14;
        minFreePercent = mkDefault 15;
      };
      services.openssh.enable = mkDefault true;
      services.openssh.openFirewall = mkDefault true;
      documentation.enable = mkDefault false;
    })
  ];
}
