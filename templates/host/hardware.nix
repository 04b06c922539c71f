# Paste the hardware parts of `nixos-generate-config --show-hardware-config` here, without
# fileSystems (pantheros.storage declares them).
{ lib, ... }:
{
  boot.initrd.systemd.enable = true;
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
}
