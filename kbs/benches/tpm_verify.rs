//! TPM quote verification throughput against the bare signature check it contains.
//!
//! Rows: Trustee's captured RSA-2048 quote, and quotes from a real swtpm through
//! our attester (RSA-2048 and ECC P-256 AKs, with the AK template check). For
//! each: the full `Verifier::verify` (JSON decode, parsing, AK template, signature,
//! report_data, PCR digest) and, in the same run, only SHA-256 + signature
//! verification over the same quote with a pre-parsed key.
//!
//! `cargo bench -p kbs --bench tpm_verify` (needs `swtpm` for the swtpm rows).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark aborts on failure

use attester::tpm::swtpm::Swtpm;
use attester::tpm::{AkAlgorithm, AkConfig, TpmAttester, TpmAttesterConfig};
use attester::Attester;
use base64::Engine;
use kbs::verifier::tpm::wire::{self, TpmSignature};
use kbs::verifier::tpm::{AkKey, TpmConfig, TpmVerifier};
use kbs::verifier::{Expected, Verifier};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SAMPLE: &str = include_str!("../testdata/tpm/evidence.json");
const ROUND: Duration = Duration::from_millis(400);
const ROUNDS: usize = 5;

/// Operations per second of `f`: the best of `ROUNDS` rounds of about `ROUND`
/// each, after a warm-up. The best round is the one other processes on this
/// shared machine disturbed least.
fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..50 {
        f();
    }
    let mut best: f64 = 0.0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < ROUND {
            for _ in 0..20 {
                f();
            }
            n += 20;
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn b64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn sig_check(key: &AkKey, message: &[u8], sig: &TpmSignature) {
    let d = Sha256::digest(black_box(message));
    match (key, sig) {
        (AkKey::Rsa(k), TpmSignature::RsaSsa { sig, .. }) => {
            let scheme = rsa::Pkcs1v15Sign::new::<Sha256>();
            k.verify(scheme, &d, sig).unwrap();
        }
        (AkKey::P256(k), TpmSignature::Ecdsa { r, s, .. }) => {
            let sig = p256::ecdsa::Signature::from_slice(&[r.as_slice(), s].concat()).unwrap();
            k.verify_prehash(&d, &sig).unwrap();
        }
        _ => panic!("key and signature algorithms differ"),
    }
}

/// A closure doing only hash + signature verification for this evidence.
fn bare_check(ev: &serde_json::Value) -> Box<dyn FnMut()> {
    let der = b64(&ev["ak_public"]);
    let message = b64(&ev["tpm_quote"]["message"]);
    let sig = wire::parse_signature(&b64(&ev["tpm_quote"]["signature"])).unwrap();
    match sig {
        TpmSignature::RsaSsa { sig, .. } => {
            let key = rsa::PublicKey::from_public_key_der(&der).unwrap();
            Box::new(move || {
                let d = Sha256::digest(black_box(&message));
                let scheme = rsa::Pkcs1v15Sign::new::<Sha256>();
                key.verify(scheme, &d, black_box(&sig)).unwrap();
            })
        }
        TpmSignature::Ecdsa { r, s, .. } => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&der).unwrap();
            let rs = [r, s].concat();
            let sig = p256::ecdsa::Signature::from_slice(&rs).unwrap();
            Box::new(move || {
                let d = Sha256::digest(black_box(&message));
                key.verify_prehash(&d, black_box(&sig)).unwrap();
            })
        }
    }
}

struct Row {
    name: String,
    full: f64,
    bare: f64,
    ak_parse: f64,
    parse_and_sig: f64,
}

fn measure(name: &str, ev: &serde_json::Value, report_data: [u8; 48]) -> Row {
    let verifier = TpmVerifier::new(TpmConfig::default());
    let expected = Expected {
        report_data,
        init_data_digest: None,
    };
    verifier.verify(ev, &expected).expect("evidence verifies");
    let full = rate(|| {
        black_box(verifier.verify(black_box(ev), &expected).unwrap());
    });
    let bare = rate(bare_check(ev));
    let der = b64(&ev["ak_public"]);
    let ak_parse = rate(|| {
        black_box(AkKey::from_spki_der(black_box(&der)).unwrap());
    });
    // Key parse + signature, as the verifier must do per quote (the AK comes
    // with the evidence), without JSON, TPM structure parsing or PCR checks.
    let message = b64(&ev["tpm_quote"]["message"]);
    let sig = wire::parse_signature(&b64(&ev["tpm_quote"]["signature"])).unwrap();
    let parse_and_sig = rate(|| {
        let key = AkKey::from_spki_der(black_box(&der)).unwrap();
        sig_check(&key, &message, &sig);
    });
    Row {
        name: name.into(),
        full,
        bare,
        ak_parse,
        parse_and_sig,
    }
}

fn swtpm_evidence(algorithm: AkAlgorithm, rd: &[u8; 48]) -> Option<serde_json::Value> {
    let tpm = match Swtpm::start() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipping swtpm rows: {e}");
            return None;
        }
    };
    let ak = AkConfig {
        algorithm,
        ..Default::default()
    };
    let config = TpmAttesterConfig {
        event_log: None,
        ..Default::default()
    };
    let attester = TpmAttester::with_tcti(&tpm.tcti(), ak, config).unwrap();
    Some(attester.evidence(rd).unwrap())
}

fn main() {
    let sample: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
    let msg = b64(&sample["tpm_quote"]["message"]);
    let attest = wire::parse_quote_attest(&msg).unwrap();
    let sample_rd: [u8; 48] = attest.extra_data[..48].try_into().unwrap();

    let mut rows = vec![measure(
        "Trustee sample, RSA-2048, 24 PCRs",
        &sample,
        sample_rd,
    )];
    let rd = [0x5au8; 48];
    for (alg, name) in [
        (AkAlgorithm::Rsa2048, "swtpm, RSA-2048 + template, 16 PCRs"),
        (AkAlgorithm::EccP256, "swtpm, ECC P-256 + template, 16 PCRs"),
    ] {
        if let Some(ev) = swtpm_evidence(alg, &rd) {
            rows.push(measure(name, &ev, rd));
        }
    }

    println!();
    println!(
        "| evidence | full verify/s | µs/verify | bare sig verify/s | µs/sig | full/bare | µs/AK parse | µs/(AK parse + sig) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} | {:.1} | {:.1} |",
            r.name,
            r.full,
            1e6 / r.full,
            r.bare,
            1e6 / r.bare,
            r.full / r.bare,
            1e6 / r.ak_parse,
            1e6 / r.parse_and_sig
        );
    }
}
