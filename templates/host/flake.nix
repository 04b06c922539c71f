{
  description = "My PantherOS host";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    impermanence.url = "github:nix-community/impermanence";
    impermanence.inputs.nixpkgs.follows = "nixpkgs";
    pantheros.url = "github:pantheros/pantheros";
    pantheros.inputs.nixpkgs.follows = "nixpkgs";
    pantheros.inputs.impermanence.follows = "impermanence";
  };

  outputs = { nixpkgs, impermanence, pantheros, ... }: {
    nixosConfigurations.my-host = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      # nix-community/impermanence's module binds what is persisted; PantherOS configures it.
      modules = [
        impermanence.nixosModules.impermanence
        pantheros.nixosModules.default
        ./default.nix
      ];
    };
  };
}
