# What the NixOS modules accept and refuse, evaluated by scripts/nix-eval.sh (real
# nixpkgs lib, stub NixOS options) and read by deploy-tests/tests/nix_eval.rs. Each
# refused case must fail evaluation of the whole system; `accepted` must succeed.
{ lib, self }:

let
  eval = extra: lib.nixosSystem {
    system = "x86_64-linux";
    modules = [ self.nixosModules.kbs self.nixosModules.node ./modules.nix extra ];
  };
  evaluates = extra:
    (builtins.tryEval (builtins.deepSeq (eval extra).config.system.build.toplevel.drvPath true)).success;
  kbs = v: { services.coco-kbs = v; };
  good = (eval { }).config;
in
{
  accepted = evaluates { };
  # Every way a key could end up in the world-readable store is refused.
  refused = {
    tlsKeyPathLiteral = evaluates (kbs { tls.keyFile = lib.mkForce ./modules.nix; });
    tlsKeyStoreString = evaluates (kbs { tls.keyFile = lib.mkForce "${./modules.nix}"; });
    tlsKeyRelative = evaluates (kbs { tls.keyFile = lib.mkForce "keys/tls.key"; });
    tlsCertPathLiteral = evaluates (kbs { tls.certFile = lib.mkForce ./modules.nix; });
    tokenKeyPathLiteral = evaluates (kbs { tokenSigningKeyFile = lib.mkForce ./modules.nix; });
    tokenKeyStoreString = evaluates (kbs { tokenSigningKeyFile = lib.mkForce "${./modules.nix}"; });
    tlsKeyInSettings = evaluates (kbs { settings.tls.key = "/run/keys/k"; });
    tokenKeyInSettings = evaluates (kbs { settings.token.signing_key = "/run/keys/k"; });
  };
  kbs = {
    loadCredential = good.systemd.services.coco-kbs.serviceConfig.LoadCredential;
    execStart = good.systemd.services.coco-kbs.serviceConfig.ExecStart;
    dynamicUser = good.systemd.services.coco-kbs.serviceConfig.DynamicUser;
    toml = builtins.fromJSON good.services.coco-kbs.configFile.json;
    firewall = good.networking.firewall.allowedTCPPorts;
  };
  node = {
    containerdVersion = good.virtualisation.containerd.settings.version;
    etc = builtins.attrNames good.environment.etc;
    runtimes = builtins.mapAttrs (_: r: r.options.ConfigPath)
      good.virtualisation.containerd.settings.plugins."io.containerd.grpc.v1.cri".containerd.runtimes;
    runtimeClasses = builtins.mapAttrs (_: a: a.handler) good.services.kubernetes.addonManager.bootstrapAddons;
  };
  # The guest image build as Nix would run it (deploy-tests/tests/guest_image.rs
  # compares it with deploy/guest-image.toml).
  guest = let p = self.packages.x86_64-linux; in {
    initrdScript = p.guest-initrd.buildCommand;
    imageScript = p.guest-image.buildCommand;
    kernelConfig = builtins.fromJSON p.guest-kernel.kernelConfig;
    ovmf = builtins.mapAttrs (_: o: { inherit (o) projectDscPath buildConfig; file = o.firmware; })
      { inherit (p) ovmf-snp ovmf-tdx; };
  };
}
