#!/usr/bin/env bash
# The KBS-only demo (no VM): a KBS over TLS, a secret, attestation, policy.
#
# This machine has no SEV-SNP/TDX, so the guest side uses the `sample` TEE,
# which is NOT confidential: it shows the protocol and the policies, not
# hardware protection.
set -euo pipefail
cd "$(dirname "$0")/.."
# COCO_BIN_DIR: prebuilt kbs/kbs-client (e.g. `nix run .#demo`); skips setup and build.
[ -n "${COCO_BIN_DIR:-}" ] || ./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/coco-target}"
# Errors are part of the show; backtraces are not.
export RUST_BACKTRACE=0

step_start=0
step() { step_start=$(date +%s%N); printf '\n== %s\n' "$*"; }
took() { printf '   (%d ms)\n' $(( ($(date +%s%N) - step_start) / 1000000 )); }

step "build kbs and kbs-client"
if [ -n "${COCO_BIN_DIR:-}" ]; then
  BIN="$COCO_BIN_DIR"
else
  cargo build -q -p kbs -p kbs-client
  BIN="$CARGO_TARGET_DIR/debug"
fi
took

work=$(mktemp -d)
kbs_pid=""
cleanup() { [ -n "$kbs_pid" ] && kill "$kbs_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

step "TLS certificates and an admin key"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=demo CA" -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$work/ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -days 1 -extfile "$work/ext" -out "$work/tls.crt" 2>/dev/null
"$BIN/kbs-client" gen-admin-key --private-key-out "$work/admin.key" --public-key-out "$work/admin.pub"
took

step "start the KBS"
cat > "$work/kbs.toml" <<TOML
listen = "127.0.0.1:0"
state_dir = "state"
[tls]
cert = "tls.crt"
key = "tls.key"
[admin]
public_keys = ["admin.pub"]
TOML
"$BIN/kbs" --config "$work/kbs.toml" > "$work/kbs.out" 2> "$work/kbs.log" &
kbs_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/kbs.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^kbs listening on //p' "$work/kbs.out" | sed 's/127.0.0.1/localhost/')
[ -n "$url" ] || { cat "$work/kbs.log"; exit 1; }
echo "   KBS at $url"
took

kc=("$BIN/kbs-client" --url "$url" --cert-file "$work/ca.crt")
admin=(config --auth-private-key "$work/admin.key")

step "admin stores a secret at default/key/demo"
printf 'the image decryption key' > "$work/secret"
"${kc[@]}" "${admin[@]}" set-resource --path default/key/demo --resource-file "$work/secret"
took

# The pod's initdata: what its owner ships with it (here just an agent policy).
cat > "$work/initdata.toml" <<'TOML'
version = "0.1.0"
algorithm = "sha384"
[data]
"policy.rego" = """
package agent_policy
default ExecProcessRequest := false
"""
TOML
guest=(--attester sample --init-data "$work/initdata.toml")

step "a guest with the sample TEE asks for it under the default policy"
if out=$("${kc[@]}" get-resource "${guest[@]}" --path default/key/demo 2>&1); then
  echo "   UNEXPECTED: released: $out"; exit 1
fi
echo "   refused, as it must be: ${out##*Error: }"
took

step "admin explicitly allows the (non-confidential) sample TEE"
cat > "$work/allow-sample.rego" <<'REGO'
package policy
default allow := false
allow if {
    input.tee == "sample"
    input.submods.cpu0["ear.status"] != "contraindicated"
}
REGO
"${kc[@]}" "${admin[@]}" set-resource-policy --policy-file "$work/allow-sample.rego"
took

step "the pod's owner registers its initdata (evidence with any other is never trusted)"
digest=$("${kc[@]}" "${admin[@]}" register-initdata "$work/initdata.toml")
echo "   init_data_digest += $digest"
took

step "the guest attests and fetches the secret"
token=$("${kc[@]}" attest "${guest[@]}")
printf '%s' "$token" | python3 -c '
import base64, json, sys
p = sys.stdin.read().split(".")[1]
c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
print("   attestation token: tee=%s ear.status=%s expires in %ss" % (
    c["tee"], c["submods"]["cpu0"]["ear.status"], c["exp"] - c["iat"]))'

secret=$("${kc[@]}" get-resource "${guest[@]}" --path default/key/demo | base64 -d)
echo "   released secret: \"$secret\""
took

step "a host-swapped initdata (its own agent policy, same KBS) gets nothing"
sed 's/:= false/:= true/' "$work/initdata.toml" > "$work/swapped.toml"
if out=$("${kc[@]}" get-resource --attester sample --init-data "$work/swapped.toml" \
    --path default/key/demo 2>&1); then
  echo "   UNEXPECTED: released: $out"; exit 1
fi
echo "   refused, as it must be: ${out##*Error: }"
took

echo
echo "TEE used: sample (no hardware TEE on this host: NOT confidential)."
