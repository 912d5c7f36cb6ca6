//! ocicrypt layer decryption (and encryption for the host tool), implemented
//! on RustCrypto because `ocicrypt-rs` is not published on crates.io.

pub mod bytes;
pub mod cipher;
pub mod jwe;
pub mod keyprovider;
pub mod keys;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use self::bytes::AnyBytes;
use self::cipher::{LayerKey, CIPHER_AES256_CTR};
use self::keys::PrivateKey;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::keybroker::{kbs_resource_path, KeyBroker};

/// Public (integrity) options annotation.
pub const ANN_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// Wrapped keys for JWE recipients.
pub const ANN_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// Prefix of keyprovider-wrapped keys.
pub const ANN_PROVIDER_PREFIX: &str = "org.opencontainers.image.enc.keys.provider.";
/// Media type suffix of encrypted layers.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";

/// The media type without the ocicrypt suffix, and whether it had it: the one
/// rule for telling an encrypted layer from a plain one.
pub fn split_encrypted(media_type: &str) -> (&str, bool) {
    match media_type.strip_suffix(ENCRYPTED_SUFFIX) {
        Some(base) => (base, true),
        None => (media_type, false),
    }
}

/// `PrivateLayerBlockCipherOptions`: what a wrapped key annotation contains.
#[derive(Debug, Serialize, Deserialize)]
pub struct PrivateOpts {
    pub symkey: AnyBytes,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub cipheroptions: BTreeMap<String, AnyBytes>,
}

/// `PublicLayerBlockCipherOptions`: stored in the clear next to the layer.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublicOpts {
    pub cipher: String,
    pub hmac: AnyBytes,
    #[serde(default)]
    pub cipheroptions: BTreeMap<String, AnyBytes>,
}

/// Everything needed to verify and decrypt one layer.
#[derive(Debug)]
pub struct LayerCrypto {
    pub key: LayerKey,
    pub hmac: Vec<u8>,
    /// Digest of the decrypted (still compressed) layer, if the image says.
    pub plain_digest: Option<Sha256Digest>,
}

/// Keys available to this pull.
#[derive(Debug, Clone, Default)]
pub struct DecryptConfig {
    /// Private keys for `jwe` recipients.
    pub private_keys: Vec<PrivateKey>,
    /// KBS access for the `attestation-agent` keyprovider.
    pub broker: Option<Arc<dyn KeyBroker>>,
}

/// Unwraps layer keys, fetching each KEK from the KBS at most once per pull.
#[derive(Debug)]
pub struct KeyUnwrapper {
    cfg: DecryptConfig,
    keks: tokio::sync::Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
}

fn b64_annotation(v: &str, what: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(v.trim())
        .map_err(|e| Error::Decrypt(format!("{what} annotation is not base64: {e}")))
}

impl KeyUnwrapper {
    pub fn new(cfg: DecryptConfig) -> Self {
        Self {
            cfg,
            keks: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Finds a usable wrapped key for the layer and unwraps it.
    pub async fn unwrap(
        &self,
        layer: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<LayerCrypto> {
        let pub_raw = annotations
            .get(ANN_PUBOPTS)
            .ok_or_else(|| Error::Decrypt(format!("layer {layer} has no {ANN_PUBOPTS}")))?;
        let pubopts: PublicOpts = serde_json::from_slice(&b64_annotation(pub_raw, "pubopts")?)
            .map_err(|e| Error::Decrypt(format!("pubopts: {e}")))?;
        if pubopts.cipher != CIPHER_AES256_CTR {
            return Err(Error::Unsupported(format!(
                "layer cipher {:?}",
                pubopts.cipher
            )));
        }

        let mut errors = Vec::new();
        let provider_key = format!("{ANN_PROVIDER_PREFIX}{}", keyprovider::PROVIDER_NAME);
        if let Some(v) = annotations.get(&provider_key) {
            match &self.cfg.broker {
                Some(broker) => match self.unwrap_provider(v, broker.as_ref()).await {
                    Ok(p) => return finish(p, pubopts, layer),
                    Err(e) => errors.push(format!("attestation-agent: {e}")),
                },
                None => errors.push("attestation-agent: no KBS configured".into()),
            }
        }
        if let Some(v) = annotations.get(ANN_JWE) {
            if self.cfg.private_keys.is_empty() {
                errors.push("jwe: no private key configured".into());
            } else {
                // Several JWE blobs may be comma-separated.
                for part in v.split(',') {
                    let res = b64_annotation(part, "jwe")
                        .and_then(|jwe| jwe::decrypt(&jwe, &self.cfg.private_keys))
                        .and_then(|pt| parse_private(&pt));
                    match res {
                        Ok(p) => return finish(p, pubopts, layer),
                        Err(e) => errors.push(format!("jwe: {e}")),
                    }
                }
            }
        }
        let others: Vec<&str> = annotations
            .keys()
            .filter(|k| k.starts_with("org.opencontainers.image.enc.keys."))
            .map(String::as_str)
            .collect();
        if errors.is_empty() {
            errors.push(format!("no supported wrapped key (found {others:?})"));
        }
        Err(Error::NoKey(format!("{layer}: {}", errors.join("; "))))
    }

    async fn unwrap_provider(&self, v: &str, broker: &dyn KeyBroker) -> Result<PrivateOpts> {
        let packet = keyprovider::AnnotationPacket::parse(&b64_annotation(v, "keyprovider")?)?;
        let path = kbs_resource_path(&packet.kid)?;
        let mut keks = self.keks.lock().await;
        if !keks.contains_key(&path) {
            let kek = broker
                .resource(&path)
                .await
                .map_err(|e| Error::KeyBroker(format!("fetching KEK {path}: {e}")))?;
            keks.insert(path.clone(), kek);
        }
        let kek = keks
            .get(&path)
            .ok_or_else(|| Error::KeyBroker("KEK cache".into()))?;
        let opts = packet.unwrap(kek)?;
        parse_private(&opts)
    }
}

fn parse_private(pt: &[u8]) -> Result<PrivateOpts> {
    serde_json::from_slice(pt).map_err(|e| Error::Decrypt(format!("private options: {e}")))
}

fn finish(p: PrivateOpts, pubopts: PublicOpts, layer: &str) -> Result<LayerCrypto> {
    let nonce = p
        .cipheroptions
        .get("nonce")
        .ok_or_else(|| Error::Decrypt(format!("layer {layer}: no nonce in cipher options")))?;
    let key = LayerKey::from_slices(&p.symkey.bytes, &nonce.bytes)?;
    let plain_digest = if p.digest.is_empty() {
        None
    } else {
        Some(Sha256Digest::parse(&p.digest)?)
    };
    Ok(LayerCrypto {
        key,
        hmac: pubopts.hmac.bytes.to_vec(),
        plain_digest,
    })
}

/// Builds the annotations of an encrypted layer: `pubopts` and the private
/// options JSON that the caller wraps for its recipients.
pub fn layer_options(
    key: &LayerKey,
    hmac: Vec<u8>,
    plain_digest: &Sha256Digest,
) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let mut copts = BTreeMap::new();
    copts.insert("nonce".to_owned(), AnyBytes::b64(key.nonce.to_vec()));
    let private = PrivateOpts {
        symkey: AnyBytes::b64(key.symkey.to_vec()),
        digest: plain_digest.to_string(),
        cipheroptions: copts,
    };
    let public = PublicOpts {
        cipher: CIPHER_AES256_CTR.into(),
        hmac: AnyBytes::b64(hmac),
        cipheroptions: BTreeMap::new(),
    };
    let pub_json = serde_json::to_vec(&public).map_err(|e| Error::Key(e.to_string()))?;
    let priv_json = serde_json::to_vec(&private).map_err(|e| Error::Key(e.to_string()))?;
    Ok((STANDARD.encode(pub_json), Zeroizing::new(priv_json)))
}
