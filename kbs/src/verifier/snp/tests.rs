use super::*;
use std::sync::Mutex;

const REPORT: &[u8] = include_bytes!("../../../testdata/snp/report.bin");
const VCEK: &[u8] = include_bytes!("../../../testdata/snp/vcek.der");
const VCEK_BAD_LEGACY: &[u8] = include_bytes!("../../../testdata/snp/vcek-invalid-legacy.der");
const VCEK_BAD_NEW: &[u8] = include_bytes!("../../../testdata/snp/vcek-invalid-new.der");
const EVIDENCE_JSON: &str = include_str!("../../../testdata/snp/evidence-guest-components.json");

fn verifier() -> SnpVerifier {
    SnpVerifier::new(SnpConfig::default())
        .unwrap()
        .at(time::macros::datetime!(2025-06-01 00:00 UTC))
}

fn ev(report: &[u8], vcek: &[u8]) -> SnpEvidence {
    SnpEvidence {
        report: report.to_vec(),
        endorsement_key: Some(vcek.to_vec()),
    }
}

fn own_report_data(report: &[u8]) -> [u8; 64] {
    report[0x50..0x90].try_into().unwrap()
}

fn snp_err(r: Result<SnpClaims, VerifierError>) -> SnpError {
    match r {
        Err(VerifierError::Snp(e)) => e,
        other => panic!("expected an SNP error, got {other:?}"),
    }
}

fn json_evidence() -> serde_json::Value {
    serde_json::from_str(EVIDENCE_JSON).unwrap()
}

#[test]
fn report_bin_verifies_with_its_vcek() {
    let rd = own_report_data(REPORT);
    let c = verifier()
        .verify_evidence(&ev(REPORT, VCEK), Some(&rd), None)
        .unwrap();
    assert_eq!(c.product, Product::Milan);
    assert_eq!(c.signing_key, SigningKey::Vcek);
    assert_eq!(c.measurement, hex::encode(&REPORT[0x90..0xc0]));
    assert_eq!(c.report_data, hex::encode(rd));
    assert!(!c.policy.debug_allowed);
    assert_eq!(c.vmpl, 0);
}

#[test]
fn guest_components_json_verifies_with_the_vcek_it_carries() {
    let ev = SnpEvidence::from_json(&json_evidence()).unwrap();
    let rd = own_report_data(&ev.report);
    let c = verifier().verify_evidence(&ev, Some(&rd), None).unwrap();
    assert_eq!(c.product, Product::Genoa);
    assert_eq!(c.reported_tcb.snp, 23);
    assert_eq!(c.reported_tcb.microcode, 25);
    assert_eq!(c.firmware_version, "1.55.40");
}

#[test]
fn verifier_trait_pads_report_data_and_rejects_other_sessions() {
    // report.bin's REPORT_DATA is 32 bytes followed by zeros, so it is what a
    // zero-padded 48-byte binding would look like.
    let b64 = base64::engine::general_purpose::STANDARD;
    let json = serde_json::json!({
        "attestation_report": b64.encode(REPORT),
        "cert_chain": [{"cert_type": "VCEK", "data": VCEK}],
    });
    let mut rd = [0u8; 48];
    rd.copy_from_slice(&REPORT[0x50..0x80]);
    let exp = Expected {
        report_data: rd,
        init_data_digest: None,
    };
    assert!(matches!(
        verifier().verify(&json, &exp),
        Ok(TeeClaims::Snp(_))
    ));
    rd[47] ^= 1;
    let exp = Expected {
        report_data: rd,
        init_data_digest: None,
    };
    assert!(matches!(
        verifier().verify(&json, &exp),
        Err(VerifierError::ReportDataMismatch)
    ));
}

#[test]
fn flipped_body_byte_is_a_signature_error() {
    for at in [0x90, 0x1a0, 0x29f] {
        let mut r = REPORT.to_vec();
        r[at] ^= 0x01;
        let e = snp_err(verifier().verify_evidence(&ev(&r, VCEK), None, None));
        assert!(matches!(e, SnpError::ReportSignature(_)), "{at:#x}: {e}");
    }
}

#[test]
fn flipped_signature_byte_is_a_signature_error() {
    for at in [SIGNED_LEN, SIGNED_LEN + 72 + 3] {
        let mut r = REPORT.to_vec();
        r[at] ^= 0x01;
        let e = snp_err(verifier().verify_evidence(&ev(&r, VCEK), None, None));
        assert!(matches!(e, SnpError::ReportSignature(_)), "{at:#x}: {e}");
    }
}

#[test]
fn invalid_vceks_are_rejected() {
    for bad in [VCEK_BAD_LEGACY, VCEK_BAD_NEW] {
        let e = snp_err(verifier().verify_evidence(&ev(REPORT, bad), None, None));
        assert!(
            matches!(
                e,
                SnpError::ChainInvalid { .. } | SnpError::ReportSignature(_)
            ),
            "{e}"
        );
    }
}

#[test]
fn the_invalid_vceks_fail_at_the_chain() {
    // They are not signed by any AMD ASK: the chain check, not the report
    // signature, must catch them.
    for bad in [VCEK_BAD_LEGACY, VCEK_BAD_NEW] {
        let e = snp_err(verifier().verify_evidence(&ev(REPORT, bad), None, None));
        assert!(matches!(e, SnpError::ChainInvalid { .. }), "{e}");
    }
}

#[test]
fn vcek_of_another_chip_is_a_signature_error() {
    // A genuine AMD VCEK (Genoa, from the JSON evidence) for the Milan report.
    let other = SnpEvidence::from_json(&json_evidence())
        .unwrap()
        .endorsement_key
        .unwrap();
    let e = snp_err(verifier().verify_evidence(&ev(REPORT, &other), None, None));
    assert!(matches!(e, SnpError::ReportSignature(_)), "{e}");
}

#[test]
fn garbage_certificate_is_a_parse_error() {
    let e = snp_err(verifier().verify_evidence(&ev(REPORT, b"not a certificate"), None, None));
    assert!(matches!(e, SnpError::CertParse(_)), "{e}");
}

#[test]
fn wrong_report_data_is_rejected() {
    let mut rd = own_report_data(REPORT);
    rd[0] ^= 0x80;
    assert!(matches!(
        verifier().verify_evidence(&ev(REPORT, VCEK), Some(&rd), None),
        Err(VerifierError::ReportDataMismatch)
    ));
}

#[test]
fn expired_vcek_is_rejected() {
    // The VCEK is valid 2023-01-24..2030-01-24.
    for at in [
        time::macros::datetime!(2030-02-01 00:00 UTC),
        time::macros::datetime!(2022-01-01 00:00 UTC),
    ] {
        let v = SnpVerifier::new(SnpConfig::default()).unwrap().at(at);
        let e = snp_err(v.verify_evidence(&ev(REPORT, VCEK), None, None));
        assert!(matches!(e, SnpError::CertExpired { .. }), "{e}");
    }
}

#[test]
fn host_data_binds_the_init_data_digest() {
    // The sample's HOST_DATA is all zero: a zero digest matches (padded or
    // truncated), anything else does not.
    let v = verifier();
    let c = v
        .verify_evidence(&ev(REPORT, VCEK), None, Some(&[0u8; 48]))
        .unwrap();
    assert!(c.init_data_bound);
    assert!(matches!(
        v.verify_evidence(&ev(REPORT, VCEK), None, Some(&[1u8; 32])),
        Err(VerifierError::InitDataMismatch)
    ));
}

#[test]
fn report_without_any_vcek_needs_one() {
    let e = snp_err(verifier().verify_evidence(
        &SnpEvidence {
            report: REPORT.to_vec(),
            endorsement_key: None,
        },
        None,
        None,
    ));
    assert!(matches!(e, SnpError::NoEndorsementKey(_)), "{e}");
}

#[test]
fn vcek_is_found_in_the_cache_dir() {
    let dir = std::env::temp_dir().join(format!("snp-vcek-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = AttestationReport::from_bytes(REPORT).unwrap();
    std::fs::write(
        dir.join(cache_file_name(&report.chip_id, &report.reported_tcb)),
        VCEK,
    )
    .unwrap();
    let v = SnpVerifier::new(SnpConfig {
        vcek_cache_dir: Some(dir.clone()),
        ..SnpConfig::default()
    })
    .unwrap()
    .at(time::macros::datetime!(2025-06-01 00:00 UTC));
    let r = v.verify_evidence(
        &SnpEvidence {
            report: REPORT.to_vec(),
            endorsement_key: None,
        },
        None,
        None,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(r.unwrap().product, Product::Milan);
}

#[derive(Debug)]
struct FakeKds(Mutex<Vec<String>>, Vec<u8>);

impl KdsClient for FakeKds {
    fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        self.0.lock().unwrap().push(url.to_string());
        Ok(self.1.clone())
    }
}

#[test]
fn vcek_is_fetched_from_kds_only_when_configured() {
    let json = json_evidence();
    let mut ev = SnpEvidence::from_json(&json).unwrap();
    let vcek = ev.endorsement_key.take().unwrap();
    let report = AttestationReport::from_bytes(&ev.report).unwrap();
    // Not configured: no fetch.
    let e = snp_err(verifier().verify_evidence(&ev, None, None));
    assert!(matches!(e, SnpError::NoEndorsementKey(_)));
    let kds = std::sync::Arc::new(FakeKds(Default::default(), vcek));
    #[derive(Debug)]
    struct Shared(std::sync::Arc<FakeKds>);
    impl KdsClient for Shared {
        fn get(&self, url: &str) -> Result<Vec<u8>, String> {
            self.0.get(url)
        }
    }
    let v = SnpVerifier::new(SnpConfig {
        kds_url: Some("https://kdsintf.amd.com".into()),
        ..SnpConfig::default()
    })
    .unwrap()
    .with_kds(Box::new(Shared(kds.clone())))
    .at(time::macros::datetime!(2025-06-01 00:00 UTC));
    v.verify_evidence(&ev, None, None).unwrap();
    let urls = kds.0.lock().unwrap().clone();
    assert_eq!(
        urls,
        vec![format!(
            "https://kdsintf.amd.com/vcek/v1/Genoa/{}?blSPL=10&teeSPL=0&snpSPL=23&ucodeSPL=25",
            hex::encode(report.chip_id)
        )]
    );
}

#[test]
fn turin_kds_url_uses_short_hwid_and_fmc() {
    let mut chip = [0u8; 64];
    chip[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let tcb = sev::firmware::host::TcbVersion::new(Some(1), 2, 3, 4, 5);
    assert_eq!(
        certs::kds_vcek_url("https://kds/", Product::Turin, &chip, &tcb),
        "https://kds/vcek/v1/Turin/0102030405060708?blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=5&fmcSPL=1"
    );
}

#[test]
fn vcek_tcb_extensions_match_the_report() {
    let ek = EndorsementKey::from_der(VCEK).unwrap();
    let (tcb, hwid) = certs::cert_tcb_and_hwid(&ek.x509).unwrap();
    let report = AttestationReport::from_bytes(REPORT).unwrap();
    assert_eq!(tcb.bootloader, Some(report.reported_tcb.bootloader));
    assert_eq!(tcb.snp, Some(report.reported_tcb.snp));
    assert_eq!(tcb.microcode, Some(report.reported_tcb.microcode));
    assert_eq!(hwid.as_deref(), Some(&report.chip_id[..]));
    // A VCEK for another TCB is refused.
    let mut other = report.reported_tcb;
    other.microcode = other.microcode.wrapping_add(1);
    assert!(matches!(
        check_tcb(&other, &tcb, Product::Milan),
        Err(SnpError::TcbMismatch {
            field: "microcode",
            ..
        })
    ));
}

#[test]
fn truncated_or_foreign_input_is_malformed() {
    let e = snp_err(verifier().verify_evidence(&ev(&REPORT[..1000], VCEK), None, None));
    assert!(matches!(e, SnpError::Malformed(_)));
    assert!(matches!(
        SnpEvidence::from_bytes(b"{\"quote\":1}"),
        Err(SnpError::Malformed(_))
    ));
    assert!(matches!(
        SnpEvidence::from_bytes(b"\x00\x01"),
        Err(SnpError::Malformed(_))
    ));
}

#[test]
fn builtin_roots_are_self_consistent_for_every_product() {
    for p in Product::ALL {
        AmdRoots::builtin(p).unwrap();
    }
}

#[test]
fn remembered_vcek_still_gets_its_validity_checked_and_others_their_chain() {
    let v = verifier();
    v.verify_evidence(&ev(REPORT, VCEK), None, None).unwrap();
    // Same verifier (same cache), later than the VCEK's notAfter.
    let v = v.at(time::macros::datetime!(2031-01-01 00:00 UTC));
    let e = snp_err(v.verify_evidence(&ev(REPORT, VCEK), None, None));
    assert!(matches!(e, SnpError::CertExpired { .. }), "{e}");
    let v = v.at(time::macros::datetime!(2025-06-01 00:00 UTC));
    let e = snp_err(v.verify_evidence(&ev(REPORT, VCEK_BAD_NEW), None, None));
    assert!(matches!(e, SnpError::ChainInvalid { .. }), "{e}");
    v.verify_evidence(&ev(REPORT, VCEK), None, None).unwrap();
}

#[test]
fn verifiers_from_config_register_snp_and_tdx() {
    use crate::verifier::{VerifierConfig, Verifiers};
    let cfg: VerifierConfig = serde_json::from_value(serde_json::json!({
        "snp": {"max_vmpl": 1, "vcek_cache_dir": "/var/cache/vcek"},
        "tdx": {"collateral_dir": "/etc/kbs/tdx-collateral", "allow_debug": false},
    }))
    .unwrap();
    assert_eq!(cfg.snp.max_vmpl, 1);
    let v = Verifiers::from_config(&cfg).unwrap();
    assert_eq!(v.get(Tee::Snp).unwrap().tee(), Tee::Snp);
    assert_eq!(v.get(Tee::Tdx).unwrap().tee(), Tee::Tdx);
    // Typos in security settings are errors, not silently ignored.
    assert!(serde_json::from_value::<VerifierConfig>(
        serde_json::json!({"snp": {"allow_debugging": true}})
    )
    .is_err());
    let off: VerifierConfig =
        serde_json::from_value(serde_json::json!({"snp": {"enabled": false}})).unwrap();
    assert!(Verifiers::from_config(&off).unwrap().get(Tee::Snp).is_err());
}
