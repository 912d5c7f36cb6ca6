//! Tests against the real TPM quote Trustee publishes (kbs/testdata/tpm/).

use super::*;

const SAMPLE: &str = include_str!("../../../testdata/tpm/evidence.json");

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn sample() -> TpmEvidence {
    serde_json::from_str(SAMPLE).unwrap()
}

/// The sample was captured for a session we do not have: take the report_data
/// from the quote's extraData (48 bytes, zero-padded to 64 by Trustee's attester).
fn sample_report_data() -> [u8; 48] {
    let msg = b64().decode(sample().tpm_quote.message).unwrap();
    let attest = wire::parse_quote_attest(&msg).unwrap();
    assert_eq!(attest.extra_data.len(), 64);
    assert!(attest.extra_data[48..].iter().all(|b| *b == 0));
    attest.extra_data[..48].try_into().unwrap()
}

fn verify(ev: &TpmEvidence, rd: [u8; 48], init: Option<&[u8]>) -> Result<TpmClaims, VerifierError> {
    let expected = Expected {
        report_data: rd,
        init_data_digest: init,
    };
    TpmVerifier::default().verify_evidence(ev, &expected)
}

fn flip_b64(s: &str, index: usize) -> String {
    let mut raw = b64().decode(s).unwrap();
    raw[index] ^= 0x01;
    b64().encode(raw)
}

#[test]
fn trustee_sample_verifies() {
    let ev = sample();
    let claims = verify(&ev, sample_report_data(), None).unwrap();
    assert_eq!(claims.pcrs.len(), 24);
    assert_eq!(claims.pcrs["00"], "00".repeat(32));
    assert_eq!(claims.pcrs["17"], "ff".repeat(32));
    assert_eq!(claims.ak_algorithm, "rsa2048");
    assert!(!claims.ak_template_checked);
    assert!(!claims.init_data_bound);
    let der = b64().decode(&ev.ak_public).unwrap();
    assert_eq!(claims.ak_public, hex::encode(Sha256::digest(der)));
    assert_eq!(claims.firmware_version, "2019102300163636");
    // Through the trait and JSON, as the attestation service calls it.
    let value: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
    let expected = Expected {
        report_data: sample_report_data(),
        init_data_digest: None,
    };
    let TeeClaims::Tpm(c) = TpmVerifier::default().verify(&value, &expected).unwrap() else {
        panic!("not TPM claims");
    };
    assert_eq!(c, claims);
}

#[test]
fn flipped_quote_body_byte_is_altered_quote() {
    let mut ev = sample();
    // Offset 110 is inside TPMS_CLOCK_INFO: still parses, no longer what was signed.
    ev.tpm_quote.message = flip_b64(&ev.tpm_quote.message, 110);
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::QuoteAltered)),
        "{err}"
    );
}

#[test]
fn flipped_magic_is_rejected_before_anything_else() {
    let mut ev = sample();
    ev.tpm_quote.message = flip_b64(&ev.tpm_quote.message, 3);
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::BadMagic(_))),
        "{err}"
    );
}

#[test]
fn flipped_signature_byte_is_bad_signature() {
    let mut ev = sample();
    // 6 header bytes: sigAlg, hash, TPM2B size.
    ev.tpm_quote.signature = flip_b64(&ev.tpm_quote.signature, 6 + 100);
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::BadSignature)),
        "{err}"
    );
}

#[test]
fn wrong_report_data_is_rejected() {
    let mut rd = sample_report_data();
    rd[47] ^= 0x80;
    let err = verify(&sample(), rd, None).unwrap_err();
    assert!(matches!(err, VerifierError::ReportDataMismatch), "{err}");
}

#[test]
fn tampered_pcr_value_is_rejected() {
    let mut ev = sample();
    ev.tpm_quote.pcrs[4] = "11".repeat(32);
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::PcrDigestMismatch)),
        "{err}"
    );
}

#[test]
fn missing_pcr_value_is_rejected() {
    let mut ev = sample();
    ev.tpm_quote.pcrs.pop();
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(
            err,
            VerifierError::Tpm(TpmError::PcrCount {
                selected: 24,
                given: 23
            })
        ),
        "{err}"
    );
}

#[test]
fn initdata_not_in_pcr8_is_rejected() {
    // The sample's PCR 8 is all zeros: no initdata was ever bound.
    let digest = [0x42u8; 32];
    let err = verify(&sample(), sample_report_data(), Some(&digest)).unwrap_err();
    assert!(matches!(err, VerifierError::InitDataMismatch), "{err}");
}

#[test]
fn bad_encodings_are_rejected() {
    let mut ev = sample();
    ev.tpm_quote.pcrs[0] = "zz".into();
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::Encoding { .. })),
        "{err}"
    );
    let mut ev = sample();
    ev.ak_public = "!!".into();
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::Encoding { .. })),
        "{err}"
    );
    let err = TpmVerifier::default()
        .verify(
            &serde_json::json!({"quote": 1}),
            &Expected {
                report_data: [0; 48],
                init_data_digest: None,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::Shape(_))),
        "{err}"
    );
}

// The NIST P-256 base point: a valid public key nobody's AK uses.
const P256_GX: &str = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
const P256_GY: &str = "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

fn p256_spki() -> String {
    use p256::pkcs8::EncodePublicKey;
    let mut point = vec![0x04];
    point.extend(hex::decode(P256_GX).unwrap());
    point.extend(hex::decode(P256_GY).unwrap());
    let key = p256::PublicKey::from_sec1_bytes(&point).unwrap();
    b64().encode(key.to_public_key_der().unwrap().as_bytes())
}

/// A `TPMT_PUBLIC` for an ECC P-256 ECDSA-SHA256 key with the given attributes.
fn p256_tpmt_public(attributes: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(wire::TPM_ALG_ECC.to_be_bytes());
    t.extend(wire::TPM_ALG_SHA256.to_be_bytes());
    t.extend(attributes.to_be_bytes());
    t.extend(0u16.to_be_bytes()); // authPolicy
    t.extend(wire::TPM_ALG_NULL.to_be_bytes()); // symmetric
    t.extend(wire::TPM_ALG_ECDSA.to_be_bytes());
    t.extend(wire::TPM_ALG_SHA256.to_be_bytes());
    t.extend(wire::TPM_ECC_NIST_P256.to_be_bytes());
    t.extend(wire::TPM_ALG_NULL.to_be_bytes()); // kdf
    for c in [P256_GX, P256_GY] {
        t.extend(32u16.to_be_bytes());
        t.extend(hex::decode(c).unwrap());
    }
    t
}

const AK_ATTRS: u32 = wire::attr::FIXED_TPM
    | wire::attr::FIXED_PARENT
    | wire::attr::SENSITIVE_DATA_ORIGIN
    | wire::attr::RESTRICTED
    | wire::attr::SIGN
    | (1 << 6); // userWithAuth

/// TPM_RH_ENDORSEMENT: the parent "qualified name" of an endorsement primary key.
const ENDORSEMENT: [u8; 4] = [0x40, 0x00, 0x00, 0x0b];

#[test]
fn template_without_parent_name_is_malformed() {
    let mut ev = sample();
    ev.ak_public = p256_spki();
    ev.ak_tpm_public = Some(b64().encode(p256_tpmt_public(AK_ATTRS)));
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::Malformed { .. })),
        "{err}"
    );
}

#[test]
fn different_ak_with_template_is_not_the_quote_signer() {
    let mut ev = sample();
    ev.ak_public = p256_spki();
    ev.ak_tpm_public = Some(b64().encode(p256_tpmt_public(AK_ATTRS)));
    ev.ak_parent_qualified_name = Some(b64().encode(ENDORSEMENT));
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::SignerNameMismatch { .. })),
        "{err}"
    );
}

#[test]
fn size_prefixed_template_is_read_like_the_bare_one() {
    let mut ev = sample();
    ev.ak_public = p256_spki();
    let t = p256_tpmt_public(AK_ATTRS);
    let tpm2b = [(t.len() as u16).to_be_bytes().as_slice(), &t].concat();
    ev.ak_tpm_public = Some(b64().encode(tpm2b));
    ev.ak_parent_qualified_name = Some(b64().encode(ENDORSEMENT));
    // Parsed, key and attributes accepted; the name check is what fails.
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::SignerNameMismatch { .. })),
        "{err}"
    );
}

#[test]
fn different_ak_without_template_fails_the_signature() {
    let mut ev = sample();
    ev.ak_public = p256_spki();
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(
            err,
            VerifierError::Tpm(TpmError::SignatureKeyMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn template_of_another_key_or_unrestricted_key_is_rejected() {
    let mut ev = sample();
    // ak_public stays the sample's RSA key; the template is a P-256 key.
    ev.ak_tpm_public = Some(b64().encode(p256_tpmt_public(AK_ATTRS)));
    ev.ak_parent_qualified_name = Some(b64().encode(ENDORSEMENT));
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::AkTemplateMismatch)),
        "{err}"
    );

    let mut ev = sample();
    ev.ak_public = p256_spki();
    let attrs = AK_ATTRS & !wire::attr::RESTRICTED;
    ev.ak_tpm_public = Some(b64().encode(p256_tpmt_public(attrs)));
    ev.ak_parent_qualified_name = Some(b64().encode(ENDORSEMENT));
    let err = verify(&ev, sample_report_data(), None).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::AkNotRestrictedSigning(a)) if a == attrs),
        "{err}"
    );
}

#[test]
fn required_template_missing_is_rejected() {
    let v = TpmVerifier::new(TpmConfig {
        enabled: true,
        require_ak_template: true,
    });
    let expected = Expected {
        report_data: sample_report_data(),
        init_data_digest: None,
    };
    let err = v.verify_evidence(&sample(), &expected).unwrap_err();
    assert!(
        matches!(err, VerifierError::Tpm(TpmError::AkTemplateMissing)),
        "{err}"
    );
}

#[test]
fn pcr8_extension_rule() {
    // sha256(32 zero bytes || digest), digest fitted to 32 bytes.
    let d = [7u8; 32];
    let mut input = [0u8; 64];
    input[32..].copy_from_slice(&d);
    assert_eq!(
        pcr_after_single_extend(&d),
        <[u8; 32]>::from(Sha256::digest(input))
    );
    let long = [7u8; 48];
    assert_eq!(pcr_after_single_extend(&long), pcr_after_single_extend(&d));
}

#[test]
fn config_registers_the_verifier() {
    let cfg: crate::verifier::VerifierConfig =
        toml_like(r#"{"tpm": {"require_ak_template": true}}"#);
    assert!(cfg.tpm.enabled && cfg.tpm.require_ak_template);
    let v = crate::verifier::Verifiers::from_config(&cfg).unwrap();
    assert_eq!(v.get(Tee::Tpm).unwrap().tee(), Tee::Tpm);
    let off: crate::verifier::VerifierConfig = toml_like(r#"{"tpm": {"enabled": false}}"#);
    let v = crate::verifier::Verifiers::from_config(&off).unwrap();
    assert!(v.get(Tee::Tpm).is_err());
}

fn toml_like(json: &str) -> crate::verifier::VerifierConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn every_single_byte_change_and_truncation_is_rejected() {
    let rd = sample_report_data();
    let base = sample();
    let message = b64().decode(&base.tpm_quote.message).unwrap();
    let signature = b64().decode(&base.tpm_quote.signature).unwrap();
    for i in 0..message.len() {
        let mut m = message.clone();
        m[i] ^= 0xff;
        let mut ev = base.clone();
        ev.tpm_quote.message = b64().encode(&m);
        assert!(verify(&ev, rd, None).is_err(), "message byte {i} flipped");
        let mut ev = base.clone();
        ev.tpm_quote.message = b64().encode(&message[..i]);
        assert!(verify(&ev, rd, None).is_err(), "message cut at {i}");
    }
    for i in 0..signature.len() {
        let mut s = signature.clone();
        s[i] ^= 0xff;
        let mut ev = base.clone();
        ev.tpm_quote.signature = b64().encode(&s);
        assert!(verify(&ev, rd, None).is_err(), "signature byte {i} flipped");
        let mut ev = base.clone();
        ev.tpm_quote.signature = b64().encode(&signature[..i]);
        assert!(verify(&ev, rd, None).is_err(), "signature cut at {i}");
    }
    // Appended bytes are not silently ignored either.
    let mut ev = base.clone();
    ev.tpm_quote.message = b64().encode([message.as_slice(), &[0]].concat());
    assert!(matches!(
        verify(&ev, rd, None).unwrap_err(),
        VerifierError::Tpm(TpmError::Malformed { .. })
    ));
}
