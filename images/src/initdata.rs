//! Initdata: the pod's TOML (policy, attestation-agent and CDH config) delivered to the
//! guest as a small read-only disk: 8-byte magic `initdata`, u64 LE length of the gzip
//! stream, gzip(TOML), zero padding to a multiple of 512 bytes. Its digest is bound into
//! the TEE evidence (SNP HOST_DATA, TDX MRCONFIGID, vTPM PCR 8).
//!
//! Writer for the host side (tests, the shim-side tooling) and a bounded reader for the
//! guest (the agent reuses it).

use std::io::{Read, Write};

use coco_jose::binding::{parse_init_data, InitDataError as ParseError};

/// The digest algorithms, shared with the KBS and the guest agent.
pub use coco_jose::binding::InitDataAlgorithm as Algorithm;

pub const MAGIC: &[u8; 8] = b"initdata";
/// Upper bound for the compressed and the decompressed TOML (a policy is a few KiB;
/// the bound stops a hostile disk from exhausting guest memory).
pub const MAX_LEN: u64 = 4 * 1024 * 1024;
const SECTOR: usize = 512;

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
    #[error("initdata is not UTF-8 TOML: {0}")]
    NotText(String),
    /// Refused by the shared parser (TOML, version, algorithm, `[data]` entries).
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// A parsed, validated initdata document.
#[derive(Debug, Clone, PartialEq)]
pub struct Initdata {
    /// The exact TOML text (the digest is over these bytes).
    pub toml: String,
    pub algorithm: Algorithm,
    /// `[data]` entries (`aa.toml`, `cdh.toml`, `policy.rego`, ...).
    pub data: std::collections::BTreeMap<String, String>,
}

impl Initdata {
    /// Validates `toml_text` with the parser the KBS and the guest agent use.
    pub fn parse(toml_text: &str) -> Result<Self, InitdataError> {
        let parsed = parse_init_data("toml", toml_text)?;
        Ok(Self {
            toml: toml_text.to_string(),
            algorithm: parsed.algorithm,
            data: parsed.files,
        })
    }

    /// Hash of the TOML text with the document's algorithm.
    pub fn digest(&self) -> Vec<u8> {
        self.algorithm.digest(self.toml.as_bytes())
    }

    /// The digest zero-padded or truncated to `len` bytes (32 for SNP HOST_DATA,
    /// 48 for TDX MRCONFIGID).
    pub fn digest_padded(&self, len: usize) -> Vec<u8> {
        let mut d = self.digest();
        d.resize(len, 0);
        d
    }

    /// The disk image bytes.
    pub fn to_disk(&self) -> Result<Vec<u8>, InitdataError> {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        gz.write_all(self.toml.as_bytes())
            .map_err(InitdataError::Gzip)?;
        let body = gz.finish().map_err(InitdataError::Gzip)?;
        let mut out = Vec::with_capacity(16 + body.len() + SECTOR);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len().div_ceil(SECTOR) * SECTOR, 0);
        Ok(out)
    }

    /// The pod annotation value (`io.katacontainers.config.hypervisor.cc_init_data`):
    /// base64(gzip(TOML)). Deterministic (gzip mtime 0) so manifests diff cleanly.
    pub fn to_annotation(&self) -> Result<String, InitdataError> {
        use base64::Engine as _;
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        gz.write_all(self.toml.as_bytes())
            .map_err(InitdataError::Gzip)?;
        let body = gz.finish().map_err(InitdataError::Gzip)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(body))
    }

    /// Reads an initdata disk (e.g. `/dev/vdb`), never more than the header's length
    /// and never more than [`MAX_LEN`] decompressed.
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
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .take(MAX_LEN + 1)
            .read_to_end(&mut text)
            .map_err(InitdataError::Gzip)?;
        if text.len() as u64 > MAX_LEN {
            return Err(InitdataError::TooLarge(text.len() as u64));
        }
        let text = String::from_utf8(text).map_err(|e| InitdataError::NotText(e.to_string()))?;
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    const DOC: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault CreateContainerRequest := true\n'''\n\"aa.toml\" = \"[token_configs]\\n\"\n";

    #[test]
    fn roundtrip_and_binding() {
        let d = Initdata::parse(DOC).unwrap();
        assert_eq!(d.algorithm, Algorithm::Sha384);
        assert_eq!(d.digest(), parse_init_data("toml", DOC).unwrap().digest);
        assert!(d.data["policy.rego"].contains("agent_policy"));
        let disk = d.to_disk().unwrap();
        assert_eq!(&disk[..8], MAGIC);
        assert_eq!(disk.len() % 512, 0);
        assert_eq!(disk, d.to_disk().unwrap(), "deterministic");
        let back = Initdata::from_disk(disk.as_slice()).unwrap();
        assert_eq!(back, d);
        // Digest is SHA-384 of the exact text; SNP gets it truncated, TDX exact.
        let want = sha2::Sha384::digest(DOC.as_bytes());
        assert_eq!(d.digest_padded(48), want.to_vec());
        assert_eq!(d.digest_padded(32), want[..32].to_vec());
        let d256 = Initdata::parse(&DOC.replace("sha384", "sha256")).unwrap();
        assert_eq!(d256.digest_padded(48)[32..], [0u8; 16]);
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
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&(MAX_LEN + 1).to_le_bytes());
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
        corrupt[30] ^= 0xff; // inside the deflate stream: CRC or inflate fails
        assert!(Initdata::from_disk(corrupt.as_slice()).is_err());
        assert!(matches!(
            Initdata::parse("version = \"0.2.0\"\nalgorithm = \"sha256\"\n"),
            Err(InitdataError::Parse(ParseError::Version(_)))
        ));
        assert!(matches!(
            Initdata::parse("version = \"0.1.0\"\nalgorithm = \"md5\"\n"),
            Err(InitdataError::Parse(ParseError::Algorithm(_)))
        ));
    }
}
