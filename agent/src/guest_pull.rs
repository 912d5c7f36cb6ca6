//! Guest pull through the image-management library: the image is pulled,
//! verified, decrypted (keys from the KBS after attestation) and unpacked in
//! the guest; the host never sees it in the clear.

use crate::image::{ImageConfig, ImageError, ImageService};
use async_trait::async_trait;
use image_mgmt::keybroker::KeyBroker;
use image_mgmt::settings::{ImageSettings, PolicySource};
use image_mgmt::{ImagePuller, PullOptions};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// [`ImageService`] over [`image_mgmt::ImagePuller`].
#[derive(Debug, Clone)]
pub struct GuestPull {
    options: PullOptions,
    pod_policy: PodPolicy,
}

/// The image policy the pod's initdata sets for every pull.
#[derive(Debug, Clone)]
enum PodPolicy {
    /// No initdata settings: `options.policy` as configured.
    Configured,
    /// From the initdata `cdh.toml`, loaded for each pull.
    Source(PolicySource),
    /// The initdata's image settings are unreadable or ask for something not
    /// implemented: every pull is refused with this reason.
    Invalid(String),
}

impl GuestPull {
    /// `options.store_dir` should be below the agent's state directory, which
    /// lives on the encrypted ephemeral storage.
    pub fn new(options: PullOptions, broker: Option<Arc<dyn KeyBroker>>) -> Self {
        let mut options = options;
        options.decrypt.broker = broker;
        Self {
            options,
            pod_policy: PodPolicy::Configured,
        }
    }

    /// Applies the `[image]` section of the pod's initdata `cdh.toml`
    /// (`None`: the initdata has no `cdh.toml`): its registries reachable over
    /// HTTP, and its image policy, which then governs every pull. Without an
    /// image policy there (`image_security_policy` or
    /// `image_security_policy_uri`), images are pulled without policy checks:
    /// no signature is required and plain layers are accepted.
    pub fn with_pod_settings(mut self, cdh_toml: Option<&str>) -> Self {
        let Some(text) = cdh_toml else {
            return self;
        };
        match ImageSettings::from_cdh_toml(text) {
            Ok(s) => {
                match &s.policy {
                    PolicySource::None => {
                        tracing::warn!("the initdata sets no image policy: images are not checked")
                    }
                    PolicySource::Inline(_) => tracing::info!("image policy from the initdata"),
                    PolicySource::Kbs(p) => {
                        tracing::info!(resource = p, "image policy from the KBS")
                    }
                }
                self.options
                    .registry
                    .insecure_registries
                    .extend(s.insecure_registries);
                self.pod_policy = PodPolicy::Source(s.policy);
            }
            Err(e) => {
                tracing::error!("initdata cdh.toml [image]: {e}; every image pull is refused");
                self.pod_policy = PodPolicy::Invalid(e.to_string());
            }
        }
        self
    }

    /// The options of one pull, with the pod's image policy loaded.
    async fn pull_options(&self) -> Result<PullOptions, String> {
        let mut options = self.options.clone();
        match &self.pod_policy {
            PodPolicy::Configured => {}
            PodPolicy::Invalid(reason) => {
                return Err(format!("the pod's image settings are refused: {reason}"))
            }
            PodPolicy::Source(source) => {
                options.policy = source
                    .load(options.decrypt.broker.as_deref())
                    .await
                    .map_err(|e| format!("the pod's image policy: {e}"))?;
            }
        }
        Ok(options)
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
        let options = self.pull_options().await.map_err(err)?;
        let puller = ImagePuller::new(options).map_err(|e| err(e.to_string()))?;
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
///
/// No `[token_configs.kbs]` section is `Ok(None)`; a document that is not TOML, or a
/// `url`/`cert` that is not a string, is an error: the pod owner's settings are never
/// ignored silently (the agent would then attest nowhere and pull nothing encrypted).
pub fn kbs_from_aa_toml(aa_toml: &str) -> Result<Option<(String, Option<String>)>, AaTomlError> {
    let doc: toml::Table = aa_toml.parse().map_err(AaTomlError::Toml)?;
    let Some(kbs) = doc.get("token_configs").and_then(|t| t.get("kbs")) else {
        return Ok(None);
    };
    let url = kbs
        .get("url")
        .and_then(|u| u.as_str())
        .ok_or(AaTomlError::Field("url"))?
        .to_owned();
    let cert = match kbs.get("cert") {
        None => None,
        Some(c) => Some(c.as_str().ok_or(AaTomlError::Field("cert"))?),
    }
    .filter(|c| !c.trim().is_empty())
    .map(str::to_owned);
    Ok(Some((url, cert)))
}

/// Why the initdata `aa.toml` was refused.
#[derive(Debug, thiserror::Error)]
pub enum AaTomlError {
    #[error("initdata aa.toml is not valid TOML: {0}")]
    Toml(#[source] toml::de::Error),
    #[error("initdata aa.toml: token_configs.kbs.{0} must be a string")]
    Field(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kbs_from_aa_toml() {
        let aa = "[token_configs]\n[token_configs.kbs]\nurl = \"https://kbs:8080\"\ncert = \"\"\"\n-----BEGIN CERTIFICATE-----\n\"\"\"\n";
        let (url, cert) = kbs_from_aa_toml(aa).unwrap().unwrap();
        assert_eq!(url, "https://kbs:8080");
        assert!(cert.unwrap().contains("BEGIN CERTIFICATE"));
        assert_eq!(kbs_from_aa_toml("x = 1").unwrap(), None);
        let no_cert = "[token_configs.kbs]\nurl = \"http://10.0.2.2:8080\"\n";
        assert_eq!(
            kbs_from_aa_toml(no_cert).unwrap(),
            Some(("http://10.0.2.2:8080".into(), None))
        );
        assert!(matches!(
            kbs_from_aa_toml("[token_configs.kbs\nurl = 1"),
            Err(AaTomlError::Toml(_))
        ));
        assert!(matches!(
            kbs_from_aa_toml("[token_configs.kbs]\nurl = 1\n"),
            Err(AaTomlError::Field("url"))
        ));
        assert!(matches!(
            kbs_from_aa_toml("[token_configs.kbs]\nurl = \"u\"\ncert = []\n"),
            Err(AaTomlError::Field("cert"))
        ));
    }

    use crate::initdata::Initdata;
    use zeroize::Zeroizing;

    /// A pod initdata whose `cdh.toml` is `cdh`.
    fn initdata(cdh: &str) -> Initdata {
        Initdata::parse(&format!(
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cdh.toml\" = '''\n{cdh}'''\n"
        ))
        .unwrap()
    }

    fn service(
        dir: &Path,
        initdata: Option<&Initdata>,
        broker: Option<Arc<dyn KeyBroker>>,
    ) -> GuestPull {
        let mut o = PullOptions {
            store_dir: dir.join("store"),
            ..Default::default()
        };
        o.registry.retries = 0;
        let cdh = initdata
            .and_then(|d| d.data.get("cdh.toml"))
            .map(String::as_str);
        GuestPull::new(o, broker).with_pod_settings(cdh)
    }

    /// Pulls from a closed local port: only a refusal before any registry
    /// contact names the policy.
    async fn pull_error(g: &GuestPull, dir: &Path) -> String {
        let e = g
            .pull("127.0.0.1:9/team/app:1", &Value::Null, &dir.join("rootfs"))
            .await
            .unwrap_err()
            .to_string();
        assert!(!dir.join("rootfs").exists());
        e
    }

    const REJECT_TEAM: &str = r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"127.0.0.1:9/team":[{"type":"reject"}]}}}"#;

    #[tokio::test]
    async fn the_initdata_image_policy_applies_to_every_pull() {
        let d = tempfile::tempdir().unwrap();
        let data = initdata(&format!(
            "[image]\ninsecure_registries = [\"127.0.0.1:9\"]\nimage_security_policy = '{REJECT_TEAM}'\n"
        ));
        let g = service(d.path(), Some(&data), None);
        assert_eq!(g.options.registry.insecure_registries, ["127.0.0.1:9"]);
        for _ in 0..2 {
            let e = pull_error(&g, d.path()).await;
            assert!(e.contains("rejected by policy"), "{e}");
        }
        // Without it the same pull goes to the registry.
        let e = pull_error(&service(d.path(), None, None), d.path()).await;
        assert!(!e.contains("policy"), "{e}");
        // A cdh.toml without an image policy keeps that default.
        let data = initdata("[image]\ninsecure_registries = [\"127.0.0.1:9\"]\n");
        let e = pull_error(&service(d.path(), Some(&data), None), d.path()).await;
        assert!(!e.contains("policy"), "{e}");
    }

    #[tokio::test]
    async fn unusable_image_settings_refuse_every_pull() {
        let d = tempfile::tempdir().unwrap();
        for cdh in [
            "[image\n",
            "[image]\ninsecure_registries = \"127.0.0.1:9\"\n",
            "[image]\nimage_security_policy = '{\"default\":[]}'\n",
            "[image]\nimage_security_policy = '{\"default\":[{\"type\":\"signedBy\"}]}'\n",
            "[image]\nimage_security_policy_uri = \"https://example.com/policy.json\"\n",
            "[image]\nregistry_configuration_uri = \"kbs:///default/registry/conf\"\n",
        ] {
            let g = service(d.path(), Some(&initdata(cdh)), None);
            let e = pull_error(&g, d.path()).await;
            assert!(e.contains("the pod's image"), "{cdh}: {e}");
        }
    }

    #[derive(Debug)]
    struct PolicyKbs(Option<&'static str>);

    #[async_trait]
    impl KeyBroker for PolicyKbs {
        async fn resource(
            &self,
            path: &str,
        ) -> Result<Zeroizing<Vec<u8>>, image_mgmt::keybroker::BrokerError> {
            match (path, self.0) {
                ("default/security-policy/pod", Some(p)) => Ok(Zeroizing::new(p.into())),
                _ => Err(format!("KBS denied {path}").into()),
            }
        }
    }

    #[tokio::test]
    async fn a_kbs_policy_is_fetched_through_the_attested_broker() {
        let d = tempfile::tempdir().unwrap();
        let data = initdata(
            "[image]\nimage_security_policy_uri = \"kbs:///default/security-policy/pod\"\n",
        );
        let kbs: Arc<dyn KeyBroker> = Arc::new(PolicyKbs(Some(REJECT_TEAM)));
        let e = pull_error(&service(d.path(), Some(&data), Some(kbs)), d.path()).await;
        assert!(e.contains("rejected by policy"), "{e}");
        // The KBS refuses, or there is none: no pull.
        let kbs: Arc<dyn KeyBroker> = Arc::new(PolicyKbs(None));
        let e = pull_error(&service(d.path(), Some(&data), Some(kbs)), d.path()).await;
        assert!(e.contains("KBS denied default/security-policy/pod"), "{e}");
        let e = pull_error(&service(d.path(), Some(&data), None), d.path()).await;
        assert!(e.contains("the pod's image policy"), "{e}");
    }
}
