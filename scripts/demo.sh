#!/usr/bin/env bash
# The end-to-end demo (README command 1): a confidential pod in a real VM.
#
# Sets up what is missing, starts a local registry and a KBS (TLS), builds and
# encrypts an app image, registers its key, the policy and the reference values,
# boots the guest image in QEMU with coco-agent as /init, runs the pod in Kata-shim
# order and prints the container's output, the attestation result and timings.
#
# This host has no SEV-SNP/TDX: the default evidence is a software vTPM (measured
# boot, not memory encryption); `--tee sample` uses no TEE at all. The demo says so.
# Extra arguments go to coco-demo (`--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUST_BACKTRACE=0
# COCO_BIN_DIR: prebuilt binaries (e.g. `nix run .#demo`); skips setup and build.
if [ -n "${COCO_BIN_DIR:-}" ]; then
  export COCO_GUEST_BIN_DIR="$COCO_BIN_DIR"
  exec "$COCO_BIN_DIR/coco-demo" "$@"
fi
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/coco-target}"
echo "== building the guest agent (release) and the demo"
cargo build -q --release --locked -p coco-agent
cargo build -q --locked -p vm-tests --bin coco-demo
exec "$CARGO_TARGET_DIR/debug/coco-demo" "$@"
