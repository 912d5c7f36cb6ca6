# nixpkgs stand-in for offline evaluation (scripts/nix-eval.sh copies this
# directory and a real nixpkgs lib/ next to it, then overrides the flake's nixpkgs
# input with it): the real library, package stubs with nixpkgs' signatures
# (pkgs.nix) and a lib.nixosSystem over stub NixOS option declarations (nixos.nix).
{
  outputs = { self }:
    let
      lib = (import ./lib).extend (final: _: {
        nixosSystem = import ./nixos.nix {
          lib = final;
          pkgs = self.legacyPackages.x86_64-linux;
        };
      });
    in
    {
      inherit lib;
      legacyPackages.x86_64-linux = import ./pkgs.nix { inherit lib; };
    };
}
