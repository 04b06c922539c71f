# What `nixos-rebuild build-vm` adds to a configuration, as far as PantherOS is concerned: a model
# of nixos/modules/virtualisation/qemu-vm.nix written for PantherOS after reading it (NixOS 26.05
# development). qemu-vm.nix sets `fileSystems = mkVMOverride cfg.fileSystems` (priority 10), so
# the VM mounts `virtualisation.fileSystems` only, whatever the host declares: by default an ext4
# root disk, the host's Nix store over 9p under a writable overlay, the shared directories, and a
# RAM /tmp when boot.tmp.useTmpfs is on. Only that part is modelled.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.virtualisation;
  fileSystemType = types.attrsOf (types.attrsOf types.anything);
in
{
  options.virtualisation = {
    useDefaultFilesystems = mkOption {
      type = types.bool;
      default = true;
    };
    diskImage = mkOption {
      type = types.nullOr types.str;
      default = "./${config.system.name or config.networking.hostName}.qcow2";
    };
    rootDevice = mkOption {
      type = types.nullOr types.str;
      default = "/dev/disk/by-label/nixos";
    };
    mountHostNixStore = mkOption {
      type = types.bool;
      default = true;
    };
    writableStore = mkOption {
      type = types.bool;
      default = cfg.mountHostNixStore;
    };
    msize = mkOption {
      type = types.ints.positive;
      default = 16384;
    };
    fileSystems = mkOption {
      type = fileSystemType;
      default = { };
    };
  };

  config = {
    fileSystems = lib.mkVMOverride cfg.fileSystems;

    virtualisation.fileSystems =
      let
        ninep = tag: {
          device = tag;
          fsType = "9p";
          neededForBoot = true;
          options = [
            "trans=virtio"
            "version=9p2000.L"
            "msize=${toString cfg.msize}"
            "x-systemd.requires=modprobe@9pnet_virtio.service"
          ];
        };
      in
      lib.mkMerge [
        {
          "/tmp/shared" = ninep "shared";
          "/tmp/xchg" = ninep "xchg";
        }
        (lib.mkIf cfg.mountHostNixStore {
          "/nix/.ro-store" = ninep "nix-store" // {
            options = (ninep "nix-store").options ++ [ "cache=loose" ];
          };
        })
        {
          "/" = lib.mkIf cfg.useDefaultFilesystems (
            if cfg.diskImage == null then
              {
                options = [ "mode=755" ];
                device = "tmpfs";
                fsType = "tmpfs";
              }
            else
              {
                device = cfg.rootDevice;
                fsType = "ext4";
              }
          );
          "/nix/.rw-store" = lib.mkIf cfg.writableStore {
            options = [ "mode=0755" ];
            device = "tmpfs";
            fsType = "tmpfs";
            neededForBoot = true;
          };
          # qemu-vm.nix sets `overlay` (nixos/modules/tasks/filesystems/overlayfs.nix), which
          # becomes this overlay mount.
          "/nix/store" = lib.mkIf cfg.mountHostNixStore (
            if cfg.writableStore then
              {
                device = "overlay";
                fsType = "overlay";
                options = [
                  "lowerdir=/nix/.ro-store"
                  "upperdir=/nix/.rw-store/upper"
                  "workdir=/nix/.rw-store/work"
                ];
                depends = [
                  "/nix/.ro-store"
                  "/nix/.rw-store"
                ];
              }
            else
              {
                options = [ "bind" ];
                device = "/nix/.ro-store";
                fsType = "none";
              }
          );
          "/tmp" = lib.mkIf config.boot.tmp.useTmpfs {
            options = [
              "mode=1777"
              "strictatime"
              "nosuid"
              "nodev"
              "size=${toString config.boot.tmp.tmpfsSize}"
            ];
            device = "tmpfs";
            fsType = "tmpfs";
            neededForBoot = true;
          };
        }
      ];
  };
}
