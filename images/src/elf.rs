//! Shared-library closure of ELF binaries, read from their headers (`PT_INTERP`,
//! `DT_NEEDED`, `DT_RPATH`, `DT_RUNPATH`) without executing anything: `ldd` runs the
//! binary's own loader, which is unsafe for binaries we did not build.
//!
//! Libraries are looked up the way glibc's `ld.so` does, so the guest's loader finds
//! each one where we put it:
//! 1. if the requesting object has no `DT_RUNPATH`: the `DT_RPATH` of that object,
//!    then of the object that loaded it, and so on up to the executable;
//! 2. the requesting object's `DT_RUNPATH`;
//! 3. the directory of the executable's interpreter (a Nix-built glibc searches only
//!    its own `lib/`, which is where its `ld.so` lives);
//! 4. the default directories (Debian multiarch).
//!
//! `LD_LIBRARY_PATH` and `/etc/ld.so.cache` play no part: the guest has neither.
//! `$ORIGIN` is expanded twice, against the object's host directory (to find the file)
//! and against its guest directory (to place it), so `$ORIGIN/../lib` keeps working
//! after the binary moves to `/usr/bin`. Every other directory keeps its host path in
//! the guest, so Nix store paths in `PT_INTERP` and `RUNPATH` stay valid there.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
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
    #[error("the interpreter {interpreter} of {binary} does not exist on this host")]
    NoInterpreter {
        interpreter: String,
        binary: PathBuf,
    },
    #[error("{library} (needed by {needed_by}) not found; searched: {}", list(.dirs))]
    NotFound {
        library: String,
        needed_by: PathBuf,
        /// Host directories searched, in order.
        dirs: Vec<PathBuf>,
    },
    #[error("two different files would land at {guest}: {first} and {second}")]
    Conflict {
        guest: String,
        first: PathBuf,
        second: PathBuf,
    },
}

fn list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no directories)".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one object needs at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The program interpreter (dynamic loader), if dynamically linked.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in file order.
    pub needed: Vec<String>,
    /// `DT_RPATH` directories, split at `:`, unexpanded.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` directories, split at `:`, unexpanded.
    pub runpath: Vec<String>,
}

/// Reads the interpreter, `DT_NEEDED`, `DT_RPATH` and `DT_RUNPATH` of one ELF file.
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
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .map(str::to_string)
            .collect()
    };
    Ok(Needs {
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
    })
}

/// One object in a process image: where it is read from and where it goes.
struct Object {
    host: PathBuf,
    /// `$ORIGIN` on the host and in the guest.
    host_dir: PathBuf,
    guest_dir: String,
    needs: Needs,
    /// Index of the object whose `DT_NEEDED` brought this one in.
    loader: Option<usize>,
}

/// A search directory as the host and the guest see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SearchDir {
    host: PathBuf,
    guest: String,
}

impl SearchDir {
    fn same(dir: &Path) -> Self {
        Self {
            host: dir.to_path_buf(),
            guest: dir.display().to_string(),
        }
    }
}

/// Resolves the full library closure of `binaries` (host paths → their guest paths)
/// against `dirs`, the loader's default directories.
/// Returns guest path → host file; symlinks on the host are dereferenced by the
/// archive writer, so the guest gets the real bytes at the path the loader opens.
pub fn closure(
    binaries: &[(String, PathBuf)],
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, ElfError> {
    let mut out: BTreeMap<String, PathBuf> = BTreeMap::new();
    // Each binary is its own process: its loader resolves names independently.
    for (guest, host) in binaries {
        for (g, h) in process_closure(guest, host, dirs)? {
            add(&mut out, g, h)?;
        }
    }
    Ok(out)
}

fn add(out: &mut BTreeMap<String, PathBuf>, guest: String, host: PathBuf) -> Result<(), ElfError> {
    match out.get(&guest) {
        Some(first) if !same_file(first, &host) => Err(ElfError::Conflict {
            guest,
            first: first.clone(),
            second: host,
        }),
        Some(_) => Ok(()),
        None => {
            out.insert(guest, host);
            Ok(())
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The objects one executable loads, breadth first like `ld.so` (the first object to
/// need a name decides where it comes from; later requests reuse it).
fn process_closure(
    guest: &str,
    host: &Path,
    dirs: &[PathBuf],
) -> Result<Vec<(String, PathBuf)>, ElfError> {
    let exe_needs = needs(host)?;
    let mut out = Vec::new();
    let mut default: Vec<SearchDir> = Vec::new();
    if let Some(interp) = &exe_needs.interpreter {
        // The loader must exist at exactly the PT_INTERP path, on the host and in the guest.
        let p = Path::new(interp);
        if !p.is_file() {
            return Err(ElfError::NoInterpreter {
                interpreter: interp.clone(),
                binary: host.to_path_buf(),
            });
        }
        out.push((interp.clone(), p.to_path_buf()));
        if let Some(dir) = p.parent() {
            default.push(SearchDir::same(dir));
        }
    }
    // No PT_INTERP but DT_NEEDED entries: a shared object shipped on its own (a
    // dlopen()ed module such as a TPM TCTI). Whichever program loads it uses the
    // default directories for its dependencies, which is what follows.
    for d in dirs {
        let d = SearchDir::same(d);
        if !default.contains(&d) {
            default.push(d);
        }
    }
    // The kernel gives ld.so the executable's resolved path, so $ORIGIN is the
    // directory of the real file on the host (a store path, not a `result` link).
    let real = host.canonicalize().map_err(|source| ElfError::Read {
        path: host.to_path_buf(),
        source,
    })?;
    let guest_path = absolute_guest(guest);
    let mut objects = vec![Object {
        host_dir: real.parent().map(Path::to_path_buf).unwrap_or_default(),
        host: host.to_path_buf(),
        guest_dir: parent_of(&guest_path),
        needs: exe_needs,
        loader: None,
    }];
    let mut loaded: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<(String, usize)> = objects[0]
        .needs
        .needed
        .iter()
        .map(|n| (n.clone(), 0))
        .collect();
    while let Some((name, by)) = queue.pop_front() {
        if !loaded.insert(name.clone()) {
            continue;
        }
        let (found, searched) = if name.contains('/') {
            // A path in DT_NEEDED is opened as is (relative to the working directory).
            let p = PathBuf::from(&name);
            let hit = p.is_file().then(|| {
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                (
                    SearchDir {
                        guest: dir.display().to_string(),
                        host: dir,
                    },
                    p,
                )
            });
            (hit, vec![])
        } else {
            let order = search_order(&objects, by, &default);
            let hit = order.iter().find_map(|d| {
                let p = d.host.join(&name);
                usable(&p).then(|| (d.clone(), p))
            });
            (hit, order.into_iter().map(|d| d.host).collect())
        };
        let (dir, host_file) = found.ok_or_else(|| ElfError::NotFound {
            library: name.clone(),
            needed_by: objects[by].host.clone(),
            dirs: searched,
        })?;
        let file_name = Path::new(&name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let guest_file = normalise(&format!("{}/{file_name}", dir.guest));
        let n = needs(&host_file)?;
        for next in &n.needed {
            queue.push_back((next.clone(), objects.len()));
        }
        out.push((guest_file.clone(), host_file.clone()));
        objects.push(Object {
            host: host_file,
            host_dir: dir.host,
            guest_dir: parent_of(&guest_file),
            needs: n,
            loader: Some(by),
        });
    }
    Ok(out)
}

/// Where `ld.so` looks for a name `objects[by]` needs (see the module docs).
fn search_order(objects: &[Object], by: usize, default: &[SearchDir]) -> Vec<SearchDir> {
    let mut order = Vec::new();
    let requester = &objects[by];
    if requester.needs.runpath.is_empty() {
        let mut at = Some(by);
        while let Some(i) = at {
            let o = &objects[i];
            // An object with DT_RUNPATH has its DT_RPATH ignored entirely.
            if o.needs.runpath.is_empty() {
                order.extend(o.needs.rpath.iter().filter_map(|d| expand(d, o)));
            }
            at = o.loader;
        }
    }
    order.extend(
        requester
            .needs
            .runpath
            .iter()
            .filter_map(|d| expand(d, requester)),
    );
    order.extend(default.iter().cloned());
    let mut seen = BTreeSet::new();
    order.retain(|d| seen.insert(d.clone().host));
    order
}

/// Expands `$ORIGIN` / `${ORIGIN}` for one RPATH/RUNPATH entry. Entries the guest
/// cannot resolve the same way (relative to the working directory, `$LIB`,
/// `$PLATFORM`) are skipped with a warning rather than guessed.
fn expand(entry: &str, o: &Object) -> Option<SearchDir> {
    let rest = entry
        .strip_prefix("$ORIGIN")
        .or_else(|| entry.strip_prefix("${ORIGIN}"));
    if let Some(rest) = rest {
        if rest.is_empty() || rest.starts_with('/') {
            let rel = rest.trim_start_matches('/');
            return Some(SearchDir {
                host: if rel.is_empty() {
                    o.host_dir.clone()
                } else {
                    o.host_dir.join(rel)
                },
                guest: normalise(&format!("{}/{rel}", o.guest_dir)),
            });
        }
    }
    if entry.starts_with('/') && !entry.contains('$') {
        return Some(SearchDir::same(Path::new(entry)));
    }
    if !entry.is_empty() {
        tracing::warn!(
            object = %o.host.display(),
            entry,
            "search path entry not supported in the guest, skipped"
        );
    }
    None
}

/// A file `ld.so` would accept: x86_64 ELF64 (it skips other machines and classes and
/// keeps searching, so must we).
fn usable(p: &Path) -> bool {
    let mut hdr = [0u8; 20];
    let ok = std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut hdr));
    ok.is_ok()
        && &hdr[..4] == b"\x7fELF"
        && hdr[4] == 2 // ELFCLASS64
        && u16::from_le_bytes([hdr[18], hdr[19]]) == goblin::elf::header::EM_X86_64
}

fn absolute_guest(p: &str) -> String {
    normalise(&format!("/{}", p.trim_start_matches('/')))
}

fn parent_of(guest: &str) -> String {
    match guest.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.into(),
    }
}

/// Lexical normalisation of an absolute guest path (`.`, `..`, repeated `/`): in the
/// initrd every directory on a library path is a real directory, so this is what the
/// guest kernel resolves too.
fn normalise(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The default search directories as paths.
pub fn default_dirs() -> Vec<PathBuf> {
    DEBIAN_LIB_DIRS.iter().map(PathBuf::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls() -> Vec<(String, PathBuf)> {
        vec![("/usr/bin/ls".into(), PathBuf::from("/bin/ls"))]
    }

    #[test]
    fn dynamic_binary_needs_libc_and_loader() {
        // /bin/ls is a plain dynamically linked Debian binary.
        let n = needs(Path::new("/bin/ls")).unwrap();
        assert_eq!(
            n.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(n.needed.iter().any(|l| l == "libc.so.6"), "{n:?}");
        let c = closure(&ls(), &default_dirs()).unwrap();
        assert!(c.contains_key("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            c.get("/lib/x86_64-linux-gnu/libc.so.6"),
            Some(&PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")),
            "{c:?}"
        );
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
        // With only an empty default dir (and /lib64, the interpreter's), libc is missing.
        let err = closure(&ls(), &[dir.path().to_path_buf()]).unwrap_err();
        let ElfError::NotFound { library, dirs, .. } = &err else {
            panic!("{err}");
        };
        assert!(library.starts_with("lib"), "{err}");
        assert_eq!(dirs, &[PathBuf::from("/lib64"), dir.path().to_path_buf()]);
        let msg = err.to_string();
        assert!(msg.contains("needed by /bin/ls"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn a_dlopened_shared_object_brings_its_libraries() {
        // No PT_INTERP, one DT_NEEDED: how TCTI modules and other plugins look.
        let lib = PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1");
        if !lib.is_file() {
            eprintln!("skipped: {} not installed", lib.display());
            return;
        }
        let got = closure(
            &[("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1".into(), lib)],
            &default_dirs(),
        )
        .unwrap();
        assert!(
            got.iter().any(|(guest, _)| guest.ends_with("/libc.so.6")),
            "{got:?}"
        );
    }

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(normalise("/usr/bin/../lib"), "/usr/lib");
        assert_eq!(normalise("/usr/bin/./../../../lib//x"), "/lib/x");
        assert_eq!(parent_of("/usr/bin/x"), "/usr/bin");
        assert_eq!(parent_of("/init"), "/");
        assert_eq!(absolute_guest("usr/bin/x"), "/usr/bin/x");
    }

    #[test]
    fn origin_expands_on_both_sides_and_odd_entries_are_skipped() {
        let o = Object {
            host: "/h/bin/x".into(),
            host_dir: "/h/bin".into(),
            guest_dir: "/usr/bin".into(),
            needs: Needs::default(),
            loader: None,
        };
        for e in ["$ORIGIN/../lib", "${ORIGIN}/../lib"] {
            assert_eq!(
                expand(e, &o),
                Some(SearchDir {
                    host: "/h/bin/../lib".into(),
                    guest: "/usr/lib".into()
                })
            );
        }
        assert_eq!(expand("$ORIGIN", &o).unwrap().guest, "/usr/bin");
        assert_eq!(
            expand("/nix/store/x-glibc/lib", &o).unwrap().guest,
            "/nix/store/x-glibc/lib"
        );
        for e in ["", "lib", "$LIB/x", "/usr/$PLATFORM", "$ORIGINAL"] {
            assert_eq!(expand(e, &o), None, "{e}");
        }
    }
}
