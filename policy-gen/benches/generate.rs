//! Run time of the generator on a 10-container Deployment in offline mode (ten
//! distinct images read from a blob directory), whole run and its parts.
//!
//! `cargo bench -p coco-policy --bench generate` (BENCH_ROUNDS, default 30).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use coco_policy::image::Resolver;
use coco_policy::initdata::Settings;
use coco_policy::{policy, Options};
use image_mgmt::digest::Sha256Digest;
use image_mgmt::registry::Platform;

const CONTAINERS: usize = 10;

fn put(blobs: &Path, data: &[u8]) -> String {
    let d = Sha256Digest::of(data);
    std::fs::write(blobs.join(d.hex()), data).unwrap();
    d.to_string()
}

/// Ten images with realistic configs; returns their digests.
fn images(dir: &Path) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    (0..CONTAINERS)
        .map(|i| {
            let config = serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            format!("SERVICE=svc{i}"), "LANG=C.UTF-8"],
                    "Entrypoint": ["/usr/bin/tini", "--"],
                    "Cmd": [format!("/usr/bin/svc{i}"), "--config", "/etc/svc/config.yaml"],
                    "WorkingDir": "/srv", "User": "1000:1000",
                    "Volumes": {"/var/cache/svc": {}}
                },
                "rootfs": {"type": "layers", "diff_ids": []}
            });
            let config = serde_json::to_vec(&config).unwrap();
            let cd = put(&blobs, &config);
            let manifest = serde_json::json!({"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cd, "size": config.len()},
                "layers": []});
            put(&blobs, &serde_json::to_vec(&manifest).unwrap())
        })
        .collect()
}

fn deployment(digests: &[String]) -> String {
    let mut containers = String::new();
    for (i, d) in digests.iter().enumerate() {
        containers.push_str(&format!(
            "      - name: svc{i}\n        image: registry.example/team/svc{i}:1.{i}@{d}\n        args: [--port, \"80{i:02}\"]\n        env: [{{name: LEVEL, value: info}}, {{name: ADDR, value: \"0.0.0.0:$(LEVEL)\"}}]\n        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}}}\n        readinessProbe: {{exec: {{command: [/usr/bin/svc{i}, health]}}}}\n        volumeMounts: [{{name: config, mountPath: /etc/svc}}, {{name: scratch, mountPath: /tmp}}]\n"
        ));
    }
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bench}}\nspec:\n  replicas: 2\n  template:\n    metadata:\n      annotations:\n        coco-policy/exec-svc0: '[[\"sh\", \"-c\", \"date\"]]'\n    spec:\n      runtimeClassName: kata-coco-snp\n      securityContext: {{runAsUser: 1000, fsGroup: 2000}}\n      volumes: [{{name: config, configMap: {{name: cfg}}}}, {{name: scratch, emptyDir: {{medium: Memory}}}}]\n      containers:\n{containers}"
    )
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let digests = images(dir.path());
    let manifest = deployment(&digests);
    let opts = Options {
        resolver: Resolver::Offline {
            dir: dir.path().to_owned(),
            platform: Platform::default(),
        },
        initdata: Settings {
            kbs_url: "https://kbs.example:8080".into(),
            kbs_cert_pem: None,
            insecure_registries: vec![],
            image_policy: None,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let g = rt
        .block_on(coco_policy::generate(&manifest, &opts))
        .unwrap();
    assert_eq!(g.pods[0].data.containers.len(), CONTAINERS);
    let data = g.pods[0].data.clone();
    let text = g.pods[0].policy.clone();

    let mut whole = Vec::new();
    let mut caps = Vec::new();
    let mut render = Vec::new();
    let mut verify = Vec::new();
    let mut init = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(
            rt.block_on(coco_policy::generate(&manifest, &opts))
                .unwrap(),
        );
        whole.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(policy::default_caps().unwrap());
        caps.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(policy::render(&data).unwrap());
        render.push(t.elapsed());
        let t = Instant::now();
        policy::verify(&text, &data).unwrap();
        verify.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(coco_policy::initdata::build(&opts.initdata, &text).unwrap());
        init.push(t.elapsed());
    }
    println!(
        "coco-policy, {CONTAINERS}-container Deployment, offline, {rounds} rounds; policy {} bytes, initdata {} bytes",
        text.len(),
        g.pods[0].initdata.toml.len()
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "part", "min ms", "median", "max"
    );
    for (name, v) in [
        ("generate (whole run, in process)", whole),
        ("  default_caps (compile rules, eval)", caps),
        ("  render policy text", render),
        ("  verify (compile rules+data, eval package)", verify),
        ("  initdata build + parse + digest", init),
    ] {
        let (lo, mid, hi) = stats(v);
        println!("{name:<44} {:>9} {:>9} {:>9}", ms(lo), ms(mid), ms(hi));
    }
}
