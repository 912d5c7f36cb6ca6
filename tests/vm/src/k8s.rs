//! What the host side sends for a Kubernetes pod: containerd's CRI plugin builds the OCI
//! spec from the pod and the image config, the Kata shim rewrites it for the guest. The
//! VM tests drive the agent with these requests, independently of the policy generator,
//! so a generated policy is checked against a model of the runtime, not against itself.
//!
//! Facts (Kata `src/tools/genpolicy/genpolicy-settings.json` @7c6ba40c): the shim's
//! guest-pull rootfs is `/run/kata-containers/<cid>/rootfs`; per-container files are
//! copied to `/run/kata-containers/shared/containers/<cid>-<16 [a-z0-9]>-<name>` and
//! bind-mounted; `/dev/shm` binds the sandbox's `ephemeral` storage at
//! `/run/kata-containers/sandbox/shm`; containerd's default capability set is the 14
//! below; the CRI annotations name the container, its type and its sandbox.

use coco_agent::protocols::{agent, oci};

/// containerd's default capabilities (bounding, effective and permitted).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Where the shim copies per-container files.
pub const SHARED_DIR: &str = "/run/kata-containers/shared/containers";
/// The sandbox's shared memory (an `ephemeral` storage of CreateSandbox).
pub const SANDBOX_SHM: &str = "/run/kata-containers/sandbox/shm";
/// The random part of the shim's file names (16 characters of `[a-z0-9]`).
pub const FILE_NONCE: &str = "5eed0f1e5eed0f1e";

/// The service environment kubelet gives every container of the `default` namespace
/// (the `kubernetes` service at its usual ClusterIP).
pub const SERVICE_ENV: [&str; 8] = [
    "KUBERNETES_SERVICE_HOST=10.96.0.1",
    "KUBERNETES_SERVICE_PORT=443",
    "KUBERNETES_SERVICE_PORT_HTTPS=443",
    "KUBERNETES_PORT=tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO=tcp",
    "KUBERNETES_PORT_443_TCP_PORT=443",
    "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
];

/// The pod as the runtime knows it.
#[derive(Debug, Clone)]
pub struct KubePod {
    pub name: String,
    pub namespace: String,
    /// Also the pause container's id.
    pub sandbox_id: String,
}

/// One container as containerd resolved it (pod spec + image config).
#[derive(Debug, Clone)]
pub struct KubeContainer {
    pub name: String,
    /// The reference the guest pulls (the pod spec's `image`).
    pub image: String,
    pub args: Vec<String>,
    /// Image env, then the container's declared env (the service env and HOSTNAME are added).
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub readonly_root: bool,
}

impl KubeContainer {
    /// A container with containerd's defaults for `image`.
    pub fn new(name: &str, image: &str, args: &[&str], image_env: &[&str]) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: image_env.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            capabilities: DEFAULT_CAPS.iter().map(|s| s.to_string()).collect(),
            no_new_privileges: false,
            readonly_root: false,
        }
    }
}

/// The per-container files the shim copies before CreateContainer, with their content.
pub fn container_files(pod: &KubePod, cid: &str) -> Vec<(String, Vec<u8>)> {
    [
        ("hostname", format!("{}\n", pod.name)),
        (
            "hosts",
            format!("127.0.0.1 localhost\n10.0.2.15 {}\n", pod.name),
        ),
        ("resolv.conf", "nameserver 10.0.2.3\n".to_string()),
        ("termination-log", String::new()),
    ]
    .into_iter()
    .map(|(n, d)| (shared_file(cid, n), d.into_bytes()))
    .collect()
}

fn shared_file(cid: &str, name: &str) -> String {
    format!("{SHARED_DIR}/{cid}-{FILE_NONCE}-{name}")
}

/// CreateSandbox with the shared-memory storage the shim always adds.
pub fn sandbox_request(pod: &KubePod) -> agent::CreateSandboxRequest {
    let mut shm = agent::Storage::new();
    shm.driver = "ephemeral".into();
    shm.source = "shm".into();
    shm.fstype = "tmpfs".into();
    shm.options = ["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    shm.mount_point = SANDBOX_SHM.into();
    let mut sb = agent::CreateSandboxRequest::new();
    sb.hostname = pod.name.clone();
    sb.sandbox_id = pod.sandbox_id.clone();
    sb.storages.push(shm);
    sb
}

fn mount(dst: &str, ty: &str, src: &str, opts: &[&str]) -> oci::Mount {
    let mut m = oci::Mount::new();
    m.destination = dst.into();
    m.type_ = ty.into();
    m.source = src.into();
    m.options = opts.iter().map(|o| o.to_string()).collect();
    m
}

/// The mounts containerd gives every container (kernel file systems).
fn kernel_mounts() -> Vec<oci::Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

fn annotations(pod: &KubePod, kind: &str, name: &str, image: &str) -> Vec<(String, String)> {
    let mut a = vec![
        ("io.kubernetes.cri.container-type", kind),
        ("io.kubernetes.cri.sandbox-id", pod.sandbox_id.as_str()),
        ("io.kubernetes.cri.sandbox-name", pod.name.as_str()),
        (
            "io.kubernetes.cri.sandbox-namespace",
            pod.namespace.as_str(),
        ),
        (
            "io.katacontainers.pkg.oci.container_type",
            if kind == "sandbox" {
                "pod_sandbox"
            } else {
                "pod_container"
            },
        ),
    ];
    if kind != "sandbox" {
        a.push(("io.kubernetes.cri.container-name", name));
        a.push(("io.kubernetes.cri.image-name", image));
    }
    a.into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn capabilities(caps: &[String]) -> oci::LinuxCapabilities {
    let mut c = oci::LinuxCapabilities::new();
    c.Bounding = caps.to_vec();
    c.Effective = caps.to_vec();
    c.Permitted = caps.to_vec();
    c
}

fn linux(pod: &KubePod, cid: &str) -> oci::Linux {
    let mut linux = oci::Linux::new();
    for t in ["ipc", "uts", "mount", "pid"] {
        let mut ns = oci::LinuxNamespace::new();
        ns.Type = t.into();
        linux.Namespaces.push(ns);
    }
    linux.CgroupsPath = format!("/kubepods/pod-{}/{cid}", pod.sandbox_id);
    linux.MaskedPaths = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/scsi",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    linux.ReadonlyPaths = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    linux
}

fn spec(pod: &KubePod, cid: &str, process: oci::Process, readonly_root: bool) -> oci::Spec {
    let mut s = oci::Spec::new();
    s.Version = "1.1.0".into();
    s.Process = Some(process).into();
    let mut root = oci::Root::new();
    root.Path = format!("/run/kata-containers/{cid}/rootfs");
    root.Readonly = readonly_root;
    s.Root = Some(root).into();
    s.Hostname = pod.name.clone();
    s.Linux = Some(linux(pod, cid)).into();
    s
}

/// CreateContainer of the pause container (its rootfs comes from the guest image).
pub fn pause_request(pod: &KubePod) -> agent::CreateContainerRequest {
    let mut p = oci::Process::new();
    p.Args = vec!["/pause".into()];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    p.NoNewPrivileges = true;
    p.Capabilities = Some(capabilities(
        &DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ))
    .into();
    let mut s = spec(pod, &pod.sandbox_id, p, true);
    s.Mounts = kernel_mounts();
    s.Mounts
        .push(mount("/dev/shm", "bind", SANDBOX_SHM, &["rbind"]));
    s.Annotations = annotations(pod, "sandbox", "", "").into_iter().collect();
    coco_agent::requests::guest_pull_create(&pod.sandbox_id, "sandbox", "", s)
}

/// CreateContainer of an application container, guest-pulled, as Kata ≥ 3.3 sends it.
pub fn container_request(
    pod: &KubePod,
    cid: &str,
    c: &KubeContainer,
) -> agent::CreateContainerRequest {
    let mut p = oci::Process::new();
    p.Args = c.args.clone();
    p.Env = c.env.clone();
    p.Env.push(format!("HOSTNAME={}", pod.name));
    p.Env.extend(SERVICE_ENV.iter().map(|s| s.to_string()));
    p.Cwd = c.cwd.clone();
    let mut user = oci::User::new();
    user.UID = c.uid;
    user.GID = c.gid;
    user.AdditionalGids = vec![c.gid];
    p.User = Some(user).into();
    p.Capabilities = Some(capabilities(&c.capabilities)).into();
    p.NoNewPrivileges = c.no_new_privileges;
    let mut s = spec(pod, cid, p, c.readonly_root);
    s.Mounts = kernel_mounts();
    for (dst, name, opts) in [
        ("/etc/hosts", "hosts", &["rbind", "rprivate", "rw"][..]),
        (
            "/dev/termination-log",
            "termination-log",
            &["rbind", "rprivate", "rw"],
        ),
        ("/etc/hostname", "hostname", &["rbind", "rprivate", "rw"]),
        (
            "/etc/resolv.conf",
            "resolv.conf",
            &["rbind", "rprivate", "rw"],
        ),
    ] {
        s.Mounts
            .push(mount(dst, "bind", &shared_file(cid, name), opts));
    }
    s.Mounts
        .push(mount("/dev/shm", "bind", SANDBOX_SHM, &["rbind"]));
    s.Annotations = annotations(pod, "container", &c.name, &c.image)
        .into_iter()
        .collect();
    let mut r = coco_agent::requests::guest_pull_create(cid, "container", &c.image, s);
    // The CRI plugin also names the container in the pull metadata.
    if let Some(st) = r.storages.first_mut() {
        st.driver_options = vec![format!(
            "image_guest_pull={}",
            serde_json::json!({"metadata": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": c.name,
                "io.kubernetes.cri.image-name": c.image,
                "io.kubernetes.cri.sandbox-id": pod.sandbox_id,
            }})
        )];
    }
    r
}
