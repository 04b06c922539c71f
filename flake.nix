{
  description = "PantherOS: a security-first, impermanent NixOS";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    impermanence = {
      url = "github:nix-community/impermanence";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    # Lays the disk out from pantheros.storage (nix/modules/disko.nix); nixos-anywhere and
    # `panther install` run its scripts.
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      impermanence,
      ...
    }@inputs:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Every host imports nix-community/impermanence's module as every impermanence user does,
      # beside ours (docs/decisions.md D92), and disko's, so that pantheros.storage is also its
      # disko.devices (D130).
      mkHost =
        name:
        lib.nixosSystem {
          modules = [
            impermanence.nixosModules.impermanence
            inputs.disko.nixosModules.disko
            self.nixosModules.default
            ./hosts/${name}
          ];
        };
      # Each directory under hosts/ is a host (`panther host new NAME` writes one).
      hostNames = lib.attrNames (lib.filterAttrs (_: kind: kind == "directory") (builtins.readDir ./hosts));
    in
    {
      # Paths, not imported values: NixOS loads a module once however often it is imported. None
      # of them brings nix-community/impermanence along: its flake exports a function value,
      # which the module system cannot recognise as the same module when a host imports it too
      # (every impermanence user does), so the host imports it (D92).
      nixosModules = {
        storage = ./nix/modules/storage.nix;
        impermanence = ./nix/modules/impermanence.nix;
        security = ./nix/modules/security.nix;
        roles = ./nix/modules/roles.nix;
        manifest = ./nix/modules/manifest.nix;
        users = ./nix/modules/users.nix;
        default = ./nix/modules/default.nix;
      };

      nixosConfigurations = lib.genAttrs hostNames mkHost;

      packages = forAllSystems (pkgs: rec {
        pantheros-bootstep = pkgs.callPackage ./nix/bootstep.nix { };
        panther = pkgs.callPackage ./nix/package.nix { inherit pantheros-bootstep; };
        default = panther;
      });

      # What a contributor runs: the tests' tools (as scripts/setup installs them on Debian), the
      # formatter, and Nix itself for `nix-instantiate --parse` and the evaluations.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            # pip install -e '.[dev]' in a venv adds the rest of the dev extras (pyproject.toml).
            (pkgs.python3.withPackages (ps: [
              ps.pytest
              ps.jsonschema
              ps.pyyaml
              ps.hypothesis
              ps.shtab
            ]))
            pkgs.ruff
            pkgs.mypy
            pkgs.nixfmt-rfc-style
            pkgs.nix
            pkgs.btrfs-progs
            pkgs.cryptsetup
            pkgs.gptfdisk
            pkgs.util-linux
            pkgs.dosfstools
            pkgs.mtools
            pkgs.acl
            pkgs.attr
            pkgs.gcc
            pkgs.shellcheck
            pkgs.qemu
            pkgs.openssh
            # `panther install`: nixos-anywhere, and mkpasswd for the password hashes it asks for.
            pkgs.nixos-anywhere
            pkgs.mkpasswd
            pkgs.zstd
          ];
        };
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
