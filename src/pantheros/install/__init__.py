"""Installing a machine from its host declaration: `panther host new` writes the host, `panther
install` lays it out and installs it over SSH with nix-community/nixos-anywhere (disko's
scripts, made from pantheros.storage), with the first-boot state staged under /persist."""
