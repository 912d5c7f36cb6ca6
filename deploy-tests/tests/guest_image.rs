//! deploy/guest-image.toml is the one list of what goes into the guest image and how
//! it is measured; both build paths must read it and agree with the deployment. Nix's
//! side as evaluated is checked in nix_eval.rs; here the Debian path
//! (scripts/build-ovmf.sh, tests/vm) and the Kata configurations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use coco_image::contents::GuestContents;

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs build-ovmf.sh's own `dsc_of` for `variant`.
fn build_ovmf_dsc(variant: &str) -> Result<String, String> {
    let script = deploy_tests::repo_root().join("scripts/build-ovmf.sh");
    let body = read("scripts/build-ovmf.sh");
    let start = body
        .find("GUEST_IMAGE_TOML=")
        .expect("build-ovmf.sh reads guest-image.toml");
    let end = start + body[start..].find("\n}\n").unwrap() + 3;
    let prog = format!(
        "log() {{ echo \"$*\" >&2; }}\nset -- {}\n{}\ndsc_of {variant}",
        script.display(),
        body[start..end].replace("$0", "$1")
    );
    let out = Command::new("bash").arg("-c").arg(prog).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn build_ovmf_builds_the_listed_platforms_under_the_listed_names() {
    let c = GuestContents::shipped().unwrap();
    let body = read("scripts/build-ovmf.sh");
    let variants: Vec<&str> = body
        .lines()
        .find_map(|l| l.strip_prefix("VARIANTS=${OVMF_VARIANTS:-"))
        .and_then(|l| l.strip_suffix('}'))
        .expect("VARIANTS default")
        .split_whitespace()
        .collect();
    assert_eq!(
        variants,
        c.firmware.keys().map(String::as_str).collect::<Vec<_>>()
    );
    for (variant, fw) in &c.firmware {
        assert_eq!(build_ovmf_dsc(variant).unwrap(), fw.dsc, "{variant}");
        // build-ovmf.sh writes $OUT/OVMF-<variant>.fd.
        assert_eq!(fw.file, format!("OVMF-{variant}.fd"));
    }
    assert!(build_ovmf_dsc("NoSuchVariant").is_err());
}

#[test]
fn kata_boots_the_listed_firmware_and_the_image_is_measured_for_a_kata_launch() {
    let c = GuestContents::shipped().unwrap();
    let classes = read("nix/runtime-classes.nix");
    assert!(
        classes.contains(&format!("config = \"{}\";", c.measure.kata_config)),
        "measure.kata_config must be a RuntimeClass's configuration"
    );
    for (tee, file) in [
        ("snp", "configuration-coco-snp.toml"),
        ("tdx", "configuration-coco-tdx.toml"),
    ] {
        let cfg: toml::Table = read(&format!("deploy/kata/{file}")).parse().unwrap();
        let q = &cfg["hypervisor"]["qemu"];
        let fw = c.firmware_for(tee).unwrap();
        assert!(
            q["firmware"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{}", fw.file)),
            "{file}"
        );
        // One image and one set of reference values serve both: same launch shape.
        let measured: toml::Table = read(&format!("deploy/kata/{}", c.measure.kata_config))
            .parse()
            .unwrap();
        let m = &measured["hypervisor"]["qemu"];
        for key in ["machine_type", "default_memory", "default_vcpus"] {
            assert_eq!(q[key], m[key], "{file}: {key}");
        }
        let vcpus = q["default_vcpus"].as_integer().unwrap();
        assert!(
            c.measure.vcpus.iter().any(|v| i64::from(*v) == vcpus),
            "{file}: default_vcpus {vcpus} has a reference value"
        );
    }
}

#[test]
fn both_build_paths_read_the_shared_list() {
    // Debian path: the VM harness builds the real guest from it and keeps no
    // list of its own.
    let guest = read("tests/vm/src/guest.rs");
    assert!(guest.contains("GuestContents::shipped()"));
    for own_list in [
        "AGENT_MODULES",
        "\"virtio_pci\"",
        "\"runc\"",
        "initdata = \\\"auto\\\"",
    ] {
        assert!(
            !guest.contains(own_list),
            "tests/vm/src/guest.rs keeps {own_list}"
        );
    }
    // Nix: image, kernel and firmware.
    for f in [
        "nix/guest-image.nix",
        "nix/guest-kernel.nix",
        "nix/ovmf.nix",
    ] {
        assert!(
            read(f).contains("builtins.fromTOML (builtins.readFile ../deploy/guest-image.toml)"),
            "{f}"
        );
    }
    // And the list is the one coco-image compiles in.
    assert_eq!(
        read("deploy/guest-image.toml"),
        coco_image::contents::GUEST_IMAGE_TOML
    );
}
