{
  description = "PantherOS: a security-first, impermanent NixOS";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    impermanence.url = "github:nix-community/impermanence";
  };

  outputs =
    {
      self,
      nixpkgs,
      impermanence,
      ...
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Paths, not imported values: NixOS loads a module once however often it is imported.
      # impermanence also brings nix-community/impermanence, which implements the bind mounts.
      withUpstreamImpermanence = modules: {
        imports = modules ++ [ impermanence.nixosModules.impermanence ];
      };

      mkHost =
        name:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            ./hosts/${name}
          ];
        };
    in
    {
      nixosModules = {
        storage = ./nix/modules/storage.nix;
        impermanence = withUpstreamImpermanence [ ./nix/modules/impermanence.nix ];
        security = ./nix/modules/security.nix;
        roles = withUpstreamImpermanence [ ./nix/modules/roles.nix ];
        manifest = ./nix/modules/manifest.nix;
        default = withUpstreamImpermanence [ ./nix/modules/default.nix ];
      };

      nixosConfigurations = lib.genAttrs [ "workstation" "server" "vm" ] mkHost;

      packages = forAllSystems (pkgs: rec {
        pantheros-bootstep = pkgs.callPackage ./nix/bootstep.nix { };
        panther = pkgs.callPackage ./nix/package.nix { inherit pantheros-bootstep; };
        default = panther;
      });

      templates = {
        host = {
          path = ./templates/host;
          description = "A PantherOS host: impermanent btrfs root, hardening, persistence file";
        };
        default = self.templates.host;
      };

      checks = forAllSystems (
        pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
          vmTest = file: import file { inherit pkgs self; };
        in
        lib.optionalAttrs (system == "x86_64-linux") {
          rollback = vmTest ./nix/tests/rollback.nix;
          retention = vmTest ./nix/tests/retention.nix;
          diff = vmTest ./nix/tests/diff.nix;
          audit = vmTest ./nix/tests/audit.nix;
        }
        // {
          inherit (self.packages.${system}) panther pantheros-bootstep;
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
