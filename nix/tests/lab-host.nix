# The host whose initrd unit scripts/render-initrd-units renders for the QEMU boot tests
# (nix/generated/initrd-units.json). Its storage and impermanence are those of the bundled lab
# manifest, src/pantheros/data/manifests/lab.json (tests/nix checks that they agree), so the
# unit boots the disk `panther disk format` lays out from that manifest.
{ ... }:
{
  networking.hostName = "lab";
  boot.initrd.systemd.enable = true;
  pantheros.storage = {
    enable = true;
    esp.sizeMiB = 64;
  };
  pantheros.impermanence = {
    enable = true;
    retention.maxCount = 20;
  };
  # Only its initrd unit is used (the boot tests' machine has its own users): nobody logs in.
  pantheros.users.allowNoAdministrator = true;
  users.allowNoPasswordLogin = true;
}
