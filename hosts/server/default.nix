# A server: plain btrfs, strict hardening, fail-closed (a failed rollback stops the boot).
{ ... }:
{
  imports = [ ./hardware.nix ];

  networking.hostName = "server";
  pantheros.role = "server";
  pantheros.storage = {
    enable = true;
    device = "/dev/sda";
    swap.sizeMiB = 4096;
  };
  pantheros.impermanence = {
    enable = true;
    persistenceFile = ./persistence.json;
    retention.maxCount = 30;
  };
  pantheros.security.waivers."module.usb-storage".reason = "backups are taken to USB disks";

  boot.loader.systemd-boot.enable = true;
  services.openssh.enable = true;
  # Root may not log in over SSH at this level: this wheel user is the way in (an assertion
  # refuses a host where nobody who can log in can become root). The admin logs in with the SSH
  # key and becomes root with sudo, which asks for the admin's password: its hash lives on
  # /persist (users are declarative under PantherOS: users.mutableUsers = false), written
  # before the first boot with
  #   mkpasswd -m yescrypt | install -D -m 0600 /dev/stdin /mnt/persist/secrets/passwords/admin
  # Put your own key here before installing.
  users.users.admin = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPantherOSExampleKeyReplaceMe admin@example" ];
    hashedPasswordFile = "/persist/secrets/passwords/admin";
  };

  system.stateVersion = "25.05";
}
