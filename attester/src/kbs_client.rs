//! RCAR client: attest to a KBS, keep the token, fetch resources.
//!
//! One handshake per token lifetime: resources are fetched with
//! `Authorization: Bearer <token>` until it (nearly) expires. Only an
//! authentication failure (401) triggers a new handshake, once; a policy
//! denial (403) or a missing resource (404) is reported as is, instead of
//! re-attesting in a loop.

use crate::{Attester, AttesterError};
use coco_jose::jwe::FlattenedJwe;
use coco_jose::keys::TeeKeyPair;
use kbs_types::{Attestation, Challenge, CompositeEvidence, InitData, Request, RuntimeData};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// Protocol version spoken (kbs-types 0.18).
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// A token this close to expiry is not reused.
const TOKEN_MARGIN_SECS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum KbsClientError {
    #[error("cannot reach the KBS: {0}")]
    Http(String),
    #[error("KBS refused {what} ({status} {kind}): {detail}")]
    Refused {
        what: &'static str,
        status: u16,
        kind: String,
        detail: String,
    },
    #[error("unexpected answer from the KBS: {0}")]
    Protocol(String),
    #[error(transparent)]
    Attester(#[from] AttesterError),
    #[error(transparent)]
    Jose(#[from] coco_jose::JoseError),
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl KbsClientError {
    /// HTTP status of a refusal, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Which kind of ephemeral TEE key to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TeeKeyKind {
    #[default]
    Ec,
    /// P-521 (ECDH-ES+A256KW), as guest-components can use.
    Ec521,
    Rsa,
}

/// How to reach the KBS.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// PEM CA certificate(s) the KBS's TLS certificate chains to. Without it,
    /// the Mozilla roots are used.
    pub ca_pem: Option<Vec<u8>>,
    /// Initdata TOML to send with the evidence (and bind into it).
    pub init_data_toml: Option<String>,
    pub key_kind: TeeKeyKind,
    /// Per-request timeout (default 30 s).
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
struct CachedToken {
    token: String,
    exp: u64,
}

/// A client bound to one KBS and one attester, holding one TEE key.
#[derive(Debug)]
pub struct KbsClient {
    http: reqwest::Client,
    base: String,
    attester: Arc<dyn Attester>,
    key: TeeKeyPair,
    init_data: Option<String>,
    token: Mutex<Option<CachedToken>>,
}

/// rustls client configuration (ring provider, HTTP/1.1) trusting `ca_pem`, or the
/// Mozilla roots without it; shared by every KBS client in the workspace.
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, KbsClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| KbsClientError::Tls(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| KbsClientError::Tls(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(KbsClientError::Tls("no certificate in the CA file".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KbsClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The EAR status the KBS put in a token (read for logs only; the KBS verifies it).
fn token_status(token: &str) -> Option<String> {
    token_claims(token)?
        .pointer("/submods/cpu0/ear.status")
        .and_then(|s| s.as_str())
        .map(str::to_owned)
}

/// Read `{"type","detail"}` from an error answer.
async fn refusal(what: &'static str, resp: reqwest::Response) -> KbsClientError {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let (kind, detail) = match serde_json::from_str::<kbs_types::ErrorInformation>(&body) {
        Ok(e) => (
            e.error_type.rsplit('/').next().unwrap_or("").to_owned(),
            e.detail,
        ),
        Err(_) => (String::new(), body),
    };
    KbsClientError::Refused {
        what,
        status,
        kind,
        detail,
    }
}

fn http_err(e: reqwest::Error) -> KbsClientError {
    KbsClientError::Http(e.to_string())
}

/// The challenge may name the hash algorithm of the binding (Trustee's KBS does
/// for IBM SE, and answers `""` or `{}` otherwise). Anything but SHA-384 is
/// refused here rather than producing evidence the KBS cannot match.
fn check_selected_hash(extra: &serde_json::Value) -> Result<(), KbsClientError> {
    match extra.get(coco_jose::binding::SELECTED_HASH_ALGORITHM) {
        None => Ok(()),
        Some(serde_json::Value::String(s))
            if s.eq_ignore_ascii_case(coco_jose::binding::BINDING_HASH_ALGORITHM) =>
        {
            Ok(())
        }
        Some(other) => Err(KbsClientError::Protocol(format!(
            "the KBS selected hash algorithm {other}; this attester binds only sha384"
        ))),
    }
}

impl KbsClient {
    /// A client for the KBS at `url` (e.g. `https://kbs.example:8080`).
    pub fn new(
        url: &str,
        attester: Arc<dyn Attester>,
        opts: ClientOptions,
    ) -> Result<Self, KbsClientError> {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .timeout(opts.timeout.unwrap_or(Duration::from_secs(30)))
            .tls_backend_preconfigured(tls_config(opts.ca_pem.as_deref())?)
            .build()
            .map_err(http_err)?;
        let key = match opts.key_kind {
            TeeKeyKind::Ec => TeeKeyPair::generate_ec(),
            TeeKeyKind::Ec521 => TeeKeyPair::generate_ec521(),
            TeeKeyKind::Rsa => TeeKeyPair::generate_rsa()?,
        };
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            attester,
            key,
            init_data: opts.init_data_toml,
            token: Mutex::new(None),
        })
    }

    /// Run the full RCAR handshake and return the attestation token.
    pub async fn attest(&self) -> Result<String, KbsClientError> {
        let mut cached = self.token.lock().await;
        let token = self.handshake().await?;
        let exp = token_exp(&token).unwrap_or(0);
        *cached = Some(CachedToken {
            token: token.clone(),
            exp,
        });
        Ok(token)
    }

    async fn handshake(&self) -> Result<String, KbsClientError> {
        let started = std::time::Instant::now();
        let tee = self.attester.tee();
        let req = Request {
            version: PROTOCOL_VERSION.into(),
            tee,
            // As guest-components' client does; we can only bind SHA-384.
            extra_params: serde_json::json!({
                coco_jose::binding::SUPPORTED_HASH_ALGORITHMS:
                    [coco_jose::binding::BINDING_HASH_ALGORITHM],
            }),
        };
        let resp = self
            .http
            .post(format!("{}/kbs/v0/auth", self.base))
            .json(&req)
            .send()
            .await
            .map_err(http_err)?;
        if !resp.status().is_success() {
            return Err(refusal("auth", resp).await);
        }
        let challenge: Challenge = resp
            .json()
            .await
            .map_err(|e| KbsClientError::Protocol(format!("challenge: {e}")))?;

        check_selected_hash(&challenge.extra_params)?;
        let tee_pubkey = self.key.public_jwk();
        let report_data = coco_jose::binding::runtime_data_hash(&challenge.nonce, &tee_pubkey, "")?;
        let attester = self.attester.clone();
        let evidence_started = std::time::Instant::now();
        let evidence = tokio::task::spawn_blocking(move || attester.evidence(&report_data))
            .await
            .map_err(|e| KbsClientError::Protocol(e.to_string()))??;
        let evidence_ms = evidence_started.elapsed().as_millis();
        let attestation = Attestation {
            init_data: self.init_data.as_ref().map(|body| InitData {
                format: "toml".into(),
                body: body.clone(),
            }),
            runtime_data: RuntimeData {
                nonce: challenge.nonce,
                tee_pubkey,
            },
            tee_evidence: CompositeEvidence {
                primary_evidence: evidence,
                additional_evidence: String::new(),
            },
        };
        let resp = self
            .http
            .post(format!("{}/kbs/v0/attest", self.base))
            .json(&attestation)
            .send()
            .await
            .map_err(http_err)?;
        if !resp.status().is_success() {
            return Err(refusal("attest", resp).await);
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| KbsClientError::Protocol(format!("attest answer: {e}")))?;
        let token = body
            .get("token")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| KbsClientError::Protocol("attest answer has no token".into()))?;
        tracing::info!(
            tee = ?self.attester.tee(),
            status = token_status(&token).as_deref().unwrap_or("?"),
            evidence_ms,
            handshake_ms = started.elapsed().as_millis(),
            "attested to the KBS"
        );
        Ok(token)
    }

    /// A valid token: the cached one, or a fresh handshake.
    async fn token(&self, force: bool) -> Result<String, KbsClientError> {
        {
            let cached = self.token.lock().await;
            if let Some(c) = cached.as_ref() {
                if !force && c.exp > coco_jose::now_secs() + TOKEN_MARGIN_SECS {
                    return Ok(c.token.clone());
                }
            }
        }
        self.attest().await
    }

    /// Fetch and decrypt the resource at `repo/type/tag` (a `kbs:///repo/type/tag`
    /// URI is accepted too).
    pub async fn get_resource(&self, path: &str) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        let path = path.trim_start_matches("kbs:///").trim_start_matches('/');
        let mut token = self.token(false).await?;
        for attempt in 0..2 {
            let resp = self
                .http
                .get(format!("{}/kbs/v0/resource/{path}", self.base))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(http_err)?;
            if !resp.status().is_success() {
                let err = refusal("resource", resp).await;
                // 401 is both "token refused" and, as on Trustee's KBS, "policy
                // denies": only the first is worth one new handshake.
                if let KbsClientError::Refused {
                    status: 401, kind, ..
                } = &err
                {
                    if attempt == 0 && kind != "PolicyDeny" {
                        tracing::debug!(%kind, "token refused; attesting again");
                        token = self.token(true).await?;
                        continue;
                    }
                }
                return Err(err);
            }
            let jwe: FlattenedJwe = resp
                .json()
                .await
                .map_err(|e| KbsClientError::Protocol(format!("resource answer: {e}")))?;
            return Ok(coco_jose::jwe::decrypt(&jwe, &self.key)?);
        }
        Err(KbsClientError::Protocol("unreachable retry state".into()))
    }
}

/// `exp` of a JWT, read without verification (only to decide when to renew;
/// the KBS verifies the token on every use).
fn token_exp(token: &str) -> Option<u64> {
    token_claims(token)?.get("exp")?.as_u64()
}

/// A JWT's claims, unverified: the client only schedules and logs with them.
fn token_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}
