//! The `sample` "TEE": no hardware, evidence is just the report_data in JSON.
//!
//! It exists for development and CI on machines without a TEE. It proves nothing:
//! the default attestation and resource policies never trust it.

use super::{Expected, TeeClaims, Verifier, VerifierError};
use base64::Engine;
use kbs_types::Tee;
use serde::{Deserialize, Serialize};

/// Evidence shape produced by guest-components' and our sample attester.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SampleEvidence {
    pub svn: String,
    /// Standard base64 of the report_data: the 48-byte binding digest itself,
    /// as guest-components' sample attester sends it (`attester/src/sample`
    /// @da8d93f; captured from Trustee's kbs-client, `testdata/peers`).
    pub report_data: String,
    /// Hex of the initdata digest the "hardware" would carry, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_data: Option<String>,
}

/// Claims of the sample TEE. Besides what the evidence says, it carries the
/// fixed claims Trustee's sample verifier reports (`deps/verifier/src/sample`
/// @78962cd: `launch_digest`, `platform_version`, `debug`), so that Trustee's
/// own attestation policies evaluate the sample TEE here as they do there.
#[derive(Debug, Clone, Serialize)]
pub struct SampleClaims {
    /// Security version number the attester claims.
    pub svn: String,
    /// Hex of the report_data that was verified.
    pub report_data: String,
    /// Hex of the bound initdata digest, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_data: Option<String>,
    /// Trustee's fixed sample claims (the sample TEE measures nothing).
    pub launch_digest: &'static str,
    pub platform_version: SamplePlatformVersion,
    pub debug: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SamplePlatformVersion {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("sample evidence is not valid JSON of the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("sample report_data is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Accept `sample` evidence at all. Even when enabled, the default policies
    /// give it no trust.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SampleVerifier;

impl Verifier for SampleVerifier {
    fn tee(&self) -> Tee {
        Tee::Sample
    }

    fn verify(
        &self,
        evidence: &serde_json::Value,
        expected: &Expected<'_>,
    ) -> Result<TeeClaims, VerifierError> {
        let ev: SampleEvidence =
            serde_json::from_value(evidence.clone()).map_err(SampleError::from)?;
        let rd = base64::engine::general_purpose::STANDARD
            .decode(ev.report_data.trim())
            .map_err(SampleError::from)?;
        if rd.as_slice() != expected.report_data.as_slice() {
            return Err(VerifierError::ReportDataMismatch);
        }
        if let Some(want) = expected.init_data_digest {
            let got = ev.init_data.as_deref().map(hex::decode);
            match got {
                Some(Ok(got)) if got.as_slice() == want => {}
                _ => return Err(VerifierError::InitDataMismatch),
            }
        }
        Ok(TeeClaims::Sample(SampleClaims {
            svn: ev.svn,
            report_data: hex::encode(rd),
            init_data: ev.init_data,
            launch_digest: "abcde",
            platform_version: SamplePlatformVersion { major: 1, minor: 4 },
            debug: false,
        }))
    }
}
