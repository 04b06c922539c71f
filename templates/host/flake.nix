{
  description = "My PantherOS host";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    pantheros.url = "github:pantheros/pantheros";
    pantheros.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { nixpkgs, pantheros, ... }: {
    nixosConfigurations.my-host = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [ pantheros.nixosModules.default ./default.nix ];
    };
  };
}
