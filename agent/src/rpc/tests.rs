//! Handler tests in-process, with recording doubles for the runtime, images, network
//! and host (no socket, no runc).

use std::path::Path;
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;

use super::*;
use crate::image::ImageConfig;
use crate::process::ChildIo;
use crate::runtime::Started;

#[derive(Debug, Default)]
struct FakeRuntime {
    calls: StdMutex<Vec<String>>,
    exits: StdMutex<HashMap<String, tokio::sync::oneshot::Sender<i32>>>,
    next_pid: StdMutex<i32>,
    // The "container" holds its ends of the pipes until it is killed.
    ios: StdMutex<HashMap<String, ChildIo>>,
}

impl FakeRuntime {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn started(&self, id: &str, io: ChildIo) -> Started {
        nix::unistd::write(&io.stdout, format!("hello from {id}\n").as_bytes()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.exits.lock().unwrap().insert(id.to_string(), tx);
        self.ios.lock().unwrap().insert(id.to_string(), io);
        let mut pid = self.next_pid.lock().unwrap();
        *pid += 1;
        Started {
            pid: 1000 + *pid,
            exit: rx,
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        io: ChildIo,
    ) -> std::result::Result<Started, RuntimeError> {
        assert!(bundle.join("config.json").exists());
        self.calls.lock().unwrap().push(format!("create {id}"));
        Ok(self.started(id, io))
    }
    async fn start(&self, id: &str) -> std::result::Result<(), RuntimeError> {
        self.calls.lock().unwrap().push(format!("start {id}"));
        Ok(())
    }
    async fn exec(
        &self,
        id: &str,
        p: &serde_json::Value,
        io: ChildIo,
    ) -> std::result::Result<Started, RuntimeError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("exec {id} {}", p["args"][0]));
        Ok(self.started(&format!("{id}/exec"), io))
    }
    async fn kill(
        &self,
        id: &str,
        signal: i32,
        all: bool,
    ) -> std::result::Result<(), RuntimeError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("kill {id} {signal} all={all}"));
        self.ios.lock().unwrap().remove(id);
        if let Some(tx) = self.exits.lock().unwrap().remove(id) {
            let _ = tx.send(128 + signal);
        }
        Ok(())
    }
    async fn delete(&self, id: &str) -> std::result::Result<(), RuntimeError> {
        self.calls.lock().unwrap().push(format!("delete {id}"));
        self.ios.lock().unwrap().remove(id);
        if let Some(tx) = self.exits.lock().unwrap().remove(id) {
            let _ = tx.send(137);
        }
        Ok(())
    }
    async fn update(
        &self,
        id: &str,
        r: &serde_json::Value,
    ) -> std::result::Result<(), RuntimeError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("update {id} {}", r["memory"]["limit"]));
        Ok(())
    }
    async fn pause(&self, id: &str, p: bool) -> std::result::Result<(), RuntimeError> {
        self.calls.lock().unwrap().push(format!("pause {id} {p}"));
        Ok(())
    }
}

#[derive(Debug, Default)]
struct FakeImages {
    pulled: StdMutex<Vec<String>>,
}

#[async_trait]
impl ImageService for FakeImages {
    async fn pull(
        &self,
        image_ref: &str,
        _m: &serde_json::Value,
        rootfs: &Path,
    ) -> std::result::Result<ImageConfig, ImageError> {
        self.pulled.lock().unwrap().push(image_ref.to_string());
        std::fs::write(rootfs.join("marker"), "x").unwrap();
        Ok(ImageConfig {
            cmd: vec!["/bin/app".into()],
            env: vec!["FROM_IMAGE=1".into()],
            ..Default::default()
        })
    }
}

#[derive(Debug, Default)]
struct FakeNet(StdMutex<Vec<String>>);

#[async_trait]
impl Network for FakeNet {
    async fn update_interface(
        &self,
        i: &types::Interface,
    ) -> std::result::Result<types::Interface, NetworkError> {
        self.0.lock().unwrap().push(format!("iface {}", i.name));
        Ok(i.clone())
    }
    async fn update_routes(
        &self,
        r: &[types::Route],
    ) -> std::result::Result<Vec<types::Route>, NetworkError> {
        self.0.lock().unwrap().push(format!("routes {}", r.len()));
        Ok(r.to_vec())
    }
    async fn add_arp_neighbors(
        &self,
        n: &[types::ARPNeighbor],
    ) -> std::result::Result<(), NetworkError> {
        self.0.lock().unwrap().push(format!("arp {}", n.len()));
        Ok(())
    }
}

#[derive(Debug, Default)]
struct FakeHost(StdMutex<Vec<String>>, std::sync::atomic::AtomicBool);

#[async_trait]
impl Host for FakeHost {
    fn set_hostname(&self, name: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().push(format!("hostname {name}"));
        Ok(())
    }
    fn set_dns(&self, s: &[String]) -> std::io::Result<()> {
        self.0.lock().unwrap().push(format!("dns {}", s.join(",")));
        Ok(())
    }
    async fn load_module(&self, name: &str, _p: &[String]) -> std::io::Result<()> {
        self.0.lock().unwrap().push(format!("modprobe {name}"));
        Ok(())
    }
    fn power_off(&self) {
        self.0.lock().unwrap().push("poweroff".into());
    }
    fn is_init(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn mount_tmpfs(&self, target: &Path, options: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(target)?;
        self.0
            .lock()
            .unwrap()
            .push(format!("tmpfs {} {options}", target.display()));
        Ok(())
    }
    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("umount {}", target.display()));
        Ok(())
    }
}

struct Fixture {
    agent: Agent,
    host: Arc<FakeHost>,
    rt: Arc<FakeRuntime>,
    images: Arc<FakeImages>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_with(Policy::confidential().unwrap())
}

fn fixture_with(policy: Policy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        state_dir: dir.path().join("state"),
        shared_dir: dir.path().join("shared"),
        copy_root: dir.path().join("run"),
        pause_bundle: dir.path().join("pause"),
        ..Default::default()
    };
    let rt = Arc::new(FakeRuntime::default());
    let images = Arc::new(FakeImages::default());
    let host = Arc::new(FakeHost::default());
    let agent = Agent::new(
        config,
        Arc::new(policy),
        rt.clone(),
        Some(images.clone()),
        Arc::new(FakeNet::default()),
        host.clone(),
    );
    Fixture {
        agent,
        host,
        rt,
        images,
        _dir: dir,
    }
}

fn create_req(cid: &str, kind: &str, image: &str) -> agent::CreateContainerRequest {
    let mut s = agent::Storage::new();
    s.driver = "image_guest_pull".into();
    s.source = image.into();
    s.driver_options = vec![format!(
        r#"image_guest_pull={{"metadata":{{"io.kubernetes.cri.container-type":"{kind}"}}}}"#
    )];
    let mut spec = crate::protocols::oci::Spec::new();
    let mut linux = crate::protocols::oci::Linux::new();
    for t in ["ipc", "uts", "pid", "network", "mount"] {
        let mut ns = crate::protocols::oci::LinuxNamespace::new();
        ns.Type = t.into();
        linux.Namespaces.push(ns);
    }
    spec.Linux = Some(linux).into();
    let mut r = agent::CreateContainerRequest::new();
    r.container_id = cid.into();
    r.exec_id = cid.into();
    r.storages.push(s);
    r.OCI = Some(spec).into();
    r
}

#[tokio::test]
async fn pod_lifecycle_in_process() {
    let f = fixture();
    let a = &f.agent;
    let mut sb = agent::CreateSandboxRequest::new();
    sb.hostname = "pod".into();
    sb.sandbox_id = "sb1".into();
    a.create_sandbox(sb.clone()).await.unwrap();
    assert!(matches!(
        a.create_sandbox(sb).await,
        Err(AgentError::AlreadyExists(_))
    ));

    a.create_container(create_req("pause", "sandbox", ""))
        .await
        .unwrap();
    a.start_container(agent::StartContainerRequest {
        container_id: "pause".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let pause_cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(a.config.state_dir.join("containers/pause/config.json")).unwrap(),
    )
    .unwrap();
    assert!(pause_cfg["root"]["path"]
        .as_str()
        .unwrap()
        .ends_with("pause/rootfs"));
    assert_eq!(pause_cfg["root"]["readonly"], true);

    a.create_container(create_req("app", "container", "reg/app:1"))
        .await
        .unwrap();
    assert_eq!(*f.images.pulled.lock().unwrap(), vec!["reg/app:1"]);
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(a.config.state_dir.join("containers/app/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["process"]["args"][0], "/bin/app");
    assert_eq!(cfg["process"]["env"][0], "FROM_IMAGE=1");
    let ns = cfg["linux"]["namespaces"].as_array().unwrap();
    assert!(ns.iter().all(|n| n["type"] != "network"), "{ns:?}");
    let pause_pid = a.sandbox.lock().await.pause_pid.unwrap();
    assert!(ns
        .iter()
        .any(|n| n["path"] == format!("/proc/{pause_pid}/ns/ipc")));

    let mut rd = agent::ReadStreamRequest::new();
    rd.container_id = "app".into();
    rd.exec_id = "app".into();
    rd.len = 1024;
    assert_eq!(
        a.read_stdout(rd.clone()).await.unwrap().data,
        b"hello from app\n"
    );

    let mut sig = agent::SignalProcessRequest::new();
    sig.container_id = "app".into();
    sig.signal = 9;
    a.signal_process(sig).await.unwrap();
    let mut w = agent::WaitProcessRequest::new();
    w.container_id = "app".into();
    w.exec_id = "app".into();
    assert_eq!(a.wait_process(w).await.unwrap().status, 137);
    // stdout hits EOF once the process's writers are gone: OK and empty, as Kata's agent.
    assert!(a.read_stdout(rd.clone()).await.unwrap().data.is_empty());
    assert!(
        a.read_stdout(rd).await.unwrap().data.is_empty(),
        "EOF stays EOF"
    );

    let mut rm = agent::RemoveContainerRequest::new();
    rm.container_id = "app".into();
    a.remove_container(rm).await.unwrap();
    assert!(!a.config.state_dir.join("containers/app").exists());
    a.destroy_sandbox(agent::DestroySandboxRequest::new())
        .await
        .unwrap();
    assert_eq!(
        f.rt.calls(),
        vec![
            "create pause",
            "start pause",
            "create app",
            "kill app 9 all=true",
            "delete app",
            "delete pause"
        ]
    );
    assert!(a.sandbox.lock().await.containers.is_empty());
}

#[tokio::test]
async fn exec_wait_and_stdio() {
    let f = fixture();
    let a = &f.agent;
    a.create_sandbox(agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    a.create_container(create_req("app", "container", "img"))
        .await
        .unwrap();
    let mut p = crate::protocols::oci::Process::new();
    p.Args = vec!["/bin/sh".into()];
    let mut ex = agent::ExecProcessRequest::new();
    ex.container_id = "app".into();
    ex.exec_id = "e1".into();
    ex.process = Some(p).into();
    a.exec_process(ex.clone()).await.unwrap();
    assert!(matches!(
        a.exec_process(ex).await,
        Err(AgentError::AlreadyExists(_))
    ));
    let mut rd = agent::ReadStreamRequest::new();
    rd.container_id = "app".into();
    rd.exec_id = "e1".into();
    rd.len = 100;
    assert_eq!(
        a.read_stdout(rd).await.unwrap().data,
        b"hello from app/exec\n"
    );
    let mut ws = agent::WriteStreamRequest::new();
    ws.container_id = "app".into();
    ws.exec_id = "e1".into();
    ws.data = b"input".to_vec();
    assert_eq!(a.write_stdin(ws).await.unwrap().len, 5);
    let mut upd = agent::UpdateContainerRequest::new();
    upd.container_id = "app".into();
    let mut res = crate::protocols::oci::LinuxResources::new();
    let mut mem = crate::protocols::oci::LinuxMemory::new();
    mem.Limit = 1 << 26;
    res.Memory = Some(mem).into();
    upd.resources = Some(res).into();
    a.update_container(upd).await.unwrap();
    assert!(f.rt.calls().contains(&format!("update app {}", 1u64 << 26)));

    // A second exec exits before the shim read its output: the tail is still there.
    let mut p = crate::protocols::oci::Process::new();
    p.Args = vec!["/bin/echo".into()];
    let mut ex = agent::ExecProcessRequest::new();
    ex.container_id = "app".into();
    ex.exec_id = "e2".into();
    ex.process = Some(p).into();
    a.exec_process(ex).await.unwrap();
    f.rt.ios.lock().unwrap().remove("app/exec");
    let _ =
        f.rt.exits
            .lock()
            .unwrap()
            .remove("app/exec")
            .unwrap()
            .send(0);
    let mut w = agent::WaitProcessRequest::new();
    w.container_id = "app".into();
    w.exec_id = "e2".into();
    assert_eq!(a.wait_process(w).await.unwrap().status, 0);
    let mut rd = agent::ReadStreamRequest::new();
    rd.container_id = "app".into();
    rd.exec_id = "e2".into();
    rd.len = 100;
    assert_eq!(
        a.read_stdout(rd.clone()).await.unwrap().data,
        b"hello from app/exec\n"
    );
    assert!(
        a.read_stdout(rd.clone()).await.unwrap().data.is_empty(),
        "then EOF"
    );
    assert!(a.read_stderr(rd.clone()).await.unwrap().data.is_empty());
    // Both streams drained: the exec is forgotten shortly after.
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if matches!(
            a.read_stdout(rd.clone()).await,
            Err(AgentError::NotFound(_))
        ) {
            gone = true;
            break;
        }
    }
    assert!(gone, "exited, drained exec is removed");
}

#[tokio::test]
async fn bad_requests_are_refused_cleanly() {
    let f = fixture();
    let a = &f.agent;
    assert!(matches!(
        a.create_container(create_req("app", "container", "img"))
            .await,
        Err(AgentError::FailedPrecondition(_))
    ));
    a.create_sandbox(agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    let e = a
        .create_container(create_req("../evil", "container", "img"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
    let mut no_pull = create_req("app", "container", "img");
    no_pull.storages.clear();
    assert!(matches!(
        a.create_container(no_pull).await,
        Err(AgentError::InvalidArgument(_))
    ));
    assert!(
        !a.config.state_dir.join("containers/app").exists(),
        "failed create leaves no bundle"
    );
    let mut w = agent::WaitProcessRequest::new();
    w.container_id = "nope".into();
    assert_eq!(
        a.wait_process(w).await.unwrap_err().code(),
        ttrpc::Code::NOT_FOUND
    );
    let mut cp = agent::CopyFileRequest::new();
    cp.path = "/etc/shadow".into();
    assert_eq!(
        a.copy_file(cp).await.unwrap_err().code(),
        ttrpc::Code::INVALID_ARGUMENT
    );
    assert!(f.rt.calls().is_empty());
}

#[tokio::test]
async fn network_and_guest_details() {
    let f = fixture();
    let a = &f.agent;
    let mut i = agent::UpdateInterfaceRequest::new();
    let mut iface = types::Interface::new();
    iface.name = "eth0".into();
    i.interface = Some(iface).into();
    assert_eq!(a.update_interface(i).await.unwrap().name, "eth0");
    let d = a
        .get_guest_details(agent::GuestDetailsRequest::new())
        .await
        .unwrap();
    assert_eq!(d.agent_details.version, env!("CARGO_PKG_VERSION"));
    assert!(d
        .agent_details
        .storage_handlers
        .contains(&"image_guest_pull".to_string()));
}

#[tokio::test]
async fn set_policy_replaces_the_policy() {
    let f = fixture();
    let a = &f.agent;
    let mut sp = agent::SetPolicyRequest::new();
    sp.policy = "not rego".into();
    assert_eq!(
        a.set_policy(sp.clone()).await.unwrap_err().code(),
        ttrpc::Code::INVALID_ARGUMENT
    );
    sp.policy = crate::policy::ALLOW_ALL_POLICY.into();
    a.set_policy(sp).await.unwrap();
    a.policy
        .check_request(&agent::ExecProcessRequest::new())
        .unwrap();
}

#[tokio::test]
async fn local_and_ephemeral_storages() {
    let f = fixture();
    let a = &f.agent;
    let state = a.config.state_dir.clone();
    let mut shm = agent::Storage::new();
    shm.driver = "ephemeral".into();
    shm.mount_point = state.join("sandbox/shm").display().to_string();
    shm.options = vec!["size=65536k".into(), "exec".into(), "mode=1777".into()];
    let mut sb = agent::CreateSandboxRequest::new();
    sb.storages.push(shm);
    a.create_sandbox(sb).await.unwrap();

    let mut req = create_req("app", "container", "img");
    let mut local = agent::Storage::new();
    local.driver = "local".into();
    local.mount_point = state.join("app-local/cache").display().to_string();
    local.options = vec!["mode=0750".into()];
    req.storages.push(local.clone());
    a.create_container(req).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(state.join("app-local/cache")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o750);

    // Outside the agent's directories: refused, nothing created.
    let mut bad = create_req("app2", "container", "img");
    local.mount_point = "/etc/evil".into();
    bad.storages.push(local);
    assert_eq!(
        a.create_container(bad).await.unwrap_err().code(),
        ttrpc::Code::INVALID_ARGUMENT
    );
    assert!(!Path::new("/etc/evil").exists());

    let mut rm = agent::RemoveContainerRequest::new();
    rm.container_id = "app".into();
    a.remove_container(rm).await.unwrap();
    assert!(!state.join("app-local/cache").exists());
    a.destroy_sandbox(agent::DestroySandboxRequest::new())
        .await
        .unwrap();
    let log: Vec<String> = f
        .host
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("tmpfs") || l.starts_with("umount"))
        .cloned()
        .collect();
    let shm_path = state.join("sandbox/shm").display().to_string();
    assert_eq!(
        log,
        vec![
            format!("tmpfs {shm_path} size=65536k,mode=1777"),
            format!("umount {shm_path}")
        ],
        "host-chosen mount flags like `exec` are dropped"
    );
}

#[tokio::test]
async fn destroy_sandbox_powers_off_only_as_init() {
    let f = fixture();
    let a = &f.agent;
    let powered_off = || f.host.0.lock().unwrap().iter().any(|l| l == "poweroff");
    a.create_sandbox(agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    a.destroy_sandbox(agent::DestroySandboxRequest::new())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!powered_off(), "not init: the machine stays up");
    f.host.1.store(true, std::sync::atomic::Ordering::Relaxed);
    a.create_sandbox(agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    a.create_container(create_req("pause", "sandbox", ""))
        .await
        .unwrap();
    a.destroy_sandbox(agent::DestroySandboxRequest::new())
        .await
        .unwrap();
    assert!(!powered_off(), "the reply goes out first");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(powered_off());
    assert!(f.rt.calls().contains(&"delete pause".to_string()));
}

/// With workload data, the agent judges the spec it will give runc (image config merged)
/// and names the container an exec or a read targets.
#[tokio::test]
async fn final_spec_and_target_container_reach_the_policy() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let data = serde_json::json!({
        "version": 1,
        "containers": [{
            "name": "app",
            "image": format!("reg.example/app@{digest}"),
            // What FakeImages' config makes of an empty process.
            "process": {"args": ["/bin/app"], "env": ["FROM_IMAGE=1"], "cwd": "/", "uid": 0,
                        "gid": 0, "capabilities": [], "no_new_privileges": false,
                        "terminal": false},
            "readonly_root": false,
            "exec": [["/bin/true"]]
        }, {
            "name": "worker",
            "image": format!("reg.example/app@{digest}"),
            "process": {"args": ["/bin/worker"], "env": ["FROM_IMAGE=1"], "cwd": "/", "uid": 0,
                        "gid": 0, "capabilities": [], "no_new_privileges": false,
                        "terminal": false},
            "readonly_root": false
        }],
        "read_logs": false
    });
    let data = serde_json::to_string_pretty(&data).unwrap();
    let rego = format!(
        "{}\npolicy_data := {data}\n",
        crate::policy::CONFIDENTIAL_POLICY
    );
    let f = fixture_with(Policy::new(&rego).unwrap());
    let a = &f.agent;
    a.create_sandbox(agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    let named = |cid: &str, kind: &str, name: &str| {
        let mut r = create_req(cid, kind, &format!("reg.example/app@{digest}"));
        let s = r.OCI.as_mut().unwrap();
        s.Annotations
            .insert("io.kubernetes.cri.container-type".into(), kind.into());
        s.Annotations
            .insert(crate::policy::CONTAINER_NAME_ANNOTATION.into(), name.into());
        r
    };
    a.create_container(named("pause", "sandbox", ""))
        .await
        .unwrap();
    a.create_container(named("app1", "container", "app"))
        .await
        .unwrap();
    // Before the pull an empty process passes; the image's config makes it run
    // /bin/app, not the pinned /bin/worker, and that never reaches runc.
    let worker = named("app2", "container", "worker");
    a.policy.check_request(&worker).unwrap();
    let e = a.create_container(worker).await.unwrap_err();
    assert_eq!(e.code(), ttrpc::Code::PERMISSION_DENIED, "{e}");
    assert!(!a.config.state_dir.join("containers/app2").exists());
    assert_eq!(f.rt.calls(), vec!["create pause", "create app1"]);

    let exec = |cid: &str, args: &[&str]| crate::requests::exec(cid, "e1", args);
    a.check_policy(&exec("app1", &["/bin/true"])).await.unwrap();
    assert!(a.check_policy(&exec("app1", &["/bin/sh"])).await.is_err());
    assert!(a
        .check_policy(&exec("pause", &["/bin/true"]))
        .await
        .is_err());
    assert!(a.check_policy(&exec("nope", &["/bin/true"])).await.is_err());
    let mut rd = agent::ReadStreamRequest::new();
    rd.container_id = "app1".into();
    assert!(a.check_policy(&rd).await.is_err(), "read_logs is false");
}
