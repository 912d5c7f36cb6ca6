//! The ttrpc server: `grpc.AgentService` + `grpc.Health` on `vsock://` or `unix://`.

use std::sync::Arc;

use crate::protocols::{agent_ttrpc, health_ttrpc};
use crate::rpc::{Agent, HealthService};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bad server address {0:?}: use vsock://CID:PORT or unix://PATH")]
    Address(String),
    #[error("ttrpc: {0}")]
    Ttrpc(#[from] ttrpc::Error),
}

/// Builds a started server for `agent` listening on `addr`; keep it alive to serve.
pub async fn start(agent: Arc<Agent>, addr: &str) -> Result<ttrpc::r#async::Server, ServerError> {
    if !(addr.starts_with("vsock://") || addr.starts_with("unix://")) {
        return Err(ServerError::Address(addr.into()));
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        // A stale socket from an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
    }
    let mut server = ttrpc::r#async::Server::new()
        .bind(addr)?
        .register_service(agent_ttrpc::create_agent_service(agent))
        .register_service(health_ttrpc::create_health(Arc::new(HealthService)));
    server.start().await?;
    tracing::info!(addr, "agent listening");
    Ok(server)
}
