//! The default SNP and TDX attestation policies (the KBS's built-in modules, on
//! the KBS's policy engine and policy input) against claims of the real captured
//! evidence, with the initdata those reports carry bound by the verifier.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use coco_jose::binding::{InitData, InitDataAlgorithm};
use coco_jose::initdata::REFERENCE_VALUE;
use kbs::attestation::{init_data_input, AttestationService};
use kbs::verifier::snp::{SnpConfig, SnpEvidence, SnpVerifier};
use kbs::verifier::tdx::{TdxConfig, TdxEvidence, TdxVerifier};
use kbs::verifier::{Expected, VerifierError, Verifiers};
use serde_json::{json, Value};
use std::path::PathBuf;

#[path = "common/default_policy.rs"]
mod default_policy;
use default_policy::status;

fn dir() -> PathBuf {
    // Run-time manifest dir first: the binary may come from another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The initdata a captured report was launched with, as the KBS holds it after
/// parsing: its TOML is not published, only its digest (the report's HOST_DATA or
/// MRCONFIGID), and the digest is all the verifier and the policy use.
fn launched_with(register: &str, algorithm: InitDataAlgorithm) -> InitData {
    InitData {
        digest: hex::decode(register).unwrap(),
        algorithm,
        data: Value::Null,
        files: Default::default(),
    }
}

/// An initdata the host could swap in: real TOML, its real digest.
fn other_init_data() -> InitData {
    coco_jose::binding::parse_init_data(
        "toml",
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault AllowRequestsFailingPolicy := true\\n\"\n",
    )
    .unwrap()
}

fn snp_verifier() -> SnpVerifier {
    SnpVerifier::new(SnpConfig::default())
        .unwrap()
        .at(time::macros::datetime!(2025-06-01 00:00 UTC))
}

fn snp_evidence() -> SnpEvidence {
    SnpEvidence {
        report: std::fs::read(dir().join("testdata/snp/report.bin")).unwrap(),
        endorsement_key: Some(std::fs::read(dir().join("testdata/snp/vcek.der")).unwrap()),
    }
}

/// Claims of the captured SNP report, unbound (no initdata sent), and the
/// initdata its HOST_DATA carries.
fn snp_unbound() -> (Value, InitData) {
    let c = serde_json::to_value(
        snp_verifier()
            .verify_evidence(&snp_evidence(), None, None)
            .unwrap(),
    )
    .unwrap();
    let init = launched_with(c["host_data"].as_str().unwrap(), InitDataAlgorithm::Sha256);
    (c, init)
}

/// Claims of the captured SNP report with its initdata sent and bound.
fn snp_claims() -> (Value, InitData) {
    let (_, init) = snp_unbound();
    let claims = snp_verifier()
        .verify_evidence(&snp_evidence(), None, Some(&init.digest))
        .unwrap();
    assert!(claims.init_data_bound);
    (serde_json::to_value(claims).unwrap(), init)
}

fn tdx_verifier() -> TdxVerifier {
    TdxVerifier::new(TdxConfig {
        collateral_dir: Some(dir().join("testdata/tdx")),
        ..TdxConfig::default()
    })
    .unwrap()
    .at(time::macros::datetime!(2025-11-01 00:00 UTC))
}

fn tdx_evidence() -> TdxEvidence {
    TdxEvidence {
        quote: std::fs::read(dir().join("testdata/tdx/quote-v4-with-collateral.dat")).unwrap(),
        cc_eventlog: None,
    }
}

/// Claims of the captured TDX quote, with the initdata its MRCONFIGID carries
/// sent and bound.
fn tdx_claims() -> (Value, InitData) {
    let unbound = tdx_verifier()
        .verify_evidence(&tdx_evidence(), None, None)
        .unwrap();
    assert!(!unbound.init_data_bound);
    let unbound = serde_json::to_value(unbound).unwrap();
    let init = launched_with(
        unbound["mr_config_id"].as_str().unwrap(),
        InitDataAlgorithm::Sha384,
    );
    let claims = tdx_verifier()
        .verify_evidence(&tdx_evidence(), None, Some(&init.digest))
        .unwrap();
    assert!(claims.init_data_bound);
    (serde_json::to_value(claims).unwrap(), init)
}

fn registered(init: &InitData) -> Value {
    json!([hex::encode(&init.digest)])
}

fn snp_reference(claims: &Value, init: &InitData) -> Value {
    json!({
        "snp_launch_measurement": [claims["measurement"]],
        "snp_min_bootloader": [claims["reported_tcb"]["bootloader"].to_string()],
        "snp_min_snp": [claims["reported_tcb"]["snp"].to_string()],
        "snp_min_microcode": [claims["reported_tcb"]["microcode"].to_string()],
        REFERENCE_VALUE: registered(init),
    })
}

#[test]
fn snp_sample_is_affirmed_with_its_measurement_and_registered_initdata() {
    let (c, init) = snp_claims();
    let r = snp_reference(&c, &init);
    assert_eq!(status("snp", &c, Some(&init), &r), "affirming");
    // Registered digests may be given in upper case.
    let mut upper = r.clone();
    upper[REFERENCE_VALUE] = json!([hex::encode_upper(&init.digest)]);
    assert_eq!(status("snp", &c, Some(&init), &upper), "affirming");
    // One of several registered workloads.
    let mut several = r.clone();
    several[REFERENCE_VALUE] = json!([
        hex::encode(&other_init_data().digest),
        hex::encode(&init.digest)
    ]);
    assert_eq!(status("snp", &c, Some(&init), &several), "affirming");
}

#[test]
fn snp_unregistered_or_missing_initdata_is_contraindicated() {
    let (c, init) = snp_claims();
    let mut r = snp_reference(&c, &init);
    // Bound, but not registered: a host-chosen HOST_DATA.
    r[REFERENCE_VALUE] = registered(&other_init_data());
    assert_eq!(status("snp", &c, Some(&init), &r), "contraindicated");
    let mut none = snp_reference(&c, &init);
    none.as_object_mut().unwrap().remove(REFERENCE_VALUE);
    assert_eq!(status("snp", &c, Some(&init), &none), "contraindicated");
    // No initdata sent at all, everything else as registered.
    let (unbound, _) = snp_unbound();
    let r = snp_reference(&c, &init);
    assert_eq!(status("snp", &unbound, None, &r), "contraindicated");
    // Registered initdata named in the request but not bound in the evidence.
    assert_eq!(status("snp", &unbound, Some(&init), &r), "contraindicated");
    // A swapped initdata the evidence does not carry is refused by the verifier.
    let err = snp_verifier()
        .verify_evidence(&snp_evidence(), None, Some(&other_init_data().digest))
        .unwrap_err();
    assert!(matches!(err, VerifierError::InitDataMismatch), "{err}");
}

#[test]
fn snp_unknown_measurement_or_no_reference_is_contraindicated() {
    let (c, init) = snp_claims();
    assert_eq!(
        status("snp", &c, Some(&init), &json!({})),
        "contraindicated"
    );
    let mut r = snp_reference(&c, &init);
    r["snp_launch_measurement"] = json!(["00".repeat(48)]);
    assert_eq!(status("snp", &c, Some(&init), &r), "contraindicated");
}

#[test]
fn snp_tcb_below_minimum_is_contraindicated() {
    let (c, init) = snp_claims();
    let mut r = snp_reference(&c, &init);
    let above = c["reported_tcb"]["microcode"].as_u64().unwrap() + 1;
    r["snp_min_microcode"] = json!([above.to_string()]);
    assert_eq!(status("snp", &c, Some(&init), &r), "contraindicated");
}

#[test]
fn snp_debug_is_contraindicated() {
    let (c, init) = snp_claims();
    let r = snp_reference(&c, &init);
    let mut debug = c.clone();
    debug["policy"]["debug_allowed"] = json!(true);
    assert_eq!(status("snp", &debug, Some(&init), &r), "contraindicated");
}

#[test]
fn snp_rules_do_not_affirm_another_tee() {
    let (c, init) = snp_claims();
    let r = snp_reference(&c, &init);
    assert_eq!(status("tdx", &c, Some(&init), &r), "contraindicated");
}

/// The whole attestation service (verifier, policy input, reference values
/// registered through it, built-in policy) on the captured SNP report.
#[test]
fn snp_appraisal_follows_the_registered_initdata() {
    let store = tempfile::tempdir().unwrap();
    let mut verifiers = Verifiers::default();
    verifiers.insert(Box::new(snp_verifier()));
    let service = AttestationService::new(
        verifiers,
        std::sync::Arc::new(kbs::storage::FsStore::open(store.path()).unwrap()),
        "default",
    )
    .unwrap();
    let (c, init) = snp_claims();
    let ev = &snp_evidence();
    let ev = json!({
        "attestation_report": base64_std(&ev.report),
        "cert_chain": [{"cert_type": "VCEK", "data": ev.endorsement_key.clone().unwrap()}],
    });
    // The captured report's REPORT_DATA: 48 bytes of binding, zero-padded.
    let rd: [u8; 48] = hex::decode(c["report_data"].as_str().unwrap()).unwrap()[..48]
        .try_into()
        .unwrap();
    let appraise = |init: Option<&InitData>| {
        let expected = Expected {
            report_data: rd,
            init_data_digest: init.map(|i| i.digest.as_slice()),
        };
        service
            .appraise(
                kbs_types::Tee::Snp,
                &ev,
                &expected,
                init.map(init_data_input).as_ref(),
            )
            .map(|v| v.status)
    };
    let mut r: kbs::attestation::ReferenceValues =
        serde_json::from_value(snp_reference(&c, &init)).unwrap();
    r.remove(REFERENCE_VALUE);
    service.set_reference_values(r).unwrap();
    assert_eq!(appraise(Some(&init)).unwrap(), "contraindicated");
    let register = |digests: Value| {
        service
            .set_reference_values([(REFERENCE_VALUE.to_owned(), digests)].into())
            .unwrap()
    };
    register(registered(&other_init_data()));
    assert_eq!(appraise(Some(&init)).unwrap(), "contraindicated");
    register(json!([
        hex::encode(&other_init_data().digest),
        hex::encode(&init.digest)
    ]));
    assert_eq!(appraise(Some(&init)).unwrap(), "affirming");
    assert_eq!(appraise(None).unwrap(), "contraindicated");
    // The registered swap the evidence does not carry: refused before the policy.
    let swapped = other_init_data();
    assert!(matches!(
        appraise(Some(&swapped)),
        Err(kbs::attestation::AsError::Verifier(
            VerifierError::InitDataMismatch
        ))
    ));
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn tdx_reference(c: &Value, init: &InitData) -> Value {
    json!({
        "tdx_mrtd": [c["mrtd"]],
        "tdx_rtmr_1": [c["rtmr_1"]],
        "tdx_rtmr_2": [c["rtmr_2"]],
        REFERENCE_VALUE: registered(init),
    })
}

#[test]
fn tdx_sample_is_out_of_date_so_contraindicated_by_default() {
    let (c, init) = tdx_claims();
    assert_eq!(c["tcb_status"], "OutOfDate");
    assert_eq!(
        status("tdx", &c, Some(&init), &tdx_reference(&c, &init)),
        "contraindicated"
    );
}

#[test]
fn tdx_out_of_date_can_be_downgraded_to_warning_with_registered_initdata() {
    let (c, init) = tdx_claims();
    let mut r = tdx_reference(&c, &init);
    r["tdx_tcb_status_warning"] = json!(["OutOfDate"]);
    assert_eq!(status("tdx", &c, Some(&init), &r), "warning");
    // The warning needs the registered initdata too.
    r[REFERENCE_VALUE] = registered(&other_init_data());
    assert_eq!(status("tdx", &c, Some(&init), &r), "contraindicated");
}

#[test]
fn tdx_up_to_date_with_matching_measurements_and_initdata_is_affirmed() {
    let (mut c, init) = tdx_claims();
    c["tcb_status"] = json!("UpToDate");
    let r = tdx_reference(&c, &init);
    assert_eq!(status("tdx", &c, Some(&init), &r), "affirming");
    // Optional RTMR0 reference, when given, must match.
    let mut r0 = r.clone();
    r0["tdx_rtmr_0"] = json!(["11".repeat(48)]);
    assert_eq!(status("tdx", &c, Some(&init), &r0), "contraindicated");
}

#[test]
fn tdx_unregistered_or_missing_initdata_is_contraindicated() {
    let (mut c, init) = tdx_claims();
    c["tcb_status"] = json!("UpToDate");
    let mut r = tdx_reference(&c, &init);
    r[REFERENCE_VALUE] = registered(&other_init_data());
    assert_eq!(status("tdx", &c, Some(&init), &r), "contraindicated");
    let r = tdx_reference(&c, &init);
    let mut unbound = c.clone();
    unbound["init_data_bound"] = json!(false);
    assert_eq!(status("tdx", &unbound, None, &r), "contraindicated");
    assert_eq!(status("tdx", &unbound, Some(&init), &r), "contraindicated");
    let err = tdx_verifier()
        .verify_evidence(&tdx_evidence(), None, Some(&other_init_data().digest))
        .unwrap_err();
    assert!(matches!(err, VerifierError::InitDataMismatch), "{err}");
}

#[test]
fn tdx_debug_unknown_mrtd_or_unchecked_tcb_is_contraindicated() {
    let (mut c, init) = tdx_claims();
    c["tcb_status"] = json!("UpToDate");
    let r = tdx_reference(&c, &init);
    let mut debug = c.clone();
    debug["debug"] = json!(true);
    assert_eq!(status("tdx", &debug, Some(&init), &r), "contraindicated");
    let mut other = r.clone();
    other["tdx_mrtd"] = json!(["00".repeat(48)]);
    assert_eq!(status("tdx", &c, Some(&init), &other), "contraindicated");
    let mut unchecked = c.clone();
    unchecked["tcb_status"] = Value::Null;
    assert_eq!(
        status("tdx", &unchecked, Some(&init), &r),
        "contraindicated"
    );
}

#[test]
fn sample_tee_warns_only_with_registered_initdata() {
    let init = other_init_data();
    let claims = json!({"svn": "1", "report_data": "00", "init_data": hex::encode(&init.digest)});
    let r = json!({ REFERENCE_VALUE: registered(&init) });
    assert_eq!(status("sample", &claims, Some(&init), &r), "warning");
    assert_eq!(status("sample", &claims, None, &r), "contraindicated");
    let (_, snp_init) = snp_claims();
    let r = json!({ REFERENCE_VALUE: registered(&snp_init) });
    assert_eq!(
        status("sample", &claims, Some(&init), &r),
        "contraindicated"
    );
    assert_eq!(
        status("sample", &claims, Some(&init), &json!({})),
        "contraindicated"
    );
}
