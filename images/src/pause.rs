//! The pause bundle: an OCI bundle (config.json + rootfs) whose process is a real
//! long-running process that exits on SIGTERM/SIGINT, like Kubernetes' pause. The
//! agent uses it for the sandbox container, so nothing has to be pulled for it.
//!
//! Built from busybox-static: `rootfs/bin/busybox` plus a `/pause` shell script.

use std::path::Path;

use crate::cpio::{CpioError, Tree};

/// Where the guest image carries the bundle (Kata's agent looks here).
pub const GUEST_DIR: &str = "pause_bundle";

/// The pause process: waits forever, exits 0 on TERM or INT (so a graceful stop works;
/// the Kata shim usually sends KILL anyway).
pub const PAUSE_SCRIPT: &str = "#!/bin/busybox sh\n\
trap 'exit 0' TERM INT\n\
while :; do /bin/busybox sleep 3600 & wait $!; done\n";

/// A minimal OCI runtime spec for the bundle (same shape as `runc spec`, read-only
/// rootfs, its own pid/ipc/uts/mount namespaces). Serialised with sorted keys so the
/// bytes never change.
pub fn config_json() -> Vec<u8> {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/pause"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true,
            "capabilities": {"bounding": [], "effective": [], "permitted": []}
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "pause",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    // serde_json's Map is a BTreeMap without the preserve_order feature: sorted keys.
    let mut out = serde_json::to_vec_pretty(&spec).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Adds the bundle under `prefix` (normally [`GUEST_DIR`]) to an image tree.
pub fn add_to_tree(tree: &mut Tree, prefix: &str, busybox: &Path) -> Result<(), CpioError> {
    tree.bytes(&format!("{prefix}/config.json"), config_json(), 0o644)?;
    tree.file(&format!("{prefix}/rootfs/bin/busybox"), busybox, 0o755)?;
    tree.symlink(&format!("{prefix}/rootfs/bin/sh"), "busybox")?;
    tree.bytes(
        &format!("{prefix}/rootfs/pause"),
        PAUSE_SCRIPT.as_bytes().to_vec(),
        0o755,
    )?;
    for d in ["proc", "dev", "sys", "tmp"] {
        tree.dir(&format!("{prefix}/rootfs/{d}"))?;
    }
    Ok(())
}

/// Writes the bundle to a host directory (used to run it with `runc` in tests, and by
/// anyone who wants to inspect it).
pub fn write_dir(dir: &Path, busybox: &Path) -> std::io::Result<()> {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::write(dir.join("config.json"), config_json())?;
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    let sh = rootfs.join("bin/sh");
    if !sh.exists() {
        std::os::unix::fs::symlink("busybox", &sh)?;
    }
    let pause = rootfs.join("pause");
    std::fs::write(&pause, PAUSE_SCRIPT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pause, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_stable_and_valid_json() {
        let a = config_json();
        assert_eq!(a, config_json());
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["process"]["args"][0], "/pause");
        assert_eq!(v["root"]["readonly"], true);
    }
}
