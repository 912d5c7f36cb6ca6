//! Test support for the deployment checks (see `tests/` and README.md). Nothing here
//! ships; the crate exists so the checks run with `cargo test -p deploy-tests`.

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives one level below it). Cargo gives the test
/// process the manifest directory at run time; that wins over the one compiled in,
/// because a shared target dir may hold a binary built from another checkout.
pub fn repo_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `nix-instantiate` if installed (Debian `nix-bin`); otherwise says the caller skips.
/// Under `CI=true` a missing Nix is a failure: scripts/setup.sh installs it.
pub fn nix_instantiate() -> Option<&'static str> {
    let ok = std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some("nix-instantiate")
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("nix-instantiate not found under CI=true: scripts/setup.sh installs nix-bin");
    } else {
        eprintln!("SKIPPED: nix-instantiate not found (apt-get install nix-bin)");
        None
    }
}

/// Runs scripts/nix-eval.sh (the flake against the real nixpkgs lib and the stubs
/// of nix/tests/stubs) once per test binary and returns the directory with its
/// show.txt, drvs.json and cases.json. `None` (with a message) when Nix is missing
/// outside CI or no nixpkgs library is on the machine (it cannot be fetched in CI;
/// scripts/nix-eval.sh says where it looks).
pub fn nix_eval_outputs() -> Option<&'static Path> {
    static OUT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    OUT.get_or_init(|| {
        nix_instantiate()?;
        let dir = std::env::temp_dir().join(format!("coco-nix-eval-{}", std::process::id()));
        let out = std::process::Command::new(repo_root().join("scripts/nix-eval.sh"))
            .env("COCO_NIX_EVAL_OUT", &dir)
            .output()
            .unwrap_or_else(|e| panic!("scripts/nix-eval.sh: {e}"));
        match out.status.code() {
            Some(0) => Some(dir),
            Some(3) => {
                eprintln!("SKIPPED: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            _ => panic!(
                "scripts/nix-eval.sh failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
    .as_deref()
}

/// Evaluates a Nix expression (strictly, to JSON) in the repository root without
/// writing to the store. Only builtins are available: nixpkgs cannot be fetched here.
pub fn nix_eval(nix: &str, expr: &str) -> Result<serde_json::Value, String> {
    let out = std::process::Command::new(nix)
        .args([
            "--eval",
            "--strict",
            "--json",
            "--readonly-mode",
            "-E",
            expr,
        ])
        .current_dir(repo_root())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// A `rust-version` (`MAJOR.MINOR[.PATCH]`), ordered numerically (1.100 > 1.95).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RustVersion(pub u64, pub u64, pub u64);

impl RustVersion {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(format!("{s:?}: expected MAJOR.MINOR[.PATCH]"));
        }
        let n = |p: &str| p.parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
        Ok(Self(
            n(parts[0])?,
            n(parts[1])?,
            parts.get(2).map(|p| n(p)).transpose()?.unwrap_or(0),
        ))
    }
}

impl std::fmt::Display for RustVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Files under `dir` whose name ends with `suffix`, skipping build output and VCS dirs.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                    stack.push(p);
                }
            } else if name.ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Paths (dotted, e.g. `spec.containers[0].imagePullPolicyy`) present in `input` but
/// missing from `reserialized`: fields the typed parse silently dropped, i.e. unknown
/// fields. Scalars are not compared (YAML `8080` vs `"8080"` is the type's business).
pub fn dropped_fields(input: &serde_json::Value, reserialized: &serde_json::Value) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        use serde_json::Value::{Array, Object};
        match (a, b) {
            (Object(ma), Object(mb)) => {
                for (k, va) in ma {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match mb.get(k) {
                        Some(vb) => walk(va, vb, &p, out),
                        // An explicit null in the input carries nothing to keep.
                        None if va.is_null() => {}
                        None => out.push(p),
                    }
                }
            }
            (Array(xa), Array(xb)) => {
                for (i, va) in xa.iter().enumerate() {
                    match xb.get(i) {
                        Some(vb) => walk(va, vb, &format!("{path}[{i}]"), out),
                        None => out.push(format!("{path}[{i}]")),
                    }
                }
            }
            (Object(_) | Array(_), _) => out.push(path.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(input, reserialized, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dropped_fields_finds_unknown_keys_at_any_depth() {
        let a = json!({"a": 1, "b": {"c": [ {"d": 1, "typo": 2} ]}});
        let b = json!({"a": 1, "b": {"c": [ {"d": 1} ]}});
        assert_eq!(dropped_fields(&a, &b), vec!["b.c[0].typo".to_string()]);
        assert!(dropped_fields(&b, &b).is_empty());
    }
}
