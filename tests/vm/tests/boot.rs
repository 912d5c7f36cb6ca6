//! VM tests: boot Debian's cloud kernel with an image built by `coco-image` under QEMU.
//! Slow (seconds per boot under TCG): kept to two boots. Needs the tools from
//! `scripts/setup-vm-tools.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use coco_image::initdata::Initdata;
use vm_tests::image::{cloud_kernel, TestImage, CMDLINE};
use vm_tests::{tools, Vm, VmConfig};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const HARD_TIMEOUT: Duration = Duration::from_secs(240);

const INITDATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault CreateContainerRequest := true\n'''\n";

fn build_image(dir: &std::path::Path) -> coco_image::Built {
    let kernel = cloud_kernel().expect("Debian cloud kernel (apt-get download)");
    TestImage::full(std::path::Path::new(env!("CARGO_BIN_EXE_vsock-probe")))
        .build(&kernel, dir)
        .expect("build test image")
}

/// A one-shot HTTP server on host loopback (stands in for the registry / KBS the
/// guest will reach through slirp). Reports the request line it got.
fn loopback_http(body: &'static str) -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = tx.send(req.lines().next().unwrap_or_default().to_string());
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, rx)
}

#[test]
fn boots_cloud_kernel_with_modules_initdata_scratch_disk_and_slirp() {
    let dir = tempfile::tempdir().unwrap();
    let built = build_image(dir.path());
    let (port, requests) = loopback_http("coco-loopback-ok");
    let initdata = Initdata::parse(INITDATA).unwrap().to_disk().unwrap();

    let mut cfg = VmConfig::new(
        built.kernel(),
        built.initrd(),
        &format!("{CMDLINE} coco.http=10.0.2.2:{port} coco.poweroff=1"),
    );
    cfg.network = true;
    cfg.initdata = Some(initdata);
    cfg.scratch_mib = Some(16);
    let vm = Vm::start(&cfg, HARD_TIMEOUT).unwrap();
    let t = vm.wait_for_serial("COCO:booted", BOOT_TIMEOUT).unwrap();
    eprintln!("booted in {t:?}");
    let serial = vm.serial();
    assert!(serial.contains("COCO:modules-loaded"), "{serial}");
    assert!(!serial.contains("COCO:insmod-failed"), "{serial}");
    // initdata disk first (1 sector, starts with the magic), then the 16 MiB scratch disk.
    assert!(serial.contains("COCO:disk:vda:1:initdata"), "{serial}");
    assert!(serial.contains("COCO:disk:vdb:32768:"), "{serial}");
    assert!(serial.contains("COCO:http:coco-loopback-ok"), "{serial}");
    let req = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(req.starts_with("GET /v2/ "), "{req}");
    // The guest powers off by itself: QEMU exits (no reboot).
    vm.wait_exit(Duration::from_secs(60)).unwrap();
}

#[test]
fn vsock_round_trip_through_vhost_device_vsock_with_swtpm() {
    // Fail (not skip) without the tool: CI must run the setup script.
    if let Err(e) = tools::vhost_device_vsock() {
        panic!("{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let built = build_image(dir.path());
    let mut cfg = VmConfig::new(built.kernel(), built.initrd(), CMDLINE);
    cfg.vsock = true;
    cfg.tpm = true;
    let vm = Vm::start(&cfg, HARD_TIMEOUT).unwrap();
    vm.wait_for_serial("COCO:vsock-listening:1024", BOOT_TIMEOUT)
        .unwrap();
    let mut s = vm.connect_vsock(1024, Duration::from_secs(30)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hello from the host\n").unwrap();
    let want = b"probe:hello from the host\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    // A second connection works too (the agent gets one per shim call stream).
    let mut s2 = vm.connect_vsock(1024, Duration::from_secs(10)).unwrap();
    s2.write_all(b"2").unwrap();
    let mut got = [0u8; 7];
    s2.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"probe:2");
    // Nobody listens on another port: the handshake is refused, not hung.
    assert!(vm_tests::hybrid_connect(vm.vsock_uds.as_ref().unwrap(), 4242).is_err());
    vm.wait_for_serial("COCO:booted", BOOT_TIMEOUT).unwrap();
    assert!(vm.serial().contains("COCO:tpm:2"), "{}", vm.serial());
}

#[test]
fn ovmf_swtpm_direct_boot_pcrs_equal_the_computed_reference_values() {
    use coco_image::measure::{self, MeasureConfig};
    let ovmf = std::path::Path::new("/usr/share/ovmf/OVMF.fd");
    assert!(
        ovmf.is_file(),
        "OVMF missing: run scripts/setup-vm-tools.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let built = build_image(dir.path());
    let mut cfg = VmConfig::new(built.kernel(), built.initrd(), CMDLINE);
    cfg.firmware = vm_tests::Firmware::Ovmf(ovmf.to_path_buf());
    cfg.tpm = true;
    let vm = Vm::start(&cfg, HARD_TIMEOUT).unwrap();
    vm.wait_for_serial("COCO:booted", BOOT_TIMEOUT).unwrap();
    let serial = vm.serial();
    let pcr = |i: u32| -> String {
        let tag = format!("COCO:pcr:{i}:");
        let line = serial
            .lines()
            .find_map(|l| l.trim().strip_prefix(tag.as_str()).map(str::to_string))
            .unwrap_or_else(|| panic!("no PCR {i} on the console:\n{serial}"));
        line.to_lowercase()
    };
    // Same machine type and RAM as the VM above (QEMU's defaults in VmConfig).
    let mc = MeasureConfig {
        tpm: true,
        direct_boot: measure::authenticode::DirectBoot {
            machine: measure::authenticode::Machine::Pc,
            ram_mib: u64::from(cfg.memory_mib),
        },
        ..Default::default()
    };
    let rv = measure::reference_values(&built.kernel(), &built.initrd(), CMDLINE, &mc).unwrap();
    assert_eq!(rv[measure::TPM_PCR09], [pcr(9)], "PCR 9 (cmdline + initrd)");
    assert_eq!(rv[measure::TPM_PCR04], [pcr(4)], "PCR 4 (patched kernel)");
}
