//! The initdata disk: a read-only block device carrying the pod's initdata
//! (`aa.toml`, `cdh.toml`, `policy.rego`). Layout: 8-byte magic `initdata`, u64 LE
//! length, gzip(TOML), zero padding to 512 B.

use std::collections::BTreeMap;
use std::io::Read;

use coco_jose::binding::{parse_init_data, InitDataAlgorithm, InitDataError};

/// The magic at the start of the disk.
pub const MAGIC: &[u8; 8] = b"initdata";
/// Largest compressed or decompressed initdata accepted.
pub const MAX_SIZE: u64 = 4 << 20;

/// Errors reading initdata.
#[derive(Debug, thiserror::Error)]
pub enum InitdataError {
    #[error("no initdata magic")]
    Magic,
    #[error("initdata length {0} is out of bounds")]
    Length(u64),
    #[error("initdata is not valid gzip: {0}")]
    Gzip(String),
    /// Refused by the parser the KBS and `coco-image` share (TOML, version,
    /// algorithm, `[data]` entries).
    #[error(transparent)]
    Parse(#[from] InitDataError),
}

/// Parsed initdata.
#[derive(Debug, Clone, PartialEq)]
pub struct Initdata {
    pub algorithm: InitDataAlgorithm,
    pub data: BTreeMap<String, String>,
    /// The TOML text exactly as hashed for the TEE binding.
    pub toml: String,
    digest: Vec<u8>,
}

impl Initdata {
    /// Parses the initdata TOML.
    pub fn from_toml(text: &str) -> Result<Self, InitdataError> {
        let d = parse_init_data("toml", text)?;
        Ok(Self {
            algorithm: d.algorithm,
            data: d.files,
            toml: text.to_string(),
            digest: d.digest,
        })
    }

    /// Reads the disk image (or its first bytes).
    pub fn from_disk(bytes: &[u8]) -> Result<Self, InitdataError> {
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(InitdataError::Magic);
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[8..16]);
        let len = u64::from_le_bytes(len);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(16))
            .filter(|e| *e <= bytes.len() && len <= MAX_SIZE)
            .ok_or(InitdataError::Length(len))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[16..end])
            .take(MAX_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(|e| InitdataError::Gzip(e.to_string()))?;
        if text.len() as u64 > MAX_SIZE {
            return Err(InitdataError::Length(text.len() as u64));
        }
        Self::from_toml(&text)
    }

    /// The digest the TEE binds (hash of the TOML text with `algorithm`).
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// The agent policy it carries, if any.
    pub fn policy(&self) -> Option<&str> {
        self.data.get("policy.rego").map(String::as_str)
    }
}

/// Finds the disk carrying the initdata magic among `dev_dir`'s virtio/SCSI disks
/// (`vd*`, `sd*`), for `initdata = "auto"`.
pub fn find_device(dev_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dev_dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| (n.starts_with("vd") || n.starts_with("sd")) && n.len() == 3)
        })
        .collect();
    names.sort();
    names.into_iter().find(|p| {
        let mut magic = [0u8; 8];
        std::fs::File::open(p)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == MAGIC
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn disk(toml: &str) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(toml.as_bytes()).unwrap();
        let z = gz.finish().unwrap();
        let mut d = MAGIC.to_vec();
        d.extend_from_slice(&(z.len() as u64).to_le_bytes());
        d.extend_from_slice(&z);
        d.resize(d.len().div_ceil(512) * 512, 0);
        d
    }

    const TOML: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault ExecProcessRequest := true\n'''\n";

    #[test]
    fn reads_disk_and_policy() {
        let d = Initdata::from_disk(&disk(TOML)).unwrap();
        assert_eq!(d.algorithm, InitDataAlgorithm::Sha384);
        assert!(d.policy().unwrap().contains("ExecProcessRequest"));
        use sha2::Digest as _;
        assert_eq!(d.digest(), sha2::Sha384::digest(TOML.as_bytes()).as_slice());
        crate::policy::Policy::new(d.policy().unwrap()).unwrap();
    }

    #[test]
    fn finds_the_initdata_disk() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vda"), vec![0u8; 1024]).unwrap();
        std::fs::write(d.path().join("vdb"), disk(TOML)).unwrap();
        std::fs::write(d.path().join("vdb1"), disk(TOML)).unwrap();
        assert_eq!(find_device(d.path()), Some(d.path().join("vdb")));
        std::fs::remove_file(d.path().join("vdb")).unwrap();
        assert_eq!(find_device(d.path()), None);
    }

    #[test]
    fn rejects_bad_disks() {
        assert!(matches!(
            Initdata::from_disk(&[0; 512]),
            Err(InitdataError::Magic)
        ));
        let mut d = disk(TOML);
        d[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Initdata::from_disk(&d),
            Err(InitdataError::Length(_))
        ));
        let mut d = disk(TOML);
        let len = u64::from_le_bytes(d[8..16].try_into().unwrap()) as usize;
        d[16 + len - 5] ^= 0xff; // the gzip CRC
        assert!(Initdata::from_disk(&d).is_err());
        assert!(Initdata::from_disk(&disk("version = \"9\"\nalgorithm = \"sha256\"\n")).is_err());
        assert!(Initdata::from_disk(&disk("version = \"0.1.0\"\nalgorithm = \"md5\"\n")).is_err());
    }
}
