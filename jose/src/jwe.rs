//! JWE (flattened JSON serialization) as RCAR returns resources.
//!
//! Key management: ECDH-ES+A256KW on P-256 or P-521 with the Concat KDF of RFC 7518 §4.6
//! (empty apu/apv), or RSA-OAEP-256. Content encryption: A256GCM with the ASCII
//! of the base64url protected header as AAD.

use crate::keys::{
    ec_point, TeeKeyPair, TeePublicKey, ALG_ECDH_ES_A256KW, ALG_RSA_OAEP_256, CRV_P256, CRV_P521,
};
use crate::{b64u, unb64u, JoseError};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::elliptic_curve::Generate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

pub const ENC_A256GCM: &str = "A256GCM";

/// Wire form. Field names as in RFC 7516 §7.2.2 and `kbs_types::Response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlattenedJwe {
    pub protected: String,
    pub encrypted_key: String,
    pub iv: String,
    pub ciphertext: String,
    pub tag: String,
}

/// The protected header, serialized exactly as `kbs_types::ProtectedHeader`
/// does (alg, enc, then the other fields in key order) so that peers which
/// rebuild the AAD from the parsed header get the same bytes we used.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    enc: String,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// Encrypt `plaintext` to `recipient`.
pub fn encrypt(recipient: &TeePublicKey, plaintext: &[u8]) -> Result<FlattenedJwe, JoseError> {
    let mut rng = rand::rng();
    let cek = Zeroizing::new(<[u8; 32]>::generate_from_rng(&mut rng));
    let (header, encrypted_key) = match recipient {
        TeePublicKey::Ec(pk) => {
            let eph = p256::ecdh::EphemeralSecret::generate_from_rng(&mut rng);
            let shared = eph.diffie_hellman(pk);
            let epk = eph.public_key().to_sec1_point(false);
            ecdh_header(
                shared.raw_secret_bytes().as_slice(),
                &cek,
                CRV_P256,
                epk.x().map(b64u).unwrap_or_default(),
                epk.y().map(b64u).unwrap_or_default(),
            )?
        }
        TeePublicKey::Ec521(pk) => {
            let eph = p521::ecdh::EphemeralSecret::generate_from_rng(&mut rng);
            let shared = eph.diffie_hellman(pk);
            let epk = eph.public_key().to_sec1_point(false);
            ecdh_header(
                shared.raw_secret_bytes().as_slice(),
                &cek,
                CRV_P521,
                epk.x().map(b64u).unwrap_or_default(),
                epk.y().map(b64u).unwrap_or_default(),
            )?
        }
        TeePublicKey::Rsa(pk) => {
            let wrapped = pk
                .encrypt(&mut rng, rsa::Oaep::<Sha256>::new(), cek.as_slice())
                .map_err(|e| JoseError::Encrypt(e.to_string()))?;
            (
                Header {
                    alg: ALG_RSA_OAEP_256.into(),
                    enc: ENC_A256GCM.into(),
                    other: BTreeMap::new(),
                },
                wrapped,
            )
        }
    };
    let header_json =
        serde_json::to_string(&header).map_err(|e| JoseError::Encrypt(e.to_string()))?;
    let protected = b64u(header_json);
    let iv = <[u8; 12]>::generate_from_rng(&mut rng);
    let cipher =
        Aes256Gcm::new_from_slice(cek.as_slice()).map_err(|e| JoseError::Encrypt(e.to_string()))?;
    let mut sealed = cipher
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| JoseError::Encrypt("AES-GCM".into()))?;
    let tag = sealed.split_off(sealed.len() - 16);
    Ok(FlattenedJwe {
        protected,
        encrypted_key: b64u(encrypted_key),
        iv: b64u(iv),
        ciphertext: b64u(sealed),
        tag: b64u(tag),
    })
}

/// The ECDH-ES+A256KW header and wrapped CEK for shared secret `z`.
fn ecdh_header(
    z: &[u8],
    cek: &[u8; 32],
    crv: &str,
    x: String,
    y: String,
) -> Result<(Header, Vec<u8>), JoseError> {
    let kek = concat_kdf_a256kw(z);
    let wrapped = aes_kw_wrap(&kek, cek)?;
    let mut other = BTreeMap::new();
    other.insert(
        "epk".to_owned(),
        serde_json::json!({"kty": "EC", "crv": crv, "x": x, "y": y}),
    );
    Ok((
        Header {
            alg: ALG_ECDH_ES_A256KW.into(),
            enc: ENC_A256GCM.into(),
            other,
        },
        wrapped,
    ))
}

/// Decrypt a JWE addressed to `key`.
pub fn decrypt(jwe: &FlattenedJwe, key: &TeeKeyPair) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    let header_bytes = unb64u("jwe protected header", &jwe.protected)?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|e| JoseError::Malformed {
            what: "jwe protected header",
            why: e.to_string(),
        })?;
    if header.enc != ENC_A256GCM {
        return Err(JoseError::UnsupportedAlg(header.enc));
    }
    let encrypted_key = unb64u("jwe encrypted_key", &jwe.encrypted_key)?;
    let cek: Zeroizing<Vec<u8>> = match (header.alg.as_str(), key) {
        (ALG_ECDH_ES_A256KW, TeeKeyPair::Ec(sk)) => {
            let (x, y) = epk_coordinates(&header, CRV_P256)?;
            let epk = ec_point::<p256::NistP256>(&x, &y, 32, CRV_P256)?;
            let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), epk.as_affine());
            let kek = concat_kdf_a256kw(shared.raw_secret_bytes().as_slice());
            aes_kw_unwrap(&kek, &encrypted_key)?
        }
        (ALG_ECDH_ES_A256KW, TeeKeyPair::Ec521(sk)) => {
            let (x, y) = epk_coordinates(&header, CRV_P521)?;
            let epk = ec_point::<p521::NistP521>(&x, &y, 66, CRV_P521)?;
            let shared = p521::ecdh::diffie_hellman(sk.to_nonzero_scalar(), epk.as_affine());
            let kek = concat_kdf_a256kw(shared.raw_secret_bytes().as_slice());
            aes_kw_unwrap(&kek, &encrypted_key)?
        }
        (ALG_RSA_OAEP_256, TeeKeyPair::Rsa(sk)) => Zeroizing::new(
            sk.decrypt(rsa::Oaep::<Sha256>::new(), &encrypted_key)
                .map_err(|_| JoseError::Decrypt)?,
        ),
        (alg, _) => return Err(JoseError::UnsupportedAlg(alg.to_owned())),
    };
    let iv: [u8; 12] = unb64u("jwe iv", &jwe.iv)?
        .try_into()
        .map_err(|_| JoseError::Malformed {
            what: "jwe iv",
            why: "must be 12 bytes".into(),
        })?;
    let mut sealed = unb64u("jwe ciphertext", &jwe.ciphertext)?;
    let tag = unb64u("jwe tag", &jwe.tag)?;
    if tag.len() != 16 {
        return Err(JoseError::Malformed {
            what: "jwe tag",
            why: "must be 16 bytes".into(),
        });
    }
    sealed.extend_from_slice(&tag);
    let cipher = Aes256Gcm::new_from_slice(&cek).map_err(|_| JoseError::Decrypt)?;
    cipher
        .decrypt(
            &Nonce::from(iv),
            Payload {
                msg: &sealed,
                aad: jwe.protected.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| JoseError::Decrypt)
}

/// The ephemeral key's coordinates, which must be on the recipient's curve.
fn epk_coordinates(header: &Header, crv: &str) -> Result<(Vec<u8>, Vec<u8>), JoseError> {
    let epk = header.other.get("epk").ok_or(JoseError::Malformed {
        what: "jwe header",
        why: "missing epk".into(),
    })?;
    let field = |name: &'static str| {
        epk.get(name)
            .and_then(|v| v.as_str())
            .ok_or(JoseError::Malformed {
                what: "jwe epk",
                why: format!("missing {name}"),
            })
    };
    if field("crv")? != crv {
        return Err(JoseError::UnsupportedAlg(field("crv")?.to_owned()));
    }
    Ok((unb64u("epk x", field("x")?)?, unb64u("epk y", field("y")?)?))
}

/// Concat KDF (NIST SP 800-56A, RFC 7518 §4.6.2) for a 256-bit A256KW key with
/// empty PartyUInfo and PartyVInfo. One SHA-256 round suffices for 256 bits.
fn concat_kdf_a256kw(z: &[u8]) -> Zeroizing<[u8; 32]> {
    let alg = ALG_ECDH_ES_A256KW.as_bytes();
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    h.update((alg.len() as u32).to_be_bytes());
    h.update(alg);
    h.update(0u32.to_be_bytes()); // apu
    h.update(0u32.to_be_bytes()); // apv
    h.update(256u32.to_be_bytes()); // keydatalen in bits
    Zeroizing::new(h.finalize().into())
}

fn aes_kw_wrap(kek: &[u8; 32], cek: &[u8; 32]) -> Result<Vec<u8>, JoseError> {
    let kw = aes_kw::KwAes256::new(kek.into());
    let mut out = [0u8; 40];
    kw.wrap_key(cek, &mut out)
        .map(|w| w.to_vec())
        .map_err(|e| JoseError::Encrypt(e.to_string()))
}

fn aes_kw_unwrap(kek: &[u8; 32], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    if wrapped.len() != 40 {
        return Err(JoseError::Decrypt);
    }
    let kw = aes_kw::KwAes256::new(kek.into());
    let mut out = Zeroizing::new([0u8; 32]);
    kw.unwrap_key(wrapped, out.as_mut())
        .map_err(|_| JoseError::Decrypt)?;
    Ok(Zeroizing::new(out.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(kp: &TeeKeyPair) {
        let pk = TeePublicKey::from_jwk(&kp.public_jwk()).unwrap();
        let jwe = encrypt(&pk, b"top secret").unwrap();
        assert_eq!(decrypt(&jwe, kp).unwrap().as_slice(), b"top secret");
    }

    #[test]
    fn ec_round_trip() {
        round_trip(&TeeKeyPair::generate_ec());
    }

    #[test]
    fn p521_round_trip() {
        round_trip(&TeeKeyPair::generate_ec521());
    }

    #[test]
    fn rsa_round_trip() {
        round_trip(&TeeKeyPair::generate_rsa().unwrap());
    }

    #[test]
    fn parses_as_kbs_types_response_with_the_same_aad() {
        // Trustee clients parse the body as kbs_types::Response and rebuild the
        // AAD from the parsed header: it must equal the protected string we used.
        let kp = TeeKeyPair::generate_ec();
        let pk = TeePublicKey::from_jwk(&kp.public_jwk()).unwrap();
        let jwe = encrypt(&pk, b"x").unwrap();
        let resp: kbs_types::Response =
            serde_json::from_value(serde_json::to_value(&jwe).unwrap()).unwrap();
        assert_eq!(
            resp.protected.generate_aad().unwrap(),
            jwe.protected.as_bytes()
        );
        assert_eq!(resp.tag.len(), 16);
    }

    #[test]
    fn tampering_is_detected() {
        let kp = TeeKeyPair::generate_ec();
        let pk = TeePublicKey::from_jwk(&kp.public_jwk()).unwrap();
        let jwe = encrypt(&pk, b"secret").unwrap();
        let mut ct = unb64u("t", &jwe.ciphertext).unwrap();
        ct[0] ^= 1;
        let bad = FlattenedJwe {
            ciphertext: b64u(ct),
            ..jwe.clone()
        };
        assert!(matches!(decrypt(&bad, &kp), Err(JoseError::Decrypt)));
        // Another key cannot decrypt.
        let other = TeeKeyPair::generate_ec();
        assert!(matches!(decrypt(&jwe, &other), Err(JoseError::Decrypt)));
    }
}
