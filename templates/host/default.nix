{ ... }:
{
  imports = [ ./hardware.nix ];

  networking.hostName = "my-host";
  pantheros.role = "workstation";        # or "server"
  pantheros.storage = {
    enable = true;
    device = "/dev/nvme0n1";             # what `panther disk format` lays out
  };
  pantheros.impermanence = {
    enable = true;
    persistenceFile = ./persistence.json; # `panther persist add PATH --host-file ./persistence.json`
  };

  boot.loader.systemd-boot.enable = true;
  system.stateVersion = "25.05";
}
