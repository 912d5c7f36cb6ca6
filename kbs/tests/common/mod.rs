//! A real `kbs` process for tests and benchmarks: TLS with a throwaway CA, an
//! admin key, a state directory, started on a free loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use coco_jose::jwt::SigningKey;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

pub struct KbsProcess {
    child: Option<Child>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub ca_pem: Vec<u8>,
    pub admin_key: SigningKey,
    extra_config: String,
}

fn write_tls(dir: &Path) -> Vec<u8> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test KBS CA");
    let ca = ca_params.clone().self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.pem().into_bytes()
}

impl KbsProcess {
    /// Start a KBS with TLS and an admin key; `extra_config` is appended to kbs.toml.
    pub fn start(extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = write_tls(dir.path());
        let admin_key = SigningKey::generate_ed25519();
        std::fs::write(
            dir.path().join("admin.pub"),
            admin_key.verifying_key().to_public_key_pem().unwrap(),
        )
        .unwrap();
        let mut k = Self {
            child: None,
            url: String::new(),
            dir,
            ca_pem,
            admin_key,
            extra_config: extra_config.to_owned(),
        };
        k.write_config(true);
        k.spawn();
        k
    }

    /// Start without any admin key (the admin API must be closed).
    pub fn start_without_admin() -> Self {
        let mut k = Self::start("");
        k.stop();
        k.write_config(false);
        k.spawn();
        k
    }

    fn write_config(&self, with_admin: bool) {
        let admin = if with_admin {
            "[admin]\npublic_keys = [\"admin.pub\"]\n"
        } else {
            ""
        };
        // `extra_config` may carry its own tables; top-level keys go first.
        let config = format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n{top}\n[tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"\n{admin}{tables}",
            top = self.extra_config.lines().take_while(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n"),
            tables = self.extra_config.lines().skip_while(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n"),
        );
        std::fs::write(self.dir.path().join("kbs.toml"), config).unwrap();
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kbs"))
            .arg("--config")
            .arg(self.dir.path().join("kbs.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kbs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("kbs listening on ")
            .unwrap_or_else(|| panic!("unexpected kbs output: {line:?}"))
            .replace("127.0.0.1", "localhost");
        self.url = url;
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop and start again on the same state directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `(VmRSS, VmHWM)` of the KBS in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// rustls client config trusting the test CA.
    pub fn tls_client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &self.ca_pem[..]) {
            roots.add(c.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    /// An HTTPS client with a cookie jar (as RCAR clients use).
    pub fn http(&self) -> reqwest::Client {
        self.http_with_cookies(true)
    }

    pub fn http_with_cookies(&self, cookies: bool) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(cookies)
            .tls_backend_preconfigured(self.tls_client_config())
            .build()
            .unwrap()
    }

    /// Send `request_head` (request line + headers, without the final blank
    /// line) and `body` byte for byte over TLS, bypassing any client-side URL
    /// normalization; returns the status code.
    pub async fn raw_request(&self, request_head: &str, body: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cfg = self.tls_client_config();
        let addr = self
            .url
            .trim_start_matches("https://")
            .replace("localhost", "127.0.0.1");
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(
            format!("{request_head}\r\nHost: localhost\r\nConnection: close\r\n\r\n{body}")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn admin_token(&self) -> String {
        let now = coco_jose::now_secs();
        self.admin_key
            .sign(&serde_json::json!({"role": "admin", "exp": now + 300}))
            .unwrap()
    }

    pub fn client(
        &self,
        attester: Arc<dyn attester::Attester>,
        rsa: bool,
    ) -> attester::kbs_client::KbsClient {
        self.client_with_init_data(attester, rsa, None)
    }

    /// A sample-TEE client that sends `init_data_toml`, the sample TEE reporting
    /// its digest as a TEE would carry it from launch.
    pub fn sample_client(
        &self,
        init_data_toml: &str,
        rsa: bool,
    ) -> attester::kbs_client::KbsClient {
        let digest = coco_jose::initdata::Initdata::parse(init_data_toml).unwrap();
        let attester = attester::sample::SampleAttester::reporting(None, Some(digest.digest()));
        self.client_with_init_data(Arc::new(attester), rsa, Some(init_data_toml))
    }

    pub fn client_with_init_data(
        &self,
        attester: Arc<dyn attester::Attester>,
        rsa: bool,
        init_data_toml: Option<&str>,
    ) -> attester::kbs_client::KbsClient {
        attester::kbs_client::KbsClient::new(
            &self.url,
            attester,
            attester::kbs_client::ClientOptions {
                ca_pem: Some(self.ca_pem.clone()),
                init_data_toml: init_data_toml.map(str::to_owned),
                key_kind: if rsa {
                    attester::kbs_client::TeeKeyKind::Rsa
                } else {
                    attester::kbs_client::TeeKeyKind::Ec
                },
                timeout: None,
            },
        )
        .unwrap()
    }

    /// An admin call; returns the status code.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> u16 {
        self.http()
            .request(method, format!("{}/kbs/v0/{path}", self.url))
            .bearer_auth(self.admin_token())
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn set_resource(&self, path: &str, value: &[u8]) {
        let s = self
            .admin(
                reqwest::Method::POST,
                &format!("resource/{path}"),
                value.to_vec(),
            )
            .await;
        assert_eq!(s, 200, "set resource {path}");
    }

    /// Registers exactly these initdata documents (reference value
    /// `init_data_digest`).
    pub async fn register_init_data(&self, tomls: &[&str]) {
        let digests: Vec<String> = tomls
            .iter()
            .map(|t| {
                coco_jose::initdata::Initdata::parse(t)
                    .unwrap()
                    .digest_hex()
            })
            .collect();
        let body = serde_json::json!({ coco_jose::initdata::REFERENCE_VALUE: digests });
        let s = self
            .admin(
                reqwest::Method::POST,
                "reference-value",
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(s, 200, "register initdata");
    }

    /// [`ALLOW_SAMPLE`] with [`POD_INIT_DATA`] registered: the sample TEE gets
    /// resources when its client is [`Self::sample_client`] with that initdata.
    pub async fn allow_sample(&self) {
        self.set_resource_policy(ALLOW_SAMPLE).await;
        self.register_init_data(&[POD_INIT_DATA]).await;
    }

    pub async fn set_resource_policy(&self, rego: &str) {
        use base64::Engine;
        let body = serde_json::json!({
            "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rego)
        });
        let s = self
            .admin(
                reqwest::Method::POST,
                "resource-policy",
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(s, 200, "set resource policy");
    }
}

impl Drop for KbsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A resource policy that releases to the sample TEE (tests only: the sample
/// TEE proves nothing) when it is not contraindicated, which the default
/// attestation policy gives it only with a registered initdata.
pub const ALLOW_SAMPLE: &str = r#"package policy
default allow := false
allow if {
    input.tee == "sample"
    input.submods.cpu0["ear.status"] != "contraindicated"
}
"#;

/// The initdata of the tests' pods.
pub const POD_INIT_DATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault ExecProcessRequest := false\\n\"\n";
