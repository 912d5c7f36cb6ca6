//! Attestation tokens: ES256 JWTs in the EAR shape, signed by the KBS.
//!
//! A token carries the appraisal (`ear.status`), the verified claims and the
//! TEE public key, so a client can fetch resources with `Authorization: Bearer`
//! until it expires without attesting again. Resources are encrypted to the
//! key inside the token, so a stolen token alone releases nothing readable.

use crate::storage::{Key, Store, StoreError};
use coco_jose::jwt::{SigningKey, VerifyingKey};
use coco_jose::JoseError;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid token: {0}")]
    Invalid(#[from] JoseError),
}

#[derive(Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    verify: VerifyingKey,
    ttl: Duration,
}

/// What goes into a token.
#[derive(Debug)]
pub struct Appraisal<'a> {
    pub tee: &'a str,
    pub status: &'a str,
    pub claims: Value,
    pub trust_vector: Option<Value>,
    pub tee_pubkey: &'a kbs_types::TeePubKey,
    pub init_data: Option<Value>,
}

impl TokenIssuer {
    /// Load the signing key from `path`, or from the store, generating and
    /// persisting one on first start.
    pub fn load(
        path: Option<&std::path::Path>,
        store: &dyn Store,
        ttl: Duration,
    ) -> Result<Self, TokenError> {
        let key = if let Some(path) = path {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| TokenError::Key(e.to_string()))?
        } else if let Some(pem) = store.get(&Key::TokenSigningKey)? {
            let pem = String::from_utf8(pem).map_err(|e| TokenError::Key(e.to_string()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| TokenError::Key(e.to_string()))?
        } else {
            let key = SigningKey::generate_es256();
            let pem = key
                .to_pkcs8_pem()
                .map_err(|e| TokenError::Key(e.to_string()))?;
            store.put(&Key::TokenSigningKey, pem.as_bytes())?;
            key
        };
        if !matches!(key, SigningKey::Es256(_)) {
            return Err(TokenError::Key(
                "token signing key must be P-256 (ES256)".into(),
            ));
        }
        let verify = key.verifying_key();
        Ok(Self { key, verify, ttl })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Public key that verifies our tokens (for relying parties).
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verify
    }

    pub fn issue(&self, a: &Appraisal<'_>) -> Result<String, TokenError> {
        let now = coco_jose::now_secs();
        let mut cpu0 = json!({
            "ear.status": a.status,
            "ear.veraison.annotated-evidence": { a.tee: a.claims },
        });
        if let Some(tv) = &a.trust_vector {
            cpu0["ear.trustworthiness-vector"] = tv.clone();
        }
        let mut claims = json!({
            "iss": "coco-kbs",
            "iat": now,
            "exp": now + self.ttl.as_secs(),
            "jti": hex::encode(coco_jose::random_bytes::<16>()),
            "eat_profile": "tag:github.com,2023:veraison/ear",
            "ear.verifier-id": {"developer": "coco-kbs", "build": env!("CARGO_PKG_VERSION")},
            "submods": {"cpu0": cpu0},
            "tee": a.tee,
            "tee-pubkey": a.tee_pubkey,
        });
        if let Some(init) = &a.init_data {
            // What identifies the initdata, not its documents: a generated agent
            // policy makes `data` tens of KiB, past what a bearer token may be
            // (coco_jose::jwt::MAX_TOKEN_LEN), and resource policies bind to the
            // digest. The attestation policy still sees the whole initdata.
            claims["init_data"] = serde_json::json!({
                "digest": init.get("digest").cloned().unwrap_or(Value::Null),
                "algorithm": init.get("algorithm").cloned().unwrap_or(Value::Null),
            });
        }
        self.key
            .sign(&claims)
            .map_err(|e| TokenError::Key(e.to_string()))
    }

    /// Verify one of our tokens; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Value, TokenError> {
        Ok(self.verify.verify(token, coco_jose::now_secs())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_initdata_keeps_the_token_small_and_its_digest_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::FsStore::open(dir.path()).unwrap();
        let issuer = TokenIssuer::load(None, &store, Duration::from_secs(60)).unwrap();
        let tee_key = coco_jose::keys::TeeKeyPair::generate_ec().public_jwk();
        let policy = "x".repeat(64 * 1024);
        let token = issuer
            .issue(&Appraisal {
                tee: "sample",
                status: "warning",
                claims: serde_json::json!({}),
                trust_vector: None,
                tee_pubkey: &tee_key,
                init_data: Some(serde_json::json!({
                    "digest": "ab".repeat(48),
                    "algorithm": "sha384",
                    "data": {"policy.rego": policy},
                })),
            })
            .unwrap();
        assert!(
            token.len() < coco_jose::jwt::MAX_TOKEN_LEN,
            "{}",
            token.len()
        );
        let claims = issuer.verify(&token).unwrap();
        assert_eq!(claims["init_data"]["digest"], "ab".repeat(48));
        assert_eq!(claims["init_data"]["algorithm"], "sha384");
        assert!(claims["init_data"].get("data").is_none());
    }
}
