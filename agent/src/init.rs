//! Duties of the agent when it is the VM's `/init`: mount the basic filesystems, load
//! kernel modules, seed entropy, start the attestation agent.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, MsFlags};

/// Mounts proc, sys, dev, run, cgroup2 (and devpts, shm) like a minimal init.
pub fn mount_basics() -> std::io::Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: [(&str, &str, &str, MsFlags, Option<&str>); 8] = [
        ("proc", "/proc", "proc", nodev, None),
        ("sysfs", "/sys", "sysfs", nodev, None),
        // The TPM event log (firmware measurements) the TPM attester sends.
        (
            "securityfs",
            "/sys/kernel/security",
            "securityfs",
            nodev,
            None,
        ),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        ),
        ("shm", "/dev/shm", "tmpfs", nodev, Some("mode=1777")),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, None),
    ];
    for (src, target, fstype, flags, data) in table {
        std::fs::create_dir_all(target)?;
        match mount(Some(src), target, Some(fstype), flags, data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "mount {fstype} on {target}: {e}"
                )))
            }
        }
    }
    // runc needs the controllers delegated to child cgroups; without them containers
    // still run, but without resource limits: say so.
    if let Err(e) = std::fs::write(
        "/sys/fs/cgroup/cgroup.subtree_control",
        "+cpu +memory +pids +io",
    ) {
        tracing::warn!("delegating cgroup controllers: {e} (container limits will not apply)");
    }
    Ok(())
}

/// The module load order `coco-image` writes into the image.
pub const IMAGE_MODULES_LIST: &str = "/etc/coco/modules";
/// The classic module list.
pub const ETC_MODULES: &str = "/etc/modules";

/// Loads a kernel module with `modprobe` from the guest image.
pub async fn modprobe(name: &str, params: &[String]) -> std::io::Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('-') {
        return Err(std::io::Error::other(format!("bad module name {name:?}")));
    }
    let mut cmd = Command::new("modprobe");
    cmd.arg(name).args(params);
    let out = crate::process::run_command(cmd, None).await?;
    if out.status != 0 {
        return Err(std::io::Error::other(format!(
            "modprobe {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Modules listed by the image, one per line (`#` comments): names with optional
/// parameters (`/etc/modules`), or paths below `/lib/modules/<release>` as `coco-image`
/// writes them (`/etc/coco/modules`), which become names (modprobe resolves them
/// through the image's `modules.dep`).
pub fn modules_from_list(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut w = l.split_whitespace().map(str::to_string);
            let name = module_name(&w.next().unwrap_or_default());
            (name, w.collect())
        })
        .collect()
}

fn module_name(entry: &str) -> String {
    if !entry.contains('/') {
        return entry.to_string();
    }
    let base = entry.rsplit('/').next().unwrap_or_default();
    match base.find(".ko") {
        Some(i) => base[..i].to_string(),
        // Not a module file: keep it, modprobe() refuses it with a clear error.
        None => entry.to_string(),
    }
}

/// Mixes bytes into the kernel's entropy pool (writing to /dev/urandom adds without
/// crediting, which is all an unprivileged-by-design seed can honestly do).
pub fn seed_entropy(seed: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .and_then(|mut f| std::io::Write::write_all(&mut f, seed))
}

/// How to start the attestation agent.
#[derive(Debug, Clone)]
pub struct AttesterConfig {
    pub binary: PathBuf,
    pub socket: PathBuf,
    pub args: Vec<String>,
}

/// Starts the attestation agent and waits (up to `timeout`) for its socket.
pub async fn start_attester(
    cfg: &AttesterConfig,
    timeout: std::time::Duration,
) -> std::io::Result<i32> {
    let reaper = crate::reaper::Reaper::global();
    let epoch = reaper.epoch();
    let child = Command::new(&cfg.binary)
        .args(&cfg.args)
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id() as i32;
    let mut exit = reaper.watch(pid, epoch);
    let deadline = tokio::time::Instant::now() + timeout;
    while !Path::new(&cfg.socket).exists() {
        if let Ok(code) = exit.try_recv() {
            return Err(std::io::Error::other(format!(
                "attestation agent exited with {code}"
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(std::io::Error::other(
                "attestation agent socket did not appear",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn module_list_parsing() {
        let m = modules_from_list("# comment\nvsock\n\nvirtio_net  napi_tx=1 # tx\n");
        assert_eq!(
            m,
            vec![
                ("vsock".to_string(), vec![]),
                ("virtio_net".to_string(), vec!["napi_tx=1".to_string()])
            ]
        );
        assert!(modprobe("../evil", &[]).await.is_err());
        let m =
            modules_from_list("kernel/net/vmw_vsock/vsock.ko\nkernel/drivers/md/dm-crypt.ko.xz\n");
        assert_eq!(m[0].0, "vsock");
        assert_eq!(m[1].0, "dm-crypt");
        assert_eq!(modules_from_list("a/b/notamodule\n")[0].0, "a/b/notamodule");
    }

    #[tokio::test]
    async fn attester_that_dies_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let cfg = AttesterConfig {
            binary: "/bin/false".into(),
            socket: d.path().join("aa.sock"),
            args: vec![],
        };
        let e = start_attester(&cfg, std::time::Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exited"), "{e}");
        let cfg = AttesterConfig {
            binary: "/bin/sh".into(),
            socket: d.path().join("aa.sock"),
            args: vec![
                "-c".into(),
                format!("touch {}; sleep 1", d.path().join("aa.sock").display()),
            ],
        };
        start_attester(&cfg, std::time::Duration::from_secs(5))
            .await
            .unwrap();
    }
}
