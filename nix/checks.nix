# `nix flake check`. Unit tests, clippy and fmt run in the sandbox. The VM checks boot
# the Nix-built guest image under QEMU with the pod tests (tests/vm/tests/pods.rs):
# `vm` with KVM (requiredSystemFeatures = [ "kvm" ]: only a builder that declares kvm
# in its system-features schedules it, and Nix gives that build /dev/kvm), `vm-tcg`
# with QEMU's TCG on any x86_64-linux builder (slower, no special features).
{ pkgs, workspace, guestImage, src }:

let
  # The checks test the whole tree (deploy-tests read the .nix files and the lock
  # file), not the package's filtered source.
  cargoCheck = name: script: extra:
    workspace.overrideAttrs (old: {
      pname = "coco-${name}";
      inherit src;
      nativeBuildInputs = old.nativeBuildInputs ++ extra;
      buildPhase = ''
        runHook preBuild
        ${script}
        runHook postBuild
      '';
      doCheck = false;
      installPhase = "touch $out";
    });

  vmCheck = accel: features:
    (cargoCheck "vm-${accel}" ''
      export HOME=$TMPDIR
      export COCO_VM_ACCEL=${accel}
      # The pod tests boot the Nix-built guest image instead of building one from
      # Debian's kernel.
      export COCO_GUEST_IMAGE=${guestImage}
      export COCO_VHOST_DEVICE_VSOCK=${pkgs.vhost-device-vsock}/bin/vhost-device-vsock
      export COCO_QEMU=${pkgs.qemu}/bin/qemu-system-x86_64
      export COCO_SWTPM=${pkgs.swtpm}/bin/swtpm
      export COCO_BUSYBOX=${pkgs.pkgsStatic.busybox}/bin/busybox
      export COCO_DOCKER_REGISTRY=${pkgs.distribution}/bin/registry
      export COCO_OVMF=${pkgs.OVMF.fd}/FV/OVMF.fd
      cargo test --offline -p vm-tests --test pods
    '' (with pkgs; [ qemu swtpm vhost-device-vsock skopeo umoci runc distribution ])).overrideAttrs {
      requiredSystemFeatures = features;
    };
in
{
  fmt = cargoCheck "fmt" "cargo fmt --all -- --check" [ pkgs.rustfmt ];
  clippy = cargoCheck "clippy"
    "cargo clippy --offline --workspace --all-targets -- -D warnings" [ pkgs.clippy ];
  # Tests that need only the sandbox; the ones needing swtpm/runc/registry find them
  # on PATH (nativeBuildInputs) and skip with a message when a device is missing.
  unit = cargoCheck "unit" ''
    export HOME=$TMPDIR
    cargo test --offline --workspace --exclude vm-tests
  '' (with pkgs; [ swtpm tpm2-tools runc skopeo umoci distribution openssl ]);
  vm = vmCheck "kvm" [ "kvm" ];
  vm-tcg = vmCheck "tcg" [ ];
}
