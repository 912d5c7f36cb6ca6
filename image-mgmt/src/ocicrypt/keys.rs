//! Asymmetric keys for JWE recipients, loaded from PEM.

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};

use crate::error::{Error, Result};

/// A private key that can unwrap JWE recipients.
#[derive(Clone)]
pub enum PrivateKey {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivateKey::Rsa(_) => "PrivateKey::Rsa(..)",
            PrivateKey::P256(_) => "PrivateKey::P256(..)",
            PrivateKey::P384(_) => "PrivateKey::P384(..)",
        })
    }
}

impl PrivateKey {
    /// Parses PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`) PEM.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(pem).map_err(|_| Error::Key("PEM is not UTF-8".into()))?;
        if let Ok(k) = rsa::PrivateKey::from_pkcs8_pem(text) {
            return Ok(PrivateKey::Rsa(Box::new(k)));
        }
        if let Ok(k) = rsa::PrivateKey::from_pkcs1_pem(text) {
            return Ok(PrivateKey::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
            return Ok(PrivateKey::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_pem(text) {
            return Ok(PrivateKey::P384(k));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
            return Ok(PrivateKey::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(text) {
            return Ok(PrivateKey::P384(k));
        }
        Err(Error::Key(
            "not an RSA, P-256 or P-384 private key in PKCS#8, PKCS#1 or SEC1 PEM".into(),
        ))
    }
}

/// A public key a layer key can be wrapped for.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Rsa(Box<rsa::PublicKey>),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
}

impl PublicKey {
    /// Parses a SubjectPublicKeyInfo (`PUBLIC KEY`) PEM.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(pem).map_err(|_| Error::Key("PEM is not UTF-8".into()))?;
        if let Ok(k) = rsa::PublicKey::from_public_key_pem(text) {
            return Ok(PublicKey::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::PublicKey::from_public_key_pem(text) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_pem(text) {
            return Ok(PublicKey::P384(k));
        }
        Err(Error::Key(
            "not an RSA, P-256 or P-384 public key PEM".into(),
        ))
    }
}
