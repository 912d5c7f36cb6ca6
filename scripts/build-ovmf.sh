#!/usr/bin/env bash
# Build the confidential-VM OVMF variants from Debian's edk2 source package,
# reproducibly, and cache them:
#   $OUT/OVMF-AmdSev.fd     OvmfPkg/AmdSev/AmdSevX64.dsc   (SEV-SNP: kernel-hashes section)
#   $OUT/OVMF-IntelTdx.fd   OvmfPkg/IntelTdx/IntelTdxX64.dsc (TDX: TDVF metadata)
#   $OUT/MANIFEST           edk2 source version, source digests, output sha256s
# Every variant is built twice, from two separately unpacked source trees in two
# different directories of equal path length (each with its own BaseTools build), and
# must come out bit-for-bit identical and equal to the pinned sha256: fixed
# SOURCE_DATE_EPOCH, deterministic grub memdisk, fixed build path length (see WORK).
# Idempotent: when MANIFEST names the same source version and the
# outputs still have the recorded sha256, nothing is done.
#
# Debian has no binary AmdSev/IntelTdx OVMF, and its OVMF.fd lacks the SNP
# kernel-hashes section, which is why the launch-digest cross-check needs this build.
#
# Env: COCO_OVMF_CACHE (default /var/cache/coco-image/ovmf), EDK2_DEB_VERSION (pinned),
#      OVMF_JOBS (default 2), OVMF_VARIANTS (default "AmdSev IntelTdx"),
#      OVMF_BUILDS (default 2; 1 builds once and relies on the pinned digests below).
set -euo pipefail

OUT=${COCO_OVMF_CACHE:-/var/cache/coco-image/ovmf}
# Debian 13 (trixie)'s edk2: bookworm's 2022.11 predates the SNP kernel-hashes
# metadata section (edk2-stable202302), so its AmdSev build cannot do measured
# direct boot under SNP. Only the source is used; it builds with bookworm's tools.
EDK2_SUITE=${EDK2_SUITE:-trixie}
DEFAULT_EDK2_DEB_VERSION=2025.02-8+deb13u1
EDK2_DEB_VERSION=${EDK2_DEB_VERSION:-$DEFAULT_EDK2_DEB_VERSION}
JOBS=${OVMF_JOBS:-2}
VARIANTS=${OVMF_VARIANTS:-AmdSev IntelTdx}
BUILDS=${OVMF_BUILDS:-2}
# 2025-02-24T00:00:00Z: the edk2-stable202502 release day. Nothing in the firmware
# should carry a build time; this pins anything that would.
DEFAULT_SOURCE_DATE_EPOCH=1740355200
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$DEFAULT_SOURCE_DATE_EPOCH}
# What two independent builds of the pinned source produced on Debian 12 (gcc 12,
# nasm 2.16, acpica 20200925, grub 2.06): a build that differs is refused. After a
# deliberate change of source or toolchain, set these to the new MANIFEST values
# (empty = no pin) once two builds have agreed. Only for the default source and epoch.
declare -A PINNED_SHA256=()
[ "$EDK2_DEB_VERSION/$SOURCE_DATE_EPOCH" != "$DEFAULT_EDK2_DEB_VERSION/$DEFAULT_SOURCE_DATE_EPOCH" ] ||
PINNED_SHA256=(
    [AmdSev]=${OVMF_AMDSEV_SHA256-ce279f18fb783d107fd18b9769ee49af23a4d1b57a7963b11dbb08d111bd7560}
    [IntelTdx]=${OVMF_INTELTDX_SHA256-7c4afbc317d046ffc3a0ac9d6fb3d5ecaafc99318eb8dd10ef8942f3647526e5}
)
NICE=(nice -n 19)
SRC=$OUT/src
MANIFEST=$OUT/MANIFEST

log() { echo "build-ovmf: $*" >&2; }

# Each variant's edk2 platform comes from deploy/guest-image.toml, the list
# nix/ovmf.nix builds from too ([firmware.<variant>] dsc = "...").
GUEST_IMAGE_TOML=$(cd "$(dirname "$0")/.." && pwd)/deploy/guest-image.toml
dsc_of() {
    local dsc
    dsc=$(sed -n "/^\[firmware\.$1\]/,/^\[/s/^dsc = \"\(.*\)\"\$/\1/p" "$GUEST_IMAGE_TOML")
    [ -n "$dsc" ] || { log "unknown variant $1 (no [firmware.$1] dsc in $GUEST_IMAGE_TOML)"; exit 2; }
    echo "$dsc"
}
# The OUTPUT_DIRECTORY each .dsc declares.
builddir_of() {
    case $1 in
        AmdSev) echo Build/AmdSev/RELEASE_GCC5 ;;
        IntelTdx) echo Build/IntelTdx/RELEASE_GCC5 ;;
    esac
}

up_to_date() {
    [ -f "$MANIFEST" ] || return 1
    grep -qx "edk2_deb_version=$EDK2_DEB_VERSION" "$MANIFEST" || return 1
    grep -qx "source_date_epoch=$SOURCE_DATE_EPOCH" "$MANIFEST" || return 1
    local v sum
    for v in $VARIANTS; do
        sum=$(sed -n "s/^OVMF-$v.fd sha256=//p" "$MANIFEST")
        # A variant recorded as not buildable is not retried for the same source.
        grep -qx "OVMF-$v.fd unbuildable" "$MANIFEST" && continue
        [ -n "$sum" ] && [ -f "$OUT/OVMF-$v.fd" ] || return 1
        [ "$(sha256sum "$OUT/OVMF-$v.fd" | cut -d' ' -f1)" = "$sum" ] || return 1
    done
}

if up_to_date; then
    log "up to date ($MANIFEST)"
    exit 0
fi

install_deps() {
    # Build-Depends of edk2 needed for the x86 OVMF targets, plus grub for the AmdSev
    # image's embedded grub.efi. acpica-tools provides iasl.
    local pkgs=(dpkg-dev nasm acpica-tools uuid-dev python3 python3-distutils gcc g++ make
        grub-efi-amd64-bin grub-common dosfstools mtools) missing=() p i
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    for i in 1 2 3 4 5; do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            >/dev/null && return 0
        sleep $((i * 5)); apt-get update -qq || true
    done
    return 1
}

# The source comes from Debian's archive through apt with a private configuration
# (own sources list and index dir under $OUT/apt): the host's apt setup is not
# touched, and a bookworm host can fetch trixie's source. apt verifies the signed
# InRelease -> Sources index -> tarball checksums chain.
apt_private() {
    local cfg=$OUT/apt
    mkdir -p "$cfg/lists/partial" "$cfg/cache/archives/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $EDK2_SUITE main" \
        >"$cfg/sources.list"
    "$@" -o Dir::Etc::sourcelist="$cfg/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$cfg/lists" -o Dir::Cache="$cfg/cache"
}

fetch_source() {
    local v=${EDK2_DEB_VERSION#*:}
    local dsc=$SRC/edk2_$v.dsc rec
    mkdir -p "$SRC"
    if [ ! -f "$dsc" ]; then
        apt_private apt-get update -qq >&2
        # The index paragraph of exactly the pinned version.
        rec=$(apt_private apt-cache showsrc edk2 |
            awk -v v="$EDK2_DEB_VERSION" 'BEGIN { RS = "" } index($0 "\n", "\nVersion: " v "\n") { print; exit }')
        if [ -z "$rec" ]; then
            log "edk2 $EDK2_DEB_VERSION is not in Debian $EDK2_SUITE any more; set EDK2_DEB_VERSION to one of:"
            apt_private apt-cache showsrc edk2 | sed -n 's/^Version: /  /p' >&2
            exit 1
        fi
        # Some mirrors do not serve the .dsc itself; the tarballs are enough, and are
        # checked against the (signed) index by apt here and by dpkg-source below.
        (cd "$SRC" && apt_private apt-get source --download-only -qq "edk2=$EDK2_DEB_VERSION") >&2 ||
            log "apt-get source reported an error; continuing if the tarballs arrived"
        if [ ! -f "$dsc" ]; then
            log "writing $dsc from the signed Sources index entry"
            {
                printf '%s\n' "$rec" | grep -E '^(Format|Binary|Architecture|Version):'
                echo "Source: edk2"
                printf '%s\n' "$rec" |
                    awk '/^(Files|Checksums-Sha256):/ { on = 1; print; next } /^[^ ]/ { on = 0 } on && !/\.dsc$/'
            } >"$dsc.tmp"
            mv "$dsc.tmp" "$dsc"
        fi
    fi
    echo "$dsc"
}

# Unpack the Debian source (upstream + Debian patches) into $1/edk2 and make the
# AmdSev grub.efi deterministic.
prepare_tree() {
    local dir=$1 dsc=$2
    rm -rf "$dir"
    mkdir -p "$dir"
    # Without --no-check, dpkg-source verifies every tarball against the .dsc checksums.
    dpkg-source -x "$dsc" "$dir/edk2" >/dev/null 2>&1
    local g=$dir/edk2/OvmfPkg/AmdSev/Grub/grub.sh
    # Debian's grub has no `sevsecret` module (it only feeds the SEV launch secret to
    # cryptodisk, unused here): grub-mkimage would fail on it. A FAT memdisk with a
    # random volume id and current timestamps would make every build differ.
    sed -i -e '/^[[:space:]]*sevsecret[[:space:]]*$/d' \
        -e 's/^mkfs\.msdos -C /mkfs.msdos --invariant -C /' \
        -e 's/^mcopy -i /mcopy -m -i /' "$g"
    touch -d "@$SOURCE_DATE_EPOCH" "$dir/edk2/OvmfPkg/AmdSev/Grub/grub.cfg"
}

build_tree() {
    local dir=$1 variant=$2 rc=0
    (
        # set -e does not apply inside a subshell tested with ||: check each step.
        cd "$dir/edk2" || exit 1
        unset WORKSPACE EDK_TOOLS_PATH CONF_PATH PACKAGES_PATH
        export PYTHON3_ENABLE=TRUE PYTHON_COMMAND=/usr/bin/python3
        local dsc
        dsc=$(dsc_of "$variant")
        # edksetup.sh parses the positional parameters (give it none) and reads
        # unset variables.
        set -- && set +u
        if [ ! -x BaseTools/Source/C/bin/GenFw ]; then
            "${NICE[@]}" make -C BaseTools -j"$JOBS" || exit 1
        fi
        # shellcheck disable=SC1091
        . ./edksetup.sh || exit 1
        "${NICE[@]}" build -a X64 -t GCC5 -b RELEASE -n "$JOBS" -p "$dsc" || exit 1
    ) >"$dir/build-$variant.log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || return "$rc"
    echo "$dir/edk2/$(builddir_of "$variant")/FV/OVMF.fd"
}

install_deps
DSC=$(fetch_source)
V=${EDK2_DEB_VERSION#*:}
# edk2's GenFw reserves room for the module's absolute .dll path in each PE image's
# debug entry; RELEASE images keep no path, but the reserved size moves section
# offsets, so the *length* of the build path is an input of the firmware (12 of 88
# AmdSev modules change between trees at /…/a/edk2 and /…/second-tree/edk2). The
# trees therefore live at fixed paths of equal length, independent of COCO_OVMF_CACHE:
# two different directories, so equal images show the path's content does not matter.
WORK=/var/tmp/coco-ovmf-build
rm -rf "$WORK"
mkdir -p "$WORK"
start=$(date +%s)
log "edk2 $EDK2_DEB_VERSION, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH, variants: $VARIANTS"
prepare_tree "$WORK/a" "$DSC"
[ "$BUILDS" = 1 ] || prepare_tree "$WORK/b" "$DSC"

results=()
for v in $VARIANTS; do
    t0=$(date +%s)
    if ! fa=$(build_tree "$WORK/a" "$v"); then
        log "$v: build failed, see $WORK/a/build-$v.log"; tail -n 30 "$WORK/a/build-$v.log" >&2
        [ "$v" = AmdSev ] && exit 1
        results+=("OVMF-$v.fd unbuildable"); continue
    fi
    t1=$(date +%s)
    sa=$(sha256sum "$fa" | cut -d' ' -f1)
    log "$v: build A ${sa} ($((t1 - t0)) s)"
    pin=${PINNED_SHA256[$v]:-}
    if [ -n "$pin" ] && [ "$sa" != "$pin" ]; then
        log "$v: NOT reproducible: sha256 $sa, pinned $pin (toolchain: $(gcc -dumpfullversion), see MANIFEST of the pinned build)"
        exit 1
    fi
    if [ "$BUILDS" = 1 ]; then
        results+=("OVMF-$v.fd sha256=$sa" "OVMF-$v.fd build_seconds=$((t1 - t0)) (one build, $([ -n "$pin" ] && echo "equal to the pinned digest" || echo "no pinned digest"))")
    else
        fb=$(build_tree "$WORK/b" "$v") || { log "$v: second build failed"; exit 1; }
        t2=$(date +%s)
        sb=$(sha256sum "$fb" | cut -d' ' -f1)
        log "$v: build B ${sb} ($((t2 - t1)) s)"
        if [ "$sa" != "$sb" ]; then
            log "$v: NOT reproducible: $fa and $fb differ"; exit 1
        fi
        results+=("OVMF-$v.fd sha256=$sa" "OVMF-$v.fd build_seconds=$((t1 - t0)),$((t2 - t1)) (two builds, identical${pin:+, equal to the pinned digest})")
    fi
    install -m 0644 "$fa" "$OUT/OVMF-$v.fd.tmp" && mv "$OUT/OVMF-$v.fd.tmp" "$OUT/OVMF-$v.fd"
done

{
    echo "# written by scripts/build-ovmf.sh"
    echo "edk2_deb_version=$EDK2_DEB_VERSION"
    echo "source_date_epoch=$SOURCE_DATE_EPOCH"
    (cd "$SRC" && sha256sum "edk2_$V.dsc" "edk2_${V%-*}".orig.tar.* "edk2_$V".debian.tar.*) |
        sed 's/^\([0-9a-f]*\)  \(.*\)$/source \2 sha256=\1/'
    echo "toolchain gcc=$(gcc -dumpfullversion) nasm=$(nasm -v | cut -d' ' -f3) iasl=$(dpkg-query -W -f='${Version}' acpica-tools) grub=$(dpkg-query -W -f='${Version}' grub-efi-amd64-bin)"
    printf '%s\n' "${results[@]}"
} >"$MANIFEST.tmp"
mv "$MANIFEST.tmp" "$MANIFEST"
rm -rf "$WORK"
log "done in $(($(date +%s) - start)) s"
cat "$MANIFEST" >&2
