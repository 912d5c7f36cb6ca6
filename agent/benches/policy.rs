//! Policy evaluation with workload data: a pod of ten pinned containers, per
//! CreateContainer both evaluations (the request as received, then the final spec), and
//! a listed exec. Target: under 5 ms per CreateContainer.
//!
//! Run: `cargo bench -p coco-agent --bench policy` (`-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../../tests/vm/src/k8s.rs"]
mod k8s;

use std::hint::black_box;

use coco_agent::image::ImageConfig;
use coco_agent::policy::{Policy, CONFIDENTIAL_POLICY, CONTAINER_NAME_KEY};
use criterion::{criterion_group, criterion_main, Criterion};
use k8s::{KubeContainer, KubePod};
use serde_json::json;

const CONTAINERS: usize = 10;
const IMAGE_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn container(i: usize) -> KubeContainer {
    let digest = format!("sha256:{:064x}", i + 1);
    KubeContainer::new(
        &format!("c{i}"),
        &format!("registry.example/team/app{i}@{digest}"),
        &["/app", "--serve", &format!("--port={}", 8000 + i)],
        &[IMAGE_ENV, &format!("INSTANCE={i}")],
    )
}

/// The pins of `c`, spelled as the generator does (docs/WORKLOAD-POLICY.md).
fn pins(c: &KubeContainer) -> serde_json::Value {
    json!({
        "name": c.name,
        "image": c.image,
        "process": {
            "args": c.args, "env": c.env, "cwd": c.cwd, "uid": c.uid, "gid": c.gid,
            "additional_gids": [c.gid], "capabilities": c.capabilities,
            "no_new_privileges": c.no_new_privileges, "terminal": false
        },
        "readonly_root": c.readonly_root,
        "mounts": [{"destination": "/data", "type": "bind",
                    "source": "^/run/kata-containers/shared/containers/[A-Za-z0-9]+-[A-Za-z0-9]+-data$"}],
        "exec": [["sh", "-c", "date"], ["/app", "--health"]]
    })
}

fn bench(cr: &mut Criterion) {
    let pod = KubePod {
        name: "bench".into(),
        namespace: "default".into(),
        sandbox_id: "5b0c1d2e3f4a".into(),
    };
    let all: Vec<KubeContainer> = (0..CONTAINERS).map(container).collect();
    let data = json!({
        "version": 1,
        "containers": all.iter().map(pins).collect::<Vec<_>>(),
        "env_rules": ["^HOSTNAME=[A-Za-z0-9.-]+$", "^KUBERNETES_[A-Z0-9_]+=[A-Za-z0-9./:_-]*$"],
        "read_logs": true
    });
    let data = serde_json::to_string_pretty(&data).unwrap();
    let p = Policy::new(&format!("{CONFIDENTIAL_POLICY}\npolicy_data := {data}\n")).unwrap();
    // The last entry: the lookup walks all of them.
    let last = &all[CONTAINERS - 1];
    let req = k8s::container_request(&pod, "c9cid", last);
    let mut fin = req.OCI.as_ref().unwrap().clone();
    coco_agent::spec::merge_image_config(fin.Process.as_mut().unwrap(), &ImageConfig::default());
    coco_agent::spec::fix_namespaces(fin.Linux.as_mut().unwrap(), Some(42), false);
    // Measure admissions, not an early denial.
    p.check_request(&req).unwrap();
    p.check_final_create(&req, &fin).unwrap();
    let exec = coco_agent::requests::exec("c9cid", "e1", &["/app", "--health"]);
    let named = [(CONTAINER_NAME_KEY, regorus::Value::from(last.name.as_str()))];
    p.check_request_with(&exec, &named).unwrap();

    let mut g = cr.benchmark_group(format!("policy_data_{CONTAINERS}_containers"));
    g.bench_function("create_container_both_evaluations", |b| {
        b.iter(|| {
            p.check_request(black_box(&req)).unwrap();
            p.check_final_create(black_box(&req), black_box(&fin))
                .unwrap();
        })
    });
    // The same request under the rules without data, for comparison.
    let default = Policy::confidential().unwrap();
    g.bench_function("create_container_both_evaluations_without_data", |b| {
        b.iter(|| {
            default.check_request(black_box(&req)).unwrap();
            default
                .check_final_create(black_box(&req), black_box(&fin))
                .unwrap();
        })
    });
    g.bench_function("exec_listed", |b| {
        b.iter(|| p.check_request_with(black_box(&exec), &named).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
