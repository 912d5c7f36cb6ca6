//! `image pull` command for operators and tests; the guest agent mounts
//! [`PullArgs`] / [`run_pull`] as `coco-agent image pull`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::keybroker::{kbs_resource_path, KeyBroker};
use crate::ocicrypt::keys::PrivateKey;
use crate::policy::Policy;
use crate::pull::{ImagePuller, ProgressEvent, ProgressFn, PullOptions};
use crate::registry::Platform;

/// Pull an image inside the guest, verify, decrypt and unpack it.
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// Image reference, e.g. `registry.example.com/app:1.0` or `...@sha256:...`.
    pub reference: String,
    /// Directory to create the root file system in (must not exist or be empty).
    #[arg(long)]
    pub rootfs: PathBuf,
    /// containers-policy.json(5) image policy (signatures, `encryptedLayers`). Without it
    /// images are not checked.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Private key (PEM: RSA, P-256, P-384) for `jwe` layer recipients; a
    /// `kbs:///repo/type/tag` URI fetches it from the KBS after attestation.
    /// Repeatable.
    #[arg(long = "decryption-key")]
    pub decryption_keys: Vec<String>,
    /// Registry `host:port` spoken to over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// `auth.json` with registry credentials.
    #[arg(long)]
    pub auth_file: Option<PathBuf>,
    /// Platform to pick from a multi-platform image.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Content-addressed layer store shared by the pod's pulls.
    #[arg(long, default_value = "/run/image-mgmt/store")]
    pub store: PathBuf,
    /// Parallel layer downloads.
    #[arg(long, default_value_t = 3)]
    pub concurrency: usize,
    /// Largest compressed layer accepted, in MiB.
    #[arg(long, default_value_t = 8192)]
    pub max_layer_mib: u64,
    /// Largest uncompressed layer accepted, in MiB.
    #[arg(long, default_value_t = 16384)]
    pub max_unpacked_layer_mib: u64,
    /// Create device nodes found in layers (refused by default).
    #[arg(long)]
    pub allow_devices: bool,
    /// Download retries (resumed with HTTP Range).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Never draw a progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs a pull. `broker` gives access to KBS resources (the agent passes its
/// attested KBS client); without it `attestation-agent` layers and
/// `kbs:///` keys cannot be decrypted.
pub async fn run_pull(args: PullArgs, broker: Option<Arc<dyn KeyBroker>>) -> anyhow::Result<()> {
    let mut opts = PullOptions::default();
    opts.registry.platform = args.platform.parse::<Platform>()?;
    opts.registry.insecure_registries = args.insecure_registries.clone();
    opts.registry.auth_file = args.auth_file.clone();
    opts.registry.retries = args.retries;
    opts.store_dir = args.store.clone();
    opts.concurrency = args.concurrency;
    opts.max_layer_compressed = args.max_layer_mib << 20;
    opts.unpack.max_layer_bytes = args.max_unpacked_layer_mib << 20;
    opts.unpack.allow_devices = args.allow_devices;
    if let Some(p) = &args.policy {
        opts.policy = Some(Policy::load(p).with_context(|| format!("loading {}", p.display()))?);
    }
    for k in &args.decryption_keys {
        let pem = if k.starts_with("kbs://") {
            let path = kbs_resource_path(k)?;
            let b = broker
                .as_ref()
                .context("a kbs:// decryption key needs a KBS connection")?;
            b.resource(&path)
                .await
                .map_err(|e| anyhow::anyhow!("fetching {k}: {e}"))?
        } else {
            zeroize::Zeroizing::new(std::fs::read(k).with_context(|| format!("reading {k}"))?)
        };
        opts.decrypt
            .private_keys
            .push(PrivateKey::from_pem(&pem).with_context(|| k.clone())?);
    }
    opts.decrypt.broker = broker;

    let puller = ImagePuller::new(opts)?;
    let bar = (!args.no_progress && std::io::stderr().is_terminal()).then(Progress::new);
    let progress: Option<ProgressFn> = bar.clone().map(|b| {
        let f: ProgressFn = Arc::new(move |e| b.event(e));
        f
    });
    let started = Instant::now();
    let res = puller.pull(&args.reference, &args.rootfs, progress).await;
    if let Some(b) = &bar {
        b.finish();
    }
    let image = res.with_context(|| format!("pulling {}", args.reference))?;
    eprintln!(
        "pulled {} ({}, {} layers, {:.1} MiB unpacked) into {} in {:.2?}",
        image.reference,
        image.manifest_digest,
        image.layers,
        image.unpacked_bytes as f64 / 1048576.0,
        args.rootfs.display(),
        started.elapsed()
    );
    Ok(())
}

/// A one-line progress display on stderr.
#[derive(Debug, Clone)]
struct Progress {
    total: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    layers: Arc<AtomicUsize>,
    unpacked: Arc<AtomicUsize>,
    last: Arc<Mutex<Instant>>,
}

impl Progress {
    fn new() -> Self {
        Self {
            total: Arc::default(),
            done: Arc::default(),
            layers: Arc::default(),
            unpacked: Arc::default(),
            last: Arc::new(Mutex::new(Instant::now())),
        }
    }

    fn event(&self, e: ProgressEvent) {
        match e {
            ProgressEvent::Start {
                layers,
                total_bytes,
            } => {
                self.layers.store(layers, Ordering::Relaxed);
                self.total.store(total_bytes, Ordering::Relaxed);
            }
            ProgressEvent::Downloaded { bytes } => {
                self.done.fetch_add(bytes, Ordering::Relaxed);
            }
            ProgressEvent::Unpacked { .. } => {
                self.unpacked.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Duration::from_millis(100) {
            *last = Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let total = self.total.load(Ordering::Relaxed).max(1);
        let done = self.done.load(Ordering::Relaxed).min(total);
        let width = 30usize;
        let filled = (done as f64 / total as f64 * width as f64) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:6.1}/{:.1} MiB  layers unpacked {}/{} ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            done as f64 / 1048576.0,
            total as f64 / 1048576.0,
            self.unpacked.load(Ordering::Relaxed),
            self.layers.load(Ordering::Relaxed),
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        self.draw();
        eprintln!();
    }
}
