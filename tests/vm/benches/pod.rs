//! Pod benchmark on the real guest image: QEMU start → agent ready (Health.Check over
//! vsock), CreateContainer → first output for a plain and an encrypted image (the
//! encrypted one includes attestation to the KBS and key release), the attestation
//! share as the guest's KBS client logs it, the initrd size, and guest memory at rest
//! (MemTotal − MemAvailable after the pod ran). A bare busybox initrd is booted on
//! the same QEMU in the same run for comparison. `POD_BENCH_RUNS` (default 3) pods.
//!
//! The guest runs the sample attester with an allow-all agent policy: the benchmark
//! reads /proc/meminfo through ExecProcess, which the confidential policy forbids.

use std::time::{Duration, Instant};

use anyhow::Context;
use vm_tests::guest::Guest;
use vm_tests::image::{cloud_kernel, TestImage, CMDLINE};
use vm_tests::pod::{attestations_from_serial, initdata_toml, PodVm};
use vm_tests::services::{AppImage, Kbs, Registry, ALLOW_SAMPLE_POLICY};
use vm_tests::{Vm, VmConfig};

struct Sample {
    agent_ready: Duration,
    plain_first_output: Duration,
    enc_first_output: Duration,
    attestation: Duration,
    mem_used_kib: u64,
    shmem_kib: u64,
    anon_kib: u64,
    bare_boot: Duration,
}

/// A table row: its label and how to read it from a sample.
type Row = (&'static str, fn(&Sample) -> f64);

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let runs: usize = std::env::var("POD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let work = tempfile::tempdir()?;
    let kernel = cloud_kernel().context("Debian cloud kernel")?;
    let guest = Guest::build(&kernel, &work.path().join("guest"))?;
    let bare = TestImage::bare().build(&kernel, &work.path().join("bare"))?;
    let registry = Registry::start(work.path())?;
    let app = AppImage::build(work.path())?;
    let plain = app.push(&registry, "plain", "app")?;
    let kek = app.encrypt("kbs:///default/image-kek/app")?;
    let encrypted = app.push(&registry, "encrypted", "app")?;
    let kbs = Kbs::start().await?;
    kbs.set_resource("default/image-kek/app", &kek).await?;
    kbs.set_resource_policy(ALLOW_SAMPLE_POLICY).await?;
    let allow_all = coco_agent::policy::ALLOW_ALL_POLICY.to_string();
    let mut pod = PodVm::new(initdata_toml(Some(&kbs), &registry, Some(&allow_all)));
    pod.cmdline_extra = "agent.attester=sample".into();
    kbs.register_initdata(&pod.initdata_toml).await?;

    let mut samples = Vec::new();
    for run in 0..runs {
        let (vm, mut shim) = pod.boot(&guest).await?;
        let agent_ready = shim.timings.agent_ready.unwrap_or_default();
        shim.setup_network().await?;
        shim.create_sandbox("bench").await?;
        shim.start_pause().await?;
        let t = Instant::now();
        shim.create_app("plain", &plain).await?;
        shim.run_app("plain", t).await?;
        let plain_first_output = shim.timings.create_to_first_output;
        let t = Instant::now();
        shim.create_app("enc", &encrypted).await?;
        shim.run_app("enc", t).await?;
        let enc_first_output = shim.timings.create_to_first_output;
        let attestation = attestations_from_serial(&vm.serial())
            .first()
            .map(|a| Duration::from_millis(a.handshake_ms))
            .context("no attestation logged on the console")?;
        shim.exec("bench", "mem", &["/bin/busybox", "cat", "/proc/meminfo"])
            .await?;
        let meminfo = shim.read_exec_stdout("bench", "mem").await;
        let field = |k: &str| -> u64 {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        // MemTotal − MemFree: MemAvailable also subtracts the kernel's free-page
        // watermarks (~65 MiB of a 1 GiB guest), which are not in use.
        let mem_used_kib = field("MemTotal:").saturating_sub(field("MemFree:"));
        let anon_kib = field("AnonPages:");
        // tmpfs: the root file system after the switch from the initramfs.
        let shmem_kib = field("Shmem:");
        // Where the rest goes (first run only: it does not vary).
        if run == 0 {
            let parts: Vec<String> = [
                "MemTotal:",
                "MemFree:",
                "MemAvailable:",
                "AnonPages:",
                "Cached:",
                "Shmem:",
                "Slab:",
                "SUnreclaim:",
                "KernelStack:",
                "PageTables:",
                "Percpu:",
            ]
            .iter()
            .map(|k| format!("{} {} MiB", k.trim_end_matches(':'), field(k) / 1024))
            .collect();
            eprintln!("guest meminfo: {}", parts.join(", "));
        }
        for c in ["plain", "enc", "bench"] {
            shim.stop(c).await?;
        }
        shim.destroy_sandbox().await?;
        vm.wait_exit(Duration::from_secs(60))?;

        let cfg = VmConfig::new(bare.kernel(), bare.initrd(), CMDLINE);
        let vm = Vm::start(&cfg, Duration::from_secs(240))?;
        let bare_boot = vm.wait_for_serial("COCO:booted", Duration::from_secs(180))?;
        drop(vm);
        eprintln!("run {}/{runs} done", run + 1);
        samples.push(Sample {
            agent_ready,
            plain_first_output,
            enc_first_output,
            attestation,
            mem_used_kib,
            shmem_kib,
            anon_kib,
            bare_boot,
        });
    }

    let col = |f: &fn(&Sample) -> f64| -> (f64, f64, f64) {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        stats(&mut v)
    };
    println!(
        "\n{:<48} {:>10} {:>10} {:>10}",
        "measure", "min", "median", "max"
    );
    let rows: [Row; 8] = [
        ("QEMU start → agent ready (s)", |s| {
            s.agent_ready.as_secs_f64()
        }),
        ("QEMU start → bare busybox /init (s)", |s| {
            s.bare_boot.as_secs_f64()
        }),
        ("plain: CreateContainer → first output (s)", |s| {
            s.plain_first_output.as_secs_f64()
        }),
        ("encrypted: CreateContainer → first output (s)", |s| {
            s.enc_first_output.as_secs_f64()
        }),
        ("  of which attestation handshake (s)", |s| {
            s.attestation.as_secs_f64()
        }),
        ("guest memory in use at rest, Total−Free (MiB)", |s| {
            s.mem_used_kib as f64 / 1024.0
        }),
        ("  of which tmpfs: root fs, state (MiB)", |s| {
            s.shmem_kib as f64 / 1024.0
        }),
        ("  of which processes: agent, runc, pause (MiB)", |s| {
            s.anon_kib as f64 / 1024.0
        }),
    ];
    for (name, f) in rows.iter() {
        let (a, b, c) = col(f);
        println!("{name:<48} {a:>10.2} {b:>10.2} {c:>10.2}");
    }
    println!(
        "initrd {} bytes (gzip); {runs} pods, accel {:?}, 1 vCPU, {} MiB, SeaBIOS, sample attester, tmpfs storage",
        guest.initrd_size,
        vm_tests::Accel::from_env(),
        pod.memory_mib
    );
    Ok(())
}
