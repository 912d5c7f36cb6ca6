//! `CopyFile`: the shim copies files (hostname, hosts, resolv.conf, ConfigMaps) in chunks.
//! Writes are confined below a root (`/run`), go to a temporary file and only appear at
//! the destination once complete.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::protocols::agent::CopyFileRequest;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// Why a copy was refused.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("path {0:?} is not an absolute, canonical path below {1}")]
    Outside(String, String),
    #[error("bad request: {0}")]
    Bad(String),
    #[error("copy to {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Validates that `path` is absolute, has no `.`/`..` components and lies below `root`.
pub fn confine(root: &Path, path: &str) -> Result<PathBuf, CopyError> {
    let p = Path::new(path);
    let outside = || CopyError::Outside(path.to_string(), root.display().to_string());
    if !p.is_absolute() || path.contains('\0') {
        return Err(outside());
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(outside());
    }
    if !p.starts_with(root) || p == root {
        return Err(outside());
    }
    Ok(p.to_path_buf())
}

/// Fails if an existing ancestor of `path` (below `root`) is a symlink: a symlink planted
/// earlier must not redirect writes outside the root.
fn no_symlink_ancestors(root: &Path, path: &Path) -> Result<(), CopyError> {
    let mut cur = root.to_path_buf();
    let rel = path
        .strip_prefix(root)
        .map_err(|_| CopyError::Outside(path.display().to_string(), root.display().to_string()))?;
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        cur.push(c);
        if i + 1 == n {
            break;
        }
        if let Ok(md) = std::fs::symlink_metadata(&cur) {
            if md.file_type().is_symlink() {
                return Err(CopyError::Bad(format!("{} is a symlink", cur.display())));
            }
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Applies one `CopyFile` chunk.
pub fn copy_file(root: &Path, max_size: u64, req: &CopyFileRequest) -> Result<(), CopyError> {
    let path = confine(root, &req.path)?;
    no_symlink_ancestors(root, &path)?;
    let parent = path
        .parent()
        .ok_or_else(|| CopyError::Bad("no parent directory".into()))?;
    let dir_mode = if req.dir_mode == 0 {
        0o750
    } else {
        req.dir_mode & 0o7777
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(parent)
        .map_err(io(parent))?;
    let kind = req.file_mode & S_IFMT;
    if kind == S_IFDIR {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(req.file_mode & 0o7777)
            .create(&path)
            .map_err(io(&path))?;
        return chown(&path, req);
    }
    if kind == S_IFLNK {
        let target = String::from_utf8(req.data.clone())
            .map_err(|_| CopyError::Bad("symlink target is not UTF-8".into()))?;
        let t = Path::new(&target);
        // Relative, downward targets only (ConfigMaps use `..data -> ..2024_...`).
        if t.is_absolute() || t.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(CopyError::Bad(format!("symlink target {target:?} escapes")));
        }
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(t, &path).map_err(io(&path))?;
        return Ok(());
    }
    let size = u64::try_from(req.file_size)
        .map_err(|_| CopyError::Bad(format!("file_size {}", req.file_size)))?;
    let offset =
        u64::try_from(req.offset).map_err(|_| CopyError::Bad(format!("offset {}", req.offset)))?;
    let end = offset
        .checked_add(req.data.len() as u64)
        .filter(|e| *e <= size)
        .ok_or_else(|| CopyError::Bad("chunk goes past file_size".into()))?;
    if size > max_size {
        return Err(CopyError::Bad(format!(
            "file of {size} bytes exceeds {max_size}"
        )));
    }
    let tmp = path.with_file_name(format!(
        ".{}.copying",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(offset == 0)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.seek(SeekFrom::Start(offset)).map_err(io(&tmp))?;
    f.write_all(&req.data).map_err(io(&tmp))?;
    if end == size {
        f.set_permissions(std::fs::Permissions::from_mode(req.file_mode & 0o7777))
            .map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        chown(&tmp, req)?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}

fn chown(path: &Path, req: &CopyFileRequest) -> Result<(), CopyError> {
    let uid = u32::try_from(req.uid).ok().map(nix::unistd::Uid::from_raw);
    let gid = u32::try_from(req.gid).ok().map(nix::unistd::Gid::from_raw);
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(path, uid, gid).map_err(|e| io(path)(std::io::Error::from(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &Path, size: i64, offset: i64, data: &[u8]) -> CopyFileRequest {
        let mut r = CopyFileRequest::new();
        r.path = path.display().to_string();
        r.file_size = size;
        r.offset = offset;
        r.data = data.to_vec();
        r.file_mode = 0o100644;
        r.dir_mode = 0o755;
        r.uid = -1;
        r.gid = -1;
        r
    }

    #[test]
    fn chunked_copy_appears_when_complete() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("a/b/hosts");
        copy_file(root.path(), 1 << 20, &req(&dst, 10, 0, b"hello")).unwrap();
        assert!(!dst.exists(), "partial file must not be visible");
        copy_file(root.path(), 1 << 20, &req(&dst, 10, 5, b"world")).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"helloworld");
    }

    #[test]
    fn escapes_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for bad in ["relative", "/etc/passwd"] {
            let mut q = req(Path::new("/x"), 1, 0, b"x");
            q.path = bad.into();
            assert!(copy_file(r, 100, &q).is_err(), "{bad}");
        }
        let mut q = req(Path::new("/x"), 1, 0, b"x");
        q.path = format!("{}/../escape", r.display());
        assert!(copy_file(r, 100, &q).is_err());
        // A planted symlink directory does not redirect writes.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("link")).unwrap();
        assert!(copy_file(r, 100, &req(&r.join("link/f"), 1, 0, b"x")).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        // Too big, or past the declared size.
        assert!(copy_file(r, 4, &req(&r.join("big"), 5, 0, b"12345")).is_err());
        assert!(copy_file(r, 100, &req(&r.join("f"), 2, 0, b"123")).is_err());
        // Symlinks pointing up or absolute.
        let mut s = req(&r.join("l"), 0, 0, b"../../etc");
        s.file_mode = S_IFLNK | 0o777;
        assert!(copy_file(r, 100, &s).is_err());
        s.data = b"..data/file".to_vec();
        copy_file(r, 100, &s).unwrap();
    }
}
