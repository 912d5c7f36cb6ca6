//! The flake evaluated as on real nixpkgs, offline: scripts/nix-eval.sh replaces the
//! nixpkgs input with the real nixpkgs library plus stubs carrying the pinned
//! nixpkgs files' signatures (nix/tests/stubs), runs `nix flake show` and `nix flake
//! check --no-build`, instantiates every output and evaluates
//! nix/tests/option-cases.nix. These tests read what that evaluation produced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use coco_image::contents::GuestContents;
use serde_json::Value;

fn json(name: &str) -> Option<Value> {
    let dir = deploy_tests::nix_eval_outputs()?;
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn is_drv(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with("/nix/store/") && s.ends_with(".drv"))
}

#[test]
fn every_package_app_and_check_instantiates() {
    let Some(drvs) = json("drvs.json") else {
        return;
    };
    let names =
        |k: &str| -> BTreeSet<String> { drvs[k].as_object().unwrap().keys().cloned().collect() };
    for want in [
        "coco",
        "default",
        "guest-image",
        "guest-initrd",
        "guest-kernel",
        "kbs-image",
        "ovmf-snp",
        "ovmf-tdx",
    ] {
        assert!(names("packages").contains(want), "packages.{want}");
    }
    for want in ["fmt", "clippy", "unit", "vm", "vm-tcg", "nixos-modules"] {
        assert!(names("checks").contains(want), "checks.{want}");
    }
    for k in ["packages", "checks", "devShells"] {
        for (n, d) in drvs[k].as_object().unwrap() {
            assert!(is_drv(d), "{k}.{n}: {d}");
        }
    }
    assert!(is_drv(&drvs["formatter"]));
    for app in ["kbs", "demo"] {
        let a = &drvs["apps"][app];
        assert!(
            a["program"].as_str().unwrap().starts_with("/nix/store/"),
            "{a}"
        );
        assert!(
            a["drvs"].as_array().unwrap().iter().any(is_drv),
            "apps.{app} comes from a derivation: {a}"
        );
    }
    let show = std::fs::read_to_string(deploy_tests::nix_eval_outputs().unwrap().join("show.txt"))
        .unwrap();
    assert!(show.contains("nixosModules"), "{show}");
}

#[test]
fn no_key_option_can_put_a_key_into_the_store() {
    let Some(cases) = json("cases.json") else {
        return;
    };
    assert_eq!(
        cases["accepted"], true,
        "the test configuration must evaluate"
    );
    let refused = cases["refused"].as_object().unwrap();
    assert!(refused.len() >= 8, "{refused:?}");
    for (case, evaluated) in refused {
        assert_eq!(evaluated, false, "{case} must be refused");
    }
    let kbs = &cases["kbs"];
    // Keys come in as systemd credentials from runtime paths outside the store...
    let creds: Vec<&str> = kbs["loadCredential"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        creds,
        [
            "tls.crt:/var/lib/acme/kbs.example.org/fullchain.pem",
            "tls.key:/run/keys/coco-kbs-tls.key",
            "token-signing.key:/run/keys/coco-kbs-token.key",
        ]
    );
    assert_eq!(kbs["dynamicUser"], true);
    // ...and the generated kbs.toml (which is in the store) names only the
    // credential directory for them.
    let toml = &kbs["toml"];
    let dir = "/run/credentials/coco-kbs.service/";
    assert_eq!(toml["tls"]["key"], format!("{dir}tls.key").as_str());
    assert_eq!(toml["tls"]["cert"], format!("{dir}tls.crt").as_str());
    assert_eq!(
        toml["token"]["signing_key"],
        format!("{dir}token-signing.key").as_str()
    );
    assert!(toml.get("insecure_http").is_none(), "{toml}");
    assert!(!toml.to_string().contains("/nix/store"), "{toml}");
    // The config the unit runs is that file.
    assert!(kbs["execStart"].as_str().unwrap().ends_with("-kbs.toml"));
    // Every key the KBS reads from its config is covered: the key fields of
    // kbs/src/config.rs (TlsConfig.key, TokenConfig.signing_key).
    let config_rs = read("kbs/src/config.rs");
    assert!(config_rs.contains("pub key: PathBuf"));
    assert!(config_rs.contains("pub signing_key: Option<PathBuf>"));
}

#[test]
fn the_node_module_installs_one_handler_per_runtime_class() {
    let Some(cases) = json("cases.json") else {
        return;
    };
    let node = &cases["node"];
    // The handlers sit under the plugin name of the configuration version NixOS's
    // containerd module writes.
    assert_eq!(node["containerdVersion"], 2);
    let runtimes = node["runtimes"].as_object().unwrap();
    let classes = node["runtimeClasses"].as_object().unwrap();
    assert_eq!(runtimes.len(), 3, "{runtimes:?}");
    for (handler, config) in runtimes {
        let file = config.as_str().unwrap();
        let etc = file.strip_prefix("/etc/").unwrap();
        assert!(
            node["etc"].as_array().unwrap().iter().any(|e| e == etc),
            "{file} is installed"
        );
        assert!(
            classes.values().any(|h| h == handler.as_str()),
            "RuntimeClass for {handler}"
        );
    }
}

#[test]
fn nix_builds_the_guest_image_from_the_shared_list() {
    let Some(cases) = json("cases.json") else {
        return;
    };
    let c = GuestContents::shipped().unwrap();
    let g = &cases["guest"];
    let initrd = g["initrdScript"].as_str().unwrap();
    let build = initrd.split("coco-image build").nth(1).unwrap();
    let args: Vec<&str> = build.split_whitespace().collect();
    let values = |flag: &str| -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1])
            .collect()
    };
    let binaries = values("--binary");
    assert!(
        binaries
            .iter()
            .any(|b| b.starts_with("/init=") && b.ends_with(&format!("/bin/{}", c.init))),
        "{binaries:?}"
    );
    for name in &c.binaries {
        assert!(
            binaries
                .iter()
                .any(|b| b.starts_with(&format!("{name}=")) && b.ends_with(&format!("/{name}"))),
            "{name}: {binaries:?}"
        );
    }
    for lib in &c.dlopen_libraries {
        assert!(
            binaries.iter().any(|b| b.ends_with(&format!("/{lib}"))),
            "{lib}: {binaries:?}"
        );
    }
    let files = values("--file");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("{}=", c.ca_bundle))),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("/etc/coco-agent/config.toml=")),
        "{files:?}"
    );
    assert_eq!(build.contains("--pause-bundle"), c.pause_bundle);
    assert_eq!(values("--busybox").len(), usize::from(c.busybox));
    let kata = values("--kata-config");
    assert!(
        kata.len() == 1 && kata[0].ends_with(&format!("-{}", c.measure.kata_config)),
        "{kata:?}"
    );
    // The Debian-path modules are built into the Nix kernel.
    let kconfig = g["kernelConfig"].as_object().unwrap();
    for (module, symbol) in &c.kernel.modules {
        assert_eq!(kconfig.get(symbol), Some(&Value::from("y")), "{module}");
    }
    // Measured for the launch Kata makes with that configuration.
    let image = g["imageScript"].as_str().unwrap();
    let kcfg: toml::Table = read(&format!("deploy/kata/{}", c.measure.kata_config))
        .parse()
        .unwrap();
    let q = &kcfg["hypervisor"]["qemu"];
    let vcpus: Vec<String> = c.measure.vcpus.iter().map(u32::to_string).collect();
    for want in [
        format!("--vcpus {}", vcpus.join(",")),
        format!("--machine {}", q["machine_type"].as_str().unwrap()),
        format!("--ram-mib {}", q["default_memory"].as_integer().unwrap()),
    ] {
        assert!(image.contains(&want), "{want}: {image}");
    }
    assert_eq!(image.contains("--tpm"), c.measure.tpm);
    // Firmware: the shared DSCs and file names.
    for (pkg, tee) in [("ovmf-snp", "snp"), ("ovmf-tdx", "tdx")] {
        let fw = c.firmware_for(tee).unwrap();
        let o = &g["ovmf"][pkg];
        assert_eq!(o["projectDscPath"], fw.dsc.as_str());
        assert_eq!(o["buildConfig"], "RELEASE");
        assert!(o["file"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/FV/{}", fw.file)));
        assert!(image.contains(&format!("$out/{}", fw.file)), "{image}");
    }
}
