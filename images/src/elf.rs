//! Shared-library closure of ELF binaries, read from their headers (`PT_INTERP`,
//! `DT_NEEDED`) without executing anything: `ldd` runs the binary's own loader, which
//! is unsafe for binaries we did not build.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

/// Debian's multiarch library directories, searched in this order (the glibc loader's
/// built-in order on Debian for x86_64).
pub const DEBIAN_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable ELF file: {reason}")]
    NotElf { path: PathBuf, reason: String },
    #[error("{path} is for machine {machine}, the guest is x86_64")]
    WrongMachine { path: PathBuf, machine: u16 },
    #[error("{library} (needed by {needed_by}) not found in {dirs:?}")]
    NotFound {
        library: String,
        needed_by: PathBuf,
        dirs: Vec<PathBuf>,
    },
}

/// What one binary needs at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The program interpreter (dynamic loader), if dynamically linked.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in file order.
    pub needed: Vec<String>,
}

/// Reads the interpreter and `DT_NEEDED` list of one ELF file.
pub fn needs(path: &Path) -> Result<Needs, ElfError> {
    let data = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let elf = Elf::parse(&data).map_err(|e| ElfError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if elf.header.e_machine != goblin::elf::header::EM_X86_64 {
        return Err(ElfError::WrongMachine {
            path: path.to_path_buf(),
            machine: elf.header.e_machine,
        });
    }
    Ok(Needs {
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
    })
}

/// Resolves the full library closure of `binaries` against `dirs`.
/// Returns guest path → host file (the guest path is the directory the library was
/// found in, so the loader's default search finds it there too; symlinks on the host
/// are dereferenced so the guest gets the real bytes).
pub fn closure(
    binaries: &[PathBuf],
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, ElfError> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<(String, PathBuf)> = VecDeque::new();
    for bin in binaries {
        let n = needs(bin)?;
        if let Some(interp) = n.interpreter {
            // The loader must exist at exactly the PT_INTERP path.
            let host = Path::new(&interp).to_path_buf();
            if !host.exists() {
                return Err(ElfError::NotFound {
                    library: interp,
                    needed_by: bin.clone(),
                    dirs: vec![],
                });
            }
            out.insert(interp.clone(), host);
        }
        for lib in n.needed {
            queue.push_back((lib, bin.clone()));
        }
    }
    while let Some((lib, needed_by)) = queue.pop_front() {
        if !seen.insert(lib.clone()) {
            continue;
        }
        let (guest, host) = find(&lib, dirs).ok_or_else(|| ElfError::NotFound {
            library: lib.clone(),
            needed_by: needed_by.clone(),
            dirs: dirs.to_vec(),
        })?;
        for next in needs(&host)?.needed {
            queue.push_back((next, host.clone()));
        }
        out.insert(guest, host);
    }
    Ok(out)
}

fn find(lib: &str, dirs: &[PathBuf]) -> Option<(String, PathBuf)> {
    if lib.contains('/') {
        let p = PathBuf::from(lib);
        return p.is_file().then(|| (lib.to_string(), p));
    }
    dirs.iter().find_map(|d| {
        let p = d.join(lib);
        p.is_file().then(|| (format!("{}/{}", d.display(), lib), p))
    })
}

/// The default search directories as paths.
pub fn default_dirs() -> Vec<PathBuf> {
    DEBIAN_LIB_DIRS.iter().map(PathBuf::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binary_needs_libc_and_loader() {
        // /bin/ls is a plain dynamically linked Debian binary.
        let n = needs(Path::new("/bin/ls")).unwrap();
        assert_eq!(
            n.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(n.needed.iter().any(|l| l == "libc.so.6"), "{n:?}");
        let c = closure(&[PathBuf::from("/bin/ls")], &default_dirs()).unwrap();
        assert!(c.contains_key("/lib64/ld-linux-x86-64.so.2"));
        assert!(c.keys().any(|k| k.ends_with("/libc.so.6")), "{c:?}");
        // Transitive: libselinux pulls in libpcre2.
        assert!(c.keys().any(|k| k.contains("libpcre2")), "{c:?}");
    }

    #[test]
    fn static_binary_needs_nothing() {
        let n = needs(Path::new("/bin/busybox")).unwrap();
        assert_eq!(n, Needs::default());
    }

    #[test]
    fn non_elf_and_missing_libraries_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(matches!(needs(&script), Err(ElfError::NotElf { .. })));
        let err = closure(&[PathBuf::from("/bin/ls")], &[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, ElfError::NotFound { .. }), "{err}");
    }
}
