//! Full RCAR handshakes per second against a real `kbs` process over TLS on
//! loopback: auth → attest (sample evidence) → resource (JWE), each with a
//! fresh client, TLS connection and TEE key, as a booting guest would.
//!
//! `cargo bench -p kbs --bench handshake` prints a table; `HANDSHAKES` sets
//! the total per concurrency level (default 1000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use attester::sample::SampleAttester;
use common::{KbsProcess, ALLOW_SAMPLE};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn level(
    kbs: &Arc<KbsProcess>,
    concurrency: usize,
    total: usize,
) -> (f64, Duration, Duration) {
    let per_task = total.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let kbs = kbs.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                let client = kbs.client(Arc::new(SampleAttester::default()), false);
                let v = client
                    .get_resource("default/key/bench")
                    .await
                    .expect("handshake");
                assert_eq!(v.as_slice(), b"bench-secret");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let wall = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (all.len() as f64 / wall.as_secs_f64(), pct(0.50), pct(0.99))
}

fn main() {
    let total: usize = std::env::var("HANDSHAKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let kbs = Arc::new(KbsProcess::start(
            "[rate_limit]\nauth_per_second = 1000000.0\nauth_burst = 1000000.0",
        ));
        kbs.set_resource("default/key/bench", b"bench-secret").await;
        kbs.set_resource_policy(ALLOW_SAMPLE).await;
        // Warm up (page in, first TLS handshakes).
        level(&kbs, 4, 40).await;
        println!("full RCAR handshakes (auth+attest+resource, new TLS connection and TEE key each), {total} per level");
        println!("{:>11} | {:>13} | {:>9} | {:>9} | {:>13}", "concurrency", "handshakes/s", "p50 ms", "p99 ms", "KBS peak RSS");
        for c in [1, 16, 64] {
            let (rate, p50, p99) = level(&kbs, c, total).await;
            let (_, hwm) = kbs.rss_kib();
            println!(
                "{c:>11} | {rate:>13.1} | {:>9.2} | {:>9.2} | {:>9.1} MiB",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                hwm as f64 / 1024.0
            );
        }
    });
}
