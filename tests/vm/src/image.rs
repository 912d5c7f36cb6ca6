//! Test guest images built with `coco-image` from Debian's cloud kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coco_image::kernel::{self, KernelTree};
use coco_image::{Built, Compression, ImageSpec};

use crate::{tools, VmError};

/// The test `/init` (busybox script; see `guest/init.sh`).
pub const TEST_INIT: &str = include_str!("../guest/init.sh");

/// Modules the guest needs for virtio disks, network and vsock.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport",
];

/// Kernel command line of the test images.
pub const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// The cached Debian cloud kernel (downloaded on first use).
pub fn cloud_kernel() -> Result<KernelTree, VmError> {
    Ok(kernel::fetch_package(
        kernel::CLOUD_KERNEL_META,
        &kernel::cache_root(),
    )?)
}

/// What to put in a test image.
#[derive(Debug, Clone, Default)]
pub struct TestImage {
    /// Guest modules to load (none: a bare busybox initrd).
    pub modules: Vec<String>,
    /// The vsock probe binary (`/usr/bin/vsock-probe`), with its shared libraries.
    pub vsock_probe: Option<PathBuf>,
    pub pause_bundle: bool,
}

impl TestImage {
    /// Everything the harness tests use: modules, probe, pause bundle.
    pub fn full(vsock_probe: &Path) -> Self {
        Self {
            modules: GUEST_MODULES.iter().map(|s| s.to_string()).collect(),
            vsock_probe: Some(vsock_probe.to_path_buf()),
            pause_bundle: true,
        }
    }

    /// Only busybox and `/init`: the baseline for boot benchmarks.
    pub fn bare() -> Self {
        Self::default()
    }

    pub fn build(&self, kernel: &KernelTree, out: &Path) -> Result<Built, VmError> {
        std::fs::create_dir_all(out).map_err(|e| VmError::io("creating image dir", e))?;
        let init = out.join("init.sh");
        std::fs::write(&init, TEST_INIT).map_err(|e| VmError::io("writing init", e))?;
        let mut binaries = BTreeMap::new();
        if let Some(p) = &self.vsock_probe {
            binaries.insert("vsock-probe".to_string(), p.clone());
        }
        let spec = ImageSpec {
            kernel: Some(kernel.clone()),
            binaries,
            files: BTreeMap::new(),
            modules: self.modules.clone(),
            busybox: Some(tools::busybox()?),
            pause_bundle: self.pause_bundle,
            init: Some(init),
            firmware: None,
            cmdline: CMDLINE.to_string(),
            mtime: 0,
            compression: Compression::Gzip,
        };
        Ok(spec.build(&out.join("image"))?)
    }
}
