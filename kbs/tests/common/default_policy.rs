//! The KBS's built-in default attestation policy, on the KBS's policy engine and
//! policy input, for tests that appraise claims they got from a verifier.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use coco_jose::binding::InitData;
use kbs::attestation::{init_data_input, policy_input, DEFAULT_ATTESTATION_MODULES};
use kbs::policy::CompiledPolicy;
use serde_json::{json, Value};

/// The status the built-in default policy gives `claims` of `tee`, with the
/// initdata the client sent (if any) and `reference` as `data.reference`.
pub fn status(
    tee: &str,
    claims: &Value,
    init_data: Option<&InitData>,
    reference: &Value,
) -> String {
    let modules: Vec<(String, String)> = DEFAULT_ATTESTATION_MODULES
        .iter()
        .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
        .collect();
    let policy = CompiledPolicy::compile(&modules, &json!({ "reference": reference })).unwrap();
    let init = init_data.map(init_data_input);
    let input = policy_input(tee, claims, init.as_ref());
    policy
        .eval("data.policy.status", &input, None)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}
