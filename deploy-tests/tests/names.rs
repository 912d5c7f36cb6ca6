//! RuntimeClass names, Kata handlers and Kata configurations agree between deploy/,
//! the NixOS module (nix/runtime-classes.nix, nix/node.nix) and the README (the
//! measured kernel command line: `kata_cmdline.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde::Deserialize as _;

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// RuntimeClass name → handler, from deploy/runtimeclasses.yaml.
fn deploy_classes() -> BTreeMap<String, String> {
    serde_yaml::Deserializer::from_str(&read("deploy/runtimeclasses.yaml"))
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|d| d["kind"] == "RuntimeClass")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_string(),
                d["handler"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct NixClass {
    handler: String,
    config: String,
    tee: String,
}

/// nix/runtime-classes.nix is a flat attrset of `name = { handler = ..; config = ..;
/// tee = ..; };` (kept that simple on purpose so this reader stays exact).
fn nix_classes() -> BTreeMap<String, NixClass> {
    let text = read("nix/runtime-classes.nix");
    let mut out = BTreeMap::new();
    let mut current: Option<(String, BTreeMap<String, String>)> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_suffix(" = {") {
            current = Some((name.to_string(), BTreeMap::new()));
        } else if line == "};" {
            if let Some((name, f)) = current.take() {
                let get = |k: &str| f.get(k).cloned().unwrap_or_else(|| panic!("{name}.{k}"));
                out.insert(
                    name.clone(),
                    NixClass {
                        handler: get("handler"),
                        config: get("config"),
                        tee: get("tee"),
                    },
                );
            }
        } else if let (Some((_, f)), Some((k, v))) = (current.as_mut(), line.split_once(" = ")) {
            f.insert(
                k.to_string(),
                v.trim_end_matches(';').trim_matches('"').to_string(),
            );
        }
    }
    out
}

#[test]
fn runtime_classes_match_between_deploy_and_nix() {
    let deploy = deploy_classes();
    let nix = nix_classes();
    assert_eq!(
        deploy.keys().collect::<Vec<_>>(),
        nix.keys().collect::<Vec<_>>(),
        "RuntimeClass names differ between deploy/runtimeclasses.yaml and nix/runtime-classes.nix"
    );
    for (name, handler) in &deploy {
        assert_eq!(&nix[name].handler, handler, "{name}");
    }
    // The non-confidential class says so in its name.
    let insecure: Vec<_> = nix.iter().filter(|(_, c)| c.tee == "none").collect();
    assert_eq!(insecure.len(), 1);
    assert!(insecure[0].0.contains("insecure"), "{}", insecure[0].0);
}

#[test]
fn the_node_module_and_flake_use_the_shared_class_list() {
    let flake = read("flake.nix");
    assert!(flake.contains("runtimeClasses = import ./nix/runtime-classes.nix;"));
    assert!(flake.contains("node = import ./nix/node.nix { inherit self runtimeClasses; };"));
    let node = read("nix/node.nix");
    // Handlers, Kata config paths and RuntimeClass objects all come from that list,
    // and the Kata settings from the checked-in deploy/kata/ files.
    for needle in [
        "rc.handler",
        "/etc/kata-containers/${rc.config}",
        "../deploy/kata + \"/${rc.config}\"",
        "metadata.name = name;",
    ] {
        assert!(node.contains(needle), "nix/node.nix lost {needle:?}");
    }
}

#[test]
fn kata_configurations_exist_and_point_at_the_guest_image() {
    for (name, class) in nix_classes() {
        let cfg: toml::Table = read(&format!("deploy/kata/{}", class.config))
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", class.config));
        let q = cfg["hypervisor"]["qemu"].as_table().unwrap();
        assert!(
            q["kernel"].as_str().unwrap().ends_with("/vmlinuz"),
            "{name}"
        );
        assert!(
            q["initrd"].as_str().unwrap().ends_with("/initrd.img"),
            "{name}"
        );
        let (firmware, confidential) = match class.tee.as_str() {
            "snp" => ("OVMF-AmdSev.fd", true),
            "tdx" => ("OVMF-IntelTdx.fd", true),
            "none" => ("", false),
            other => panic!("{name}: unknown tee {other}"),
        };
        assert!(
            q["firmware"].as_str().unwrap().ends_with(firmware),
            "{name}"
        );
        assert_eq!(
            q["confidential_guest"].as_bool(),
            Some(confidential),
            "{name}"
        );
        assert_eq!(
            q.get("sev_snp_guest")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            class.tee == "snp",
            "{name}"
        );
        // Images must be pulled in the guest, never by the host.
        assert_eq!(
            cfg["runtime"]["experimental_force_guest_pull"].as_bool(),
            Some(true),
            "{name}"
        );
    }
}

#[test]
fn readme_and_pod_use_the_same_class_names() {
    let readme = read("README.md");
    let classes = nix_classes();
    for name in classes.keys() {
        assert!(
            readme.contains(name.as_str()),
            "README does not mention {name}"
        );
    }
    // Every kata-coco-* name the README uses is a real class.
    for word in readme.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if word.starts_with("kata-coco-") {
            assert!(
                classes.contains_key(word),
                "README names unknown class {word}"
            );
        }
    }
    let pod: serde_json::Value =
        serde_yaml::from_str(&read("deploy/confidential-pod.yaml")).unwrap();
    let rc = pod["spec"]["runtimeClassName"].as_str().unwrap();
    assert!(classes.contains_key(rc), "{rc}");
    assert_ne!(
        classes[rc].tee, "none",
        "the example pod must be confidential"
    );
}
