//! The workspace's declared `rust-version` is true: no locked dependency declares a
//! newer one, every member inherits it, and the toolchain of the pinned nixpkgs (the
//! rustc version recorded in the Nix stubs from the nixpkgs file the README names) is
//! at least that version. `cargo metadata` reads each locked crate's own manifest
//! (from the registry sources), so the figures are the crates' declarations, not ours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use deploy_tests::RustVersion;

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Cargo.toml's `[workspace.package] rust-version`, as written.
fn declared_msrv_text() -> String {
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    cargo["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("workspace.package.rust-version")
        .to_string()
}

fn declared_msrv() -> RustVersion {
    RustVersion::parse(&declared_msrv_text()).unwrap()
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(deploy_tests::repo_root())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (name, version) of every registry package in Cargo.lock.
fn locked_registry_packages() -> BTreeSet<(String, String)> {
    let lock: toml::Table = read("Cargo.lock").parse().unwrap();
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p.get("source")
                .and_then(|s| s.as_str())
                .is_some_and(|s| s.starts_with("registry+"))
        })
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn no_locked_dependency_needs_a_newer_rustc_than_the_declared_msrv() {
    let msrv = declared_msrv();
    let meta = metadata();
    let mut seen = BTreeSet::new();
    let mut too_new = BTreeMap::new();
    let mut members = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let version = p["version"].as_str().unwrap().to_string();
        let rv = p["rust_version"].as_str();
        if p["source"].is_null() {
            members.insert(name, rv.map(str::to_string));
            continue;
        }
        if let Some(rv) = rv {
            let parsed = RustVersion::parse(rv)
                .unwrap_or_else(|e| panic!("{name} {version}: rust-version {rv:?}: {e}"));
            if parsed > msrv {
                too_new.insert(format!("{name} {version}"), rv.to_string());
            }
        }
        seen.insert((name, version));
    }
    // Every locked crate was read (cargo metadata resolves for all platforms, as the
    // lock file does), so nothing escapes the check.
    let locked = locked_registry_packages();
    let unread: Vec<_> = locked.difference(&seen).collect();
    assert!(
        unread.is_empty(),
        "locked but not in cargo metadata: {unread:?}"
    );
    assert!(locked.len() > 100, "{} locked crates", locked.len());
    assert!(
        too_new.is_empty(),
        "rust-version = \"{msrv}\" is false; these locked crates need more: {too_new:#?}"
    );
    // Members inherit the workspace value (a member's own older value would be false).
    for (name, rv) in &members {
        assert_eq!(
            rv.as_deref().map(|v| RustVersion::parse(v).unwrap()),
            Some(msrv),
            "{name} must use rust-version.workspace = true"
        );
    }
}

#[test]
fn the_msrv_is_tight_some_locked_crate_needs_it() {
    // A declared MSRV above every dependency's would be true but unexplained; equal
    // to the newest dependency's requirement is what the test above can hold.
    let msrv = declared_msrv();
    let meta = metadata();
    let newest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["source"].is_null())
        .filter_map(|p| p["rust_version"].as_str())
        .map(|v| RustVersion::parse(v).unwrap())
        .max()
        .unwrap();
    assert_eq!(newest, msrv, "the newest locked requirement is {newest}");
}

/// The rustc version the Nix stubs carry for the pinned nixpkgs.
fn pinned_rustc() -> RustVersion {
    let stubs = read("nix/tests/stubs/pkgs.nix");
    let line = stubs
        .lines()
        .find_map(|l| l.trim().strip_prefix("rustcVersion = \""))
        .expect("nix/tests/stubs/pkgs.nix: rustcVersion = \"X.Y.Z\";");
    RustVersion::parse(line.trim_end_matches("\";")).unwrap()
}

#[test]
fn the_pinned_nixpkgs_rustc_is_at_least_the_msrv_and_the_readme_says_which() {
    let msrv = declared_msrv();
    let rustc = pinned_rustc();
    assert!(rustc >= msrv, "pinned rustc {rustc} < MSRV {msrv}");
    let readme = read("README.md");
    assert!(
        readme.contains(&format!("rustc {rustc}")),
        "README must name the pinned rustc {rustc}"
    );
    assert!(
        readme.contains(&format!("rust-version = \"{}\"", declared_msrv_text())),
        "README must state the MSRV {msrv}"
    );
    // The pinned revision the README names is the one flake.lock holds.
    let lock: serde_json::Value = serde_json::from_str(&read("flake.lock")).unwrap();
    let rev = lock["nodes"]["nixpkgs"]["locked"]["rev"].as_str().unwrap();
    assert!(readme.contains(rev), "README must name nixpkgs {rev}");
    // workspace.nix refuses a toolchain older than Cargo.toml's rust-version.
    let ws = read("nix/workspace.nix");
    assert!(
        ws.contains("rust-version"),
        "nix/workspace.nix reads the MSRV"
    );
    assert!(
        ws.contains("versionAtLeast"),
        "nix/workspace.nix compares it"
    );
}

#[test]
fn rust_versions_compare_numerically() {
    let v = |s| RustVersion::parse(s).unwrap();
    assert!(v("1.95") > v("1.88.0"));
    assert!(v("1.100") > v("1.95"));
    assert_eq!(v("1.95"), v("1.95.0"));
    assert!(v("1.95.1") > v("1.95"));
    assert!(RustVersion::parse("1.x").is_err());
    assert!(RustVersion::parse("").is_err());
}
