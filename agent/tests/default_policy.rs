//! The default confidential policy on its own (no generated policy): the host attacks of
//! issue 12 that need no image are refused, and for arbitrary mounts the policy never
//! admits one that reaches another container's directory or the image store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use coco_agent::policy::{Policy, PolicyError};
use coco_agent::protocols::{agent, oci};
use proptest::prelude::*;

fn mount(dst: &str, ty: &str, src: &str, opts: &[&str]) -> oci::Mount {
    let mut m = oci::Mount::new();
    m.destination = dst.into();
    m.type_ = ty.into();
    m.source = src.into();
    m.options = opts.iter().map(|s| s.to_string()).collect();
    m
}

/// An application container as containerd + the Kata shim send it (see tests/vm/src/k8s.rs).
fn kube_request() -> agent::CreateContainerRequest {
    let mut p = oci::Process::new();
    p.Args = vec!["sh".into(), "-c".into(), "sleep 1".into()];
    let mut caps = oci::LinuxCapabilities::new();
    caps.Bounding = vec!["CAP_CHOWN".into(), "CAP_KILL".into()];
    caps.Effective = caps.Bounding.clone();
    caps.Permitted = caps.Bounding.clone();
    p.Capabilities = Some(caps).into();
    let mut s = oci::Spec::new();
    s.Process = Some(p).into();
    s.Mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid"]),
        mount("/dev", "tmpfs", "tmpfs", &["mode=755"]),
        mount("/dev/pts", "devpts", "devpts", &[]),
        mount("/dev/mqueue", "mqueue", "mqueue", &[]),
        mount("/sys", "sysfs", "sysfs", &["ro"]),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["ro"]),
        mount(
            "/etc/hosts",
            "bind",
            "/run/kata-containers/shared/containers/app1-5eed0f1e5eed0f1e-hosts",
            &["rbind"],
        ),
        mount(
            "/dev/termination-log",
            "bind",
            "/run/kata-containers/shared/containers/app1-5eed0f1e5eed0f1e-termination-log",
            &["rbind"],
        ),
        mount(
            "/dev/shm",
            "bind",
            "/run/kata-containers/sandbox/shm",
            &["rbind"],
        ),
    ];
    let mut linux = oci::Linux::new();
    for t in ["ipc", "uts", "mount", "pid"] {
        let mut ns = oci::LinuxNamespace::new();
        ns.Type = t.into();
        linux.Namespaces.push(ns);
    }
    let mut net = oci::LinuxNamespace::new();
    net.Type = "network".into();
    net.Path = "/var/run/netns/cni-1".into();
    linux.Namespaces.push(net);
    s.Linux = Some(linux).into();
    coco_agent::requests::guest_pull_create("app1", "container", "reg/app@sha256:00", s)
}

fn denied<M: protobuf::MessageFull>(p: &Policy, r: &M) -> bool {
    matches!(p.check_request(r), Err(PolicyError::Denied { .. }))
}

#[test]
fn the_runtime_s_own_requests_are_admitted() {
    let p = Policy::confidential().unwrap();
    p.check_request(&kube_request()).unwrap();
    let mut sb = agent::CreateSandboxRequest::new();
    let mut shm = agent::Storage::new();
    shm.driver = "ephemeral".into();
    shm.mount_point = "/run/kata-containers/sandbox/shm".into();
    sb.storages.push(shm);
    p.check_request(&sb).unwrap();
    let mut cp = agent::CopyFileRequest::new();
    cp.path = "/run/kata-containers/shared/containers/app1-5eed0f1e5eed0f1e-termination-log".into();
    p.check_request(&cp).unwrap();
}

#[test]
fn host_attacks_without_an_image_are_refused() {
    let p = Policy::confidential().unwrap();
    let with = |f: &dyn Fn(&mut oci::Spec)| {
        let mut r = kube_request();
        f(r.OCI.as_mut().unwrap());
        r
    };
    for src in [
        "/run/kata-containers/app0/rootfs",
        "/run/kata-containers/containers/app0/rootfs",
        "/run/kata-containers/image-store",
        "/run/kata-containers/shared/containers/../../containers/app0-x-rootfs",
        "/",
        "/etc",
    ] {
        let r = with(&|s| s.Mounts.push(mount("/steal", "bind", src, &["rbind"])));
        assert!(denied(&p, &r), "bind of {src} admitted");
    }
    // A bind spelled as another type.
    let r = with(&|s| {
        s.Mounts.push(mount(
            "/steal",
            "proc",
            "/run/kata-containers/app0/rootfs",
            &["rbind"],
        ))
    });
    assert!(denied(&p, &r));
    // An overlay or a block device the host names.
    let r = with(&|s| s.Mounts.push(mount("/x", "overlay", "overlay", &[])));
    assert!(denied(&p, &r));
    let r = with(&|s| {
        let c = s.Process.as_mut().unwrap().Capabilities.as_mut().unwrap();
        c.Bounding.push("CAP_SYS_ADMIN".into());
        c.Effective.push("CAP_SYS_ADMIN".into());
    });
    assert!(denied(&p, &r), "CAP_SYS_ADMIN admitted");
    let r = with(&|s| {
        s.Process
            .as_mut()
            .unwrap()
            .Capabilities
            .as_mut()
            .unwrap()
            .Ambient = vec!["CAP_SYS_PTRACE".into()]
    });
    assert!(denied(&p, &r), "ambient CAP_SYS_PTRACE admitted");
    let r = with(&|s| {
        s.Linux.as_mut().unwrap().Namespaces[2].Path = "/proc/1/ns/mnt".into();
    });
    assert!(denied(&p, &r), "host-named mount namespace admitted");
    let mut r = kube_request();
    r.devices.push(agent::Device::new());
    assert!(denied(&p, &r), "a host device admitted");

    let mut sb = agent::CreateSandboxRequest::new();
    let mut m = agent::KernelModule::new();
    m.name = "loop".into();
    m.parameters = vec!["max_loop=255".into()];
    sb.kernel_modules.push(m);
    assert!(denied(&p, &sb), "kernel module admitted");
    let mut sb = agent::CreateSandboxRequest::new();
    sb.guest_hook_path = "/run/kata-containers/app0/rootfs/hooks".into();
    assert!(denied(&p, &sb), "guest hook path admitted");

    let mut sp = agent::SetPolicyRequest::new();
    sp.policy = coco_agent::policy::ALLOW_ALL_POLICY.into();
    assert!(denied(&p, &sp));
    for path in [
        "/run/kata-containers/containers/app1/rootfs/etc/profile",
        "/run/kata-containers/shared/containers/app1-x-../../x",
        "/etc/passwd",
    ] {
        let mut cp = agent::CopyFileRequest::new();
        cp.path = path.into();
        assert!(denied(&p, &cp), "CopyFile to {path} admitted");
    }
}

/// Path spelled from pieces a hostile host would combine.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "run",
        "kata-containers",
        "shared",
        "containers",
        "sandbox",
        "shm",
        "app0",
        "app1-5eed-hosts",
        "rootfs",
        "image-store",
        "..",
        ".",
        "",
        "etc",
    ]);
    (prop::collection::vec(piece, 0..8), any::<bool>()).prop_map(|(p, trailing)| {
        let mut s = format!("/{}", p.join("/"));
        if trailing {
            s.push('/');
        }
        s
    })
}

/// `path` with `.`, `..` and empty segments resolved, as the kernel would walk it.
fn normalise(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn allowed_to_reach(normal: &str) -> bool {
    normal == "/run/kata-containers/sandbox/shm"
        || (normal.starts_with("/run/kata-containers/shared/containers/")
            && normal.matches('/').count() == 5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_admitted_mount_reaches_a_container_or_the_image_store(
        src in hostile_path(),
        ty in prop::sample::select(vec!["bind", "proc", "tmpfs", "overlay", "sysfs", "none", ""]),
        opt in prop::sample::select(vec!["rbind", "bind", "ro", "nosuid"]),
    ) {
        let p = Policy::confidential().unwrap();
        let mut r = kube_request();
        r.OCI.as_mut().unwrap().Mounts.push(mount("/x", ty, &src, &[opt]));
        let is_bind = ty == "bind" || opt == "bind" || opt == "rbind";
        let normal = normalise(&src);
        if is_bind && normal.starts_with("/run/kata-containers") && !allowed_to_reach(&normal) {
            prop_assert!(denied(&p, &r), "admitted a bind of {src} ({normal})");
        }
        if is_bind && !normal.starts_with("/run/kata-containers") {
            prop_assert!(denied(&p, &r), "admitted a bind of the guest's {src}");
        }
    }
}
