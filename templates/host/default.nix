{ ... }:
{
  imports = [ ./hardware.nix ];

  networking.hostName = "my-host";
  pantheros.role = "workstation";        # or "server"
  pantheros.storage = {
    enable = true;
    device = "/dev/nvme0n1";             # what disko (or `panther disk format`) lays out: prefer /dev/disk/by-id/...
  };
  pantheros.impermanence = {
    enable = true;
    persistenceFile = ./persistence.json; # `panther persist add PATH --host-file ./persistence.json`
  };

  boot.loader.systemd-boot.enable = true;

  # Users are declarative under PantherOS (users.mutableUsers = false): what is declared here is
  # what exists after every reboot. Write the password hash before the first boot:
  #   mkpasswd -m yescrypt | install -D -m 0600 /dev/stdin /mnt/persist/secrets/passwords/me
  users.users.me = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];                          # sudo, with this password
    hashedPasswordFile = "/persist/secrets/passwords/me";
    # openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA... me@laptop" ];
  };

  system.stateVersion = "25.05";
}
