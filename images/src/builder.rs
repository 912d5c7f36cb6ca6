//! Assembles the guest initrd from binaries, their libraries, kernel modules, busybox,
//! the pause bundle and `/init`, and writes kernel + initrd + cmdline + manifest.
//! Same inputs → same bytes (see `tests/reproducible.rs`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpio::{CpioError, Node, Tree};
use crate::elf::{self, ElfError};
use crate::kernel::{self, KernelError, KernelTree, ModuleIndex};
use crate::pause;

/// The kernel command line used when none is given: serial console, no splash, and
/// `panic=-1` so a crashed guest exits instead of hanging the test.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// Busybox applets linked in `/bin` when busybox is included (enough for `/init`
/// scripts and debugging; the agent itself needs none of them).
pub const BUSYBOX_APPLETS: &[&str] = &[
    "blockdev", "cat", "dmesg", "echo", "insmod", "ip", "ls", "mkdir", "modprobe", "mount",
    "poweroff", "reboot", "sh", "sleep", "uname",
];

/// Guest file that lists the modules to load, one path (relative to
/// `/lib/modules/<release>`) per line, dependencies first.
pub const MODULES_LIST: &str = "etc/coco/modules";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("invalid spec: {0}")]
    Spec(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Initrd compression. Gzip uses a fixed header (no name, mtime 0, OS unknown) and a
/// fixed level, so it is as deterministic as the uncompressed archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// Everything that goes into one image.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Unpacked kernel package.
    pub kernel: Option<KernelTree>,
    /// ELF binaries: guest path → host path. Their shared libraries come along.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Other files copied verbatim: guest path → host path.
    pub files: BTreeMap<String, PathBuf>,
    /// Kernel modules to ship and list in [`MODULES_LIST`] (dependencies added).
    pub modules: Vec<String>,
    /// busybox-static: installed as `/bin/busybox` plus [`BUSYBOX_APPLETS`].
    pub busybox: Option<PathBuf>,
    /// Build the pause bundle (needs `busybox`).
    pub pause_bundle: bool,
    /// `/init` (until the agent is `/init`, a script for tests).
    pub init: Option<PathBuf>,
    /// Firmware to ship next to the kernel (recorded in the manifest).
    pub firmware: Option<PathBuf>,
    pub cmdline: String,
    /// mtime of every archive entry (`SOURCE_DATE_EPOCH`, default 0).
    pub mtime: u32,
    pub compression: Compression,
}

/// One input file and where it landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub guest_path: String,
    /// Host path it was read from, or `generated`.
    pub source: String,
    pub sha256: String,
}

/// Written as `manifest.json`: digests of every input and output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub kernel_release: Option<String>,
    pub kernel_package_sha256: Option<String>,
    pub cmdline: String,
    pub compression: Compression,
    pub mtime: u32,
    /// Modules in load order.
    pub modules: Vec<String>,
    pub inputs: Vec<InputRecord>,
    /// Output file name → sha256.
    pub outputs: BTreeMap<String, String>,
    pub initrd_size: u64,
    pub cpio_size: u64,
}

/// Output file names inside the `--out` directory.
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";
pub const CMDLINE_FILE: &str = "cmdline";
pub const FIRMWARE_FILE: &str = "firmware.fd";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Paths of a built image.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Built {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL_FILE)
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(INITRD_FILE)
    }
    pub fn firmware(&self) -> Option<PathBuf> {
        self.manifest
            .outputs
            .contains_key(FIRMWARE_FILE)
            .then(|| self.dir.join(FIRMWARE_FILE))
    }
}

fn guest_bin_path(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/usr/bin/{name}")
    }
}

impl ImageSpec {
    /// Builds the file tree of the initrd. Returns it and the module load order.
    pub fn tree(&self) -> Result<(Tree, Vec<String>), BuildError> {
        let mut t = Tree::new();
        for d in [
            "dev", "proc", "sys", "run", "tmp", "etc", "bin", "usr/bin", "lib", "mnt",
        ] {
            t.dir(d)?;
        }
        t.insert("tmp", Node::Dir { mode: 0o1777 })?;
        // The kernel opens /dev/console for init's stdio before anything is mounted.
        t.insert(
            "dev/console",
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        )?;
        if let Some(bb) = &self.busybox {
            t.file("bin/busybox", bb, 0o755)?;
            for a in BUSYBOX_APPLETS {
                t.symlink(&format!("bin/{a}"), "busybox")?;
            }
        }
        if self.pause_bundle {
            let bb = self
                .busybox
                .as_ref()
                .ok_or_else(|| BuildError::Spec("the pause bundle needs --busybox".into()))?;
            pause::add_to_tree(&mut t, pause::GUEST_DIR, bb)?;
        }
        if let Some(init) = &self.init {
            t.file("init", init, 0o755)?;
        }
        for (guest, host) in &self.files {
            t.file(guest, host, 0o644)?;
        }
        let bins: Vec<(String, PathBuf)> = self
            .binaries
            .iter()
            .map(|(guest, host)| (guest_bin_path(guest), host.clone()))
            .collect();
        for (guest, host) in &bins {
            t.file(guest, host, 0o755)?;
        }
        for (guest, host) in elf::closure(&bins, &elf::default_dirs())? {
            t.file(&guest, &host, 0o755)?;
        }
        let order = match &self.kernel {
            Some(k) => {
                // Canonical request order: the image must not depend on CLI order.
                let mut names = self.modules.clone();
                names.sort();
                names.dedup();
                add_modules(&mut t, k, &names)?
            }
            None if !self.modules.is_empty() => {
                return Err(BuildError::Spec(
                    "modules requested without a kernel".into(),
                ))
            }
            None => vec![],
        };
        Ok((t, order))
    }

    /// Builds everything into `out` (created if missing; existing outputs replaced).
    pub fn build(&self, out: &Path) -> Result<Built, BuildError> {
        let kernel = self
            .kernel
            .as_ref()
            .ok_or_else(|| BuildError::Spec("a kernel is required".into()))?;
        std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
        let (tree, modules) = self.tree()?;
        let inputs = records(&tree)?;

        let initrd_path = out.join(INITRD_FILE);
        let tmp = out.join(format!(".{INITRD_FILE}.tmp"));
        let file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let cpio_size = match self.compression {
            Compression::None => {
                let mut w = BufWriter::new(file);
                let n = tree.write_newc(&mut w, self.mtime)?;
                w.flush().map_err(io("writing initrd"))?;
                n
            }
            Compression::Gzip => {
                let mut gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(BufWriter::new(file), flate2::Compression::new(6));
                let n = tree.write_newc(&mut gz, self.mtime)?;
                gz.finish()
                    .and_then(|mut w| w.flush())
                    .map_err(io("writing initrd"))?;
                n
            }
        };
        std::fs::rename(&tmp, &initrd_path).map_err(io("renaming initrd"))?;

        let copy = |src: &Path, name: &str| -> Result<(), BuildError> {
            std::fs::copy(src, out.join(name))
                .map(|_| ())
                .map_err(io(format!("copying {}", src.display())))
        };
        copy(&kernel.vmlinuz, KERNEL_FILE)?;
        if let Some(fw) = &self.firmware {
            copy(fw, FIRMWARE_FILE)?;
        }
        std::fs::write(out.join(CMDLINE_FILE), &self.cmdline).map_err(io("writing cmdline"))?;

        let mut outputs = BTreeMap::new();
        let mut names = vec![KERNEL_FILE, INITRD_FILE, CMDLINE_FILE];
        if self.firmware.is_some() {
            names.push(FIRMWARE_FILE);
        }
        for name in names {
            let p = out.join(name);
            let d = kernel::sha256_file(&p).map_err(io(format!("hashing {}", p.display())))?;
            outputs.insert(name.to_string(), d);
        }
        let initrd_size = std::fs::metadata(&initrd_path)
            .map_err(io("stat initrd"))?
            .len();
        let kernel_package_sha256 = match &kernel.deb {
            Some(deb) => Some(kernel::sha256_file(deb).map_err(io("hashing kernel package"))?),
            None => None,
        };
        let manifest = Manifest {
            kernel_release: Some(kernel.release.clone()),
            kernel_package_sha256,
            cmdline: self.cmdline.clone(),
            compression: self.compression,
            mtime: self.mtime,
            modules,
            inputs,
            outputs,
            initrd_size,
            cpio_size,
        };
        let mut json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BuildError::Spec(format!("manifest: {e}")))?;
        json.push(b'\n');
        std::fs::write(out.join(MANIFEST_FILE), json).map_err(io("writing manifest"))?;
        Ok(Built {
            dir: out.to_path_buf(),
            manifest,
        })
    }
}

/// Copies the requested modules (and dependencies) and the `modules.*` files that
/// `depmod -b` generates for exactly that set, so `modprobe` works in the guest too.
fn add_modules(
    t: &mut Tree,
    kernel: &KernelTree,
    names: &[String],
) -> Result<Vec<String>, BuildError> {
    let index = ModuleIndex::load(kernel)?;
    let order = index.load_order(names, &kernel.release)?;
    let src = kernel.modules_dir();
    let prefix = format!("lib/modules/{}", kernel.release);
    let staging = tempfile::tempdir().map_err(io("creating depmod staging dir"))?;
    let stage = staging.path().join(&prefix);
    std::fs::create_dir_all(&stage).map_err(io("staging modules"))?;
    for rel in &order {
        t.file(&format!("{prefix}/{rel}"), &src.join(rel), 0o644)?;
        let dst = stage.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io("staging modules"))?;
        }
        std::fs::copy(src.join(rel), &dst).map_err(io(format!("staging {rel}")))?;
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), stage.join(f)).map_err(io(format!("staging {f}")))?;
        }
    }
    kernel::depmod(staging.path(), &kernel.release)?;
    let mut generated: Vec<PathBuf> = std::fs::read_dir(&stage)
        .map_err(io("reading depmod output"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    generated.sort();
    for p in generated {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name.filter(|n| n.starts_with("modules.")) else {
            continue;
        };
        // Read now: the staging dir is temporary and its path must not reach the manifest.
        let data = std::fs::read(&p).map_err(io(format!("reading {name}")))?;
        t.bytes(&format!("{prefix}/{name}"), data, 0o644)?;
    }
    let mut list = order.join("\n");
    list.push('\n');
    t.bytes(MODULES_LIST, list.into_bytes(), 0o644)?;
    Ok(order)
}

fn records(tree: &Tree) -> Result<Vec<InputRecord>, BuildError> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    for (path, node) in tree.iter() {
        let Node::File { content, .. } = node else {
            continue;
        };
        let (source, sha256) = match content {
            crate::cpio::Content::Path(p) => (
                p.display().to_string(),
                kernel::sha256_file(p).map_err(io(format!("hashing {}", p.display())))?,
            ),
            crate::cpio::Content::Bytes(b) => {
                ("generated".to_string(), hex::encode(Sha256::digest(b)))
            }
        };
        out.push(InputRecord {
            guest_path: format!("/{path}"),
            source,
            sha256,
        });
    }
    Ok(out)
}
