//! Every YAML document under deploy/ parses into its k8s-openapi type, and no field
//! is dropped on the way (k8s-openapi ignores unknown fields, so a typo such as
//! `runtimeClasName` would otherwise pass silently).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde::Serialize;

use k8s_openapi::api::{apps, core, node};

fn typed<T: DeserializeOwned + Serialize>(doc: &serde_json::Value) -> Result<(), String> {
    let t: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&t).map_err(|e| e.to_string())?;
    let dropped = deploy_tests::dropped_fields(doc, &back);
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(format!("unknown fields: {}", dropped.join(", ")))
    }
}

/// Parses one document into the type its apiVersion/kind names.
fn check(doc: &serde_json::Value) -> Result<String, String> {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "Pod") => typed::<core::v1::Pod>(doc),
        ("v1", "Service") => typed::<core::v1::Service>(doc),
        ("v1", "Secret") => typed::<core::v1::Secret>(doc),
        ("v1", "ConfigMap") => typed::<core::v1::ConfigMap>(doc),
        ("v1", "Namespace") => typed::<core::v1::Namespace>(doc),
        ("apps/v1", "Deployment") => typed::<apps::v1::Deployment>(doc),
        ("node.k8s.io/v1", "RuntimeClass") => typed::<node::v1::RuntimeClass>(doc),
        other => Err(format!("no type mapped for {other:?}")),
    }?;
    Ok(format!("{api}/{kind} {}", doc["metadata"]["name"]))
}

fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_deploy_manifest_parses_into_k8s_types() {
    let root = deploy_tests::repo_root().join("deploy");
    let files = deploy_tests::files_with_suffix(&root, ".yaml");
    assert!(files.len() >= 3, "manifests missing: {files:?}");
    let mut seen = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, doc) in documents(&text).iter().enumerate() {
            match check(doc) {
                Ok(what) => seen.push(what),
                Err(e) => errors.push(format!("{} doc {i}: {e}", f.display())),
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    for want in [
        "node.k8s.io/v1/RuntimeClass \"kata-coco-snp\"",
        "node.k8s.io/v1/RuntimeClass \"kata-coco-tdx\"",
        "apps/v1/Deployment \"coco-kbs\"",
        "v1/Service \"coco-kbs\"",
        "v1/ConfigMap \"coco-kbs-config\"",
        "v1/Pod \"confidential-demo\"",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:#?}");
    }
}

#[test]
fn a_misspelled_field_is_rejected() {
    let doc = &documents(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  runtimeClasName: kata-coco-snp\n  containers:\n  - name: a\n    image: busybox\n",
    )[0];
    let err = check(doc).unwrap_err();
    assert!(err.contains("spec.runtimeClasName"), "{err}");
    let nested = &documents(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: x\nhandler: x\nscheduling:\n  nodeSelectr: {a: b}\n",
    )[0];
    assert!(check(nested)
        .unwrap_err()
        .contains("scheduling.nodeSelectr"));
    let wrong_kind = &documents("apiVersion: v1\nkind: Pood\nmetadata: {name: p}\n")[0];
    assert!(check(wrong_kind).is_err());
}

#[test]
fn the_kbs_configmap_is_a_valid_kbs_config() {
    let text = std::fs::read_to_string(deploy_tests::repo_root().join("deploy/kbs.yaml")).unwrap();
    let cm = documents(&text)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap();
    let kbs_toml: toml::Table = cm["data"]["kbs.toml"].as_str().unwrap().parse().unwrap();
    // The keys the KBS (kbs/src/config.rs, deny_unknown_fields) reads.
    let keys: Vec<&str> = kbs_toml.keys().map(String::as_str).collect();
    for k in &keys {
        assert!(
            [
                "listen",
                "insecure_http",
                "tls",
                "state_dir",
                "admin",
                "session",
                "token",
                "rate_limit",
                "limits",
                "verifiers",
                "attestation_policy"
            ]
            .contains(k),
            "unknown kbs.toml key {k}"
        );
    }
    // The in-cluster policy is the same as the one `nix run .#kbs` loads.
    let policy =
        std::fs::read_to_string(deploy_tests::repo_root().join("deploy/kbs/default-policy.rego"))
            .unwrap();
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(cm["data"]["default-policy.rego"].as_str().unwrap()),
        strip(&policy)
    );
}
