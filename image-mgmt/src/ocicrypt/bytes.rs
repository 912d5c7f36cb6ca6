//! Byte fields in ocicrypt JSON: Go writes `[]byte` as a base64 string,
//! Rust ocicrypt-rs as an array of numbers. Accept both, remember which.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Bytes that deserialize from either encoding.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AnyBytes {
    pub bytes: Zeroizing<Vec<u8>>,
    /// True if the input was an array of numbers (ocicrypt-rs style).
    pub was_array: bool,
}

impl std::fmt::Debug for AnyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnyBytes({} bytes)", self.bytes.len())
    }
}

impl AnyBytes {
    pub fn b64(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            was_array: false,
        }
    }
    pub fn with_style(bytes: Vec<u8>, array: bool) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            was_array: array,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Str(String),
    Arr(Vec<u8>),
}

impl<'de> Deserialize<'de> for AnyBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Str(s) => STANDARD
                .decode(s.trim())
                .map(AnyBytes::b64)
                .map_err(serde::de::Error::custom),
            Repr::Arr(v) => Ok(AnyBytes::with_style(v, true)),
        }
    }
}

impl Serialize for AnyBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.was_array {
            self.bytes.as_slice().serialize(s)
        } else {
            s.serialize_str(&STANDARD.encode(self.bytes.as_slice()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings() {
        let a: AnyBytes = serde_json::from_str("\"aGk=\"").unwrap();
        let b: AnyBytes = serde_json::from_str("[104,105]").unwrap();
        assert_eq!(a.bytes.as_slice(), b"hi");
        assert_eq!(b.bytes.as_slice(), b"hi");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"aGk=\"");
        assert_eq!(serde_json::to_string(&b).unwrap(), "[104,105]");
        assert!(serde_json::from_str::<AnyBytes>("\"!!\"").is_err());
    }
}
