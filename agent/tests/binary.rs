//! The `coco-agent` binary itself: takes its address from `KATA_AGENT_SERVER_ADDR` (as
//! Kata's agent does), serves Health and the policy-restricted AgentService, and exits
//! cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coco_agent::protocols::{agent, agent_ttrpc, health, health_ttrpc};

#[tokio::test]
async fn binary_serves_address_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let addr = format!("unix://{}", sock.display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coco-agent"))
        .env("KATA_AGENT_SERVER_ADDR", &addr)
        .arg("--runc-root")
        .arg(dir.path().join("runc"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let c = ttrpc::r#async::Client::connect(&addr).await.unwrap();
    let h = health_ttrpc::HealthClient::new(c.clone());
    let a = agent_ttrpc::AgentServiceClient::new(c);
    let ctx = || ttrpc::context::with_timeout(0);
    let r = h.check(ctx(), &health::CheckRequest::new()).await.unwrap();
    assert_eq!(r.status.value(), 1);
    // The default policy is the confidential one.
    let e = a
        .exec_process(ctx(), &agent::ExecProcessRequest::new())
        .await
        .unwrap_err();
    match e {
        ttrpc::Error::RpcStatus(s) => {
            assert_eq!(s.code(), ttrpc::Code::PERMISSION_DENIED);
            assert!(s.message().contains("ExecProcessRequest"));
        }
        other => panic!("{other:?}"),
    }
    // The binary pulls in the guest through the image library: an image from an
    // unreachable registry is refused with the reason (not a crash, no rootfs).
    a.create_sandbox(ctx(), &agent::CreateSandboxRequest::new())
        .await
        .unwrap();
    let mut st = agent::Storage::new();
    st.driver = "image_guest_pull".into();
    st.source = "registry.invalid/app:1".into();
    let mut req = agent::CreateContainerRequest::new();
    req.container_id = "app".into();
    req.storages.push(st);
    req.OCI = Some(Default::default()).into();
    match a.create_container(ctx(), &req).await.unwrap_err() {
        ttrpc::Error::RpcStatus(s) => {
            assert_ne!(s.code(), ttrpc::Code::OK);
            assert!(
                s.message().contains("registry.invalid/app:1"),
                "{:?}: {}",
                s.code(),
                s.message()
            );
        }
        other => panic!("{other:?}"),
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

fn spawn_agent(dir: &std::path::Path, addr: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_coco-agent"))
        .arg("--server-addr")
        .arg(addr)
        .arg("--runc-root")
        .arg(dir.join("runc"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn binary_listens_on_vsock_and_refuses_tcp() {
    let dir = tempfile::tempdir().unwrap();
    // TCP would expose the agent on the network: refused.
    let out = spawn_agent(dir.path(), "tcp://127.0.0.1:1024")
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad server address"));

    if !std::path::Path::new("/dev/vsock").exists() {
        eprintln!("SKIPPED vsock part: no /dev/vsock on this host");
        return;
    }
    let port = 20000 + std::process::id() % 10000;
    let mut child = spawn_agent(dir.path(), &format!("vsock://-1:{port}"));
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "agent bound vsock and keeps serving"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}
