#!/usr/bin/env bash
# Install the reference launch-measurement calculator the images tests cross-check
# against (PyPI sev-snp-measure, pinned), and Debian's OVMF (real firmware for the
# no-kernel-hashes cross-check). Idempotent. CI runs this before `cargo test -p coco-image`.
set -euo pipefail
VENV=/var/cache/coco-image/venv
SEV_SNP_MEASURE_VERSION=0.0.13
if ! "$VENV/bin/sev-snp-measure" --version 2>/dev/null | grep -q "$SEV_SNP_MEASURE_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "sev-snp-measure==$SEV_SNP_MEASURE_VERSION"
fi
for p in ovmf; do
    dpkg -s "$p" >/dev/null 2>&1 || {
        for i in 1 2 3 4 5; do
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$p" && break
            sleep $((i * 5)); apt-get update -qq || true
        done
    }
done
echo "measure tools ready: $("$VENV/bin/sev-snp-measure" --version)"
