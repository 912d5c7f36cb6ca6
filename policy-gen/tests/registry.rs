//! The `coco-policy` binary against a real registry: a busybox image pushed with
//! skopeo to `docker-registry`, the demo pod deploy/confidential-pod.yaml, and the
//! outputs checked against skopeo, regorus and the initdata parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use coco_jose::initdata::{Initdata, ANNOTATION};
use common::{busybox_layout, push, set_config, skopeo_digest, tools_present, TestRegistry};

const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/confidential-pod.yaml"
);

fn coco_policy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coco-policy"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "coco-policy failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a run wrote, read back and cross-checked.
struct Outputs {
    data: serde_json::Value,
    manifest_image: String,
    initdata: Initdata,
}

fn read_outputs(out: &Path, manifest_name: &str, stdout: &str) -> Outputs {
    let policy = std::fs::read_to_string(out.join("policy.rego")).unwrap();
    let toml = std::fs::read_to_string(out.join("initdata.toml")).unwrap();
    let initdata = Initdata::parse(&toml).unwrap();
    assert_eq!(initdata.policy(), Some(policy.as_str()));

    // The policy compiles with the agent's engine, and with policy_data in it the
    // request rules are still defined.
    let mut e = regorus::Engine::new();
    e.set_rego_v0(false);
    e.add_policy("policy.rego".into(), policy.clone()).unwrap();
    e.set_input(regorus::Value::from_json_str(r#"{"OCI": {}}"#).unwrap());
    let ccr = e
        .eval_rule("data.agent_policy.CreateContainerRequest".into())
        .unwrap();
    assert!(matches!(ccr, regorus::Value::Bool(_)), "{ccr:?}");
    let data: serde_json::Value = serde_json::from_str(
        &e.eval_rule("data.agent_policy.policy_data".into())
            .unwrap()
            .to_json_str()
            .unwrap(),
    )
    .unwrap();

    // The manifest carries this initdata and the pinned image.
    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(out.join(manifest_name)).unwrap()).unwrap();
    let ann = manifest["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .unwrap();
    assert_eq!(Initdata::from_annotation(ann).unwrap(), initdata);
    let manifest_image = manifest["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();

    // The KBS reference value is the digest the TEE will measure.
    let rv: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("reference-values.json")).unwrap()).unwrap();
    assert_eq!(
        rv,
        serde_json::json!({"init_data_digest": [initdata.digest_hex()]})
    );
    assert!(stdout.contains(&initdata.digest_hex()), "{stdout}");
    assert!(
        stdout.contains("config --auth-private-key admin.key register-initdata"),
        "{stdout}"
    );
    Outputs {
        data,
        manifest_image,
        initdata,
    }
}

#[test]
fn pins_the_demo_pod_against_a_real_registry() {
    if !tools_present(&["docker-registry", "skopeo", "umoci", "busybox"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start();
    let layout = busybox_layout(work.path(), "1.36");
    push(&layout, "1.36", &reg.addr, "library/busybox");
    let digest = skopeo_digest(&reg.addr, "library/busybox", "1.36");

    // The demo pod as it is (docker.io/library/busybox:1.36), docker.io served here.
    let out = work.path().join("out");
    let via = format!("docker.io=http://{}", reg.addr);
    let stdout = ok(&coco_policy(&[
        "--kbs-url",
        "https://kbs.example:8080",
        "--resolve-via",
        &via,
        "--out-dir",
        out.to_str().unwrap(),
        DEMO,
    ]));
    let o = read_outputs(&out, "confidential-pod.yaml", &stdout);
    let pinned = format!("docker.io/library/busybox@{digest}");
    assert_eq!(o.manifest_image, pinned);
    let c = &o.data["containers"][0];
    assert_eq!(c["image"], pinned.as_str());
    assert_eq!(
        c["process"]["args"],
        serde_json::json!(["sh", "-c", "cat /etc/os-release && sleep 3600"])
    );
    // From the image config umoci wrote.
    assert_eq!(c["process"]["env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(c["readonly_root"], true);
    let aa: toml::Table = o.initdata.data["aa.toml"].parse().unwrap();
    assert_eq!(
        aa["token_configs"]["kbs"]["url"].as_str(),
        Some("https://kbs.example:8080")
    );

    // The tag moves: a new run pins the new digest.
    set_config(&layout, "1.36", &["--config.env", "MODE=moved"]);
    push(&layout, "1.36", &reg.addr, "library/busybox");
    let moved = skopeo_digest(&reg.addr, "library/busybox", "1.36");
    assert_ne!(moved, digest);

    // As the VM tests run it: the guest reaches the registry at 10.0.2.2:<port> over
    // plain HTTP, this host at 127.0.0.1:<port>.
    let port = reg.addr.rsplit(':').next().unwrap();
    let guest_reg = format!("10.0.2.2:{port}");
    let pod = work.path().join("pod.yaml");
    std::fs::write(
        &pod,
        std::fs::read_to_string(DEMO).unwrap().replace(
            "docker.io/library/busybox:1.36",
            &format!("{guest_reg}/library/busybox:1.36"),
        ),
    )
    .unwrap();
    let out2 = work.path().join("out2");
    let via = format!("{guest_reg}={}", reg.addr);
    let stdout = ok(&coco_policy(&[
        "--kbs-url",
        "http://10.0.2.2:8080",
        "--insecure-registry",
        &guest_reg,
        "--resolve-via",
        &via,
        "--out-dir",
        out2.to_str().unwrap(),
        pod.to_str().unwrap(),
    ]));
    let o2 = read_outputs(&out2, "pod.yaml", &stdout);
    let pinned = format!("{guest_reg}/library/busybox@{moved}");
    assert_eq!(o2.manifest_image, pinned);
    assert_eq!(o2.data["containers"][0]["image"], pinned.as_str());
    assert_eq!(
        o2.data["containers"][0]["process"]["env"],
        serde_json::json!(["PATH=/bin", "MODE=moved"])
    );
    let cdh: toml::Table = o2.initdata.data["cdh.toml"].parse().unwrap();
    assert_eq!(
        cdh["image"]["insecure_registries"][0].as_str(),
        Some(guest_reg.as_str())
    );
    assert_ne!(o2.initdata.digest(), o.initdata.digest());

    // Without --resolve-via the pod's registry is not reachable from here: no policy.
    let out3 = work.path().join("out3");
    let failed = coco_policy(&[
        "--kbs-url",
        "https://kbs.example:8080",
        "--resolve-via",
        "docker.io=http://127.0.0.1:1",
        "--out-dir",
        out3.to_str().unwrap(),
        DEMO,
    ]);
    assert!(!failed.status.success());
    assert!(!out3.join("policy.rego").exists());
}

#[test]
fn offline_mode_refuses_the_demo_pods_tag() {
    let work = tempfile::tempdir().unwrap();
    let out = coco_policy(&[
        "--offline",
        "--image-configs",
        work.path().to_str().unwrap(),
        "--kbs-url",
        "https://kbs.example:8080",
        "--out-dir",
        work.path().join("out").to_str().unwrap(),
        DEMO,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("docker.io/library/busybox:1.36") && err.contains("needs the digest"),
        "{err}"
    );
    assert!(!work.path().join("out").exists());
}

#[test]
fn help_teaches_with_examples() {
    let help = ok(&coco_policy(&["--help"]));
    for s in [
        "Examples:",
        "--resolve-via",
        "--offline",
        "--image-configs",
        "coco-policy/exec-<container>",
        "register-initdata",
    ] {
        assert!(help.contains(s), "{s} missing from --help");
    }
}
