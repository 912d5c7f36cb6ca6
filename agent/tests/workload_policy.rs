//! The confidential policy with workload data (docs/WORKLOAD-POLICY.md): the requests the
//! runtime sends for the pinned pod pass, and each host attack on it is refused. The
//! requests come from the model of the runtime the VM tests use (tests/vm/src/k8s.rs), the
//! pins are written here as a pod owner would, so neither is derived from the other.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

#[allow(dead_code)]
#[path = "../../tests/vm/src/k8s.rs"]
mod k8s;

use coco_agent::image::ImageConfig;
use coco_agent::policy::{Policy, PolicyError, CONFIDENTIAL_POLICY, CONTAINER_NAME_KEY};
use coco_agent::protocols::{agent, oci};
use coco_agent::spec;
use k8s::{KubeContainer, KubePod};
use serde_json::json;

const DIGEST: &str = "sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7";
const OTHER_DIGEST: &str =
    "sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79";
const IMAGE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn pod() -> KubePod {
    KubePod {
        name: "web".into(),
        namespace: "default".into(),
        sandbox_id: "5b0c1d2e3f4a".into(),
    }
}

/// The pinned `app`: busybox by digest, `sh -c 'sleep 3600'`, only NET_BIND_SERVICE.
fn app() -> KubeContainer {
    let mut c = KubeContainer::new(
        "app",
        &format!("busybox:1.36@{DIGEST}"),
        &["sh", "-c", "sleep 3600"],
        &[IMAGE_PATH, "MODE=prod"],
    );
    c.capabilities = vec!["CAP_NET_BIND_SERVICE".into()];
    c.readonly_root = true;
    c
}

/// A second pinned container whose (sloppy) mount pattern would match any guest path.
fn sidecar() -> KubeContainer {
    KubeContainer::new(
        "sidecar",
        &format!("docker.io/library/busybox@{DIGEST}"),
        &["sh", "-c", "sleep 3600"],
        &[IMAGE_PATH],
    )
}

/// What the pod owner pins (the generator's output for the pod above).
fn policy_data(read_logs: bool) -> serde_json::Value {
    json!({
        "version": 1,
        "containers": [
            {
                "name": "app",
                "image": format!("docker.io/library/busybox@{DIGEST}"),
                "process": {
                    "args": ["sh", "-c", "sleep 3600"],
                    "env": [IMAGE_PATH, "MODE=prod"],
                    "cwd": "/",
                    "uid": 0,
                    "gid": 0,
                    "additional_gids": [0],
                    "capabilities": ["CAP_NET_BIND_SERVICE"],
                    "no_new_privileges": false,
                    "terminal": false
                },
                "readonly_root": true,
                "mounts": [
                    {"destination": "/data", "type": "bind",
                     "source": "^/run/kata-containers/shared/containers/[A-Za-z0-9]+-[A-Za-z0-9]+-data$"}
                ],
                "exec": [["sh", "-c", "date"]]
            },
            {
                "name": "sidecar",
                "image": format!("busybox@{DIGEST}"),
                "process": {
                    "args": ["sh", "-c", "sleep 3600"],
                    "env": [IMAGE_PATH],
                    "cwd": "/",
                    "uid": 0,
                    "gid": 0,
                    "additional_gids": [0],
                    "capabilities": k8s::DEFAULT_CAPS,
                    "no_new_privileges": false,
                    "terminal": false
                },
                "readonly_root": false,
                "mounts": [{"destination": "/steal", "type": "bind", "source": "/run/kata-containers/.+"}],
                "exec": []
            }
        ],
        "env_rules": ["^HOSTNAME=[A-Za-z0-9.-]+$", "^KUBERNETES_[A-Z0-9_]+=[A-Za-z0-9./:_-]*$"],
        "read_logs": read_logs
    })
}

/// The shipped rules with the pins appended, as the generator writes a policy (pretty:
/// regorus refuses lines over 1024 columns).
fn policy_with(data: &serde_json::Value) -> Policy {
    let data = serde_json::to_string_pretty(data).unwrap();
    Policy::new(&format!("{CONFIDENTIAL_POLICY}\npolicy_data := {data}\n")).unwrap()
}

fn policy() -> Policy {
    policy_with(&policy_data(false))
}

fn create(c: &KubeContainer) -> agent::CreateContainerRequest {
    k8s::container_request(&pod(), &format!("{}0f0f", c.name), c)
}

/// A change the host makes to what it sends.
type Attack<T> = Box<dyn Fn(&mut T)>;

fn denied<M: protobuf::MessageFull>(p: &Policy, r: &M) -> bool {
    matches!(p.check_request(r), Err(PolicyError::Denied { .. }))
}

fn oci_mut(r: &mut agent::CreateContainerRequest) -> &mut oci::Spec {
    r.OCI.as_mut().unwrap()
}

fn process_mut(r: &mut agent::CreateContainerRequest) -> &mut oci::Process {
    oci_mut(r).Process.as_mut().unwrap()
}

fn bind(dst: &str, src: &str) -> oci::Mount {
    let mut m = oci::Mount::new();
    m.destination = dst.into();
    m.type_ = "bind".into();
    m.source = src.into();
    m.options = vec!["rbind".into(), "rprivate".into()];
    m
}

/// The request with `OCI` as the agent finalises it: the image config merged into what
/// the host left empty, namespaces joined to the pause container's.
fn final_spec(r: &agent::CreateContainerRequest, img: &ImageConfig) -> oci::Spec {
    let mut s = r.OCI.as_ref().unwrap().clone();
    spec::merge_image_config(s.Process.as_mut().unwrap(), img);
    spec::fix_namespaces(s.Linux.as_mut().unwrap(), Some(42), false);
    s
}

#[test]
fn the_runtime_s_requests_for_the_pinned_pod_pass() {
    let p = policy();
    p.check_request(&k8s::pause_request(&pod())).unwrap();
    p.check_request(&k8s::sandbox_request(&pod())).unwrap();
    let mut r = create(&app());
    p.check_request(&r).unwrap();
    // The owner's data volume, a bind of a file the shim copied in.
    oci_mut(&mut r).Mounts.push(bind(
        "/data",
        "/run/kata-containers/shared/containers/app0f0f-5eed0f1e5eed0f1e-data",
    ));
    p.check_request(&r).unwrap();
    let s = final_spec(&r, &ImageConfig::default());
    p.check_final_create(&r, &s).unwrap();
    p.check_request(&create(&sidecar())).unwrap();
    for (path, _) in k8s::container_files(&pod(), "app0f0f") {
        let mut cp = agent::CopyFileRequest::new();
        cp.path = path;
        p.check_request(&cp).unwrap();
    }
}

#[test]
fn the_same_rules_without_data_keep_the_defaults() {
    let p = Policy::confidential().unwrap();
    // Unpinned, any image and process within the generic rules.
    let mut c = app();
    c.image = "busybox:latest".into();
    c.args = vec!["sh".into(), "-c".into(), "anything".into()];
    p.check_request(&create(&c)).unwrap();
    let e = coco_agent::requests::exec("app0f0f", "e1", &["sh", "-c", "date"]);
    let named = [(CONTAINER_NAME_KEY, regorus::Value::from("app"))];
    assert!(p.check_request_with(&e, &named).is_err(), "exec stays off");
}

#[test]
fn process_attacks_are_refused() {
    let p = policy();
    let cases: Vec<(&str, Attack<agent::CreateContainerRequest>)> = vec![
        (
            "other args",
            Box::new(|r| process_mut(r).Args[2] = "nc -l -p 80 -e sh".into()),
        ),
        (
            "extra env LD_PRELOAD",
            Box::new(|r| process_mut(r).Env.push("LD_PRELOAD=/tmp/x.so".into())),
        ),
        (
            "pinned variable missing",
            Box::new(|r| process_mut(r).Env.retain(|e| e != "MODE=prod")),
        ),
        (
            "extra capability (a containerd default)",
            Box::new(|r| {
                let c = process_mut(r).Capabilities.as_mut().unwrap();
                c.Bounding.push("CAP_KILL".into());
                c.Effective.push("CAP_KILL".into());
                c.Permitted.push("CAP_KILL".into());
            }),
        ),
        (
            "ambient capability",
            Box::new(|r| {
                process_mut(r).Capabilities.as_mut().unwrap().Ambient =
                    vec!["CAP_NET_BIND_SERVICE".into()]
            }),
        ),
        (
            "root uid changed",
            Box::new(|r| process_mut(r).User.as_mut().unwrap().UID = 1000),
        ),
        (
            "extra group",
            Box::new(|r| process_mut(r).User.as_mut().unwrap().AdditionalGids.push(6)),
        ),
        ("terminal", Box::new(|r| process_mut(r).Terminal = true)),
        ("cwd", Box::new(|r| process_mut(r).Cwd = "/tmp".into())),
        (
            "writable root",
            Box::new(|r| oci_mut(r).Root.as_mut().unwrap().Readonly = false),
        ),
        (
            "unknown container name",
            Box::new(|r| {
                oci_mut(r)
                    .Annotations
                    .insert("io.kubernetes.cri.container-name".into(), "debugger".into());
            }),
        ),
        (
            "no container name",
            Box::new(|r| {
                oci_mut(r)
                    .Annotations
                    .remove("io.kubernetes.cri.container-name");
            }),
        ),
    ];
    for (what, attack) in cases {
        let mut r = create(&app());
        attack(&mut r);
        assert!(denied(&p, &r), "{what}: admitted");
    }
}

#[test]
fn an_allowed_variable_may_not_redefine_a_pinned_one() {
    // Env rules broad enough for the value: only the pin decides.
    let mut d = policy_data(false);
    d["env_rules"]
        .as_array_mut()
        .unwrap()
        .push(json!("^[A-Z]+=[a-z]+$"));
    let p = policy_with(&d);
    let mut r = create(&app());
    process_mut(&mut r).Env.insert(0, "OTHER=debug".into());
    p.check_request(&r).unwrap();
    let mut r = create(&app());
    // The first of two wins in getenv.
    process_mut(&mut r).Env.insert(0, "MODE=debug".into());
    assert!(denied(&p, &r));
}

#[test]
fn image_attacks_are_refused() {
    let p = policy();
    for (what, image) in [
        (
            "other digest under the same tag",
            format!("busybox:1.36@{OTHER_DIGEST}"),
        ),
        ("tag only", "busybox:1.36".to_string()),
        (
            "same digest, other repository",
            format!("docker.io/evil/busybox@{DIGEST}"),
        ),
        (
            "same digest, other registry",
            format!("registry.example/library/busybox@{DIGEST}"),
        ),
        ("empty source", String::new()),
    ] {
        let mut c = app();
        c.image = image;
        assert!(denied(&p, &create(&c)), "{what}: admitted");
    }
    // The spellings of the pinned reference docker.io normalisation equates.
    for image in [
        format!("busybox@{DIGEST}"),
        format!("index.docker.io/library/busybox:1.36@{DIGEST}"),
        format!("docker.io/busybox@{DIGEST}"),
    ] {
        let mut c = app();
        c.image = image.clone();
        p.check_request(&create(&c))
            .unwrap_or_else(|e| panic!("{image}: {e}"));
    }
}

#[test]
fn no_pinned_mount_reaches_another_container_or_the_image_store() {
    let p = policy();
    let other = "app0f0f";
    for src in [
        format!("/run/kata-containers/{other}/rootfs"),
        format!("/run/kata-containers/containers/{other}/rootfs"),
        "/run/kata-containers/image-store".to_string(),
        "/run/kata-containers/shared/../containers/app0f0f/rootfs".to_string(),
    ] {
        let mut r = create(&sidecar());
        oci_mut(&mut r).Mounts.push(bind("/steal", &src));
        assert!(denied(&p, &r), "bind of {src} admitted");
    }
    // The same pattern admits what may be shared.
    let mut r = create(&sidecar());
    oci_mut(&mut r)
        .Mounts
        .push(bind("/steal", "/run/kata-containers/sandbox/local/cache"));
    p.check_request(&r).unwrap();
    // Only at the pinned destination, with the pinned type, for the container it is pinned for.
    let shared = "/run/kata-containers/sandbox/local/cache";
    let mut r = create(&sidecar());
    oci_mut(&mut r).Mounts.push(bind("/elsewhere", shared));
    assert!(denied(&p, &r));
    let mut m = bind("/steal", shared);
    m.type_ = "none".into();
    let mut r = create(&sidecar());
    oci_mut(&mut r).Mounts.push(m);
    assert!(denied(&p, &r));
    let mut r = create(&app());
    oci_mut(&mut r).Mounts.push(bind("/steal", shared));
    assert!(denied(&p, &r));
}

#[test]
fn only_the_guest_s_pause_container_gets_the_generic_rules() {
    let p = policy();
    // A host-chosen container that calls itself the sandbox in the annotations: the agent
    // reads the pull metadata, would pull its image, so the application rules apply.
    let mut c = app();
    c.name = "debugger".into();
    c.image = "busybox:latest".into();
    let mut r = create(&c);
    oci_mut(&mut r)
        .Annotations
        .insert("io.kubernetes.cri.container-type".into(), "sandbox".into());
    assert!(denied(&p, &r));
    // Labelled the sandbox everywhere, the agent runs the guest's pause rootfs instead.
    let sb = coco_agent::requests::guest_pull_create(
        "debugger0f0f",
        "sandbox",
        "busybox:latest",
        r.OCI.as_ref().unwrap().clone(),
    );
    p.check_request(&sb).unwrap();
}

#[test]
fn the_final_spec_is_judged_too() {
    let p = policy();
    // The host leaves args, env and cwd to the image (allowed before the pull).
    let mut c = app();
    c.args.clear();
    c.env.clear();
    let mut r = create(&c);
    process_mut(&mut r).Env.clear();
    p.check_request(&r).unwrap();
    let img = ImageConfig {
        env: vec![IMAGE_PATH.into(), "MODE=prod".into()],
        cmd: vec!["sh".into(), "-c".into(), "sleep 3600".into()],
        ..Default::default()
    };
    p.check_final_create(&r, &final_spec(&r, &img)).unwrap();
    // An image whose config runs something else, sets another variable or directory.
    let swaps: [(&str, Attack<ImageConfig>); 3] = [
        ("cmd", Box::new(|i| i.cmd = vec!["/bin/miner".into()])),
        ("env", Box::new(|i| i.env.push("LD_PRELOAD=/x.so".into()))),
        ("workdir", Box::new(|i| i.working_dir = "/tmp".into())),
    ];
    for (what, swap) in swaps {
        let mut bad = img.clone();
        swap(&mut bad);
        assert!(
            matches!(
                p.check_final_create(&r, &final_spec(&r, &bad)),
                Err(PolicyError::Denied { .. })
            ),
            "image {what} admitted"
        );
    }
    // What is accepted empty before the pull is not accepted empty after it.
    let s = final_spec(&r, &ImageConfig::default());
    assert!(p.check_final_create(&r, &s).is_err());
    // The host cannot name the pause container's namespaces itself.
    let mut r = create(&app());
    oci_mut(&mut r).Linux.as_mut().unwrap().Namespaces[0].Path = "/proc/42/ns/ipc".into();
    assert!(denied(&p, &r));
}

#[test]
fn exec_only_of_listed_commands() {
    let p = policy();
    let named = |n: &str| [(CONTAINER_NAME_KEY, regorus::Value::from(n))];
    let date = coco_agent::requests::exec("app0f0f", "e1", &["sh", "-c", "date"]);
    p.check_request_with(&date, &named("app")).unwrap();
    let shell = coco_agent::requests::exec("app0f0f", "e2", &["sh"]);
    assert!(p.check_request_with(&shell, &named("app")).is_err());
    // Listed for app, not for the sidecar, nor for a container the policy does not know.
    for other in ["sidecar", "debugger", ""] {
        assert!(
            p.check_request_with(&date, &named(other)).is_err(),
            "{other}"
        );
    }
    assert!(
        p.check_request(&date).is_err(),
        "without the container's name"
    );
    // A listed command with more power than the container has.
    let mut strong = date.clone();
    let mut caps = oci::LinuxCapabilities::new();
    caps.Bounding = vec!["CAP_SYS_PTRACE".into()];
    caps.Effective = caps.Bounding.clone();
    caps.Permitted = caps.Bounding.clone();
    strong.process.as_mut().unwrap().Capabilities = Some(caps).into();
    assert!(p.check_request_with(&strong, &named("app")).is_err());
}

#[test]
fn logs_only_when_the_owner_allows_them() {
    let mut rd = agent::ReadStreamRequest::new();
    rd.container_id = "app0f0f".into();
    rd.exec_id = "app0f0f".into();
    let named = |n: &str| [(CONTAINER_NAME_KEY, regorus::Value::from(n))];
    assert!(policy().check_request_with(&rd, &named("app")).is_err());
    let p = policy_with(&policy_data(true));
    p.check_request_with(&rd, &named("app")).unwrap();
    assert!(p.check_request_with(&rd, &named("debugger")).is_err());
    // Stdin stays closed whatever the data says.
    assert!(denied(&p, &agent::WriteStreamRequest::new()));
}

#[test]
fn data_of_another_version_admits_no_application_container() {
    let mut d = policy_data(true);
    d["version"] = json!(2);
    let p = policy_with(&d);
    assert!(denied(&p, &create(&app())));
    p.check_request(&k8s::pause_request(&pod())).unwrap();
}
