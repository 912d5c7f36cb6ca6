//! Compact JWS/JWT with a closed set of algorithms: ES256 and EdDSA (Ed25519).
//!
//! The verifier is given one key and accepts only that key's algorithm, so a
//! token cannot pick its own algorithm ("none", HS256 with a public key, ...).

use crate::{b64u, unb64u, JoseError};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde_json::Value;
use zeroize::Zeroizing;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A private key that signs tokens.
pub enum SigningKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.alg())
    }
}

/// A public key that verifies tokens.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl SigningKey {
    pub fn generate_es256() -> Self {
        Self::Es256(p256::ecdsa::SigningKey::generate_from_rng(&mut rand::rng()))
    }

    pub fn generate_ed25519() -> Self {
        let seed = Zeroizing::new(<[u8; 32]>::generate_from_rng(&mut rand::rng()));
        Self::EdDsa(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Parse a PKCS#8 PEM private key (P-256 or Ed25519).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, JoseError> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::Es256(k));
        }
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::EdDsa)
            .map_err(|_| {
                JoseError::Key("expected a PKCS#8 PEM P-256 or Ed25519 private key".into())
            })
    }

    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, JoseError> {
        let doc = match self {
            Self::Es256(k) => k.to_pkcs8_pem(LineEnding::LF),
            Self::EdDsa(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        doc.map(|s| Zeroizing::new(s.to_string()))
            .map_err(|e| JoseError::Key(e.to_string()))
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Self::Es256(_) => "ES256",
            Self::EdDsa(_) => "EdDSA",
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Self::Es256(k) => VerifyingKey::Es256(*k.verifying_key()),
            Self::EdDsa(k) => VerifyingKey::EdDsa(k.verifying_key()),
        }
    }

    /// Sign `claims` as a compact JWT.
    pub fn sign(&self, claims: &Value) -> Result<String, JoseError> {
        let header = serde_json::json!({"alg": self.alg(), "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            b64u(header.to_string()),
            b64u(serde_json::to_vec(claims).map_err(|e| JoseError::Key(e.to_string()))?)
        );
        let sig = match self {
            Self::Es256(k) => {
                let s: p256::ecdsa::Signature = k.sign(signing_input.as_bytes());
                s.to_bytes().to_vec()
            }
            Self::EdDsa(k) => k.sign(signing_input.as_bytes()).to_bytes().to_vec(),
        };
        Ok(format!("{signing_input}.{}", b64u(sig)))
    }
}

impl VerifyingKey {
    /// Parse an SPKI PEM public key (P-256 or Ed25519).
    pub fn from_public_key_pem(pem: &str) -> Result<Self, JoseError> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::Es256(k));
        }
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(Self::EdDsa)
            .map_err(|_| JoseError::Key("expected an SPKI PEM P-256 or Ed25519 public key".into()))
    }

    pub fn to_public_key_pem(&self) -> Result<String, JoseError> {
        match self {
            Self::Es256(k) => k.to_public_key_pem(LineEnding::LF),
            Self::EdDsa(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .map_err(|e| JoseError::Key(e.to_string()))
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Self::Es256(_) => "ES256",
            Self::EdDsa(_) => "EdDSA",
        }
    }

    /// Verify signature and time claims; `exp` is mandatory. Returns the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Value, JoseError> {
        let malformed = |why: &str| JoseError::Malformed {
            what: "jwt",
            why: why.to_owned(),
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        let header: Value = serde_json::from_slice(&unb64u("jwt header", h)?)
            .map_err(|e| malformed(&e.to_string()))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != self.alg() {
            return Err(JoseError::UnsupportedAlg(alg.to_owned()));
        }
        if header.get("crit").is_some() {
            return Err(malformed("critical header extensions are not supported"));
        }
        let sig = unb64u("jwt signature", s)?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        let ok = match self {
            Self::Es256(k) => p256::ecdsa::Signature::from_slice(&sig)
                .map(|sig| k.verify(signing_input.as_bytes(), &sig).is_ok())
                .unwrap_or(false),
            Self::EdDsa(k) => ed25519_dalek::Signature::from_slice(&sig)
                .map(|sig| k.verify_strict(signing_input.as_bytes(), &sig).is_ok())
                .unwrap_or(false),
        };
        if !ok {
            return Err(JoseError::BadSignature);
        }
        let claims: Value = serde_json::from_slice(&unb64u("jwt payload", p)?)
            .map_err(|e| malformed(&e.to_string()))?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("missing numeric exp"))?;
        if now >= exp {
            return Err(JoseError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
            if now < nbf {
                return Err(JoseError::NotYetValid);
            }
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::now_secs;

    fn claims(exp: u64) -> Value {
        serde_json::json!({"role": "admin", "exp": exp})
    }

    #[test]
    fn sign_verify_both_algs() {
        for key in [SigningKey::generate_es256(), SigningKey::generate_ed25519()] {
            let t = key.sign(&claims(now_secs() + 60)).unwrap();
            let c = key.verifying_key().verify(&t, now_secs()).unwrap();
            assert_eq!(c["role"], "admin");
            // PEM round trip of both halves.
            let pem = key.to_pkcs8_pem().unwrap();
            let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
            let vk = VerifyingKey::from_public_key_pem(
                &again.verifying_key().to_public_key_pem().unwrap(),
            )
            .unwrap();
            vk.verify(&t, now_secs()).unwrap();
        }
    }

    #[test]
    fn rejects_expired_tampered_foreign_and_alg_swapped() {
        let key = SigningKey::generate_es256();
        let expired = key.sign(&claims(now_secs() - 1)).unwrap();
        assert!(matches!(
            key.verifying_key().verify(&expired, now_secs()),
            Err(JoseError::Expired)
        ));
        let good = key.sign(&claims(now_secs() + 60)).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = b64u(br#"{"role":"admin","exp":99999999999,"x":1}"#);
        assert!(matches!(
            key.verifying_key().verify(&parts.join("."), now_secs()),
            Err(JoseError::BadSignature)
        ));
        let other = SigningKey::generate_es256();
        assert!(matches!(
            other.verifying_key().verify(&good, now_secs()),
            Err(JoseError::BadSignature)
        ));
        let ed = SigningKey::generate_ed25519();
        assert!(matches!(
            ed.verifying_key().verify(&good, now_secs()),
            Err(JoseError::UnsupportedAlg(_))
        ));
        let none = format!("{}.{}.", b64u(br#"{"alg":"none"}"#), b64u(br#"{"exp":1}"#));
        assert!(key.verifying_key().verify(&none, now_secs()).is_err());
    }
}
