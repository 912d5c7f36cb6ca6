//! The initdata digest printed by the annotation generator (`coco-image annotation`)
//! equals the one the KBS/attester (`coco_jose::binding`) and the guest agent compute,
//! and the generator and the agent get it from `coco_jose` rather than hashing on
//! their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use std::io::Read as _;

/// The guest agent's own initdata module (copied by build.rs, unit tests stripped).
#[allow(dead_code, missing_debug_implementations, unused_qualifications)]
mod agent_initdata {
    include!(concat!(env!("OUT_DIR"), "/agent_initdata.rs"));
}

fn deploy_toml() -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join("deploy/initdata.toml")).unwrap()
}

/// The digest each of the three implementations computes for `text`.
fn digests(text: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let image = coco_image::initdata::Initdata::parse(text)
        .unwrap()
        .digest();
    let jose = coco_jose::binding::parse_init_data("toml", text)
        .unwrap()
        .digest;
    let agent = agent_initdata::Initdata::from_toml(text)
        .unwrap()
        .digest()
        .to_vec();
    (image, jose, agent)
}

#[test]
fn generator_attester_and_agent_agree_for_every_algorithm() {
    let base = deploy_toml();
    for (alg, len) in [("sha256", 32), ("sha384", 48), ("sha512", 64)] {
        let text = base.replace("algorithm = \"sha384\"", &format!("algorithm = \"{alg}\""));
        assert!(text.contains(alg), "{alg} variant not produced");
        let (image, jose, agent) = digests(&text);
        assert_eq!(image.len(), len, "{alg}");
        assert_eq!(image, jose, "coco-image vs coco-jose ({alg})");
        assert_eq!(image, agent, "coco-image vs coco-agent ({alg})");
    }
}

#[test]
fn one_changed_byte_changes_all_three_digests() {
    let a = deploy_toml();
    let b = a.replace("ExecProcessRequest := false", "ExecProcessRequest := true");
    assert_ne!(a, b);
    let (ia, ja, aa) = digests(&a);
    let (ib, jb, ab) = digests(&b);
    assert_ne!(ia, ib);
    assert_ne!(ja, jb);
    assert_ne!(aa, ab);
}

#[test]
fn annotation_round_trips_to_the_bytes_everyone_hashes() {
    let text = deploy_toml();
    let doc = coco_image::initdata::Initdata::parse(&text).unwrap();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(doc.to_annotation().unwrap())
        .unwrap();
    let mut back = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut back)
        .unwrap();
    assert_eq!(back, text);
    // And the disk the VM gets is read by the agent to the same digest.
    let disk = doc.to_disk().unwrap();
    let agent = agent_initdata::Initdata::from_disk(&disk).unwrap();
    assert_eq!(agent.digest(), doc.digest());
    assert!(agent.policy().unwrap().contains("package agent_policy"));
}

#[test]
fn the_pod_manifest_carries_deploy_initdata_toml() {
    let pod =
        std::fs::read_to_string(deploy_tests::repo_root().join("deploy/confidential-pod.yaml"))
            .unwrap();
    let v: serde_json::Value = serde_yaml::from_str(&pod).unwrap();
    let ann = v["metadata"]["annotations"]["io.katacontainers.config.hypervisor.cc_init_data"]
        .as_str()
        .expect("initdata annotation present");
    let gz = base64::engine::general_purpose::STANDARD
        .decode(ann)
        .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(
        text,
        deploy_toml(),
        "deploy/confidential-pod.yaml is stale: rerun `coco-image annotation --toml deploy/initdata.toml`"
    );
}

#[test]
fn all_three_refuse_the_same_bad_documents() {
    for bad in [
        "version = \"0.2.0\"\nalgorithm = \"sha256\"\n",
        "version = \"0.1.0\"\nalgorithm = \"md5\"\n",
        "version = \"0.1.0\"\nalgorithm = ",
    ] {
        assert!(coco_image::initdata::Initdata::parse(bad).is_err(), "{bad}");
        assert!(
            coco_jose::binding::parse_init_data("toml", bad).is_err(),
            "{bad}"
        );
        assert!(agent_initdata::Initdata::from_toml(bad).is_err(), "{bad}");
    }
}

/// The non-test part of a source file.
fn code_of(rel: &str) -> String {
    let text = std::fs::read_to_string(deploy_tests::repo_root().join(rel)).unwrap();
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut].to_string()
}

#[test]
fn generator_and_agent_use_the_shared_parser_and_hash_nothing_themselves() {
    for rel in ["agent/src/initdata.rs", "images/src/initdata.rs"] {
        let code = code_of(rel);
        assert!(
            code.contains("coco_jose::binding::"),
            "{rel} no longer uses coco_jose's initdata parser"
        );
        for own in ["Sha256", "Sha384", "Sha512", "sha2::", "toml::from_str"] {
            assert!(
                !code.contains(own),
                "{rel} has its own initdata parsing or hashing ({own}); use coco_jose::binding"
            );
        }
    }
}
