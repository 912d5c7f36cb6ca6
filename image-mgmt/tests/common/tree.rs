//! Compares two directory trees: types, modes, owners, contents, link
#![allow(clippy::unwrap_used)]
//! targets, hardlink groups and file mtimes.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: String,
    mtime: Option<i64>,
}

pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<u64, String>,
) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let (kind, content, mtime) = if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&p)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                None,
            )
        } else if ft.is_dir() {
            ("dir", String::new(), None)
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            let mut c = super::sha256_hex(&data);
            if md.nlink() > 1 {
                // Hardlinked files: record the first path of the group.
                let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
                c.push_str(&format!(" link-group:{first}"));
            }
            ("file", c, Some(md.mtime()))
        } else {
            ("other", format!("rdev {}", md.rdev()), None)
        };
        out.insert(
            rel.clone(),
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                content,
                mtime,
            },
        );
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// Panics with a readable diff if the trees differ.
pub fn assert_same(ours: &Path, reference: &Path) {
    let a = snapshot(ours);
    let b = snapshot(reference);
    let mut diffs = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            None => diffs.push(format!("missing in ours: {k} {v:?}")),
            Some(x) if x != v => diffs.push(format!("differs: {k}\n  ours {x:?}\n  ref  {v:?}")),
            _ => {}
        }
    }
    for k in a.keys() {
        if !b.contains_key(k) {
            diffs.push(format!("extra in ours: {k}"));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
    assert!(!b.is_empty(), "reference tree is empty");
}
