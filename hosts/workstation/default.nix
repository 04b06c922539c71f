# A laptop: LUKS2, hardened, NetworkManager, boot-dirty (a failed rollback still boots).
{ ... }:
{
  imports = [ ./hardware.nix ];

  networking.hostName = "workstation";
  pantheros.role = "workstation";
  pantheros.storage = {
    enable = true;
    device = "/dev/nvme0n1";
    luks = { enable = true; allowDiscards = true; };
  };
  pantheros.impermanence = {
    enable = true;
    persistenceFile = ./persistence.json;
  };

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  users.mutableUsers = false;
  users.users.alice = {
    isNormalUser = true;
    extraGroups = [ "wheel" "networkmanager" ];
    # Replace with your own: mkpasswd -m yescrypt
    hashedPasswordFile = "/persist/secrets/alice.passwd";
  };

  system.stateVersion = "25.05";
}
