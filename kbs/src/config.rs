//! `kbs.toml`: everything the KBS needs, with safe defaults.

use crate::verifier::VerifierConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbsConfig {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve plain HTTP. Only for development behind a TLS-terminating proxy.
    #[serde(default)]
    pub insecure_http: bool,
    /// Certificate chain and key (PEM) for HTTPS. Required unless `insecure_http`.
    pub tls: Option<TlsConfig>,
    /// Where resources, policies, reference values and the token key live.
    pub state_dir: PathBuf,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub token: TokenConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub limits: BodyLimits,
    #[serde(default)]
    pub verifiers: VerifierConfig,
    /// Attestation policy id used to appraise evidence.
    #[serde(default = "default_policy_id")]
    pub attestation_policy: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin API is closed (every call 401) unless at least one key is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// SPKI PEM files of the keys (P-256 or Ed25519) whose JWTs are accepted.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// Value the token's `role` claim must have.
    #[serde(default = "default_role")]
    pub role: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Lifetime of a session from `/auth`, in seconds.
    #[serde(default = "default_session_ttl")]
    pub ttl_secs: u64,
    /// Most sessions held at once; `/auth` answers 503 beyond it.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Lifetime of attestation tokens, in seconds.
    #[serde(default = "default_token_ttl")]
    pub ttl_secs: u64,
    /// PKCS#8 PEM P-256 key signing tokens. Default: generated once and kept
    /// in `state_dir` so tokens survive a restart.
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained `/auth` calls per second per client address.
    #[serde(default = "default_rate")]
    pub auth_per_second: f64,
    /// Burst of `/auth` calls a client may make at once.
    #[serde(default = "default_burst")]
    pub auth_burst: f64,
    /// Most client addresses tracked; the oldest idle ones are forgotten first.
    #[serde(default = "default_tracked")]
    pub max_tracked_clients: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyLimits {
    /// Largest `/attest` body (evidence with certificate chains and event logs).
    #[serde(default = "default_attest_limit")]
    pub attest_bytes: usize,
    /// Largest resource an admin may upload.
    #[serde(default = "default_resource_limit")]
    pub resource_bytes: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_policy_id() -> String {
    "default".into()
}
fn default_role() -> String {
    "admin".into()
}
fn default_session_ttl() -> u64 {
    300
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_token_ttl() -> u64 {
    600
}
fn default_rate() -> f64 {
    20.0
}
fn default_burst() -> f64 {
    40.0
}
fn default_tracked() -> usize {
    100_000
}
fn default_attest_limit() -> usize {
    4 << 20
}
fn default_resource_limit() -> usize {
    8 << 20
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ttl_secs: default_session_ttl(),
            max_sessions: default_max_sessions(),
        }
    }
}
impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            ttl_secs: default_token_ttl(),
            signing_key: None,
        }
    }
}
impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            auth_per_second: default_rate(),
            auth_burst: default_burst(),
            max_tracked_clients: default_tracked(),
        }
    }
}
impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            attest_bytes: default_attest_limit(),
            resource_bytes: default_resource_limit(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "config {0}: TLS is required; set [tls] cert/key, or insecure_http = true for development"
    )]
    NoTls(PathBuf),
}

impl KbsConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        if cfg.tls.is_none() && !cfg.insecure_http {
            return Err(ConfigError::NoTls(path.to_owned()));
        }
        // Relative paths are relative to the config file, as operators expect.
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.state_dir);
        if let Some(tls) = cfg.tls.as_mut() {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        cfg.admin.public_keys.iter_mut().for_each(fix);
        if let Some(k) = cfg.token.signing_key.as_mut() {
            fix(k);
        }
        Ok(cfg)
    }
}
