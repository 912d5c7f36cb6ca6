//! Full RCAR handshakes per second against a real `kbs` process over TLS on
//! loopback: auth → attest (sample evidence) → resource (JWE), each with a
//! fresh client, TLS connection and TEE key, as a booting guest would.
//!
//! `cargo bench -p kbs --bench handshake` prints a table; `HANDSHAKES` sets
//! the total per concurrency level (default 1000). With `COCO_PEER_TRUSTEE_KBS`
//! naming Trustee's `kbs` (built outside this repository), the same client runs
//! against it in the same run, with the same certificate, for comparison.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use attester::kbs_client::{ClientOptions, KbsClient};
use attester::sample::SampleAttester;
use common::{KbsProcess, POD_INIT_DATA};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A KBS under test: where it listens, the CA its TLS certificate chains to, its pid.
struct Target {
    name: &'static str,
    url: String,
    ca_pem: Vec<u8>,
    pid: u32,
}

impl Target {
    /// Peak RSS (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

async fn level(t: &Arc<Target>, concurrency: usize, total: usize) -> (f64, Duration, Duration) {
    let per_task = total.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let s = Instant::now();
                // With initdata, as a pod sends it (the KBS parses and hashes it).
                let digest = coco_jose::initdata::Initdata::parse(POD_INIT_DATA)
                    .expect("initdata")
                    .digest()
                    .to_vec();
                let client = KbsClient::new(
                    &t.url,
                    Arc::new(SampleAttester::reporting(None, Some(&digest))),
                    ClientOptions {
                        ca_pem: Some(t.ca_pem.clone()),
                        init_data_toml: Some(POD_INIT_DATA.to_owned()),
                        ..Default::default()
                    },
                )
                .expect("client");
                let v = client
                    .get_resource("default/key/bench")
                    .await
                    .unwrap_or_else(|e| panic!("handshake with {}: {e}", t.name));
                assert_eq!(v.as_slice(), b"bench-secret");
                lat.push(s.elapsed());
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

/// Trustee's own KBS (`COCO_PEER_TRUSTEE_KBS`, built outside this repository with its
/// built-in attestation service): same TLS certificate and loopback as ours, sessions in
/// memory, `InsecureAllowAll` admin to store the resource and an allow-all resource policy.
struct TrusteeKbs {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for TrusteeKbs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_trustee(bin: &std::ffi::OsStr, ours: &KbsProcess) -> (TrusteeKbs, Target) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (d, tls) = (dir.path().display(), ours.dir.path().display());
    let config = format!(
        "[http_server]\nsockets = [\"127.0.0.1:{port}\"]\nprivate_key = \"{tls}/tls.key\"\n\
         certificate = \"{tls}/tls.crt\"\n\
         [attestation_token]\ninsecure_header_jwk = true\n\
         [attestation_service]\ntype = \"coco_as_builtin\"\nwork_dir = \"{d}/as\"\n\
         [attestation_service.attestation_token_broker]\nduration_min = 5\n\
         [attestation_service.rvps_config]\ntype = \"BuiltIn\"\n\
         [admin]\nauthorization_mode = \"InsecureAllowAll\"\n\
         [storage_backend]\nstorage_type = \"LocalFs\"\nsession_storage_type = \"Memory\"\n\
         [storage_backend.backends.local_fs]\ndir_path = \"{d}/storage\"\n\
         [[plugins]]\nname = \"resource\"\nstorage_backend_type = \"kvstorage\"\n"
    );
    std::fs::write(dir.path().join("kbs.toml"), config).unwrap();
    let child = std::process::Command::new(bin)
        .arg("--config-file")
        .arg(dir.path().join("kbs.toml"))
        .stdout(std::process::Stdio::null())
        .env("RUST_LOG", "error")
        .spawn()
        .expect("start Trustee's kbs");
    let pid = child.id();
    let t = TrusteeKbs { child, _dir: dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("https://localhost:{port}");
    let http = ours.http();
    let allow = "package policy\ndefault allow = false\nallow if { data.plugin == \"resource\" }\n";
    use base64::Engine;
    for (path, body) in [
        ("resource/default/key/bench", b"bench-secret".to_vec()),
        (
            "resource-policy",
            serde_json::to_vec(&serde_json::json!({
                "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(allow)
            }))
            .unwrap(),
        ),
    ] {
        let r = http
            .post(format!("{url}/kbs/v0/{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("Trustee admin API");
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    let target = Target {
        name: "Trustee KBS",
        url,
        ca_pem: ours.ca_pem.clone(),
        pid,
    };
    (t, target)
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
        let kbs = KbsProcess::start(
            "[rate_limit]\nauth_per_second = 1000000.0\nauth_burst = 1000000.0",
        );
        kbs.set_resource("default/key/bench", b"bench-secret").await;
        kbs.allow_sample().await;
        let mut targets = vec![Arc::new(Target {
            name: "coco kbs",
            url: kbs.url.clone(),
            ca_pem: kbs.ca_pem.clone(),
            pid: kbs.pid(),
        })];
        let _trustee = match std::env::var_os("COCO_PEER_TRUSTEE_KBS") {
            Some(bin) => {
                let (t, target) = start_trustee(&bin, &kbs).await;
                targets.push(Arc::new(target));
                Some(t)
            }
            None => {
                println!("(Trustee's KBS skipped: COCO_PEER_TRUSTEE_KBS does not name it)");
                None
            }
        };
        println!("full RCAR handshakes (auth+attest+resource, new TLS connection and TEE key each), {total} per level");
        println!(
            "{:>11} | {:>11} | {:>13} | {:>9} | {:>9} | {:>13}",
            "KBS", "concurrency", "handshakes/s", "p50 ms", "p99 ms", "KBS peak RSS"
        );
        for t in &targets {
            // Warm up (page in, first TLS handshakes).
            level(t, 4, 40).await;
            for c in [1, 16, 64] {
                let (rate, p50, p99) = level(t, c, total).await;
                println!(
                    "{:>11} | {c:>11} | {rate:>13.1} | {:>9.2} | {:>9.2} | {:>9.1} MiB",
                    t.name,
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3,
                    t.peak_rss_mib()
                );
            }
        }
    });
}
