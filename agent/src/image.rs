//! Guest image pull: the agent side of Kata's `image_guest_pull` storage driver.
//!
//! The pulling itself (registry, signature/encryption, unpack) is done by an
//! [`ImageService`], so the agent does not depend on a particular image library.

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;

use crate::protocols::agent::Storage;

/// Storage driver name Kata ≥ 3.3 uses for guest pull.
pub const GUEST_PULL_DRIVER: &str = "image_guest_pull";
/// Metadata key telling the sandbox (pause) container from app containers.
pub const CONTAINER_TYPE_KEY: &str = "io.kubernetes.cri.container-type";
/// Metadata key with the image reference.
pub const IMAGE_NAME_KEY: &str = "io.kubernetes.cri.image-name";

/// What a container needs from its image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageConfig {
    /// From an OCI image config blob (`{"config": {"Env": .., "Cmd": ..}}`).
    pub fn from_oci_config(v: &Value) -> Self {
        let c = &v["config"];
        let strings = |k: &str| -> Vec<String> {
            c[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            env: strings("Env"),
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
            user: c["User"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// Errors of an image service.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("pull of {image} failed: {reason}")]
    Pull { image: String, reason: String },
    #[error("bad image_guest_pull storage: {0}")]
    BadStorage(String),
}

/// Pulls (and verifies, decrypts, unpacks) an image into a container's rootfs.
#[async_trait]
pub trait ImageService: Send + Sync + std::fmt::Debug {
    /// Unpacks `image_ref` into the empty directory `rootfs` and returns its config.
    /// `metadata` is the pod's annotations as sent by the shim.
    async fn pull(
        &self,
        image_ref: &str,
        metadata: &Value,
        rootfs: &Path,
    ) -> Result<ImageConfig, ImageError>;
}

/// A parsed `image_guest_pull` storage.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestPull {
    pub image_ref: String,
    pub metadata: Value,
    pub is_sandbox: bool,
}

/// Finds and parses the guest-pull storage among a container's storages.
pub fn guest_pull(storages: &[Storage]) -> Result<Option<GuestPull>, ImageError> {
    let Some(s) = storages.iter().find(|s| s.driver == GUEST_PULL_DRIVER) else {
        return Ok(None);
    };
    let mut metadata = Value::Null;
    for o in &s.driver_options {
        if let Some(j) = o.strip_prefix("image_guest_pull=") {
            let v: Value = serde_json::from_str(j)
                .map_err(|e| ImageError::BadStorage(format!("driver option is not JSON: {e}")))?;
            metadata = v.get("metadata").cloned().unwrap_or(Value::Null);
        }
    }
    let is_sandbox = metadata[CONTAINER_TYPE_KEY] == "sandbox";
    let image_ref = if s.source.is_empty() {
        metadata[IMAGE_NAME_KEY]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        s.source.clone()
    };
    if image_ref.is_empty() && !is_sandbox {
        return Err(ImageError::BadStorage("no image reference".into()));
    }
    Ok(Some(GuestPull {
        image_ref,
        metadata,
        is_sandbox,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(source: &str, opts: &str) -> Storage {
        let mut s = Storage::new();
        s.driver = GUEST_PULL_DRIVER.into();
        s.source = source.into();
        s.driver_options = vec![format!("image_guest_pull={opts}")];
        s.fstype = "overlay".into();
        s
    }

    #[test]
    fn parses_app_and_sandbox_storages() {
        let app = storage(
            "registry:5000/busybox:1",
            r#"{"metadata":{"io.kubernetes.cri.container-type":"container"}}"#,
        );
        let g = guest_pull(&[app]).unwrap().unwrap();
        assert_eq!(g.image_ref, "registry:5000/busybox:1");
        assert!(!g.is_sandbox);
        let sb = storage(
            "",
            r#"{"metadata":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.image-name":"pause:3.9"}}"#,
        );
        let g = guest_pull(&[sb]).unwrap().unwrap();
        assert!(g.is_sandbox);
        assert_eq!(g.image_ref, "pause:3.9");
        assert!(guest_pull(&[storage("x", "{not json")]).is_err());
        assert!(guest_pull(&[]).unwrap().is_none());
    }

    #[test]
    fn image_config_from_blob() {
        let v: Value = serde_json::from_str(
            r#"{"config":{"Env":["A=1"],"Cmd":["sh"],"WorkingDir":"/w","User":"5"}}"#,
        )
        .unwrap();
        let c = ImageConfig::from_oci_config(&v);
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.user, "5");
        assert!(c.entrypoint.is_empty());
    }
}
