//! The `sample` attester: no hardware, for development only. Chosen explicitly,
//! never as a fallback; the KBS's default policies never trust it.

use crate::{Attester, AttesterError};
use base64::Engine;
use kbs_types::Tee;

#[derive(Debug, Clone, Default)]
pub struct SampleAttester {
    /// Hex of an initdata digest to report, as a TEE would carry it in HOST_DATA.
    pub init_data: Option<String>,
}

impl SampleAttester {
    /// The sample TEE as a guest runs it: it reports `host_data` (hex, the host's
    /// stand-in for a launch-time register such as SNP `HOST_DATA`) when the host
    /// gave one, else the digest of the initdata the guest read (as untrusted as
    /// everything else the sample TEE says).
    pub fn reporting(host_data: Option<&str>, init_data_digest: Option<&[u8]>) -> Self {
        Self {
            init_data: host_data
                .map(str::to_owned)
                .or_else(|| init_data_digest.map(hex::encode)),
        }
    }
}

impl Attester for SampleAttester {
    fn tee(&self) -> Tee {
        Tee::Sample
    }

    fn evidence(&self, report_data: &[u8; 48]) -> Result<serde_json::Value, AttesterError> {
        // The bare digest, as guest-components' sample attester sends it and
        // Trustee's sample verifier compares it (no padding: there is no
        // 64-byte hardware field).
        let mut ev = serde_json::json!({
            "svn": "1",
            "report_data": base64::engine::general_purpose::STANDARD.encode(report_data),
        });
        if let Some(d) = &self.init_data {
            ev["init_data"] = serde_json::Value::String(d.clone());
        }
        Ok(ev)
    }

    fn bind_init_data(&self, digest: &[u8]) -> Result<(), AttesterError> {
        match &self.init_data {
            Some(have) if !have.eq_ignore_ascii_case(&hex::encode(digest)) => {
                Err(AttesterError::InitDataMismatch {
                    expected: hex::encode(digest),
                    found: have.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}
