//! The initdata the deploy manifests carry, and the one implementation every side
//! uses (`coco_jose::initdata`): its digest is the plain hash of the exact TOML
//! text (checked here against `sha2` by hand, not against itself), the annotation
//! in `deploy/confidential-pod.yaml` decodes to `deploy/initdata.toml`, and the
//! agent and `coco-image` modules only re-export it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use coco_jose::initdata::{Initdata, ANNOTATION};
use sha2::Digest as _;
use std::io::Read as _;

fn deploy_toml() -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join("deploy/initdata.toml")).unwrap()
}

#[test]
fn digest_is_the_hash_of_the_exact_text_for_every_algorithm() {
    let base = deploy_toml();
    for alg in ["sha256", "sha384", "sha512"] {
        let text = base.replace("algorithm = \"sha384\"", &format!("algorithm = \"{alg}\""));
        assert!(text.contains(alg), "{alg} variant not produced");
        let by_hand = match alg {
            "sha256" => sha2::Sha256::digest(text.as_bytes()).to_vec(),
            "sha384" => sha2::Sha384::digest(text.as_bytes()).to_vec(),
            _ => sha2::Sha512::digest(text.as_bytes()).to_vec(),
        };
        let doc = Initdata::parse(&text).unwrap();
        assert_eq!(doc.digest(), by_hand.as_slice(), "{alg}");
        // What the KBS computes from the attest request's initdata.
        let kbs = coco_jose::binding::parse_init_data("toml", &text).unwrap();
        assert_eq!(kbs.digest, by_hand, "{alg}");
        // What SNP HOST_DATA and TDX MRCONFIGID hold.
        let mut snp = by_hand.clone();
        snp.resize(32, 0);
        let mut tdx = by_hand.clone();
        tdx.resize(48, 0);
        assert_eq!(doc.register::<32>().to_vec(), snp, "{alg}");
        assert_eq!(doc.register::<48>().to_vec(), tdx, "{alg}");
    }
}

#[test]
fn one_changed_byte_changes_the_digest() {
    let a = deploy_toml();
    let b = a.replace("ExecProcessRequest := false", "ExecProcessRequest := true");
    assert_ne!(a, b);
    assert_ne!(
        Initdata::parse(&a).unwrap().digest(),
        Initdata::parse(&b).unwrap().digest()
    );
}

fn gunzip_b64(value: &str) -> String {
    let gz = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn annotation_and_disk_round_trip_to_the_hashed_bytes() {
    let text = deploy_toml();
    let doc = Initdata::parse(&text).unwrap();
    assert_eq!(gunzip_b64(&doc.to_annotation().unwrap()), text);
    let disk = doc.to_disk().unwrap();
    let back = Initdata::from_disk(disk.as_slice()).unwrap();
    assert_eq!(back.digest(), doc.digest());
    assert!(back.policy().unwrap().contains("package agent_policy"));
}

#[test]
fn the_pod_manifest_carries_deploy_initdata_toml() {
    let pod =
        std::fs::read_to_string(deploy_tests::repo_root().join("deploy/confidential-pod.yaml"))
            .unwrap();
    let v: serde_json::Value = serde_yaml::from_str(&pod).unwrap();
    let ann = v["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .expect("initdata annotation present");
    assert_eq!(
        gunzip_b64(ann),
        deploy_toml(),
        "deploy/confidential-pod.yaml is stale: rerun `coco-image annotation --toml deploy/initdata.toml`"
    );
}

#[test]
fn bad_documents_are_refused() {
    for bad in [
        "version = \"0.2.0\"\nalgorithm = \"sha256\"\n",
        "version = \"0.1.0\"\nalgorithm = \"md5\"\n",
        "version = \"0.1.0\"\nalgorithm = ",
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\ndata = 3\n",
    ] {
        assert!(Initdata::parse(bad).is_err(), "{bad}");
    }
}

/// The non-test part of a source file.
fn code_of(rel: &str) -> String {
    let text = std::fs::read_to_string(deploy_tests::repo_root().join(rel)).unwrap();
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut].to_string()
}

#[test]
fn agent_and_image_tool_reexport_the_one_implementation() {
    for rel in ["agent/src/initdata.rs", "images/src/initdata.rs"] {
        let code = code_of(rel);
        assert!(
            code.contains("pub use coco_jose::initdata::"),
            "{rel} no longer re-exports coco_jose::initdata"
        );
        for own in [
            "Sha256",
            "Sha384",
            "Sha512",
            "sha2::",
            "toml::",
            "flate2::",
            "GzDecoder",
            "MAGIC: &",
        ] {
            assert!(
                !code.contains(own),
                "{rel} has its own initdata format, parser or hash ({own}); use coco_jose::initdata"
            );
        }
    }
}
