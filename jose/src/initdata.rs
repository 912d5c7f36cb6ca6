//! Initdata: the pod's TOML (agent policy, attestation-agent and CDH config), the
//! one implementation the host tooling (`coco-image`), the guest agent and the
//! tests share. The host writes it as a small read-only disk or as the pod
//! annotation; the guest reads the disk; the KBS parses the TOML the attester sends
//! (through [`crate::binding::parse_init_data`], which this module also uses), so
//! the digest bound at launch and the digest every side expects cannot drift.
//!
//! Disk layout: 8-byte magic `initdata`, u64 LE length of the gzip stream,
//! gzip(TOML), zero padding to a multiple of 512 bytes.
//! Annotation (`io.katacontainers.config.hypervisor.cc_init_data`): base64(gzip(TOML)),
//! the encoding Kata's runtime expects in that annotation.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::binding::{init_data_register, parse_init_data, InitDataError as ParseError};

/// The digest algorithms an initdata document may name.
pub use crate::binding::InitDataAlgorithm as Algorithm;

/// The magic at the start of an initdata disk.
pub const MAGIC: &[u8; 8] = b"initdata";
/// Upper bound for the compressed and the decompressed TOML: a policy is a few
/// KiB; the bound stops a hostile disk (or gzip bomb) from exhausting guest memory.
pub const MAX_LEN: u64 = 4 * 1024 * 1024;
/// The pod annotation Kata's runtime turns into the initdata device.
pub const ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";
/// The KBS reference value listing the initdata digests ([`Initdata::digest_hex`])
/// the attestation policies accept.
pub const REFERENCE_VALUE: &str = "init_data_digest";
const SECTOR: usize = 512;

/// Why an initdata disk, annotation or document was refused.
#[derive(Debug, thiserror::Error)]
pub enum InitdataError {
    #[error("not an initdata disk (bad magic)")]
    BadMagic,
    #[error("initdata length {0} exceeds the {MAX_LEN}-byte limit")]
    TooLarge(u64),
    #[error("initdata truncated: header says {expected} bytes, disk has {actual}")]
    Truncated { expected: u64, actual: u64 },
    #[error("initdata gzip stream: {0}")]
    Gzip(std::io::Error),
    #[error("initdata annotation is not base64: {0}")]
    Base64(String),
    #[error("initdata is not UTF-8 TOML: {0}")]
    NotText(String),
    /// Refused by the shared parser (TOML, version, algorithm, `[data]` entries).
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("reference value {REFERENCE_VALUE} is {0}, not a list of digests")]
    ReferenceShape(String),
}

/// The registered [`REFERENCE_VALUE`] (`current`, as the KBS returns it; `None`
/// when unset) with `digest` added once, so several workloads stay registered.
/// A value of another shape is refused, not overwritten.
pub fn with_registered_digest(
    current: Option<serde_json::Value>,
    digest: &str,
) -> Result<serde_json::Value, InitdataError> {
    use serde_json::Value;
    let mut list = match current {
        None => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(single @ Value::String(_)) => vec![single],
        Some(other) => return Err(InitdataError::ReferenceShape(other.to_string())),
    };
    let known = list
        .iter()
        .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(digest)));
    if !known {
        list.push(Value::String(digest.to_owned()));
    }
    Ok(Value::Array(list))
}

/// A parsed, validated initdata document.
#[derive(Debug, Clone, PartialEq)]
pub struct Initdata {
    /// The exact TOML text: the digest is over these bytes.
    pub toml: String,
    pub algorithm: Algorithm,
    /// `[data]` entries (`aa.toml`, `cdh.toml`, `policy.rego`, ...).
    pub data: BTreeMap<String, String>,
    digest: Vec<u8>,
}

impl Initdata {
    /// Validates `toml_text` with the parser the KBS uses.
    pub fn parse(toml_text: &str) -> Result<Self, InitdataError> {
        let parsed = parse_init_data("toml", toml_text)?;
        Ok(Self {
            toml: toml_text.to_string(),
            algorithm: parsed.algorithm,
            data: parsed.files,
            digest: parsed.digest,
        })
    }

    /// Hash of the TOML text with the document's algorithm (32, 48 or 64 bytes).
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// Lowercase hex of [`Self::digest`]: the form KBS reference values and the
    /// attestation token's `init_data` claim use.
    pub fn digest_hex(&self) -> String {
        hex::encode(&self.digest)
    }

    /// The digest as an `N`-byte TEE register holds it (32: SNP HOST_DATA and the
    /// vTPM's PCR-8 extend value; 48: TDX MRCONFIGID).
    pub fn register<const N: usize>(&self) -> [u8; N] {
        init_data_register::<N>(&self.digest)
    }

    /// The agent policy it carries, if any.
    pub fn policy(&self) -> Option<&str> {
        self.data.get("policy.rego").map(String::as_str)
    }

    /// The disk image bytes. Deterministic (gzip mtime 0), so a disk's hash is
    /// a function of the TOML alone.
    pub fn to_disk(&self) -> Result<Vec<u8>, InitdataError> {
        let body = self.gzip()?;
        let mut out = Vec::with_capacity(16 + body.len() + SECTOR);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len().div_ceil(SECTOR) * SECTOR, 0);
        Ok(out)
    }

    /// The pod annotation value: base64(gzip(TOML)), deterministic so manifests
    /// diff cleanly.
    pub fn to_annotation(&self) -> Result<String, InitdataError> {
        use base64::Engine as _;
        Ok(base64::engine::general_purpose::STANDARD.encode(self.gzip()?))
    }

    /// Parses an annotation value, with the same bounds as a disk.
    pub fn from_annotation(value: &str) -> Result<Self, InitdataError> {
        use base64::Engine as _;
        if value.len() as u64 > MAX_LEN * 2 {
            return Err(InitdataError::TooLarge(value.len() as u64));
        }
        let gz = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| InitdataError::Base64(e.to_string()))?;
        Self::from_gzip(&gz)
    }

    /// Reads an initdata disk (e.g. `/dev/vdb`): never more than the header's
    /// length, never more than [`MAX_LEN`] compressed or decompressed.
    pub fn from_disk<R: Read>(mut disk: R) -> Result<Self, InitdataError> {
        let mut hdr = [0u8; 16];
        disk.read_exact(&mut hdr)
            .map_err(|_| InitdataError::BadMagic)?;
        if &hdr[..8] != MAGIC {
            return Err(InitdataError::BadMagic);
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&hdr[8..]);
        let len = u64::from_le_bytes(len_bytes);
        if len > MAX_LEN {
            return Err(InitdataError::TooLarge(len));
        }
        let mut body = Vec::new();
        disk.take(len)
            .read_to_end(&mut body)
            .map_err(InitdataError::Gzip)?;
        if (body.len() as u64) < len {
            return Err(InitdataError::Truncated {
                expected: len,
                actual: body.len() as u64,
            });
        }
        Self::from_gzip(&body)
    }

    fn from_gzip(body: &[u8]) -> Result<Self, InitdataError> {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(MAX_LEN + 1)
            .read_to_end(&mut text)
            .map_err(InitdataError::Gzip)?;
        if text.len() as u64 > MAX_LEN {
            return Err(InitdataError::TooLarge(text.len() as u64));
        }
        let text = String::from_utf8(text).map_err(|e| InitdataError::NotText(e.to_string()))?;
        Self::parse(&text)
    }

    fn gzip(&self) -> Result<Vec<u8>, InitdataError> {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        gz.write_all(self.toml.as_bytes())
            .map_err(InitdataError::Gzip)?;
        gz.finish().map_err(InitdataError::Gzip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn registered_digests_accumulate() {
        let a = Initdata::parse(DOC).unwrap().digest_hex();
        let b = Initdata::parse(&DOC.replace("sha384", "sha256"))
            .unwrap()
            .digest_hex();
        assert_eq!((a.len(), b.len()), (96, 64));
        let one = with_registered_digest(None, &a).unwrap();
        assert_eq!(one, serde_json::json!([a]));
        let two = with_registered_digest(Some(one), &b).unwrap();
        assert_eq!(two, serde_json::json!([a, b]));
        // Registering again changes nothing, whatever the case of the hex.
        assert_eq!(with_registered_digest(Some(two.clone()), &a).unwrap(), two);
        let upper = b.to_uppercase();
        assert_eq!(
            with_registered_digest(Some(two.clone()), &upper).unwrap(),
            two
        );
        // A single registered value is kept; other shapes are not overwritten.
        let single = with_registered_digest(Some(serde_json::json!(a)), &b).unwrap();
        assert_eq!(single, serde_json::json!([a, b]));
        assert!(matches!(
            with_registered_digest(Some(serde_json::json!({"x": 1})), &a),
            Err(InitdataError::ReferenceShape(_))
        ));
    }

    const DOC: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault CreateContainerRequest := true\n'''\n\"aa.toml\" = \"[token_configs]\\n\"\n";

    #[test]
    fn roundtrip_and_registers() {
        let d = Initdata::parse(DOC).unwrap();
        assert_eq!(d.algorithm, Algorithm::Sha384);
        let want = sha2::Sha384::digest(DOC.as_bytes());
        assert_eq!(d.digest(), want.as_slice());
        assert_eq!(d.digest_hex(), hex::encode(want));
        assert!(d.policy().unwrap().contains("agent_policy"));
        let disk = d.to_disk().unwrap();
        assert_eq!(&disk[..8], MAGIC);
        assert_eq!(disk.len() % 512, 0);
        assert_eq!(disk, d.to_disk().unwrap(), "deterministic");
        assert_eq!(Initdata::from_disk(disk.as_slice()).unwrap(), d);
        // SNP gets the SHA-384 digest truncated, TDX exact; SHA-256 is zero-padded.
        assert_eq!(d.register::<48>().as_slice(), want.as_slice());
        assert_eq!(d.register::<32>().as_slice(), &want[..32]);
        let d256 = Initdata::parse(&DOC.replace("sha384", "sha256")).unwrap();
        assert_eq!(d256.register::<48>()[32..], [0u8; 16]);
        assert_eq!(d256.register::<32>().as_slice(), d256.digest());
    }

    #[test]
    fn annotation_is_base64_gzip_of_the_exact_text() {
        use base64::Engine as _;
        let d = Initdata::parse(DOC).unwrap();
        let a = d.to_annotation().unwrap();
        assert_eq!(a, d.to_annotation().unwrap(), "deterministic");
        let gz = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, DOC);
        assert_eq!(Initdata::from_annotation(&a).unwrap(), d);
        assert!(matches!(
            Initdata::from_annotation("not base64!"),
            Err(InitdataError::Base64(_))
        ));
    }

    #[test]
    fn bad_disks_are_refused() {
        let good = Initdata::parse(DOC).unwrap().to_disk().unwrap();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            Initdata::from_disk(bad.as_slice()),
            Err(InitdataError::BadMagic)
        ));
        assert!(matches!(
            Initdata::from_disk(&good[..10]),
            Err(InitdataError::BadMagic)
        ));
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Initdata::from_disk(huge.as_slice()),
            Err(InitdataError::TooLarge(_))
        ));
        let mut trunc = good.clone();
        trunc[8..16].copy_from_slice(&(good.len() as u64).to_le_bytes());
        assert!(matches!(
            Initdata::from_disk(trunc.as_slice()),
            Err(InitdataError::Truncated { .. })
        ));
        let mut corrupt = good.clone();
        let len = u64::from_le_bytes(good[8..16].try_into().unwrap()) as usize;
        corrupt[16 + len - 5] ^= 0xff; // the gzip CRC
        assert!(matches!(
            Initdata::from_disk(corrupt.as_slice()),
            Err(InitdataError::Gzip(_))
        ));
        assert!(matches!(
            Initdata::parse("version = \"0.2.0\"\nalgorithm = \"sha256\"\n"),
            Err(InitdataError::Parse(ParseError::Version(_)))
        ));
        assert!(matches!(
            Initdata::parse("version = \"0.1.0\"\nalgorithm = \"md5\"\n"),
            Err(InitdataError::Parse(ParseError::Algorithm(_)))
        ));
    }

    /// A disk whose gzip stream holds `text` as is (no TOML check on the way in).
    fn raw_disk(text: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(text).unwrap();
        let z = gz.finish().unwrap();
        let mut disk = MAGIC.to_vec();
        disk.extend_from_slice(&(z.len() as u64).to_le_bytes());
        disk.extend_from_slice(&z);
        disk
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_bound() {
        // Just over MAX_LEN of spaces compresses to a few KiB: the header length is
        // small, the decompressed text is over the bound.
        let disk = raw_disk(&vec![b' '; (MAX_LEN + 1024) as usize]);
        assert!(matches!(
            Initdata::from_disk(disk.as_slice()),
            Err(InitdataError::TooLarge(_))
        ));
    }

    #[test]
    fn non_utf8_text_is_refused() {
        let disk = raw_disk(&[0xff, 0xfe, 0x00]);
        assert!(matches!(
            Initdata::from_disk(disk.as_slice()),
            Err(InitdataError::NotText(_))
        ));
    }
}
