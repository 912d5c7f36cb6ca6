#!/usr/bin/env bash
# Install what the VM tests (tests/vm) need: QEMU (TCG), firmware, busybox,
# swtpm, and vhost-device-vsock (hybrid vsock without /dev/vhost-vsock).
# Idempotent: skips what is already there. CI runs this before `cargo test -p vm-tests`.
set -euo pipefail
apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    for i in 1 2 3 4 5; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
            return 0
        fi
        # Another apt may hold the dpkg lock: wait and retry, refresh lists once.
        sleep $((i * 5)); apt-get update -qq || true
    done
    return 1
}
apt_install qemu-system-x86 qemu-utils ovmf seabios busybox-static swtpm swtpm-tools cpio kmod

# vhost-device-vsock is not packaged in Debian 12: build it once and cache the binary.
BIN_DIR=/var/cache/coco-image/bin
mkdir -p "$BIN_DIR"
if [ ! -x "$BIN_DIR/vhost-device-vsock" ]; then
    if command -v vhost-device-vsock >/dev/null 2>&1; then
        cp "$(command -v vhost-device-vsock)" "$BIN_DIR/"
    else
        root=$(mktemp -d)
        # Pinned for reproducibility; --locked uses the crate's own Cargo.lock.
        CARGO_TARGET_DIR="$root/target" cargo install --locked --root "$root" \
            vhost-device-vsock --version "${VHOST_DEVICE_VSOCK_VERSION:-0.3.0}"
        cp "$root/bin/vhost-device-vsock" "$BIN_DIR/"
        rm -rf "$root"
    fi
fi
"$BIN_DIR/vhost-device-vsock" --help >/dev/null
echo "vm tools ready: $(qemu-system-x86_64 --version | head -1); vhost-device-vsock in $BIN_DIR"
