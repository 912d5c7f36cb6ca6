//! Safe application of OCI layer tar streams onto a root directory.
//!
//! Paths are validated lexically first (no absolute paths, no `..`, no NUL),
//! then resolved by the kernel inside the root (see [`fsops`]). Whiteouts and
//! opaque directories follow the OCI image spec: they hide content of lower
//! layers only, never entries of the same layer.

mod fsops;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags};
use tar::EntryType;

use crate::error::{Error, IoContext, Result};
pub use fsops::Root;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const COPY_BUF: usize = 256 * 1024;

/// Limits and permissions for unpacking.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Create character and block devices (otherwise such entries are refused).
    pub allow_devices: bool,
    /// Apply uid/gid from the layer (needs CAP_CHOWN).
    pub preserve_ownership: bool,
    /// Maximum uncompressed size of one layer, in bytes.
    pub max_layer_bytes: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            allow_devices: false,
            preserve_ownership: rustix::process::geteuid().is_root(),
            max_layer_bytes: 16 << 30,
        }
    }
}

/// Counters of one applied layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Validates an archive path and splits it into components.
///
/// Absolute paths, `..` anywhere, NUL bytes and empty names are refused, not
/// silently rewritten: a layer that contains them is hostile or broken.
pub fn sanitize(raw: &[u8]) -> Result<Vec<&[u8]>> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.contains(&0) {
        return Err(Error::UnsafeEntry {
            path: shown(),
            reason: "NUL byte in path".into(),
        });
    }
    if raw.first() == Some(&b'/') {
        return Err(Error::UnsafeEntry {
            path: shown(),
            reason: "absolute path".into(),
        });
    }
    let mut parts = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(Error::UnsafeEntry {
                    path: shown(),
                    reason: "`..` component".into(),
                })
            }
            c => parts.push(c),
        }
    }
    Ok(parts)
}

/// Applies layers to one root directory.
#[derive(Debug)]
pub struct Unpacker {
    root: Root,
    opts: UnpackOptions,
}

/// Parent directory fd cache: consecutive entries usually share a parent.
struct ParentCache {
    path: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl Unpacker {
    /// Opens `root` (which must exist) for unpacking.
    pub fn new(root: &Path, opts: UnpackOptions) -> Result<Self> {
        Ok(Self {
            root: Root::open(root)?,
            opts,
        })
    }

    pub fn options(&self) -> &UnpackOptions {
        &self.opts
    }

    /// Reads a whole tar stream from `reader` and applies it. The reader is
    /// drained to its end so a digest computed around it covers everything.
    pub fn apply_layer<R: Read>(&self, reader: R) -> Result<LayerStats> {
        let mut archive = tar::Archive::new(reader);
        let mut stats = LayerStats::default();
        let mut created: HashSet<Vec<u8>> = HashSet::new();
        let mut cache = ParentCache {
            path: Vec::new(),
            fd: None,
        };
        let mut buf = vec![0u8; COPY_BUF];
        let entries = archive.entries().map_err(|e| Error::Tar(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::Tar(e.to_string()))?;
            stats.entries += 1;
            stats.bytes = stats.bytes.saturating_add(entry.size());
            if stats.bytes > self.opts.max_layer_bytes {
                return Err(Error::LayerTooLarge {
                    digest: "(uncompressed)".into(),
                    size: stats.bytes,
                    limit: self.opts.max_layer_bytes,
                });
            }
            self.apply_entry(&mut entry, &mut created, &mut cache, &mut buf)?;
        }
        // Trailing padding after the end-of-archive blocks still belongs to
        // the layer blob; read it so the diff_id hash is complete.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| Error::Tar(e.to_string()))?;
        Ok(stats)
    }

    fn apply_entry<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        created: &mut HashSet<Vec<u8>>,
        cache: &mut ParentCache,
        buf: &mut [u8],
    ) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let parts = sanitize(&raw_path)?;
        let shown = || String::from_utf8_lossy(&raw_path).into_owned();
        let Some((&name, parent)) = parts.split_last() else {
            // The root itself ("./"): keep the rootfs directory's own metadata.
            return Ok(());
        };

        if name == OPAQUE {
            cache.fd = None;
            return self.opaque(parent, created);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(Error::UnsafeEntry {
                    path: shown(),
                    reason: "malformed whiteout".into(),
                });
            }
            cache.fd = None;
            return self.whiteout(parent, hidden, created);
        }

        let parent_key = join(parent);
        if cache.fd.is_none() || cache.path != parent_key {
            cache.fd = Some(self.root.ensure_dir(parent)?);
            cache.path = parent_key;
        }
        let Some(pfd) = cache.fd.as_ref() else {
            return Err(Error::Tar("internal: parent cache empty".into()));
        };
        let pfd = pfd.as_fd();
        let existing = fsops::lstat_kind(pfd, name)?;
        let is_dir_entry = kind == EntryType::Directory;
        if let Some(t) = existing {
            // A directory stays a directory (its metadata is updated);
            // anything else is replaced, as tar and umoci do.
            if !(is_dir_entry && t == rfs::FileType::Directory) {
                // The cached fd is `name`'s parent, which this never removes.
                fsops::remove_all(pfd, name)?;
            }
        }
        let io_ctx = |what: &str| format!("{what} {}", shown());
        let mode = Mode::from_raw_mode(entry.header().mode().unwrap_or(0o644) & 0o7777);
        let h = entry.header();
        let (uid, gid) = (
            numeric_or_zero(h.uid(), &h.as_old().uid)?,
            numeric_or_zero(h.gid(), &h.as_old().gid)?,
        );
        let mtime = entry.header().mtime().unwrap_or(0);
        let xattrs = collect_xattrs(entry)?;

        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let fd = rfs::openat(
                    pfd,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .ctx(|| io_ctx("creating"))?;
                let mut file = File::from(fd);
                loop {
                    let n = entry.read(buf).map_err(|e| Error::Tar(e.to_string()))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).ctx(|| io_ctx("writing"))?;
                }
                self.set_owner_fd(&file, uid, gid, &shown)?;
                rfs::fchmod(&file, mode).ctx(|| io_ctx("chmod"))?;
                set_xattrs_fd(&file, &xattrs, &shown)?;
                let ts = timestamps(mtime);
                rfs::futimens(&file, &ts).ctx(|| io_ctx("setting mtime of"))?;
            }
            EntryType::Directory => {
                if existing != Some(rfs::FileType::Directory) {
                    rfs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                        .ctx(|| io_ctx("creating directory"))?;
                }
                let fd = rfs::openat(
                    pfd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| io_ctx("opening directory"))?;
                self.set_owner_fd(&fd, uid, gid, &shown)?;
                rfs::fchmod(&fd, mode).ctx(|| io_ctx("chmod"))?;
                set_xattrs_fd(&fd, &xattrs, &shown)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::Tar(format!("symlink {} without target", shown())))?
                    .into_owned();
                if target.is_empty() || target.contains(&0) {
                    return Err(Error::UnsafeEntry {
                        path: shown(),
                        reason: "empty or NUL symlink target".into(),
                    });
                }
                // The target text is stored as is: it is only ever followed by
                // our own resolution (confined) or by the container (chrooted).
                rfs::symlinkat(target.as_slice(), pfd, name).ctx(|| io_ctx("creating symlink"))?;
                self.set_owner_at(pfd, name, uid, gid, &shown)?;
                let ts = timestamps(mtime);
                rfs::utimensat(pfd, name, &ts, AtFlags::SYMLINK_NOFOLLOW)
                    .ctx(|| io_ctx("setting mtime of"))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::Tar(format!("hardlink {} without target", shown())))?
                    .into_owned();
                let tparts = sanitize(&target).map_err(|e| match e {
                    Error::UnsafeEntry { reason, .. } => Error::UnsafeEntry {
                        path: shown(),
                        reason: format!(
                            "hardlink target {:?}: {reason}",
                            String::from_utf8_lossy(&target)
                        ),
                    },
                    other => other,
                })?;
                let Some((&tname, tparent)) = tparts.split_last() else {
                    return Err(Error::UnsafeEntry {
                        path: shown(),
                        reason: "hardlink to the root directory".into(),
                    });
                };
                let tdir = self
                    .root
                    .find_dir(tparent)?
                    .ok_or_else(|| Error::UnsafeEntry {
                        path: shown(),
                        reason: "hardlink target's directory does not exist in the rootfs".into(),
                    })?;
                match fsops::lstat_kind(tdir.as_fd(), tname)? {
                    None => {
                        return Err(Error::UnsafeEntry {
                            path: shown(),
                            reason: "hardlink target does not exist in the rootfs".into(),
                        })
                    }
                    Some(rfs::FileType::Directory) => {
                        return Err(Error::UnsafeEntry {
                            path: shown(),
                            reason: "hardlink to a directory".into(),
                        })
                    }
                    Some(_) => {}
                }
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                rfs::linkat(tdir.as_fd(), tname, pfd, name, AtFlags::empty())
                    .ctx(|| io_ctx("creating hardlink"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ftype, dev) = if kind == EntryType::Fifo {
                    (rfs::FileType::Fifo, 0)
                } else {
                    if !self.opts.allow_devices {
                        return Err(Error::UnsafeEntry {
                            path: shown(),
                            reason: "device node (not allowed by configuration)".into(),
                        });
                    }
                    let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                    let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                    let t = if kind == EntryType::Char {
                        rfs::FileType::CharacterDevice
                    } else {
                        rfs::FileType::BlockDevice
                    };
                    (t, rfs::makedev(major, minor))
                };
                rfs::mknodat(pfd, name, ftype, Mode::from_raw_mode(0o600), dev)
                    .ctx(|| io_ctx("creating node"))?;
                self.set_owner_at(pfd, name, uid, gid, &shown)?;
                rfs::chmodat(pfd, name, mode, AtFlags::empty()).ctx(|| io_ctx("chmod"))?;
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "tar entry type {other:?} for {}",
                    shown()
                )))
            }
        }
        // Remember the entry and its ancestors: whiteouts and opaque markers
        // of this same layer must not remove them.
        let mut key = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                key.push(b'/');
            }
            key.extend_from_slice(p);
            created.insert(key.clone());
        }
        Ok(())
    }

    fn whiteout(&self, parent: &[&[u8]], hidden: &[u8], created: &HashSet<Vec<u8>>) -> Result<()> {
        let mut key = join(parent);
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(hidden);
        if created.contains(&key) {
            return Ok(());
        }
        if let Some(dir) = self.root.find_dir(parent)? {
            fsops::remove_all(dir.as_fd(), hidden)?;
        }
        Ok(())
    }

    fn opaque(&self, parent: &[&[u8]], created: &HashSet<Vec<u8>>) -> Result<()> {
        let dir = self.root.ensure_dir(parent)?;
        let base = join(parent);
        fsops::clear_dir(dir.as_fd(), |child| {
            let mut key = base.clone();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(child);
            created.contains(&key)
        })
    }

    fn set_owner_fd<Fd: AsFd>(
        &self,
        fd: Fd,
        uid: u64,
        gid: u64,
        shown: &dyn Fn() -> String,
    ) -> Result<()> {
        if !self.opts.preserve_ownership {
            return Ok(());
        }
        let (u, g) = ids(uid, gid, shown)?;
        rfs::fchown(fd, Some(u), Some(g)).ctx(|| format!("chown {}", shown()))
    }

    fn set_owner_at(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &[u8],
        uid: u64,
        gid: u64,
        shown: &dyn Fn() -> String,
    ) -> Result<()> {
        if !self.opts.preserve_ownership {
            return Ok(());
        }
        let (u, g) = ids(uid, gid, shown)?;
        rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
            .ctx(|| format!("chown {}", shown()))
    }
}

fn ids(uid: u64, gid: u64, shown: &dyn Fn() -> String) -> Result<(Uid, Gid)> {
    let bad = || Error::UnsafeEntry {
        path: shown(),
        reason: "uid/gid out of range".into(),
    };
    let uid = u32::try_from(uid)
        .ok()
        .filter(|&u| u != u32::MAX)
        .ok_or_else(bad)?;
    let gid = u32::try_from(gid)
        .ok()
        .filter(|&g| g != u32::MAX)
        .ok_or_else(bad)?;
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// A numeric header field; an all-empty field means 0 (as GNU tar reads it),
/// anything else unparsable is an error.
fn numeric_or_zero(v: io::Result<u64>, raw: &[u8]) -> Result<u64> {
    match v {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(Error::Tar(e.to_string())),
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = rfs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// `SCHILY.xattr.*` records of the entry's PAX header.
fn collect_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| Error::Tar(e.to_string()))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| Error::Tar(e.to_string()))?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn set_xattrs_fd<Fd: AsFd>(
    fd: Fd,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    shown: &dyn Fn() -> String,
) -> Result<()> {
    for (name, value) in xattrs {
        // overlayfs control attributes in an image could change how the
        // rootfs is later mounted: never take them from a layer.
        if name.starts_with(b"trusted.overlay.") || name.contains(&0) {
            tracing::warn!(path = %shown(), name = %String::from_utf8_lossy(name), "skipping xattr");
            continue;
        }
        match rfs::fsetxattr(fd.as_fd(), name.as_slice(), value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => {
                tracing::warn!(path = %shown(), "file system does not support xattrs");
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!(
                        "setting xattr {} on {}",
                        String::from_utf8_lossy(name),
                        shown()
                    ),
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}
