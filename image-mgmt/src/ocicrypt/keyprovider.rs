//! The CoCo `attestation-agent` keyprovider scheme and the ocicrypt
//! keyprovider protocol messages.
//!
//! Annotation payload: JSON `{"kid","wrapped_data","iv","wrap_type"}` where
//! `wrapped_data` = AES-256-GCM(KEK, iv, private options JSON) with the tag
//! appended, and the KEK is the raw 32-byte KBS resource at `kid`.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::bytes::AnyBytes;
use crate::error::{Error, Result};

/// Keyprovider name used by Confidential Containers.
pub const PROVIDER_NAME: &str = "attestation-agent";
const WRAP_TYPE: &str = "A256GCM";

/// The annotation payload produced by the `attestation-agent` keyprovider.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnnotationPacket {
    pub kid: String,
    pub wrapped_data: AnyBytes,
    pub iv: AnyBytes,
    pub wrap_type: String,
}

impl AnnotationPacket {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Decrypt(format!("keyprovider annotation: {e}")))
    }

    /// Decrypts the wrapped private options with the KEK.
    pub fn unwrap(&self, kek: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if self.wrap_type != WRAP_TYPE {
            return Err(Error::Unsupported(format!(
                "wrap_type {:?}",
                self.wrap_type
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(kek)
            .map_err(|_| Error::Decrypt(format!("KEK is {} bytes, want 32", kek.len())))?;
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(self.iv.bytes.as_slice())
            .map_err(|_| Error::Decrypt("keyprovider iv is not 12 bytes".into()))?;
        cipher
            .decrypt(&nonce, self.wrapped_data.bytes.as_slice())
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Decrypt(format!(
                    "KEK from {} does not unwrap the layer key",
                    self.kid
                ))
            })
    }

    /// Wraps private options for `kid` with `kek`.
    pub fn wrap(optsdata: &[u8], kek: &[u8], kid: &str) -> Result<Self> {
        let cipher = Aes256Gcm::new_from_slice(kek)
            .map_err(|_| Error::Key("KEK must be 32 bytes".into()))?;
        let mut iv = [0u8; 12];
        getrandom::fill(&mut iv).map_err(|e| Error::Key(format!("random: {e}")))?;
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::from(iv);
        let wrapped = cipher
            .encrypt(&nonce, optsdata)
            .map_err(|_| Error::Key("AES-GCM wrap failed".into()))?;
        Ok(Self {
            kid: kid.to_owned(),
            wrapped_data: AnyBytes::b64(wrapped),
            iv: AnyBytes::b64(iv.to_vec()),
            wrap_type: WRAP_TYPE.into(),
        })
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Key(e.to_string()))
    }
}

/// Request on a keyprovider's stdin (or gRPC `WrapKey`/`UnWrapKey` body).
#[derive(Debug, Deserialize)]
pub struct KeyProviderInput {
    pub op: String,
    #[serde(default)]
    pub keywrapparams: Option<KeyWrapParams>,
    #[serde(default)]
    pub keyunwrapparams: Option<KeyUnwrapParams>,
}

#[derive(Debug, Deserialize)]
pub struct KeyWrapParams {
    #[serde(default)]
    pub ec: Option<serde_json::Value>,
    pub optsdata: Option<AnyBytes>,
}

#[derive(Debug, Deserialize)]
pub struct KeyUnwrapParams {
    #[serde(default)]
    pub dc: Option<serde_json::Value>,
    pub annotation: Option<AnyBytes>,
}

#[derive(Debug, Serialize)]
pub struct KeyWrapOutput {
    pub keywrapresults: KeyWrapResults,
}

#[derive(Debug, Serialize)]
pub struct KeyWrapResults {
    pub annotation: AnyBytes,
}

#[derive(Debug, Serialize)]
pub struct KeyUnwrapOutput {
    pub keyunwrapresults: KeyUnwrapResults,
}

#[derive(Debug, Serialize)]
pub struct KeyUnwrapResults {
    pub optsdata: AnyBytes,
}

/// Answers one keyprovider request with `kek`/`kid`. The reply uses the same
/// byte encoding as the request so Go and Rust callers both understand it.
pub fn handle_request(input: &[u8], kek: &[u8], kid: &str) -> Result<Vec<u8>> {
    let req: KeyProviderInput = serde_json::from_slice(input)
        .map_err(|e| Error::Decrypt(format!("keyprovider request: {e}")))?;
    let out = match req.op.as_str() {
        "keywrap" => {
            let opts = req
                .keywrapparams
                .and_then(|p| p.optsdata)
                .ok_or_else(|| Error::Key("keywrap without optsdata".into()))?;
            let packet = AnnotationPacket::wrap(&opts.bytes, kek, kid)?;
            serde_json::to_vec(&KeyWrapOutput {
                keywrapresults: KeyWrapResults {
                    annotation: AnyBytes::with_style(packet.to_json()?, opts.was_array),
                },
            })
        }
        "keyunwrap" => {
            let ann = req
                .keyunwrapparams
                .and_then(|p| p.annotation)
                .ok_or_else(|| Error::Key("keyunwrap without annotation".into()))?;
            let packet = AnnotationPacket::parse(&ann.bytes)?;
            let opts = packet.unwrap(kek)?;
            serde_json::to_vec(&KeyUnwrapOutput {
                keyunwrapresults: KeyUnwrapResults {
                    optsdata: AnyBytes::with_style(opts.to_vec(), ann.was_array),
                },
            })
        }
        other => return Err(Error::Unsupported(format!("keyprovider op {other:?}"))),
    };
    out.map_err(|e| Error::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_kek() {
        let kek = [9u8; 32];
        let p = AnnotationPacket::wrap(b"{\"symkey\":\"x\"}", &kek, "kbs:///a/b/c").unwrap();
        let parsed = AnnotationPacket::parse(&p.to_json().unwrap()).unwrap();
        assert_eq!(
            parsed.unwrap(&kek).unwrap().as_slice(),
            b"{\"symkey\":\"x\"}"
        );
        assert!(parsed.unwrap(&[8u8; 32]).is_err());
    }

    #[test]
    fn protocol_go_and_rust_encodings() {
        let kek = [1u8; 32];
        // Go style: base64 strings.
        let go = br#"{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":["a2lk"]}},"optsdata":"b3B0cw=="}}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&handle_request(go, &kek, "kbs:///r/t/k").unwrap()).unwrap();
        let ann = out["keywrapresults"]["annotation"]
            .as_str()
            .unwrap()
            .to_owned();
        let unwrap_go =
            format!(r#"{{"op":"keyunwrap","keyunwrapparams":{{"dc":{{}},"annotation":"{ann}"}}}}"#);
        let out: serde_json::Value = serde_json::from_slice(
            &handle_request(unwrap_go.as_bytes(), &kek, "kbs:///r/t/k").unwrap(),
        )
        .unwrap();
        assert_eq!(out["keyunwrapresults"]["optsdata"], "b3B0cw==");

        // Rust style: arrays of numbers.
        let rust = br#"{"op":"keywrap","keywrapparams":{"optsdata":[111,112,116,115]}}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&handle_request(rust, &kek, "kbs:///r/t/k").unwrap()).unwrap();
        let arr = out["keywrapresults"]["annotation"].clone();
        assert!(arr.is_array());
        let unwrap_rust =
            serde_json::json!({"op":"keyunwrap","keyunwrapparams":{"annotation": arr}});
        let out: serde_json::Value = serde_json::from_slice(
            &handle_request(unwrap_rust.to_string().as_bytes(), &kek, "kbs:///r/t/k").unwrap(),
        )
        .unwrap();
        assert_eq!(
            out["keyunwrapresults"]["optsdata"],
            serde_json::json!([111, 112, 116, 115])
        );
    }
}
