//! Registry access over `oci-client`: manifest and platform resolution,
//! small blobs, and resumable streaming downloads of layers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
use crate::ocicrypt::cipher::HmacVerifier;

pub(crate) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_LIMIT: usize = 4 << 20;

/// Target platform of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;
    /// `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    fn from_str(s: &str) -> Result<Self> {
        let p: Vec<&str> = s.split('/').collect();
        match p.as_slice() {
            [os, arch] => Ok(Self {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] => Ok(Self {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: Some((*v).into()),
            }),
            _ => Err(Error::Unsupported(format!(
                "platform {s:?} (want os/arch[/variant])"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub platform: Platform,
    /// `host:port` of registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// `auth.json` / Docker `config.json` with an `auths` map.
    pub auth_file: Option<PathBuf>,
    /// Download retries after a broken connection (resumed with HTTP Range).
    pub retries: u32,
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Credentials from an `auth.json`, by registry host.
fn load_auths(path: &Path) -> Result<HashMap<String, RegistryAuth>> {
    let data = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let file: AuthFile = serde_json::from_slice(&data)
        .map_err(|e| Error::Registry(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (host, entry) in file.auths {
        let (user, pass) = match (entry.auth, entry.username, entry.password) {
            (Some(a), _, _) => {
                let dec = STANDARD
                    .decode(a.trim())
                    .map_err(|e| Error::Registry(format!("auth for {host}: {e}")))?;
                let s = String::from_utf8(dec)
                    .map_err(|_| Error::Registry(format!("auth for {host} is not UTF-8")))?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| Error::Registry(format!("auth for {host} is not user:pass")))?;
                (u.to_owned(), p.to_owned())
            }
            (None, Some(u), Some(p)) => (u, p),
            _ => continue,
        };
        // Keys may be URLs ("https://index.docker.io/v1/"): keep the host.
        let key = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let key = if key == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            key
        };
        out.insert(key, RegistryAuth::Basic(user, pass));
    }
    Ok(out)
}

/// A resolved platform image manifest.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    pub raw: Vec<u8>,
    pub digest: Sha256Digest,
    /// Digest of the image index the manifest was selected from, if any.
    pub index_digest: Option<Sha256Digest>,
    pub media_type: String,
    pub config: OciDescriptor,
    pub layers: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Option<Vec<OciDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

#[derive(Deserialize)]
struct IndexPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Registry client of one pull.
pub struct Registry {
    client: Client,
    auths: HashMap<String, RegistryAuth>,
    opts: RegistryOptions,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Self> {
        let auths = match &opts.auth_file {
            Some(p) => load_auths(p)?,
            None => HashMap::new(),
        };
        // The Mozilla roots compiled into the binary: a confidential guest has no
        // system certificate store (reqwest would refuse to build a client), and
        // roots that are part of the measured image are the ones to trust anyway.
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: c.to_vec(),
            })
            .collect();
        let config = ClientConfig {
            tls_certs_only: roots,
            protocol: ClientProtocol::HttpsExcept(opts.insecure_registries.clone()),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        Ok(Self {
            client: Client::new(config),
            auths,
            opts,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn auth_for(&self, r: &Reference) -> RegistryAuth {
        self.auths
            .get(r.resolve_registry())
            .or_else(|| self.auths.get(r.registry()))
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }

    /// Fetches raw manifest bytes, checking them against `expect` if given.
    async fn manifest_bytes(
        &self,
        r: &Reference,
        expect: Option<&Sha256Digest>,
    ) -> Result<Vec<u8>> {
        let auth = self.auth_for(r);
        let (bytes, _) = self
            .client
            .pull_manifest_raw(
                r,
                &auth,
                &[
                    MT_OCI_INDEX,
                    MT_DOCKER_LIST,
                    MT_OCI_MANIFEST,
                    MT_DOCKER_MANIFEST,
                ],
            )
            .await?;
        if bytes.len() > MANIFEST_LIMIT {
            return Err(Error::Manifest(format!(
                "manifest of {} bytes is too large",
                bytes.len()
            )));
        }
        if let Some(d) = expect {
            d.verify(&Sha256Digest::of(&bytes), "manifest")?;
        }
        Ok(bytes.to_vec())
    }

    /// Resolves `r` (tag or digest, index or manifest) to the manifest for
    /// the configured platform.
    pub async fn resolve(&self, r: &Reference) -> Result<ResolvedManifest> {
        let by_digest = r.digest().map(Sha256Digest::parse).transpose()?;
        let raw = self.manifest_bytes(r, by_digest.as_ref()).await?;
        let digest = Sha256Digest::of(&raw);
        match platform_entry(&raw, &self.opts.platform)? {
            None => image_manifest(raw, digest, None),
            Some(d) => {
                let child = r.clone_with_digest(d.to_string());
                let raw = self.manifest_bytes(&child, Some(&d)).await?;
                image_manifest(raw, d, Some(digest))
            }
        }
    }

    /// The cosign signature manifest at `sig_ref`, `None` if there is none.
    pub async fn signature_manifest(&self, sig_ref: &Reference) -> Result<Option<Vec<u8>>> {
        let auth = self.auth_for(sig_ref);
        match self
            .client
            .pull_manifest_raw(sig_ref, &auth, &[MT_OCI_MANIFEST, MT_DOCKER_MANIFEST])
            .await
        {
            Ok((b, _)) if b.len() <= MANIFEST_LIMIT => Ok(Some(b.to_vec())),
            Ok(_) => Err(Error::Manifest("signature manifest too large".into())),
            Err(oci_client::errors::OciDistributionError::ImageManifestNotFoundError(_)) => {
                Ok(None)
            }
            Err(oci_client::errors::OciDistributionError::RegistryError { envelope, .. })
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::NotFound
                    )
                }) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches a small blob (config, signature payload) fully into memory,
    /// verified against its descriptor.
    pub async fn small_blob(
        &self,
        r: &Reference,
        desc: &OciDescriptor,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let expect = Sha256Digest::parse(&desc.digest)?;
        let size = u64::try_from(desc.size).map_err(|_| Error::Manifest("negative size".into()))?;
        if size > limit {
            return Err(Error::LayerTooLarge {
                digest: desc.digest.clone(),
                size,
                limit,
            });
        }
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth_for(r))
            .await;
        let mut out = Vec::with_capacity(size as usize);
        let mut s = self.client.pull_blob_stream(r, desc).await?;
        while let Some(chunk) = s.next().await {
            let chunk = chunk.ctx(|| format!("downloading {}", desc.digest))?;
            if (out.len() + chunk.len()) as u64 > size {
                return Err(Error::SizeMismatch {
                    what: desc.digest.clone(),
                    expected: size,
                    actual: (out.len() + chunk.len()) as u64,
                });
            }
            out.extend_from_slice(&chunk);
        }
        if out.len() as u64 != size {
            return Err(Error::SizeMismatch {
                what: desc.digest.clone(),
                expected: size,
                actual: out.len() as u64,
            });
        }
        expect.verify(&Sha256Digest::of(&out), &desc.digest)?;
        Ok(out)
    }

    /// Streams a blob into `partial`, verifying size and digest (and the
    /// ocicrypt HMAC if `hmac` is given) as bytes arrive. A broken transfer
    /// is resumed with an HTTP Range request where the registry allows it.
    /// Bytes already in `partial` (an earlier interrupted pull) are reused.
    pub async fn download(
        &self,
        r: &Reference,
        desc: &OciDescriptor,
        partial: &Path,
        mut hmac: Option<&mut HmacVerifier>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let expect = Sha256Digest::parse(&desc.digest)?;
        let size = u64::try_from(desc.size).map_err(|_| Error::Manifest("negative size".into()))?;
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth_for(r))
            .await;

        let mut hasher = Sha256::new();
        let mut offset = self
            .rehash_partial(partial, size, &mut hasher, hmac.as_deref_mut())
            .await?;
        progress(offset);
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .await
            .ctx(|| format!("opening {}", partial.display()))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut attempt = 0u32;
        while offset < size {
            let resp = self
                .client
                .pull_blob_stream_partial(r, desc, offset, None)
                .await;
            let stream = match resp {
                Ok(BlobResponse::Partial(s)) => s,
                Ok(BlobResponse::Full(s)) => {
                    if offset > 0 {
                        // The registry ignored Range: start over.
                        tracing::warn!(digest = %desc.digest, "registry does not support Range; restarting");
                        out.flush().await.ctx(|| "flushing partial blob".into())?;
                        out.get_mut()
                            .set_len(0)
                            .await
                            .ctx(|| "truncating partial blob".into())?;
                        hasher = Sha256::new();
                        if let Some(h) = hmac.as_deref_mut() {
                            h.reset();
                        }
                        offset = 0;
                    }
                    s
                }
                Err(e) => {
                    attempt += 1;
                    if attempt > self.opts.retries {
                        return Err(Error::Registry(format!(
                            "downloading {} at offset {offset}/{size}: {e}",
                            desc.digest
                        )));
                    }
                    tracing::warn!(digest = %desc.digest, offset, error = %e, "retrying download");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            let mut stream = stream.stream;
            let mut broken = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => {
                        if offset + b.len() as u64 > size {
                            return Err(Error::SizeMismatch {
                                what: format!("layer {}", desc.digest),
                                expected: size,
                                actual: offset + b.len() as u64,
                            });
                        }
                        hasher.update(&b);
                        if let Some(h) = hmac.as_deref_mut() {
                            h.update(&b);
                        }
                        out.write_all(&b)
                            .await
                            .ctx(|| format!("writing {}", partial.display()))?;
                        offset += b.len() as u64;
                        progress(b.len() as u64);
                    }
                    Err(e) => {
                        broken = Some(e.to_string());
                        break;
                    }
                }
            }
            if offset < size {
                attempt += 1;
                let why = broken.unwrap_or_else(|| "connection closed early".into());
                if attempt > self.opts.retries {
                    return Err(Error::SizeMismatch {
                        what: format!("layer {} (truncated: {why})", desc.digest),
                        expected: size,
                        actual: offset,
                    });
                }
                tracing::warn!(digest = %desc.digest, offset, size, why, "resuming download");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        out.flush().await.ctx(|| "flushing blob".into())?;
        let file = out.into_inner();
        file.sync_data().await.ctx(|| "syncing blob".into())?;
        expect.verify(
            &Sha256Digest::from_hasher(hasher),
            &format!("layer {}", desc.digest),
        )
    }

    /// Hashes what an earlier attempt left in `partial`; returns its length.
    async fn rehash_partial(
        &self,
        partial: &Path,
        size: u64,
        hasher: &mut Sha256,
        hmac: Option<&mut HmacVerifier>,
    ) -> Result<u64> {
        let path = partial.to_owned();
        let mut h = hasher.clone();
        let mut m = hmac.as_ref().map(|v| (*v).clone());
        let (len, h, m) = tokio::task::spawn_blocking(move || -> Result<_> {
            use std::io::Read;
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, h, m)),
                Err(e) => return Err(e).ctx(|| format!("opening {}", path.display())),
            };
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = f
                    .read(&mut buf)
                    .ctx(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                if let Some(m) = m.as_mut() {
                    m.update(&buf[..n]);
                }
                len += n as u64;
            }
            Ok((len, h, m))
        })
        .await
        .map_err(|e| Error::Registry(format!("rehash task: {e}")))??;
        if len > size {
            // Not ours or corrupt: start from scratch.
            std::fs::remove_file(partial).ctx(|| format!("removing {}", partial.display()))?;
            return Ok(0);
        }
        if len > 0 {
            tracing::info!(partial = %partial.display(), len, "resuming an interrupted download");
        }
        *hasher = h;
        if let (Some(dst), Some(src)) = (hmac, m) {
            *dst = src;
        }
        Ok(len)
    }
}

fn parse_manifest(raw: &[u8]) -> Result<RawManifest> {
    serde_json::from_slice(raw).map_err(|e| Error::Manifest(format!("manifest JSON: {e}")))
}

/// If `raw` is an image index, the digest of its manifest for `want` (an error if it
/// has none); `None` if `raw` is a manifest. Shared by [`Registry::resolve`] and
/// offline tools that read manifests from disk.
pub fn platform_entry(raw: &[u8], want: &Platform) -> Result<Option<Sha256Digest>> {
    let Some(list) = parse_manifest(raw)?.manifests else {
        return Ok(None);
    };
    let pick = list
        .iter()
        .find(|e| {
            e.platform.as_ref().is_some_and(|p| {
                p.os == want.os
                    && p.architecture == want.architecture
                    && (want.variant.is_none() || p.variant == want.variant)
            })
        })
        .ok_or_else(|| Error::NoPlatform(want.to_string()))?;
    Sha256Digest::parse(&pick.digest).map(Some)
}

/// The platform manifest `raw` (whose digest the caller verified), selected from the
/// index `index_digest` if any. An index here is refused: indexes do not nest.
pub fn image_manifest(
    raw: Vec<u8>,
    digest: Sha256Digest,
    index_digest: Option<Sha256Digest>,
) -> Result<ResolvedManifest> {
    let m = parse_manifest(&raw)?;
    if m.manifests.is_some() {
        return Err(Error::Manifest("nested image index".into()));
    }
    let media_type = m.media_type.unwrap_or_else(|| MT_OCI_MANIFEST.to_owned());
    let config = m
        .config
        .ok_or_else(|| Error::Manifest("manifest has no config".into()))?;
    let layers = m.layers.unwrap_or_default();
    Ok(ResolvedManifest {
        raw,
        digest,
        index_digest,
        media_type,
        config,
        layers,
    })
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest has no system CA store; the client must still build (run with
    /// SSL_CERT_FILE=/dev/null to see it on a host that has one).
    #[test]
    fn client_builds_without_a_system_ca_store() {
        Registry::new(RegistryOptions::default()).unwrap();
    }

    #[test]
    fn auth_json_forms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        std::fs::write(
            &p,
            r#"{"auths":{
                "reg.example:5000":{"auth":"dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/":{"username":"hub","password":"pw"},
                "nothing.example":{}
            }}"#,
        )
        .unwrap();
        let a = load_auths(&p).unwrap();
        assert!(
            matches!(a.get("reg.example:5000"), Some(RegistryAuth::Basic(u, p)) if u == "user" && p == "pa:ss")
        );
        assert!(matches!(a.get("docker.io"), Some(RegistryAuth::Basic(u, _)) if u == "hub"));
        assert!(!a.contains_key("nothing.example"));
        std::fs::write(&p, r#"{"auths":{"x":{"auth":"bm9jb2xvbg=="}}}"#).unwrap();
        assert!(
            load_auths(&p).is_err(),
            "user:pass without a colon must be refused"
        );
    }

    #[test]
    fn index_entry_and_manifest_selection() {
        let arm = format!("sha256:{}", "a".repeat(64));
        let amd = format!("sha256:{}", "b".repeat(64));
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"digest":"{arm}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"digest":"{amd}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let want = |s: &str| s.parse::<Platform>().unwrap();
        let pick =
            |p: &str| platform_entry(index.as_bytes(), &want(p)).map(|d| d.map(|d| d.to_string()));
        assert_eq!(pick("linux/amd64").unwrap(), Some(amd));
        assert_eq!(pick("linux/arm64/v8").unwrap(), Some(arm));
        assert!(matches!(pick("linux/s390x"), Err(Error::NoPlatform(_))));

        let cfg = format!("sha256:{}", "c".repeat(64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":7}},"layers":[]}}"#
        );
        assert_eq!(
            platform_entry(manifest.as_bytes(), &want("linux/amd64")).unwrap(),
            None
        );
        let d = Sha256Digest::of(manifest.as_bytes());
        let m = image_manifest(manifest.clone().into_bytes(), d.clone(), None).unwrap();
        assert_eq!(m.config.digest, cfg);
        assert_eq!(m.media_type, MT_OCI_MANIFEST);
        assert!(
            image_manifest(index.into_bytes(), d.clone(), Some(d)).is_err(),
            "nested index"
        );
        let no_config = br#"{"schemaVersion":2,"layers":[]}"#.to_vec();
        assert!(image_manifest(no_config, Sha256Digest::of(b"x"), None).is_err());
    }

    #[test]
    fn platform_parsing() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
    }
}
