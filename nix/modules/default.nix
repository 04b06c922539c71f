# Every PantherOS module. Importing them changes nothing until the host sets one of
# pantheros.storage.enable, pantheros.impermanence.enable, pantheros.security.enable or
# pantheros.role. Each module imports the ones it reads, by path, so NixOS loads each once.
# nix-community/impermanence's module is not among them: the host imports it (D92).
{
  imports = [
    ./storage.nix
    ./impermanence.nix
    ./security.nix
    ./roles.nix
    ./manifest.nix
    ./users.nix
  ];
}
