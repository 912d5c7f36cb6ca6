#!/usr/bin/env bash
# Evaluates the flake offline: the real nixpkgs library plus the package and NixOS
# stubs of nix/tests/stubs (signatures of the pinned nixpkgs files) replace the
# nixpkgs input. Runs `nix flake show`, `nix flake check --no-build`, prints the
# drvPath of every package, app and check, and evaluates nix/tests/option-cases.nix
# (both NixOS modules in a test configuration, refused key options, the guest
# image build). Nothing is built or fetched.
#
# Needs nix (Debian nix-bin) and a nixpkgs library: $COCO_NIXPKGS_LIB names a
# nixpkgs or nix-community/nixpkgs.lib tree (with lib/default.nix), default
# /var/cache/coco-nix/nixpkgs-lib. Exit 3: no library. $COCO_NIX_EVAL_OUT: also
# write show.txt, drvs.json and cases.json there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB=${COCO_NIXPKGS_LIB:-/var/cache/coco-nix/nixpkgs-lib}
if [ ! -f "$LIB/lib/default.nix" ]; then
    echo "nix-eval: no nixpkgs library at $LIB (set COCO_NIXPKGS_LIB to a nixpkgs.lib checkout)" >&2
    exit 3
fi
NIX=(nix --extra-experimental-features "nix-command flakes")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The flake as committed plus uncommitted changes (untracked files too): a path flake.
mkdir "$WORK/src"
git -C "$ROOT" ls-files -z -co --exclude-standard | (cd "$ROOT" && tar --null -T - -cf -) |
    tar -xf - -C "$WORK/src"
cp -r "$ROOT/nix/tests/stubs" "$WORK/nixpkgs"
cp -r "$LIB/lib" "$WORK/nixpkgs/lib"
OVERRIDE=(--override-input nixpkgs "path:$WORK/nixpkgs" --no-write-lock-file)
FLAKE="path:$WORK/src"

echo "== nix flake show"
"${NIX[@]}" flake show "$FLAKE" "${OVERRIDE[@]}" 2>&1 | tee "$WORK/show.txt"
echo "== nix flake check --no-build"
"${NIX[@]}" flake check --no-build "$FLAKE" "${OVERRIDE[@]}"
echo "flake check: ok"

# A probe flake that takes the flake and the stand-in as inputs (inputs are the only
# way a flake reaches another flake's outputs in pure evaluation).
mkdir "$WORK/probe"
cat > "$WORK/probe/flake.nix" <<PROBE
{
  inputs.nixpkgs.url = "path:$WORK/nixpkgs";
  inputs.coco.url = "path:$WORK/src";
  inputs.coco.inputs.nixpkgs.follows = "nixpkgs";
  outputs = { self, nixpkgs, coco }: let
    sys = "x86_64-linux";
    drvs = builtins.mapAttrs (_: d: d.drvPath);
  in {
    drvs = {
      packages = drvs coco.packages.\${sys};
      checks = drvs coco.checks.\${sys};
      devShells = drvs coco.devShells.\${sys};
      formatter = coco.formatter.\${sys}.drvPath;
      # An app's program is a path in a derivation's output; its context names it.
      apps = builtins.mapAttrs (_: a: {
        inherit (a) program;
        drvs = builtins.attrNames (builtins.getContext a.program);
      }) coco.apps.\${sys};
    };
    cases = import "\${coco}/nix/tests/option-cases.nix" { inherit (nixpkgs) lib; self = coco; };
  };
}
PROBE
echo "== drvPath of every package, app, check, dev shell and the formatter"
"${NIX[@]}" eval --json "path:$WORK/probe#drvs" --no-write-lock-file > "$WORK/drvs.json"
cat "$WORK/drvs.json"; echo
echo "== NixOS modules in a test configuration, refused key options, guest image build (nix/tests/option-cases.nix)"
"${NIX[@]}" eval --json "path:$WORK/probe#cases" --no-write-lock-file > "$WORK/cases.json"
cat "$WORK/cases.json"; echo

if [ -n "${COCO_NIX_EVAL_OUT:-}" ]; then
    mkdir -p "$COCO_NIX_EVAL_OUT"
    cp "$WORK/show.txt" "$WORK/drvs.json" "$WORK/cases.json" "$COCO_NIX_EVAL_OUT/"
fi
echo "nix-eval: ok"
