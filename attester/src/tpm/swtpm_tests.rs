//! The real attester against a real TPM (`swtpm`, started per test).

use super::swtpm::Swtpm;
use super::*;
use tss_esapi::structures::{Attest, AttestInfo, Public};
use tss_esapi::traits::UnMarshall;

fn b64d(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn config() -> TpmAttesterConfig {
    TpmAttesterConfig {
        event_log: None,
        ..Default::default()
    }
}

fn quote_and_check(algorithm: AkAlgorithm) {
    let tpm = Swtpm::start().unwrap();
    let ak = AkConfig {
        algorithm,
        ..Default::default()
    };
    let device = EsapiTpm::new(&tpm.tcti(), ak).unwrap();
    device.extend_pcr(3, &[0x33; 32]).unwrap();
    let attester = TpmAttester::with_tcti(&tpm.tcti(), ak, config()).unwrap();
    let mut rd = [0u8; 48];
    rd.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = 0xc0 ^ i as u8);
    let ev = attester.evidence(&rd).unwrap();

    let attest = Attest::unmarshall(&b64d(&ev["tpm_quote"]["message"])).unwrap();
    assert_eq!(attest.extra_data().value(), &rd[..32]);
    let AttestInfo::Quote { info } = attest.attested() else {
        panic!("not a quote");
    };
    let pcrs = ev["tpm_quote"]["pcrs"].as_array().unwrap();
    assert_eq!(pcrs.len(), 16);
    assert_eq!(pcrs[3], hex::encode(extend_sha256(&[0; 32], &[0x33; 32])));
    let mut h = Sha256::new();
    pcrs.iter()
        .for_each(|p| h.update(hex::decode(p.as_str().unwrap()).unwrap()));
    assert_eq!(info.pcr_digest().value(), h.finalize().as_slice());

    let public = Public::unmarshall(&b64d(&ev["ak_tpm_public"])).unwrap();
    let attrs = public.object_attributes();
    assert!(attrs.restricted() && attrs.sign_encrypt() && attrs.fixed_tpm() && !attrs.decrypt());
    // The AK is a primary key: the same one on the next quote.
    let again = attester.evidence(&rd).unwrap();
    assert_eq!(again["ak_public"], ev["ak_public"]);
}

#[test]
fn swtpm_quote_rsa_ak() {
    quote_and_check(AkAlgorithm::Rsa2048);
}

#[test]
fn swtpm_quote_ecc_ak() {
    quote_and_check(AkAlgorithm::EccP256);
}

#[test]
fn swtpm_bind_init_data_extends_pcr8() {
    let tpm = Swtpm::start().unwrap();
    let attester = TpmAttester::with_tcti(&tpm.tcti(), AkConfig::default(), config()).unwrap();
    let digest = Sha256::digest(b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n");
    attester.bind_init_data(&digest).unwrap();
    attester.bind_init_data(&digest).unwrap();
    let device = EsapiTpm::new(&tpm.tcti(), AkConfig::default()).unwrap();
    let pcr8 = device.read_pcrs(&[8]).unwrap()[0];
    assert_eq!(pcr8, extend_sha256(&[0; 32], &digest.into()));
    let err = attester.bind_init_data(&[1; 32]).unwrap_err();
    assert!(
        matches!(err, AttesterError::InitDataMismatch { .. }),
        "{err}"
    );
    assert_eq!(device.read_pcrs(&[8]).unwrap()[0], pcr8);
}

#[test]
fn swtpm_persistent_ak_is_created_once_and_reused() {
    let tpm = Swtpm::start().unwrap();
    let ak = AkConfig {
        algorithm: AkAlgorithm::EccP256,
        hierarchy: AkHierarchy::Owner,
        persistent_handle: Some(0x8101_0002),
    };
    let attester = TpmAttester::with_tcti(&tpm.tcti(), ak, config()).unwrap();
    let first = attester.evidence(&[7; 48]).unwrap();
    let second = attester.evidence(&[8; 48]).unwrap();
    assert_eq!(first["ak_public"], second["ak_public"]);
    // A transient AK of another hierarchy is another key.
    let endorsement = AkConfig {
        persistent_handle: None,
        hierarchy: AkHierarchy::Endorsement,
        ..ak
    };
    let other = TpmAttester::with_tcti(&tpm.tcti(), endorsement, config()).unwrap();
    assert_ne!(
        other.evidence(&[7; 48]).unwrap()["ak_public"],
        first["ak_public"]
    );
}

#[test]
fn bad_tcti_fails_at_construction() {
    let err = TpmAttester::with_tcti("nonsense:", AkConfig::default(), config()).unwrap_err();
    assert!(matches!(err, AttesterError::Collect { .. }), "{err}");
}

/// The kernel's TPM, when the machine has one (this CI host does not).
#[test]
fn device_tpm_quote_when_present() {
    if !std::path::Path::new("/dev/tpmrm0").exists() {
        eprintln!(
            "skipped: no /dev/tpmrm0 on this machine (the same code runs against swtpm above)"
        );
        return;
    }
    let attester = TpmAttester::with_tcti(
        DEFAULT_TCTI,
        AkConfig::default(),
        TpmAttesterConfig::default(),
    )
    .unwrap();
    let ev = attester.evidence(&[0x11; 48]).unwrap();
    let attest = Attest::unmarshall(&b64d(&ev["tpm_quote"]["message"])).unwrap();
    assert_eq!(attest.extra_data().value(), &[0x11; 32]);
}
