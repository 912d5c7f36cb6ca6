#!/usr/bin/env bash
# Install what the build, the tests and the demo need on Debian 12. Idempotent:
# only missing packages are installed, so repeated runs cost seconds.
set -euo pipefail

PACKAGES=(
  # TPM: tss-esapi links libtss2; swtpm gives the tests a real TPM 2.0.
  pkg-config libtss2-dev swtpm swtpm-tools tpm2-tools
  # Image tests: a real registry and the 2021-era tools we compare against.
  docker-registry skopeo umoci runc busybox-static
  # Demo and image tests: TLS certificates, GNU time for the pull benchmark.
  openssl time
  # deploy-tests: parses every Nix file and evaluates the flake offline
  # (scripts/nix-eval.sh; its nixpkgs library comes from $COCO_NIXPKGS_LIB).
  nix-bin
  # Guest image: dm-crypt ephemeral storage tools, and strip for the agent binary.
  dmsetup e2fsprogs binutils
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian registry package starts a system service on :5000; tests run
# their own registries on free ports, so it must not hold the port.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
# VM tests (QEMU, firmware, vhost-device-vsock built once and cached) and the
# launch-measurement cross-check (pinned sev-snp-measure in a venv).
"$(dirname "$0")/setup-vm-tools.sh"
"$(dirname "$0")/setup-measure-tools.sh"
echo "setup: ok"
