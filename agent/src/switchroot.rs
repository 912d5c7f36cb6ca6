//! `switch_root` for the agent as PID 1 of an initramfs: pivot_root(2) refuses to
//! move away from the initial rootfs, so runc could only jail containers with
//! MS_MOVE + chroot (`--no-pivot`). Copying the image into a tmpfs and making that
//! the root lets runc pivot_root as usual. What busybox's `switch_root` does, minus
//! the exec: the agent keeps running from its (now unlinked) binary.

use std::io;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::Path;

use nix::mount::{mount, MsFlags};

/// Where the tmpfs is assembled before it is moved onto `/`.
const NEW_ROOT: &str = "/newroot";

/// Whether `/` is the initramfs. Called first thing by PID 1: a ramfs/tmpfs root at
/// that point can only be the kernel's rootfs.
pub fn on_initramfs() -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // linux/magic.h; nix has no constant for it.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    })
}

/// Copies `/` into a fresh tmpfs, frees the initramfs and makes the tmpfs the root.
/// Must run before anything is mounted below `/` (so before `mount_basics`).
pub fn switch_to_tmpfs() -> io::Result<()> {
    let new = Path::new(NEW_ROOT);
    std::fs::create_dir_all(new)?;
    mount(
        Some("tmpfs"),
        new,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| io::Error::other(format!("mount tmpfs on {NEW_ROOT}: {e}")))?;
    for entry in std::fs::read_dir("/")? {
        let entry = entry?;
        if entry.file_name() == "newroot" {
            continue;
        }
        copy_tree(&entry.path(), &new.join(entry.file_name()))?;
        // Free the initramfs copy right away: peak memory is one copy plus one entry.
        remove(&entry.path())?;
    }
    std::env::set_current_dir(new)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| io::Error::other(format!("move {NEW_ROOT} onto /: {e}")))?;
    nix::unistd::chroot(".").map_err(|e| io::Error::other(format!("chroot: {e}")))?;
    std::env::set_current_dir("/")?;
    Ok(())
}

fn remove(p: &Path) -> io::Result<()> {
    if p.symlink_metadata()?.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// Copies files, directories (with their modes) and symlinks. Device nodes are
/// skipped: devtmpfs is mounted on /dev afterwards.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = src.symlink_metadata()?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        symlink(std::fs::read_link(src)?, dst)
    } else if ft.is_dir() {
        std::fs::create_dir(dst)?;
        std::fs::set_permissions(dst, meta.permissions())?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else if ft.is_file() {
        std::fs::copy(src, dst).map(|_| ())
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{}: unknown file type",
            src.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_files_dirs_modes_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/busybox"), b"elf").unwrap();
        std::fs::set_permissions(
            src.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("busybox", src.join("bin/sh")).unwrap();
        std::fs::create_dir(src.join("tmp")).unwrap();
        std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let dst = d.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("bin/busybox")).unwrap(), b"elf");
        let mode = |p: &Path| p.metadata().unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dst.join("bin/busybox")), 0o755);
        assert_eq!(mode(&dst.join("tmp")), 0o1777);
        assert_eq!(
            std::fs::read_link(dst.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        remove(&src).unwrap();
        assert!(!src.exists());
    }
}
