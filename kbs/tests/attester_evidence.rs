//! Evidence produced by the attester crate (SNP and TDX, through test doubles of
//! the hardware that replay captured real output) is what the KBS verifiers
//! accept, and is refused where it must be.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use attester::snp::{SnpAttester, SnpFirmware};
use attester::tdx::{TdxAttester, TdxPlatform};
use attester::Attester;
use kbs::verifier::snp::{SnpConfig, SnpVerifier};
use kbs::verifier::tdx::{TdxConfig, TdxError, TdxEvidence, TdxVerifier};
use kbs::verifier::{Expected, TeeClaims, Verifier, VerifierError};
use sev::firmware::host::{CertTableEntry, CertType};
use std::path::PathBuf;

fn testdata(p: &str) -> PathBuf {
    // Run-time manifest dir first: the binary may come from another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("testdata")
        .join(p)
}

/// An SNP guest whose firmware signed the captured report.
#[derive(Debug)]
struct CapturedSnp;

impl SnpFirmware for CapturedSnp {
    fn ext_report(&self, _: [u8; 64]) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), String> {
        let report = std::fs::read(testdata("snp/report.bin")).map_err(|e| e.to_string())?;
        let vcek = std::fs::read(testdata("snp/vcek.der")).map_err(|e| e.to_string())?;
        Ok((
            report,
            Some(vec![CertTableEntry::new(CertType::VCEK, vcek)]),
        ))
    }
}

fn snp_session_report_data() -> [u8; 48] {
    // The captured report was made for this report_data (32 bytes + zeros).
    let r = std::fs::read(testdata("snp/report.bin")).unwrap();
    r[0x50..0x80].try_into().unwrap()
}

#[test]
fn snp_attester_evidence_is_accepted_for_its_session_only() {
    let rd = snp_session_report_data();
    let evidence = SnpAttester::new(CapturedSnp).evidence(&rd).unwrap();
    let v = SnpVerifier::new(SnpConfig::default())
        .unwrap()
        .at(time::macros::datetime!(2025-06-01 00:00 UTC));
    let ok = v.verify(
        &evidence,
        &Expected {
            report_data: rd,
            init_data_digest: None,
        },
    );
    assert!(matches!(ok, Ok(TeeClaims::Snp(_))), "{ok:?}");

    // The same evidence replayed in another session.
    let mut other = rd;
    other[0] ^= 1;
    let replay = v.verify(
        &evidence,
        &Expected {
            report_data: other,
            init_data_digest: None,
        },
    );
    assert!(matches!(replay, Err(VerifierError::ReportDataMismatch)));

    // With an initdata digest the guest does not carry in HOST_DATA.
    let digest = [9u8; 32];
    let bad = v.verify(
        &evidence,
        &Expected {
            report_data: rd,
            init_data_digest: Some(&digest),
        },
    );
    assert!(matches!(bad, Err(VerifierError::InitDataMismatch)));
    // ... which the attester itself refuses before ever attesting.
    assert!(SnpAttester::new(CapturedSnp)
        .bind_init_data(&digest)
        .is_err());
}

/// A TD whose quote is the captured v4 quote; the CCEL is the sample log of
/// another TD (so it must not replay to this quote's RTMRs).
#[derive(Debug)]
struct CapturedTd {
    with_ccel: bool,
}

impl TdxPlatform for CapturedTd {
    fn quote(&self, _: &[u8; 64]) -> std::io::Result<Vec<u8>> {
        std::fs::read(testdata("tdx/quote-v4-with-collateral.dat"))
    }
    fn tdreport(&self, _: &[u8; 64]) -> std::io::Result<[u8; 1024]> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn ccel(&self) -> std::io::Result<Option<Vec<u8>>> {
        if self.with_ccel {
            std::fs::read(testdata("eventlog/CCEL_data_ovmf")).map(Some)
        } else {
            Ok(None)
        }
    }
    fn extend_rtmr(&self, _: u8, _: &[u8; 48]) -> std::io::Result<()> {
        Ok(())
    }
}

fn tdx_verifier() -> TdxVerifier {
    TdxVerifier::new(TdxConfig {
        collateral_dir: Some(testdata("tdx")),
        ..TdxConfig::default()
    })
    .unwrap()
    .at(time::macros::datetime!(2025-11-01 00:00 UTC))
}

#[test]
fn tdx_attester_evidence_verifies_and_a_foreign_event_log_is_refused() {
    let quote = std::fs::read(testdata("tdx/quote-v4-with-collateral.dat")).unwrap();
    let parsed = kbs::verifier::tdx::Quote::parse(&quote).unwrap();
    let rd = parsed.report.report_data;
    let mut rd48 = [0u8; 48];
    rd48.copy_from_slice(&rd[..48]);

    let evidence = TdxAttester::new(CapturedTd { with_ccel: false })
        .evidence(&rd48)
        .unwrap();
    let ev = TdxEvidence::from_json(&evidence).unwrap();
    let claims = tdx_verifier()
        .verify_evidence(&ev, Some(&rd), None)
        .unwrap();
    assert_eq!(claims.report_data, hex::encode(rd));

    let mut other = rd;
    other[63] ^= 1;
    assert!(matches!(
        tdx_verifier().verify_evidence(&ev, Some(&other), None),
        Err(VerifierError::ReportDataMismatch)
    ));

    let evidence = TdxAttester::new(CapturedTd { with_ccel: true })
        .evidence(&rd48)
        .unwrap();
    let ev = TdxEvidence::from_json(&evidence).unwrap();
    assert!(matches!(
        tdx_verifier().verify_evidence(&ev, Some(&rd), None),
        Err(VerifierError::Tdx(TdxError::RtmrMismatch { .. }))
    ));
}
