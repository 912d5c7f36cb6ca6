//! Image pinning: every container image becomes `registry/repository@sha256:...` plus
//! the execution defaults of its config, read from a registry with `image-mgmt`'s
//! client, or offline from a directory of blobs. Every byte read is checked against
//! the digest that names it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use image_mgmt::digest::Sha256Digest;
use image_mgmt::pull::CONFIG_LIMIT;
use image_mgmt::registry::{image_manifest, platform_entry, Platform, Registry};
use oci_client::manifest::OciDescriptor;
use oci_client::Reference;

use crate::error::{Error, Result};

/// What of an image config decides how its process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `Volumes`: containerd mounts a directory at each of these.
    pub volumes: Vec<String>,
}

impl ImageConfig {
    /// From an OCI / Docker image config blob.
    pub fn from_blob(blob: &[u8]) -> std::result::Result<Self, String> {
        let f: oci_client::config::ConfigFile =
            serde_json::from_slice(blob).map_err(|e| format!("image config: {e}"))?;
        let c = f.config.unwrap_or_default();
        let mut volumes: Vec<String> = c.volumes.unwrap_or_default().into_iter().collect();
        volumes.sort();
        Ok(Self {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            volumes,
        })
    }
}

/// An image reference pinned to the digest of what it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// `registry/repository@sha256:<hex>`, `docker.io` normalised.
    pub reference: String,
    /// The digest of the manifest (or image index) the reference resolved to.
    pub digest: String,
    pub config: ImageConfig,
}

/// Where image manifests and configs come from.
#[derive(Debug)]
pub enum Resolver {
    /// A registry, through `image-mgmt`'s client. `via` maps a registry named in the
    /// manifest (`10.0.2.2:5000`, `docker.io`) to the address to contact instead; the
    /// pinned reference keeps the original registry.
    Online {
        registry: Box<Registry>,
        via: BTreeMap<String, String>,
    },
    /// No network: references must carry their digest, and the blobs are read from
    /// `dir` (an OCI layout's `blobs/sha256/<hex>`, or `dir/sha256/<hex>`).
    Offline { dir: PathBuf, platform: Platform },
}

fn parse_ref(image: &str) -> Result<Reference> {
    image.parse().map_err(|e| Error::Image {
        image: image.into(),
        reason: format!("not an image reference: {e}"),
    })
}

impl Resolver {
    /// Pins `image` and reads its config.
    pub async fn resolve(&self, image: &str) -> Result<PinnedImage> {
        let r = parse_ref(image)?;
        let (digest, config) = match self {
            Self::Online { registry, via } => online(registry, via, image, &r).await?,
            Self::Offline { dir, platform } => offline(dir, platform, image, &r)?,
        };
        let config = ImageConfig::from_blob(&config).map_err(|reason| Error::Image {
            image: image.into(),
            reason,
        })?;
        Ok(PinnedImage {
            reference: format!("{}/{}@{digest}", r.registry(), r.repository()),
            digest: digest.to_string(),
            config,
        })
    }
}

async fn online(
    registry: &Registry,
    via: &BTreeMap<String, String>,
    image: &str,
    r: &Reference,
) -> Result<(Sha256Digest, Vec<u8>)> {
    let contact = match via.get(r.registry()) {
        None => r.clone(),
        Some(addr) => match (r.tag(), r.digest()) {
            (_, Some(d)) => Reference::with_digest(addr.clone(), r.repository().into(), d.into()),
            (Some(t), None) => Reference::with_tag(addr.clone(), r.repository().into(), t.into()),
            (None, None) => {
                Reference::with_tag(addr.clone(), r.repository().into(), "latest".into())
            }
        },
    };
    let reg = |source| Error::Registry {
        image: image.into(),
        source,
    };
    // `resolve` checks the manifest against a digest in the reference.
    let m = registry.resolve(&contact).await.map_err(reg)?;
    let config = registry
        .small_blob(&contact, &m.config, CONFIG_LIMIT)
        .await
        .map_err(reg)?;
    // The pin is what the reference named: the index if it was one (it lists the
    // platform manifests by digest, so they are pinned with it).
    Ok((m.index_digest.unwrap_or(m.digest), config))
}

fn offline(
    dir: &std::path::Path,
    platform: &Platform,
    image: &str,
    r: &Reference,
) -> Result<(Sha256Digest, Vec<u8>)> {
    let err = |reason: String| Error::Image {
        image: image.into(),
        reason,
    };
    let Some(d) = r.digest() else {
        return Err(err(
            "offline mode needs the digest in the reference (image@sha256:<hex>): a tag \
             names whatever the registry serves today"
                .into(),
        ));
    };
    let top = Sha256Digest::parse(d).map_err(|e| err(e.to_string()))?;
    let read = |d: &Sha256Digest, limit: u64| -> Result<Vec<u8>> {
        let candidates = [
            dir.join("blobs/sha256").join(d.hex()),
            dir.join("sha256").join(d.hex()),
        ];
        let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
            err(format!(
                "blob {d} is not in {} (want blobs/sha256/<hex> or sha256/<hex>)",
                dir.display()
            ))
        })?;
        let len = std::fs::metadata(path)
            .map_err(crate::error::io(format!("reading {}", path.display())))?
            .len();
        if len > limit {
            return Err(err(format!("blob {d} is {len} bytes, over {limit}")));
        }
        let data =
            std::fs::read(path).map_err(crate::error::io(format!("reading {}", path.display())))?;
        d.verify(&Sha256Digest::of(&data), &d.to_string())
            .map_err(|e| err(e.to_string()))?;
        Ok(data)
    };
    let raw = read(&top, CONFIG_LIMIT)?;
    let m = match platform_entry(&raw, platform).map_err(|e| err(e.to_string()))? {
        None => image_manifest(raw, top.clone(), None),
        Some(child) => image_manifest(read(&child, CONFIG_LIMIT)?, child, Some(top.clone())),
    }
    .map_err(|e| err(e.to_string()))?;
    let config = read_config(&m.config, |d| read(d, CONFIG_LIMIT)).map_err(|e| match e {
        Error::Image { .. } | Error::Io { .. } => e,
        other => err(other.to_string()),
    })?;
    Ok((top, config))
}

/// The config blob `desc` names, of exactly its size.
fn read_config(
    desc: &OciDescriptor,
    read: impl Fn(&Sha256Digest) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let d = Sha256Digest::parse(&desc.digest).map_err(|e| Error::Manifest(e.to_string()))?;
    let data = read(&d)?;
    if i64::try_from(data.len()).ok() != Some(desc.size) {
        return Err(Error::Manifest(format!(
            "config {} is {} bytes, the manifest says {}",
            desc.digest,
            data.len(),
            desc.size
        )));
    }
    Ok(data)
}

/// Writes an image (config + manifest) into `dir/blobs/sha256`, for offline tests;
/// returns the manifest digest.
#[cfg(test)]
pub(crate) fn write_test_image(dir: &std::path::Path, config: &serde_json::Value) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = Sha256Digest::of(data);
        std::fs::write(blobs.join(d.hex()), data).unwrap();
        d.to_string()
    };
    let mut full = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}});
    full["config"] = config.clone();
    let config = serde_json::to_vec(&full).unwrap();
    let cd = put(&config);
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": []});
    put(&serde_json::to_vec(&manifest).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        Sha256Digest::of(data).to_string()
    }

    /// An OCI layout's blobs: config, manifest, and an index over the manifest.
    fn layout(dir: &std::path::Path) -> (String, String) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| {
            let d = sha(data);
            std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
            d
        };
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["/bin/sh"],"Cmd":["-c","true"],"WorkingDir":"/w","User":"7:8","Volumes":{"/var/data":{}}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = put(config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[]}}"#,
            config.len()
        );
        let md = put(manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            manifest.len()
        );
        (md, put(index.as_bytes()))
    }

    fn offline(dir: &std::path::Path) -> Resolver {
        Resolver::Offline {
            dir: dir.to_owned(),
            platform: Platform::default(),
        }
    }

    #[tokio::test]
    async fn offline_reads_configs_by_digest_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let (md, idx) = layout(dir.path());
        let r = offline(dir.path());
        for top in [&md, &idx] {
            let p = r
                .resolve(&format!("reg.example:5000/app@{top}"))
                .await
                .unwrap();
            assert_eq!(p.reference, format!("reg.example:5000/app@{top}"));
            assert_eq!(p.digest, *top);
            assert_eq!(p.config.entrypoint, ["/bin/sh"]);
            assert_eq!(p.config.user, "7:8");
            assert_eq!(p.config.volumes, ["/var/data"]);
        }
        // Tag and digest: the digest pins; docker.io is normalised.
        let p = r.resolve(&format!("busybox:1.36@{md}")).await.unwrap();
        assert_eq!(p.reference, format!("docker.io/library/busybox@{md}"));
    }

    #[tokio::test]
    async fn offline_refuses_tags_missing_and_altered_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let (md, _) = layout(dir.path());
        let r = offline(dir.path());
        for bare in ["busybox", "busybox:1.36", "reg.example/app:v1"] {
            let e = r.resolve(bare).await.unwrap_err().to_string();
            assert!(e.contains("needs the digest"), "{bare}: {e}");
        }
        let missing = format!("app@sha256:{}", "0".repeat(64));
        assert!(r
            .resolve(&missing)
            .await
            .unwrap_err()
            .to_string()
            .contains("is not in"));
        // A blob whose bytes do not hash to its name is refused.
        let f = dir
            .path()
            .join("blobs/sha256")
            .join(md.trim_start_matches("sha256:"));
        let mut data = std::fs::read(&f).unwrap();
        data.push(b' ');
        std::fs::write(&f, data).unwrap();
        let e = r
            .resolve(&format!("app@{md}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("mismatch"), "{e}");
    }

    #[test]
    fn config_without_execution_defaults() {
        let c = ImageConfig::from_blob(
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(c, ImageConfig::default());
        assert!(ImageConfig::from_blob(b"{}").is_err());
    }
}
