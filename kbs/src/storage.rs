//! Persistent state behind a small trait, so a networked backend (PostgreSQL
//! for several replicas) can replace the local filesystem later.
//!
//! The filesystem store writes atomically (temp file, fsync, rename, fsync of
//! the directory): a crash leaves the old or the new value, never a torn one.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A validated `repo/type/tag` resource path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    pub repo: String,
    pub kind: String,
    pub tag: String,
}

/// Why a resource path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("resource path must have exactly three segments repo/type/tag, got {0}")]
    Segments(usize),
    #[error("resource path segment `{0}` is not allowed (use letters, digits, '.', '_', '-'; not '.' or '..'; at most 128 bytes)")]
    Segment(String),
}

impl ResourcePath {
    /// Parse `repo/type/tag`. Segments are restricted to a safe alphabet, so no
    /// segment can name a parent directory, an absolute path or a hidden temp file.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let segs: Vec<&str> = path.split('/').collect();
        if segs.len() != 3 {
            return Err(PathError::Segments(segs.len()));
        }
        if let Some(bad) = segs.iter().find(|s| !is_safe_segment(s)) {
            return Err(PathError::Segment((*bad).to_owned()));
        }
        Ok(Self {
            repo: segs[0].to_owned(),
            kind: segs[1].to_owned(),
            tag: segs[2].to_owned(),
        })
    }
}

/// A name usable as one path component: letters, digits, `.`, `_`, `-`; not
/// empty, not hidden (so never `.` or `..`), at most 128 bytes.
pub fn is_safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

/// What can be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Resource(ResourcePath),
    ResourcePolicy,
    /// Attestation policy by id (validated like a path segment).
    AttestationPolicy(String),
    ReferenceValues,
    TokenSigningKey,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid storage key: {0}")]
    InvalidKey(String),
}

/// Key/value persistence for the KBS.
pub trait Store: Send + Sync + fmt::Debug {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, key: &Key, value: &[u8]) -> Result<(), StoreError>;
    /// Returns whether something was deleted.
    fn delete(&self, key: &Key) -> Result<bool, StoreError>;
    /// Ids of the stored attestation policies.
    fn attestation_policy_ids(&self) -> Result<Vec<String>, StoreError>;
}

/// The embedded default: files below a state directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["resources", "policies/attestation"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir, source })?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn path(&self, key: &Key) -> Result<PathBuf, StoreError> {
        Ok(match key {
            Key::Resource(p) => self
                .root
                .join("resources")
                .join(&p.repo)
                .join(&p.kind)
                .join(&p.tag),
            Key::ResourcePolicy => self.root.join("policies/resource.rego"),
            Key::AttestationPolicy(id) => {
                if !is_safe_segment(id) {
                    return Err(StoreError::InvalidKey(format!(
                        "attestation policy id `{id}`"
                    )));
                }
                self.root.join(format!("policies/attestation/{id}.rego"))
            }
            Key::ReferenceValues => self.root.join("reference-values.json"),
            Key::TokenSigningKey => self.root.join("token-signing-key.pem"),
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Store for FsStore {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        // Secrets: owner-only (tempfile creates 0600 already; keep it).
        tmp.write_all(value).map_err(io(&path))?;
        tmp.as_file().sync_all().map_err(io(&path))?;
        tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        Ok(())
    }

    fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io(dir))?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn attestation_policy_ids(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("policies/attestation");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let name = entry.map_err(io(&dir))?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".rego")) {
                if !id.starts_with('.') {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_validation() {
        assert!(ResourcePath::parse("default/key/1").is_ok());
        assert!(ResourcePath::parse("my-repo/k.e_y/tag-1.0").is_ok());
        for bad in [
            "a/b",
            "a/b/c/d",
            "../b/c",
            "a/../c",
            "a/b/..",
            "a/./c",
            "/a/b",
            "a//c",
            "a/b/.hidden",
            "a/b/c\0",
            "a/b/c d",
            "a\\b/c/d",
            "a/b/%2e%2e",
        ] {
            assert!(ResourcePath::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn survives_reopen_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::Resource(ResourcePath::parse("r/t/x").unwrap());
        {
            let s = FsStore::open(dir.path()).unwrap();
            assert_eq!(s.get(&key).unwrap(), None);
            s.put(&key, b"v1").unwrap();
            s.put(&key, b"v2").unwrap();
            s.put(&Key::AttestationPolicy("p1".into()), b"package policy")
                .unwrap();
        }
        let s = FsStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&key).unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(s.attestation_policy_ids().unwrap(), vec!["p1".to_string()]);
        assert!(s.delete(&key).unwrap());
        assert!(!s.delete(&key).unwrap());
        assert!(s.put(&Key::AttestationPolicy("../x".into()), b"").is_err());
        // No temp files are left behind.
        let leftovers = std::fs::read_dir(dir.path().join("resources/r/t"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0);
    }
}
