//! The attestation key (AK): decoding it, checking its TPM template against the
//! quote's signer, and verifying quote signatures with it.

use super::wire::{self, TpmPublicKey, TpmSignature};
use super::TpmError;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// An AK public key the verifier can check signatures with.
#[derive(Debug, Clone)]
pub enum AkKey {
    Rsa(rsa::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// DER `AlgorithmIdentifier` prefix of a SHA-256 `DigestInfo` (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

impl AkKey {
    /// Decode a DER `SubjectPublicKeyInfo` (the `ak_public` evidence field).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, TpmError> {
        if let Ok(k) = rsa::PublicKey::from_public_key_der(der) {
            return Ok(Self::Rsa(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P256(k));
        }
        Err(TpmError::AkPublic(
            "not an RSA or NIST P-256 SubjectPublicKeyInfo".into(),
        ))
    }

    /// Short algorithm label for the claims.
    pub fn algorithm(&self) -> String {
        match self {
            Self::Rsa(k) => format!("rsa{}", k.size() * 8),
            Self::P256(_) => "ecc-nist-p256".into(),
        }
    }

    /// Whether this key is the key in a `TPMT_PUBLIC`.
    fn matches(&self, tpm: &TpmPublicKey) -> bool {
        match (self, tpm) {
            (Self::Rsa(k), TpmPublicKey::Rsa { modulus, exponent }) => {
                let e = if *exponent == 0 { 65537 } else { *exponent };
                strip_zeros(&k.n_bytes()) == strip_zeros(modulus)
                    && strip_zeros(&k.e_bytes()) == strip_zeros(&e.to_be_bytes())
            }
            (Self::P256(k), TpmPublicKey::Ecc { curve, x, y }) => {
                if *curve != wire::TPM_ECC_NIST_P256 || x.len() > 32 || y.len() > 32 {
                    return false;
                }
                let mut point = [0u8; 65];
                point[0] = 0x04;
                point[33 - x.len()..33].copy_from_slice(x);
                point[65 - y.len()..].copy_from_slice(y);
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).is_ok_and(|t| t == *k)
            }
            _ => false,
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

/// Hierarchy handles, as the parent "qualified name" of a primary key.
const HIERARCHIES: [(u32, &str); 4] = [
    (0x4000_0001, "owner"),
    (0x4000_0007, "null"),
    (0x4000_000b, "endorsement"),
    (0x4000_000c, "platform"),
];

fn hash(alg: u16, parts: &[&[u8]]) -> Result<Vec<u8>, TpmError> {
    fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut h = D::new();
        parts.iter().for_each(|p| h.update(p));
        h.finalize().to_vec()
    }
    match alg {
        wire::TPM_ALG_SHA256 => Ok(run::<Sha256>(parts)),
        wire::TPM_ALG_SHA384 => Ok(run::<Sha384>(parts)),
        wire::TPM_ALG_SHA512 => Ok(run::<Sha512>(parts)),
        other => Err(TpmError::UnsupportedHash(other)),
    }
}

/// Check that the AK's TPM template (`TPMT_PUBLIC`) is the key in `ak_public`,
/// that it is a restricted signing key that never leaves its TPM, and that it
/// is the key the TPM names as the quote's signer. A restricted key cannot sign
/// data that starts with `TPM_GENERATED_VALUE` unless the TPM built it, which
/// is what makes the quote body trustworthy.
///
/// The quote names its signer by *qualified* name, `H(parentQN ‖ name)`. The
/// parent's qualified name comes from the evidence: it need not be trusted,
/// since a match for another key would need a hash collision. When it is a
/// hierarchy handle, the AK is a primary key of that hierarchy, which is returned.
pub fn check_template(
    ak: &AkKey,
    tpm_public: &[u8],
    parent_qualified_name: &[u8],
    qualified_signer: &[u8],
) -> Result<Option<&'static str>, TpmError> {
    // Accept TPM2B_PUBLIC (what tpm2-tools writes) as well as the bare
    // TPMT_PUBLIC: a TPMT_PUBLIC starts with its key type (1 or 0x23), never with
    // its own remaining length.
    let tpm_public = match tpm_public {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => tpm_public,
    };
    let public = wire::parse_public(tpm_public)?;
    if !ak.matches(&public.key) {
        return Err(TpmError::AkTemplateMismatch);
    }
    let need = wire::attr::FIXED_TPM
        | wire::attr::FIXED_PARENT
        | wire::attr::SENSITIVE_DATA_ORIGIN
        | wire::attr::RESTRICTED
        | wire::attr::SIGN;
    if public.attributes & need != need || public.attributes & wire::attr::DECRYPT != 0 {
        return Err(TpmError::AkNotRestrictedSigning(public.attributes));
    }
    let alg = public.name_alg;
    let mut name = alg.to_be_bytes().to_vec();
    name.extend(hash(alg, &[tpm_public])?);
    let mut qualified = alg.to_be_bytes().to_vec();
    qualified.extend(hash(alg, &[parent_qualified_name, &name])?);
    if qualified != qualified_signer {
        return Err(TpmError::SignerNameMismatch {
            quote: hex::encode(qualified_signer),
            ak: hex::encode(&qualified),
        });
    }
    Ok(HIERARCHIES
        .iter()
        .find(|(h, _)| parent_qualified_name == h.to_be_bytes())
        .map(|(_, n)| *n))
}

/// Verify that `sig` is `ak`'s signature over `message` (the raw TPMS_ATTEST).
///
/// Only SHA-256 signatures are accepted. The accept/reject decision is the RSA and
/// ECDSA crates' own verification; for RSA a failed check is then diagnosed, since
/// PKCS#1 v1.5 lets us tell a signature over *another* quote body (the body was
/// altered) from one that is not this key's at all (wrong key, damaged signature).
pub fn verify_signature(ak: &AkKey, message: &[u8], sig: &TpmSignature) -> Result<(), TpmError> {
    let digest = Sha256::digest(message);
    match (ak, sig) {
        (AkKey::Rsa(key), TpmSignature::RsaSsa { hash, sig }) => {
            if *hash != wire::TPM_ALG_SHA256 {
                return Err(TpmError::UnsupportedHash(*hash));
            }
            let scheme = rsa::Pkcs1v15Sign::new::<Sha256>();
            if key.verify(scheme, &digest, sig).is_ok() {
                return Ok(());
            }
            match recover_rsa_sha256_digest(key, sig) {
                Some(signed) if signed != digest.as_slice() => Err(TpmError::QuoteAltered),
                _ => Err(TpmError::BadSignature),
            }
        }
        (AkKey::P256(key), TpmSignature::Ecdsa { hash, r, s }) => {
            if *hash != wire::TPM_ALG_SHA256 {
                return Err(TpmError::UnsupportedHash(*hash));
            }
            if r.len() > 32 || s.len() > 32 {
                return Err(TpmError::BadSignature);
            }
            let mut rs = [0u8; 64];
            rs[32 - r.len()..32].copy_from_slice(r);
            rs[64 - s.len()..].copy_from_slice(s);
            let sig =
                p256::ecdsa::Signature::from_slice(&rs).map_err(|_| TpmError::BadSignature)?;
            key.verify_prehash(&digest, &sig)
                .map_err(|_| TpmError::BadSignature)
        }
        (ak, sig) => Err(TpmError::SignatureKeyMismatch {
            key: ak.algorithm(),
            signature: match sig {
                TpmSignature::RsaSsa { .. } => "rsassa",
                TpmSignature::Ecdsa { .. } => "ecdsa",
            },
        }),
    }
}

/// Undo the RSA public operation and return the SHA-256 digest inside a
/// well-formed EMSA-PKCS1-v1_5 encoding, if there is one. Diagnosis only.
fn recover_rsa_sha256_digest(key: &rsa::PublicKey, sig: &[u8]) -> Option<Vec<u8>> {
    let k = key.size();
    if sig.len() != k {
        return None;
    }
    let s = rsa::BoxedUint::from_be_slice(sig, key.n_bits_precision()).ok()?;
    if s >= *key.n().as_ref() {
        return None;
    }
    let m = rsa::hazmat::rsa_encrypt(key, &s).ok()?;
    let raw = m.to_be_bytes();
    let mut em = vec![0u8; k];
    let raw = strip_zeros(&raw);
    if raw.len() > k {
        return None;
    }
    em[k - raw.len()..].copy_from_slice(raw);
    // 00 01 FF..FF 00 DigestInfo(SHA-256) H
    let t_len = SHA256_DIGEST_INFO.len() + 32;
    if k < t_len + 11 || em[0] != 0 || em[1] != 1 {
        return None;
    }
    let ps_end = k - t_len - 1;
    if em[2..ps_end].iter().any(|b| *b != 0xff) || em[ps_end] != 0 {
        return None;
    }
    if em[ps_end + 1..k - 32] != SHA256_DIGEST_INFO {
        return None;
    }
    Some(em[k - 32..].to_vec())
}
