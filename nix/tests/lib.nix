# Shared setup of the PantherOS VM tests, on nixpkgs' pattern for a system installed on a second
# disk (nixos/tests/systemd-initrd-btrfs-raid.nix, nixos/tests/installer.nix): the machine boots
# from its default disk with the host's Nix store, lays out the empty second disk from the
# PantherOS manifest with `panther disk format`, then boots, through systemd-boot
# (useBootLoader), the specialisation whose file systems are that layout. Its /nix/store stays
# the host's (9p), so the closure the boot entry names is already in place.
{ pkgs, self }:
rec {
  # What the tests set for PantherOS; tests/nix evaluates it with the project's own evaluation.
  pantheros = {
    pantheros.storage = {
      device = "/dev/vdb";
      esp.enable = false;
    };
    pantheros.impermanence = {
      directories = [
        {
          directory = "/var/lib/kept";
          user = "nobody";
          group = "nogroup";
          mode = "0750";
        }
      ];
      files = [
        {
          file = "/etc/kept.conf";
          mode = "0600";
        }
      ];
      retention = {
        keepMin = 2;
        maxCount = 3;
      };
    };
  };

  # A machine whose specialisation `pantheros` boots PantherOS from /dev/vdb; `extra` is added
  # to that specialisation.
  node =
    extra:
    { config, ... }:
    {
      imports = [
        self.inputs.impermanence.nixosModules.impermanence
        self.nixosModules.default
        pantheros
      ];
      virtualisation = {
        emptyDiskImages = [ 4096 ];
        useBootLoader = true;
        useEFIBoot = true;
        mountHostNixStore = true;
      };
      boot.loader.systemd-boot.enable = true;
      boot.loader.efi.canTouchEfiVariables = true;
      boot.initrd.systemd.enable = true;
      environment.systemPackages = [ config.pantheros.package ];
      # `panther disk format` reads the layout from here, before PantherOS is booted.
      environment.etc."pantheros/layout.json".source = config.pantheros.manifestFile;

      specialisation.pantheros.configuration =
        { config, ... }:
        {
          imports = [ extra ];
          pantheros.storage.enable = true;
          pantheros.impermanence.enable = true;
          # qemu-vm.nix mounts virtualisation.fileSystems over fileSystems: hand it the layout
          # instead of its ext4 root on the first disk.
          virtualisation.useDefaultFilesystems = false;
          virtualisation.fileSystems = config.pantheros.storage.fileSystems;
        };
    };

  # Python for the test script: lay out the disk, make the PantherOS entry the default, boot it.
  firstBoot = ''
    import json

    def boot_pantheros():
        machine.wait_for_unit("multi-user.target")
        source = machine.succeed("findmnt -n -o SOURCE /").strip()
        assert source.endswith("[/root]"), source
        # Stage 2 has recorded this boot's rollback (the oneshot has run to its end).
        machine.wait_until_succeeds(
            "test $(systemctl show -P ExecMainExitTimestampMonotonic pantheros-rollback-finish) != 0"
        )

    def old_roots():
        return json.loads(machine.succeed("panther roots list --json"))["roots"]

    machine.start()
    machine.wait_for_unit("multi-user.target")
    machine.succeed("panther disk format --manifest /etc/pantheros/layout.json --yes-wipe /dev/vdb")
    machine.succeed("bootctl set-default nixos-generation-1-specialisation-pantheros.conf")
    machine.succeed("sync")
    machine.crash()
    boot_pantheros()
  '';
}
