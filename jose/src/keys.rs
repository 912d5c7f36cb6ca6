//! TEE key pairs: generated in the guest per boot, public half sent as a JWK.

use crate::{b64u, unb64u, JoseError};
use kbs_types::TeePubKey;
use p256::elliptic_curve::sec1::{FromSec1Point, ToSec1Point};
use p256::elliptic_curve::Generate;
use rsa::traits::PublicKeyParts;

/// JWE key-management algorithm names as they appear in the JWK and header.
pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
pub const CRV_P256: &str = "P-256";
pub const CRV_P521: &str = "P-521";

/// A private key the KBS encrypts resources to.
pub enum TeeKeyPair {
    Ec(p256::SecretKey),
    /// P-521, which Trustee's and guest-components' clients may use
    /// (`kbs_protocol/src/keypair.rs` @da8d93f, `EcdhEsA256KwP521`).
    Ec521(Box<p521::SecretKey>),
    Rsa(Box<rsa::PrivateKey>),
}

impl std::fmt::Debug for TeeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            Self::Ec(_) => f.write_str("TeeKeyPair::Ec(..)"),
            Self::Ec521(_) => f.write_str("TeeKeyPair::Ec521(..)"),
            Self::Rsa(_) => f.write_str("TeeKeyPair::Rsa(..)"),
        }
    }
}

impl TeeKeyPair {
    /// A fresh P-256 key: the default (fast, small, no Marvin-style RSA pitfalls).
    pub fn generate_ec() -> Self {
        Self::Ec(p256::SecretKey::generate_from_rng(&mut rand::rng()))
    }

    /// A fresh P-521 key.
    pub fn generate_ec521() -> Self {
        Self::Ec521(Box::new(p521::SecretKey::generate_from_rng(
            &mut rand::rng(),
        )))
    }

    /// A fresh RSA-2048 key, for peers that only speak RSA-OAEP-256.
    pub fn generate_rsa() -> Result<Self, JoseError> {
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048)
            .map_err(|e| JoseError::Key(e.to_string()))?;
        Ok(Self::Rsa(Box::new(key)))
    }

    /// The public half as the JWK the RCAR protocol carries.
    pub fn public_jwk(&self) -> TeePubKey {
        match self {
            Self::Ec(sk) => {
                let point = sk.public_key().to_sec1_point(false);
                TeePubKey::EC {
                    crv: CRV_P256.into(),
                    alg: ALG_ECDH_ES_A256KW.into(),
                    x: point.x().map(b64u).unwrap_or_default(),
                    y: point.y().map(b64u).unwrap_or_default(),
                }
            }
            Self::Ec521(sk) => {
                let point = sk.public_key().to_sec1_point(false);
                TeePubKey::EC {
                    crv: CRV_P521.into(),
                    alg: ALG_ECDH_ES_A256KW.into(),
                    x: point.x().map(b64u).unwrap_or_default(),
                    y: point.y().map(b64u).unwrap_or_default(),
                }
            }
            Self::Rsa(sk) => {
                let pk = sk.as_ref().as_ref();
                TeePubKey::RSA {
                    alg: ALG_RSA_OAEP_256.into(),
                    k_mod: b64u(pk.n_bytes()),
                    k_exp: b64u(pk.e_bytes()),
                }
            }
        }
    }
}

/// A TEE public key parsed from its JWK, ready to encrypt to.
#[derive(Debug, Clone)]
pub enum TeePublicKey {
    Ec(p256::PublicKey),
    Ec521(Box<p521::PublicKey>),
    Rsa(rsa::PublicKey),
}

impl TeePublicKey {
    /// Parse and validate a JWK. Accepted: P-256 and P-521 with ECDH-ES+A256KW,
    /// RSA (>= 2048 bits) with RSA-OAEP-256.
    pub fn from_jwk(jwk: &TeePubKey) -> Result<Self, JoseError> {
        match jwk {
            TeePubKey::EC { crv, alg, x, y } => {
                if alg != ALG_ECDH_ES_A256KW {
                    return Err(JoseError::UnsupportedAlg(alg.clone()));
                }
                let x = unb64u("jwk x", x)?;
                let y = unb64u("jwk y", y)?;
                match crv.as_str() {
                    CRV_P256 => ec_point::<p256::NistP256>(&x, &y, 32, CRV_P256).map(Self::Ec),
                    CRV_P521 => ec_point::<p521::NistP521>(&x, &y, 66, CRV_P521)
                        .map(|k| Self::Ec521(Box::new(k))),
                    other => Err(JoseError::UnsupportedAlg(format!("curve {other}"))),
                }
            }
            TeePubKey::RSA { alg, k_mod, k_exp } => {
                if alg != ALG_RSA_OAEP_256 {
                    return Err(JoseError::UnsupportedAlg(alg.clone()));
                }
                let n = unb64u("jwk n", k_mod)?;
                let e = unb64u("jwk e", k_exp)?;
                if n.len() < 256 {
                    return Err(JoseError::Key("RSA modulus under 2048 bits".into()));
                }
                let n = rsa::BoxedUint::from_be_slice_vartime(&n);
                let e = rsa::BoxedUint::from_be_slice_vartime(&e);
                rsa::PublicKey::new(n, e)
                    .map(Self::Rsa)
                    .map_err(|e| JoseError::Key(e.to_string()))
            }
            TeePubKey::AKP { alg, .. } => Err(JoseError::UnsupportedAlg(alg.clone())),
        }
    }
}

/// An uncompressed point from JWK coordinates of exactly `len` bytes each.
/// `from_sec1_point` rejects points not on the curve (invalid-curve attacks).
pub(crate) fn ec_point<C>(
    x: &[u8],
    y: &[u8],
    len: usize,
    crv: &str,
) -> Result<p256::elliptic_curve::PublicKey<C>, JoseError>
where
    C: p256::elliptic_curve::CurveArithmetic,
    p256::elliptic_curve::AffinePoint<C>: FromSec1Point<C> + ToSec1Point<C>,
    p256::elliptic_curve::FieldBytesSize<C>: p256::elliptic_curve::sec1::ModulusSize,
{
    if x.len() != len || y.len() != len {
        return Err(JoseError::Key(format!(
            "{crv} coordinates must be {len} bytes"
        )));
    }
    let mut sec1 = Vec::with_capacity(1 + 2 * len);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    let point = p256::elliptic_curve::sec1::Sec1Point::<C>::from_bytes(&sec1)
        .map_err(|e| JoseError::Key(e.to_string()))?;
    Option::from(p256::elliptic_curve::PublicKey::<C>::from_sec1_point(
        &point,
    ))
    .ok_or_else(|| JoseError::Key(format!("point is not on {crv}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_jwk_round_trips() {
        let kp = TeeKeyPair::generate_ec();
        let jwk = kp.public_jwk();
        assert!(matches!(
            TeePublicKey::from_jwk(&jwk).unwrap(),
            TeePublicKey::Ec(_)
        ));
    }

    #[test]
    fn p521_jwk_round_trips_with_66_byte_coordinates() {
        let kp = TeeKeyPair::generate_ec521();
        let jwk = kp.public_jwk();
        let TeePubKey::EC { crv, x, .. } = &jwk else {
            panic!("ec")
        };
        assert_eq!(crv, CRV_P521);
        assert_eq!(unb64u("x", x).unwrap().len(), 66);
        assert!(matches!(
            TeePublicKey::from_jwk(&jwk).unwrap(),
            TeePublicKey::Ec521(_)
        ));
        let TeePubKey::EC { alg, y, x, .. } = jwk else {
            panic!("ec")
        };
        // P-521 coordinates under the P-256 name are refused, and the reverse.
        let confused = TeePubKey::EC {
            crv: CRV_P256.into(),
            alg,
            x,
            y,
        };
        assert!(matches!(
            TeePublicKey::from_jwk(&confused),
            Err(JoseError::Key(_))
        ));
    }

    #[test]
    fn rejects_off_curve_points_and_wrong_algs() {
        let bad = TeePubKey::EC {
            crv: "P-256".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x: b64u([1u8; 32]),
            y: b64u([2u8; 32]),
        };
        assert!(matches!(
            TeePublicKey::from_jwk(&bad),
            Err(JoseError::Key(_))
        ));
        let kp = TeeKeyPair::generate_ec();
        let TeePubKey::EC { x, y, .. } = kp.public_jwk() else {
            panic!("ec")
        };
        let wrong_alg = TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES".into(),
            x,
            y,
        };
        assert!(matches!(
            TeePublicKey::from_jwk(&wrong_alg),
            Err(JoseError::UnsupportedAlg(_))
        ));
    }
}
