# `nix flake check`. Unit tests, clippy and fmt run in the sandbox. The VM tests boot
# the Nix-built guest image under QEMU and need a builder with /dev/kvm
# (requiredSystemFeatures = [ "kvm" ]; a builder without it will not schedule them).
{ pkgs, workspace, guestImage, src }:

let
  # The VM tests use a user-space vsock backend; without the package in the pinned
  # nixpkgs the vm check is left out rather than failing every other check.
  vhostVsock = pkgs.vhost-device-vsock;
  cargoCheck = name: script: extra:
    workspace.overrideAttrs (old: {
      pname = "coco-${name}";
      nativeBuildInputs = old.nativeBuildInputs ++ extra;
      buildPhase = ''
        runHook preBuild
        ${script}
        runHook postBuild
      '';
      doCheck = false;
      installPhase = "touch $out";
    });
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
  '' (with pkgs; [ swtpm tpm2-tools runc skopeo umoci docker-distribution openssl ]);
}
// pkgs.lib.optionalAttrs (pkgs ? vhost-device-vsock) {
  vm = (cargoCheck "vm" ''
    export HOME=$TMPDIR
    export COCO_VM_ACCEL=kvm
    # The pod tests boot the Nix-built guest image instead of building one from
    # Debian's kernel.
    export COCO_GUEST_IMAGE=${guestImage}
    export COCO_VHOST_DEVICE_VSOCK=${vhostVsock}/bin/vhost-device-vsock
    export COCO_QEMU=${pkgs.qemu}/bin/qemu-system-x86_64
    export COCO_SWTPM=${pkgs.swtpm}/bin/swtpm
    export COCO_BUSYBOX=${pkgs.pkgsStatic.busybox}/bin/busybox
    export COCO_DOCKER_REGISTRY=${pkgs.docker-distribution}/bin/registry
    export COCO_OVMF=${pkgs.OVMF.fd}/FV/OVMF.fd
    cargo test --offline -p vm-tests
  '' (with pkgs; [ qemu swtpm vhostVsock skopeo umoci runc docker-distribution ])).overrideAttrs {
    requiredSystemFeatures = [ "kvm" ];
  };
}
