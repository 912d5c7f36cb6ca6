//! VM test harness: boots the guest image in QEMU (TCG here; KVM when usable) with real
//! AF_VSOCK through vhost-device-vsock (hybrid vsock on the host), slirp networking to
//! host loopback services, an optional swtpm TPM, an initdata disk, a scratch disk and
//! the serial console captured to a file. Hard timeouts and kill-on-drop for every
//! process it starts.
//!
//! Host tools: `scripts/setup-vm-tools.sh` installs them.

pub mod attacks;
pub mod attest;
pub mod guest;
pub mod image;
pub mod k8s;
pub mod pod;
pub mod qemu;
pub mod services;
pub mod shim;
pub mod tools;
pub mod vm;

use std::time::Duration;

pub use qemu::{Accel, Firmware, Hypervisor, Qemu, VmConfig, VmPaths};
pub use vm::{hybrid_connect, Guard, Vm};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{tool} not found: {hint}")]
    MissingTool { tool: String, hint: String },
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("timed out after {after:?} waiting for {what}\n{log}")]
    Timeout {
        what: String,
        after: Duration,
        log: String,
    },
    #[error("VM exited ({status})\n{log}")]
    Exited { status: String, log: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Image(#[from] coco_image::BuildError),
    #[error(transparent)]
    Kernel(#[from] coco_image::kernel::KernelError),
}

impl VmError {
    pub(crate) fn io(context: &str, source: std::io::Error) -> Self {
        Self::Io {
            context: context.to_string(),
            source,
        }
    }
}
