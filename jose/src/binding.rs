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

/// Initdata as the attest request carries it (`{"format":"toml","body":..}`).
#[derive(Debug, Clone)]
pub struct InitData {
    /// Digest of the TOML text with the algorithm it names.
    pub digest: Vec<u8>,
    /// The algorithm (`sha256`, `sha384`, `sha512`).
    pub algorithm: String,
    /// The `[data]` table as JSON (file name → content).
    pub data: serde_json::Value,
}

/// Why initdata was refused.
#[derive(Debug, thiserror::Error)]
pub enum InitDataError {
    #[error("initdata format `{0}` is not supported (only toml)")]
    Format(String),
    #[error("initdata is not valid TOML: {0}")]
    Toml(String),
    #[error("initdata version `{0}` is not supported (expected 0.1.0)")]
    Version(String),
    #[error("initdata algorithm `{0}` is not supported (sha256, sha384, sha512)")]
    Algorithm(String),
}

/// Parse initdata TOML and compute its digest: the hash of the TOML text exactly
/// as delivered, with the algorithm the TOML itself names (Trustee's
/// `kbs/docs/initdata.md`).
pub fn parse_init_data(format: &str, body: &str) -> Result<InitData, InitDataError> {
    use sha2::{Sha256, Sha512};
    if format != "toml" {
        return Err(InitDataError::Format(format.to_owned()));
    }
    let doc: toml::Table = body
        .parse()
        .map_err(|e: toml::de::Error| InitDataError::Toml(e.to_string()))?;
    let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let version = field("version");
    if version != "0.1.0" {
        return Err(InitDataError::Version(version));
    }
    let algorithm = field("algorithm");
    let digest = match algorithm.as_str() {
        "sha256" => Sha256::digest(body.as_bytes()).to_vec(),
        "sha384" => Sha384::digest(body.as_bytes()).to_vec(),
        "sha512" => Sha512::digest(body.as_bytes()).to_vec(),
        _ => return Err(InitDataError::Algorithm(algorithm)),
    };
    let data = doc
        .get("data")
        .map(|d| serde_json::to_value(d).unwrap_or(serde_json::Value::Null))
        .unwrap_or(serde_json::Value::Null);
    Ok(InitData {
        digest,
        algorithm,
        data,
    })
}

#[cfg(test)]
mod init_data_tests {
    use super::*;

    const TOML: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = '''\n[token_configs]\n'''\n";

    #[test]
    fn digest_is_of_the_text_with_the_named_algorithm() {
        let d = parse_init_data("toml", TOML).unwrap();
        assert_eq!(d.digest, Sha384::digest(TOML.as_bytes()).to_vec());
        assert_eq!(d.data["aa.toml"], "[token_configs]\n");
        let d256 = parse_init_data("toml", &TOML.replace("sha384", "sha256")).unwrap();
        assert_eq!(d256.digest.len(), 32);
    }

    #[test]
    fn refuses_unknown_things() {
        assert!(matches!(
            parse_init_data("json", TOML),
            Err(InitDataError::Format(_))
        ));
        assert!(matches!(
            parse_init_data("toml", &TOML.replace("sha384", "md5")),
            Err(InitDataError::Algorithm(_))
        ));
        assert!(matches!(
            parse_init_data("toml", &TOML.replace("0.1.0", "9")),
            Err(InitDataError::Version(_))
        ));
        assert!(matches!(
            parse_init_data("toml", "x = "),
            Err(InitDataError::Toml(_))
        ));
    }
}
