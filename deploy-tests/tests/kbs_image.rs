//! The KBS container image the flake builds (`packages.kbs-image`, nix/kbs-image.nix)
//! is the one deploy/kbs.yaml runs: same name and tag, the same non-root user, the
//! `kbs` entrypoint, and the default policy inside. nix/kbs-image.nix is evaluated
//! with builtins only (its nixpkgs arguments stubbed to return their arguments).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize as _;

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The crate version (the image tag is the Nix package's version, which is this).
fn workspace_version() -> String {
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    let v = cargo["workspace"]["package"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    // The package takes its version from Cargo.toml's [workspace.package].
    assert!(
        read("nix/workspace.nix").contains("inherit (workspaceToml) version;"),
        "nix/workspace.nix must take the version from Cargo.toml"
    );
    v
}

fn kbs_deployment() -> serde_json::Value {
    serde_yaml::Deserializer::from_str(&read("deploy/kbs.yaml"))
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment in deploy/kbs.yaml")
}

#[test]
fn the_flake_declares_the_image() {
    let flake = read("flake.nix");
    assert!(
        flake.contains("kbs-image = pkgs.callPackage ./nix/kbs-image.nix { inherit workspace; };"),
        "packages.kbs-image"
    );
    assert!(read("README.md").contains("nix build .#kbs-image && docker load < result"));
}

#[test]
fn the_deployment_runs_the_image_the_flake_builds() {
    let Some(nix) = deploy_tests::nix_instantiate() else {
        return;
    };
    let version = workspace_version();
    let expr = format!(
        r#"
      let stub = name: {{ outPath = "/stub/${{name}}"; }};
      in import ./nix/kbs-image.nix {{
        lib = {{ makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${{p}}/bin") ps); }};
        dockerTools.buildLayeredImage = args: args // {{ contents = map (c: c.script) args.contents; }};
        runCommand = name: env: script: {{ inherit name script; }};
        workspace = stub "coco" // {{ version = "{version}"; }};
      }}
    "#
    );
    let image = deploy_tests::nix_eval(nix, &expr).unwrap();
    let cfg = &image["config"];
    let dep = kbs_deployment();
    let pod = &dep["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // Name and tag: what `docker load < result` makes known to the node.
    let loaded = format!(
        "{}:{}",
        image["name"].as_str().unwrap(),
        image["tag"].as_str().unwrap()
    );
    assert_eq!(container["image"], loaded.as_str());
    assert_ne!(
        container["imagePullPolicy"], "Always",
        "the image is loaded onto the nodes, not pulled"
    );

    // Non-root, and the same user the Deployment enforces.
    let user = cfg["User"].as_str().unwrap();
    let (uid, gid) = user.split_once(':').unwrap();
    assert_ne!(uid, "0");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["fsGroup"].to_string(), gid);

    // The KBS is the entrypoint; the Deployment's args point at the mounted config.
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/stub/coco/bin/kbs"]));
    assert_eq!(container["args"], cfg["Cmd"]);
    let config_path = cfg["Cmd"][1].as_str().unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["mountPath"] == config_path),
        "{config_path} is mounted"
    );
    let state = mounts
        .iter()
        .find(|m| m["name"] == "state")
        .map(|m| m["mountPath"].as_str().unwrap())
        .unwrap();
    assert!(cfg["Volumes"].get(state).is_some(), "state dir {state}");

    // The default policy is in the image, copied from deploy/kbs/.
    let files = image["contents"][0].as_str().unwrap();
    assert!(
        files.contains("-default-policy.rego $out/share/coco-kbs/default-policy.rego"),
        "{files}"
    );
    assert!(files.contains(&format!("kbs:x:{uid}:{gid}:")), "{files}");
}
