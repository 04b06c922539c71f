{ lib, ... }:
{
  boot.initrd.availableKernelModules = [ "virtio_pci" "virtio_blk" ];
  boot.initrd.systemd.enable = true;
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
}
