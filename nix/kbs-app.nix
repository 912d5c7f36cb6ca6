# `nix run .#kbs`: a development KBS on 127.0.0.1:8080 (plain HTTP) whose state
# directory is preloaded with the guest image's reference values and a default
# resource policy (deny unless the evidence is affirming).
{ writeShellApplication, workspace, guestImage, coreutils }:

writeShellApplication {
  name = "coco-kbs-preloaded";
  runtimeInputs = [ workspace coreutils ];
  text = ''
    state=''${COCO_KBS_STATE:-$PWD/kbs-state}
    mkdir -p "$state"
    if [ ! -f "$state/admin.key" ]; then
      kbs-client gen-admin-key --private-key-out "$state/admin.key" \
        --public-key-out "$state/admin.pub"
    fi
    cat > "$state/kbs.toml" <<TOML
    listen = "127.0.0.1:''${COCO_KBS_PORT:-8080}"
    insecure_http = true
    state_dir = "$state/data"
    [admin]
    public_keys = ["$state/admin.pub"]
    TOML
    kbs --config "$state/kbs.toml" &
    kbs_pid=$!
    trap 'kill $kbs_pid' EXIT
    url="http://127.0.0.1:''${COCO_KBS_PORT:-8080}"
    for _ in $(seq 100); do kbs-client --url "$url" config --auth-private-key "$state/admin.key" \
        get-reference-values > /dev/null 2>&1 && break; sleep 0.1; done
    kbs-client --url "$url" config --auth-private-key "$state/admin.key" \
      set-reference-values ${guestImage}/reference-values.json
    kbs-client --url "$url" config --auth-private-key "$state/admin.key" \
      set-resource-policy --policy-file ${../deploy/kbs/default-policy.rego}
    echo "KBS at $url (admin key $state/admin.key), reference values from ${guestImage}"
    wait $kbs_pid
  '';
}
