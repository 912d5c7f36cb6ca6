//! The RCAR binding of evidence to a session.
//!
//! `report_data` = SHA-384 over the RFC 8785 (JCS) canonical JSON of
//! `{"nonce":..,"tee-pubkey":..[,"additional-evidence":..]}`. The attester puts
//! it into the hardware report; the KBS recomputes it from what the client sent
//! and the verifier compares byte for byte.

use kbs_types::TeePubKey;
use sha2::{Digest, Sha384};

/// SHA-384 of the canonical runtime data.
pub fn runtime_data_hash(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    additional_evidence: Option<&str>,
) -> Result<[u8; 48], crate::JoseError> {
    let mut obj = serde_json::json!({
        "nonce": nonce,
        "tee-pubkey": tee_pubkey,
    });
    if let Some(extra) = additional_evidence.filter(|s| !s.is_empty()) {
        obj["additional-evidence"] = serde_json::Value::String(extra.to_owned());
    }
    let canon =
        serde_json_canonicalizer::to_vec(&obj).map_err(|e| crate::JoseError::Malformed {
            what: "runtime data",
            why: e.to_string(),
        })?;
    Ok(Sha384::digest(&canon).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TeePubKey {
        TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "eA".into(),
            y: "eQ".into(),
        }
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        // JCS sorts keys: "alg" < "crv" < "kty" < "x" < "y", "nonce" < "tee-pubkey".
        let expected = br#"{"nonce":"n","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"eA","y":"eQ"}}"#;
        let want: [u8; 48] = Sha384::digest(expected).into();
        assert_eq!(runtime_data_hash("n", &key(), None).unwrap(), want);
        // Empty additional evidence is omitted, as the attesters do.
        assert_eq!(runtime_data_hash("n", &key(), Some("")).unwrap(), want);
    }

    #[test]
    fn every_input_changes_the_hash() {
        let base = runtime_data_hash("n", &key(), None).unwrap();
        assert_ne!(base, runtime_data_hash("m", &key(), None).unwrap());
        assert_ne!(base, runtime_data_hash("n", &key(), Some("x")).unwrap());
        let mut other = key();
        if let TeePubKey::EC { x, .. } = &mut other {
            *x = "eB".into();
        }
        assert_ne!(base, runtime_data_hash("n", &other, None).unwrap());
    }
}
