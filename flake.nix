{
  description = "PantherOS: a security-first, impermanent NixOS";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    impermanence.url = "github:nix-community/impermanence";
  };

  outputs = { self, nixpkgs, impermanence, ... }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Path-valued modules are wrapped in `import` for older `nix flake check`.
      modules = {
        storage = import ./nix/modules/storage.nix;
        impermanence = {
          imports = [ impermanence.nixosModules.impermanence (import ./nix/modules/impermanence.nix) ];
        };
        security = import ./nix/modules/security.nix;
        roles = import ./nix/modules/roles.nix;
        manifest = import ./nix/modules/manifest.nix;
      };

      mkHost = name: lib.nixosSystem {
        system = "x86_64-linux";
        modules = [ self.nixosModules.default (import ./hosts/${name}) ];
      };
    in
    {
      nixosModules = modules // {
        default = { imports = lib.attrValues modules; };
      };

      nixosConfigurations = lib.genAttrs [ "workstation" "server" "vm" ] mkHost;

      packages = forAllSystems (pkgs: rec {
        panther = pkgs.callPackage ./nix/package.nix { };
        default = panther;
      });

      templates = {
        host = {
          path = ./templates/host;
          description = "A PantherOS host: impermanent btrfs root, hardening, persistence file";
        };
        default = self.templates.host;
      };

      checks = forAllSystems (pkgs:
        let
          vmTest = file: import file { inherit pkgs self; };
        in
        lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") {
          rollback = vmTest ./nix/tests/rollback.nix;
          retention = vmTest ./nix/tests/retention.nix;
          diff = vmTest ./nix/tests/diff.nix;
          audit = vmTest ./nix/tests/audit.nix;
        } // {
          panther = self.packages.${pkgs.stdenv.hostPlatform.system}.panther;
        });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
