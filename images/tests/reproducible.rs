//! Two builds from the same inputs give identical artifacts and identical measurements.
//! Uses the cached Debian cloud kernel (downloaded once with `apt-get download`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use coco_image::kernel::{self, KernelTree};
use coco_image::measure::{self, MeasureConfig};
use coco_image::{Compression, ImageSpec};

fn kernel() -> KernelTree {
    kernel::fetch_package(kernel::CLOUD_KERNEL_META, &kernel::cache_root())
        .expect("Debian cloud kernel package")
}

fn spec(kernel: &KernelTree, init: &Path) -> ImageSpec {
    ImageSpec {
        kernel: Some(kernel.clone()),
        binaries: BTreeMap::from([("ls".to_string(), PathBuf::from("/bin/ls"))]),
        files: BTreeMap::from([("/etc/hostname".to_string(), PathBuf::from("/etc/hostname"))]),
        modules: [
            "vsock",
            "vmw_vsock_virtio_transport",
            "virtio_blk",
            "overlay",
            "dm_crypt",
        ]
        .map(String::from)
        .to_vec(),
        busybox: Some("/bin/busybox".into()),
        pause_bundle: true,
        init: Some(init.to_path_buf()),
        firmware: None,
        cmdline: "console=ttyS0 panic=-1".into(),
        mtime: 0,
        compression: Compression::Gzip,
    }
}

fn measure_cfg(fw: &Path) -> MeasureConfig {
    MeasureConfig {
        snp_ovmf: Some(fw.to_path_buf()),
        snp_vcpus: vec![1, 2, 4],
        snp_vcpu_type: "EPYC-v4".into(),
        tdx_ovmf: Path::new("/usr/share/ovmf/OVMF.fd")
            .is_file()
            .then(|| PathBuf::from("/usr/share/ovmf/OVMF.fd")),
        tdx_page_order: Default::default(),
        direct_boot: Default::default(),
        tpm: true,
    }
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_builds_are_identical_and_measure_the_same() {
    let k = kernel();
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("init");
    std::fs::write(&init, "#!/bin/busybox sh\necho hi\n").unwrap();
    let fw = tmp.path().join("fw.fd");
    std::fs::write(&fw, common::synthetic_firmware(true)).unwrap();

    let a = spec(&k, &init).build(&tmp.path().join("a")).unwrap();
    // Same inputs given in another order must not matter.
    let mut s = spec(&k, &init);
    s.modules.reverse();
    let b = s.build(&tmp.path().join("b")).unwrap();
    assert_eq!(files(&a.dir), files(&b.dir), "artifacts differ");
    assert_eq!(a.manifest, b.manifest);

    let ra = measure::reference_values(
        &a.kernel(),
        &a.initrd(),
        "console=ttyS0 panic=-1",
        &measure_cfg(&fw),
    )
    .unwrap();
    let rb = measure::reference_values(
        &b.kernel(),
        &b.initrd(),
        "console=ttyS0 panic=-1",
        &measure_cfg(&fw),
    )
    .unwrap();
    assert_eq!(ra, rb);
    assert_eq!(
        ra[measure::SNP_LAUNCH_MEASUREMENT].len(),
        3,
        "one digest per vCPU count"
    );
    for k in [
        measure::TPM_PCR04,
        measure::TPM_PCR09,
        measure::TDX_MRTD,
        measure::TDX_RTMR_1,
        measure::TDX_RTMR_2,
    ] {
        assert!(ra.contains_key(k), "{k} missing");
    }

    // The manifest records every input with its digest.
    let m = &a.manifest;
    for p in [
        "/init",
        "/bin/busybox",
        "/usr/bin/ls",
        "/etc/hostname",
        "/pause_bundle/config.json",
    ] {
        assert!(
            m.inputs.iter().any(|i| i.guest_path == p),
            "{p} missing from manifest"
        );
    }
    assert!(m
        .inputs
        .iter()
        .any(|i| i.guest_path.ends_with("/libc.so.6")));
    assert!(
        m.modules.iter().any(|x| x.ends_with("dm-mod.ko")),
        "dm_crypt's dependency"
    );
    assert_eq!(m.outputs.len(), 3);

    // The test can fail: a different mtime changes the initrd and its measurements.
    let mut s = spec(&k, &init);
    s.mtime = 1;
    let c = s.build(&tmp.path().join("c")).unwrap();
    assert_ne!(files(&a.dir)["initrd.img"], files(&c.dir)["initrd.img"]);
    let rc = measure::reference_values(
        &c.kernel(),
        &c.initrd(),
        "console=ttyS0 panic=-1",
        &measure_cfg(&fw),
    )
    .unwrap();
    assert_ne!(
        ra[measure::SNP_LAUNCH_MEASUREMENT],
        rc[measure::SNP_LAUNCH_MEASUREMENT]
    );
    assert_ne!(ra[measure::TPM_PCR09], rc[measure::TPM_PCR09]);
}

#[test]
fn initrd_unpacks_with_gnu_cpio_to_the_input_bytes() {
    let k = kernel();
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("init");
    std::fs::write(&init, "#!/bin/busybox sh\n").unwrap();
    let mut s = spec(&k, &init);
    s.compression = Compression::None;
    let built = s.build(&tmp.path().join("out")).unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cpio -id --quiet --no-absolute-filenames < {}",
            built.initrd().display()
        ))
        .current_dir(&root)
        .output()
        .expect("GNU cpio");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rec in &built.manifest.inputs {
        let p = root.join(rec.guest_path.trim_start_matches('/'));
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&data)),
            rec.sha256,
            "{}",
            rec.guest_path
        );
    }
    let link = std::fs::read_link(root.join("bin/sh")).unwrap();
    assert_eq!(link, Path::new("busybox"));
    let modules = std::fs::read_to_string(root.join("etc/coco/modules")).unwrap();
    let lines: Vec<&str> = modules.lines().collect();
    let pos = |n: &str| lines.iter().position(|l| l.ends_with(n)).unwrap();
    assert!(
        pos("/vsock.ko") < pos("/vmw_vsock_virtio_transport.ko"),
        "{lines:?}"
    );
    assert!(pos("/dm-mod.ko") < pos("/dm-crypt.ko"), "{lines:?}");
}
