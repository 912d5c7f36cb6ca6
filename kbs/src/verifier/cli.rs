//! `kbs verify-evidence`: verify SNP or TDX evidence offline and print its claims.

use super::snp::{SnpConfig, SnpEvidence, SnpVerifier};
use super::tdx::{TdxConfig, TdxEvidence, TdxVerifier};
use super::VerifierError;
use std::path::PathBuf;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// TEE kinds the offline verifier knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TeeArg {
    Snp,
    Tdx,
    Tpm,
}

/// Verify attestation evidence from a file, without a KBS session.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyEvidenceArgs {
    /// TEE the evidence comes from.
    #[arg(long, value_enum)]
    pub tee: TeeArg,
    /// Evidence file: a raw SNP report (1184 bytes), a raw TDX quote, or the
    /// attester's JSON evidence (`{"attestation_report":..}` / `{"quote":..}`).
    #[arg(long)]
    pub evidence: PathBuf,
    /// Expected REPORT_DATA as hex (at most 64 bytes, zero-padded to 64).
    /// Without it the session binding is not checked.
    #[arg(long)]
    pub report_data: Option<String>,
    /// Expected initdata digest as hex (bound in SNP HOST_DATA / TDX MRCONFIGID).
    #[arg(long)]
    pub init_data_digest: Option<String>,
    /// SNP: VCEK or VLEK (DER) when the evidence carries none.
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// TDX: collateral bundle directory (tcbInfo.json, enclaveIdentity.json, CRLs).
    /// Without it only the signatures and the PCK chain are checked, not the TCB.
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// Verify as of this time (RFC 3339) instead of now, e.g. for old evidence.
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid argument: {0}")]
    BadArg(String),
    #[error("offline verification of {0} evidence is not supported yet")]
    Unsupported(&'static str),
    #[error(transparent)]
    Verify(#[from] VerifierError),
}

fn read(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Io {
        path: path.clone(),
        source,
    })
}

fn hex_arg(name: &str, s: &str, max: usize) -> Result<Vec<u8>, CliError> {
    let b = hex::decode(s.trim()).map_err(|e| CliError::BadArg(format!("--{name}: {e}")))?;
    if b.len() > max {
        return Err(CliError::BadArg(format!(
            "--{name} is {} bytes, at most {max} allowed",
            b.len()
        )));
    }
    Ok(b)
}

/// Run the verification; returns the claims as JSON.
pub fn run(args: &VerifyEvidenceArgs) -> Result<serde_json::Value, CliError> {
    let at = args
        .at
        .as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|e| CliError::BadArg(format!("--at {s:?}: {e}")))
        })
        .transpose()?;
    let report_data = args
        .report_data
        .as_deref()
        .map(|s| {
            hex_arg("report-data", s, 64).map(|b| {
                let mut rd = [0u8; 64];
                rd[..b.len()].copy_from_slice(&b);
                rd
            })
        })
        .transpose()?;
    let init = args
        .init_data_digest
        .as_deref()
        .map(|s| hex_arg("init-data-digest", s, 64))
        .transpose()?;
    let bytes = read(&args.evidence)?;
    let claims = match args.tee {
        TeeArg::Snp => {
            let mut ev = SnpEvidence::from_bytes(&bytes).map_err(VerifierError::from)?;
            if let Some(v) = &args.vcek {
                ev.endorsement_key = Some(read(v)?);
            }
            let mut v = SnpVerifier::new(SnpConfig::default()).map_err(VerifierError::from)?;
            if let Some(at) = at {
                v = v.at(at);
            }
            serde_json::to_value(v.verify_evidence(&ev, report_data.as_ref(), init.as_deref())?)
        }
        TeeArg::Tdx => {
            let ev = TdxEvidence::from_bytes(&bytes).map_err(VerifierError::from)?;
            if args.collateral.is_none() {
                tracing::warn!("no --collateral: TCB status, QE identity and CRLs are not checked");
            }
            let cfg = TdxConfig {
                collateral_dir: args.collateral.clone(),
                require_collateral: args.collateral.is_some(),
                ..TdxConfig::default()
            };
            let mut v = TdxVerifier::new(cfg).map_err(VerifierError::from)?;
            if let Some(at) = at {
                v = v.at(at);
            }
            serde_json::to_value(v.verify_evidence(&ev, report_data.as_ref(), init.as_deref())?)
        }
        TeeArg::Tpm => return Err(CliError::Unsupported("tpm")),
    };
    claims.map_err(|e| CliError::BadArg(format!("claims are not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(p: &str) -> PathBuf {
        // Run-time manifest dir first: a shared target dir may hold this test binary
        // built from another checkout of the same commit.
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .join("testdata")
            .join(p)
    }

    fn args(tee: TeeArg, evidence: &str) -> VerifyEvidenceArgs {
        VerifyEvidenceArgs {
            tee,
            evidence: td(evidence),
            report_data: None,
            init_data_digest: None,
            vcek: None,
            collateral: None,
            at: None,
        }
    }

    #[test]
    fn snp_raw_report_with_vcek() {
        let report = std::fs::read(td("snp/report.bin")).unwrap();
        let mut a = args(TeeArg::Snp, "snp/report.bin");
        a.vcek = Some(td("snp/vcek.der"));
        a.report_data = Some(hex::encode(&report[0x50..0x90]));
        let claims = run(&a).unwrap();
        assert_eq!(claims["product"], "milan");
        assert_eq!(claims["report_data"], hex::encode(&report[0x50..0x90]));
        assert_eq!(claims["measurement"], hex::encode(&report[0x90..0xc0]));
    }

    #[test]
    fn snp_json_evidence_carries_its_vcek() {
        let claims = run(&args(TeeArg::Snp, "snp/evidence-guest-components.json")).unwrap();
        assert_eq!(claims["product"], "genoa");
        assert_eq!(claims["signing_key"], "vcek");
    }

    #[test]
    fn snp_wrong_report_data_is_rejected() {
        let mut a = args(TeeArg::Snp, "snp/report.bin");
        a.vcek = Some(td("snp/vcek.der"));
        a.report_data = Some("00".repeat(64));
        assert!(matches!(
            run(&a),
            Err(CliError::Verify(VerifierError::ReportDataMismatch))
        ));
    }

    #[test]
    fn tdx_v4_with_collateral_at_pinned_time() {
        let mut a = args(TeeArg::Tdx, "tdx/quote-v4-with-collateral.dat");
        a.collateral = Some(td("tdx"));
        a.at = Some("2025-11-01T00:00:00Z".into());
        let claims = run(&a).unwrap();
        assert_eq!(claims["quote_version"], 4);
        assert!(claims["tcb_status"].is_string());
    }

    #[test]
    fn tdx_v5_without_collateral_checks_signatures_only() {
        let mut a = args(TeeArg::Tdx, "tdx/quote-v5.dat");
        a.at = Some("2025-11-01T00:00:00Z".into());
        let claims = run(&a).unwrap();
        assert_eq!(claims["quote_version"], 5);
        assert!(claims["tcb_status"].is_null());
    }

    #[test]
    fn tdx_collateral_expired_at_later_time() {
        let mut a = args(TeeArg::Tdx, "tdx/quote-v4-with-collateral.dat");
        a.collateral = Some(td("tdx"));
        a.at = Some("2026-06-01T00:00:00Z".into());
        assert!(matches!(
            run(&a),
            Err(CliError::Verify(VerifierError::Tdx(
                super::super::tdx::TdxError::CollateralExpired { .. }
            )))
        ));
    }

    #[test]
    fn tpm_is_unsupported_here() {
        assert!(matches!(
            run(&args(TeeArg::Tpm, "snp/report.bin")),
            Err(CliError::Unsupported("tpm"))
        ));
    }

    #[test]
    fn bad_time_is_a_clear_error() {
        let mut a = args(TeeArg::Tdx, "tdx/quote-v5.dat");
        a.at = Some("yesterday".into());
        assert!(matches!(run(&a), Err(CliError::BadArg(_))));
    }
}
