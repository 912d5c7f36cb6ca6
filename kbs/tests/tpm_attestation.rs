//! TPM attestation end to end without HTTP: a real swtpm quotes through our
//! attester, the KBS verifier checks the quote, and the KBS's built-in default
//! attestation policy (`policies/attestation/`, on the KBS's policy engine) judges
//! the claims against reference values taken from the swtpm itself and the
//! registered initdata.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

use attester::tpm::swtpm::Swtpm;
use attester::tpm::{
    AkAlgorithm, AkConfig, EsapiTpm, QualifyingData, TpmAttester, TpmAttesterConfig, TpmDevice,
};
use attester::Attester;
use base64::Engine;
use coco_jose::binding::InitData;
use coco_jose::initdata::REFERENCE_VALUE;
use kbs::verifier::tpm::{TpmClaims, TpmConfig, TpmError, TpmVerifier};
use kbs::verifier::{Expected, TeeClaims, Verifier, VerifierError};
use sha2::{Digest, Sha256, Sha384};

#[path = "common/default_policy.rs"]
mod default_policy;
use default_policy::status;

const SAMPLE: &str = include_str!("../testdata/tpm/evidence.json");

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// report_data for a session: SHA-384 of the runtime data's canonical JSON
/// (keys sorted, no whitespace: RFC 8785 for these ASCII values).
fn report_data(nonce: &[u8]) -> [u8; 48] {
    let runtime = format!(
        r#"{{"nonce":"{}","tee-pubkey":{{"crv":"P-256","kty":"EC","x":"AAAA","y":"BBBB"}}}}"#,
        b64().encode(nonce)
    );
    Sha384::digest(runtime.as_bytes()).into()
}

/// The initdata the pod ships (its digest is what PCR 8 carries).
const INIT_DATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault ExecProcessRequest := false\\n\"\n";

fn init_data(toml: &str) -> InitData {
    coco_jose::binding::parse_init_data("toml", toml).unwrap()
}

fn policy_status(
    claims: &TpmClaims,
    tee: &str,
    init: Option<&InitData>,
    reference: &serde_json::Value,
) -> String {
    status(tee, &serde_json::to_value(claims).unwrap(), init, reference)
}

/// Reference values as an operator registers them at provisioning time: the AK,
/// PCRs and the pod's initdata.
fn references(ak_public_b64: &str, pcrs: &[(u8, [u8; 32])]) -> serde_json::Value {
    let ak = hex::encode(Sha256::digest(b64().decode(ak_public_b64).unwrap()));
    let mut r = serde_json::json!({
        "tpm_ak": [ak],
        REFERENCE_VALUE: [hex::encode(init_data(INIT_DATA).digest)],
    });
    for (i, v) in pcrs {
        r[format!("tpm_pcr{i:02}")] = serde_json::json!([hex::encode(v)]);
    }
    r
}

fn verify(
    ev: &serde_json::Value,
    rd: [u8; 48],
    init: Option<&[u8]>,
) -> Result<TpmClaims, VerifierError> {
    let expected = Expected {
        report_data: rd,
        init_data_digest: init,
    };
    match TpmVerifier::new(TpmConfig {
        enabled: true,
        require_ak_template: true,
    })
    .verify(ev, &expected)?
    {
        TeeClaims::Tpm(c) => Ok(c),
        #[allow(unreachable_patterns)]
        other => panic!("unexpected claims {other:?}"),
    }
}

fn no_log() -> TpmAttesterConfig {
    TpmAttesterConfig {
        event_log: None,
        ..Default::default()
    }
}

fn round_trip(algorithm: AkAlgorithm) {
    let tpm = Swtpm::start().unwrap();
    let ak = AkConfig {
        algorithm,
        ..Default::default()
    };
    let device = EsapiTpm::new(&tpm.tcti(), ak).unwrap();
    // Some "boot" measurements, so the PCR references are not all zero.
    device
        .extend_pcr(0, &Sha256::digest(b"firmware").into())
        .unwrap();
    device
        .extend_pcr(4, &Sha256::digest(b"kernel").into())
        .unwrap();
    let attester = TpmAttester::with_tcti(&tpm.tcti(), ak, no_log()).unwrap();
    // The guest binds its initdata into PCR 8 before anything asks for evidence.
    let init = init_data(INIT_DATA);
    attester.bind_init_data(&init.digest).unwrap();

    // Provisioning: record the AK and the PCRs the platform has now.
    let provisioning = attester.evidence(&[0; 48]).unwrap();
    let pcr_list: Vec<u8> = (0..16).collect();
    let pcrs: Vec<(u8, [u8; 32])> = pcr_list
        .iter()
        .copied()
        .zip(device.read_pcrs(&pcr_list).unwrap())
        .collect();
    let reference = references(provisioning["ak_public"].as_str().unwrap(), &pcrs);

    // A session: nonce → report_data → quote → verify → policy.
    let rd = report_data(b"session nonce 1");
    let ev = attester.evidence(&rd).unwrap();
    let claims = verify(&ev, rd, Some(&init.digest)).unwrap();
    assert!(claims.ak_template_checked);
    assert!(claims.init_data_bound);
    assert_eq!(claims.ak_hierarchy.as_deref(), Some("endorsement"));
    assert_eq!(claims.report_data, hex::encode(&rd[..32]));
    assert_eq!(claims.pcrs.len(), 16);
    let init = Some(&init);
    assert_eq!(policy_status(&claims, "tpm", init, &reference), "affirming");
    assert_eq!(
        policy_status(&claims, "snp", init, &reference),
        "contraindicated"
    );
    // The same quote without the initdata sent: nothing pins the pod's policy.
    let unsent = verify(&ev, rd, None).unwrap();
    assert_eq!(
        policy_status(&unsent, "tpm", None, &reference),
        "contraindicated"
    );
    // Registered workloads that are not this one.
    let mut others = reference.clone();
    others[REFERENCE_VALUE] = serde_json::json!([hex::encode(
        init_data(&INIT_DATA.replace("false", "true")).digest
    )]);
    assert_eq!(
        policy_status(&claims, "tpm", init, &others),
        "contraindicated"
    );

    // The AK template as TPM2B_PUBLIC (tpm2-tools' format) verifies the same.
    let mut tpm2b = ev.clone();
    let t = b64().decode(ev["ak_tpm_public"].as_str().unwrap()).unwrap();
    let t = [(t.len() as u16).to_be_bytes().as_slice(), &t].concat();
    tpm2b["ak_tpm_public"] = b64().encode(t).into();
    assert_eq!(
        verify(&tpm2b, rd, init.map(|i| i.digest.as_slice())).unwrap(),
        claims
    );

    // Evidence of this session presented in another one.
    let err = verify(&ev, report_data(b"session nonce 2"), None).unwrap_err();
    assert!(matches!(err, VerifierError::ReportDataMismatch), "{err}");

    // Something measured after the references were taken.
    device
        .extend_pcr(5, &Sha256::digest(b"rootkit").into())
        .unwrap();
    let rd = report_data(b"session nonce 3");
    let ev = attester.evidence(&rd).unwrap();
    let claims = verify(&ev, rd, init.map(|i| i.digest.as_slice())).unwrap();
    assert_eq!(
        policy_status(&claims, "tpm", init, &reference),
        "contraindicated"
    );
    // ... and accepted again once the operator registers the new value.
    let mut updated = reference.clone();
    updated["tpm_pcr05"]
        .as_array_mut()
        .unwrap()
        .push(claims.pcrs["05"].clone().into());
    assert_eq!(policy_status(&claims, "tpm", init, &updated), "affirming");
}

#[test]
fn swtpm_round_trip_rsa_ak() {
    round_trip(AkAlgorithm::Rsa2048);
}

#[test]
fn swtpm_round_trip_ecc_ak() {
    round_trip(AkAlgorithm::EccP256);
}

#[test]
fn swtpm_trustee_report_data_layout_verifies() {
    let tpm = Swtpm::start().unwrap();
    let config = TpmAttesterConfig {
        qualifying_data: QualifyingData::Padded64,
        ..no_log()
    };
    let attester = TpmAttester::with_tcti(&tpm.tcti(), AkConfig::default(), config).unwrap();
    let rd = report_data(b"trustee layout");
    let claims = verify(&attester.evidence(&rd).unwrap(), rd, None).unwrap();
    assert_eq!(claims.report_data.len(), 128);
    let err = verify(&attester.evidence(&rd).unwrap(), report_data(b"x"), None).unwrap_err();
    assert!(matches!(err, VerifierError::ReportDataMismatch), "{err}");
}

#[test]
fn swtpm_initdata_in_pcr8_is_verified() {
    let tpm = Swtpm::start().unwrap();
    let attester = TpmAttester::with_tcti(&tpm.tcti(), AkConfig::default(), no_log()).unwrap();
    let initdata = Sha256::digest(b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n");
    attester.bind_init_data(&initdata).unwrap();
    let rd = report_data(b"initdata session");
    let ev = attester.evidence(&rd).unwrap();
    let claims = verify(&ev, rd, Some(&initdata)).unwrap();
    assert!(claims.init_data_bound);
    assert_eq!(claims.init_data, Some(hex::encode(initdata)));
    let err = verify(&ev, rd, Some(&Sha256::digest(b"other initdata"))).unwrap_err();
    assert!(matches!(err, VerifierError::InitDataMismatch), "{err}");
    // Without initdata in the request the quote still verifies, unbound.
    assert!(!verify(&ev, rd, None).unwrap().init_data_bound);
}

#[test]
fn swtpm_evidence_with_another_tpms_ak_is_rejected() {
    let a = Swtpm::start().unwrap();
    let b = Swtpm::start().unwrap();
    let ak = AkConfig::default();
    let ev_a = TpmAttester::with_tcti(&a.tcti(), ak, no_log()).unwrap();
    let ev_b = TpmAttester::with_tcti(&b.tcti(), ak, no_log()).unwrap();
    let rd = report_data(b"swap");
    let mut ev = ev_a.evidence(&rd).unwrap();
    let other = ev_b.evidence(&rd).unwrap();
    // Each swtpm has its own endorsement seed, so its own AK.
    assert_ne!(ev["ak_public"], other["ak_public"]);
    ev["ak_public"] = other["ak_public"].clone();
    ev["ak_tpm_public"] = other["ak_tpm_public"].clone();
    let err = verify(&ev, rd, None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::SignerNameMismatch { .. })),
        "{err}"
    );
}

#[test]
fn policy_on_the_trustee_sample() {
    let ev: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
    let msg = b64()
        .decode(ev["tpm_quote"]["message"].as_str().unwrap())
        .unwrap();
    let attest = kbs::verifier::tpm::wire::parse_quote_attest(&msg).unwrap();
    let rd: [u8; 48] = attest.extra_data[..48].try_into().unwrap();
    let mut claims = TpmVerifier::default()
        .verify_evidence(
            &serde_json::from_value(ev.clone()).unwrap(),
            &Expected {
                report_data: rd,
                init_data_digest: None,
            },
        )
        .unwrap();
    let zero = [0u8; 32];
    let ak = ev["ak_public"].as_str().unwrap();
    let good = references(ak, &[(0, zero), (7, zero), (17, [0xff; 32])]);
    // The sample was taken without initdata: never affirmed as it is.
    assert_eq!(
        policy_status(&claims, "tpm", None, &good),
        "contraindicated"
    );
    // Its AK and PCR rules are exercised below as if the initdata had been bound
    // (the swtpm tests above bind it for real).
    let init = init_data(INIT_DATA);
    claims.init_data = Some(hex::encode(&init.digest));
    claims.init_data_bound = true;
    let bound_status =
        |c: &TpmClaims, tee: &str, r: &serde_json::Value| policy_status(c, tee, Some(&init), r);
    assert_eq!(bound_status(&claims, "tpm", &good), "affirming");
    // AK alone, no PCR references: trusted key, nothing about the boot required.
    assert_eq!(
        bound_status(&claims, "tpm", &references(ak, &[])),
        "affirming"
    );
    // Reference values may be upper case hex.
    let mut upper = good.clone();
    upper["tpm_ak"][0] = upper["tpm_ak"][0].as_str().unwrap().to_uppercase().into();
    assert_eq!(bound_status(&claims, "tpm", &upper), "affirming");
    // Unknown AK.
    let mut bad_ak = good.clone();
    bad_ak["tpm_ak"] = serde_json::json!(["00".repeat(32)]);
    assert_eq!(bound_status(&claims, "tpm", &bad_ak), "contraindicated");
    // No AK reference at all.
    let mut no_ak = good.clone();
    no_ak.as_object_mut().unwrap().remove("tpm_ak");
    assert_eq!(bound_status(&claims, "tpm", &no_ak), "contraindicated");
    // A PCR that does not match any accepted value.
    let mut bad_pcr = good.clone();
    bad_pcr["tpm_pcr07"] = serde_json::json!(["11".repeat(32), "22".repeat(32)]);
    assert_eq!(bound_status(&claims, "tpm", &bad_pcr), "contraindicated");
    // A reference for a PCR the quote does not cover fails closed.
    let mut uncovered = good.clone();
    uncovered["tpm_pcr30"] = serde_json::json!(["00".repeat(32)]);
    assert_eq!(bound_status(&claims, "tpm", &uncovered), "contraindicated");
    // References of other TEEs are ignored.
    let mut mixed = good.clone();
    mixed["snp_launch_measurement"] = serde_json::json!(["ab"]);
    assert_eq!(bound_status(&claims, "tpm", &mixed), "affirming");
}

/// A crypto-agile TCG event log (SHA-256 only) with the given events, as
/// firmware writes it: little-endian, Spec ID header first.
fn tcg_log(events: &[(u32, u32, [u8; 32], &[u8])]) -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend(0u32.to_le_bytes()); // platform class
    spec.extend([0, 2, 0, 2]); // version 2.0 errata 0, uintn 8 bytes
    spec.extend(1u32.to_le_bytes());
    spec.extend(0x000bu16.to_le_bytes());
    spec.extend(32u16.to_le_bytes());
    spec.push(0); // no vendor info
    let mut log = Vec::new();
    log.extend(0u32.to_le_bytes());
    log.extend(3u32.to_le_bytes()); // EV_NO_ACTION
    log.extend([0u8; 20]);
    log.extend((spec.len() as u32).to_le_bytes());
    log.extend(spec);
    for (pcr, ty, digest, data) in events {
        log.extend(pcr.to_le_bytes());
        log.extend(ty.to_le_bytes());
        log.extend(1u32.to_le_bytes());
        log.extend(0x000bu16.to_le_bytes());
        log.extend(digest);
        log.extend((data.len() as u32).to_le_bytes());
        log.extend(*data);
    }
    log
}

#[test]
fn swtpm_event_log_is_replayed_against_the_quote() {
    let tpm = Swtpm::start().unwrap();
    let device = EsapiTpm::new(&tpm.tcti(), AkConfig::default()).unwrap();
    let measured: [(u32, u32, [u8; 32], &[u8]); 5] = [
        (0, 3, [0; 32], b"StartupLocality\0\0"), // EV_NO_ACTION, locality 0
        (
            0,
            0x8000_0008,
            Sha256::digest(b"OVMF").into(),
            b"firmware volume",
        ),
        (4, 0x8000_000d, Sha256::digest(b"vmlinuz").into(), b"kernel"),
        (9, 0x0d, Sha256::digest(b"console=ttyS0").into(), b"cmdline"),
        (4, 0x0d, Sha256::digest(b"initrd").into(), b"initrd"),
    ];
    for (pcr, ty, digest, _) in &measured {
        if *ty != 3 {
            device.extend_pcr(*pcr as u8, digest).unwrap();
        }
    }
    // A measurement into a PCR the quote does not cover (16+): not checkable.
    let extra = (20, 0x0d, Sha256::digest(b"debug").into(), b"x".as_slice());
    let mut events = measured.to_vec();
    events.push(extra);
    let dir = std::env::temp_dir().join(format!("tpm-evlog-kbs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("binary_bios_measurements");
    std::fs::write(&path, tcg_log(&events)).unwrap();
    let attester = TpmAttester::with_tcti(
        &tpm.tcti(),
        AkConfig::default(),
        TpmAttesterConfig {
            event_log: Some(path.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let rd = report_data(b"event log");
    let ev = attester.evidence(&rd).unwrap();
    let claims = verify(&ev, rd, None).unwrap();
    let log = claims.event_log.unwrap();
    assert_eq!(log.events, 6);
    assert_eq!(log.replayed_pcrs, ["00", "04", "09"]);

    // A log that claims another kernel.
    events[2].2 = Sha256::digest(b"other vmlinuz").into();
    std::fs::write(&path, tcg_log(&events)).unwrap();
    let ev = attester.evidence(&rd).unwrap();
    let err = verify(&ev, rd, None).unwrap_err();
    assert!(
        matches!(
            err,
            VerifierError::Tpm(TpmError::EventLogMismatch { pcr: 4 })
        ),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
