//! The default SNP and TDX attestation policies, evaluated with regorus against
//! claims of the real captured evidence.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use kbs::verifier::snp::{SnpConfig, SnpEvidence, SnpVerifier};
use kbs::verifier::tdx::{TdxConfig, TdxEvidence, TdxVerifier};
use serde_json::{json, Value};
use std::path::PathBuf;

/// What the engine's own base file declares (the contract of these policies).
const BASE: &str = "package policy\n\ndefault status := \"contraindicated\"\n";

fn dir() -> PathBuf {
    // Run-time manifest dir first: the binary may come from another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn status(policy: &str, input: &Value, reference: &Value) -> String {
    let mut e = regorus::Engine::new();
    e.add_policy("base.rego".into(), BASE.into()).unwrap();
    let text = std::fs::read_to_string(dir().join("policies/attestation").join(policy)).unwrap();
    e.add_policy(policy.into(), text).unwrap();
    e.add_data(
        regorus::Value::from_json_str(&json!({ "reference": reference }).to_string()).unwrap(),
    )
    .unwrap();
    e.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
    let v = e.eval_rule("data.policy.status".into()).unwrap();
    v.as_string().unwrap().to_string()
}

fn snp_claims() -> Value {
    let report = std::fs::read(dir().join("testdata/snp/report.bin")).unwrap();
    let vcek = std::fs::read(dir().join("testdata/snp/vcek.der")).unwrap();
    let v = SnpVerifier::new(SnpConfig::default())
        .unwrap()
        .at(time::macros::datetime!(2025-06-01 00:00 UTC));
    let ev = SnpEvidence {
        report,
        endorsement_key: Some(vcek),
    };
    serde_json::to_value(v.verify_evidence(&ev, None, None).unwrap()).unwrap()
}

fn tdx_claims() -> Value {
    let quote = std::fs::read(dir().join("testdata/tdx/quote-v4-with-collateral.dat")).unwrap();
    let v = TdxVerifier::new(TdxConfig {
        collateral_dir: Some(dir().join("testdata/tdx")),
        ..TdxConfig::default()
    })
    .unwrap()
    .at(time::macros::datetime!(2025-11-01 00:00 UTC));
    let ev = TdxEvidence {
        quote,
        cc_eventlog: None,
    };
    serde_json::to_value(v.verify_evidence(&ev, None, None).unwrap()).unwrap()
}

fn snp_reference(claims: &Value) -> Value {
    json!({
        "snp_launch_measurement": [claims["measurement"]],
        "snp_min_bootloader": [claims["reported_tcb"]["bootloader"].to_string()],
        "snp_min_snp": [claims["reported_tcb"]["snp"].to_string()],
        "snp_min_microcode": [claims["reported_tcb"]["microcode"].to_string()],
    })
}

#[test]
fn snp_sample_is_affirmed_with_its_measurement() {
    let c = snp_claims();
    let input = json!({"tee": "snp", "claims": c, "init_data": null});
    assert_eq!(status("snp.rego", &input, &snp_reference(&c)), "affirming");
}

#[test]
fn snp_unknown_measurement_or_no_reference_is_contraindicated() {
    let c = snp_claims();
    let input = json!({"tee": "snp", "claims": c, "init_data": null});
    assert_eq!(status("snp.rego", &input, &json!({})), "contraindicated");
    let mut r = snp_reference(&c);
    r["snp_launch_measurement"] = json!(["00".repeat(48)]);
    assert_eq!(status("snp.rego", &input, &r), "contraindicated");
}

#[test]
fn snp_tcb_below_minimum_is_contraindicated() {
    let c = snp_claims();
    let input = json!({"tee": "snp", "claims": c, "init_data": null});
    let mut r = snp_reference(&c);
    let above = c["reported_tcb"]["microcode"].as_u64().unwrap() + 1;
    r["snp_min_microcode"] = json!([above.to_string()]);
    assert_eq!(status("snp.rego", &input, &r), "contraindicated");
}

#[test]
fn snp_debug_or_unbound_initdata_is_contraindicated() {
    let c = snp_claims();
    let r = snp_reference(&c);
    let mut debug = c.clone();
    debug["policy"]["debug_allowed"] = json!(true);
    let input = json!({"tee": "snp", "claims": debug, "init_data": null});
    assert_eq!(status("snp.rego", &input, &r), "contraindicated");
    // Initdata sent but (hypothetically) not bound.
    let input = json!({"tee": "snp", "claims": c, "init_data": {"version": "0.1.0"}});
    assert_eq!(status("snp.rego", &input, &r), "contraindicated");
    let mut bound = c.clone();
    bound["init_data_bound"] = json!(true);
    let input = json!({"tee": "snp", "claims": bound, "init_data": {"version": "0.1.0"}});
    assert_eq!(status("snp.rego", &input, &r), "affirming");
}

#[test]
fn snp_rules_do_not_affirm_another_tee() {
    let c = snp_claims();
    let input = json!({"tee": "tdx", "claims": c, "init_data": null});
    assert_eq!(
        status("snp.rego", &input, &snp_reference(&c)),
        "contraindicated"
    );
}

fn tdx_reference(c: &Value) -> Value {
    json!({
        "tdx_mrtd": [c["mrtd"]],
        "tdx_rtmr_1": [c["rtmr_1"]],
        "tdx_rtmr_2": [c["rtmr_2"]],
    })
}

#[test]
fn tdx_sample_is_out_of_date_so_contraindicated_by_default() {
    let c = tdx_claims();
    assert_eq!(c["tcb_status"], "OutOfDate");
    let input = json!({"tee": "tdx", "claims": c, "init_data": null});
    assert_eq!(
        status("tdx.rego", &input, &tdx_reference(&c)),
        "contraindicated"
    );
}

#[test]
fn tdx_out_of_date_can_be_downgraded_to_warning() {
    let c = tdx_claims();
    let input = json!({"tee": "tdx", "claims": c, "init_data": null});
    let mut r = tdx_reference(&c);
    r["tdx_tcb_status_warning"] = json!(["OutOfDate"]);
    assert_eq!(status("tdx.rego", &input, &r), "warning");
}

#[test]
fn tdx_up_to_date_with_matching_measurements_is_affirmed() {
    let mut c = tdx_claims();
    c["tcb_status"] = json!("UpToDate");
    let input = json!({"tee": "tdx", "claims": c, "init_data": null});
    let r = tdx_reference(&c);
    assert_eq!(status("tdx.rego", &input, &r), "affirming");
    // Optional RTMR0 reference, when given, must match.
    let mut r0 = r.clone();
    r0["tdx_rtmr_0"] = json!(["11".repeat(48)]);
    assert_eq!(status("tdx.rego", &input, &r0), "contraindicated");
}

#[test]
fn tdx_debug_unknown_mrtd_or_unchecked_tcb_is_contraindicated() {
    let mut c = tdx_claims();
    c["tcb_status"] = json!("UpToDate");
    let r = tdx_reference(&c);
    let mut debug = c.clone();
    debug["debug"] = json!(true);
    let input = json!({"tee": "tdx", "claims": debug, "init_data": null});
    assert_eq!(status("tdx.rego", &input, &r), "contraindicated");
    let mut other = r.clone();
    other["tdx_mrtd"] = json!(["00".repeat(48)]);
    let input = json!({"tee": "tdx", "claims": c, "init_data": null});
    assert_eq!(status("tdx.rego", &input, &other), "contraindicated");
    let mut unchecked = c.clone();
    unchecked["tcb_status"] = Value::Null;
    let input = json!({"tee": "tdx", "claims": unchecked, "init_data": null});
    assert_eq!(status("tdx.rego", &input, &r), "contraindicated");
    let input = json!({"tee": "tdx", "claims": c, "init_data": {"version": "0.1.0"}});
    assert_eq!(status("tdx.rego", &input, &r), "contraindicated");
}

#[test]
fn both_files_load_together_without_conflicts() {
    // The engine loads every default policy into one package: evaluating SNP
    // input with both files present must still give one status.
    let c = snp_claims();
    let mut e = regorus::Engine::new();
    e.add_policy("base.rego".into(), BASE.into()).unwrap();
    for p in ["snp.rego", "tdx.rego"] {
        let text = std::fs::read_to_string(dir().join("policies/attestation").join(p)).unwrap();
        e.add_policy(p.into(), text).unwrap();
    }
    e.add_data(
        regorus::Value::from_json_str(&json!({"reference": snp_reference(&c)}).to_string())
            .unwrap(),
    )
    .unwrap();
    e.set_input(
        regorus::Value::from_json_str(
            &json!({"tee": "snp", "claims": c, "init_data": null}).to_string(),
        )
        .unwrap(),
    );
    let v = e.eval_rule("data.policy.status".into()).unwrap();
    assert_eq!(v.as_string().unwrap().as_ref(), "affirming");
}
