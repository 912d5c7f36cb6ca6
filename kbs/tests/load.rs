//! Bounded load on loopback: 64 concurrent clients × 200 full handshakes
//! (auth → attest → resource) against a real `kbs` process, with zero errors
//! and memory that stays flat while sessions churn through a small table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{KbsProcess, POD_INIT_DATA};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const CLIENTS: usize = 64;
const ROUNDS: usize = 200;
const WARMUP_ROUNDS: usize = 20;

async fn run_round(kbs: &Arc<KbsProcess>, rounds: usize, errors: &Arc<AtomicUsize>) {
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let kbs = kbs.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let client = kbs.sample_client(POD_INIT_DATA, false);
                match client.get_resource("default/key/load").await {
                    Ok(v) if v.as_slice() == b"load-secret" => {}
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("handshake failed: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_two_hundred_handshakes_each() {
    // The per-address /auth limit is for the internet, not for 64 clients on
    // one loopback address; a small session table forces eviction churn.
    let kbs = Arc::new(KbsProcess::start(
        "[rate_limit]\nauth_per_second = 1000000.0\nauth_burst = 1000000.0\n[session]\nmax_sessions = 1024",
    ));
    kbs.set_resource("default/key/load", b"load-secret").await;
    kbs.allow_sample().await;
    let errors = Arc::new(AtomicUsize::new(0));

    run_round(&kbs, WARMUP_ROUNDS, &errors).await;
    let (rss_warm, _) = kbs.rss_kib();
    run_round(&kbs, ROUNDS - WARMUP_ROUNDS, &errors).await;
    let (rss_end, hwm) = kbs.rss_kib();

    assert_eq!(errors.load(Ordering::Relaxed), 0, "handshakes failed");
    let metrics = kbs
        .http()
        .get(format!("{}/metrics", kbs.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sessions: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kbs_sessions "))
        .unwrap()
        .parse()
        .unwrap();
    let released: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kbs_resource_requests_total{outcome=\"released\"} "))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "load: {} handshakes, KBS RSS after warm-up {rss_warm} KiB, at end {rss_end} KiB, peak {hwm} KiB, sessions {sessions}",
        CLIENTS * ROUNDS
    );
    assert_eq!(released, CLIENTS * ROUNDS);
    assert!(
        sessions <= 1024,
        "session table grew past its bound: {sessions}"
    );
    // 9× more handshakes after warm-up may not cost more than 32 MiB more.
    assert!(
        rss_end < rss_warm + 32 * 1024,
        "KBS memory grew from {rss_warm} KiB to {rss_end} KiB"
    );
}
