//! The example resource policies in `policies/resource/`, evaluated by the KBS's
//! resource-policy engine on the claims of tokens the KBS's token issuer signs,
//! with the data the resource endpoint gives.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use kbs::rcar::resource_policy_data;
use kbs::storage::{FsStore, ResourcePath};
use kbs::token::{Appraisal, TokenIssuer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const WORKLOAD_BOUND: &str = include_str!("../policies/resource/workload-bound.rego");
const PLACEHOLDER: &str = "REPLACE-WITH-THE-APP-INITDATA-DIGEST";
const APP: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault ExecProcessRequest := false\\n\"\n";
const OTHER: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault AllowRequestsFailingPolicy := true\\n\"\n";

struct Issuer {
    _dir: tempfile::TempDir,
    tokens: TokenIssuer,
}

impl Issuer {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let tokens = TokenIssuer::load(None, &store, Duration::from_secs(60)).unwrap();
        Self { _dir: dir, tokens }
    }

    /// The claims of a token for `tee`/`status` and the initdata `toml`, as the
    /// resource endpoint reads them back.
    fn claims(&self, tee: &str, status: &str, toml: Option<&str>) -> Value {
        let init_data = toml.map(|t| {
            kbs::attestation::init_data_input(
                &coco_jose::binding::parse_init_data("toml", t).unwrap(),
            )
        });
        let key = coco_jose::keys::TeeKeyPair::generate_ec();
        let token = self
            .tokens
            .issue(&Appraisal {
                tee,
                status,
                claims: json!({}),
                trust_vector: None,
                tee_pubkey: &key.public_jwk(),
                init_data,
            })
            .unwrap();
        self.tokens.verify(&token).unwrap()
    }
}

fn allows(policy: &str, claims: &Value, path: &str) -> bool {
    let compiled = kbs::server::compile_resource_policy(policy).unwrap();
    let data = resource_policy_data(&ResourcePath::parse(path).unwrap(), &BTreeMap::new());
    compiled
        .allows("data.policy.allow", claims, Some(&data))
        .unwrap()
}

#[test]
fn workload_bound_releases_the_app_key_only_to_the_apps_initdata() {
    let app_digest = coco_jose::initdata::Initdata::parse(APP)
        .unwrap()
        .digest_hex();
    assert_eq!(WORKLOAD_BOUND.matches(PLACEHOLDER).count(), 1);
    let policy = WORKLOAD_BOUND.replace(PLACEHOLDER, &app_digest);
    let t = Issuer::new();
    const KEY: &str = "default/app/key";

    let app = t.claims("snp", "affirming", Some(APP));
    assert!(allows(&policy, &app, KEY));
    // Another workload, also affirmed (its initdata registered too): not the key,
    // but what the default rules give it.
    let other = t.claims("snp", "affirming", Some(OTHER));
    assert!(!allows(&policy, &other, KEY));
    assert!(allows(&policy, &other, "default/other/key"));
    // The app's initdata without affirming evidence, without initdata at all, or
    // on the sample TEE.
    for (tee, status, toml) in [
        ("tdx", "warning", Some(APP)),
        ("tpm", "contraindicated", Some(APP)),
        ("snp", "affirming", None),
        ("sample", "affirming", Some(APP)),
    ] {
        let c = t.claims(tee, status, toml);
        assert!(!allows(&policy, &c, KEY), "{tee} {status} {toml:?}");
    }
    assert!(!allows(
        &policy,
        &t.claims("snp", "warning", Some(OTHER)),
        "default/other/key"
    ));
    assert!(!allows(
        &policy,
        &t.claims("sample", "affirming", None),
        "default/other/key"
    ));
    // Only that one path is pinned: a neighbour follows the default rules.
    assert!(allows(&policy, &other, "default/app/key2"));

    // As shipped, the placeholder matches nothing: the app key goes to nobody.
    assert!(!allows(WORKLOAD_BOUND, &app, KEY));
    assert!(allows(WORKLOAD_BOUND, &app, "default/other/key"));
}
