//! Access to the Key Broker Service, abstracted so the library does not depend
//! on a particular KBS client (the agent wires its attested client in).

use zeroize::Zeroizing;

/// Error type a broker implementation returns.
pub type BrokerError = Box<dyn std::error::Error + Send + Sync>;

/// Fetches secrets released by the KBS after attestation.
#[async_trait::async_trait]
pub trait KeyBroker: Send + Sync + std::fmt::Debug {
    /// Returns the resource at `path` = `"repo/type/tag"` (the KBS URL path
    /// `/kbs/v0/resource/<path>`).
    async fn resource(&self, path: &str) -> Result<Zeroizing<Vec<u8>>, BrokerError>;
}

/// The attested KBS client: resources come from the KBS after RCAR attestation
/// (token reused until it expires, JWE decrypted with the TEE key).
#[async_trait::async_trait]
impl KeyBroker for attester::kbs_client::KbsClient {
    async fn resource(&self, path: &str) -> Result<Zeroizing<Vec<u8>>, BrokerError> {
        Ok(self.get_resource(path).await?)
    }
}

/// Turns `kbs:///repo/type/tag` (or `kbs://host/repo/type/tag`) into
/// `repo/type/tag`, refusing anything that is not exactly three safe parts.
pub fn kbs_resource_path(uri: &str) -> crate::Result<String> {
    let rest = uri
        .strip_prefix("kbs://")
        .ok_or_else(|| crate::Error::KeyBroker(format!("not a kbs:// URI: {uri:?}")))?;
    // The host part is ignored: the broker decides which KBS to talk to.
    let path = match rest.find('/') {
        Some(i) => &rest[i + 1..],
        None => "",
    };
    let parts: Vec<&str> = path.split('/').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !ok {
        return Err(crate::Error::KeyBroker(format!(
            "resource URI must be kbs:///repo/type/tag, got {uri:?}"
        )));
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths() {
        assert_eq!(kbs_resource_path("kbs:///a/b/c").unwrap(), "a/b/c");
        assert_eq!(
            kbs_resource_path("kbs://kbs.example:8080/a/b/c").unwrap(),
            "a/b/c"
        );
        assert!(kbs_resource_path("kbs:///a/b").is_err());
        assert!(kbs_resource_path("kbs:///a/../c").is_err());
        assert!(kbs_resource_path("https://x/a/b/c").is_err());
        assert!(kbs_resource_path("kbs:///a/b/c/d").is_err());
    }
}
