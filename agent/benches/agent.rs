//! Agent benchmarks (real runc, local docker-registry):
//! - RSS of the `coco-agent` binary when idle;
//! - RSS of an in-process agent idle and its peak while a container's image is pulled;
//! - CreateContainer → first stdout byte with the image already cached.
//!
//! Run: `cargo bench -p coco-agent` (as root, with runc, skopeo, umoci, docker-registry).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use coco_agent::policy::ALLOW_ALL_POLICY;
use coco_agent::protocols::{agent, health};
use common::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn binary_idle_rss() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coco-agent"))
        .arg("--server-addr")
        .arg(format!("unix://{}", sock.display()))
        .arg("--runc-root")
        .arg(dir.path().join("runc"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One request so that the served path is paged in.
    let c = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
        .await
        .unwrap();
    let h = coco_agent::protocols::health_ttrpc::HealthClient::new(c);
    h.check(ctx(), &health::CheckRequest::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    rss
}

fn start(cid: &str) -> agent::StartContainerRequest {
    let mut s = agent::StartContainerRequest::new();
    s.container_id = cid.into();
    s
}

async fn stop_and_remove(c: &coco_agent::protocols::agent_ttrpc::AgentServiceClient, cid: &str) {
    let mut s = agent::SignalProcessRequest::new();
    s.container_id = cid.into();
    s.signal = 9;
    let _ = c.signal_process(ctx(), &s).await;
    let mut r = agent::RemoveContainerRequest::new();
    r.container_id = cid.into();
    r.timeout = 10;
    c.remove_container(ctx(), &r).await.unwrap();
}

/// Policy evaluation cost per request (compiled once, engine cloned per evaluation).
fn policy_bench() {
    let p = coco_agent::policy::Policy::confidential().unwrap();
    let req = create_request(
        "c1",
        "container",
        "registry.local/app:1",
        &["/bin/sh", "-c", "true"],
    );
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        p.check_request(&req).unwrap();
    }
    let allow = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let t = Instant::now();
    for _ in 0..n {
        assert!(p.check_request(&agent::ExecProcessRequest::new()).is_err());
    }
    let deny = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("| policy check, CreateContainerRequest allowed (n={n}) | {allow:.1} µs |");
    println!("| policy check, ExecProcessRequest denied (n={n}) | {deny:.1} µs |");
}

fn main() {
    println!("| measurement | value |");
    println!("|---|---|");
    policy_bench();
    if let Err(why) = prerequisites() {
        println!("SKIPPED (runc part): {why}");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Before anything else, so our own process's RSS is not involved.
        let bin_rss = binary_idle_rss().await;

        let work = tempfile::tempdir().unwrap();
        let reg = Registry::start().await;
        let image = push_busybox(&reg, work.path()).await;
        let ta = TestAgent::start_with(ALLOW_ALL_POLICY, std::slice::from_ref(&reg.addr)).await;
        let (c, _) = ta.clients().await;
        c.create_sandbox(ctx(), &agent::CreateSandboxRequest::new()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let me = std::process::id();
        let idle = rss_kib(me);

        // First create pulls the image; sample our RSS meanwhile.
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
        let p2 = peak.clone();
        let sampler = tokio::spawn(async move {
            loop {
                p2.fetch_max(rss_kib(me), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let t = Instant::now();
        let req = create_request("warm", "container", &image, &["/bin/echo", "x"]);
        c.create_container(ctx(), &req).await.unwrap();
        let pull_ms = t.elapsed().as_secs_f64() * 1000.0;
        sampler.abort();
        stop_and_remove(&c, "warm").await;

        // CreateContainer → first stdout byte, image cached.
        let mut samples = Vec::new();
        for i in 0..7 {
            let cid = format!("b{i}");
            let t = Instant::now();
            let req = create_request(&cid, "container", &image, &["/bin/echo", "ready"]);
            c.create_container(ctx(), &req).await.unwrap();
            c.start_container(ctx(), &start(&cid)).await.unwrap();
            let mut rd = agent::ReadStreamRequest::new();
            rd.container_id = cid.clone();
            rd.exec_id = cid.clone();
            rd.len = 1;
            let got = c.read_stdout(ctx(), &rd).await.unwrap();
            assert_eq!(got.data, b"r");
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            stop_and_remove(&c, &cid).await;
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        c.destroy_sandbox(ctx(), &agent::DestroySandboxRequest::new()).await.unwrap();

        println!("| coco-agent binary RSS, idle (after one Health.Check) | {bin_rss} KiB |");
        println!("| in-process agent RSS, idle (incl. bench harness) | {idle} KiB |");
        println!(
            "| in-process agent peak RSS during first pull (skopeo/umoci run out of process) | {} KiB |",
            peak.load(std::sync::atomic::Ordering::Relaxed)
        );
        println!("| first CreateContainer incl. pull of busybox image | {pull_ms:.1} ms |");
        println!(
            "| CreateContainer→first stdout byte, cached image (n={}): min / median / max | {:.1} / {:.1} / {:.1} ms |",
            samples.len(),
            samples[0],
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    });
}
