{
  description = "My PantherOS host";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    impermanence.url = "github:nix-community/impermanence";
    impermanence.inputs.nixpkgs.follows = "nixpkgs";
    disko.url = "github:nix-community/disko";
    disko.inputs.nixpkgs.follows = "nixpkgs";
    pantheros.url = "github:pantheros/pantheros";
    pantheros.inputs.nixpkgs.follows = "nixpkgs";
    pantheros.inputs.impermanence.follows = "impermanence";
    pantheros.inputs.disko.follows = "disko";
  };

  outputs = { nixpkgs, impermanence, disko, pantheros, ... }:
    let
      inherit (nixpkgs) lib;
      # nix-community/impermanence's module binds what is persisted, disko's lays the disk out;
      # PantherOS configures both.
      mkHost = host: lib.nixosSystem {
        system = "x86_64-linux";
        modules = [
          impermanence.nixosModules.impermanence
          disko.nixosModules.disko
          pantheros.nixosModules.default
          host
        ];
      };
      # More hosts: `panther host new NAME --disk /dev/disk/by-id/...` writes hosts/NAME/.
      hosts = if builtins.pathExists ./hosts
        then lib.attrNames (lib.filterAttrs (_: kind: kind == "directory") (builtins.readDir ./hosts))
        else [ ];
    in
    {
      nixosConfigurations = { my-host = mkHost ./default.nix; }
        // lib.genAttrs hosts (name: mkHost ./hosts/${name});
    };
}
