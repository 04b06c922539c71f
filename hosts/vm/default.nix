# A QEMU guest: install it on a virtual disk as on a real machine (README, "Use it on your NixOS
# machine"), or boot the layout in the flake's VM tests. `nixos-rebuild build-vm --flake .#vm`
# also works, but qemu-vm.nix replaces the file systems with its own ext4 disk: that VM has the
# hardening and the users, not the btrfs layout or the rollback (an evaluation warning says so).
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
  # A throwaway machine: the password is in the Nix store. The user logs in on the console and
  # becomes root with sudo and the same password.
  users.users.panther = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    initialPassword = "panther";
  };
  system.stateVersion = "25.05";
}
