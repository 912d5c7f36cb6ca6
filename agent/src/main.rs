//! `coco-agent`: the guest agent binary (also usable as the VM's `/init`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coco_agent::config::{parse_policy, AgentConfig, FileConfig, PolicySource};
use coco_agent::host::SystemHost;
use coco_agent::init::{self, AttesterConfig};
use coco_agent::initdata::Initdata;
use coco_agent::netlink::RtNetlink;
use coco_agent::policy::{Policy, ALLOW_ALL_POLICY, CONFIDENTIAL_POLICY};
use coco_agent::reaper::Reaper;
use coco_agent::rpc::Agent;
use coco_agent::runtime::Runc;
use coco_agent::storage;

/// Guest agent for confidential VMs, driven by a Kata 3.x/4.x shim over ttrpc.
///
/// The listen address comes from (last wins) the default `vsock://-1:1024`, the kernel
/// command line `agent.server_addr=`, the environment `KATA_AGENT_SERVER_ADDR` and
/// `--server-addr`.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    kbs: KbsArgs,
    /// Listen address: `vsock://-1:PORT` or `unix://PATH`.
    #[arg(long)]
    server_addr: Option<String>,
    /// Initial policy: `confidential` (default), `allow-all` (development only) or a Rego
    /// file. A `policy.rego` in the initdata takes precedence.
    #[arg(long)]
    policy: Option<String>,
    /// Configuration file in the guest image (a missing file is fine).
    #[arg(long, default_value = "/etc/coco-agent/config.toml")]
    config: PathBuf,
    /// Initdata block device (or file) to read the pod's initdata from, or `auto` to
    /// look for the initdata magic on /dev/vd* and /dev/sd*.
    #[arg(long)]
    initdata: Option<String>,
    /// Directory for container bundles.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Root below which CopyFile may write.
    #[arg(long)]
    copy_root: Option<PathBuf>,
    /// Sandbox (pause) bundle shipped in the guest image.
    #[arg(long)]
    pause_bundle: Option<PathBuf>,
    /// The runc binary.
    #[arg(long)]
    runc: Option<PathBuf>,
    /// runc's state directory.
    #[arg(long)]
    runc_root: Option<PathBuf>,
    /// Act as the VM's init even if not PID 1 (mounts, modules, power off on destroy).
    #[arg(long)]
    init: bool,
    /// Kernel modules to load at boot, one per line [default: /etc/modules].
    #[arg(long)]
    modules_file: Option<PathBuf>,
    /// Attestation agent binary to start before serving.
    #[arg(long)]
    attester_bin: Option<PathBuf>,
    /// Unix socket the attestation agent serves on (waited for before serving)
    /// [default: /run/confidential-containers/attestation-agent/attestation-agent.sock].
    #[arg(long)]
    attester_socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Container images, as the agent pulls them for pods.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Pull, verify, decrypt and unpack an image into a root file system.
    ///
    /// Example: coco-agent image pull registry:5000/app:1 --rootfs /tmp/app
    ///   --insecure-registry registry:5000 --kbs-url https://kbs:8080 --kbs-cert ca.pem
    Pull(image_mgmt::cli::PullArgs),
}

/// Where keys for encrypted images come from.
#[derive(Debug, clap::Args)]
struct KbsArgs {
    /// KBS base URL; keys for encrypted images are fetched from it after
    /// attestation. Default: `[token_configs.kbs] url` of the initdata aa.toml.
    #[arg(long, global = true)]
    kbs_url: Option<String>,
    /// PEM CA certificate of the KBS.
    #[arg(long, global = true)]
    kbs_cert: Option<PathBuf>,
    /// Evidence source: auto (detect SNP/TDX/TPM; fail without a TEE), sample
    /// (development only, never trusted by default policies), snp, tdx, tpm
    /// [default: `agent.attester=` of the kernel command line, the config file, auto].
    #[arg(long, global = true)]
    attester: Option<String>,
}

/// The attested KBS client used as key broker, if a KBS is configured.
fn key_broker(
    url: Option<String>,
    ca_pem: Option<Vec<u8>>,
    attester: &str,
) -> anyhow::Result<Option<Arc<dyn image_mgmt::keybroker::KeyBroker>>> {
    use coco_agent::attestation;
    let Some(url) = url else {
        return Ok(None);
    };
    let a = attestation::bound_attester(attester, &attester::detect::RealHost, None)?;
    Ok(Some(attestation::kbs_broker(&url, ca_pem, a, None)?))
}

fn read_ca(path: &Option<PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // tss-esapi logs every context close at info.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tss_esapi=warn")),
        )
        .with_writer(std::io::stderr)
        // As init, stderr is the serial console that logs are collected from: plain text.
        .with_ansi(std::process::id() != 1)
        .init();
    let cli = Cli::parse();
    if let Some(Command::Image(ImageCommand::Pull(args))) = cli.command {
        let broker = key_broker(
            cli.kbs.kbs_url,
            read_ca(&cli.kbs.kbs_cert)?,
            cli.kbs.attester.as_deref().unwrap_or("auto"),
        )?;
        return tokio::runtime::Runtime::new()?.block_on(image_mgmt::cli::run_pull(args, broker));
    }
    let init_mode = cli.init || std::process::id() == 1;
    // PID 1 of an initramfs: move into a tmpfs root so runc can pivot_root.
    let mut no_pivot = false;
    if std::process::id() == 1 && coco_agent::switchroot::on_initramfs() {
        match coco_agent::switchroot::switch_to_tmpfs() {
            Ok(()) => tracing::info!("root moved from the initramfs to a tmpfs"),
            Err(e) => {
                tracing::warn!("switch_root to tmpfs failed, containers use runc --no-pivot: {e}");
                no_pivot = true;
            }
        }
    }
    if init_mode {
        init::mount_basics().context("mounting basic filesystems")?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(cli, init_mode, no_pivot))
}

async fn run(cli: Cli, init_mode: bool, no_pivot: bool) -> anyhow::Result<()> {
    let _reaper = Reaper::global();
    let mut config = AgentConfig {
        init_mode,
        ..Default::default()
    };
    let file = match std::fs::read_to_string(&cli.config) {
        Ok(text) => FileConfig::parse(&text)
            .with_context(|| format!("config file {}", cli.config.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
        Err(e) => return Err(e).with_context(|| format!("config file {}", cli.config.display())),
    };
    file.apply(&mut config);
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    config.apply_cmdline(&cmdline);
    config.apply_env(|k| std::env::var(k).ok());
    if let Some(a) = cli.server_addr {
        config.server_addr = a;
    }
    if let Some(a) = cli.kbs.attester.clone() {
        config.attester = a;
    }
    if let Some(p) = cli.policy.as_deref() {
        config.policy = parse_policy(p);
    }
    for (dst, src) in [
        (&mut config.state_dir, cli.state_dir),
        (&mut config.copy_root, cli.copy_root),
        (&mut config.pause_bundle, cli.pause_bundle),
        (&mut config.runc, cli.runc),
        (&mut config.runc_root, cli.runc_root),
    ] {
        if let Some(v) = src {
            *dst = v;
        }
    }
    // coco-image writes its load order to /etc/coco/modules.
    let modules_file = cli
        .modules_file
        .or(file.modules_file.clone())
        .unwrap_or_else(|| {
            [init::IMAGE_MODULES_LIST, init::ETC_MODULES]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| init::ETC_MODULES.into())
        });
    if init_mode {
        if let Ok(list) = std::fs::read_to_string(&modules_file) {
            for (m, params) in init::modules_from_list(&list) {
                if let Err(e) = init::modprobe(&m, &params).await {
                    tracing::warn!("{e}");
                }
            }
        }
        if let Ok(seed) = read_prefix(std::path::Path::new("/dev/hwrng"), 64) {
            if let Err(e) = init::seed_entropy(&seed) {
                tracing::warn!("seeding the entropy pool from /dev/hwrng: {e}");
            }
        }
        // Image layers and container rootfs: dm-crypt over the scratch disk, or tmpfs.
        let mode = storage::mode_from_cmdline(&cmdline);
        storage::setup(&storage::SystemBlockOps, &mode, &config.state_dir)
            .await
            .context("setting up ephemeral storage")?;
    }
    let initdata = match cli.initdata.or(file.initdata.clone()).as_deref() {
        Some("auto") => coco_agent::initdata::find_device(std::path::Path::new("/dev")),
        Some(p) => Some(PathBuf::from(p)),
        None => None,
    };
    let mut kbs_url = cli.kbs.kbs_url.clone();
    let mut kbs_ca = read_ca(&cli.kbs.kbs_cert)?;
    let mut pod_initdata = None;
    if let Some(dev) = &initdata {
        // from_disk reads the header's length and no more, bounded by MAX_LEN.
        let disk = std::fs::File::open(dev)
            .with_context(|| format!("opening initdata {}", dev.display()))?;
        let data = Initdata::from_disk(std::io::BufReader::new(disk))
            .with_context(|| format!("parsing initdata {}", dev.display()))?;
        if let Some(p) = data.policy() {
            tracing::info!("policy from initdata");
            config.policy = PolicySource::Text(p.to_string());
        }
        let aa = data
            .data
            .get("aa.toml")
            .map(|t| coco_agent::guest_pull::kbs_from_aa_toml(t))
            .transpose()
            .context("reading the KBS settings of the initdata")?
            .flatten();
        if let Some((url, cert)) = aa {
            kbs_url.get_or_insert(url);
            if kbs_ca.is_none() {
                kbs_ca = cert.map(String::into_bytes);
            }
        }
        pod_initdata = Some(data);
    }
    // Keys for encrypted images: only from an attested KBS, after the attester has
    // bound the initdata. Without a TEE (and no explicit `sample`), or when the
    // binding fails, encrypted pulls fail closed with the reason.
    let broker = coco_agent::attestation::broker(
        kbs_url.as_deref(),
        kbs_ca,
        (&config.attester, config.sample_host_data.as_deref()),
        &attester::detect::RealHost,
        pod_initdata.as_ref(),
    );
    let mut pull = image_mgmt::PullOptions {
        // Below the state dir: on the encrypted ephemeral storage.
        store_dir: config.state_dir.join("image-store"),
        ..Default::default()
    };
    pull.registry.insecure_registries = config.insecure_registries.clone();
    // The pod's `[image]` settings (registries, image policy) from its initdata.
    let cdh_toml = pod_initdata
        .as_ref()
        .and_then(|d| d.data.get("cdh.toml"))
        .map(String::as_str);
    let images: Arc<dyn coco_agent::image::ImageService> =
        Arc::new(coco_agent::guest_pull::GuestPull::new(pull, broker).with_pod_settings(cdh_toml));
    let policy = match &config.policy {
        PolicySource::Confidential => Policy::new(CONFIDENTIAL_POLICY)?,
        PolicySource::AllowAll => {
            tracing::warn!("ALLOW-ALL development policy: the host may exec and read everything");
            Policy::new(ALLOW_ALL_POLICY)?
        }
        PolicySource::File(f) => Policy::new(
            &std::fs::read_to_string(f).with_context(|| format!("policy {}", f.display()))?,
        )?,
        PolicySource::Text(t) => Policy::new(t)?,
    };
    if let Some(bin) = cli.attester_bin.or(file.attester_bin.clone()) {
        let cfg = AttesterConfig {
            binary: bin,
            socket: cli
                .attester_socket
                .or(file.attester_socket.clone())
                .unwrap_or_else(|| {
                    "/run/confidential-containers/attestation-agent/attestation-agent.sock".into()
                }),
            args: file.attester_args.clone(),
        };
        init::start_attester(&cfg, std::time::Duration::from_secs(30))
            .await
            .context("starting the attestation agent")?;
    }
    std::fs::create_dir_all(&config.runc_root)?;
    let mut runc = Runc::new(config.runc.clone(), config.runc_root.clone());
    runc.no_pivot = no_pivot;
    let runtime = Arc::new(runc);
    let addr = config.server_addr.clone();
    let agent = Arc::new(Agent::new(
        config,
        Arc::new(policy),
        runtime,
        Some(images),
        Arc::new(RtNetlink),
        Arc::new(SystemHost::new(init_mode)),
    ));
    let mut server = coco_agent::server::start(agent, &addr).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await?;
    Ok(())
}

fn read_prefix(path: &std::path::Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(max as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}
