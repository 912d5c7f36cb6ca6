//! The subset of JWE (RFC 7516) that ocicrypt's `jwe` scheme uses: JSON
//! serialization (general or flattened), `alg` RSA-OAEP, RSA-OAEP-256 or
//! ECDH-ES+A256KW (P-256, P-384), `enc` A256GCM.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::keys::{PrivateKey, PublicKey};
use crate::error::{Error, Result};

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn b64d(s: &str, what: &str) -> Result<Vec<u8>> {
    B64URL
        .decode(s)
        .map_err(|e| Error::Decrypt(format!("JWE {what}: {e}")))
}

#[derive(Deserialize)]
struct JweJson {
    protected: Option<String>,
    unprotected: Option<Map<String, Value>>,
    header: Option<Map<String, Value>>,
    encrypted_key: Option<String>,
    recipients: Option<Vec<Recipient>>,
    aad: Option<String>,
    iv: String,
    ciphertext: String,
    tag: String,
}

#[derive(Deserialize)]
struct Recipient {
    header: Option<Map<String, Value>>,
    encrypted_key: Option<String>,
}

/// Decrypts a JWE (JSON serialization) with the first key that fits.
pub fn decrypt(jwe: &[u8], keys: &[PrivateKey]) -> Result<Zeroizing<Vec<u8>>> {
    let jwe: JweJson =
        serde_json::from_slice(jwe).map_err(|e| Error::Decrypt(format!("JWE JSON: {e}")))?;
    let protected: Map<String, Value> = match &jwe.protected {
        Some(p) => serde_json::from_slice(&b64d(p, "protected header")?)
            .map_err(|e| Error::Decrypt(format!("JWE protected header: {e}")))?,
        None => Map::new(),
    };
    let recipients: Vec<Recipient> = match jwe.recipients {
        Some(r) if !r.is_empty() => r,
        _ => vec![Recipient {
            header: jwe.header.clone(),
            encrypted_key: jwe.encrypted_key.clone(),
        }],
    };
    let iv = b64d(&jwe.iv, "iv")?;
    let mut ct = b64d(&jwe.ciphertext, "ciphertext")?;
    ct.extend_from_slice(&b64d(&jwe.tag, "tag")?);
    let mut aad = jwe.protected.clone().unwrap_or_default().into_bytes();
    if let Some(a) = &jwe.aad {
        aad.push(b'.');
        aad.extend_from_slice(a.as_bytes());
    }

    let mut last_err = Error::NoKey("JWE has no recipient for the given keys".into());
    for r in &recipients {
        let mut header = protected.clone();
        for extra in [&jwe.unprotected, &r.header].into_iter().flatten() {
            for (k, v) in extra {
                header.insert(k.clone(), v.clone());
            }
        }
        if header.get("enc").and_then(Value::as_str) != Some("A256GCM") {
            return Err(Error::Unsupported(format!(
                "JWE enc {:?}",
                header.get("enc")
            )));
        }
        if header.contains_key("zip") {
            return Err(Error::Unsupported("compressed JWE".into()));
        }
        let ek = match &r.encrypted_key {
            Some(e) => b64d(e, "encrypted_key")?,
            None => Vec::new(),
        };
        for key in keys {
            let cek = match unwrap_cek(&header, &ek, key) {
                Ok(c) => c,
                Err(e) => {
                    last_err = e;
                    continue;
                }
            };
            let cipher = Aes256Gcm::new_from_slice(&cek)
                .map_err(|_| Error::Decrypt("content key is not 32 bytes".into()))?;
            let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(iv.as_slice())
                .map_err(|_| Error::Decrypt("JWE iv is not 12 bytes".into()))?;
            match cipher.decrypt(
                &nonce,
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            ) {
                Ok(pt) => return Ok(Zeroizing::new(pt)),
                Err(_) => last_err = Error::Decrypt("JWE content authentication failed".into()),
            }
        }
    }
    Err(last_err)
}

fn unwrap_cek(
    header: &Map<String, Value>,
    ek: &[u8],
    key: &PrivateKey,
) -> Result<Zeroizing<Vec<u8>>> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    match (alg, key) {
        ("RSA-OAEP", PrivateKey::Rsa(k)) => k
            .decrypt(rsa::Oaep::<sha1::Sha1>::new(), ek)
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt("RSA-OAEP unwrap failed".into())),
        ("RSA-OAEP-256", PrivateKey::Rsa(k)) => k
            .decrypt(rsa::Oaep::<Sha256>::new(), ek)
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt("RSA-OAEP-256 unwrap failed".into())),
        ("ECDH-ES+A256KW", PrivateKey::P256(k)) => {
            let epk = epk_point(header, "P-256", 32)?;
            let pk = p256::PublicKey::from_sec1_bytes(&epk)
                .map_err(|_| Error::Decrypt("bad P-256 epk".into()))?;
            let z = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
            kw_unwrap(header, z.raw_secret_bytes().as_slice(), ek)
        }
        ("ECDH-ES+A256KW", PrivateKey::P384(k)) => {
            let epk = epk_point(header, "P-384", 48)?;
            let pk = p384::PublicKey::from_sec1_bytes(&epk)
                .map_err(|_| Error::Decrypt("bad P-384 epk".into()))?;
            let z = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
            kw_unwrap(header, z.raw_secret_bytes().as_slice(), ek)
        }
        (alg, _) => Err(Error::Decrypt(format!(
            "JWE alg {alg:?} does not match the key type"
        ))),
    }
}

/// The recipient's ephemeral public key as an uncompressed SEC1 point.
fn epk_point(header: &Map<String, Value>, crv: &str, len: usize) -> Result<Vec<u8>> {
    let epk = header
        .get("epk")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Decrypt("ECDH-ES without epk".into()))?;
    if epk.get("crv").and_then(Value::as_str) != Some(crv) {
        return Err(Error::Decrypt(format!("epk curve is not {crv}")));
    }
    let coord = |n: &str| -> Result<Vec<u8>> {
        let v = b64d(
            epk.get(n)
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Decrypt(format!("epk without {n}")))?,
            "epk",
        )?;
        if v.len() != len {
            return Err(Error::Decrypt("epk coordinate length".into()));
        }
        Ok(v)
    };
    let mut p = vec![4u8];
    p.extend(coord("x")?);
    p.extend(coord("y")?);
    Ok(p)
}

/// RFC 7518 §4.6.2 Concat KDF (single SHA-256 round: 256-bit output).
fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    for part in [alg.as_bytes(), apu, apv] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.update(256u32.to_be_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&h.finalize());
    out
}

fn party_info(header: &Map<String, Value>, name: &str) -> Result<Vec<u8>> {
    match header.get(name).and_then(Value::as_str) {
        Some(s) => b64d(s, name),
        None => Ok(Vec::new()),
    }
}

fn kw_unwrap(header: &Map<String, Value>, z: &[u8], ek: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let kek = concat_kdf(
        z,
        "ECDH-ES+A256KW",
        &party_info(header, "apu")?,
        &party_info(header, "apv")?,
    );
    let kw = aes_kw::KwAes256::new_from_slice(kek.as_ref())
        .map_err(|_| Error::Decrypt("KEK length".into()))?;
    let mut buf = Zeroizing::new(vec![0u8; ek.len().saturating_sub(8)]);
    let n = kw
        .unwrap_key(ek, &mut buf)
        .map_err(|_| Error::Decrypt("AES key unwrap failed".into()))?
        .len();
    buf.truncate(n);
    Ok(buf)
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::fill(b.as_mut()).map_err(|e| Error::Key(format!("random: {e}")))?;
    Ok(b)
}

/// Encrypts `plaintext` for `recipients` in the general JSON serialization,
/// the way ocicrypt writes it (RSA-OAEP or ECDH-ES+A256KW, A256GCM).
pub fn encrypt(plaintext: &[u8], recipients: &[PublicKey]) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(Error::Key("no JWE recipients".into()));
    }
    let cek = random::<32>()?;
    let iv = random::<12>()?;
    let protected = B64URL.encode(br#"{"enc":"A256GCM"}"#);
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let mut recs = Vec::new();
    for r in recipients {
        let rec = match r {
            PublicKey::Rsa(k) => {
                let ek = k
                    .encrypt(&mut rng, rsa::Oaep::<sha1::Sha1>::new(), cek.as_ref())
                    .map_err(|e| Error::Key(format!("RSA-OAEP: {e}")))?;
                json!({"header": {"alg": "RSA-OAEP"}, "encrypted_key": B64URL.encode(ek)})
            }
            PublicKey::P256(pk) => {
                let eph = <p256::SecretKey as p256::elliptic_curve::Generate>::generate_from_rng(
                    &mut rng,
                );
                let z = p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), pk.as_affine());
                let point = eph.public_key().to_sec1_bytes();
                ecdh_recipient(
                    z.raw_secret_bytes().as_slice(),
                    &point,
                    "P-256",
                    32,
                    cek.as_ref(),
                )?
            }
            PublicKey::P384(pk) => {
                let eph = <p384::SecretKey as p384::elliptic_curve::Generate>::generate_from_rng(
                    &mut rng,
                );
                let z = p384::ecdh::diffie_hellman(eph.to_nonzero_scalar(), pk.as_affine());
                let point = eph.public_key().to_sec1_bytes();
                ecdh_recipient(
                    z.raw_secret_bytes().as_slice(),
                    &point,
                    "P-384",
                    48,
                    cek.as_ref(),
                )?
            }
        };
        recs.push(rec);
    }
    let cipher =
        Aes256Gcm::new_from_slice(cek.as_ref()).map_err(|_| Error::Key("CEK length".into()))?;
    let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(iv.as_slice())
        .map_err(|_| Error::Key("iv length".into()))?;
    let mut sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| Error::Key("AES-GCM encryption failed".into()))?;
    let tag = sealed.split_off(sealed.len() - 16);
    let out = json!({
        "protected": protected,
        "recipients": recs,
        "iv": B64URL.encode(iv.as_ref()),
        "ciphertext": B64URL.encode(&sealed),
        "tag": B64URL.encode(&tag),
    });
    serde_json::to_vec(&out).map_err(|e| Error::Key(e.to_string()))
}

fn ecdh_recipient(z: &[u8], point: &[u8], crv: &str, len: usize, cek: &[u8]) -> Result<Value> {
    let kek = concat_kdf(z, "ECDH-ES+A256KW", b"", b"");
    let kw = aes_kw::KwAes256::new_from_slice(kek.as_ref())
        .map_err(|_| Error::Key("KEK length".into()))?;
    let mut buf = vec![0u8; cek.len() + 8];
    let ek = kw
        .wrap_key(cek, &mut buf)
        .map_err(|_| Error::Key("AES key wrap failed".into()))?;
    let (x, y) = point[1..].split_at(len);
    Ok(json!({
        "header": {
            "alg": "ECDH-ES+A256KW",
            "epk": {"kty": "EC", "crv": crv, "x": B64URL.encode(x), "y": B64URL.encode(y)},
        },
        "encrypted_key": B64URL.encode(ek),
    }))
}
