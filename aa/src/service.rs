//! ttrpc services: `attestation_agent.AttestationAgentService` and
//! `keyprovider.KeyProviderService`. Every request failure becomes a ttrpc
//! status; nothing a caller sends can stop the service.

use std::sync::Arc;

use attester::kbs_client::{KbsClient, KbsClientError};
use attester::Attester;
use image_mgmt::keybroker::kbs_resource_path;
use image_mgmt::ocicrypt::bytes::AnyBytes;
use image_mgmt::ocicrypt::keyprovider::{
    AnnotationPacket, KeyProviderInput, KeyUnwrapOutput, KeyUnwrapResults,
};
use sha2::{Digest, Sha384};
use ttrpc::r#async::TtrpcContext;
use ttrpc::Code;

use crate::protocols::{attestation_agent as aa, attestation_agent_ttrpc as aa_ttrpc};
use crate::protocols::{keyprovider as kp, keyprovider_ttrpc as kp_ttrpc};

/// Why a request failed; each maps to one ttrpc status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    #[error("KBS denied the request: {0}")]
    Denied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("KBS unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("not implemented: {0}")]
    Unimplemented(&'static str),
}

impl ServiceError {
    fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Self::NotConfigured(_) => Code::FAILED_PRECONDITION,
            Self::Denied(_) => Code::PERMISSION_DENIED,
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::Unavailable(_) => Code::UNAVAILABLE,
            Self::Internal(_) => Code::INTERNAL,
            Self::Unimplemented(_) => Code::UNIMPLEMENTED,
        }
    }
}

impl From<KbsClientError> for ServiceError {
    fn from(e: KbsClientError) -> Self {
        match e.status() {
            Some(401 | 403) => Self::Denied(e.to_string()),
            Some(404) => Self::NotFound(e.to_string()),
            _ => match e {
                KbsClientError::Http(_) => Self::Unavailable(e.to_string()),
                other => Self::Internal(other.to_string()),
            },
        }
    }
}

fn status(method: &str, e: ServiceError) -> ttrpc::Error {
    tracing::warn!(method, error = %e, "request failed");
    let msg = match &e {
        ServiceError::Unimplemented(why) => format!("{method} is not implemented: {why}"),
        other => other.to_string(),
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), msg))
}

/// The agent's state: one attester, and the KBS client if a KBS is configured.
#[derive(Debug, Clone)]
pub struct AttestationAgent {
    attester: Arc<dyn Attester>,
    kbs: Option<Arc<KbsClient>>,
}

impl AttestationAgent {
    pub fn new(attester: Arc<dyn Attester>, kbs: Option<KbsClient>) -> Self {
        Self {
            attester,
            kbs: kbs.map(Arc::new),
        }
    }

    fn kbs(&self) -> Result<&KbsClient, ServiceError> {
        self.kbs
            .as_deref()
            .ok_or(ServiceError::NotConfigured("no KBS URL (--kbs-url)"))
    }

    /// Evidence JSON bound to `SHA-384(runtime_data)` (the 48-byte report data
    /// every attester takes).
    pub async fn evidence(&self, runtime_data: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let report_data: [u8; 48] = Sha384::digest(runtime_data).into();
        let attester = self.attester.clone();
        // Evidence collection is a blocking device call (ioctl, TPM).
        let ev = tokio::task::spawn_blocking(move || attester.evidence(&report_data))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        serde_json::to_vec(&ev).map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// A token of `token_type`; only `kbs` (RCAR attestation) is served.
    pub async fn token(&self, token_type: &str) -> Result<Vec<u8>, ServiceError> {
        if token_type != "kbs" {
            return Err(ServiceError::InvalidArgument(format!(
                "token type {token_type:?} is not supported (only \"kbs\")"
            )));
        }
        Ok(self.kbs()?.attest().await?.into_bytes())
    }

    /// The KBS resource at `kbs:///repo/type/tag` or `repo/type/tag`.
    pub async fn resource(&self, path: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, ServiceError> {
        let uri = if path.starts_with("kbs://") {
            path.to_owned()
        } else {
            format!("kbs:///{path}")
        };
        let path =
            kbs_resource_path(&uri).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        Ok(self.kbs()?.get_resource(&path).await?)
    }

    /// Answers an ocicrypt keyprovider `keyunwrap` request: the KEK is the KBS
    /// resource named by the annotation's `kid`.
    pub async fn unwrap_key(&self, input: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let bad = ServiceError::InvalidArgument;
        let req: KeyProviderInput =
            serde_json::from_slice(input).map_err(|e| bad(format!("keyprovider request: {e}")))?;
        if req.op != "keyunwrap" {
            return Err(bad(format!(
                "keyprovider op {:?} is not served (only keyunwrap)",
                req.op
            )));
        }
        let ann = req
            .keyunwrapparams
            .and_then(|p| p.annotation)
            .ok_or_else(|| bad("keyunwrap without annotation".into()))?;
        let packet = AnnotationPacket::parse(&ann.bytes).map_err(|e| bad(e.to_string()))?;
        let kek = self.resource(&packet.kid).await?;
        let opts = packet.unwrap(&kek).map_err(|e| bad(e.to_string()))?;
        serde_json::to_vec(&KeyUnwrapOutput {
            keyunwrapresults: KeyUnwrapResults {
                // Answer in the caller's byte encoding (Go base64 or Rust array).
                optsdata: AnyBytes::with_style(opts.to_vec(), ann.was_array),
            },
        })
        .map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

#[async_trait::async_trait]
impl aa_ttrpc::AttestationAgentService for AttestationAgent {
    async fn get_evidence(
        &self,
        _ctx: &TtrpcContext,
        req: aa::GetEvidenceRequest,
    ) -> ttrpc::Result<aa::GetEvidenceResponse> {
        let evidence = self
            .evidence(&req.RuntimeData)
            .await
            .map_err(|e| status("GetEvidence", e))?;
        Ok(aa::GetEvidenceResponse {
            Evidence: evidence,
            ..Default::default()
        })
    }

    async fn get_token(
        &self,
        _ctx: &TtrpcContext,
        req: aa::GetTokenRequest,
    ) -> ttrpc::Result<aa::GetTokenResponse> {
        let token = self
            .token(&req.TokenType)
            .await
            .map_err(|e| status("GetToken", e))?;
        Ok(aa::GetTokenResponse {
            Token: token,
            ..Default::default()
        })
    }

    // Facts from guest-components' attestation agent (attestation-agent/src/lib.rs and
    // src/bin/ttrpc_dep/server.rs @8246e5e): without additional attesters the additional
    // evidence is empty; without an event log a runtime measurement is NOT_ENABLED; the
    // TEE type is the kbs-types serde name without quotes.
    async fn get_additional_evidence(
        &self,
        _ctx: &TtrpcContext,
        _req: aa::GetAdditionalEvidenceRequest,
    ) -> ttrpc::Result<aa::GetEvidenceResponse> {
        Ok(aa::GetEvidenceResponse::default())
    }

    async fn extend_runtime_measurement(
        &self,
        _ctx: &TtrpcContext,
        _req: aa::ExtendRuntimeMeasurementRequest,
    ) -> ttrpc::Result<aa::ExtendRuntimeMeasurementResponse> {
        Ok(aa::ExtendRuntimeMeasurementResponse {
            Result: aa::RuntimeMeasurementResult::NOT_ENABLED.into(),
            ..Default::default()
        })
    }

    async fn bind_init_data(
        &self,
        _ctx: &TtrpcContext,
        _req: aa::BindInitDataRequest,
    ) -> ttrpc::Result<aa::BindInitDataResponse> {
        // The initdata is bound once, at start (`--init-data`), and checked against the
        // TEE there; a later caller must not re-bind it.
        Err(status(
            "BindInitData",
            ServiceError::Unimplemented("initdata is bound when the agent starts"),
        ))
    }

    async fn get_tee_type(
        &self,
        _ctx: &TtrpcContext,
        _req: aa::GetTeeTypeRequest,
    ) -> ttrpc::Result<aa::GetTeeTypeResponse> {
        let tee = serde_json::to_value(self.attester.tee())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| {
                status(
                    "GetTeeType",
                    ServiceError::Internal("TEE has no name".into()),
                )
            })?;
        Ok(aa::GetTeeTypeResponse {
            tee,
            ..Default::default()
        })
    }

    async fn get_additional_tees(
        &self,
        _ctx: &TtrpcContext,
        _req: aa::GetAdditionalTeesRequest,
    ) -> ttrpc::Result<aa::GetAdditionalTeesResponse> {
        Ok(aa::GetAdditionalTeesResponse::default())
    }

    async fn get_resource(
        &self,
        _ctx: &TtrpcContext,
        req: aa::GetResourceRequest,
    ) -> ttrpc::Result<aa::GetResourceResponse> {
        let resource = self
            .resource(&req.ResourcePath)
            .await
            .map_err(|e| status("GetResource", e))?;
        Ok(aa::GetResourceResponse {
            Resource: resource.to_vec(),
            ..Default::default()
        })
    }
}

#[async_trait::async_trait]
impl kp_ttrpc::KeyProviderService for AttestationAgent {
    async fn wrap_key(
        &self,
        _ctx: &TtrpcContext,
        _req: kp::KeyProviderKeyWrapProtocolInput,
    ) -> ttrpc::Result<kp::KeyProviderKeyWrapProtocolOutput> {
        // Images are encrypted by their owners, never inside the guest.
        Err(status(
            "WrapKey",
            ServiceError::Unimplemented("the guest only unwraps keys"),
        ))
    }

    async fn un_wrap_key(
        &self,
        _ctx: &TtrpcContext,
        req: kp::KeyProviderKeyWrapProtocolInput,
    ) -> ttrpc::Result<kp::KeyProviderKeyWrapProtocolOutput> {
        let out = self
            .unwrap_key(&req.KeyProviderKeyWrapProtocolInput)
            .await
            .map_err(|e| status("UnWrapKey", e))?;
        Ok(kp::KeyProviderKeyWrapProtocolOutput {
            KeyProviderKeyWrapProtocolOutput: out,
            ..Default::default()
        })
    }
}

/// Binds `socket` (removing a stale socket file) and starts serving both services.
pub async fn serve(
    agent: AttestationAgent,
    socket: &std::path::Path,
) -> Result<ttrpc::r#async::Server, ServiceError> {
    let io = |e: std::io::Error| ServiceError::Internal(format!("{}: {e}", socket.display()));
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let agent = Arc::new(agent);
    let mut server = ttrpc::r#async::Server::new()
        .bind(&format!("unix://{}", socket.display()))
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .register_service(aa_ttrpc::create_attestation_agent_service(agent.clone()))
        .register_service(kp_ttrpc::create_key_provider_service(agent));
    server
        .start()
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    tracing::info!(socket = %socket.display(), "attestation agent listening");
    Ok(server)
}
