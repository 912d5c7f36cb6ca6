//! A full pod lifecycle over the agent's unix socket with real runc, an image pulled
//! from a local docker-registry, and the policies enforced on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use coco_agent::policy::{ALLOW_ALL_POLICY, CONFIDENTIAL_POLICY};
use coco_agent::protocols::{agent, health, oci};
use common::*;

fn status_code(e: &ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an rpc status: {other:?}"),
    }
}

fn sig(cid: &str, exec_id: &str, signal: u32) -> agent::SignalProcessRequest {
    let mut s = agent::SignalProcessRequest::new();
    s.container_id = cid.into();
    s.exec_id = exec_id.into();
    s.signal = signal;
    s
}

fn wait(cid: &str, exec_id: &str) -> agent::WaitProcessRequest {
    let mut w = agent::WaitProcessRequest::new();
    w.container_id = cid.into();
    w.exec_id = exec_id.into();
    w
}

fn start(cid: &str) -> agent::StartContainerRequest {
    let mut s = agent::StartContainerRequest::new();
    s.container_id = cid.into();
    s
}

fn remove(cid: &str) -> agent::RemoveContainerRequest {
    let mut r = agent::RemoveContainerRequest::new();
    r.container_id = cid.into();
    r.timeout = 10;
    r
}

fn exec_req(cid: &str, exec_id: &str, args: &[&str]) -> agent::ExecProcessRequest {
    coco_agent::requests::exec(cid, exec_id, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pod_lifecycle_with_runc_and_registry() {
    if let Err(why) = prerequisites() {
        return unavailable(&why);
    }
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start().await;
    let image = push_busybox(&reg, work.path()).await;
    let ta = TestAgent::start_with(ALLOW_ALL_POLICY, std::slice::from_ref(&reg.addr)).await;
    let (c, h) = ta.clients().await;

    let hc = h.check(ctx(), &health::CheckRequest::new()).await.unwrap();
    assert_eq!(
        hc.status.enum_value().unwrap(),
        health::health_check_response::ServingStatus::SERVING
    );
    assert!(!h
        .version(ctx(), &health::CheckRequest::new())
        .await
        .unwrap()
        .agent_version
        .is_empty());

    let mut sb = agent::CreateSandboxRequest::new();
    sb.hostname = "pod".into();
    sb.sandbox_id = "sandbox1".into();
    c.create_sandbox(ctx(), &sb).await.unwrap();
    c.get_guest_details(ctx(), &agent::GuestDetailsRequest::new())
        .await
        .unwrap();

    // CopyFile in two chunks, as the shim does for resolv.conf.
    let dst = ta.copy_root().join("shared/pause-abc-resolv.conf");
    for (off, chunk) in [(0, &b"nameserver "[..]), (11, &b"10.0.0.1\n"[..])] {
        let mut cp = agent::CopyFileRequest::new();
        cp.path = dst.display().to_string();
        cp.file_size = 20;
        cp.file_mode = 0o100644;
        cp.dir_mode = 0o755;
        cp.offset = off;
        cp.data = chunk.to_vec();
        c.copy_file(ctx(), &cp).await.unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&dst).unwrap(),
        "nameserver 10.0.0.1\n"
    );

    // Pause container from the guest image's bundle.
    c.create_container(ctx(), &create_request("pause", "sandbox", "", &["/pause"]))
        .await
        .unwrap();
    c.start_container(ctx(), &start("pause")).await.unwrap();

    // App container from the registry; args from the request, env/cwd from the image.
    let app = create_request(
        "app",
        "container",
        &image,
        &[
            "/bin/sh",
            "-c",
            "echo hello-from-app; echo cwd=$(pwd) env=$FROM_IMAGE; echo oops >&2; exit 3",
        ],
    );
    c.create_container(ctx(), &app).await.unwrap();
    c.start_container(ctx(), &start("app")).await.unwrap();
    let out = String::from_utf8(read_all(&c, "app", "app", false).await).unwrap();
    assert_eq!(out, "hello-from-app\ncwd=/tmp env=yes\n");
    assert_eq!(read_all(&c, "app", "app", true).await, b"oops\n");
    assert_eq!(
        c.wait_process(ctx(), &wait("app", "app"))
            .await
            .unwrap()
            .status,
        3
    );

    // Exec in the running pause container (the dev policy allows it), with stdin.
    c.exec_process(ctx(), &exec_req("pause", "e1", &["/bin/cat"]))
        .await
        .unwrap();
    let mut ws = agent::WriteStreamRequest::new();
    ws.container_id = "pause".into();
    ws.exec_id = "e1".into();
    ws.data = b"through stdin\n".to_vec();
    assert_eq!(c.write_stdin(ctx(), &ws).await.unwrap().len, 14);
    let mut cs = agent::CloseStdinRequest::new();
    cs.container_id = "pause".into();
    cs.exec_id = "e1".into();
    c.close_stdin(ctx(), &cs).await.unwrap();
    assert_eq!(read_all(&c, "pause", "e1", false).await, b"through stdin\n");
    assert_eq!(
        c.wait_process(ctx(), &wait("pause", "e1"))
            .await
            .unwrap()
            .status,
        0
    );

    // A terminal exec: window size set through TtyWinResize, output through the pty.
    let mut te = exec_req(
        "pause",
        "t1",
        &["/bin/sh", "-c", "sleep 1; stty size; echo tty-done"],
    );
    te.process.as_mut().unwrap().Terminal = true;
    c.exec_process(ctx(), &te).await.unwrap();
    let mut rs = agent::TtyWinResizeRequest::new();
    rs.container_id = "pause".into();
    rs.exec_id = "t1".into();
    rs.row = 40;
    rs.column = 100;
    c.tty_win_resize(ctx(), &rs).await.unwrap();
    let out = String::from_utf8(read_all(&c, "pause", "t1", false).await).unwrap();
    assert!(out.contains("40 100\r\n"), "{out:?}");
    assert!(out.contains("tty-done"), "{out:?}");
    assert_eq!(
        c.wait_process(ctx(), &wait("pause", "t1"))
            .await
            .unwrap()
            .status,
        0
    );
    rs.exec_id = "pause".into();
    let (code, _) = status_code(&c.tty_win_resize(ctx(), &rs).await.unwrap_err());
    assert_eq!(
        code,
        ttrpc::Code::FAILED_PRECONDITION,
        "no terminal on the pause process"
    );

    // Cgroup statistics of the running pause container.
    let mut st = agent::StatsContainerRequest::new();
    st.container_id = "pause".into();
    let stats = c.stats_container(ctx(), &st).await.unwrap();
    assert!(stats.cgroup_stats.memory_stats.usage.usage > 0);
    assert!(stats.cgroup_stats.pids_stats.current >= 1);

    // Stop: SIGKILL to all processes, wait, remove, destroy.
    c.signal_process(ctx(), &sig("pause", "", 9)).await.unwrap();
    assert_eq!(
        c.wait_process(ctx(), &wait("pause", "pause"))
            .await
            .unwrap()
            .status,
        137
    );
    c.remove_container(ctx(), &remove("app")).await.unwrap();
    c.remove_container(ctx(), &remove("pause")).await.unwrap();
    c.destroy_sandbox(ctx(), &agent::DestroySandboxRequest::new())
        .await
        .unwrap();
    assert!(!ta.dir.path().join("state/containers/app").exists());
    let e = c
        .wait_process(ctx(), &wait("app", "app"))
        .await
        .unwrap_err();
    assert_eq!(status_code(&e).0, ttrpc::Code::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confidential_policy_denies_exec_stdio_and_set_policy() {
    if let Err(why) = prerequisites() {
        return unavailable(&why);
    }
    let ta = TestAgent::start(CONFIDENTIAL_POLICY).await;
    let (c, _) = ta.clients().await;
    c.create_sandbox(ctx(), &agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    // The host's bind of the guest's /etc is refused outright (not just filtered).
    let mut pause = create_request("pause", "sandbox", "", &["/pause"]);
    let e = c.create_container(ctx(), &pause).await.unwrap_err();
    assert_eq!(status_code(&e).0, ttrpc::Code::PERMISSION_DENIED);
    pause
        .OCI
        .as_mut()
        .unwrap()
        .Mounts
        .retain(|m| m.source != "/etc");
    c.create_container(ctx(), &pause).await.unwrap();
    c.start_container(ctx(), &start("pause")).await.unwrap();

    let e = c
        .exec_process(ctx(), &exec_req("pause", "e1", &["/bin/true"]))
        .await
        .unwrap_err();
    let (code, msg) = status_code(&e);
    assert_eq!(code, ttrpc::Code::PERMISSION_DENIED);
    assert!(msg.contains("ExecProcessRequest"), "{msg}");

    let mut rd = agent::ReadStreamRequest::new();
    rd.container_id = "pause".into();
    rd.exec_id = "pause".into();
    rd.len = 10;
    let (code, msg) = status_code(&c.read_stdout(ctx(), &rd).await.unwrap_err());
    assert_eq!(code, ttrpc::Code::PERMISSION_DENIED);
    assert!(msg.contains("ReadStreamRequest"), "{msg}");

    let mut cp = agent::CopyFileRequest::new();
    cp.path = "/run/evil".into();
    cp.file_size = 1;
    cp.data = b"x".to_vec();
    assert_eq!(
        status_code(&c.copy_file(ctx(), &cp).await.unwrap_err()).0,
        ttrpc::Code::PERMISSION_DENIED
    );

    // The current policy forbids SetPolicy: the allow-all policy cannot be installed.
    let mut sp = agent::SetPolicyRequest::new();
    sp.policy = ALLOW_ALL_POLICY.into();
    let (code, msg) = status_code(&c.set_policy(ctx(), &sp).await.unwrap_err());
    assert_eq!(code, ttrpc::Code::PERMISSION_DENIED);
    assert!(msg.contains("SetPolicyRequest"), "{msg}");
    let e = c
        .exec_process(ctx(), &exec_req("pause", "e2", &["/bin/true"]))
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&e).0,
        ttrpc::Code::PERMISSION_DENIED,
        "still denied"
    );

    // RPCs we do not implement say so by name.
    let (code, msg) = status_code(
        &c.get_metrics(ctx(), &agent::GetMetricsRequest::new())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, ttrpc::Code::UNIMPLEMENTED);
    assert!(msg.contains("GetMetrics"), "{msg}");

    c.signal_process(ctx(), &sig("pause", "", 9)).await.unwrap();
    c.wait_process(ctx(), &wait("pause", "pause"))
        .await
        .unwrap();
    c.destroy_sandbox(ctx(), &agent::DestroySandboxRequest::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_allowed_then_enforced() {
    if let Err(why) = prerequisites() {
        return unavailable(&why);
    }
    let ta = TestAgent::start(ALLOW_ALL_POLICY).await;
    let (c, _) = ta.clients().await;
    let mut sp = agent::SetPolicyRequest::new();
    sp.policy = CONFIDENTIAL_POLICY.into();
    c.set_policy(ctx(), &sp).await.unwrap();
    // Now the confidential policy is in force, and it forbids going back.
    sp.policy = ALLOW_ALL_POLICY.into();
    assert_eq!(
        status_code(&c.set_policy(ctx(), &sp).await.unwrap_err()).0,
        ttrpc::Code::PERMISSION_DENIED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_is_reported_by_get_oom_event() {
    if let Err(why) = prerequisites() {
        return unavailable(&why);
    }
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start().await;
    let image = push_busybox(&reg, work.path()).await;
    let ta = TestAgent::start_with(ALLOW_ALL_POLICY, std::slice::from_ref(&reg.addr)).await;
    let (c, _) = ta.clients().await;
    c.create_sandbox(ctx(), &agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    // A shell that keeps growing a variable under a 16 MiB limit.
    let mut req = create_request(
        "hog",
        "container",
        &image,
        &["/bin/sh", "-c", "a=x; while :; do a=$a$a; done"],
    );
    let mut mem = oci::LinuxMemory::new();
    mem.Limit = 16 << 20;
    let mut res = oci::LinuxResources::new();
    res.Memory = Some(mem).into();
    req.OCI.as_mut().unwrap().Linux.as_mut().unwrap().Resources = Some(res).into();
    c.create_container(ctx(), &req).await.unwrap();
    c.start_container(ctx(), &start("hog")).await.unwrap();
    let ev = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        c.get_oom_event(ctx(), &agent::GetOOMEventRequest::new()),
    )
    .await
    .expect("OOM event within 30 s")
    .unwrap();
    assert_eq!(ev.container_id, "hog");
    assert_eq!(
        c.wait_process(ctx(), &wait("hog", "hog"))
            .await
            .unwrap()
            .status,
        137
    );
    c.remove_container(ctx(), &remove("hog")).await.unwrap();
}
