//! The initdata disk: a read-only block device carrying the pod's initdata
//! (`aa.toml`, `cdh.toml`, `policy.rego`). Its format and parser are
//! `coco_jose::initdata`; this module only finds the device.

use std::io::Read;

/// The one implementation the host tooling and the KBS share.
pub use coco_jose::initdata::{Initdata, InitdataError, MAGIC, MAX_LEN};

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

    const TOML: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault ExecProcessRequest := true\n'''\n";

    fn disk() -> Vec<u8> {
        Initdata::parse(TOML).unwrap().to_disk().unwrap()
    }

    #[test]
    fn the_policy_it_carries_compiles() {
        let d = Initdata::from_disk(disk().as_slice()).unwrap();
        crate::policy::Policy::new(d.policy().unwrap()).unwrap();
    }

    #[test]
    fn finds_the_initdata_disk() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vda"), vec![0u8; 1024]).unwrap();
        std::fs::write(d.path().join("vdb"), disk()).unwrap();
        std::fs::write(d.path().join("vdb1"), disk()).unwrap();
        assert_eq!(find_device(d.path()), Some(d.path().join("vdb")));
        std::fs::remove_file(d.path().join("vdb")).unwrap();
        assert_eq!(find_device(d.path()), None);
    }
}
