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
  # refuses a host that has none). Put your own key here before installing.
  users.users.admin = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPantherOSExampleKeyReplaceMe admin@example" ];
  };

  system.stateVersion = "25.05";
}
