# NixOS's own module files for the options that the stand-in (nix/eval/nixos.nix) declares,
# taken from `root`, a directory holding nixos/lib and nixos/modules as nixpkgs does (see
# DEVELOPERS.md for how to get them). They are read in place, never copied into this repository.
{ root }:
let
  modulesPath = root + "/nixos/modules";
in
{
  inherit modulesPath;
  modules = map (file: modulesPath + "/${file}") [
    "misc/assertions.nix"
    "misc/extra-arguments.nix"
    "misc/lib.nix"
    "system/build.nix"
    "system/etc/etc.nix"
    "system/activation/activation-script.nix"
    "config/users-groups.nix"
    "config/sysctl.nix"
    "system/boot/kernel.nix"
    "system/boot/modprobe.nix"
    "system/boot/tmp.nix"
    "system/boot/luksroot.nix"
    "system/boot/systemd/initrd.nix"
    "tasks/filesystems.nix"
    "services/networking/ssh/sshd.nix"
    "security/sudo.nix"
  ];
}
