//! Every Nix file parses (`nix-instantiate --parse`), and the flake outputs the README
//! tells users to build or run are declared in flake.nix. nixpkgs cannot be fetched
//! here, so evaluation itself is not attempted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use deploy_tests::nix_instantiate;

fn parse(nix: &str, file: &Path) -> Result<(), String> {
    let out = Command::new(nix)
        .arg("--parse")
        .arg(file)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_nix_file_parses() {
    let Some(nix) = nix_instantiate() else { return };
    let root = deploy_tests::repo_root();
    let files = deploy_tests::files_with_suffix(&root, ".nix");
    assert!(files.iter().any(|f| f.ends_with("flake.nix")), "{files:?}");
    assert!(files.len() >= 8, "{files:?}");
    let errors: Vec<String> = files
        .iter()
        .filter_map(|f| parse(nix, f).err().map(|e| format!("{}: {e}", f.display())))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn a_broken_nix_file_is_reported() {
    let Some(nix) = nix_instantiate() else { return };
    let dir = std::env::temp_dir().join(format!("deploy-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("broken.nix");
    std::fs::write(&f, "{ a = 1; b = ; }").unwrap();
    let r = parse(nix, &f);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(r.is_err());
}

#[test]
fn flake_lock_pins_a_real_looking_nixpkgs() {
    let root = deploy_tests::repo_root();
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("flake.lock")).unwrap()).unwrap();
    let locked = &lock["nodes"]["nixpkgs"]["locked"];
    let rev = locked["rev"].as_str().unwrap();
    assert_eq!(rev.len(), 40);
    assert!(rev.chars().all(|c| c.is_ascii_hexdigit()));
    let nar = locked["narHash"].as_str().unwrap();
    let b64 = nar.strip_prefix("sha256-").unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .len(),
        32
    );
    assert_eq!(lock["root"], "root");
    assert_eq!(lock["nodes"]["root"]["inputs"]["nixpkgs"], "nixpkgs");
}

/// `nix build .#NAME`, `nix run .#NAME`, `nix develop .#NAME` in the README.
fn readme_outputs(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in readme.split(".#").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[test]
fn outputs_named_in_the_readme_exist_in_the_flake() {
    let root = deploy_tests::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let flake = std::fs::read_to_string(root.join("flake.nix")).unwrap();
    let names = readme_outputs(&readme);
    for want in ["guest-image", "kbs", "kbs-image"] {
        assert!(
            names.iter().any(|n| n == want),
            "README must show .#{want}: {names:?}"
        );
    }
    for name in &names {
        let declared = flake
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{name} =")));
        assert!(
            declared,
            "README uses .#{name} but flake.nix declares no {name}"
        );
    }
    // The output sets the README's commands rely on.
    for attr in [
        "packages.${system}",
        "apps.${system}",
        "checks.${system}",
        "nixosModules",
        "devShells.${system}.default",
    ] {
        assert!(flake.contains(attr), "flake.nix lacks {attr}");
    }
    if readme.contains("nixosModules.") {
        for m in ["kbs", "node"] {
            assert!(
                flake.contains(&format!("{m} = import ./nix/")),
                "nixosModules.{m}"
            );
        }
    }
}

#[test]
fn readme_output_extraction_sees_every_form() {
    let names = readme_outputs("nix build .#guest-image\nnix run .#kbs -- x\n`.#demo`");
    assert_eq!(names, ["guest-image", "kbs", "demo"]);
}
