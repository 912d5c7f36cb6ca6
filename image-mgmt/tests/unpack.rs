//! Layer application against hostile and tricky tar streams: everything is
//! refused with a clear error and nothing lands outside the rootfs.
// Test helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{raw_tar, RawEntry};
use image_mgmt::unpack::{UnpackOptions, Unpacker};
use image_mgmt::Error;

struct Sandbox {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"keep me").unwrap();
    Sandbox {
        _dir: dir,
        root,
        outside,
    }
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        max_layer_bytes: 1 << 20,
        ..Default::default()
    }
}

fn apply(root: &Path, entries: &[RawEntry]) -> Result<(), Error> {
    Unpacker::new(root, opts())?
        .apply_layer(&raw_tar(entries)[..])
        .map(|_| ())
}

fn assert_outside_untouched(s: &Sandbox) {
    let names: Vec<_> = std::fs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("secret")],
        "something was written outside"
    );
    assert_eq!(std::fs::read(s.outside.join("secret")).unwrap(), b"keep me");
    // Nothing next to the rootfs either.
    let parent: Vec<_> = std::fs::read_dir(s.root.parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(parent.len(), 2);
}

fn expect_unsafe(res: Result<(), Error>, what: &str) {
    match res {
        Err(Error::UnsafeEntry { path, reason }) => eprintln!("{what}: refused {path:?}: {reason}"),
        other => panic!("{what}: expected UnsafeEntry, got {other:?}"),
    }
}

#[test]
fn dotdot_traversal_is_refused() {
    let s = sandbox();
    expect_unsafe(
        apply(&s.root, &[RawEntry::file("../outside/pwned", b"x")]),
        "dotdot",
    );
    expect_unsafe(
        apply(&s.root, &[RawEntry::file("a/../../outside/pwned", b"x")]),
        "nested dotdot",
    );
    assert_outside_untouched(&s);
}

#[test]
fn absolute_path_is_refused() {
    let s = sandbox();
    let abs = format!("{}/pwned", s.outside.display());
    expect_unsafe(apply(&s.root, &[RawEntry::file(&abs, b"x")]), "absolute");
    assert_outside_untouched(&s);
}

#[test]
fn pax_path_override_is_checked() {
    let s = sandbox();
    // The ustar name is harmless; the PAX `path` record that overrides it is not.
    let mut e = RawEntry::file("harmless", b"x");
    e.pax.push(("path".into(), b"../outside/pwned".to_vec()));
    expect_unsafe(apply(&s.root, &[e]), "pax path");
    let mut e = RawEntry::hardlink("h", "harmless");
    e.pax.push(("linkpath".into(), b"/etc/shadow".to_vec()));
    expect_unsafe(
        apply(&s.root, &[RawEntry::file("harmless", b"1"), e]),
        "pax linkpath",
    );
    assert_outside_untouched(&s);
}

#[test]
fn pax_size_desync_cannot_smuggle_entries() {
    // TARmageddon-style: PAX size says 0 while the ustar header carries a
    // nested tar in its data. The nested entries must not be extracted.
    let s = sandbox();
    let nested = raw_tar(&[RawEntry::file("../outside/pwned", b"x")]);
    let mut e = RawEntry::file("carrier", &nested);
    e.pax.push(("size".into(), b"0".to_vec()));
    let res = apply(&s.root, &[e, RawEntry::file("after", b"y")]);
    // Either the stream is rejected or the nested path is refused; in no
    // case is anything written outside.
    assert!(
        res.is_err(),
        "desynchronised PAX size must not be accepted silently"
    );
    assert_outside_untouched(&s);
}

#[test]
fn hardlink_escapes_are_refused() {
    let s = sandbox();
    let target = format!("{}/secret", s.outside.display());
    expect_unsafe(
        apply(&s.root, &[RawEntry::hardlink("h", &target)]),
        "absolute hardlink",
    );
    expect_unsafe(
        apply(&s.root, &[RawEntry::hardlink("h", "../outside/secret")]),
        "dotdot hardlink",
    );
    // Through a symlinked directory: resolved inside the rootfs, where the
    // target does not exist.
    let link_dir = s.outside.display().to_string();
    expect_unsafe(
        apply(
            &s.root,
            &[
                RawEntry::symlink("out", &link_dir),
                RawEntry::hardlink("h", "out/secret"),
            ],
        ),
        "hardlink via symlink",
    );
    assert_outside_untouched(&s);
}

#[test]
fn symlink_parent_escapes_stay_inside_or_fail() {
    let s = sandbox();
    // Absolute symlink to the real outside dir, then a file below it.
    let res = apply(
        &s.root,
        &[
            RawEntry::symlink("esc", &s.outside.display().to_string()),
            RawEntry::file("esc/pwned", b"x"),
        ],
    );
    expect_unsafe(res, "absolute symlink parent");
    // Relative symlink climbing above the root, then a file below it: the
    // climb stops at the rootfs, so the file lands inside.
    let s2 = sandbox();
    apply(
        &s2.root,
        &[
            RawEntry::symlink("up", "../../../../../.."),
            RawEntry::file("up/inside-after-all", b"x"),
        ],
    )
    .unwrap();
    assert_eq!(
        std::fs::read(s2.root.join("inside-after-all")).unwrap(),
        b"x"
    );
    assert_outside_untouched(&s);
    assert_outside_untouched(&s2);
}

#[test]
fn symlink_then_file_replaces_the_link_not_its_target() {
    let s = sandbox();
    let target = format!("{}/secret", s.outside.display());
    apply(
        &s.root,
        &[RawEntry::symlink("f", &target), RawEntry::file("f", b"new")],
    )
    .unwrap();
    assert_eq!(std::fs::read(s.root.join("f")).unwrap(), b"new");
    assert!(!std::fs::symlink_metadata(s.root.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_outside_untouched(&s);
}

#[test]
fn device_nodes_need_permission() {
    let s = sandbox();
    expect_unsafe(
        apply(&s.root, &[RawEntry::chardev("dev/evil")]),
        "char device",
    );
    assert!(!s.root.join("dev/evil").exists());
}

#[test]
fn oversized_layer_is_refused() {
    let s = sandbox();
    let big = vec![7u8; (1 << 20) + 1];
    match apply(&s.root, &[RawEntry::file("big", &big)]) {
        Err(Error::LayerTooLarge { .. }) => {}
        other => panic!("expected LayerTooLarge, got {other:?}"),
    }
}

#[test]
fn whiteouts_and_opaque_dirs_follow_the_oci_spec() {
    let s = sandbox();
    apply(
        &s.root,
        &[
            RawEntry::dir("etc"),
            RawEntry::file("etc/keep", b"1"),
            RawEntry::file("etc/drop", b"2"),
            RawEntry::dir("opq"),
            RawEntry::file("opq/old", b"3"),
            RawEntry::dir("opq/sub"),
            RawEntry::file("opq/sub/deep", b"4"),
        ],
    )
    .unwrap();
    apply(
        &s.root,
        &[
            RawEntry::file("etc/.wh.drop", b""),
            // A new file in the same layer before the opaque marker survives.
            RawEntry::file("opq/new", b"5"),
            RawEntry::file("opq/.wh..wh..opq", b""),
            // A whiteout does not hide an entry of its own layer.
            RawEntry::file("etc/same", b"6"),
            RawEntry::file("etc/.wh.same", b""),
        ],
    )
    .unwrap();
    assert!(s.root.join("etc/keep").exists());
    assert!(!s.root.join("etc/drop").exists());
    assert!(s.root.join("etc/same").exists());
    assert!(s.root.join("opq/new").exists());
    assert!(!s.root.join("opq/old").exists());
    assert!(!s.root.join("opq/sub").exists());
    // Whiteout files themselves are never materialised.
    assert!(!s.root.join("etc/.wh.drop").exists());
    assert!(!s.root.join("opq/.wh..wh..opq").exists());
}

#[test]
fn whiteout_through_symlink_cannot_delete_outside() {
    let s = sandbox();
    apply(
        &s.root,
        &[RawEntry::symlink("l", &s.outside.display().to_string())],
    )
    .unwrap();
    // `l` resolves inside the rootfs (where the target does not exist): the
    // whiteout finds nothing to delete.
    apply(&s.root, &[RawEntry::file("l/.wh.secret", b"")]).unwrap();
    apply(&s.root, &[RawEntry::file("l/.wh..wh..opq", b"")]).unwrap_or(());
    assert_outside_untouched(&s);
}

#[test]
fn ownership_modes_and_xattrs_are_applied() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root for chown");
        return;
    }
    let s = sandbox();
    let mut f = RawEntry::file("bin/tool", b"#!/bin/sh\n");
    f.mode = 0o4755;
    f.pax.push(("uid".into(), b"1234".to_vec()));
    f.pax.push(("gid".into(), b"5678".to_vec()));
    f.pax
        .push(("SCHILY.xattr.user.test".into(), b"hello".to_vec()));
    apply(&s.root, &[f]).unwrap();
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(s.root.join("bin/tool")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(md.mode() & 0o7777, 0o4755, "setuid survives chown");
    let mut buf = [0u8; 16];
    match rustix::fs::getxattr(s.root.join("bin/tool").as_path(), "user.test", &mut buf) {
        Ok(n) => assert_eq!(&buf[..n], b"hello"),
        Err(rustix::io::Errno::OPNOTSUPP) => eprintln!("file system without user xattrs"),
        Err(e) => panic!("getxattr: {e}"),
    }
}
