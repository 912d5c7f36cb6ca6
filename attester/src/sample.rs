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
