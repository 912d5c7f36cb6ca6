#!/usr/bin/env bash
# Set up and run every test: formatting, lints, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# A target dir outside the clone survives between CI runs on one machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/coco-target}"
# Incremental artifacts only help edit-compile loops; here they grew the shared
# target dir by ~20 GB.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The VM tests boot the release agent as the guest's /init (tests/vm/src/guest.rs).
cargo build --release --locked -p coco-agent
cargo test --workspace --locked
