//! The host side of a pod, speaking to the guest agent exactly in the order the
//! Kata shim does (FACTS §1): Health.Check → (SetPolicy) → UpdateInterface /
//! UpdateRoutes → CreateSandbox → GetGuestDetails → CopyFile (hostname, hosts,
//! resolv.conf) → CreateContainer(pause) → StartContainer → CreateContainer(app,
//! guest pull) → StartContainer → ReadStdout/ReadStderr + WaitProcess; stop:
//! SignalProcess(SIGKILL, all) → WaitProcess → RemoveContainer → DestroySandbox.

use std::time::{Duration, Instant};

use coco_agent::protocols::{agent, agent_ttrpc, health, health_ttrpc, oci, types};

use crate::{Vm, VmError};

/// The agent's vsock port.
pub const AGENT_PORT: u32 = 1024;
/// MAC of the harness's virtio-net device (see `qemu.rs`).
pub const GUEST_MAC: &str = "52:54:00:12:34:56";

/// A ttrpc error from the agent, with its status code when it is one.
#[derive(Debug, thiserror::Error)]
#[error("{rpc}: {detail}")]
pub struct RpcError {
    pub rpc: &'static str,
    pub code: Option<ttrpc::Code>,
    pub detail: String,
}

/// Maps a ttrpc error of `rpc` to an [`RpcError`], keeping the status code.
pub fn rpc_err(rpc: &'static str) -> impl FnOnce(ttrpc::Error) -> RpcError {
    move |e| match e {
        ttrpc::Error::RpcStatus(s) => RpcError {
            rpc,
            code: Some(s.code()),
            detail: format!("{:?}: {}", s.code(), s.message()),
        },
        other => RpcError {
            rpc,
            code: None,
            detail: other.to_string(),
        },
    }
}

fn ctx() -> ttrpc::context::Context {
    // No deadline, like the shim's stream reads; the harness's hard timeout bounds it.
    ttrpc::context::with_timeout(0)
}

/// Where time went, as the shim sees it.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// First successful Health.Check after QEMU started (boot → agent ready).
    pub agent_ready: Option<Duration>,
    /// CreateContainer(app), which includes pull, attestation, decryption, unpack.
    pub create_app: Duration,
    /// CreateContainer(app) → first stdout byte.
    pub create_to_first_output: Duration,
}

/// What an app container did.
#[derive(Debug, Clone)]
pub struct AppRun {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// A connected shim.
pub struct Shim {
    pub agent: agent_ttrpc::AgentServiceClient,
    pub health: health_ttrpc::HealthClient,
    pub timings: Timings,
    sandbox_id: String,
}

impl std::fmt::Debug for Shim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shim")
            .field("sandbox_id", &self.sandbox_id)
            .field("timings", &self.timings)
            .finish()
    }
}

impl Shim {
    /// Connects over hybrid vsock and waits until Health.Check answers SERVING.
    pub async fn connect(vm: &Vm, timeout: Duration) -> Result<Self, VmError> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            let remaining = timeout.saturating_sub(start.elapsed());
            // connect_vsock polls with sleeps: keep it off the async workers.
            let stream = tokio::task::block_in_place(|| vm.connect_vsock(AGENT_PORT, remaining))?;
            stream
                .set_nonblocking(true)
                .map_err(|e| VmError::io("vsock stream", e))?;
            let stream = tokio::net::UnixStream::from_std(stream)
                .map_err(|e| VmError::io("vsock stream", e))?;
            let client =
                ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::new(stream));
            let health = health_ttrpc::HealthClient::new(client.clone());
            let req = health::CheckRequest::new();
            let check = health.check(
                ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64),
                &req,
            );
            match check.await {
                Ok(r)
                    if r.status.enum_value()
                        == Ok(health::health_check_response::ServingStatus::SERVING) =>
                {
                    return Ok(Self {
                        agent: agent_ttrpc::AgentServiceClient::new(client),
                        health,
                        timings: Timings {
                            agent_ready: Some(vm.uptime()),
                            ..Default::default()
                        },
                        sandbox_id: String::new(),
                    });
                }
                Ok(r) => last = format!("status {:?}", r.status),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(VmError::Timeout {
            what: format!("agent Health.Check (last: {last})"),
            after: timeout,
            log: vm.diagnostics(),
        })
    }

    /// Network as the shim sets it up for slirp: eth0 10.0.2.15/24, default via 10.0.2.2.
    pub async fn setup_network(&self) -> Result<(), RpcError> {
        let mut ip = types::IPAddress::new();
        ip.family = types::IPFamily::v4.into();
        ip.address = "10.0.2.15".into();
        ip.mask = "24".into();
        let mut iface = types::Interface::new();
        iface.device = "eth0".into();
        iface.name = "eth0".into();
        iface.hwAddr = GUEST_MAC.into();
        iface.mtu = 1500;
        iface.IPAddresses.push(ip);
        let mut req = agent::UpdateInterfaceRequest::new();
        req.interface = Some(iface).into();
        self.agent
            .update_interface(ctx(), &req)
            .await
            .map_err(rpc_err("UpdateInterface"))?;
        let mut route = types::Route::new();
        route.gateway = "10.0.2.2".into();
        route.device = "eth0".into();
        route.family = types::IPFamily::v4.into();
        let mut routes = agent::Routes::new();
        routes.Routes.push(route);
        let mut req = agent::UpdateRoutesRequest::new();
        req.routes = Some(routes).into();
        self.agent
            .update_routes(ctx(), &req)
            .await
            .map_err(rpc_err("UpdateRoutes"))?;
        Ok(())
    }

    /// CreateSandbox, GetGuestDetails and the CopyFile calls for the pod's files.
    pub async fn create_sandbox(&mut self, sandbox_id: &str) -> Result<(), RpcError> {
        let mut sb = agent::CreateSandboxRequest::new();
        sb.hostname = "coco-pod".into();
        sb.sandbox_id = sandbox_id.into();
        self.agent
            .create_sandbox(ctx(), &sb)
            .await
            .map_err(rpc_err("CreateSandbox"))?;
        self.sandbox_id = sandbox_id.into();
        self.agent
            .get_guest_details(ctx(), &agent::GuestDetailsRequest::new())
            .await
            .map_err(rpc_err("GetGuestDetails"))?;
        // No shared file system under SNP/TDX: the shim copies the pod's files.
        for (name, data) in [
            ("hostname", "coco-pod\n"),
            ("hosts", "127.0.0.1 localhost\n10.0.2.15 coco-pod\n"),
            ("resolv.conf", "nameserver 10.0.2.3\n"),
        ] {
            // <sandbox>-<random>-<name>, as the shim names them.
            self.copy_file(
                &format!("/run/kata-containers/shared/containers/{sandbox_id}-5eed0f1e-{name}"),
                data.as_bytes(),
            )
            .await?;
        }
        Ok(())
    }

    /// CopyFile in chunks, as the shim sends them.
    pub async fn copy_file(&self, path: &str, data: &[u8]) -> Result<(), RpcError> {
        const CHUNK: usize = 64 * 1024;
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK).min(data.len());
            let mut cp = agent::CopyFileRequest::new();
            cp.path = path.into();
            cp.file_size = data.len() as i64;
            cp.file_mode = 0o100644;
            cp.dir_mode = 0o755;
            cp.offset = offset as i64;
            cp.data = data[offset..end].to_vec();
            self.agent
                .copy_file(ctx(), &cp)
                .await
                .map_err(rpc_err("CopyFile"))?;
            offset = end;
            if offset >= data.len() {
                return Ok(());
            }
        }
    }

    /// The pause container from the guest image, started.
    pub async fn start_pause(&self) -> Result<(), RpcError> {
        let id = self.sandbox_id.clone();
        self.agent
            .create_container(ctx(), &create_request(&id, "sandbox", "", &["/pause"]))
            .await
            .map_err(rpc_err("CreateContainer(pause)"))?;
        self.start(&id).await
    }

    /// A Kubernetes pod's sandbox as the Kata shim creates it (see [`crate::k8s`]):
    /// CreateSandbox with the shared-memory storage, GetGuestDetails, then the pause
    /// container, started.
    pub async fn create_kube_sandbox(&mut self, pod: &crate::k8s::KubePod) -> Result<(), RpcError> {
        self.agent
            .create_sandbox(ctx(), &crate::k8s::sandbox_request(pod))
            .await
            .map_err(rpc_err("CreateSandbox"))?;
        self.sandbox_id = pod.sandbox_id.clone();
        self.agent
            .get_guest_details(ctx(), &agent::GuestDetailsRequest::new())
            .await
            .map_err(rpc_err("GetGuestDetails"))?;
        self.agent
            .create_container(ctx(), &crate::k8s::pause_request(pod))
            .await
            .map_err(rpc_err("CreateContainer(pause)"))?;
        self.start(&pod.sandbox_id).await
    }

    /// The container's files (CopyFile), then `req` (CreateContainer); timed.
    pub async fn create_kube_container(
        &mut self,
        pod: &crate::k8s::KubePod,
        req: &agent::CreateContainerRequest,
    ) -> Result<(), RpcError> {
        for (path, data) in crate::k8s::container_files(pod, &req.container_id) {
            self.copy_file(&path, &data).await?;
        }
        self.create_raw(req).await
    }

    /// One CreateContainer exactly as given; timed.
    pub async fn create_raw(
        &mut self,
        req: &agent::CreateContainerRequest,
    ) -> Result<(), RpcError> {
        let t = Instant::now();
        let r = self
            .agent
            .create_container(ctx(), req)
            .await
            .map_err(rpc_err("CreateContainer"));
        self.timings.create_app = t.elapsed();
        r.map(|_| ())
    }

    async fn start(&self, cid: &str) -> Result<(), RpcError> {
        let mut s = agent::StartContainerRequest::new();
        s.container_id = cid.into();
        self.agent
            .start_container(ctx(), &s)
            .await
            .map_err(rpc_err("StartContainer"))?;
        Ok(())
    }

    /// CreateContainer with guest pull of `image` (Kata ≥ 3.3 shape); timed.
    pub async fn create_app(&mut self, cid: &str, image: &str) -> Result<(), RpcError> {
        let t = Instant::now();
        let r = self
            .agent
            .create_container(ctx(), &create_request(cid, "container", image, &[]))
            .await
            .map_err(rpc_err("CreateContainer"));
        self.timings.create_app = t.elapsed();
        r.map(|_| ())
    }

    /// Starts `cid`, collects stdout/stderr to EOF and the exit code.
    pub async fn run_app(&mut self, cid: &str, created_at: Instant) -> Result<AppRun, RpcError> {
        self.start(cid).await?;
        let (stdout, first) = self.read_stream(cid, cid, false, Some(created_at)).await;
        if let Some(first) = first {
            self.timings.create_to_first_output = first;
        }
        let (stderr, _) = self.read_stream(cid, cid, true, None).await;
        let exit_code = self.wait(cid).await?;
        Ok(AppRun {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            exit_code,
        })
    }

    /// Starts `cid` and reads its stdout until `needle` appears (for long-running pods);
    /// what was read so far either way, and whether it appeared.
    pub async fn start_and_read_until(
        &self,
        cid: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<(String, bool), RpcError> {
        self.start(cid).await?;
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut r = agent::ReadStreamRequest::new();
            r.container_id = cid.into();
            r.exec_id = cid.into();
            r.len = 4096;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.agent.read_stdout(ctx(), &r)).await {
                Ok(Ok(d)) if !d.data.is_empty() => {
                    out.extend_from_slice(&d.data);
                    if String::from_utf8_lossy(&out).contains(needle) {
                        return Ok((String::from_utf8_lossy(&out).into_owned(), true));
                    }
                }
                _ => break,
            }
        }
        Ok((String::from_utf8_lossy(&out).into_owned(), false))
    }

    /// An exec'd process's stdout, to EOF.
    pub async fn read_exec_stdout(&self, cid: &str, exec_id: &str) -> String {
        let (out, _) = self.read_stream(cid, exec_id, false, None).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn read_stream(
        &self,
        cid: &str,
        exec_id: &str,
        stderr: bool,
        since: Option<Instant>,
    ) -> (Vec<u8>, Option<Duration>) {
        let mut out = Vec::new();
        let mut first = None;
        loop {
            let mut r = agent::ReadStreamRequest::new();
            r.container_id = cid.into();
            r.exec_id = exec_id.into();
            r.len = 4096;
            let got = if stderr {
                self.agent.read_stderr(ctx(), &r).await
            } else {
                self.agent.read_stdout(ctx(), &r).await
            };
            match got {
                Ok(d) if !d.data.is_empty() => {
                    if first.is_none() {
                        first = since.map(|s| s.elapsed());
                    }
                    out.extend_from_slice(&d.data);
                }
                // EOF is an empty read, as Kata's agent answers it; an error ends the read too.
                _ => return (out, first),
            }
        }
    }

    /// WaitProcess for the container's init process.
    pub async fn wait(&self, cid: &str) -> Result<i32, RpcError> {
        let mut w = agent::WaitProcessRequest::new();
        w.container_id = cid.into();
        w.exec_id = cid.into();
        Ok(self
            .agent
            .wait_process(ctx(), &w)
            .await
            .map_err(rpc_err("WaitProcess"))?
            .status)
    }

    /// ExecProcess in `cid` (what `kubectl exec` does).
    pub async fn exec(&self, cid: &str, exec_id: &str, args: &[&str]) -> Result<(), RpcError> {
        self.agent
            .exec_process(ctx(), &coco_agent::requests::exec(cid, exec_id, args))
            .await
            .map_err(rpc_err("ExecProcess"))?;
        Ok(())
    }

    /// Stops a container: SIGKILL to all its processes, wait, remove.
    pub async fn stop(&self, cid: &str) -> Result<(), RpcError> {
        let mut s = agent::SignalProcessRequest::new();
        s.container_id = cid.into();
        s.signal = 9;
        // Already exited is fine: the wait below reports it either way.
        let _ = self.agent.signal_process(ctx(), &s).await;
        self.wait(cid).await?;
        let mut r = agent::RemoveContainerRequest::new();
        r.container_id = cid.into();
        r.timeout = 10;
        self.agent
            .remove_container(ctx(), &r)
            .await
            .map_err(rpc_err("RemoveContainer"))?;
        Ok(())
    }

    /// DestroySandbox: the agent (as init) powers the VM off after replying.
    pub async fn destroy_sandbox(&self) -> Result<(), RpcError> {
        self.agent
            .destroy_sandbox(ctx(), &agent::DestroySandboxRequest::new())
            .await
            .map_err(rpc_err("DestroySandbox"))?;
        Ok(())
    }
}

/// A CreateContainerRequest as Kata ≥ 3.3 sends it for guest pull. Empty `args`
/// leave the image's entrypoint/cmd in charge.
pub fn create_request(
    cid: &str,
    kind: &str,
    image: &str,
    args: &[&str],
) -> agent::CreateContainerRequest {
    coco_agent::requests::guest_pull_create(cid, kind, image, pod_spec(cid, args))
}

/// The OCI spec the shim sends: namespaces, kernel mounts, a cgroup path.
pub fn pod_spec(cid: &str, args: &[&str]) -> oci::Spec {
    let mut s = oci::Spec::new();
    s.Version = "1.0.2".into();
    let mut p = oci::Process::new();
    p.Args = args.iter().map(|a| a.to_string()).collect();
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    s.Process = Some(p).into();
    let mut root = oci::Root::new();
    root.Path = format!("/run/kata-containers/{cid}/rootfs");
    s.Root = Some(root).into();
    s.Hostname = "coco-pod".into();
    for (dst, ty, src, opts) in [
        ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"][..]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ] {
        let mut m = oci::Mount::new();
        m.destination = dst.into();
        m.type_ = ty.into();
        m.source = src.into();
        m.options = opts.iter().map(|o| o.to_string()).collect();
        s.Mounts.push(m);
    }
    let mut linux = oci::Linux::new();
    for t in ["pid", "ipc", "uts", "mount"] {
        let mut ns = oci::LinuxNamespace::new();
        ns.Type = t.into();
        linux.Namespaces.push(ns);
    }
    linux.CgroupsPath = format!("/kubepods/{cid}");
    s.Linux = Some(linux).into();
    s
}
