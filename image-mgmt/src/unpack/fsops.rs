//! File-system primitives confined to a root directory.
//!
//! Every path from a layer is split into a parent (resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so symlinks and `..`
//! can never leave the root, even under concurrent renames) and a single final
//! name that is only ever used with `*at` calls that do not follow symlinks.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

const DIR_PATH_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// The root directory every operation is confined to.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

fn display(parts: &[&[u8]]) -> String {
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(&String::from_utf8_lossy(p));
    }
    s
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(p);
    }
    v
}

impl Root {
    /// Opens `dir` (which must exist) as the confinement root.
    pub fn open(dir: &std::path::Path) -> Result<Self> {
        let fd = fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("opening rootfs {}", dir.display()))?;
        Ok(Self { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory `parts` (relative to the root) as an `O_PATH` fd,
    /// creating missing components with mode 0755. Symlinks on the way are
    /// followed but stay inside the root.
    pub fn ensure_dir(&self, parts: &[&[u8]]) -> Result<OwnedFd> {
        if parts.is_empty() {
            return fs::openat(&self.fd, ".", DIR_PATH_FLAGS, Mode::empty())
                .ctx(|| "reopening rootfs".into());
        }
        match fs::openat2(
            &self.fd,
            join(parts),
            DIR_PATH_FLAGS,
            Mode::empty(),
            RESOLVE,
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::NOTDIR) => return Err(not_a_dir(parts)),
            Err(e) => return Err(io_err(e, parts, "resolving directory")),
        }
        // Walk from the root, creating what is missing one name at a time.
        let mut cur = fs::openat(&self.fd, ".", DIR_PATH_FLAGS, Mode::empty())
            .ctx(|| "reopening rootfs".into())?;
        for i in 0..parts.len() {
            let prefix = join(&parts[..=i]);
            match fs::openat2(&self.fd, &prefix, DIR_PATH_FLAGS, Mode::empty(), RESOLVE) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    match fs::mkdirat(&cur, parts[i], Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            // The name exists but does not resolve: a dangling
                            // symlink, typically one aimed outside the root.
                            return Err(Error::UnsafeEntry {
                                path: display(&parts[..=i]),
                                reason: "parent is a symlink whose target does not exist inside the rootfs".into(),
                            });
                        }
                        Err(e) => return Err(io_err(e, &parts[..=i], "creating directory")),
                    }
                    cur = fs::openat2(&self.fd, &prefix, DIR_PATH_FLAGS, Mode::empty(), RESOLVE)
                        .map_err(|e| io_err(e, &parts[..=i], "opening new directory"))?;
                }
                Err(Errno::NOTDIR) => return Err(not_a_dir(&parts[..=i])),
                Err(e) => return Err(io_err(e, &parts[..=i], "resolving directory")),
            }
        }
        Ok(cur)
    }

    /// Like [`Root::ensure_dir`] but never creates anything; `None` if missing.
    pub fn find_dir(&self, parts: &[&[u8]]) -> Result<Option<OwnedFd>> {
        let path = if parts.is_empty() {
            b".".to_vec()
        } else {
            join(parts)
        };
        match fs::openat2(&self.fd, path, DIR_PATH_FLAGS, Mode::empty(), RESOLVE) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(io_err(e, parts, "resolving directory")),
        }
    }
}

fn not_a_dir(parts: &[&[u8]]) -> Error {
    Error::UnsafeEntry {
        path: display(parts),
        reason: "a parent component is not a directory".into(),
    }
}

fn io_err(e: Errno, parts: &[&[u8]], what: &str) -> Error {
    Error::Io {
        context: format!("{what} {}", display(parts)),
        source: e.into(),
    }
}

/// What is currently at `name` in `dir`, without following symlinks.
pub fn lstat_kind(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<fs::FileType>> {
    match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(fs::FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(Error::Io {
            context: format!("stat {}", String::from_utf8_lossy(name)),
            source: e.into(),
        }),
    }
}

/// Removes `name` in `dir` and, for a directory, everything below it. Never
/// follows symlinks.
pub fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    let ctx = || format!("removing {}", String::from_utf8_lossy(name));
    match lstat_kind(dir, name)? {
        None => Ok(()),
        Some(fs::FileType::Directory) => {
            let sub = fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(ctx)?;
            clear_dir(sub.as_fd(), |_| false)?;
            fs::unlinkat(dir, name, AtFlags::REMOVEDIR).ctx(ctx)
        }
        Some(_) => fs::unlinkat(dir, name, AtFlags::empty()).ctx(ctx),
    }
}

/// Removes every child of the open directory `dir` for which `keep` is false.
pub fn clear_dir(dir: BorrowedFd<'_>, keep: impl Fn(&[u8]) -> bool) -> Result<()> {
    // Collect names first: removing while iterating a directory stream is
    // unspecified.
    let names = list_dir(dir)?;
    for name in names {
        if !keep(&name) {
            remove_all(dir, &name)?;
        }
    }
    Ok(())
}

/// Names in `dir` except `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>> {
    let fd = fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "opening directory for listing".into())?;
    let mut d = fs::Dir::read_from(&fd).ctx(|| "listing directory".into())?;
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent.ctx(|| "listing directory".into())?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}
