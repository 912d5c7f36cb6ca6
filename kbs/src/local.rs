//! A KBS served from the calling process on a free loopback port, with a generated
//! Ed25519 admin key: for tests, benchmarks and demos that need a real KBS next to
//! them without a config file or a second process.

use std::net::TcpListener;

use crate::config::{ConfigError, KbsConfig};
use crate::server::{serve_listener, Kbs, KbsError};

#[derive(Debug, thiserror::Error)]
pub enum LocalKbsError {
    #[error("local KBS: {0}")]
    Io(#[from] std::io::Error),
    #[error("local KBS config: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kbs(#[from] KbsError),
    #[error("local KBS admin key: {0}")]
    AdminKey(String),
}

/// A running in-process KBS; it stops when dropped.
pub struct LocalKbs {
    /// `http(s)://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    /// Admin bearer token (role `admin`, valid for an hour).
    pub admin_token: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for LocalKbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKbs").field("url", &self.url).finish()
    }
}

impl LocalKbs {
    /// Starts on the current tokio runtime: over TLS with `tls` = (certificate chain
    /// PEM, key PEM), else plain HTTP.
    pub fn start(tls: Option<(&str, &str)>) -> Result<Self, LocalKbsError> {
        let dir = tempfile::tempdir()?;
        let admin = coco_jose::jwt::SigningKey::generate_ed25519();
        let admin_pem = admin
            .verifying_key()
            .to_public_key_pem()
            .map_err(|e| LocalKbsError::AdminKey(e.to_string()))?;
        std::fs::write(dir.path().join("admin.pub"), admin_pem)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut toml = format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n[admin]\npublic_keys = [\"admin.pub\"]\n"
        );
        let scheme = match tls {
            Some((cert, key)) => {
                std::fs::write(dir.path().join("tls.crt"), cert)?;
                std::fs::write(dir.path().join("tls.key"), key)?;
                toml.push_str("[tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"\n");
                "https"
            }
            None => {
                toml.insert_str(0, "insecure_http = true\n");
                "http"
            }
        };
        std::fs::write(dir.path().join("kbs.toml"), toml)?;
        let config = KbsConfig::load(&dir.path().join("kbs.toml"))?;
        let server = Kbs::new(config)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_listener(server, listener, async move {
            let _ = stopped.await;
        }));
        let admin_token = admin
            .sign(&serde_json::json!({"role": "admin", "exp": coco_jose::now_secs() + 3600}))
            .map_err(|e| LocalKbsError::AdminKey(e.to_string()))?;
        Ok(Self {
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            admin_token,
            _dir: dir,
            _stop: stop,
        })
    }
}
