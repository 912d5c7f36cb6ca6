//! The pull pipeline: resolve → policy → config → keys → parallel verified
//! downloads → in-order decrypt/decompress/diff_id/unpack → atomic rootfs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::digest::{HashingReader, LimitedReader, Sha256Digest, LIMIT_MSG};
use crate::error::{Error, IoContext, Result};
use crate::ocicrypt::cipher::{DecryptReader, HmacVerifier};
use crate::ocicrypt::{split_encrypted, DecryptConfig, KeyUnwrapper, LayerCrypto};
use crate::policy::Policy;
use crate::registry::{Registry, RegistryOptions};
use crate::store::BlobStore;
use crate::unpack::{UnpackOptions, Unpacker};

/// Upper bound for an image config blob (and, for offline tools, a manifest).
pub const CONFIG_LIMIT: u64 = 8 << 20;
const READ_BUF: usize = 1 << 20;

/// Configuration of an [`ImagePuller`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    /// Root of the content-addressed blob store.
    pub store_dir: PathBuf,
    pub unpack: UnpackOptions,
    /// Largest accepted compressed layer, in bytes.
    pub max_layer_compressed: u64,
    /// Parallel layer downloads.
    pub concurrency: usize,
    /// Signature policy; `None` means no signature verification.
    pub policy: Option<Policy>,
    pub decrypt: DecryptConfig,
    /// Largest zstd window accepted (log2), bounds decompression memory.
    pub zstd_window_log_max: u32,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOptions {
                retries: 3,
                ..Default::default()
            },
            store_dir: PathBuf::from("/run/image-mgmt/store"),
            unpack: UnpackOptions::default(),
            max_layer_compressed: 8 << 30,
            concurrency: 3,
            policy: None,
            decrypt: DecryptConfig::default(),
            zstd_window_log_max: 25,
        }
    }
}

/// Progress events for a terminal display or logs.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// Total compressed bytes of all layers is known.
    Start { layers: usize, total_bytes: u64 },
    /// Some bytes of a layer arrived (or were found in the store).
    Downloaded { bytes: u64 },
    /// A layer was unpacked.
    Unpacked { index: usize },
}

/// Progress callback.
pub type ProgressFn = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

/// What a successful pull produced.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub reference: String,
    pub manifest_digest: Sha256Digest,
    /// The image config JSON (entrypoint, env, ...).
    pub config: Vec<u8>,
    pub layers: usize,
    pub unpacked_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug)]
struct LayerPlan {
    index: usize,
    desc: OciDescriptor,
    digest: Sha256Digest,
    diff_id: Sha256Digest,
    compression: Compression,
    crypto: Option<LayerCrypto>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

fn layer_format(media_type: &str) -> Result<(Compression, bool)> {
    let (base, encrypted) = split_encrypted(media_type);
    let c = match base {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        other => return Err(Error::Unsupported(format!("layer media type {other:?}"))),
    };
    Ok((c, encrypted))
}

/// Pulls images into root directories.
#[derive(Debug)]
pub struct ImagePuller {
    registry: Arc<Registry>,
    store: Arc<BlobStore>,
    opts: PullOptions,
}

impl ImagePuller {
    pub fn new(opts: PullOptions) -> Result<Self> {
        Ok(Self {
            registry: Arc::new(Registry::new(opts.registry.clone())?),
            store: Arc::new(BlobStore::open(&opts.store_dir)?),
            opts,
        })
    }

    /// Pulls `reference` and unpacks it to `rootfs`, which must not exist or
    /// be an empty directory. On any error `rootfs` is left as it was.
    pub async fn pull(
        &self,
        reference: &str,
        rootfs: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<PulledImage> {
        let r = Reference::from_str(reference).map_err(|e| Error::Reference {
            reference: reference.to_owned(),
            reason: e.to_string(),
        })?;
        check_target(rootfs)?;
        if let Some(policy) = &self.opts.policy {
            // A rejected image is refused without contacting its registry.
            policy.precheck(&r)?;
        }

        let resolved = self.registry.resolve(&r).await?;
        tracing::info!(reference, manifest = %resolved.digest, layers = resolved.layers.len(), "resolved image");
        // Always evaluated, also when every blob is already in the store.
        if let Some(policy) = &self.opts.policy {
            policy.check(&self.registry, &r, &resolved).await?;
        }

        let config = self
            .registry
            .small_blob(&r, &resolved.config, CONFIG_LIMIT)
            .await?;
        let parsed: ImageConfig = serde_json::from_slice(&config)
            .map_err(|e| Error::Manifest(format!("image config: {e}")))?;
        if parsed.rootfs.kind != "layers" || parsed.rootfs.diff_ids.len() != resolved.layers.len() {
            return Err(Error::Manifest(format!(
                "config lists {} diff_ids for {} layers",
                parsed.rootfs.diff_ids.len(),
                resolved.layers.len()
            )));
        }

        // Plan every layer and unwrap every key before downloading anything:
        // a missing key or a disallowed layer fails fast.
        let unwrapper = KeyUnwrapper::new(self.opts.decrypt.clone());
        let mut plans = Vec::new();
        for (index, (desc, diff_id)) in resolved
            .layers
            .iter()
            .zip(parsed.rootfs.diff_ids.iter())
            .enumerate()
        {
            let (compression, encrypted) = layer_format(&desc.media_type)?;
            let digest = Sha256Digest::parse(&desc.digest)?;
            let size =
                u64::try_from(desc.size).map_err(|_| Error::Manifest("negative size".into()))?;
            if size > self.opts.max_layer_compressed {
                return Err(Error::LayerTooLarge {
                    digest: desc.digest.clone(),
                    size,
                    limit: self.opts.max_layer_compressed,
                });
            }
            let crypto = if encrypted {
                let ann: HashMap<String, String> = desc
                    .annotations
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                Some(unwrapper.unwrap(&desc.digest, &ann).await?)
            } else {
                None
            };
            plans.push(LayerPlan {
                index,
                desc: desc.clone(),
                digest,
                diff_id: Sha256Digest::parse(diff_id)?,
                compression,
                crypto,
            });
        }
        let total: u64 = plans.iter().map(|p| p.desc.size.max(0) as u64).sum();
        if let Some(p) = &progress {
            p(ProgressEvent::Start {
                layers: plans.len(),
                total_bytes: total,
            });
        }

        let staging = staging_dir(rootfs)?;
        let result = self
            .download_and_unpack(&r, plans, &staging, progress.clone())
            .await;
        match result {
            Ok(unpacked_bytes) => {
                if rootfs.exists() {
                    std::fs::remove_dir(rootfs)
                        .ctx(|| format!("replacing empty {}", rootfs.display()))?;
                }
                std::fs::rename(&staging, rootfs)
                    .ctx(|| format!("moving rootfs to {}", rootfs.display()))?;
                tracing::info!(reference, rootfs = %rootfs.display(), unpacked_bytes, "image unpacked");
                Ok(PulledImage {
                    reference: reference.to_owned(),
                    manifest_digest: resolved.digest,
                    config,
                    layers: resolved.layers.len(),
                    unpacked_bytes,
                })
            }
            Err(e) => {
                remove_tree(&staging);
                Err(e)
            }
        }
    }

    async fn download_and_unpack(
        &self,
        r: &Reference,
        plans: Vec<LayerPlan>,
        staging: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<u64> {
        let sem = Arc::new(Semaphore::new(self.opts.concurrency.max(1)));
        let mut downloads = Vec::new();
        let plans: Vec<Arc<LayerPlan>> = plans.into_iter().map(Arc::new).collect();
        for plan in &plans {
            let (plan, sem, reg, store, r, progress) = (
                plan.clone(),
                sem.clone(),
                self.registry.clone(),
                self.store.clone(),
                r.clone(),
                progress.clone(),
            );
            downloads.push(tokio::spawn(async move {
                let _permit = sem
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Registry("shutdown".into()))?;
                fetch_layer(&reg, &store, &r, &plan, progress).await
            }));
        }
        // Abort every outstanding download if we bail out early.
        let guard = AbortOnDrop(downloads.iter().map(|h| h.abort_handle()).collect());

        let unpacker = Arc::new(Unpacker::new(staging, self.opts.unpack.clone())?);
        let mut total = 0u64;
        for (plan, handle) in plans.iter().zip(downloads) {
            let verified = handle
                .await
                .map_err(|e| Error::Registry(format!("download task: {e}")))??;
            let index = plan.index;
            let (plan, store, unpacker, zwin) = (
                plan.clone(),
                self.store.clone(),
                unpacker.clone(),
                self.opts.zstd_window_log_max,
            );
            let bytes = tokio::task::spawn_blocking(move || {
                apply_layer(&store, &plan, verified, &unpacker, zwin)
            })
            .await
            .map_err(|e| Error::Registry(format!("unpack task: {e}")))??;
            total += bytes;
            if let Some(p) = &progress {
                p(ProgressEvent::Unpacked { index });
            }
        }
        drop(guard);
        Ok(total)
    }
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Makes sure the verified blob is in the store. Returns true if the HMAC of
/// an encrypted layer was verified during this download.
async fn fetch_layer(
    reg: &Registry,
    store: &BlobStore,
    r: &Reference,
    plan: &LayerPlan,
    progress: Option<ProgressFn>,
) -> Result<bool> {
    let lock = store.lock(&plan.digest);
    let _held = lock.lock().await;
    let _file_lock = store.lock_across_processes(&plan.digest).await?;
    if store.contains(&plan.digest) {
        if let Some(p) = &progress {
            p(ProgressEvent::Downloaded {
                bytes: plan.desc.size.max(0) as u64,
            });
        }
        return Ok(false);
    }
    let mut hmac = plan.crypto.as_ref().map(|c| HmacVerifier::new(&c.key));
    let report = |n: u64| {
        if let Some(p) = &progress {
            p(ProgressEvent::Downloaded { bytes: n });
        }
    };
    let partial = store.partial_path(&plan.digest);
    let res = reg
        .download(r, &plan.desc, &partial, hmac.as_mut(), &report)
        .await;
    if let Err(e) = res {
        // Keep a clean prefix for resuming; drop content that is wrong.
        if matches!(e, Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) {
            store.discard(&plan.digest);
        }
        return Err(e);
    }
    if let (Some(h), Some(c)) = (hmac, plan.crypto.as_ref()) {
        if let Err(e) = h.verify(&c.hmac, &plan.desc.digest) {
            store.discard(&plan.digest);
            return Err(e);
        }
    }
    store.commit(&plan.digest)?;
    Ok(plan.crypto.is_some())
}

/// Verification pass over a blob found in the store (digest, and HMAC for
/// encrypted layers): nothing from the store is trusted blindly.
fn reverify(path: &Path, plan: &LayerPlan) -> Result<()> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut r = HashingReader::new(BufReader::with_capacity(READ_BUF, f));
    let mut hmac = plan.crypto.as_ref().map(|c| HmacVerifier::new(&c.key));
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = r
            .read(&mut buf)
            .ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        if let Some(h) = hmac.as_mut() {
            h.update(&buf[..n]);
        }
    }
    let (d, _, _) = r.finish();
    plan.digest
        .verify(&d, &format!("stored layer {}", plan.desc.digest))?;
    if let (Some(h), Some(c)) = (hmac, plan.crypto.as_ref()) {
        h.verify(&c.hmac, &plan.desc.digest)?;
    }
    Ok(())
}

/// Decrypts, decompresses and unpacks one stored layer, checking its
/// diff_id. Two threads share the work: one reads, decrypts, decompresses
/// and hashes; the other parses the tar stream and writes files. They are
/// joined by a bounded channel, so memory stays at a few chunks.
///
/// The digest the encrypter recorded for the decrypted blob is not re-checked:
/// the HMAC already authenticated the ciphertext and the diff_id pins the
/// content.
fn apply_layer(
    store: &BlobStore,
    plan: &LayerPlan,
    hmac_verified: bool,
    unpacker: &Unpacker,
    zstd_window_log_max: u32,
) -> Result<u64> {
    let path = store.path(&plan.digest);
    if !hmac_verified {
        if let Err(e) = reverify(&path, plan) {
            if matches!(e, Error::DigestMismatch { .. }) {
                store.remove(&plan.digest);
            }
            return Err(e);
        }
    }
    let limit = unpacker_limit(unpacker);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
    let (produced, applied) = std::thread::scope(|scope| {
        let path = &path;
        let producer = scope.spawn(move || produce(path, plan, zstd_window_log_max, limit, tx));
        let applied = unpacker
            .apply_layer(ChannelReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            })
            .map_err(|e| annotate(e, plan, limit));
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::Tar("decompression thread panicked".into())));
        (produced, applied)
    });
    // A producer failure is the root cause of whatever the tar side saw.
    let (diff, size) = match (produced, applied) {
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e),
        (Ok(None), Ok(_)) => return Err(Error::Tar("layer stream stopped early".into())),
        (Ok(Some(d)), Ok(_)) => d,
    };
    plan.diff_id
        .verify(&diff, &format!("diff_id of layer {}", plan.desc.digest))?;
    tracing::debug!(layer = %plan.desc.digest, bytes = size, "layer applied");
    Ok(size)
}

const PIPE_DEPTH: usize = 8;
const PIPE_CHUNK: usize = 256 * 1024;

/// Reads the stored blob, decrypts and decompresses it, hashes the result
/// (diff_id) and sends it on in chunks. `Ok(None)` if the receiver hung up.
fn produce(
    path: &Path,
    plan: &LayerPlan,
    zstd_window_log_max: u32,
    limit: u64,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> Result<Option<(Sha256Digest, u64)>> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let raw = BufReader::with_capacity(READ_BUF, f);
    let source: Box<dyn Read + Send> = match &plan.crypto {
        Some(c) => Box::new(DecryptReader::new(raw, &c.key)),
        None => Box::new(raw),
    };
    let decompressed: Box<dyn Read + Send> = match plan.compression {
        Compression::None => source,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            READ_BUF, source,
        ))),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                READ_BUF, source,
            ))
            .ctx(|| "starting zstd".into())?;
            d.window_log_max(zstd_window_log_max)
                .ctx(|| "configuring zstd".into())?;
            Box::new(d)
        }
    };
    let mut r = HashingReader::new(LimitedReader::new(decompressed, limit));
    loop {
        let mut chunk = vec![0u8; PIPE_CHUNK];
        let mut filled = 0;
        while filled < PIPE_CHUNK {
            let n = match r.read(&mut chunk[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                    return Err(Error::LayerTooLarge {
                        digest: plan.desc.digest.clone(),
                        size: limit.saturating_add(1),
                        limit,
                    })
                }
                Err(e) => return Err(Error::Tar(format!("layer {}: {e}", plan.desc.digest))),
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        if tx.send(chunk).is_err() {
            return Ok(None);
        }
    }
    let (d, n, _) = r.finish();
    Ok(Some((d, n)))
}

/// The consuming end of the decompression pipe.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                // Sender gone: end of stream (errors are reported by it).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn unpacker_limit(u: &Unpacker) -> u64 {
    // The tar stream may be slightly larger than its file contents.
    u.options().max_layer_bytes.saturating_add(64 << 20)
}

fn annotate(e: Error, plan: &LayerPlan, limit: u64) -> Error {
    match e {
        // The size limit trips inside the tar reader, which reports it as a
        // read error of the stream.
        Error::Tar(m) if m.contains(LIMIT_MSG) => Error::LayerTooLarge {
            digest: plan.desc.digest.clone(),
            size: limit.saturating_add(1),
            limit,
        },
        Error::Tar(m) => Error::Tar(format!("layer {}: {m}", plan.desc.digest)),
        other => other,
    }
}

fn check_target(rootfs: &Path) -> Result<()> {
    match std::fs::read_dir(rootfs) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(Error::Io {
                    context: format!("rootfs {} is not empty", rootfs.display()),
                    source: io::Error::from(io::ErrorKind::AlreadyExists),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("checking {}", rootfs.display())),
    }
}

fn staging_dir(rootfs: &Path) -> Result<PathBuf> {
    let parent = rootfs
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    let name = rootfs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rootfs".into());
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| Error::Key(format!("random: {e}")))?;
    let dir = parent.join(format!(".{name}.unpacking-{}", hex::encode(rnd)));
    std::fs::create_dir(&dir).ctx(|| format!("creating {}", dir.display()))?;
    // The finished rootfs keeps this directory's mode.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", dir.display()))?;
    Ok(dir)
}

fn remove_tree(dir: &Path) {
    // std's remove_dir_all does not follow symlinks and is safe against
    // symlink races (it uses openat/unlinkat internally).
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove staging rootfs");
    }
}
