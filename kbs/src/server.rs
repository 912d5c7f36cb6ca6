//! The KBS process: state, routes, TLS, housekeeping.

use crate::attestation::{AsError, AttestationService};
use crate::config::KbsConfig;
use crate::metrics::Metrics;
use crate::policy::{CompiledPolicy, PolicyError};
use crate::ratelimit::RateLimiter;
use crate::session::SessionStore;
use crate::storage::{FsStore, Key, Store, StoreError};
use crate::token::{TokenError, TokenIssuer};
use crate::verifier::{VerifierError, Verifiers};
use crate::{admin, rcar};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::Router;
use coco_jose::jwt::VerifyingKey;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Built-in resource policy, used until an admin sets one.
pub const DEFAULT_RESOURCE_POLICY: &str = include_str!("../policies/resource/default.rego");

#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Attestation(#[from] AsError),
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("resource policy: {0}")]
    ResourcePolicy(#[from] PolicyError),
    #[error("admin key {path}: {why}")]
    AdminKey { path: String, why: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Kbs {
    pub config: KbsConfig,
    pub store: Arc<dyn Store>,
    pub sessions: SessionStore,
    pub limiter: RateLimiter,
    pub attestation: AttestationService,
    pub tokens: TokenIssuer,
    pub resource_policy: RwLock<CompiledPolicy>,
    pub admin_keys: Vec<VerifyingKey>,
    pub metrics: Metrics,
}

impl Kbs {
    pub fn new(config: KbsConfig) -> Result<Arc<Self>, KbsError> {
        let store: Arc<dyn Store> = Arc::new(FsStore::open(&config.state_dir)?);
        let verifiers = Verifiers::from_config(&config.verifiers)?;
        let attestation =
            AttestationService::new(verifiers, store.clone(), &config.attestation_policy)?;
        let tokens = TokenIssuer::load(
            config.token.signing_key.as_deref(),
            store.as_ref(),
            Duration::from_secs(config.token.ttl_secs),
        )?;
        let policy_src = match store.get(&Key::ResourcePolicy)? {
            Some(raw) => String::from_utf8_lossy(&raw).into_owned(),
            None => DEFAULT_RESOURCE_POLICY.to_owned(),
        };
        let resource_policy = compile_resource_policy(&policy_src)?;
        let mut admin_keys = Vec::new();
        for path in &config.admin.public_keys {
            let err = |why: String| KbsError::AdminKey {
                path: path.display().to_string(),
                why,
            };
            let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            admin_keys
                .push(VerifyingKey::from_public_key_pem(&pem).map_err(|e| err(e.to_string()))?);
        }
        if admin_keys.is_empty() {
            tracing::warn!("no admin public key configured: the admin API is closed");
        }
        Ok(Arc::new(Self {
            sessions: SessionStore::new(
                Duration::from_secs(config.session.ttl_secs),
                config.session.max_sessions,
            ),
            limiter: RateLimiter::new(
                config.rate_limit.auth_per_second,
                config.rate_limit.auth_burst,
                config.rate_limit.max_tracked_clients,
            ),
            attestation,
            tokens,
            resource_policy: RwLock::new(resource_policy),
            admin_keys,
            metrics: Metrics::default(),
            store,
            config,
        }))
    }

    /// The current resource policy (cheap clone of a compiled engine).
    pub fn resource_policy(&self) -> CompiledPolicy {
        self.resource_policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub fn compile_resource_policy(src: &str) -> Result<CompiledPolicy, PolicyError> {
    CompiledPolicy::compile(
        &[("resource.rego".to_owned(), src.to_owned())],
        &serde_json::json!({}),
    )
}

/// All routes of the KBS.
pub fn router(kbs: Arc<Kbs>) -> Router {
    let limits = &kbs.config.limits;
    Router::new()
        .route(
            "/kbs/v0/auth",
            post(rcar::auth).layer(DefaultBodyLimit::max(64 << 10)),
        )
        .route(
            "/kbs/v0/attest",
            post(rcar::attest).layer(DefaultBodyLimit::max(limits.attest_bytes)),
        )
        .route(
            "/kbs/v0/resource/{*path}",
            get(rcar::resource)
                .post(admin::set_resource)
                .delete(admin::delete_resource)
                .layer(DefaultBodyLimit::max(limits.resource_bytes)),
        )
        .route(
            "/kbs/v0/resource-policy",
            post(admin::set_resource_policy)
                .get(admin::get_resource_policy)
                .layer(DefaultBodyLimit::max(1 << 20)),
        )
        .route(
            "/kbs/v0/attestation-policy",
            post(admin::set_attestation_policy).layer(DefaultBodyLimit::max(1 << 20)),
        )
        .route(
            "/kbs/v0/attestation-policy/{id}",
            get(admin::get_attestation_policy),
        )
        .route(
            "/kbs/v0/reference-value",
            post(admin::set_reference_value)
                .get(admin::get_reference_values)
                .layer(DefaultBodyLimit::max(1 << 20)),
        )
        .route(
            "/kbs/v0/reference-value/{id}",
            get(admin::get_reference_value),
        )
        .route("/kbs/v0/token-certificate", get(token_key))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(kbs)
}

async fn metrics(State(kbs): State<Arc<Kbs>>) -> String {
    kbs.metrics.render(kbs.sessions.len())
}

/// The public key that verifies our tokens, for relying parties.
async fn token_key(State(kbs): State<Arc<Kbs>>) -> Result<String, crate::error::ApiError> {
    kbs.tokens
        .verifying_key()
        .to_public_key_pem()
        .map_err(crate::error::ApiError::internal)
}

fn tls_config(kbs: &Kbs) -> Result<Option<Arc<rustls::ServerConfig>>, KbsError> {
    let Some(tls) = &kbs.config.tls else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| KbsError::Tls(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(&tls.cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KbsError::Tls(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut read(&tls.key)?.as_slice())
        .map_err(|e| KbsError::Tls(e.to_string()))?
        .ok_or_else(|| KbsError::Tls(format!("no private key in {}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KbsError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| KbsError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// Bind `listen` from the config, print the address, and serve until
/// `shutdown` resolves.
pub async fn serve(
    kbs: Arc<Kbs>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), KbsError> {
    let addr = kbs.config.listen;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| KbsError::Listen { addr, source })?;
    serve_listener(kbs, listener, shutdown).await
}

/// Serve on an already bound listener (embedders and tests that need the
/// port before the server runs).
pub async fn serve_listener(
    kbs: Arc<Kbs>,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), KbsError> {
    let addr = kbs.config.listen;
    let local = listener
        .local_addr()
        .map_err(|source| KbsError::Listen { addr, source })?;
    let tls = tls_config(&kbs)?;
    if tls.is_none() && !kbs.config.insecure_http {
        return Err(KbsError::Tls(
            "no [tls] configured and insecure_http is false".into(),
        ));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to learn the port when listen uses port 0.
    println!("kbs listening on {scheme}://{local}");
    tracing::info!(%local, scheme, "KBS started");

    // Housekeeping: expired sessions go even when nobody calls /auth.
    let sweeper = {
        let kbs = kbs.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                kbs.sessions.sweep();
            }
        })
    };

    let app = router(kbs).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        });
    }
    // TCP_NODELAY: RCAR is small request/response pairs; without it a
    // delayed ACK adds ~40 ms to a share of handshakes.
    let nodelay = axum_server::accept::NoDelayAcceptor::new();
    let server =
        axum_server::from_tcp(listener).map_err(|source| KbsError::Listen { addr, source })?;
    let result = match tls {
        Some(cfg) => {
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(
                axum_server::tls_rustls::RustlsConfig::from_config(cfg),
            )
            .acceptor(nodelay);
            server.acceptor(tls).handle(handle).serve(app).await
        }
        None => server.acceptor(nodelay).handle(handle).serve(app).await,
    };
    sweeper.abort();
    result.map_err(|source| KbsError::Listen { addr, source })
}
