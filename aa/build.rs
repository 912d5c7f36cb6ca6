//! Generates the attestation-agent and keyprovider protobuf messages and ttrpc services from `protos/` into
//! `OUT_DIR` (pure Rust, no `protoc`).

use std::fs;
use std::path::PathBuf;

const PROTOS: &[&str] = &["attestation-agent", "keyprovider"];

fn main() {
    let out =
        PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("protocols");
    if let Err(e) = generate(&out) {
        panic!("protocol generation failed: {e}");
    }
}

fn generate(out: &PathBuf) -> std::io::Result<()> {
    fs::create_dir_all(out)?;
    let inputs: Vec<String> = PROTOS.iter().map(|p| format!("protos/{p}.proto")).collect();
    for i in &inputs {
        println!("cargo:rerun-if-changed={i}");
    }
    ttrpc_codegen::Codegen::new()
        .out_dir(out)
        .inputs(&inputs)
        .include("protos")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .run()?;
    // The generated files are pulled in with `include!`, where inner attributes and inner
    // doc comments are not allowed: strip them (the crate applies equivalent `allow`s on the wrapping modules).
    for entry in fs::read_dir(out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path)?;
            let kept: Vec<String> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("#!["))
                .map(|l| match l.strip_prefix("//!") {
                    Some(rest) => format!("//{rest}"),
                    None => l.to_string(),
                })
                .collect();
            fs::write(&path, kept.join("\n"))?;
        }
    }
    Ok(())
}
