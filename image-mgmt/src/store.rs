//! Content-addressed blob store in the guest, shared by all pulls of a pod:
//! `<root>/blobs/sha256/<hex>`. A blob only gets its final name after its
//! digest (and, for encrypted layers, its HMAC) was verified.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::digest::Sha256Digest;
use crate::error::{IoContext, Result};

#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    // One download per blob at a time within this process.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self, d: &Sha256Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    pub fn partial_path(&self, d: &Sha256Digest) -> PathBuf {
        self.dir.join(format!("{}.partial", d.hex()))
    }

    pub fn contains(&self, d: &Sha256Digest) -> bool {
        self.path(d).is_file()
    }

    /// Gives a verified partial download its content address.
    pub fn commit(&self, d: &Sha256Digest) -> Result<()> {
        std::fs::rename(self.partial_path(d), self.path(d)).ctx(|| format!("committing blob {d}"))
    }

    /// Drops a blob that failed verification.
    pub fn discard(&self, d: &Sha256Digest) {
        let _ = std::fs::remove_file(self.partial_path(d));
    }

    pub fn remove(&self, d: &Sha256Digest) {
        let _ = std::fs::remove_file(self.path(d));
    }

    /// Exclusive lock on a blob across processes (the agent and an operator's
    /// `image-pull` may share the store). Released when the fd is dropped.
    pub async fn lock_across_processes(&self, d: &Sha256Digest) -> Result<std::os::fd::OwnedFd> {
        let path = self.dir.join(format!("{}.lock", d.hex()));
        tokio::task::spawn_blocking(move || {
            let fd = rustix::fs::open(
                &path,
                rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .ctx(|| format!("opening {}", path.display()))?;
            rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
                .ctx(|| format!("locking {}", path.display()))?;
            Ok(fd)
        })
        .await
        .map_err(|e| crate::Error::Registry(format!("lock task: {e}")))?
    }

    pub fn lock(&self, d: &Sha256Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(d.hex().to_owned()).or_default().clone()
    }
}
