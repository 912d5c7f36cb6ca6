# A Kubernetes node that runs confidential pods: containerd with the Kata shim from
# nixpkgs, one runtime handler per RuntimeClass (nix/runtime-classes.nix), each with
# the Kata configuration from deploy/kata/ pointed at the Nix-built guest image.
{ self, runtimeClasses }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.coco-node;
  guest = self.packages.${pkgs.stdenv.hostPlatform.system}.guest-image;
  toml = pkgs.formats.toml { };

  firmwareFor = tee: {
    snp = "${guest}/OVMF-AmdSev.fd";
    tdx = "${guest}/OVMF-IntelTdx.fd";
    none = "";
  }.${tee};

  # The checked-in configuration with host paths replaced by store paths; every other
  # setting (and the measured kernel_params) stays exactly as in deploy/kata/.
  kataConfig = name: rc:
    let
      base = builtins.fromTOML (builtins.readFile (../deploy/kata + "/${rc.config}"));
    in
    toml.generate rc.config (lib.recursiveUpdate base {
      hypervisor.qemu = {
        path = "${cfg.qemuPackage}/bin/qemu-system-x86_64";
        kernel = "${guest}/vmlinuz";
        initrd = "${guest}/initrd.img";
        firmware = firmwareFor rc.tee;
      };
    });

  enabled = lib.filterAttrs (name: _: builtins.elem name cfg.runtimeClasses) runtimeClasses;
in
{
  options.services.coco-node = {
    enable = lib.mkEnableOption "containerd + Kata Containers with the CoCo guest image";
    runtimeClasses = lib.mkOption {
      type = lib.types.listOf (lib.types.enum (builtins.attrNames runtimeClasses));
      default = [ "kata-coco-snp" "kata-coco-tdx" ];
      description = ''
        RuntimeClasses this node offers. `kata-coco-dev-insecure` runs the guest
        without a TEE and must never be enabled in production.
      '';
    };
    qemuPackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.qemu;
      defaultText = lib.literalExpression "pkgs.qemu";
      description = "QEMU used by Kata (needs SEV-SNP/TDX support for those classes).";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.etc = lib.mapAttrs'
      (name: rc: lib.nameValuePair "kata-containers/${rc.config}" {
        source = kataConfig name rc;
      })
      enabled;

    virtualisation.containerd = {
      enable = true;
      settings.plugins."io.containerd.grpc.v1.cri".containerd.runtimes = lib.mapAttrs'
        (name: rc: lib.nameValuePair rc.handler {
          runtime_type = "io.containerd.kata.v2";
          runtime_path = "${pkgs.kata-runtime}/bin/containerd-shim-kata-v2";
          # Kata reads initdata (and nothing else) from the pod annotations.
          pod_annotations = [ "io.katacontainers.config.hypervisor.cc_init_data" ];
          options.ConfigPath = "/etc/kata-containers/${rc.config}";
        })
        enabled;
    };

    # RuntimeClass objects, applied by the addon manager when this node runs the
    # control plane as well.
    services.kubernetes.addonManager.bootstrapAddons = lib.mapAttrs'
      (name: rc: lib.nameValuePair "runtimeclass-${name}" {
        apiVersion = "node.k8s.io/v1";
        kind = "RuntimeClass";
        metadata.name = name;
        handler = rc.handler;
      })
      enabled;
  };
}
