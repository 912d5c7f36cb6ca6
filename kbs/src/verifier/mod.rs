//! Evidence verifiers, one per TEE.
//!
//! A verifier checks that evidence is authentic (signatures, certificate chains),
//! that it is bound to this session (`report_data`) and to the pod's initdata, and
//! turns it into typed claims. It decides nothing about *trust*: that is the
//! attestation policy's job (see `crate::attestation`). Verifiers are synchronous
//! and CPU-bound; the attestation service runs them on the blocking pool.

pub mod cli;
pub mod sample;
pub mod snp;
pub mod tdx;
pub mod tpm;

use kbs_types::Tee;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Debug;

/// What the evidence must be bound to.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// SHA-384 over the RFC 8785 canonical JSON of the session's runtime data
    /// (`{"nonce":..,"tee-pubkey":..}`).
    pub report_data: [u8; 48],
    /// Digest of the initdata TOML, when the client sent initdata.
    pub init_data_digest: Option<&'a [u8]>,
}

impl Expected<'_> {
    /// `report_data` as SNP and TDX carry it: 48 bytes zero-padded to 64.
    pub fn report_data_64(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..48].copy_from_slice(&self.report_data);
        out
    }

    /// `report_data` as a TPM quote carries it (qualifying data): the first 32 bytes.
    pub fn report_data_32(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.report_data[..32]);
        out
    }
}

/// Claims extracted from verified evidence, typed per TEE. Serialized (untagged)
/// as the `input` of the attestation policy, next to `"tee"`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TeeClaims {
    Sample(sample::SampleClaims),
    Snp(Box<snp::SnpClaims>),
    Tdx(Box<tdx::TdxClaims>),
    Tpm(tpm::TpmClaims),
}

/// Why evidence was rejected.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("no verifier is configured for TEE `{0}`")]
    Unsupported(String),
    #[error("malformed evidence: {0}")]
    Malformed(String),
    #[error("report_data does not match this session's nonce and key")]
    ReportDataMismatch,
    #[error("initdata digest does not match the one bound into the evidence")]
    InitDataMismatch,
    #[error(transparent)]
    Sample(#[from] sample::SampleError),
    #[error(transparent)]
    Snp(#[from] snp::SnpError),
    #[error(transparent)]
    Tdx(#[from] tdx::TdxError),
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
}

/// One TEE's evidence verifier.
pub trait Verifier: Send + Sync + Debug {
    /// Which TEE this verifier handles.
    fn tee(&self) -> Tee;

    /// Verify `evidence` (the `primary_evidence` JSON value of the attest request)
    /// against `expected`, returning the claims on success.
    fn verify(
        &self,
        evidence: &serde_json::Value,
        expected: &Expected<'_>,
    ) -> Result<TeeClaims, VerifierError>;
}

/// Per-TEE verifier settings (`[verifiers]` in kbs.toml).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    #[serde(default)]
    pub sample: sample::SampleConfig,
    #[serde(default)]
    pub snp: snp::SnpConfig,
    #[serde(default)]
    pub tdx: tdx::TdxConfig,
    #[serde(default)]
    pub tpm: tpm::TpmConfig,
}

/// The set of verifiers the KBS runs, by TEE.
#[derive(Debug, Default)]
pub struct Verifiers {
    by_tee: HashMap<Tee, Box<dyn Verifier>>,
}

impl Verifiers {
    /// Build the verifiers from configuration.
    pub fn from_config(config: &VerifierConfig) -> Result<Self, VerifierError> {
        let mut v = Self::default();
        if config.sample.enabled {
            v.insert(Box::new(sample::SampleVerifier));
        }
        if config.snp.enabled {
            v.insert(Box::new(snp::SnpVerifier::new(config.snp.clone())?));
        }
        if config.tdx.enabled {
            v.insert(Box::new(tdx::TdxVerifier::new(config.tdx.clone())?));
        }
        if config.tpm.enabled {
            v.insert(Box::new(tpm::TpmVerifier::new(config.tpm.clone())));
        }
        Ok(v)
    }

    pub fn insert(&mut self, verifier: Box<dyn Verifier>) {
        self.by_tee.insert(verifier.tee(), verifier);
    }

    pub fn get(&self, tee: Tee) -> Result<&dyn Verifier, VerifierError> {
        self.by_tee
            .get(&tee)
            .map(|b| b.as_ref())
            .ok_or_else(|| VerifierError::Unsupported(tee.to_string()))
    }
}
