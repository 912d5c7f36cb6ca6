//! Finding the host tools the harness runs, with errors that say how to install them.

use std::path::{Path, PathBuf};

use crate::VmError;

/// Where `scripts/setup-vm-tools.sh` caches binaries that Debian does not package.
pub const TOOL_CACHE: &str = "/var/cache/coco-image/bin";
pub const SETUP_SCRIPT: &str = "scripts/setup-vm-tools.sh";

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // sbin tools (runc, dmsetup, mkfs.ext4) even from a user's PATH.
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Looks a tool up: `$ENV_VAR`, then the tool cache, `~/.cargo/bin`, then `PATH`.
pub fn find(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let cached = Path::new(TOOL_CACHE).join(name);
    if cached.is_file() {
        return Some(cached);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cargo/bin").join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    in_path(name)
}

/// Like [`find`] but an error naming the setup script when missing.
pub fn require(name: &str, env_var: &str) -> Result<PathBuf, VmError> {
    find(name, env_var).ok_or_else(|| VmError::MissingTool {
        tool: name.to_string(),
        hint: format!(
            "run {SETUP_SCRIPT} (installs it into {TOOL_CACHE}) or set {env_var} to its path"
        ),
    })
}

pub fn qemu() -> Result<PathBuf, VmError> {
    require("qemu-system-x86_64", "COCO_QEMU")
}

pub fn vhost_device_vsock() -> Result<PathBuf, VmError> {
    require("vhost-device-vsock", "COCO_VHOST_DEVICE_VSOCK")
}

pub fn swtpm() -> Result<PathBuf, VmError> {
    require("swtpm", "COCO_SWTPM")
}

pub fn busybox() -> Result<PathBuf, VmError> {
    require("busybox", "COCO_BUSYBOX")
}

/// OVMF for measured direct boot: `$COCO_OVMF`, else Debian's unified image.
pub fn ovmf() -> Result<PathBuf, VmError> {
    let p = std::env::var_os("COCO_OVMF")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/share/ovmf/OVMF.fd".into());
    if p.is_file() {
        Ok(p)
    } else {
        Err(VmError::MissingTool {
            tool: "OVMF".into(),
            hint: format!(
                "{} missing: run {SETUP_SCRIPT} or set COCO_OVMF",
                p.display()
            ),
        })
    }
}
