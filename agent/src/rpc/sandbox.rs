//! Sandbox-wide requests: create/destroy, guest details, CopyFile, policy, network.

use protobuf::well_known_types::empty::Empty;

use super::{Agent, AgentError, Result};
use crate::protocols::{agent, types};

impl Agent {
    pub(super) async fn create_sandbox(&self, req: agent::CreateSandboxRequest) -> Result<Empty> {
        let mut sb = self.sandbox.lock().await;
        if sb.created {
            return Err(AgentError::AlreadyExists("sandbox".into()));
        }
        if !req.sandbox_id.is_empty() && !super::valid_id(&req.sandbox_id) {
            return Err(AgentError::InvalidArgument(format!(
                "bad sandbox id {:?}",
                req.sandbox_id
            )));
        }
        for m in &req.kernel_modules {
            self.host
                .load_module(&m.name, &m.parameters)
                .await
                .map_err(|e| AgentError::Internal(format!("module {}: {e}", m.name)))?;
        }
        if !req.hostname.is_empty() {
            self.host.set_hostname(&req.hostname)?;
        }
        self.host.set_dns(&req.dns)?;
        std::fs::create_dir_all(self.config.state_dir.join("containers"))?;
        sb.storages = self.prepare_storages(&req.storages)?;
        sb.created = true;
        sb.id = req.sandbox_id.clone();
        sb.hostname = req.hostname.clone();
        sb.sandbox_pidns = req.sandbox_pidns;
        tracing::info!(sandbox = %sb.id, "sandbox created");
        Ok(Empty::new())
    }

    pub(super) async fn destroy_sandbox(
        &self,
        _req: agent::DestroySandboxRequest,
    ) -> Result<Empty> {
        let (containers, storages): (Vec<_>, _) = {
            let mut sb = self.sandbox.lock().await;
            let c = sb.containers.drain().map(|(_, c)| c).collect();
            let s = std::mem::take(&mut sb.storages);
            *sb = Default::default();
            (c, s)
        };
        // App containers first, the pause container last.
        let (pause, apps): (Vec<_>, Vec<_>) = containers.into_iter().partition(|c| c.is_sandbox);
        let mut first_err = None;
        for c in apps.iter().chain(pause.iter()) {
            if let Err(e) = self.destroy_container(c, 10).await {
                tracing::error!(cid = %c.id, "destroy: {e}");
                first_err.get_or_insert(e);
            }
        }
        self.release_storages(&storages);
        if self.host.is_init() {
            let host = self.host.clone();
            // Let the reply reach the shim before the VM goes away.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                host.power_off();
            });
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(Empty::new()),
        }
    }

    pub(super) async fn get_guest_details(
        &self,
        req: agent::GuestDetailsRequest,
    ) -> Result<agent::GuestDetailsResponse> {
        let mut r = agent::GuestDetailsResponse::new();
        if req.mem_block_size {
            r.mem_block_size_bytes =
                std::fs::read_to_string("/sys/devices/system/memory/block_size_bytes")
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                    .unwrap_or(0);
        }
        if req.mem_hotplug_probe {
            r.support_mem_hotplug_probe =
                std::path::Path::new("/sys/devices/system/memory/probe").exists();
        }
        let mut d = agent::AgentDetails::new();
        d.version = env!("CARGO_PKG_VERSION").into();
        d.init_daemon = std::process::id() == 1;
        d.storage_handlers = vec![crate::image::GUEST_PULL_DRIVER.into()];
        d.supports_seccomp = true;
        r.agent_details = Some(d).into();
        Ok(r)
    }

    pub(super) async fn copy_file(&self, req: agent::CopyFileRequest) -> Result<Empty> {
        // Whatever the policy says, the host never writes into container bundles and
        // image rootfs (they hold what attestation vouched for) or runc's state.
        let p = std::path::Path::new(&req.path);
        let protected = [
            self.config.state_dir.join("containers"),
            self.config.runc_root.clone(),
            self.config.pause_bundle.clone(),
        ];
        if protected.iter().any(|d| p.starts_with(d)) {
            return Err(AgentError::InvalidArgument(format!(
                "CopyFile into {} is not allowed",
                req.path
            )));
        }
        crate::copyfile::copy_file(&self.config.copy_root, self.config.copy_max_size, &req)
            .map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
        Ok(Empty::new())
    }

    /// The current policy already allowed this request (checked before dispatch).
    pub(super) async fn set_policy(&self, req: agent::SetPolicyRequest) -> Result<Empty> {
        self.policy.replace(&req.policy)?;
        tracing::info!("policy replaced");
        Ok(Empty::new())
    }

    pub(super) async fn update_interface(
        &self,
        req: agent::UpdateInterfaceRequest,
    ) -> Result<types::Interface> {
        let iface = req
            .interface
            .as_ref()
            .ok_or_else(|| AgentError::InvalidArgument("no interface".into()))?;
        Ok(self.network.update_interface(iface).await?)
    }

    pub(super) async fn update_routes(
        &self,
        req: agent::UpdateRoutesRequest,
    ) -> Result<agent::Routes> {
        let routes = req
            .routes
            .as_ref()
            .map(|r| r.Routes.clone())
            .unwrap_or_default();
        let mut r = agent::Routes::new();
        r.Routes = self.network.update_routes(&routes).await?;
        Ok(r)
    }

    pub(super) async fn add_arp_neighbors(
        &self,
        req: agent::AddARPNeighborsRequest,
    ) -> Result<Empty> {
        let n = req
            .neighbors
            .as_ref()
            .map(|n| n.ARPNeighbors.clone())
            .unwrap_or_default();
        self.network.add_arp_neighbors(&n).await?;
        Ok(Empty::new())
    }
}
