//! The key broker behind encrypted image pulls: an attested KBS client whose
//! attester first binds the pod's initdata (SNP `HOST_DATA` / TDX `MRCONFIGID` are
//! checked, a TPM's PCR 8 is extended). When any of that fails, pulls of encrypted
//! images fail closed with the reason; plain images still work.

use std::sync::Arc;

use attester::detect::{AttesterKind, HostProbe};
use attester::kbs_client::{ClientOptions, KbsClient};
use attester::Attester;
use image_mgmt::keybroker::{BrokerError, KeyBroker};
use zeroize::Zeroizing;

use crate::initdata::Initdata;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("unknown attester {0:?}: {1}")]
    Kind(String, String),
    #[error("no attester: {0}")]
    Attester(attester::AttesterError),
    #[error("the attester refused the initdata: {0}")]
    InitData(attester::AttesterError),
    #[error("KBS client: {0}")]
    Client(String),
}

/// A broker that cannot release anything, and says why on every request.
#[derive(Debug)]
pub struct Unavailable(pub String);

#[async_trait::async_trait]
impl KeyBroker for Unavailable {
    async fn resource(&self, path: &str) -> Result<Zeroizing<Vec<u8>>, BrokerError> {
        Err(format!("no key broker for {path}: {}", self.0).into())
    }
}

/// Builds the attester of `kind` and binds `initdata` to it.
pub fn bound_attester(
    kind: &str,
    host: &dyn HostProbe,
    initdata: Option<&Initdata>,
) -> Result<Arc<dyn Attester>, SetupError> {
    bound_attester_with(kind, None, host, initdata)
}

/// [`bound_attester`], with the sample TEE's stand-in for the launch-time digest
/// register (SNP `HOST_DATA`): `agent.sample_host_data=` on the kernel command line,
/// set by the host like the real register. Without it the sample TEE reports the
/// initdata the guest read.
pub fn bound_attester_with(
    kind: &str,
    sample_host_data: Option<&str>,
    host: &dyn HostProbe,
    initdata: Option<&Initdata>,
) -> Result<Arc<dyn Attester>, SetupError> {
    let kind: AttesterKind = kind
        .parse()
        .map_err(|e: String| SetupError::Kind(kind.to_string(), e))?;
    let attester: Arc<dyn Attester> = match kind {
        // No hardware carries a launch-time digest for the sample TEE.
        AttesterKind::Sample => Arc::new(attester::sample::SampleAttester::reporting(
            sample_host_data,
            initdata.map(Initdata::digest),
        )),
        _ => Arc::from(attester::detect::build(kind, host).map_err(SetupError::Attester)?),
    };
    if let Some(data) = initdata {
        attester
            .bind_init_data(data.digest())
            .map_err(SetupError::InitData)?;
        tracing::info!(tee = ?attester.tee(), "initdata bound to the TEE");
    }
    Ok(attester)
}

/// The KBS client for `url`, sending the initdata with the evidence so the KBS can
/// check its binding.
pub fn kbs_broker(
    url: &str,
    ca_pem: Option<Vec<u8>>,
    attester: Arc<dyn Attester>,
    initdata: Option<&Initdata>,
) -> Result<Arc<dyn KeyBroker>, SetupError> {
    let client = KbsClient::new(
        url,
        attester,
        ClientOptions {
            ca_pem,
            init_data_toml: initdata.map(|d| d.toml.clone()),
            ..Default::default()
        },
    )
    .map_err(|e| SetupError::Client(e.to_string()))?;
    Ok(Arc::new(client))
}

/// The broker the guest pull uses: `None` without a KBS, [`Unavailable`] when the
/// attester cannot be built or refuses the initdata.
pub fn broker(
    url: Option<&str>,
    ca_pem: Option<Vec<u8>>,
    (kind, sample_host_data): (&str, Option<&str>),
    host: &dyn HostProbe,
    initdata: Option<&Initdata>,
) -> Option<Arc<dyn KeyBroker>> {
    let url = url?;
    let built = bound_attester_with(kind, sample_host_data, host, initdata)
        .and_then(|a| kbs_broker(url, ca_pem, a, initdata));
    match built {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!("encrypted images cannot be pulled: {e}");
            Some(Arc::new(Unavailable(e.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Debug)]
    struct NoTee;
    impl HostProbe for NoTee {
        fn exists(&self, _: &Path) -> bool {
            false
        }
        fn tsm_provider(&self) -> Option<String> {
            None
        }
    }

    #[tokio::test]
    async fn without_a_tee_encrypted_pulls_fail_with_the_reason() {
        assert!(broker(None, None, ("auto", None), &NoTee, None).is_none());
        let b = broker(Some("https://kbs:8080"), None, ("auto", None), &NoTee, None).unwrap();
        let e = b.resource("default/key/1").await.unwrap_err().to_string();
        assert!(e.contains("no attester"), "{e}");
        assert!(e.contains("default/key/1"), "{e}");
        let b = broker(
            Some("https://kbs:8080"),
            None,
            ("quantum", None),
            &NoTee,
            None,
        )
        .unwrap();
        let e = b.resource("a/b/c").await.unwrap_err().to_string();
        assert!(e.contains("unknown attester"), "{e}");
    }

    #[test]
    fn sample_attester_is_built_only_when_asked_for() {
        let d = Initdata::parse("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n").unwrap();
        let a = bound_attester("sample", &NoTee, Some(&d)).unwrap();
        assert_eq!(format!("{:?}", a.tee()).to_lowercase(), "sample");
        // The evidence carries the bound digest, as the KBS's sample verifier checks.
        let ev = a.evidence(&[0; 48]).unwrap();
        assert_eq!(ev["init_data"], hex::encode(d.digest()));
        assert!(bound_attester("auto", &NoTee, Some(&d)).is_err());
    }

    #[tokio::test]
    async fn a_launch_digest_other_than_the_initdata_is_refused() {
        let d = Initdata::parse("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n").unwrap();
        let good = hex::encode(d.digest());
        bound_attester_with("sample", Some(&good), &NoTee, Some(&d)).unwrap();
        let other = "ab".repeat(32);
        let e = bound_attester_with("sample", Some(&other), &NoTee, Some(&d)).unwrap_err();
        assert!(matches!(e, SetupError::InitData(_)), "{e}");
        let b = broker(
            Some("https://kbs:8080"),
            None,
            ("sample", Some(&other)),
            &NoTee,
            Some(&d),
        )
        .unwrap();
        let e = b.resource("a/b/c").await.unwrap_err().to_string();
        assert!(e.contains("refused the initdata"), "{e}");
    }
}
