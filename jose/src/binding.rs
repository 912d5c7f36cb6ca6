//! The RCAR binding of evidence to a session.
//!
//! `report_data` = SHA-384 over the RFC 8785 (JCS) canonical JSON of
//! `{"additional-evidence":..,"nonce":..,"tee-pubkey":..}`. The
//! `additional-evidence` key is always present, as the empty string when there
//! is none: guest-components' RCAR client builds exactly this object
//! (`kbs_protocol/src/client/rcar_client.rs` `get_composite_evidence` @da8d93f)
//! and Trustee's KBS verifies the hash of the structured runtime data it
//! receives. The attester puts the digest into the hardware report; the KBS
//! recomputes it from what the client sent and the verifier compares.
//!
//! SHA-384 is the only algorithm: it is the one Trustee's built-in attestation
//! service uses for every TEE but IBM SE (`kbs/src/attestation/coco/builtin.rs`
//! @78962cd), and the default of guest-components' client when the challenge
//! selects none.

use kbs_types::TeePubKey;
use sha2::{Digest, Sha384};

/// The `/auth` `extra-params` key listing the client's hash algorithms, and the
/// challenge's key naming the one chosen (guest-components `rcar_client.rs`).
pub const SUPPORTED_HASH_ALGORITHMS: &str = "supported-hash-algorithms";
pub const SELECTED_HASH_ALGORITHM: &str = "selected-hash-algorithm";
/// The binding's hash algorithm by its RCAR name.
pub const BINDING_HASH_ALGORITHM: &str = "sha384";

/// SHA-384 of the canonical runtime data. `additional_evidence` is the
/// composite evidence's `additional_evidence` string ("" when none).
pub fn runtime_data_hash(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    additional_evidence: &str,
) -> Result<[u8; 48], crate::JoseError> {
    let obj = serde_json::json!({
        "additional-evidence": additional_evidence,
        "nonce": nonce,
        "tee-pubkey": tee_pubkey,
    });
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
    fn canonical_form_is_sorted_and_compact_with_the_empty_additional_evidence() {
        // JCS sorts keys: "additional-evidence" < "nonce" < "tee-pubkey", and
        // "alg" < "crv" < "kty" < "x" < "y" inside the JWK.
        let expected = br#"{"additional-evidence":"","nonce":"n","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"eA","y":"eQ"}}"#;
        let want: [u8; 48] = Sha384::digest(expected).into();
        assert_eq!(runtime_data_hash("n", &key(), "").unwrap(), want);
    }

    /// The capture of Trustee's kbs-client (tools/kbs-client @78962cd with
    /// guest-components da8d93f): its sample evidence carries exactly this hash.
    #[test]
    fn matches_trustee_kbs_client_capture() {
        let cap: serde_json::Value = serde_json::from_str(include_str!(
            "../../kbs/testdata/peers/trustee-client/sample-handshake-ec.json"
        ))
        .unwrap();
        let att = &cap["attest_request"];
        let jwk: TeePubKey =
            serde_json::from_value(att["runtime-data"]["tee-pubkey"].clone()).unwrap();
        let nonce = att["runtime-data"]["nonce"].as_str().unwrap();
        let extra = att["tee-evidence"]["additional_evidence"].as_str().unwrap();
        let got = runtime_data_hash(nonce, &jwk, extra).unwrap();
        use base64::Engine;
        let carried = base64::engine::general_purpose::STANDARD
            .decode(
                att["tee-evidence"]["primary_evidence"]["report_data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(carried, got.to_vec());
    }

    #[test]
    fn every_input_changes_the_hash() {
        let base = runtime_data_hash("n", &key(), "").unwrap();
        assert_ne!(base, runtime_data_hash("m", &key(), "").unwrap());
        assert_ne!(base, runtime_data_hash("n", &key(), "x").unwrap());
        let mut other = key();
        if let TeePubKey::EC { x, .. } = &mut other {
            *x = "eB".into();
        }
        assert_ne!(base, runtime_data_hash("n", &other, "").unwrap());
    }
}

/// The initdata digest as an `N`-byte TEE register holds it: zero-padded when
/// shorter, truncated when longer (SNP HOST_DATA and the vTPM PCR-8 extend value
/// are 32 bytes, TDX MRCONFIGID 48). The one rule the attesters and the KBS
/// verifiers share; Trustee's verifiers pad or truncate the same way
/// (`regularize_data`, deps/verifier/src/lib.rs, Trustee 78962cd).
pub fn init_data_register<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = digest.len().min(N);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

/// The digest algorithms an initdata document may name (its `algorithm` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitDataAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl InitDataAlgorithm {
    /// The algorithm for its initdata name (`sha256`, `sha384`, `sha512`).
    pub fn from_name(name: &str) -> Result<Self, InitDataError> {
        match name {
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            other => Err(InitDataError::Algorithm(other.to_owned())),
        }
    }

    /// The initdata name of the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Hash of `data` (32, 48 or 64 bytes).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::{Sha256, Sha512};
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha384 => Sha384::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl std::fmt::Display for InitDataAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Initdata as the attest request carries it (`{"format":"toml","body":..}`).
#[derive(Debug, Clone)]
pub struct InitData {
    /// Digest of the TOML text with the algorithm it names.
    pub digest: Vec<u8>,
    /// The algorithm the document names.
    pub algorithm: InitDataAlgorithm,
    /// The `[data]` table as JSON (file name → content).
    pub data: serde_json::Value,
    /// The same `[data]` table as file name → content.
    pub files: std::collections::BTreeMap<String, String>,
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
    #[error("initdata `data.{0}` is not a string (every entry is a file's text)")]
    Data(String),
}

/// Parse initdata TOML and compute its digest: the hash of the TOML text exactly
/// as delivered, with the algorithm the TOML itself names (Trustee's
/// `kbs/docs/initdata.md`). This is the one implementation the KBS, the
/// attestation agent, the guest agent and `coco-image` share, so the value the
/// host binds at launch and the values the guest and the KBS expect cannot drift.
pub fn parse_init_data(format: &str, body: &str) -> Result<InitData, InitDataError> {
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
    let algorithm = InitDataAlgorithm::from_name(&field("algorithm"))?;
    let mut files = std::collections::BTreeMap::new();
    match doc.get("data") {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (k, v) in t {
                let text = v.as_str().ok_or_else(|| InitDataError::Data(k.clone()))?;
                files.insert(k.clone(), text.to_owned());
            }
        }
        Some(_) => return Err(InitDataError::Data(String::new())),
    }
    let data = if doc.contains_key("data") {
        serde_json::Value::Object(
            files
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    } else {
        serde_json::Value::Null
    };
    Ok(InitData {
        digest: algorithm.digest(body.as_bytes()),
        algorithm,
        data,
        files,
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
        assert_eq!(d.files["aa.toml"], "[token_configs]\n");
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
        assert!(matches!(
            parse_init_data("toml", &format!("{TOML}n = 1\n")),
            Err(InitDataError::Data(k)) if k == "n"
        ));
        assert!(matches!(
            parse_init_data(
                "toml",
                "version = \"0.1.0\"\nalgorithm = \"sha256\"\ndata = 1\n"
            ),
            Err(InitDataError::Data(_))
        ));
    }

    #[test]
    fn every_algorithm_has_its_length_and_name() {
        for (name, len) in [("sha256", 32), ("sha384", 48), ("sha512", 64)] {
            let d = parse_init_data("toml", &TOML.replace("sha384", name)).unwrap();
            assert_eq!(d.digest.len(), len);
            assert_eq!(d.algorithm.to_string(), name);
            assert_eq!(serde_json::to_value(d.algorithm).unwrap(), name);
        }
        let none =
            parse_init_data("toml", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n").unwrap();
        assert!(none.files.is_empty());
        assert!(none.data.is_null());
    }
}
