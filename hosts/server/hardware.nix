{ lib, ... }:
{
  boot.initrd.availableKernelModules = [ "ahci" "xhci_pci" "virtio_pci" "virtio_scsi" "sd_mod" ];
  boot.initrd.systemd.enable = true;
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
}
