//! The pod's image policy from its initdata, enforced by the guest on its own pulls in a
//! real VM: under `encryptedLayers` the real encrypted image runs but the same image
//! with the host's plaintext layer appended (tests/vm/src/attacks.rs) is refused before
//! any layer is unpacked; under `sigstoreSigned` an unsigned image is refused; anything
//! else falls to `reject`. The agent policy is the default one, so these refusals come
//! from the image policy alone, not from a generated pin.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use vm_tests::attacks::push_with_plain_layer;
use vm_tests::guest::Guest;
use vm_tests::pod::{confidential_policy_with_logs, initdata_toml_with_image_policy, PodVm};
use vm_tests::services::{AppImage, Kbs, Registry, ALLOW_SAMPLE_POLICY};

const KEK_ID: &str = "kbs:///default/image-kek/app";
const KEK_PATH: &str = "default/image-kek/app";

/// A P-256 public key (PEM) no image of this test is signed with.
fn cosign_public_key(dir: &std::path::Path) -> Vec<u8> {
    let key = dir.join("cosign.key");
    let public = dir.join("cosign.pub");
    for args in [
        vec![
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ],
        vec!["ec", "-pubout", "-in"],
    ] {
        let mut cmd = Command::new("openssl");
        cmd.args(&args);
        if args[0] == "ecparam" {
            cmd.arg(&key);
        } else {
            cmd.arg(&key).arg("-out").arg(&public);
        }
        let out = cmd.output().expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::read(public).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initdata_image_policy_refuses_a_plaintext_layer_and_an_unsigned_image() {
    let work = tempfile::tempdir().unwrap();
    let guest = Guest::get(&work.path().join("guest")).unwrap();
    let registry = Registry::start(work.path()).unwrap();
    let app = AppImage::build(work.path()).unwrap();
    let kek = app.encrypt(KEK_ID).unwrap();
    let encrypted = app.push(&registry, "encrypted", "app").unwrap();
    // The host appends its own plaintext layer (a replaced /app.sh, an ld.so.preload)
    // next to the real encrypted ones.
    let evil =
        push_with_plain_layer(&app, &registry, work.path(), "encrypted", "app", "evil").unwrap();
    let unsigned = app.push(&registry, "plain", "signed").unwrap();
    let other = app.push(&registry, "plain", "other").unwrap();

    let kbs = Kbs::start().await.unwrap();
    kbs.set_resource(KEK_PATH, &kek).await.unwrap();
    kbs.set_resource_policy(ALLOW_SAMPLE_POLICY).await.unwrap();

    let reg = registry.guest_addr();
    let key = base64::engine::general_purpose::STANDARD.encode(cosign_public_key(work.path()));
    let image_policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{reg}/app"): [{"type": "encryptedLayers"}],
            format!("{reg}/signed"): [{"type": "sigstoreSigned", "keyData": key,
                                        "signedIdentity": {"type": "matchRepository"}}],
        }}
    });
    // The owner's initdata: KBS, plain-HTTP registry, the default agent policy with
    // logs, and the image policy.
    let mut pod = PodVm::new(initdata_toml_with_image_policy(
        Some(&kbs),
        &registry,
        Some(&confidential_policy_with_logs()),
        Some(&image_policy.to_string()),
    ));
    pod.cmdline_extra = "agent.attester=sample".into();
    kbs.register_initdata(&pod.initdata_toml).await.unwrap();
    let (vm, mut shim) = pod.boot(&guest).await.unwrap();
    shim.setup_network().await.unwrap();
    shim.create_sandbox("sb").await.unwrap();
    shim.start_pause().await.unwrap();

    // The host's plaintext layer: refused by the image policy, before a key or a layer.
    let e = shim.create_app("evil", &evil).await.unwrap_err();
    assert!(
        e.detail.contains("image policy"),
        "{e}\n{}",
        vm.diagnostics()
    );
    eprintln!("plaintext layer refused: {e}");
    // No signature by the owner's key: refused.
    let e = shim.create_app("unsigned", &unsigned).await.unwrap_err();
    assert!(e.detail.contains("image policy"), "{e}");
    eprintln!("unsigned image refused: {e}");
    // A repository the policy does not name: `reject`.
    let e = shim.create_app("other", &other).await.unwrap_err();
    assert!(e.detail.contains("image policy"), "{e}");

    // The real encrypted image passes the same policy: attested key, decrypted, run.
    let t = Instant::now();
    shim.create_app("enc", &encrypted)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    let run = shim.run_app("enc", t).await.unwrap();
    assert!(
        run.stdout.contains("hello from a confidential pod"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("pwned"), "{run:?}");
    assert_eq!(run.exit_code, 0, "{run:?}");

    for c in ["enc", "sb"] {
        shim.stop(c).await.unwrap();
    }
    shim.destroy_sandbox().await.unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
}
