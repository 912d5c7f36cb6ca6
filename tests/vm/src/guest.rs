//! The real guest image: `coco-agent` as `/init`, runc, the pause bundle, the
//! TPM stack's run-time TCTI module, the kernel modules the agent loads, and the
//! agent's configuration file, built with `coco-image` from Debian's cloud kernel.
//! What goes in is `deploy/guest-image.toml`, the list Nix builds from as well.
//!
//! The agent is a release build (`cargo build --release -p coco-agent`), found in
//! `$COCO_GUEST_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else `target/release`.
//! `$COCO_GUEST_IMAGE` points at a prebuilt image directory instead (e.g. Nix's
//! `guest-image` output: `vmlinuz`, `initrd.img`, `cmdline`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coco_image::contents::{GuestContents, AGENT_CONFIG_PATH};
use coco_image::kernel::KernelTree;
use coco_image::{Compression, ImageSpec};

use crate::{tools, VmError};

/// Base command line; the image's measured cmdline. Tests append `agent.*` keys.
pub const GUEST_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// Where Debian keeps the shared objects the guest dlopens.
const DEBIAN_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

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

    /// Builds the image with `coco-image` into `out`, with the contents
    /// `deploy/guest-image.toml` lists (the list `nix/guest-image.nix` builds from).
    pub fn build(kernel: &KernelTree, out: &Path) -> Result<Self, VmError> {
        let contents = GuestContents::shipped().map_err(|e| VmError::Config(e.to_string()))?;
        std::fs::create_dir_all(out).map_err(|e| VmError::io("creating image dir", e))?;
        let config = out.join("agent-config.toml");
        std::fs::write(&config, &contents.agent_config)
            .map_err(|e| VmError::io("agent config", e))?;
        let mut binaries = BTreeMap::new();
        if contents.init != "coco-agent" {
            return Err(VmError::Config(format!(
                "guest-image.toml: /init is {}, the harness ships coco-agent",
                contents.init
            )));
        }
        binaries.insert("/init".to_string(), stripped(&agent_binary()?, out)?);
        for name in &contents.binaries {
            let env = format!("COCO_{}", name.to_uppercase().replace(['.', '-'], "_"));
            binaries.insert(name.clone(), tools::require(name, &env)?);
        }
        // Run-time modules are optional here: without libtss2 the TPM tests skip.
        for lib in &contents.dlopen_libraries {
            let p = Path::new(DEBIAN_LIB_DIR).join(lib);
            if p.is_file() {
                binaries.insert(p.to_string_lossy().into_owned(), p);
            }
        }
        let mut files = BTreeMap::new();
        files.insert(AGENT_CONFIG_PATH.to_string(), config);
        // Debian's ca-certificates bundle, recorded in the manifest like every input.
        let bundle = Path::new(&contents.ca_bundle);
        if bundle.is_file() {
            files.insert(
                contents.ca_bundle.trim_start_matches('/').to_string(),
                bundle.into(),
            );
        }
        let busybox = if contents.busybox {
            Some(tools::busybox()?)
        } else {
            None
        };
        let spec = ImageSpec {
            kernel: Some(kernel.clone()),
            binaries,
            files,
            modules: contents.modules(),
            busybox,
            pause_bundle: contents.pause_bundle,
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
