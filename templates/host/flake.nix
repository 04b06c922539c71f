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

  outputs = { nixpkgs, impermanence, disko, pantheros, ... }: {
    nixosConfigurations.my-host = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      # nix-community/impermanence's module binds what is persisted, disko's lays the disk out;
      # PantherOS configures both.
      modules = [
        impermanence.nixosModules.impermanence
        disko.nixosModules.disko
        pantheros.nixosModules.default
        ./default.nix
      ];
    };
  };
}
