//! Guest pull through the image-management library: the image is pulled,
//! verified, decrypted (keys from the KBS after attestation) and unpacked in
//! the guest; the host never sees it in the clear.

use crate::image::{ImageConfig, ImageError, ImageService};
use async_trait::async_trait;
use image_mgmt::keybroker::KeyBroker;
use image_mgmt::{ImagePuller, PullOptions};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// [`ImageService`] over [`image_mgmt::ImagePuller`].
#[derive(Debug, Clone)]
pub struct GuestPull {
    options: PullOptions,
}

impl GuestPull {
    /// `options.store_dir` should be below the agent's state directory, which
    /// lives on the encrypted ephemeral storage.
    pub fn new(options: PullOptions, broker: Option<Arc<dyn KeyBroker>>) -> Self {
        let mut options = options;
        options.decrypt.broker = broker;
        Self { options }
    }
}

#[async_trait]
impl ImageService for GuestPull {
    async fn pull(
        &self,
        image_ref: &str,
        _metadata: &Value,
        rootfs: &Path,
    ) -> Result<ImageConfig, ImageError> {
        let err = |reason: String| ImageError::Pull {
            image: image_ref.to_owned(),
            reason,
        };
        let puller = ImagePuller::new(self.options.clone()).map_err(|e| err(e.to_string()))?;
        let pulled = puller
            .pull(image_ref, rootfs, None)
            .await
            .map_err(|e| err(e.to_string()))?;
        let config: Value = serde_json::from_slice(&pulled.config)
            .map_err(|e| err(format!("image config is not JSON: {e}")))?;
        tracing::info!(
            image = image_ref,
            digest = %pulled.manifest_digest,
            layers = pulled.layers,
            bytes = pulled.unpacked_bytes,
            "image pulled in the guest"
        );
        Ok(ImageConfig::from_oci_config(&config))
    }
}

/// The KBS address and CA from the initdata `aa.toml`
/// (`[token_configs.kbs] url = ..., cert = ...`), as guest-components reads it.
pub fn kbs_from_aa_toml(aa_toml: &str) -> Option<(String, Option<String>)> {
    let doc: toml::Table = aa_toml.parse().ok()?;
    let kbs = doc.get("token_configs")?.get("kbs")?;
    let url = kbs.get("url")?.as_str()?.to_owned();
    let cert = kbs
        .get("cert")
        .and_then(|c| c.as_str())
        .filter(|c| !c.trim().is_empty())
        .map(str::to_owned);
    Some((url, cert))
}

/// Registries the pod owner allows over plain HTTP, from the initdata `cdh.toml`
/// (`[image] insecure_registries = ["host:port"]`). Part of the initdata, so the
/// setting is bound into the attestation like the rest of the pod's configuration.
pub fn insecure_registries_from_cdh_toml(cdh_toml: &str) -> Vec<String> {
    let Ok(doc) = cdh_toml.parse::<toml::Table>() else {
        tracing::warn!("initdata cdh.toml is not TOML; ignored");
        return Vec::new();
    };
    doc.get("image")
        .and_then(|i| i.get("insecure_registries"))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_insecure_registries_from_cdh_toml() {
        assert_eq!(
            insecure_registries_from_cdh_toml(
                "[image]\ninsecure_registries = [\"10.0.2.2:5000\", 7]\n"
            ),
            vec!["10.0.2.2:5000"]
        );
        assert!(insecure_registries_from_cdh_toml("[kbc]\nname = 1\n").is_empty());
        assert!(insecure_registries_from_cdh_toml("not toml [").is_empty());
    }

    #[test]
    fn reads_the_kbs_from_aa_toml() {
        let aa = "[token_configs]\n[token_configs.kbs]\nurl = \"https://kbs:8080\"\ncert = \"\"\"\n-----BEGIN CERTIFICATE-----\n\"\"\"\n";
        let (url, cert) = kbs_from_aa_toml(aa).unwrap();
        assert_eq!(url, "https://kbs:8080");
        assert!(cert.unwrap().contains("BEGIN CERTIFICATE"));
        assert_eq!(kbs_from_aa_toml("x = 1"), None);
        let no_cert = "[token_configs.kbs]\nurl = \"http://10.0.2.2:8080\"\n";
        assert_eq!(
            kbs_from_aa_toml(no_cert),
            Some(("http://10.0.2.2:8080".into(), None))
        );
    }
}
