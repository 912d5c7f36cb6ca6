//! The end-to-end demo: a confidential pod in a real VM.
//!
//! Starts a local registry and a KBS (TLS), builds and encrypts an app image, stores
//! its key in the KBS with a policy and reference values, boots the guest image in
//! QEMU with the agent as /init, runs the pod in Kata-shim order, and prints the
//! container's output, the attestation result and a timing breakdown.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use vm_tests::attest::{enroll_tpm, tpm_reference_values};
use vm_tests::guest::Guest;
use vm_tests::pod::{
    attestations_from_serial, confidential_policy_with_logs, initdata_toml, PodVm,
};
use vm_tests::services::{AppImage, Kbs, Registry, ALLOW_SAMPLE_POLICY, ALLOW_TPM_POLICY};
use vm_tests::Firmware;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Tee {
    /// A vTPM (swtpm) with OVMF measured direct boot: real TPM quotes over the
    /// kernel, initrd, cmdline and initdata. Memory is NOT encrypted (no SNP/TDX).
    Tpm,
    /// No TEE at all: evidence is not hardware-backed; the KBS is told to trust it.
    Sample,
}

/// Run a confidential pod end to end on this host and show what happened.
///
/// Needs the tools from scripts/setup.sh and a release coco-agent
/// (`cargo build --release -p coco-agent`); scripts/demo.sh does both.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Which evidence the guest presents. SEV-SNP and TDX need the hardware; this
    /// host has neither, so the choice is between a vTPM and nothing.
    #[arg(long, value_enum, default_value_t = Tee::Tpm)]
    tee: Tee,
    /// OVMF for the vTPM measured boot [default: $COCO_OVMF, else Debian's OVMF.fd].
    #[arg(long)]
    ovmf: Option<PathBuf>,
    /// Keep the work directory (guest image, serial log) here instead of a temp dir.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

struct Steps {
    rows: Vec<(String, Duration)>,
    t: Instant,
}

impl Steps {
    fn start(&mut self, what: &str) {
        println!("\n== {what}");
        self.t = Instant::now();
    }
    fn done(&mut self, what: &str) {
        let d = self.t.elapsed();
        println!("   ({} ms)", d.as_millis());
        self.rows.push((what.to_string(), d));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let tmp = tempfile::tempdir()?;
    let work = cli
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    let mut s = Steps {
        rows: vec![],
        t: Instant::now(),
    };

    s.start("guest image (kernel, initrd with coco-agent as /init, runc, pause)");
    let guest = Guest::get(&work.join("guest"))?;
    println!(
        "   {} + {} ({:.1} MiB)",
        guest.kernel.display(),
        guest.initrd.display(),
        guest.initrd_size as f64 / (1 << 20) as f64
    );
    s.done("build guest image");

    s.start("registry + app image, encrypted (key wrapped for the KBS)");
    let registry = Registry::start(&work)?;
    let app = AppImage::build(&work)?;
    let kek = app.encrypt("kbs:///default/image-kek/app")?;
    let image = app.push(&registry, "encrypted", "app")?;
    println!("   {image} (layers encrypted, key id kbs:///default/image-kek/app)");
    s.done("build + encrypt + push image");

    s.start("KBS (TLS) with the image key, policies and reference values");
    let kbs = Kbs::start().await?;
    kbs.set_resource("default/image-kek/app", &kek).await?;
    let policy = confidential_policy_with_logs();
    let mut pod = PodVm::new(initdata_toml(Some(&kbs), &registry, Some(&policy)));
    // Layers and rootfs on dm-crypt. Set before measuring: it is on the cmdline.
    pod.scratch_mib = Some(512);
    match cli.tee {
        Tee::Tpm => {
            let ovmf = match &cli.ovmf {
                Some(p) => p.clone(),
                None => vm_tests::tools::ovmf()?,
            };
            let state = work.join("tpm-state");
            let ak = enroll_tpm(&state)?;
            pod.firmware = Firmware::Ovmf(ovmf);
            pod.tpm = true;
            pod.tpm_state = Some(state);
            let rv = tpm_reference_values(&guest, &pod, &ak)?;
            println!("   reference values: {rv}");
            kbs.set_reference_values(&rv).await?;
            kbs.set_resource_policy(ALLOW_TPM_POLICY).await?;
        }
        Tee::Sample => {
            pod.cmdline_extra = "agent.attester=sample".into();
            let digest = kbs.register_initdata(&pod.initdata_toml).await?;
            println!("   registered initdata digest: {digest}");
            kbs.set_resource_policy(ALLOW_SAMPLE_POLICY).await?;
            println!("   resource policy: releases keys to the sample TEE (development only)");
        }
    }
    println!("   KBS at {} (as the guest sees it)", kbs.guest_url());
    s.done("configure KBS");

    s.start("boot the VM (QEMU, TCG) until the agent answers Health.Check over vsock");
    let (vm, mut shim) = pod.boot(&guest).await?;
    s.done("boot → agent ready");

    s.start("pod: network, sandbox, pause container");
    shim.setup_network().await?;
    shim.create_sandbox("demo").await?;
    shim.start_pause().await?;
    s.done("sandbox + pause");

    s.start("app container: guest pull → attestation → key → decrypt → unpack");
    let t = Instant::now();
    if let Err(e) = shim.create_app("app", &image).await {
        bail!("{e}\n{}", vm.diagnostics());
    }
    let run = shim.run_app("app", t).await?;
    s.done("create app container");

    println!("\n== container output");
    for l in run.stdout.lines() {
        println!("   | {l}");
    }
    println!("   exit code {}", run.exit_code);

    println!("\n== attestation (guest's KBS client, from the serial console)");
    let att = attestations_from_serial(&vm.serial());
    for a in &att {
        println!(
            "   tee={} status={} evidence {} ms, handshake {} ms",
            a.tee, a.status, a.evidence_ms, a.handshake_ms
        );
    }
    if att.is_empty() {
        println!("   (no attestation logged)");
    }

    shim.stop("app").await?;
    shim.stop("demo").await?;
    shim.destroy_sandbox().await?;
    vm.wait_exit(Duration::from_secs(60))?;

    println!("\n== timings");
    for (what, d) in &s.rows {
        println!("   {what:<32} {:>8} ms", d.as_millis());
    }
    if let Some(r) = shim.timings.agent_ready {
        println!(
            "   {:<32} {:>8} ms",
            "QEMU start → agent ready",
            r.as_millis()
        );
    }
    println!(
        "   {:<32} {:>8} ms",
        "CreateContainer → first output",
        shim.timings.create_to_first_output.as_millis()
    );
    if let Some(a) = att.first() {
        println!(
            "   {:<32} {:>8} ms",
            "  of which attestation", a.handshake_ms
        );
    }

    println!();
    match cli.tee {
        Tee::Tpm => println!(
            "TEE used: tpm (software vTPM, swtpm): the boot chain and initdata are measured and \
             attested, but guest memory is NOT encrypted. Confidentiality against the host \
             needs SEV-SNP or TDX hardware."
        ),
        Tee::Sample => println!(
            "TEE used: sample (no TEE on this host): NOT confidential; the KBS was told to \
             trust it for this demo."
        ),
    }
    if run.exit_code != 0 || !run.stdout.contains("hello from a confidential pod") {
        bail!("the pod did not print what it should");
    }
    Ok(())
}
