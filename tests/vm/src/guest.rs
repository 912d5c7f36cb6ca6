//! The real guest image: `coco-agent` as `/init`, runc, the pause bundle, the
//! TPM stack's run-time TCTI module, the kernel modules the agent loads, and the
//! agent's configuration file, built with `coco-image` from Debian's cloud kernel.
//!
//! The agent is a release build (`cargo build --release -p coco-agent`), found in
//! `$COCO_GUEST_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else `target/release`.
//! `$COCO_GUEST_IMAGE` points at a prebuilt image directory instead (e.g. Nix's
//! `guest-image` output: `vmlinuz`, `initrd.img`, `cmdline`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coco_image::kernel::KernelTree;
use coco_image::{Compression, ImageSpec};

use crate::{tools, VmError};

/// Modules the agent loads at boot (dependencies follow from modules.dep).
pub const AGENT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport",
    "overlay",
    // Ephemeral storage on dm-crypt (aes-xts-plain64) over the scratch disk.
    "dm_crypt",
    "xts",
    "ecb",
];

/// Base command line; the image's measured cmdline. Tests append `agent.*` keys.
pub const GUEST_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// The agent's configuration in the image.
pub const AGENT_CONFIG: &str =
    "# coco-agent as /init in the VM test image\ninitdata = \"auto\"\nrunc = \"/usr/bin/runc\"\n";

/// The host's CA bundle, copied into the guest at the same path.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TCTI module the TPM attester loads at run time (not a DT_NEEDED library).
const TCTI_DEVICE: &str = "/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0";

/// A built (or prebuilt) guest: kernel, initrd and the cmdline it was built for.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub initrd_size: u64,
}

/// Directory with the release `coco-agent`.
pub fn guest_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("COCO_GUEST_BIN_DIR") {
        return d.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("release")
}

/// The release agent binary, or an error that says how to build it.
pub fn agent_binary() -> Result<PathBuf, VmError> {
    let p = guest_bin_dir().join("coco-agent");
    if p.is_file() {
        Ok(p)
    } else {
        Err(VmError::MissingTool {
            tool: "coco-agent (release)".into(),
            hint: format!(
                "{} is missing: run `cargo build --release -p coco-agent` (scripts/test.sh does) \
                 or set COCO_GUEST_BIN_DIR",
                p.display()
            ),
        })
    }
}

/// A copy of `bin` without debug sections (the release profile keeps line tables:
/// 140 MB → 24 MB). Deterministic, so the image stays reproducible.
fn stripped(bin: &Path, out: &Path) -> Result<PathBuf, VmError> {
    let dst = out.join(bin.file_name().unwrap_or_default());
    let status = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(bin)
        .status()
        .map_err(|e| VmError::Spawn {
            what: "strip (binutils)".into(),
            source: e,
        })?;
    if !status.success() {
        return Err(VmError::Config(format!(
            "strip {}: {status}",
            bin.display()
        )));
    }
    Ok(dst)
}

impl Guest {
    /// `$COCO_GUEST_IMAGE` if set, else a fresh build into `out` from Debian's cloud
    /// kernel (fetched and cached on first use).
    pub fn get(out: &Path) -> Result<Self, VmError> {
        match std::env::var_os("COCO_GUEST_IMAGE") {
            Some(dir) => Self::prebuilt(Path::new(&dir)),
            None => Self::build(&crate::image::cloud_kernel()?, out),
        }
    }

    /// A prebuilt image directory (`vmlinuz`, `initrd.img`, `cmdline`).
    pub fn prebuilt(dir: &Path) -> Result<Self, VmError> {
        let initrd = dir.join(coco_image::builder::INITRD_FILE);
        let cmdline = std::fs::read_to_string(dir.join(coco_image::builder::CMDLINE_FILE))
            .map_err(|e| VmError::io("reading the prebuilt image's cmdline", e))?;
        let initrd_size = std::fs::metadata(&initrd)
            .map_err(|e| VmError::io("prebuilt initrd", e))?
            .len();
        Ok(Self {
            kernel: dir.join(coco_image::builder::KERNEL_FILE),
            initrd,
            cmdline: cmdline.trim().to_string(),
            initrd_size,
        })
    }

    /// Builds the image with `coco-image` into `out`.
    pub fn build(kernel: &KernelTree, out: &Path) -> Result<Self, VmError> {
        std::fs::create_dir_all(out).map_err(|e| VmError::io("creating image dir", e))?;
        let config = out.join("agent-config.toml");
        std::fs::write(&config, AGENT_CONFIG).map_err(|e| VmError::io("agent config", e))?;
        let mut binaries = BTreeMap::new();
        // The agent is the VM's init, like Kata's agent in its initrd.
        binaries.insert("/init".to_string(), stripped(&agent_binary()?, out)?);
        binaries.insert("runc".to_string(), tools::require("runc", "COCO_RUNC")?);
        // dm-crypt ephemeral storage (agent.scratch_device=): table load and mkfs.
        binaries.insert(
            "dmsetup".to_string(),
            tools::require("dmsetup", "COCO_DMSETUP")?,
        );
        binaries.insert(
            "mkfs.ext4".to_string(),
            tools::require("mkfs.ext4", "COCO_MKFS_EXT4")?,
        );
        if Path::new(TCTI_DEVICE).is_file() {
            binaries.insert(TCTI_DEVICE.to_string(), TCTI_DEVICE.into());
        }
        let mut files = BTreeMap::new();
        files.insert("etc/coco-agent/config.toml".to_string(), config);
        // Mozilla roots for registries and KBSes with public certificates (Debian's
        // ca-certificates bundle, recorded in the manifest like every input).
        let bundle = Path::new(CA_BUNDLE);
        if bundle.is_file() {
            files.insert(CA_BUNDLE.trim_start_matches('/').to_string(), bundle.into());
        }
        let spec = ImageSpec {
            kernel: Some(kernel.clone()),
            binaries,
            files,
            modules: AGENT_MODULES.iter().map(|s| s.to_string()).collect(),
            busybox: Some(tools::busybox()?),
            pause_bundle: true,
            init: None,
            firmware: None,
            cmdline: GUEST_CMDLINE.to_string(),
            mtime: 0,
            compression: Compression::Gzip,
        };
        let built = spec.build(&out.join("image"))?;
        Ok(Self {
            kernel: built.kernel(),
            initrd: built.initrd(),
            cmdline: GUEST_CMDLINE.to_string(),
            initrd_size: built.manifest.initrd_size,
        })
    }
}
