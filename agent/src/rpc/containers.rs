//! Container lifecycle: create, start, exec, wait, signal, remove, update, stats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::well_known_types::empty::Empty;
use tokio::sync::Mutex;

use super::{Agent, AgentError, Container, Result};
use crate::image;
use crate::policy::CONTAINER_NAME_ANNOTATION;
use crate::process::{self, Process};
use crate::protocols::agent;
use crate::spec;

/// How long (in 100 ms polls) an exited exec is kept for its output to be read.
const EXEC_DRAIN_POLLS: u32 = 300;

/// How long the runtime has to hand over a terminal.
const CONSOLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn tty_parent(
    master: tokio::task::JoinHandle<std::io::Result<std::os::fd::OwnedFd>>,
) -> Result<process::ParentIo> {
    let fd = master
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))??;
    Ok(process::tty_io(fd)?)
}

/// Container and exec ids become path components and runc names: keep them plain.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

fn check_id(what: &str, id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(AgentError::InvalidArgument(format!("bad {what} {id:?}")))
    }
}

impl Agent {
    fn bundle_dir(&self, cid: &str) -> PathBuf {
        self.config.state_dir.join("containers").join(cid)
    }

    pub(super) async fn create_container(
        &self,
        req: agent::CreateContainerRequest,
    ) -> Result<Empty> {
        let cid = req.container_id.clone();
        check_id("container id", &cid)?;
        let exec_id = if req.exec_id.is_empty() {
            cid.clone()
        } else {
            req.exec_id.clone()
        };
        check_id("exec id", &exec_id)?;
        let (pause_pid, sandbox_pidns) = {
            let sb = self.sandbox.lock().await;
            if !sb.created {
                return Err(AgentError::FailedPrecondition("no sandbox yet".into()));
            }
            if sb.containers.contains_key(&cid) {
                return Err(AgentError::AlreadyExists(format!("container {cid}")));
            }
            (sb.pause_pid, sb.sandbox_pidns)
        };
        let mut oci = req
            .OCI
            .as_ref()
            .cloned()
            .ok_or_else(|| AgentError::InvalidArgument("no OCI spec".into()))?;
        let bundle = self.bundle_dir(&cid);
        if let Some(parent) = bundle.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Atomic: of two concurrent creates of one id, exactly one gets the bundle.
        std::fs::create_dir(&bundle).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                AgentError::AlreadyExists(format!("bundle of {cid}"))
            }
            _ => e.into(),
        })?;
        let r = self
            .prepare_and_create(
                &req,
                &cid,
                &exec_id,
                &bundle,
                &mut oci,
                pause_pid,
                sandbox_pidns,
            )
            .await;
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&bundle);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare_and_create(
        &self,
        req: &agent::CreateContainerRequest,
        cid: &str,
        exec_id: &str,
        bundle: &Path,
        oci: &mut crate::protocols::oci::Spec,
        pause_pid: Option<i32>,
        sandbox_pidns: bool,
    ) -> Result<Empty> {
        let pull = image::guest_pull(&req.storages)?;
        let prepared = self.prepare_storages(&req.storages)?;
        let r = self
            .create_with_storages(
                req,
                cid,
                exec_id,
                bundle,
                oci,
                pause_pid,
                sandbox_pidns,
                pull,
            )
            .await;
        match r {
            Ok(mut c) => {
                c.storages = prepared;
                let c = Arc::new(c);
                let mut sb = self.sandbox.lock().await;
                if c.is_sandbox {
                    sb.pause_pid = Some(c.init.pid);
                }
                sb.containers.insert(cid.to_string(), c);
                Ok(Empty::new())
            }
            Err(e) => {
                self.release_storages(&prepared);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_with_storages(
        &self,
        req: &agent::CreateContainerRequest,
        cid: &str,
        exec_id: &str,
        bundle: &Path,
        oci: &mut crate::protocols::oci::Spec,
        pause_pid: Option<i32>,
        sandbox_pidns: bool,
        pull: Option<image::GuestPull>,
    ) -> Result<Container> {
        let is_sandbox = pull.as_ref().is_some_and(|p| p.is_sandbox);
        let mut root = oci.Root.as_ref().cloned().unwrap_or_default();
        match &pull {
            Some(p) if p.is_sandbox => {
                // The pause container comes from the guest image, never from the host.
                root.Path = self
                    .config
                    .pause_bundle
                    .join("rootfs")
                    .display()
                    .to_string();
                root.Readonly = true;
            }
            Some(p) => {
                let images = self.images.as_ref().ok_or_else(|| {
                    AgentError::FailedPrecondition("no image service configured".into())
                })?;
                let rootfs = bundle.join("rootfs");
                std::fs::create_dir_all(&rootfs)?;
                let cfg = images.pull(&p.image_ref, &p.metadata, &rootfs).await?;
                let process = oci.Process.mut_or_insert_default();
                if process.User.is_none() {
                    process.User = Some(Default::default()).into();
                }
                spec::merge_image_config(process, &cfg);
                root.Path = rootfs.display().to_string();
            }
            None => {
                return Err(AgentError::InvalidArgument(
                    "no image_guest_pull storage: only guest-pulled images are supported".into(),
                ))
            }
        }
        oci.Root = Some(root).into();
        let linux = oci.Linux.mut_or_insert_default();
        if is_sandbox {
            spec::fix_namespaces(linux, None, false);
        } else {
            spec::fix_namespaces(linux, pause_pid, sandbox_pidns || req.sandbox_pidns);
        }
        let allowed = [
            self.config.shared_dir.as_path(),
            self.config.state_dir.as_path(),
        ];
        spec::filter_mounts(&mut oci.Mounts, &allowed);
        let process = oci.Process.mut_or_insert_default();
        process.Cwd = spec::runc_cwd(process).to_owned();
        // The policy judges what runc will run too, not only what the host sent: the
        // image's entrypoint, env and working directory are known only now.
        self.policy.check_final_create(req, oci)?;
        let config = spec::spec_to_json(oci);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).map_err(|e| AgentError::Internal(e.to_string()))?,
        )?;
        let (started, parent) = if oci.Process.Terminal {
            let console = process::ConsoleSocket::bind(bundle)?;
            let child = console.child_io()?;
            let master = tokio::spawn(console.receive(CONSOLE_TIMEOUT));
            let started = self.runtime.create(cid, bundle, child).await?;
            (started, tty_parent(master).await?)
        } else {
            let (parent, child) = process::pipes(true)?;
            (self.runtime.create(cid, bundle, child).await?, parent)
        };
        let init = Process::new(exec_id.to_string(), started.pid, parent, started.exit);
        let oom_watch =
            crate::cgroups::cgroup_of(Path::new("/proc"), Path::new("/sys/fs/cgroup"), started.pid)
                .ok()
                .map(|cg| {
                    let file = crate::cgroups::oom_events_file(&cg);
                    crate::cgroups::watch_oom(cid.to_string(), file, self.oom_tx.clone())
                });
        tracing::info!(cid, pid = started.pid, is_sandbox, "container created");
        let name = oci
            .Annotations
            .get(CONTAINER_NAME_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        Ok(Container {
            id: cid.to_string(),
            name,
            bundle: bundle.to_path_buf(),
            init,
            execs: Mutex::new(HashMap::new()),
            is_sandbox,
            oom_watch,
            storages: Vec::new(),
        })
    }

    pub(super) async fn start_container(&self, req: agent::StartContainerRequest) -> Result<Empty> {
        let c = self.container(&req.container_id).await?;
        self.runtime.start(&c.id).await?;
        Ok(Empty::new())
    }

    pub(super) async fn exec_process(&self, req: agent::ExecProcessRequest) -> Result<Empty> {
        check_id("exec id", &req.exec_id)?;
        let c = self.container(&req.container_id).await?;
        if c.init.exit_status().is_some() {
            return Err(AgentError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let p = req
            .process
            .as_ref()
            .ok_or_else(|| AgentError::InvalidArgument("no process".into()))?;
        if p.Args.is_empty() {
            return Err(AgentError::InvalidArgument("no args".into()));
        }
        let mut execs = c.execs.lock().await;
        if execs.contains_key(&req.exec_id) || req.exec_id == c.init.exec_id {
            return Err(AgentError::AlreadyExists(format!("exec {}", req.exec_id)));
        }
        let json = spec::process_to_json(p);
        let (started, parent) = if p.Terminal {
            let dir = c.bundle.join(format!("exec-{}", req.exec_id));
            std::fs::create_dir_all(&dir)?;
            let console = process::ConsoleSocket::bind(&dir)?;
            let child = console.child_io()?;
            let master = tokio::spawn(console.receive(CONSOLE_TIMEOUT));
            let started = self.runtime.exec(&c.id, &json, child).await;
            let r = match started {
                Ok(s) => tty_parent(master).await.map(|p| (s, p)),
                Err(e) => Err(e.into()),
            };
            let _ = std::fs::remove_dir_all(&dir);
            r?
        } else {
            let (parent, child) = process::pipes(true)?;
            (self.runtime.exec(&c.id, &json, child).await?, parent)
        };
        let proc = Process::new(req.exec_id.clone(), started.pid, parent, started.exit);
        execs.insert(req.exec_id.clone(), proc);
        Ok(Empty::new())
    }

    pub(super) async fn wait_process(
        &self,
        req: agent::WaitProcessRequest,
    ) -> Result<agent::WaitProcessResponse> {
        let (c, p) = self.process(&req.container_id, &req.exec_id).await?;
        let status = p.wait().await;
        if !Arc::ptr_eq(&p, &c.init) {
            // Forget the exec once the shim has drained its output (or gave up on it),
            // so that exec probes do not pile up and late reads still get the tail.
            let (c, p) = (c.clone(), p.clone());
            tokio::spawn(async move {
                for _ in 0..EXEC_DRAIN_POLLS {
                    if p.io.drained() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                c.execs.lock().await.remove(&p.exec_id);
            });
        }
        let mut r = agent::WaitProcessResponse::new();
        r.status = status;
        Ok(r)
    }

    pub(super) async fn signal_process(&self, req: agent::SignalProcessRequest) -> Result<Empty> {
        let sig = i32::try_from(req.signal)
            .ok()
            .filter(|s| (0..=64).contains(s))
            .ok_or_else(|| AgentError::InvalidArgument(format!("signal {}", req.signal)))?;
        let c = self.container(&req.container_id).await?;
        if req.exec_id.is_empty() {
            // Every process of the container, as Kata does for exec_id "".
            if let Err(e) = self.runtime.kill(&c.id, sig, true).await {
                if c.init.exit_status().is_none() {
                    return Err(e.into());
                }
            }
            return Ok(Empty::new());
        }
        let (_, p) = self.process(&req.container_id, &req.exec_id).await?;
        if p.exit_status().is_some() {
            // Already gone: its PID may belong to someone else by now.
            return Ok(Empty::new());
        }
        if Arc::ptr_eq(&p, &c.init) {
            if let Err(e) = self.runtime.kill(&c.id, sig, false).await {
                if p.exit_status().is_none() {
                    return Err(e.into());
                }
            }
        } else {
            // 0 is the liveness probe Kata's agent also passes through; any other
            // number must be a signal we can send (real-time ones are refused
            // clearly rather than silently turned into a probe that "succeeds").
            let signal = match sig {
                0 => None,
                n => Some(nix::sys::signal::Signal::try_from(n).map_err(|_| {
                    AgentError::InvalidArgument(format!("signal {n} is not supported"))
                })?),
            };
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(AgentError::Internal(format!("kill: {e}"))),
            }
        }
        Ok(Empty::new())
    }

    /// Removes a container: kills what is left, deletes it from the runtime and drops
    /// its bundle and image rootfs.
    pub(super) async fn remove_container(
        &self,
        req: agent::RemoveContainerRequest,
    ) -> Result<Empty> {
        let c = self.container(&req.container_id).await?;
        self.destroy_container(&c, req.timeout).await?;
        self.sandbox.lock().await.containers.remove(&c.id);
        Ok(Empty::new())
    }

    pub(super) async fn destroy_container(&self, c: &Container, timeout_s: u32) -> Result<()> {
        self.runtime.delete(&c.id).await?;
        let wait = c.init.wait();
        if timeout_s == 0 {
            wait.await;
        } else if tokio::time::timeout(std::time::Duration::from_secs(timeout_s.into()), wait)
            .await
            .is_err()
        {
            return Err(AgentError::Internal(format!(
                "container {} did not exit within {timeout_s}s",
                c.id
            )));
        }
        if let Some(h) = &c.oom_watch {
            h.abort();
        }
        self.release_storages(&c.storages);
        std::fs::remove_dir_all(&c.bundle).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        tracing::info!(cid = %c.id, "container removed");
        Ok(())
    }

    pub(super) async fn update_container(
        &self,
        req: agent::UpdateContainerRequest,
    ) -> Result<Empty> {
        let c = self.container(&req.container_id).await?;
        let r = req
            .resources
            .as_ref()
            .ok_or_else(|| AgentError::InvalidArgument("no resources".into()))?;
        self.runtime
            .update(&c.id, &spec::resources_to_json(r))
            .await?;
        Ok(Empty::new())
    }

    pub(super) async fn stats_container(
        &self,
        req: agent::StatsContainerRequest,
    ) -> Result<agent::StatsContainerResponse> {
        let c = self.container(&req.container_id).await?;
        if c.init.exit_status().is_some() {
            return Err(AgentError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let cg =
            crate::cgroups::cgroup_of(Path::new("/proc"), Path::new("/sys/fs/cgroup"), c.init.pid)?;
        Ok(crate::cgroups::stats_of(&cg))
    }

    pub(super) async fn pause_container(&self, req: agent::PauseContainerRequest) -> Result<Empty> {
        let c = self.container(&req.container_id).await?;
        self.runtime.pause(&c.id, true).await?;
        Ok(Empty::new())
    }

    pub(super) async fn resume_container(
        &self,
        req: agent::ResumeContainerRequest,
    ) -> Result<Empty> {
        let c = self.container(&req.container_id).await?;
        self.runtime.pause(&c.id, false).await?;
        Ok(Empty::new())
    }

    pub(super) async fn get_oom_event(
        &self,
        _req: agent::GetOOMEventRequest,
    ) -> Result<agent::OOMEvent> {
        let mut rx = self.oom_rx.lock().await;
        let cid = rx
            .recv()
            .await
            .ok_or_else(|| AgentError::Internal("OOM event source closed".into()))?;
        let mut r = agent::OOMEvent::new();
        r.container_id = cid;
        Ok(r)
    }
}
