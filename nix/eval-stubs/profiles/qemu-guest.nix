# Stand-in for nixpkgs' profile of the same name when modules are evaluated without nixpkgs.
{ ... }: { }
