//! Shared libraries are found the way `ld.so` finds them (RPATH/RUNPATH with
//! `$ORIGIN`, the interpreter's directory, the defaults) and land in the initrd where
//! the guest's loader will look. Real binaries compiled with gcc; the initrd is built
//! by `ImageSpec::build` and read back with the archive reader. Where we are root,
//! the unpacked initrd is also used as a chroot to run the binary with its own loader.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use coco_image::cpio::{read_newc, Entry};
use coco_image::elf::{self, ElfError};
use coco_image::kernel::KernelTree;
use coco_image::{Compression, ImageSpec};

const GREET_C: &str = "const char *greet(void) { return \"hello from libgreet\"; }\n";
const HELLO_C: &str =
    "#include <stdio.h>\nconst char *greet(void);\nint main(void) { puts(greet()); return 0; }\n";
const INNER_C: &str = "const char *inner(void) { return \"inner\"; }\n";
const OUTER_C: &str = "const char *inner(void);\nconst char *greet(void) { return inner(); }\n";

fn have_gcc() -> bool {
    let ok = Command::new("gcc").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: gcc is not installed (apt-get install gcc)");
    }
    ok
}

fn gcc(args: &[&str]) {
    // A Nix toolchain's linker wrapper adds the store directories of every library it
    // links to the RUNPATH; the tests want exactly the search paths they give.
    let out = Command::new("gcc")
        .args(args)
        .env("NIX_DONT_SET_RPATH", "1")
        .env("NIX_DONT_SET_RPATH_x86_64_unknown_linux_gnu", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(p: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
    p.to_path_buf()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `gcc -shared` of `src` into `dir/name` with soname `name`, plus `extra` flags.
fn shared_lib(dir: &Path, name: &str, src: &str, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let c = write(&dir.join(format!("{name}.c")), src);
    let out = dir.join(name);
    let soname = format!("-Wl,-soname,{name}");
    let mut args = vec!["-shared", "-fPIC", "-o", s(&out), s(&c), &soname];
    args.extend_from_slice(extra);
    gcc(&args);
    std::fs::remove_file(c).unwrap();
    out
}

/// The toolchain's libc and its dynamic loader (Debian: /lib/x86_64-linux-gnu and
/// /lib64; a Nix toolchain: the glibc store path), from a program gcc links.
fn system_libc(work: &Path) -> (PathBuf, PathBuf) {
    let src = write(&work.join("probe.c"), "int main(void) { return 0; }\n");
    let exe = work.join("probe");
    gcc(&["-o", s(&exe), s(&src)]);
    let interp = PathBuf::from(elf::needs(&exe).unwrap().interpreter.unwrap());
    let out = Command::new("gcc")
        .arg("-print-file-name=libc.so.6")
        .output()
        .unwrap();
    let libc = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(libc.is_file(), "gcc names no libc.so.6: {libc:?}");
    (interp, libc)
}

/// Builds an initrd containing `binaries` (guest name → host path) and returns its
/// entries by path (without the leading `/`).
fn initrd(work: &Path, binaries: &[(&str, &Path)]) -> BTreeMap<String, Entry> {
    let kdir = work.join("kernel");
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::write(kdir.join("vmlinuz"), b"not a kernel").unwrap();
    // No modules are requested; the (empty) index must still exist.
    let modules = kdir.join("lib/modules/0.0.0-test");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("modules.dep"), b"").unwrap();
    let spec = ImageSpec {
        kernel: Some(KernelTree {
            root: kdir.clone(),
            release: "0.0.0-test".into(),
            vmlinuz: kdir.join("vmlinuz"),
            deb: None,
        }),
        binaries: binaries
            .iter()
            .map(|(g, h)| (g.to_string(), h.to_path_buf()))
            .collect(),
        cmdline: "console=ttyS0".into(),
        compression: Compression::Gzip,
        ..Default::default()
    };
    let out = work.join("out");
    let built = spec.build(&out).unwrap();
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(built.initrd()).unwrap())
        .read_to_end(&mut cpio)
        .unwrap();
    read_newc(&cpio)
        .unwrap()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

fn assert_file(entries: &BTreeMap<String, Entry>, guest: &str, host: &Path) {
    let key = guest.trim_start_matches('/');
    let e = entries
        .get(key)
        .unwrap_or_else(|| panic!("{guest} missing; have {:?}", entries.keys()));
    assert_eq!(e.mode & 0o170000, 0o100000, "{guest} is a regular file");
    assert_eq!(
        e.data,
        std::fs::read(host).unwrap(),
        "{guest} has {host:?}'s bytes"
    );
}

/// Unpacks the initrd and runs `guest` in it as a chroot; None when not permitted.
fn run_in_chroot(work: &Path, guest: &str) -> Option<std::process::Output> {
    let root = work.join("unpacked");
    std::fs::create_dir_all(&root).unwrap();
    let initrd = work.join("out/initrd.img");
    let unpack = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cpio -id --quiet --no-absolute-filenames",
            initrd.display()
        ))
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    let out = Command::new("chroot").arg(&root).arg(guest).output().ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && err.contains("Operation not permitted") {
        eprintln!("skipped the chroot run: {err}");
        return None;
    }
    Some(out)
}

#[test]
fn origin_relative_runpath_follows_the_binary_into_the_guest() {
    if !have_gcc() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let pkg = t.path().join("pkg");
    let lib = shared_lib(&pkg.join("lib"), "libgreet.so", GREET_C, &[]);
    let hello = pkg.join("bin/hello");
    std::fs::create_dir_all(hello.parent().unwrap()).unwrap();
    let src = write(&t.path().join("hello.c"), HELLO_C);
    let l = format!("-L{}", s(&pkg.join("lib")));
    gcc(&[
        "-o",
        s(&hello),
        s(&src),
        &l,
        "-lgreet",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib",
    ]);
    // The binary works on the host, through its RUNPATH alone.
    let host_run = Command::new(&hello).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&host_run.stdout),
        "hello from libgreet\n"
    );

    let entries = initrd(t.path(), &[("hello", &hello)]);
    assert_file(&entries, "/usr/bin/hello", &hello);
    // $ORIGIN is /usr/bin in the guest, so $ORIGIN/../lib is /usr/lib there.
    assert_file(&entries, "/usr/lib/libgreet.so", &lib);
    // The loader at exactly its PT_INTERP path, and a libc.
    let (interp, _) = system_libc(t.path());
    assert_file(&entries, s(&interp), &interp);
    assert!(
        entries.keys().any(|k| k.ends_with("/libc.so.6")),
        "no libc: {:?}",
        entries.keys()
    );
    assert!(
        !entries
            .keys()
            .any(|k| k.contains(s(&pkg).trim_start_matches('/'))),
        "host build paths leak into the guest: {:?}",
        entries.keys()
    );

    if let Some(out) = run_in_chroot(t.path(), "/usr/bin/hello") {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from libgreet\n",
            "in the initrd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn store_paths_keep_their_host_path_and_libc_comes_from_the_interpreter_dir() {
    if !have_gcc() {
        return;
    }
    // A Nix-like layout: glibc (loader + libc side by side), a library package and
    // a program whose PT_INTERP and RUNPATH name those store paths.
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("nix/store");
    let glibc = store.join("aaaa-glibc-2.40/lib");
    std::fs::create_dir_all(&glibc).unwrap();
    let (sys_ld, sys_libc) = system_libc(t.path());
    let ld = glibc.join("ld-linux-x86-64.so.2");
    std::fs::copy(&sys_ld, &ld).unwrap();
    let libc = glibc.join("libc.so.6");
    std::fs::copy(&sys_libc, &libc).unwrap();
    let greet_dir = store.join("bbbb-greet-1.0/lib");
    let greet = shared_lib(&greet_dir, "libgreet.so", GREET_C, &[]);
    let hello = store.join("cccc-hello-1.0/bin/hello");
    std::fs::create_dir_all(hello.parent().unwrap()).unwrap();
    let src = write(&t.path().join("hello.c"), HELLO_C);
    let interp = format!("-Wl,--dynamic-linker,{}", s(&ld));
    let rpath = format!("-Wl,--enable-new-dtags,-rpath,{}", s(&greet_dir));
    let l = format!("-L{}", s(&greet_dir));
    gcc(&["-o", s(&hello), s(&src), &l, "-lgreet", &interp, &rpath]);
    let n = elf::needs(&hello).unwrap();
    assert_eq!(n.interpreter.as_deref(), Some(s(&ld)));
    assert_eq!(n.runpath, vec![s(&greet_dir).to_string()]);

    let entries = initrd(t.path(), &[("coco-hello", &hello)]);
    assert_file(&entries, "/usr/bin/coco-hello", &hello);
    assert_file(&entries, s(&ld), &ld);
    assert_file(&entries, s(&greet), &greet);
    // libc: not in RUNPATH, so from the interpreter's directory, before the defaults.
    assert_file(&entries, s(&libc), &libc);
    let libcs: Vec<_> = entries
        .keys()
        .filter(|k| k.ends_with("/libc.so.6"))
        .collect();
    assert_eq!(
        libcs,
        vec![s(&libc).trim_start_matches('/')],
        "a default-directory libc was picked although the loader's own directory has one"
    );
}

#[test]
fn rpath_is_inherited_runpath_is_not_and_a_missing_library_is_named() {
    if !have_gcc() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let pkg = t.path().join("pkg");
    let libdir = pkg.join("lib");
    let inner = shared_lib(&libdir, "libinner.so", INNER_C, &[]);
    let l = format!("-L{}", s(&libdir));
    // libgreet needs libinner but has no search path of its own.
    shared_lib(&libdir, "libgreet.so", OUTER_C, &[&l, "-linner"]);
    let src = write(&t.path().join("hello.c"), HELLO_C);
    let link = |name: &str, dtags: &str| -> PathBuf {
        let exe = pkg.join("bin").join(name);
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        let rpath = format!("-Wl,{dtags},-rpath,$ORIGIN/../lib");
        let rpath_link = format!("-Wl,-rpath-link,{}", s(&libdir));
        gcc(&["-o", s(&exe), s(&src), &l, "-lgreet", &rpath, &rpath_link]);
        exe
    };
    let with_rpath = link("old", "--disable-new-dtags");
    let with_runpath = link("new", "--enable-new-dtags");
    assert!(!elf::needs(&with_rpath).unwrap().rpath.is_empty());
    assert!(!elf::needs(&with_runpath).unwrap().runpath.is_empty());

    // The host loader: DT_RPATH serves libgreet's own needs, DT_RUNPATH does not.
    let ok = Command::new(&with_rpath).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "inner\n");
    let fails = Command::new(&with_runpath).output().unwrap();
    assert!(!fails.status.success());
    assert!(String::from_utf8_lossy(&fails.stderr).contains("libinner.so"));

    // The closure agrees with it both ways.
    let c = elf::closure(
        &[("/usr/bin/old".into(), with_rpath.clone())],
        &elf::default_dirs(),
    )
    .unwrap();
    let host_of = |guest: &str| c.get(guest).map(|p| p.canonicalize().unwrap());
    assert_eq!(host_of("/usr/lib/libinner.so"), Some(inner.clone()));
    assert_eq!(
        host_of("/usr/lib/libgreet.so"),
        Some(libdir.join("libgreet.so"))
    );
    let err = elf::closure(
        &[("/usr/bin/new".into(), with_runpath.clone())],
        &elf::default_dirs(),
    )
    .unwrap_err();
    let msg = err.to_string();
    let ElfError::NotFound {
        library,
        needed_by,
        dirs,
    } = err
    else {
        panic!("{msg}");
    };
    assert_eq!(library, "libinner.so");
    assert_eq!(
        needed_by.canonicalize().unwrap(),
        libdir.join("libgreet.so")
    );
    let (interp, _) = system_libc(t.path());
    assert_eq!(
        dirs[0],
        interp.parent().unwrap(),
        "the interpreter's directory first: {msg}"
    );
    assert!(msg.contains("libinner.so (needed by"), "{msg}");
    assert!(
        msg.contains("/usr/lib/x86_64-linux-gnu"),
        "defaults listed: {msg}"
    );

    // Without the library the build fails and says which one and where it looked.
    std::fs::remove_file(&inner).unwrap();
    let err = elf::closure(&[("/usr/bin/old".into(), with_rpath)], &elf::default_dirs())
        .unwrap_err()
        .to_string();
    assert!(err.contains("libinner.so"), "{err}");
    assert!(err.contains(s(&pkg.join("bin/../lib"))), "{err}");
}
