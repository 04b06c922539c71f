# A laptop: LUKS2, hardened, NetworkManager, boot-dirty (a failed rollback still boots).
{ ... }:
{
  imports = [ ./hardware.nix ];

  networking.hostName = "workstation";
  pantheros.role = "workstation";
  pantheros.storage = {
    enable = true;
    device = "/dev/nvme0n1";
    # The passphrase is asked at every boot. disko reads it from this file when it formats
    # the disk (`panther install` sends it there; from the NixOS installer, write it first).
    luks = { enable = true; allowDiscards = true; passphraseFile = "/tmp/pantheros-disk.key"; };
  };
  pantheros.impermanence = {
    enable = true;
    persistenceFile = ./persistence.json;
  };

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  # Users are declarative (PantherOS's default under impermanence: users.mutableUsers = false).
  # alice logs in on the console and uses sudo with the password whose hash lives on /persist,
  # written before the first boot with
  #   mkpasswd -m yescrypt | install -D -m 0600 /dev/stdin /mnt/persist/secrets/passwords/alice
  users.users.alice = {
    isNormalUser = true;
    extraGroups = [ "wheel" "networkmanager" ];
    hashedPasswordFile = "/persist/secrets/passwords/alice";
  };

  system.stateVersion = "25.05";
}
