//! The build-script side of the ttrpc crates (`agent`, `aa`): generates the protobuf
//! messages and async ttrpc services for `protos/<name>.proto` into
//! `$OUT_DIR/protocols` with `ttrpc-codegen` (pure Rust, no `protoc`), ready to be
//! pulled in with `include!`.
//!
//! In `build.rs`:
//! ```no_run
//! if let Err(e) = protogen::generate(&["agent", "health"]) {
//!     panic!("protocol generation failed: {e}");
//! }
//! ```

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProtogenError {
    #[error("OUT_DIR is not set (protogen runs from a build script)")]
    NoOutDir,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ttrpc-codegen: {0}")]
    Codegen(std::io::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProtogenError + '_ {
    move |source| ProtogenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generates `protos/<name>.proto` (relative to the crate being built, with `protos/`
/// as the include path) into `$OUT_DIR/protocols`, and tells cargo to rerun when one
/// of them changes. Returns the output directory.
pub fn generate(protos: &[&str]) -> Result<PathBuf, ProtogenError> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or(ProtogenError::NoOutDir)?)
        .join("protocols");
    for p in protos {
        println!("cargo:rerun-if-changed=protos/{p}.proto");
    }
    generate_into(Path::new("protos"), protos, &out)?;
    Ok(out)
}

/// [`generate`] with explicit directories: `protos_dir/<name>.proto` into `out`.
pub fn generate_into(protos_dir: &Path, protos: &[&str], out: &Path) -> Result<(), ProtogenError> {
    fs::create_dir_all(out).map_err(io(out))?;
    let inputs: Vec<PathBuf> = protos
        .iter()
        .map(|p| protos_dir.join(format!("{p}.proto")))
        .collect();
    ttrpc_codegen::Codegen::new()
        .out_dir(out)
        .inputs(&inputs)
        .include(protos_dir)
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .run()
        .map_err(ProtogenError::Codegen)?;
    for entry in fs::read_dir(out).map_err(io(out))? {
        let path = entry.map_err(io(out))?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            fs::write(&path, includable(&text)).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Generated code is pulled in with `include!`, where inner attributes and inner doc
/// comments are not allowed: drop the former (the including crate puts equivalent
/// `allow`s on the wrapping module) and turn the latter into plain comments.
fn includable(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("#!["))
        .map(|l| match l.strip_prefix("//!") {
            Some(rest) => format!("//{rest}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_attributes_and_docs_are_made_includable() {
        let got = includable(
            "//! Generated\n#![allow(x)]\n  #![cfg_attr(a, b)]\npub struct A;\n/// doc\n",
        );
        assert_eq!(got, "// Generated\npub struct A;\n/// doc");
    }

    #[test]
    fn generates_messages_and_an_async_service() {
        let dir = tempfile::tempdir().unwrap();
        let protos = dir.path().join("protos");
        fs::create_dir_all(&protos).unwrap();
        fs::write(
            protos.join("echo.proto"),
            "syntax = \"proto3\";\npackage echo;\nmessage Ping { string text = 1; }\nservice Echo { rpc Say(Ping) returns (Ping); }\n",
        )
        .unwrap();
        let out = dir.path().join("out");
        generate_into(&protos, &["echo"], &out).unwrap();
        let messages = fs::read_to_string(out.join("echo.rs")).unwrap();
        assert!(messages.contains("pub struct Ping"), "{messages}");
        let service = fs::read_to_string(out.join("echo_ttrpc.rs")).unwrap();
        assert!(service.contains("async fn say"), "{service}");
        for text in [&messages, &service] {
            assert!(!text.lines().any(|l| l.trim_start().starts_with("#![")));
            assert!(!text.lines().any(|l| l.starts_with("//!")));
        }
    }

    #[test]
    fn a_missing_proto_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate_into(dir.path(), &["nope"], &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, ProtogenError::Codegen(_)), "{err}");
    }
}
