//! Generates the Kata-compatible protobuf messages and ttrpc services from `protos/` into
//! `OUT_DIR/protocols` (the shared `protogen` driver; pure Rust, no `protoc`).

fn main() {
    if let Err(e) = protogen::generate(&["agent", "health", "types", "oci", "csi"]) {
        panic!("protocol generation failed: {e}");
    }
}
