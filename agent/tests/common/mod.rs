//! Shared test and benchmark helpers: a local docker-registry, a busybox image pushed to
//! it, a pause bundle, a dev-only image puller (skopeo + umoci) and an in-process agent
//! on a unix socket driving real runc.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use coco_agent::config::AgentConfig;
use coco_agent::host::SystemHost;
use coco_agent::netlink::RtNetlink;
use coco_agent::policy::Policy;
use coco_agent::process::run_command;
use coco_agent::protocols::{agent, agent_ttrpc, health_ttrpc, oci};
use coco_agent::rpc::Agent;
use coco_agent::runtime::Runc;

/// Runs a command through the agent's reaper and fails loudly.
pub async fn sh(cmd: &str, args: &[&str]) -> Vec<u8> {
    let mut c = Command::new(cmd);
    c.args(args);
    let out = run_command(c, None).await.unwrap();
    assert_eq!(
        out.status,
        0,
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A test whose tools or privileges are missing: skipped, saying why, except under
/// `CI=true`, where a missing prerequisite is a failure.
pub fn unavailable(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("prerequisite missing under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Whether the tools the real-runc tests need are here (root, runc, skopeo, umoci, registry).
pub fn prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root for runc".into());
    }
    for t in ["runc", "skopeo", "umoci", "docker-registry"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).exists()))
            .unwrap_or(false);
        if !found {
            return Err(format!("{t} not installed"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("busybox-static not installed".into());
    }
    Ok(())
}

/// A docker-registry on 127.0.0.1, killed on drop.
pub struct Registry {
    pub addr: String,
    pid: i32,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        // Not waited for here: the agent's process-wide reaper collects it.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Registry {
            addr,
            pid: child.id() as i32,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The agent's reaper collects it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Fills `rootfs` with busybox and the applets the tests use.
pub fn busybox_rootfs(rootfs: &Path) {
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "cat", "true", "ls", "stty", "tty"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
}

/// Builds a busybox image and pushes it as `<registry>/busybox:test`.
pub async fn push_busybox(reg: &Registry, work: &Path) -> String {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    let l = layout.display().to_string();
    sh("umoci", &["init", "--layout", &l]).await;
    sh("umoci", &["new", "--image", &format!("{l}:test")]).await;
    sh(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{l}:test"),
            &bundle.display().to_string(),
        ],
    )
    .await;
    busybox_rootfs(&bundle.join("rootfs"));
    sh(
        "umoci",
        &[
            "repack",
            "--image",
            &format!("{l}:test"),
            &bundle.display().to_string(),
        ],
    )
    .await;
    sh(
        "umoci",
        &[
            "config",
            "--image",
            &format!("{l}:test"),
            "--config.env",
            "PATH=/bin",
            "--config.env",
            "FROM_IMAGE=yes",
            "--config.cmd",
            "/bin/sh",
            "--config.workingdir",
            "/tmp",
        ],
    )
    .await;
    let r = format!("{}/busybox:test", reg.addr);
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{l}:test"),
            &format!("docker://{r}"),
        ],
    )
    .await;
    r
}

/// An agent served in-process on a unix socket, with real runc.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub sock: String,
    pub agent: Arc<Agent>,
    _server: ttrpc::r#async::Server,
}

impl TestAgent {
    pub async fn start(policy: &str) -> TestAgent {
        Self::start_with(policy, &[]).await
    }

    /// An agent whose guest pull (the real image library) may speak plain
    /// HTTP to `insecure_registries` (`host:port`).
    pub async fn start_with(policy: &str, insecure_registries: &[String]) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let pause = dir.path().join("pause");
        busybox_rootfs(&pause.join("rootfs"));
        std::fs::write(
            pause.join("rootfs/pause"),
            "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 1; done\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            pause.join("rootfs/pause"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let config = AgentConfig {
            state_dir: dir.path().join("state"),
            shared_dir: dir.path().join("run/shared"),
            copy_root: dir.path().join("run"),
            pause_bundle: pause,
            runc_root: dir.path().join("runc"),
            ..Default::default()
        };
        std::fs::create_dir_all(&config.runc_root).unwrap();
        let runtime = Arc::new(Runc::new("runc", config.runc_root.clone()));
        let mut pull = image_mgmt::PullOptions {
            store_dir: dir.path().join("state/image-store"),
            ..Default::default()
        };
        pull.registry.insecure_registries = insecure_registries.to_vec();
        let images = Arc::new(coco_agent::guest_pull::GuestPull::new(pull, None));
        let agent = Arc::new(Agent::new(
            config,
            Arc::new(Policy::new(policy).unwrap()),
            runtime,
            Some(images),
            Arc::new(RtNetlink),
            Arc::new(SystemHost::new(false)),
        ));
        let sock = format!("unix://{}", dir.path().join("agent.sock").display());
        let server = coco_agent::server::start(agent.clone(), &sock)
            .await
            .unwrap();
        TestAgent {
            dir,
            sock,
            agent,
            _server: server,
        }
    }

    pub async fn clients(&self) -> (agent_ttrpc::AgentServiceClient, health_ttrpc::HealthClient) {
        let c = ttrpc::r#async::Client::connect(&self.sock).await.unwrap();
        (
            agent_ttrpc::AgentServiceClient::new(c.clone()),
            health_ttrpc::HealthClient::new(c),
        )
    }

    pub fn copy_root(&self) -> PathBuf {
        self.dir.path().join("run")
    }
}

impl Drop for TestAgent {
    /// A test that failed midway must not leave containers running: force-delete
    /// whatever runc still knows (the reaper collects runc; we poll for it to finish).
    fn drop(&mut self) {
        let root = self.dir.path().join("runc");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            if id.starts_with('.') {
                continue;
            }
            let Ok(child) = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            else {
                continue;
            };
            let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
            for _ in 0..100 {
                if !proc_dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(0)
}

/// A spec like the one Kata's shim sends (namespaces, kernel mounts, a cgroup path).
pub fn pod_spec(cid: &str, args: &[&str]) -> oci::Spec {
    let mut s = oci::Spec::new();
    s.Version = "1.0.2".into();
    let mut p = oci::Process::new();
    p.Args = args.iter().map(|a| a.to_string()).collect();
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    let mut caps = oci::LinuxCapabilities::new();
    let c: Vec<String> = ["CAP_KILL", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    caps.Bounding = c.clone();
    caps.Effective = c.clone();
    caps.Permitted = c;
    p.Capabilities = Some(caps).into();
    s.Process = Some(p).into();
    let mut root = oci::Root::new();
    root.Path = "/run/kata-containers/host-chosen/rootfs".into();
    s.Root = Some(root).into();
    s.Hostname = "pod".into();
    for (dst, ty, src, opts) in [
        ("/proc", "proc", "proc", vec!["nosuid", "noexec", "nodev"]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            vec!["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            vec![
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            vec!["nosuid", "noexec", "nodev", "ro"],
        ),
        ("/etc/secret", "bind", "/etc", vec!["rbind", "ro"]),
    ] {
        let mut m = oci::Mount::new();
        m.destination = dst.into();
        m.type_ = ty.into();
        m.source = src.into();
        m.options = opts.into_iter().map(String::from).collect();
        s.Mounts.push(m);
    }
    let mut linux = oci::Linux::new();
    for t in ["pid", "ipc", "uts", "mount", "network"] {
        let mut ns = oci::LinuxNamespace::new();
        ns.Type = t.into();
        if t == "network" {
            ns.Path = "/var/run/netns/cni-host-side".into();
        }
        linux.Namespaces.push(ns);
    }
    linux.CgroupsPath = format!("/coco-agent-test/{cid}-{}", std::process::id());
    linux.MaskedPaths = vec!["/proc/kcore".into()];
    s.Linux = Some(linux).into();
    s
}

/// A CreateContainerRequest as Kata ≥ 3.3 sends it for guest pull.
pub fn create_request(
    cid: &str,
    kind: &str,
    image: &str,
    args: &[&str],
) -> agent::CreateContainerRequest {
    coco_agent::requests::guest_pull_create(cid, kind, image, pod_spec(cid, args))
}

/// Reads a stream until EOF, which the agent answers as Kata's does: OK with no data.
pub async fn read_all(
    c: &agent_ttrpc::AgentServiceClient,
    cid: &str,
    exec_id: &str,
    stderr: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut r = agent::ReadStreamRequest::new();
        r.container_id = cid.into();
        r.exec_id = exec_id.into();
        r.len = 4096;
        let got = if stderr {
            c.read_stderr(ctx(), &r).await
        } else {
            c.read_stdout(ctx(), &r).await
        };
        match got {
            Ok(d) if d.data.is_empty() => return out,
            Ok(d) => out.extend_from_slice(&d.data),
            Err(e) => panic!("read after {} bytes: {e}", out.len()),
        }
    }
}
