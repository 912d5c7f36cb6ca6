//! Our SEV-SNP launch digest must equal PyPI `sev-snp-measure` 0.0.13's on the same
//! inputs. Install the reference tool with `scripts/setup-measure-tools.sh`.
//!
//! Firmware: a small synthetic image carrying exactly what both tools read (the OVMF
//! footer GUID table, SEV metadata with an SNP kernel-hashes section, the SEV-ES reset
//! block), Debian's real `OVMF.fd` (no kernel hashes: firmware-only digest), and a
//! cached AmdSev OVMF build when one exists.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use coco_image::measure::snp::{launch_digest, SnpLaunch};
use common::synthetic_firmware;

fn reference_tool() -> PathBuf {
    let candidates = [
        std::env::var_os("SEV_SNP_MEASURE").map(PathBuf::from),
        Some(PathBuf::from(
            "/var/cache/coco-image/venv/bin/sev-snp-measure",
        )),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "sev-snp-measure 0.0.13 not installed: run scripts/setup-measure-tools.sh \
         (or set SEV_SNP_MEASURE to its path)"
    );
}

fn reference_digest(l: &SnpLaunch) -> String {
    let mut cmd = Command::new(reference_tool());
    cmd.args(["--mode", "snp", "--output-format", "hex"])
        .arg("--vcpus")
        .arg(l.vcpus.to_string())
        .arg("--vcpu-type")
        .arg(&l.vcpu_type)
        .arg("--ovmf")
        .arg(&l.ovmf);
    if let Some(k) = &l.kernel {
        cmd.arg("--kernel").arg(k);
    }
    if let Some(i) = &l.initrd {
        cmd.arg("--initrd").arg(i);
    }
    if let Some(c) = &l.cmdline {
        cmd.arg("--append").arg(c);
    }
    let out = cmd.output().expect("run sev-snp-measure");
    assert!(
        out.status.success(),
        "sev-snp-measure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_lowercase()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn synthetic_amdsev_firmware_with_kernel_hashes_matches_reference_for_1_2_4_vcpus() {
    let dir = tempfile::tempdir().unwrap();
    let fw = write(dir.path(), "fw.fd", &synthetic_firmware(true));
    let kernel = write(dir.path(), "vmlinuz", &vec![0x5a; 300_001]);
    let initrd = write(dir.path(), "initrd", b"070701 not really an initrd");
    for vcpus in [1, 2, 4] {
        for cpu in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"] {
            let mut l = SnpLaunch::new(&fw, vcpus);
            l.vcpu_type = cpu.into();
            l.kernel = Some(kernel.clone());
            l.initrd = Some(initrd.clone());
            l.cmdline = Some("console=ttyS0 panic=-1".into());
            let ours = hex::encode(launch_digest(&l).unwrap());
            assert_eq!(ours, reference_digest(&l), "{vcpus} vCPUs, {cpu}");
            eprintln!("{vcpus} vCPU {cpu}: {ours}");
        }
    }
}

#[test]
fn every_measured_input_changes_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let fw = write(dir.path(), "fw.fd", &synthetic_firmware(true));
    let kernel = write(dir.path(), "k", b"kernel");
    let kernel2 = write(dir.path(), "k2", b"kernel2");
    let initrd = write(dir.path(), "i", b"initrd");
    let mut l = SnpLaunch::new(&fw, 1);
    l.kernel = Some(kernel);
    l.initrd = Some(initrd);
    l.cmdline = Some("a".into());
    let base = launch_digest(&l).unwrap();
    let mut v = l.clone();
    v.cmdline = Some("b".into());
    assert_ne!(launch_digest(&v).unwrap(), base);
    let mut v = l.clone();
    v.kernel = Some(kernel2);
    assert_ne!(launch_digest(&v).unwrap(), base);
    let mut v = l.clone();
    v.vcpus = 2;
    assert_ne!(launch_digest(&v).unwrap(), base);
    // A firmware without the kernel-hashes section cannot measure a kernel: refused.
    let nohash = write(dir.path(), "nohash.fd", &synthetic_firmware(false));
    let mut v = l.clone();
    v.ovmf = nohash;
    assert!(launch_digest(&v).is_err());
}

#[test]
fn debian_ovmf_firmware_only_matches_reference() {
    let ovmf = Path::new("/usr/share/ovmf/OVMF.fd");
    assert!(
        ovmf.is_file(),
        "Debian OVMF missing: run scripts/setup-measure-tools.sh (installs ovmf)"
    );
    for vcpus in [1, 2, 4] {
        let l = SnpLaunch::new(ovmf, vcpus);
        assert_eq!(
            hex::encode(launch_digest(&l).unwrap()),
            reference_digest(&l),
            "{vcpus} vCPUs"
        );
    }
}

#[test]
fn cached_amdsev_ovmf_matches_reference_when_present() {
    let path = std::env::var_os("COCO_AMDSEV_OVMF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/coco-image/ovmf/OVMF-AmdSev.fd"));
    if !path.is_file() {
        eprintln!(
            "skipped: no AmdSev OVMF build at {}; build it with scripts/build-ovmf.sh (about \
             10 minutes once, cached; scripts/setup-measure-tools.sh runs it) or set \
             COCO_AMDSEV_OVMF; the synthetic firmware \
             test covers the kernel-hashes path meanwhile",
            path.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A kernel-sized kernel and initrd, so the hashes table is filled from real-size
    // inputs, not just one page.
    let kernel = write(
        dir.path(),
        "k",
        &(0..9_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let initrd = write(dir.path(), "i", &vec![2u8; 3_000_001]);
    let mut seen = std::collections::BTreeSet::new();
    for vcpus in [1, 2, 4] {
        for cpu in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"] {
            let mut l = SnpLaunch::new(&path, vcpus);
            l.vcpu_type = cpu.into();
            l.kernel = Some(kernel.clone());
            l.initrd = Some(initrd.clone());
            l.cmdline = Some("console=ttyS0 root=/dev/vda1".into());
            let ours = hex::encode(launch_digest(&l).unwrap());
            assert_eq!(ours, reference_digest(&l), "{vcpus} vCPUs, {cpu}");
            eprintln!("AmdSev OVMF, {vcpus} vCPU {cpu}: {ours}");
            seen.insert(ours);
        }
        // Firmware-only launch of the same firmware (no -kernel): still equal.
        let l = SnpLaunch::new(&path, vcpus);
        let fw_only = hex::encode(launch_digest(&l).unwrap());
        assert_eq!(fw_only, reference_digest(&l), "{vcpus} vCPUs, no kernel");
        // The kernel-hashes page is really measured: without a kernel it is a zero page.
        assert!(!seen.contains(&fw_only));
    }
    assert_eq!(
        seen.len(),
        9,
        "every vCPU count and model gives its own digest"
    );
}
