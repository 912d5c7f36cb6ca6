#!/usr/bin/env bash
# Install the reference launch-measurement calculator the images tests cross-check
# against (PyPI sev-snp-measure, pinned), Debian's OVMF (real firmware for the
# no-kernel-hashes cross-check), and build the AmdSev/IntelTdx OVMF (cached).
# Idempotent. CI runs this before `cargo test -p coco-image`.
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
# AmdSev + IntelTdx OVMF from Debian's edk2 source (the SNP cross-check on real
# firmware, the IntelTdx MRTD test). Built once per machine and cached; one build per
# variant, checked against the sha256 the script pins (about 9 minutes cold on 2 busy
# cores, a sha256 check afterwards). `scripts/build-ovmf.sh` alone builds twice.
OVMF_BUILDS=1 "$(dirname "$0")/build-ovmf.sh"
echo "measure tools ready: $("$VENV/bin/sev-snp-measure" --version), OVMF in /var/cache/coco-image/ovmf"
