//! The guest kernel: Debian's `linux-image-*-cloud-amd64` package, downloaded with
//! `apt-get download` and unpacked with `dpkg-deb -x` (no maintainer scripts, so no slow
//! initramfs hooks), cached under `/var/cache/coco-image/kernel/<package>_<version>/`.
//! Kernel modules are resolved with their dependencies from `modules.dep`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Default cache root (overridable with `COCO_IMAGE_CACHE`).
pub const DEFAULT_CACHE: &str = "/var/cache/coco-image";

/// The metapackage that always points at the current cloud kernel.
pub const CLOUD_KERNEL_META: &str = "linux-image-cloud-amd64";

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("running {cmd}: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{0}")]
    Layout(String),
    #[error("module {name:?} not found in {kver} (not in modules.dep, not built in)")]
    UnknownModule { name: String, kver: String },
    #[error("io on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("COCO_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

fn run(cmd: &mut Command) -> Result<String, KernelError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| KernelError::Command {
        cmd: shown.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(KernelError::Command {
            cmd: shown,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An unpacked kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTree {
    /// Root the package was extracted into.
    pub root: PathBuf,
    /// Kernel release (`uname -r`), the directory name under `lib/modules`.
    pub release: String,
    /// Path of the compressed kernel image (bzImage).
    pub vmlinuz: PathBuf,
    /// The `.deb` it came from, if any (recorded in the manifest).
    pub deb: Option<PathBuf>,
}

/// Resolves a (meta)package to the versioned kernel package name and version that
/// `apt-get download` would fetch, e.g. `linux-image-6.1.0-56-cloud-amd64`, `6.1.192-2`.
pub fn resolve_package(name: &str) -> Result<(String, String), KernelError> {
    let deps = run(Command::new("apt-cache").args(["depends", name]))?;
    let versioned = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-") && d.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .unwrap_or_else(|| name.to_string());
    let show = run(Command::new("apt-cache").args(["show", "--no-all-versions", &versioned]))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .ok_or_else(|| KernelError::Layout(format!("apt-cache show {versioned}: no Version")))?
        .trim()
        .to_string();
    Ok((versioned, version))
}

/// Downloads (once) and unpacks the kernel package; cached by package and version.
pub fn fetch_package(name: &str, cache: &Path) -> Result<KernelTree, KernelError> {
    let (pkg, version) = resolve_package(name)?;
    let parent = cache.join("kernel");
    let dir = parent.join(format!("{pkg}_{version}"));
    if !dir.join(".complete").exists() {
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        // Download into a private scratch dir, then rename: a crash never leaves a
        // half cache, and concurrent builds (parallel tests) never share a scratch dir.
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&parent)
            .map_err(io_err(&parent))?;
        tracing::info!(%pkg, %version, "downloading kernel package");
        run(Command::new("apt-get")
            .args(["download", &format!("{pkg}={version}")])
            .current_dir(tmp.path()))?;
        std::fs::write(tmp.path().join(".complete"), format!("{pkg} {version}\n"))
            .map_err(io_err(tmp.path()))?;
        publish(tmp, &dir, ".complete")?;
    }
    let deb = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| KernelError::Layout(format!("no .deb in {}", dir.display())))?;
    unpack_deb(&deb, &dir.join("root"))
}

/// Unpacks a kernel `.deb` (once) and generates its `modules.dep` with `depmod -b`
/// (Debian generates it in postinst, so the package itself has none).
pub fn unpack_deb(deb: &Path, root: &Path) -> Result<KernelTree, KernelError> {
    if !root.join(".unpacked").exists() {
        let parent = root
            .parent()
            .ok_or_else(|| KernelError::Layout(format!("{} has no parent", root.display())))?;
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(tmp.path()))?;
        let release = find_release(tmp.path())?;
        run(Command::new("depmod")
            .arg("-b")
            .arg(tmp.path())
            .arg(&release))?;
        std::fs::write(tmp.path().join(".unpacked"), b"").map_err(io_err(tmp.path()))?;
        publish(tmp, root, ".unpacked")?;
    }
    let mut tree = open_tree(root)?;
    tree.deb = Some(deb.to_path_buf());
    Ok(tree)
}

/// Moves a finished scratch dir into place. If another process got there first (its
/// `marker` exists), ours is discarded; an unfinished leftover is replaced.
fn publish(tmp: tempfile::TempDir, dest: &Path, marker: &str) -> Result<(), KernelError> {
    if dest.join(marker).exists() {
        return Ok(()); // tmp is removed on drop
    }
    if dest.exists() {
        let _ = std::fs::remove_dir_all(dest);
    }
    let path = tmp.keep();
    match std::fs::rename(&path, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.join(marker).exists() => {
            let _ = std::fs::remove_dir_all(&path);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&path);
            Err(KernelError::Io {
                path: dest.to_path_buf(),
                source: e,
            })
        }
    }
}

/// Opens an already unpacked kernel tree (`boot/vmlinuz-*` + `lib/modules/*`).
pub fn open_tree(root: &Path) -> Result<KernelTree, KernelError> {
    let release = find_release(root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(KernelError::Layout(format!(
            "{} missing",
            vmlinuz.display()
        )));
    }
    Ok(KernelTree {
        root: root.to_path_buf(),
        release,
        vmlinuz,
        deb: None,
    })
}

fn find_release(root: &Path) -> Result<String, KernelError> {
    let dir = root.join("lib/modules");
    let mut releases: Vec<String> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(KernelError::Layout(format!(
            "expected exactly one kernel release in {}, found {releases:?}",
            dir.display()
        ))),
    }
}

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// `modules.dep` of a kernel tree, keyed by normalised module name.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    /// name → (relative path, dependency paths)
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    pub fn load(tree: &KernelTree) -> Result<Self, KernelError> {
        let base = tree.modules_dir();
        let dep_path = base.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(io_err(&dep_path))?;
        let mut modules = BTreeMap::new();
        for line in dep.lines() {
            let Some((m, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_string).collect();
            modules.insert(module_name(m), (m.to_string(), deps));
        }
        let builtin_path = base.join("modules.builtin");
        let builtin = std::fs::read_to_string(&builtin_path)
            .map(|s| s.lines().map(module_name).collect())
            .unwrap_or_default();
        Ok(Self { modules, builtin })
    }

    /// Resolves names to module paths (relative to `lib/modules/<release>`) in load
    /// order: every module after its dependencies, the order otherwise following the
    /// request. Built-in modules are skipped (they are always there).
    pub fn load_order(&self, names: &[String], release: &str) -> Result<Vec<String>, KernelError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in names {
            let n = module_name(name);
            if self.builtin.contains(&n) && !self.modules.contains_key(&n) {
                tracing::debug!(module = %n, "built in, nothing to load");
                continue;
            }
            let Some((path, _)) = self.modules.get(&n) else {
                return Err(KernelError::UnknownModule {
                    name: name.clone(),
                    kver: release.to_string(),
                });
            };
            self.visit(path, &mut done, &mut order);
        }
        Ok(order)
    }

    fn visit(&self, path: &str, done: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !done.insert(path.to_string()) {
            return;
        }
        if let Some((_, deps)) = self.modules.get(&module_name(path)) {
            for d in deps {
                self.visit(d, done, order);
            }
        }
        order.push(path.to_string());
    }
}

impl KernelTree {
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Runs `depmod -b root release` for the guest module tree.
pub fn depmod(root: &Path, release: &str) -> Result<(), KernelError> {
    run(Command::new("depmod").arg("-b").arg(root).arg(release)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(module_name("kernel/drivers/md/dm-mod.ko"), "dm_mod");
        assert_eq!(module_name("kernel/x/virtio_net.ko.xz"), "virtio_net");
        assert_eq!(module_name("dm-crypt"), "dm_crypt");
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let mut idx = ModuleIndex::default();
        let mut add = |n: &str, p: &str, d: &[&str]| {
            idx.modules.insert(
                n.to_string(),
                (p.to_string(), d.iter().map(|s| s.to_string()).collect()),
            );
        };
        add("a", "k/a.ko", &["k/b.ko", "k/c.ko"]);
        add("b", "k/b.ko", &["k/c.ko"]);
        add("c", "k/c.ko", &[]);
        add("d", "k/d.ko", &["k/c.ko"]);
        idx.builtin.insert("virtio_pci".into());
        let order = idx
            .load_order(&["a".into(), "virtio_pci".into(), "d".into()], "r")
            .unwrap();
        assert_eq!(order, ["k/c.ko", "k/b.ko", "k/a.ko", "k/d.ko"]);
        let err = idx.load_order(&["nope".into()], "r").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
