//! Boot benchmark: time from QEMU start to the guest's "COCO:booted" marker, for the
//! test image (modules + vsock probe + pause bundle) and for a bare busybox initrd, on
//! the same QEMU in the same run, alternating so both see the same host load.
//! `BOOT_BENCH_RUNS` (default 3) boots each. Prints a table.

use std::path::Path;

use anyhow::Context;
use std::time::Duration;

use vm_tests::image::{cloud_kernel, TestImage, CMDLINE};
use vm_tests::{Firmware, Vm, VmConfig};

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs this with no --bench flag: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let runs: usize = std::env::var("BOOT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let kernel = cloud_kernel().context("Debian cloud kernel")?;
    let dir = tempfile::tempdir()?;
    let probe = Path::new(env!("CARGO_BIN_EXE_vsock-probe"));
    let images = [
        ("coco test image", TestImage::full(probe)),
        ("bare busybox", TestImage::bare()),
    ];
    let mut built = Vec::new();
    for (i, (name, img)) in images.iter().enumerate() {
        let b = img
            .build(&kernel, &dir.path().join(i.to_string()))
            .context("build image")?;
        built.push((*name, b));
    }

    // Rows: (label, image index, firmware). OVMF (the measured-boot firmware) only for
    // our image, when installed.
    let ovmf = Path::new("/usr/share/ovmf/OVMF.fd");
    let mut rows: Vec<(&str, usize, Firmware)> = vec![
        ("coco, SeaBIOS", 0, Firmware::SeaBios),
        ("bare, SeaBIOS", 1, Firmware::SeaBios),
    ];
    if ovmf.is_file() {
        rows.push(("coco, OVMF", 0, Firmware::Ovmf(ovmf.to_path_buf())));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
    for _ in 0..runs {
        for (r, (_, i, fw)) in rows.iter().enumerate() {
            let b = &built[*i].1;
            let mut cfg = VmConfig::new(b.kernel(), b.initrd(), CMDLINE);
            cfg.firmware = fw.clone();
            let vm = Vm::start(&cfg, Duration::from_secs(240))?;
            let t = vm.wait_for_serial("COCO:booted", Duration::from_secs(180))?;
            times[r].push(t);
        }
    }
    println!(
        "\n{:<18} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "image", "initrd B", "cpio B", "min s", "median s", "max s"
    );
    for (r, (name, i, _)) in rows.iter().enumerate() {
        let b = &built[*i].1;
        let mut t = times[r].clone();
        t.sort();
        println!(
            "{:<18} {:>12} {:>12} {:>10.2} {:>10.2} {:>10.2}",
            name,
            b.manifest.initrd_size,
            b.manifest.cpio_size,
            t[0].as_secs_f64(),
            t[t.len() / 2].as_secs_f64(),
            t[t.len() - 1].as_secs_f64()
        );
    }
    println!(
        "({runs} boots each, accel {:?}, 1 vCPU, 512 MiB; time = QEMU start to marker; \
         coco = modules + vsock probe + pause bundle, bare = busybox + /init)",
        vm_tests::Accel::from_env()
    );
    Ok(())
}
