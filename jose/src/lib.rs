//! The small subset of JOSE that the KBS and the attester share.
//!
//! - [`binding`]: the RCAR `report_data` hash that ties evidence to a session.
//! - [`initdata`]: the pod's initdata document, its disk and annotation forms.
//! - [`jwe`]: resources encrypted to the TEE's ephemeral key (ECDH-ES+A256KW on
//!   P-256, or RSA-OAEP-256; content A256GCM), flattened JSON serialization.
//! - [`jwt`]: compact JWS with exactly the algorithms we accept (ES256, EdDSA).
//! - [`keys`]: TEE key pairs and their JWK form.
//!
//! Written on RustCrypto rather than a general JOSE library on purpose: we accept
//! a closed set of algorithms, so alg-confusion and "none" cannot happen.

pub mod binding;
pub mod initdata;
pub mod jwe;
pub mod jwt;
pub mod keys;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Errors from any JOSE operation.
#[derive(Debug, thiserror::Error)]
pub enum JoseError {
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unsupported algorithm `{0}`")]
    UnsupportedAlg(String),
    #[error("bad key: {0}")]
    Key(String),
    #[error("signature verification failed")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("decryption failed (wrong key or tampered ciphertext)")]
    Decrypt,
    #[error("encryption failed: {0}")]
    Encrypt(String),
}

pub(crate) fn b64u(data: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub(crate) fn unb64u(what: &'static str, s: &str) -> Result<Vec<u8>, JoseError> {
    // Some producers pad base64url; accept it, strictness buys nothing here.
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| JoseError::Malformed {
            what,
            why: e.to_string(),
        })
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `N` bytes from the operating system's CSPRNG (through `rand`'s thread RNG).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use p256::elliptic_curve::Generate;
    <[u8; N]>::generate_from_rng(&mut rand::rng())
}
