use super::*;
use base64::Engine;
use std::sync::Mutex;
use x509_cert::crl::CertificateList;

const V4: &[u8] = include_bytes!("../../../testdata/tdx/quote-v4-with-collateral.dat");
const V5: &[u8] = include_bytes!("../../../testdata/tdx/quote-v5.dat");
const TCB_INFO: &[u8] = include_bytes!("../../../testdata/tdx/tcbInfo.json");
const QE_ID: &[u8] = include_bytes!("../../../testdata/tdx/enclaveIdentity.json");
const CCEL: &[u8] = include_bytes!("../../../testdata/eventlog/CCEL_data");
const CCEL_OVMF: &[u8] = include_bytes!("../../../testdata/eventlog/CCEL_data_ovmf");
const CCEL_PARSED: &str = include_str!("../../../testdata/eventlog/CCEL_data.parsed.json");
const CCEL_OVMF_PARSED: &str =
    include_str!("../../../testdata/eventlog/CCEL_data_ovmf.parsed.json");

/// Inside the collateral's validity (tcbInfo 2025-10-27..2025-11-26).
fn pinned() -> OffsetDateTime {
    time::macros::datetime!(2025-11-01 00:00 UTC)
}

fn testdata_dir() -> PathBuf {
    // Run-time manifest dir first (see verifier::cli tests).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("testdata/tdx")
}

fn verifier() -> TdxVerifier {
    TdxVerifier::new(TdxConfig {
        collateral_dir: Some(testdata_dir()),
        ..TdxConfig::default()
    })
    .unwrap()
    .at(pinned())
}

fn no_collateral_verifier() -> TdxVerifier {
    TdxVerifier::new(TdxConfig {
        require_collateral: false,
        ..TdxConfig::default()
    })
    .unwrap()
    .at(pinned())
}

fn ev(quote: &[u8]) -> TdxEvidence {
    TdxEvidence {
        quote: quote.to_vec(),
        cc_eventlog: None,
    }
}

fn report_data_of(quote: &[u8]) -> [u8; 64] {
    Quote::parse(quote).unwrap().report.report_data
}

fn tdx_err(r: Result<TdxClaims, VerifierError>) -> TdxError {
    match r {
        Err(VerifierError::Tdx(e)) => e,
        other => panic!("expected a TDX error, got {other:?}"),
    }
}

fn flipped(quote: &[u8], at: usize) -> Vec<u8> {
    let mut q = quote.to_vec();
    q[at] ^= 0x01;
    q
}

/// Offset of the signature data (after the signed header and body).
fn sig_offset(quote: &[u8]) -> usize {
    Quote::parse(quote).unwrap().signed.len() + 4
}

#[test]
fn v4_verifies_with_collateral_at_pinned_time() {
    let rd = report_data_of(V4);
    let c = verifier()
        .verify_evidence(&ev(V4), Some(&rd), None)
        .unwrap();
    assert_eq!(c.quote_version, 4);
    assert_eq!(c.fmspc, "00a06d080000");
    // PCK PCESVN is 11: below level 1 (13), meets level 2 (5), which is OutOfDate.
    assert_eq!(c.tcb_status.as_deref(), Some("OutOfDate"));
    assert_eq!(c.platform_tcb_status.as_deref(), Some("OutOfDate"));
    assert_eq!(c.qe_tcb_status.as_deref(), Some("UpToDate"));
    // TEE TCB SVN 05 03: module TDX_03 at SVN 5, UpToDate.
    assert_eq!(c.module_tcb_status.as_deref(), Some("UpToDate"));
    assert_eq!(c.tcb_evaluation_data_number, Some(17));
    assert!(!c.debug);
    assert_eq!(c.mrtd.len(), 96);
    assert_eq!(c.mrtd, hex::encode(Quote::parse(V4).unwrap().report.mr_td));
}

#[test]
fn v5_verifies_signatures_and_chain_without_collateral() {
    let rd = report_data_of(V5);
    let c = no_collateral_verifier()
        .verify_evidence(&ev(V5), Some(&rd), None)
        .unwrap();
    assert_eq!(c.quote_version, 5);
    assert_eq!(c.tcb_status, None);
}

#[test]
fn v5_is_refused_when_collateral_is_required_but_missing() {
    let v = TdxVerifier::new(TdxConfig::default()).unwrap().at(pinned());
    assert!(matches!(
        tdx_err(v.verify_evidence(&ev(V5), None, None)),
        TdxError::CollateralMissing(_)
    ));
}

#[test]
fn v5_is_not_covered_by_the_v4_bundle() {
    // The bundle is for FMSPC 00A06D080000, the v5 quote's PCK is for
    // 90C06F000000: the bundle does not apply and the quote is not accepted
    // unchecked.
    let rd = report_data_of(V5);
    let e = tdx_err(verifier().verify_evidence(&ev(V5), Some(&rd), None));
    assert!(
        matches!(e, TdxError::CollateralMissing(ref m) if m.contains("90C06F000000")),
        "{e}"
    );
}

#[test]
fn flipped_body_byte_is_a_quote_signature_error() {
    for q in [V4, V5] {
        // MRTD sits 136 bytes into the TD report body.
        let body = if q == V4 { 48 } else { 54 };
        let e = tdx_err(no_collateral_verifier().verify_evidence(
            &ev(&flipped(q, body + 136)),
            None,
            None,
        ));
        assert!(matches!(e, TdxError::QuoteSignature(_)), "{e}");
        let e = tdx_err(no_collateral_verifier().verify_evidence(&ev(&flipped(q, 2)), None, None));
        assert!(
            matches!(e, TdxError::QuoteSignature(_) | TdxError::Malformed(_)),
            "{e}"
        );
    }
}

#[test]
fn flipped_signature_byte_is_a_quote_signature_error() {
    for q in [V4, V5] {
        let e = tdx_err(no_collateral_verifier().verify_evidence(
            &ev(&flipped(q, sig_offset(q) + 10)),
            None,
            None,
        ));
        assert!(matches!(e, TdxError::QuoteSignature(_)), "{e}");
    }
}

#[test]
fn flipped_qe_report_byte_is_a_qe_signature_error() {
    // QE report follows signature (64), attestation key (64), cert type/size (6).
    let at = sig_offset(V4) + 64 + 64 + 6 + 100;
    let e = tdx_err(verifier().verify_evidence(&ev(&flipped(V4, at)), None, None));
    assert!(matches!(e, TdxError::QeReportSignature(_)), "{e}");
}

#[test]
fn swapped_attestation_key_breaks_the_qe_binding() {
    let at = sig_offset(V4) + 64 + 5;
    let e = tdx_err(verifier().verify_evidence(&ev(&flipped(V4, at)), None, None));
    assert!(matches!(e, TdxError::QeReportBinding), "{e}");
}

/// Replace the public key of the PCK leaf in the quote's PEM chain (same length).
fn tamper_pck_leaf(quote: &[u8]) -> Vec<u8> {
    let start = quote.windows(11).position(|w| w == b"-----BEGIN ").unwrap();
    let end = start
        + quote[start..]
            .windows(25)
            .position(|w| w == b"-----END CERTIFICATE-----")
            .unwrap()
        + 25;
    let pem = std::str::from_utf8(&quote[start..end]).unwrap();
    let (label, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
    let cert = Certificate::from_der(&der).unwrap();
    let key = pck::spki_sec1(&cert).to_vec();
    let pos = der.windows(key.len()).position(|w| w == key).unwrap();
    let mut der = der.clone();
    der[pos + 10] ^= 0x01;
    let new_pem = der::pem::encode_string(label, der::pem::LineEnding::LF, &der).unwrap();
    let new_pem = new_pem.trim_end_matches('\n');
    assert_eq!(
        new_pem.len(),
        end - start,
        "re-encoded PEM must keep its length"
    );
    let mut q = quote.to_vec();
    q[start..end].copy_from_slice(new_pem.as_bytes());
    q
}

use der::Decode;

#[test]
fn tampered_pck_certificate_is_a_chain_error() {
    let e = tdx_err(verifier().verify_evidence(&ev(&tamper_pck_leaf(V4)), None, None));
    assert!(matches!(e, TdxError::PckChain(_)), "{e}");
}

#[test]
fn foreign_root_is_a_chain_error() {
    // Verify the v4 chain against a root that is not Intel's: the TCB signing
    // certificate's issuer name matches nothing, so the chain must not verify.
    let chain = pck::parse_pem_chain(&Quote::parse(V4).unwrap().pck_chain_pem).unwrap();
    let other = pck::parse_pem_chain(pck::INTEL_TCB_SIGNING_PEM)
        .unwrap()
        .remove(0);
    let e = pck::verify_chain(&chain[..2], &other, pinned()).unwrap_err();
    assert!(matches!(e, TdxError::PckChain(_)), "{e}");
}

#[test]
fn wrong_report_data_is_rejected() {
    let mut rd = report_data_of(V4);
    rd[0] ^= 1;
    assert!(matches!(
        verifier().verify_evidence(&ev(V4), Some(&rd), None),
        Err(VerifierError::ReportDataMismatch)
    ));
}

#[test]
fn expired_collateral_is_rejected() {
    let v = TdxVerifier::new(TdxConfig {
        collateral_dir: Some(testdata_dir()),
        ..TdxConfig::default()
    })
    .unwrap()
    .at(time::macros::datetime!(2025-12-15 00:00 UTC));
    let e = tdx_err(v.verify_evidence(&ev(V4), None, None));
    assert!(matches!(e, TdxError::CollateralExpired { .. }), "{e}");
}

#[test]
fn expired_pck_certificate_is_rejected() {
    let v = no_collateral_verifier().at(time::macros::datetime!(2033-01-01 00:00 UTC));
    let e = tdx_err(v.verify_evidence(&ev(V4), None, None));
    assert!(matches!(e, TdxError::CertExpired { .. }), "{e}");
}

#[test]
fn tampered_collateral_is_a_collateral_signature_error() {
    let text = std::str::from_utf8(TCB_INFO)
        .unwrap()
        .replacen("\"isvsvn\":3", "\"isvsvn\":2", 1);
    let e = Collateral::from_parts(text.as_bytes(), QE_ID, None, &[]).unwrap_err();
    assert!(matches!(e, TdxError::CollateralSignature(_)), "{e}");
    let e = Collateral::from_parts(TCB_INFO, TCB_INFO, None, &[]).unwrap_err();
    assert!(
        matches!(e, TdxError::CollateralSignature(_) | TdxError::Malformed(_)),
        "{e}"
    );
}

#[test]
fn init_data_is_checked_against_mrconfigid() {
    let q = Quote::parse(V4).unwrap();
    let ok = verifier().verify_evidence(&ev(V4), None, Some(&q.report.mr_config_id));
    assert!(ok.unwrap().init_data_bound);
    let other = [0x42u8; 32];
    assert!(matches!(
        verifier().verify_evidence(&ev(V4), None, Some(&other)),
        Err(VerifierError::InitDataMismatch)
    ));
}

#[test]
fn verifier_trait_takes_json_evidence() {
    let q = Quote::parse(V4).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let json = serde_json::json!({"quote": b64.encode(V4)});
    let mut rd = [0u8; 48];
    rd.copy_from_slice(&q.report.report_data[..48]);
    let expected = Expected {
        report_data: rd,
        init_data_digest: None,
    };
    let r = verifier().verify(&json, &expected);
    if q.report.report_data[48..].iter().all(|b| *b == 0) {
        assert!(matches!(r, Ok(TeeClaims::Tdx(_))));
    } else {
        // The sample's report_data is not a zero-padded SHA-384: the trait path
        // (which pads) must refuse it.
        assert!(matches!(r, Err(VerifierError::ReportDataMismatch)));
    }
    assert!(matches!(
        verifier().verify(&serde_json::json!({"quote": 5}), &expected),
        Err(VerifierError::Tdx(TdxError::Malformed(_)))
    ));
}

#[derive(Debug)]
struct FilePccs(Mutex<Vec<String>>);

impl PccsClient for FilePccs {
    fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        self.0.lock().unwrap().push(url.to_string());
        if url.contains("/tcb?fmspc=") {
            Ok(TCB_INFO.to_vec())
        } else if url.ends_with("/qe/identity") {
            Ok(QE_ID.to_vec())
        } else {
            Err(format!("404 {url}"))
        }
    }
}

#[test]
fn pccs_collateral_is_fetched_once_and_cached() {
    let pccs = FilePccs(Default::default());
    let v = TdxVerifier::new(TdxConfig {
        pccs_url: Some("https://pccs.test:8081/".into()),
        ..TdxConfig::default()
    })
    .unwrap()
    .with_pccs(Box::new(pccs))
    .at(pinned());
    for _ in 0..3 {
        v.verify_evidence(&ev(V4), None, None).unwrap();
    }
    let (tcb, qe) = collateral::pccs_urls("https://pccs.test:8081/", &[0, 0xa0, 0x6d, 8, 0, 0]);
    assert_eq!(
        tcb,
        "https://pccs.test:8081/tdx/certification/v4/tcb?fmspc=00A06D080000"
    );
    assert_eq!(
        qe,
        "https://pccs.test:8081/tdx/certification/v4/qe/identity"
    );
}

fn check_against_parsed(log: &[u8], parsed: &str) {
    let events = ccel::parse(log).unwrap();
    let want: serde_json::Value = serde_json::from_str(parsed).unwrap();
    let want = want["uefi_event_logs"].as_array().unwrap();
    assert_eq!(events.len(), want.len());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut rtmr = [[0u8; 48]; 4];
    for (e, w) in events.iter().zip(want) {
        if let Some(i) = w.get("index") {
            assert_eq!(u64::from(e.index), i.as_u64().unwrap());
        }
        assert_eq!(e.type_name, w["type_name"].as_str().unwrap());
        let d = &w["digests"][0];
        assert_eq!(d["alg"], "SHA-384");
        assert_eq!(e.digests[0].digest, d["digest"].as_str().unwrap());
        assert_eq!(e.data, b64.decode(w["event"].as_str().unwrap()).unwrap());
        // Independent replay from the expected parse.
        let i = (w["index"].as_u64().unwrap_or(u64::from(e.index)) - 1) as usize;
        let mut h = sha2::Sha384::new();
        h.update(rtmr[i]);
        h.update(hex::decode(d["digest"].as_str().unwrap()).unwrap());
        rtmr[i].copy_from_slice(&h.finalize());
    }
    assert_eq!(ccel::replay(&events).unwrap(), rtmr);
}

#[test]
fn ccel_samples_parse_as_expected_and_replay() {
    check_against_parsed(CCEL, CCEL_PARSED);
    check_against_parsed(CCEL_OVMF, CCEL_OVMF_PARSED);
}

#[test]
fn ccel_that_does_not_match_the_rtmrs_is_rejected() {
    let e = tdx_err(verifier().verify_evidence(
        &TdxEvidence {
            quote: V4.to_vec(),
            cc_eventlog: Some(CCEL_OVMF.to_vec()),
        },
        None,
        None,
    ));
    assert!(matches!(e, TdxError::RtmrMismatch { index: 0 }), "{e}");
}

#[test]
fn truncated_ccel_is_an_event_log_error() {
    let e = ccel::parse(&CCEL_OVMF[..200]).unwrap_err();
    assert!(matches!(e, TdxError::EventLog(_)), "{e}");
    assert!(matches!(ccel::parse(&[0u8; 4]), Err(TdxError::EventLog(_))));
}

#[test]
fn garbage_quotes_are_malformed_not_panics() {
    for n in [0, 10, 47, 48, 100, 631, 632, 700, 1000] {
        let e = Quote::parse(&V4[..n.min(V4.len())]).unwrap_err();
        assert!(matches!(e, TdxError::Malformed(_)), "{n}: {e}");
    }
    let mut v3 = V4.to_vec();
    v3[0] = 3;
    assert!(matches!(
        Quote::parse(&v3),
        Err(TdxError::UnsupportedVersion(3))
    ));
}

#[test]
fn remembered_pck_chain_still_gets_validity_and_tampering_checked() {
    let v = no_collateral_verifier();
    v.verify_evidence(&ev(V4), None, None).unwrap();
    let e = tdx_err(v.verify_evidence(&ev(&tamper_pck_leaf(V4)), None, None));
    assert!(matches!(e, TdxError::PckChain(_)), "{e}");
    let v = v.at(time::macros::datetime!(2033-01-01 00:00 UTC));
    let e = tdx_err(v.verify_evidence(&ev(V4), None, None));
    assert!(matches!(e, TdxError::CertExpired { .. }), "{e}");
}

const FORGED_CRL: &[u8] = include_bytes!("../../../testdata/forged/pck_crl_revoking_v4_pck.der");

#[test]
fn revoked_pck_is_rejected_once_the_crl_is_trusted() {
    // The CRL names the v4 PCK's serial under its issuer's name; revocation
    // matching alone must catch it ...
    let crl = CertificateList::from_der(FORGED_CRL).unwrap();
    let chain = pck::parse_pem_chain(&Quote::parse(V4).unwrap().pck_chain_pem).unwrap();
    let e = pck::check_revocation(&chain, std::slice::from_ref(&crl)).unwrap_err();
    assert!(matches!(e, TdxError::CertRevoked(_)), "{e}");
}

#[test]
fn crl_not_signed_by_intel_is_refused_not_used() {
    // ... but this CRL is not signed by Intel's PCK Platform CA: the verifier
    // refuses the collateral instead of trusting it.
    let c = Collateral::from_parts(TCB_INFO, QE_ID, None, &[FORGED_CRL.to_vec()]).unwrap();
    let v = TdxVerifier::new(TdxConfig::default()).unwrap().at(pinned());
    v.add_collateral([0x00, 0xa0, 0x6d, 0x08, 0x00, 0x00], c);
    let e = tdx_err(v.verify_evidence(&ev(V4), None, None));
    assert!(matches!(e, TdxError::CollateralSignature(_)), "{e}");
}

#[test]
fn quote_from_a_non_intel_qe_is_refused() {
    // QE vendor ID is header bytes 12..28; it is part of the signed header, so
    // the check must come first to be seen.
    let mut q = V4.to_vec();
    q[12] ^= 0xff;
    let e = tdx_err(no_collateral_verifier().verify_evidence(&ev(&q), None, None));
    assert!(matches!(e, TdxError::QeIdentityMismatch(_)), "{e}");
}

#[test]
fn v5_sample_is_a_td15_quote_and_its_extra_fields_are_claims() {
    // Body type 3 (TD 1.5, 648 bytes): TEE_TCB_SVN2 and MRSERVICETD follow the
    // TD 1.0 fields, and the signature covers the body descriptor too.
    let parsed = Quote::parse(V5).unwrap();
    assert_eq!(parsed.signed.len(), 48 + 6 + 648);
    assert!(parsed.report.tee_tcb_svn2.is_some() && parsed.report.mr_service_td.is_some());
    let c = no_collateral_verifier()
        .verify_evidence(&ev(V5), None, None)
        .unwrap();
    assert_eq!(c.tee_tcb_svn2.as_deref().map(str::len), Some(32));
    assert_eq!(c.mr_service_td.as_deref().map(str::len), Some(96));
    // A TD 1.5 body cut to the TD 1.0 size no longer parses as a quote.
    let mut q = V5.to_vec();
    q[48] = 2;
    assert!(Quote::parse(&q).is_err());
}

#[test]
fn collateral_signed_under_a_foreign_signing_chain_is_refused_at_load() {
    // A signing "chain" that does not lead to Intel's root: the PCK leaf and
    // its CA from the quote are Intel's, but not a TCB signing certificate.
    let pem = Quote::parse(V4).unwrap().pck_chain_pem;
    let e = Collateral::from_parts(TCB_INFO, QE_ID, Some(&pem), &[]).unwrap_err();
    assert!(matches!(e, TdxError::PckChain(_)), "{e}");
    // Intel's own root as the "signing chain": chains, but is not the signer.
    let root_pem = der::pem::encode_string(
        "CERTIFICATE",
        der::pem::LineEnding::LF,
        pck::INTEL_ROOT_CA_DER,
    )
    .unwrap();
    let e = Collateral::from_parts(TCB_INFO, QE_ID, Some(root_pem.as_bytes()), &[]).unwrap_err();
    assert!(matches!(e, TdxError::PckChain(_)), "{e}");
    // Right name, self-signed: must not chain to Intel's root.
    let forged = include_bytes!("../../../testdata/forged/tcb_signing_self_signed.pem");
    let e = Collateral::from_parts(TCB_INFO, QE_ID, Some(forged), &[]).unwrap_err();
    assert!(
        matches!(e, TdxError::PckChain(ref m) if m.contains("not issued by")),
        "{e}"
    );
}
