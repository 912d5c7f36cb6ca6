//! `kbs-client config register-initdata` against a real KBS (in-process, plain
//! HTTP on loopback), and its effect on the KBS's default attestation policy,
//! observed through `kbs-client attest` with the sample TEE.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use base64::Engine;
use std::path::Path;
use std::process::Command;

const A: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault ExecProcessRequest := false\\n\"\n";
const B: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault AllowRequestsFailingPolicy := true\\n\"\n";

fn kbs_client(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kbs-client"))
        .arg("--url")
        .arg(url)
        .args(args)
        .output()
        .expect("run kbs-client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn register(url: &str, token: &Path, file: &Path) -> String {
    let (ok, stdout, stderr) = kbs_client(
        url,
        &[
            "config",
            "--admin-token-file",
            token.to_str().unwrap(),
            "register-initdata",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "register-initdata: {stderr}");
    stdout
}

/// `ear.status` of the token `kbs-client attest` gets for the sample TEE.
fn sample_status(url: &str, init_data: Option<&Path>) -> String {
    let mut args = vec!["attest", "--attester", "sample"];
    if let Some(p) = init_data {
        args.extend(["--init-data", p.to_str().unwrap()]);
    }
    let (ok, token, stderr) = kbs_client(url, &args);
    assert!(ok, "attest: {stderr}");
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["submods"]["cpu0"]["ear.status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn registered(kbs: &kbs::local::LocalKbs) -> reqwest::Response {
    reqwest::Client::builder()
        .tls_backend_preconfigured(attester::kbs_client::tls_config(None).unwrap())
        .build()
        .unwrap()
        .get(format!(
            "{}/kbs/v0/reference-value/{}",
            kbs.url,
            coco_jose::initdata::REFERENCE_VALUE
        ))
        .bearer_auth(&kbs.admin_token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_initdata_digests_accumulate_and_gate_the_policy() {
    let kbs = kbs::local::LocalKbs::start(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.jwt");
    std::fs::write(&token, &kbs.admin_token).unwrap();
    let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&a, A).unwrap();
    std::fs::write(&b, B).unwrap();
    let digest = |t: &str| {
        coco_jose::initdata::Initdata::parse(t)
            .unwrap()
            .digest_hex()
    };

    assert_eq!(registered(&kbs).await.status(), 404);
    // Before registration the default policy gives the sample TEE nothing,
    // with or without initdata.
    assert_eq!(sample_status(&kbs.url, Some(&a)), "contraindicated");
    assert_eq!(sample_status(&kbs.url, None), "contraindicated");

    assert_eq!(register(&kbs.url, &token, &a), digest(A));
    assert_eq!(sample_status(&kbs.url, Some(&a)), "warning");
    assert_eq!(sample_status(&kbs.url, Some(&b)), "contraindicated");
    assert_eq!(sample_status(&kbs.url, None), "contraindicated");

    // A second workload is added, the first stays; registering again is a no-op.
    assert_eq!(register(&kbs.url, &token, &b), digest(B));
    assert_eq!(register(&kbs.url, &token, &a), digest(A));
    let list: serde_json::Value = registered(&kbs).await.json().await.unwrap();
    assert_eq!(list, serde_json::json!([digest(A), digest(B)]));
    assert_eq!(sample_status(&kbs.url, Some(&a)), "warning");
    assert_eq!(sample_status(&kbs.url, Some(&b)), "warning");

    // Not initdata: refused, nothing registered.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = \"0.2.0\"\n").unwrap();
    let (ok, _, stderr) = kbs_client(
        &kbs.url,
        &[
            "config",
            "--admin-token-file",
            token.to_str().unwrap(),
            "register-initdata",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("not valid initdata"), "{stderr}");
    let after: serde_json::Value = registered(&kbs).await.json().await.unwrap();
    assert_eq!(after, list);
}
