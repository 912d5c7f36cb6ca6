//! The ttrpc services: `grpc.AgentService` (every request checked by the policy first)
//! and `grpc.Health`.

mod containers;
mod sandbox;
mod stdio;
mod storages;

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use protobuf::well_known_types::empty::Empty;
use tokio::sync::{mpsc, Mutex};
use ttrpc::r#async::TtrpcContext;

use crate::config::AgentConfig;
use crate::host::Host;
use crate::image::{ImageError, ImageService};
use crate::netlink::{Network, NetworkError};
use crate::policy::{Policy, PolicyError, CONTAINER_NAME_KEY};
use crate::process::{IoError, Process};
use crate::protocols::{agent, agent_ttrpc, csi, health, health_ttrpc, types};
use crate::runtime::{Runtime, RuntimeError};

pub use containers::valid_id;

/// Why a request failed; each maps to one ttrpc status code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Stream(#[from] IoError),
    #[error(transparent)]
    Canonical(#[from] crate::canonical::CanonicalError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    pub fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            AgentError::Policy(PolicyError::Invalid(_)) => Code::INVALID_ARGUMENT,
            AgentError::Policy(_) => Code::PERMISSION_DENIED,
            AgentError::InvalidArgument(_)
            | AgentError::Canonical(_)
            | AgentError::Image(ImageError::BadStorage(_)) => Code::INVALID_ARGUMENT,
            AgentError::NotFound(_) => Code::NOT_FOUND,
            AgentError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            AgentError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            _ => Code::INTERNAL,
        }
    }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        AgentError::Internal(e.to_string())
    }
}

fn to_ttrpc(e: AgentError) -> ttrpc::Error {
    tracing::info!(error = %e, "request failed");
    ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
}

fn unimplemented(name: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(
        ttrpc::Code::UNIMPLEMENTED,
        format!("{name} is not implemented"),
    ))
}

pub(crate) type Result<T> = std::result::Result<T, AgentError>;

/// A container the agent runs.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    /// Its CRI name (annotation `io.kubernetes.cri.container-name`), empty if none.
    pub name: String,
    pub bundle: std::path::PathBuf,
    pub init: Arc<Process>,
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    pub is_sandbox: bool,
    pub oom_watch: Option<tokio::task::JoinHandle<()>>,
    pub storages: Vec<storages::Prepared>,
}

/// The (single) sandbox this agent serves.
#[derive(Debug, Default)]
pub struct Sandbox {
    pub created: bool,
    pub id: String,
    pub hostname: String,
    pub sandbox_pidns: bool,
    pub pause_pid: Option<i32>,
    pub containers: HashMap<String, Arc<Container>>,
    pub storages: Vec<storages::Prepared>,
}

/// The agent: state plus the seams to the OS (runtime, images, network, host).
#[derive(Debug)]
pub struct Agent {
    pub config: AgentConfig,
    pub policy: Arc<Policy>,
    pub runtime: Arc<dyn Runtime>,
    pub images: Option<Arc<dyn ImageService>>,
    pub network: Arc<dyn Network>,
    pub host: Arc<dyn Host>,
    pub sandbox: Mutex<Sandbox>,
    oom_tx: mpsc::UnboundedSender<String>,
    oom_rx: Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        policy: Arc<Policy>,
        runtime: Arc<dyn Runtime>,
        images: Option<Arc<dyn ImageService>>,
        network: Arc<dyn Network>,
        host: Arc<dyn Host>,
    ) -> Self {
        let (oom_tx, oom_rx) = mpsc::unbounded_channel();
        Self {
            config,
            policy,
            runtime,
            images,
            network,
            host,
            sandbox: Mutex::new(Sandbox::default()),
            oom_tx,
            oom_rx: Mutex::new(oom_rx),
        }
    }

    async fn container(&self, cid: &str) -> Result<Arc<Container>> {
        self.sandbox
            .lock()
            .await
            .containers
            .get(cid)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("container {cid}")))
    }

    /// The policy check of a request, with what the agent adds to the input: the target
    /// container's name for ExecProcess and ReadStream (docs/WORKLOAD-POLICY.md).
    async fn check_policy<M: protobuf::MessageFull + Any>(
        &self,
        req: &M,
    ) -> std::result::Result<(), PolicyError> {
        let any: &dyn Any = req;
        let target = if let Some(r) = any.downcast_ref::<agent::ExecProcessRequest>() {
            Some(&r.container_id)
        } else {
            any.downcast_ref::<agent::ReadStreamRequest>()
                .map(|r| &r.container_id)
        };
        let Some(cid) = target else {
            return self.policy.check_request(req);
        };
        let name = self
            .sandbox
            .lock()
            .await
            .containers
            .get(cid)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        self.policy
            .check_request_with(req, &[(CONTAINER_NAME_KEY, regorus::Value::from(name))])
    }

    /// The init process for `exec_id` "" or the init's exec id, else an exec.
    async fn process(&self, cid: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Process>)> {
        let c = self.container(cid).await?;
        if exec_id.is_empty() || exec_id == c.init.exec_id {
            let p = c.init.clone();
            return Ok((c, p));
        }
        let p = c
            .execs
            .lock()
            .await
            .get(exec_id)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("process {exec_id} in {cid}")))?;
        Ok((c, p))
    }
}

/// Generates the `AgentService` impl: implemented RPCs check the policy and call the
/// handler; the rest answer UNIMPLEMENTED with their name.
macro_rules! agent_service {
    (
        implemented: [ $( ($m:ident, $req:ty, $resp:ty) ),* $(,)? ],
        unimplemented: [ $( ($um:ident, $ureq:ty, $uresp:ty, $uname:literal) ),* $(,)? ]
    ) => {
        #[async_trait::async_trait]
        impl agent_ttrpc::AgentService for Agent {
            $(
                async fn $m(&self, _ctx: &TtrpcContext, mut req: $req) -> ttrpc::Result<$resp> {
                    // The policy judges the spelling runc will be given.
                    crate::canonical::request(&mut req).map_err(|e| to_ttrpc(e.into()))?;
                    self.check_policy(&req)
                        .await
                        .map_err(|e| to_ttrpc(e.into()))?;
                    self.$m(req).await.map_err(to_ttrpc)
                }
            )*
            $(
                async fn $um(&self, _ctx: &TtrpcContext, _req: $ureq) -> ttrpc::Result<$uresp> {
                    Err(unimplemented($uname))
                }
            )*
        }
    };
}

agent_service! {
    implemented: [
        (create_container, agent::CreateContainerRequest, Empty),
        (start_container, agent::StartContainerRequest, Empty),
        (remove_container, agent::RemoveContainerRequest, Empty),
        (exec_process, agent::ExecProcessRequest, Empty),
        (signal_process, agent::SignalProcessRequest, Empty),
        (wait_process, agent::WaitProcessRequest, agent::WaitProcessResponse),
        (update_container, agent::UpdateContainerRequest, Empty),
        (stats_container, agent::StatsContainerRequest, agent::StatsContainerResponse),
        (pause_container, agent::PauseContainerRequest, Empty),
        (resume_container, agent::ResumeContainerRequest, Empty),
        (write_stdin, agent::WriteStreamRequest, agent::WriteStreamResponse),
        (read_stdout, agent::ReadStreamRequest, agent::ReadStreamResponse),
        (read_stderr, agent::ReadStreamRequest, agent::ReadStreamResponse),
        (close_stdin, agent::CloseStdinRequest, Empty),
        (tty_win_resize, agent::TtyWinResizeRequest, Empty),
        (update_interface, agent::UpdateInterfaceRequest, types::Interface),
        (update_routes, agent::UpdateRoutesRequest, agent::Routes),
        (add_arp_neighbors, agent::AddARPNeighborsRequest, Empty),
        (create_sandbox, agent::CreateSandboxRequest, Empty),
        (destroy_sandbox, agent::DestroySandboxRequest, Empty),
        (get_guest_details, agent::GuestDetailsRequest, agent::GuestDetailsResponse),
        (copy_file, agent::CopyFileRequest, Empty),
        (get_oom_event, agent::GetOOMEventRequest, agent::OOMEvent),
        (set_policy, agent::SetPolicyRequest, Empty),
    ],
    unimplemented: [
        (update_ephemeral_mounts, agent::UpdateEphemeralMountsRequest, Empty, "UpdateEphemeralMounts"),
        (remove_stale_virtiofs_share_mounts, agent::RemoveStaleVirtiofsShareMountsRequest, Empty, "RemoveStaleVirtiofsShareMounts"),
        (list_interfaces, agent::ListInterfacesRequest, agent::Interfaces, "ListInterfaces"),
        (list_routes, agent::ListRoutesRequest, agent::Routes, "ListRoutes"),
        (get_ip_tables, agent::GetIPTablesRequest, agent::GetIPTablesResponse, "GetIPTables"),
        (set_ip_tables, agent::SetIPTablesRequest, agent::SetIPTablesResponse, "SetIPTables"),
        (get_metrics, agent::GetMetricsRequest, agent::Metrics, "GetMetrics"),
        (online_cpu_mem, agent::OnlineCPUMemRequest, Empty, "OnlineCPUMem"),
        (reseed_random_dev, agent::ReseedRandomDevRequest, Empty, "ReseedRandomDev"),
        (mem_hotplug_by_probe, agent::MemHotplugByProbeRequest, Empty, "MemHotplugByProbe"),
        (set_guest_date_time, agent::SetGuestDateTimeRequest, Empty, "SetGuestDateTime"),
        (add_swap, agent::AddSwapRequest, Empty, "AddSwap"),
        (get_volume_stats, agent::VolumeStatsRequest, csi::VolumeStatsResponse, "GetVolumeStats"),
        (resize_volume, agent::ResizeVolumeRequest, Empty, "ResizeVolume"),
        (add_swap_path, agent::AddSwapPathRequest, Empty, "AddSwapPath"),
        (get_diagnostic_data, agent::GetDiagnosticDataRequest, agent::GetDiagnosticDataResponse, "GetDiagnosticData"),
        (mem_agent_memcg_set, agent::MemAgentMemcgConfig, Empty, "MemAgentMemcgSet"),
        (mem_agent_compact_set, agent::MemAgentCompactConfig, Empty, "MemAgentCompactSet"),
    ]
}

/// `grpc.Health`.
#[derive(Debug, Default)]
pub struct HealthService;

#[async_trait::async_trait]
impl health_ttrpc::Health for HealthService {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: health::CheckRequest,
    ) -> ttrpc::Result<health::HealthCheckResponse> {
        let mut r = health::HealthCheckResponse::new();
        r.status = health::health_check_response::ServingStatus::SERVING.into();
        Ok(r)
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: health::CheckRequest,
    ) -> ttrpc::Result<health::VersionCheckResponse> {
        let mut r = health::VersionCheckResponse::new();
        r.agent_version = env!("CARGO_PKG_VERSION").into();
        r.grpc_version = "ttrpc".into();
        Ok(r)
    }
}

#[cfg(test)]
mod tests;
