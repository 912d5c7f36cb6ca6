# A NixOS configuration with both modules enabled (checks.nixos-modules): on real
# nixpkgs it evaluates the modules against the real NixOS options; offline
# (scripts/nix-eval.sh) against the stub declarations with nixpkgs' types.
{
  boot.isContainer = true;
  system.stateVersion = "26.05";

  services.coco-kbs = {
    enable = true;
    openFirewall = true;
    tls = {
      certFile = "/var/lib/acme/kbs.example.org/fullchain.pem";
      keyFile = "/run/keys/coco-kbs-tls.key";
    };
    tokenSigningKeyFile = "/run/keys/coco-kbs-token.key";
    adminPublicKeys = [ "/etc/coco-kbs/admin.pub" ];
  };

  services.coco-node = {
    enable = true;
    runtimeClasses = [ "kata-coco-snp" "kata-coco-tdx" "kata-coco-dev-insecure" ];
  };
}
