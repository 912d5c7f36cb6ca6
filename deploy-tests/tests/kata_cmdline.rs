//! The kernel command line the guest image is measured with is the one Kata boots:
//! Kata's own parameters followed by the configuration's `kernel_params`
//! (`coco_image::kata` documents the composition). nix/guest-image.nix is evaluated
//! (builtins only, its nixpkgs arguments stubbed) to see which configuration it
//! measures with; every Kata configuration must compose to the same line because one
//! image serves every RuntimeClass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Kata configuration file name → the command line Kata composes from it.
fn composed() -> BTreeMap<String, String> {
    let dir = deploy_tests::repo_root().join("deploy/kata");
    deploy_tests::files_with_suffix(&dir, ".toml")
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let line = coco_image::kata::cmdline(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, line)
        })
        .collect()
}

#[test]
fn every_kata_configuration_composes_the_same_measurable_line() {
    let all = composed();
    assert_eq!(all.len(), 3, "{all:?}");
    let lines: std::collections::BTreeSet<_> = all.values().collect();
    assert_eq!(lines.len(), 1, "one image, different cmdlines: {all:#?}");
    for (name, line) in &all {
        let cfg: toml::Table = read(&format!("deploy/kata/{name}")).parse().unwrap();
        let params = cfg["hypervisor"]["qemu"]["kernel_params"].as_str().unwrap();
        // Kata's parameters first, the configured ones last (they win).
        assert!(line.ends_with(&format!(" {params}")), "{name}: {line}");
        assert!(line.starts_with("tsc=reliable "), "{name}: {line}");
        // No host-dependent value slipped in.
        assert!(line.contains(" nr_cpus=1 "), "{name}: {line}");
        // The agent's console must be /dev/console: the last console= wins.
        let last_console = line.split(' ').rfind(|p| p.starts_with("console="));
        assert_eq!(last_console, Some("console=hvc0"), "{name}");
    }
}

#[test]
fn the_guest_image_is_measured_with_the_line_kata_boots() {
    let Some(nix) = deploy_tests::nix_instantiate() else {
        return;
    };
    // Stubs for the nixpkgs arguments: only the build script's text is wanted.
    let expr = r#"
      let
        stub = name: { type = "derivation"; outPath = "/stub/${name}"; };
        args = {
          lib = {
            concatMapStringsSep = sep: f: l: builtins.concatStringsSep sep (map f l);
            concatStringsSep = builtins.concatStringsSep;
            optionalString = c: s: if c then s else "";
            getBin = p: p; getLib = p: p;
            isDerivation = v: v.type or null == "derivation";
            findFirst = f: d: l: let m = builtins.filter f l; in if m == [ ] then d else builtins.head m;
          };
          runCommand = name: env: script: { inherit name script; };
          jq = stub "jq"; pkgsStatic = { busybox = stub "busybox"; }; workspace = stub "coco";
          runc = stub "runc"; lvm2 = stub "lvm2"; e2fsprogs = stub "e2fsprogs";
          tpm2-tss = stub "tpm2-tss"; cacert = stub "cacert";
          guestKernel = stub "kernel" // { modDirVersion = "0"; };
          ovmf = {
            AmdSev = stub "ovmf-snp" // { tee = "snp"; file = "OVMF-AmdSev.fd"; firmware = "/stub/snp.fd"; };
            IntelTdx = stub "ovmf-tdx" // { tee = "tdx"; file = "OVMF-IntelTdx.fd"; firmware = "/stub/tdx.fd"; };
          };
        };
      in (import ./nix/guest-image.nix args).initrd.script
    "#;
    let script = deploy_tests::nix_eval(nix, expr).unwrap();
    let script = script.as_str().unwrap();
    let build = script
        .split("coco-image build")
        .nth(1)
        .expect("nix/guest-image.nix runs coco-image build");
    assert!(
        !build.contains("--cmdline"),
        "the image must not be built with a hand-written cmdline:\n{build}"
    );
    // Store path /nix/store/<hash>-<file name> → deploy/kata/<file name>.
    let config_of = |store_path: &str| -> String {
        let base = store_path.rsplit('/').next().unwrap();
        base.split_once('-').unwrap().1.to_string()
    };
    let measured_with = build
        .split_whitespace()
        .skip_while(|w| *w != "--kata-config")
        .nth(1)
        .map(config_of)
        .expect("coco-image build --kata-config <deploy/kata file>");
    let all = composed();
    assert!(all.contains_key(&measured_with), "{measured_with}");
    // The build also checks that every configuration composes the same line.
    let checked: Vec<String> = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("for config in "))
        .and_then(|l| l.strip_suffix("; do"))
        .expect("the composition check loop")
        .split_whitespace()
        .map(config_of)
        .collect();
    assert_eq!(
        checked,
        all.keys().cloned().collect::<Vec<_>>(),
        "every Kata configuration is compared"
    );
}
