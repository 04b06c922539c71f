# Every PantherOS module. Importing them changes nothing until the host sets one of
# pantheros.storage.enable, pantheros.impermanence.enable, pantheros.security.enable or
# pantheros.role. Each module imports the ones it reads, by path, so NixOS loads each once.
{
  imports = [
    ./storage.nix
    ./impermanence.nix
    ./security.nix
    ./roles.nix
    ./manifest.nix
  ];
}
