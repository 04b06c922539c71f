# A QEMU guest to try PantherOS in: `nixos-rebuild build-vm --flake .#vm`.
{ modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ./hardware.nix ];

  networking.hostName = "vm";
  pantheros.storage = {
    enable = true;
    device = "/dev/vda";
  };
  pantheros.impermanence = {
    enable = true;
    persistenceFile = ./persistence.json;
  };
  pantheros.security = {
    enable = true;
    level = "hardened";
  };

  boot.loader.systemd-boot.enable = true;
  users.users.root.initialPassword = "panther";
  system.stateVersion = "25.05";
}
