//! Attestation agent: evidence from the TEE the guest runs in, and the KBS client.

pub mod detect;
pub mod sample;
pub mod snp;
pub mod tdx;
#[cfg(feature = "tpm")]
pub mod tpm;

use kbs_types::Tee;
use std::fmt::Debug;

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttesterError {
    #[error("no TEE found on this machine ({0}); set the attester to `sample` explicitly for development")]
    NoTee(String),
    #[error("{tee} evidence collection failed: {reason}")]
    Collect { tee: &'static str, reason: String },
    #[error("the {0} attester is not built into this binary yet")]
    NotBuiltIn(&'static str),
    #[error(
        "initdata digest {expected} is not the one bound into the TEE ({found}); refusing to run"
    )]
    InitDataMismatch { expected: String, found: String },
}

/// A source of evidence in the guest.
pub trait Attester: Send + Sync + Debug {
    /// Which TEE this attester speaks for.
    fn tee(&self) -> Tee;

    /// Produce evidence bound to `report_data`, the SHA-384 of the session's runtime
    /// data (48 bytes). Each TEE places it as its hardware requires: SNP and TDX
    /// zero-pad it to 64 bytes, TPM uses the first 32 bytes as qualifying data.
    /// Returns the `primary_evidence` JSON value of the attest request.
    fn evidence(&self, report_data: &[u8; 48]) -> Result<serde_json::Value, AttesterError>;

    /// Check (SNP `HOST_DATA`, TDX `MRCONFIGID`) or establish (TPM: extend PCR 8) the
    /// binding of the pod's initdata digest to this TEE. Fails when the hardware carries
    /// another digest: the attester must then refuse to run.
    fn bind_init_data(&self, digest: &[u8]) -> Result<(), AttesterError>;
}

pub mod kbs_client;
