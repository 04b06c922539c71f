# Stand-in for nixpkgs' nixos/modules/profiles/qemu-guest.nix when modules are evaluated without
# nixpkgs: like it, only the virtio drivers for the initrd.
{ ... }:
{
  boot.initrd.availableKernelModules = [
    "virtio_pci"
    "virtio_blk"
    "virtio_scsi"
    "virtio_net"
    "virtio_mmio"
    "9p"
    "9pnet_virtio"
  ];
  boot.initrd.kernelModules = [
    "virtio_console"
    "virtio_rng"
    "virtio_balloon"
    "virtio_gpu"
  ];
}
