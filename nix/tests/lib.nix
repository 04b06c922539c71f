# Shared setup of the PantherOS VM tests: a machine whose second disk is laid out by
# `panther disk format` and booted with the rollback in the systemd initrd.
{ pkgs, self }:
{
  node = { config, lib, ... }: {
    imports = [ self.nixosModules.default ];
    virtualisation.emptyDiskImages = [ 2048 ];
    virtualisation.useDefaultFilesystems = false;
    virtualisation.rootDevice = "/dev/vdb2";
    virtualisation.fileSystems = lib.mkForce { };
    boot.initrd.systemd.enable = true;
    pantheros.storage = { enable = true; device = "/dev/vdb"; esp.enable = false; };
    pantheros.impermanence = {
      enable = true;
      directories = [ { directory = "/var/lib/kept"; user = "nobody"; group = "nogroup"; mode = "0750"; } ];
      files = [ "/etc/kept.conf" ];
      retention = { keepMin = 2; maxCount = 3; };
    };
  };
  # Lays out the empty disk from the machine's own manifest, then boots from it.
  firstBoot = ''
    machine.start()
    machine.succeed("panther disk format --manifest /etc/pantheros/manifest.json /dev/vdb")
    machine.reboot()
    machine.wait_for_unit("multi-user.target")
  '';
}
