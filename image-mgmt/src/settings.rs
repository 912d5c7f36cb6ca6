//! The `[image]` section of the pod's initdata `cdh.toml`: the settings the
//! pod owner gives the guest pull. The field names are those of
//! guest-components' `image_rs::config::ImageConfig` (guest-components
//! 8246e5e, `image-rs/src/config.rs`), which its CDH reads from the same
//! section, so one initdata serves both guests.
//!
//! Settings that would tighten the pull but are not implemented here are
//! refused instead of ignored: a pod that asked for them must not run without.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, IoContext, Result};
use crate::keybroker::{kbs_resource_path, KeyBroker};
use crate::policy::Policy;

/// Where the pod's image policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// No policy set: images are not checked against any policy.
    None,
    /// The policy text itself (`image_security_policy`).
    Inline(String),
    /// A KBS resource `repo/type/tag` (`image_security_policy_uri = "kbs:///…"`),
    /// fetched through the attested key broker.
    Kbs(String),
}

/// The `[image]` settings the guest pull honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub policy: PolicySource,
}

#[derive(Deserialize)]
struct CdhToml {
    #[serde(default)]
    image: RawImage,
}

#[derive(Deserialize, Default)]
struct RawImage {
    #[serde(default)]
    insecure_registries: Vec<String>,
    image_security_policy: Option<String>,
    image_security_policy_uri: Option<String>,
    // Registry blocking and mirroring rules: not implemented, refused.
    registry_config: Option<toml::Value>,
    registry_configuration_uri: Option<String>,
}

impl ImageSettings {
    /// Parses a `cdh.toml`. The policy is only located here; see
    /// [`PolicySource`] and [`ImageSettings::load_policy`].
    pub fn from_cdh_toml(text: &str) -> Result<Self> {
        let doc: CdhToml =
            toml::from_str(text).map_err(|e| Error::Policy(format!("cdh.toml: {e}")))?;
        let i = doc.image;
        if i.registry_config.is_some() || i.registry_configuration_uri.is_some() {
            return Err(Error::Unsupported(
                "cdh.toml [image] registry_config / registry_configuration_uri".into(),
            ));
        }
        // The URI wins over the inline text, as in image-rs's builder
        // (guest-components 8246e5e, `image-rs/src/builder.rs`).
        let policy = match (i.image_security_policy_uri, i.image_security_policy) {
            (Some(uri), _) => policy_uri(&uri)?,
            (None, Some(text)) => PolicySource::Inline(text),
            (None, None) => PolicySource::None,
        };
        Ok(Self {
            insecure_registries: i.insecure_registries,
            policy,
        })
    }
}

fn policy_uri(uri: &str) -> Result<PolicySource> {
    if let Some(path) = uri.strip_prefix("file://") {
        // A file of the (measured) guest image, read now.
        let data = std::fs::read(Path::new(path)).ctx(|| format!("reading image policy {uri}"))?;
        let text = String::from_utf8(data)
            .map_err(|_| Error::Policy(format!("image policy {uri} is not UTF-8")))?;
        return Ok(PolicySource::Inline(text));
    }
    if uri.starts_with("kbs://") {
        return Ok(PolicySource::Kbs(kbs_resource_path(uri)?));
    }
    Err(Error::Unsupported(format!(
        "image_security_policy_uri {uri:?}: only file:// and kbs:/// are supported"
    )))
}

impl PolicySource {
    /// The parsed policy (`None` for [`PolicySource::None`]). Key paths in the
    /// policy must be absolute: there is no policy file to be relative to.
    pub async fn load(&self, broker: Option<&dyn KeyBroker>) -> Result<Option<Policy>> {
        let text = match self {
            PolicySource::None => return Ok(None),
            PolicySource::Inline(t) => t.as_bytes().to_vec(),
            PolicySource::Kbs(path) => {
                let broker = broker.ok_or_else(|| {
                    Error::KeyBroker(format!("no KBS to fetch the image policy {path} from"))
                })?;
                broker
                    .resource(path)
                    .await
                    .map_err(|e| Error::KeyBroker(format!("image policy {path}: {e}")))?
                    .to_vec()
            }
        };
        Policy::parse(&text, None).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[derive(Debug)]
    struct OneResource(&'static str, Vec<u8>);

    #[async_trait::async_trait]
    impl KeyBroker for OneResource {
        async fn resource(
            &self,
            path: &str,
        ) -> std::result::Result<Zeroizing<Vec<u8>>, crate::keybroker::BrokerError> {
            if path == self.0 {
                Ok(Zeroizing::new(self.1.clone()))
            } else {
                Err(format!("no resource {path}").into())
            }
        }
    }

    const REJECT_ALL: &str = r#"{"default":[{"type":"reject"}]}"#;

    #[tokio::test]
    async fn inline_policy_and_registries() {
        let s = ImageSettings::from_cdh_toml(&format!(
            "[kbc]\nname = \"cc_kbc\"\n[image]\ninsecure_registries = [\"10.0.2.2:5000\"]\nmax_concurrent_layer_downloads_per_image = 3\nimage_security_policy = '{REJECT_ALL}'\n"
        ))
        .unwrap();
        assert_eq!(s.insecure_registries, ["10.0.2.2:5000"]);
        assert_eq!(s.policy, PolicySource::Inline(REJECT_ALL.into()));
        let p = s.policy.load(None).await.unwrap().unwrap();
        let r: oci_client::Reference = "busybox".parse().unwrap();
        assert!(p.precheck(&r).is_err());
    }

    #[tokio::test]
    async fn no_image_section_means_no_policy() {
        for text in ["", "[kbc]\nname = \"cc_kbc\"\n", "[image]\n"] {
            let s = ImageSettings::from_cdh_toml(text).unwrap();
            assert_eq!(s.policy, PolicySource::None);
            assert!(s.policy.load(None).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn policy_uris() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("policy.json");
        std::fs::write(&f, REJECT_ALL).unwrap();
        // The URI wins over the inline text.
        let s = ImageSettings::from_cdh_toml(&format!(
            "[image]\nimage_security_policy_uri = \"file://{}\"\nimage_security_policy = '{{}}'\n",
            f.display()
        ))
        .unwrap();
        assert_eq!(s.policy, PolicySource::Inline(REJECT_ALL.into()));
        let missing = "[image]\nimage_security_policy_uri = \"file:///no/such/policy.json\"\n";
        assert!(ImageSettings::from_cdh_toml(missing).is_err());

        let s = ImageSettings::from_cdh_toml(
            "[image]\nimage_security_policy_uri = \"kbs:///default/security-policy/test\"\n",
        )
        .unwrap();
        assert_eq!(
            s.policy,
            PolicySource::Kbs("default/security-policy/test".into())
        );
        let kbs = OneResource("default/security-policy/test", REJECT_ALL.into());
        assert!(s.policy.load(Some(&kbs)).await.unwrap().is_some());
        let other = OneResource("default/other/x", REJECT_ALL.into());
        let e = s.policy.load(Some(&other)).await.unwrap_err().to_string();
        assert!(e.contains("default/security-policy/test"), "{e}");
        assert!(s.policy.load(None).await.is_err());
        let bad = OneResource("default/security-policy/test", b"{\"default\":[]}".to_vec());
        assert!(s.policy.load(Some(&bad)).await.is_err());

        for uri in [
            "https://example.com/p.json",
            "kbs:///too/short",
            "/etc/p.json",
        ] {
            let t = format!("[image]\nimage_security_policy_uri = \"{uri}\"\n");
            assert!(ImageSettings::from_cdh_toml(&t).is_err(), "{uri}");
        }
    }

    #[test]
    fn unimplemented_or_unreadable_settings_are_refused() {
        for text in [
            "not toml [",
            "[image]\ninsecure_registries = \"one\"\n",
            "[image]\nregistry_configuration_uri = \"kbs:///default/registry/conf\"\n",
            "[image.registry_config]\nunqualified-search-registries = []\n",
        ] {
            assert!(ImageSettings::from_cdh_toml(text).is_err(), "{text}");
        }
    }
}
