//! Generates the attestation-agent and keyprovider protobuf messages and ttrpc services from `protos/` into
//! `OUT_DIR/protocols` (the shared `protogen` driver; pure Rust, no `protoc`).

fn main() {
    if let Err(e) = protogen::generate(&["attestation-agent", "keyprovider"]) {
        panic!("protocol generation failed: {e}");
    }
}
