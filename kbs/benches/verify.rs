//! Verification throughput of the SNP and TDX verifiers on the captured samples,
//! single-threaded (so "per second" is per core), next to the bare signature
//! checks they contain. Run: `cargo bench -p kbs --bench verify`.

#![allow(clippy::expect_used)] // benchmark harness: a broken sample should stop it loudly

use kbs::verifier::snp::{
    self, AmdRoots, EndorsementKey, Product, SigningKey, SnpConfig, SnpEvidence, SnpVerifier,
};
use kbs::verifier::tdx::{self, pck, Quote, TdxConfig, TdxEvidence, TdxVerifier};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Rounds per operation; the best round is reported, because the machine is
/// shared and other load only ever makes a round slower.
const ROUNDS: u32 = 5;
const ROUND: Duration = Duration::from_millis(400);

fn testdata(p: &str) -> PathBuf {
    // Run-time manifest dir first: the binary may come from another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("testdata")
        .join(p)
}

/// Run `f` for ROUNDS rounds of about ROUND each; returns the best round's
/// (ops/s, µs/op) and the median round's µs/op.
fn measure(mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..3 {
        f();
    }
    let mut per_op: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < ROUND {
                for _ in 0..10 {
                    f();
                }
                n += 10;
            }
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    let best = per_op[0];
    (1e6 / best, best, per_op[per_op.len() / 2])
}

fn main() {
    let report = std::fs::read(testdata("snp/report.bin")).expect("report.bin");
    let vcek = std::fs::read(testdata("snp/vcek.der")).expect("vcek.der");
    let rd: [u8; 64] = report[0x50..0x90].try_into().expect("64 bytes");
    let snp_v = SnpVerifier::new(SnpConfig::default())
        .expect("SNP verifier")
        .at(time::macros::datetime!(2025-06-01 00:00 UTC));
    let snp_ev = SnpEvidence {
        report: report.clone(),
        endorsement_key: Some(vcek.clone()),
    };
    snp_v
        .verify_evidence(&snp_ev, Some(&rd), None)
        .expect("SNP sample verifies");
    let ek = EndorsementKey::from_der(&vcek).expect("VCEK");
    let milan = AmdRoots::builtin(Product::Milan).expect("Milan roots");

    let quote = std::fs::read(testdata("tdx/quote-v4-with-collateral.dat")).expect("quote");
    let q = Quote::parse(&quote).expect("quote parses");
    let tdx_v = TdxVerifier::new(TdxConfig {
        collateral_dir: Some(testdata("tdx")),
        ..TdxConfig::default()
    })
    .expect("TDX verifier")
    .at(time::macros::datetime!(2025-11-01 00:00 UTC));
    let tdx_ev = TdxEvidence {
        quote: quote.clone(),
        cc_eventlog: None,
    };
    let qrd = q.report.report_data;
    // First call loads and verifies the collateral; later calls use the cache.
    tdx_v
        .verify_evidence(&tdx_ev, Some(&qrd), None)
        .expect("TDX sample verifies");
    let chain = pck::parse_pem_chain(&q.pck_chain_pem).expect("PCK chain");

    let rows: Vec<(&str, (f64, f64, f64))> = vec![
        (
            "SNP report, full verification",
            measure(|| {
                black_box(snp_v.verify_evidence(black_box(&snp_ev), Some(&rd), None)).ok();
            }),
        ),
        (
            "SNP bare ECDSA P-384 report signature",
            measure(|| {
                black_box(snp::verify_report_signature(
                    black_box(&report),
                    ek.public_key_sec1(),
                ))
                .ok();
            }),
        ),
        (
            "SNP VCEK chain (ASK RSA-4096-PSS + validity)",
            measure(|| {
                black_box(milan.verify_endorsement_key(
                    &ek,
                    SigningKey::Vcek,
                    time::macros::datetime!(2025-06-01 00:00 UTC),
                ))
                .ok();
            }),
        ),
        (
            "TDX quote v4, full, cached collateral",
            measure(|| {
                black_box(tdx_v.verify_evidence(black_box(&tdx_ev), Some(&qrd), None)).ok();
            }),
        ),
        (
            "TDX quote parse only",
            measure(|| {
                black_box(Quote::parse(black_box(&quote))).ok();
            }),
        ),
        (
            "TDX bare quote signature (P-256)",
            measure(|| {
                black_box(tdx::quote::verify_quote_signature(black_box(&q))).ok();
            }),
        ),
        (
            "TDX QE report + quote signatures",
            measure(|| {
                black_box(tdx::verify_quote_signatures(black_box(&q), &chain[0])).ok();
            }),
        ),
    ];

    println!();
    println!(
        "{:<46} {:>10} {:>10} {:>12}",
        "operation (1 thread, best of 5)", "ops/s", "µs/op", "median µs"
    );
    println!("{}", "-".repeat(81));
    for (name, (ops, us, median)) in rows {
        println!("{name:<46} {ops:>10.0} {us:>10.1} {median:>12.1}");
    }
    println!();
}
