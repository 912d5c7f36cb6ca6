//! The whole key-release path with real parts: `coco-encrypt` makes an
//! attestation-agent keyprovider image and uploads its KEK to a real KBS
//! through the admin API; the pull gets the KEK from that KBS only after an
//! RCAR attestation (sample TEE, explicitly allowed by the test's resource
//! policy), and fails cleanly when the policy denies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use attester::kbs_client::{ClientOptions, KbsClient};
use attester::sample::SampleAttester;
use base64::Engine;
use common::{pull_options, run, TestRegistry};
use image_mgmt::keybroker::KeyBroker;
use image_mgmt::{Error, ImagePuller};
use std::process::Command;
use std::sync::Arc;

use kbs::local::LocalKbs as Kbs;

/// A KBS in this process on a free loopback port (plain HTTP: TLS is covered by
/// the KBS's own end-to-end tests).
async fn start_kbs() -> Kbs {
    Kbs::start(None).unwrap()
}

async fn set_resource_policy(kbs: &Kbs, rego: &str) {
    let body = serde_json::json!({
        "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rego)
    });
    let status = reqwest::Client::new()
        .post(format!("{}/kbs/v0/resource-policy", kbs.url))
        .bearer_auth(&kbs.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "set resource policy: {status}");
}

fn attested_broker(kbs: &Kbs) -> Arc<dyn KeyBroker> {
    Arc::new(
        KbsClient::new(
            &kbs.url,
            Arc::new(SampleAttester::default()),
            ClientOptions::default(),
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coco_encrypt_image_decrypts_after_attestation_against_the_kbs() {
    if !common::tools_present(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = common::umoci_image(work.path());
    let reference = work.path().join("reference");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&reference));
    let reg = TestRegistry::start();
    let kbs = start_kbs().await;
    let token_file = work.path().join("admin.token");
    std::fs::write(&token_file, &kbs.admin_token).unwrap();

    // Encrypt and upload the KEK to the KBS (admin API), as an operator would.
    run(Command::new(env!("CARGO_BIN_EXE_coco-encrypt"))
        .args(["encrypt", "--tag", "v1", "--out-tag", "v1-enc"])
        .args(["--kid", "kbs:///default/image-kek/app", "--kbs", &kbs.url])
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--layout")
        .arg(&layout));
    common::skopeo_push(
        &format!("{}:v1-enc", layout.display()),
        &reg.addr,
        "kbs/app:v1",
        &[],
    );
    let image = format!("{}/kbs/app:v1", reg.addr);

    // Default policy: the sample TEE gets nothing, and nothing is unpacked.
    let denied = work.path().join("denied");
    let err = ImagePuller::new({
        let mut o = pull_options(&reg.addr, &work.path().join("store"));
        o.decrypt.broker = Some(attested_broker(&kbs));
        o
    })
    .unwrap()
    .pull(&image, &denied, None)
    .await
    .unwrap_err();
    eprintln!("denied as expected: {err}");
    assert!(
        matches!(&err, Error::NoKey(m) if m.contains("401") && m.contains("PolicyDeny")),
        "{err}"
    );
    assert!(!denied.exists(), "no rootfs after a refused key");

    // The test explicitly trusts the (non-confidential) sample TEE.
    set_resource_policy(
        &kbs,
        "package policy\ndefault allow := false\nallow if { input.tee == \"sample\" }",
    )
    .await;
    let rootfs = work.path().join("rootfs");
    ImagePuller::new({
        let mut o = pull_options(&reg.addr, &work.path().join("store"));
        o.decrypt.broker = Some(attested_broker(&kbs));
        o
    })
    .unwrap()
    .pull(&image, &rootfs, None)
    .await
    .unwrap();
    common::tree::assert_same(&rootfs, &reference.join("rootfs"));
}
