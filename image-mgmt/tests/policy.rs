//! Signature policy against a real registry, with cosign-format signatures
//! produced by openssl (ECDSA P-256 over the simple-signing payload).
// Test helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    cosign_sign, ec_keypair as keypair, pull_options, push_image, raw_tar, run, Layer, RawEntry,
    TestRegistry,
};
use image_mgmt::cosign::signature_tag;
use image_mgmt::digest::Sha256Digest;
use image_mgmt::policy::Policy;
use image_mgmt::{Error, ImagePuller};

fn sigstore_policy(dir: &Path, addr: &str, pubkey: &Path) -> Policy {
    let text = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{addr}/signed"): [{"type": "sigstoreSigned", "keyPath": pubkey,
                                         "signedIdentity": {"type": "matchRepository"}}],
            format!("{addr}/open"): [{"type": "insecureAcceptAnything"}],
        }}
    });
    let p = dir.join("policy.json");
    std::fs::write(&p, text.to_string()).unwrap();
    Policy::load(&p).unwrap()
}

async fn pull(
    addr: &str,
    store: &Path,
    policy: Option<Policy>,
    image: &str,
    rootfs: &Path,
) -> Result<(), Error> {
    let mut o = pull_options(addr, store);
    o.policy = policy;
    ImagePuller::new(o)?
        .pull(&format!("{addr}/{image}"), rootfs, None)
        .await
        .map(|_| ())
}

fn layers(tag: &[u8]) -> Vec<Layer> {
    vec![Layer::gzip_tar(&raw_tar(&[RawEntry::file("id", tag)]))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_policy_accepts_only_good_signatures() {
    if !common::tools_present(&["docker-registry", "openssl"]) {
        return;
    }
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (trusted_key, trusted_pub) = keypair(w, "trusted");
    let (other_key, _) = keypair(w, "other");
    let policy = sigstore_policy(w, &reg.addr, &trusted_pub);
    let store = w.join("store");

    let good = push_image(&reg.addr, "signed/good:v1", &layers(b"good")).await;
    cosign_sign(&reg.addr, "signed/good", &good, &trusted_key, w).await;
    pull(
        &reg.addr,
        &store,
        Some(policy.clone()),
        "signed/good:v1",
        &w.join("r1"),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(w.join("r1/id")).unwrap(), b"good");

    // Unsigned.
    push_image(&reg.addr, "signed/unsigned:v1", &layers(b"unsigned")).await;
    let err = pull(
        &reg.addr,
        &store,
        Some(policy.clone()),
        "signed/unsigned:v1",
        &w.join("r2"),
    )
    .await
    .unwrap_err();
    eprintln!("refused: {err}");
    assert!(matches!(err, Error::PolicyDenied(_)), "{err}");
    assert!(!w.join("r2").exists());

    // Signed by another key.
    let other = push_image(&reg.addr, "signed/other:v1", &layers(b"other")).await;
    cosign_sign(&reg.addr, "signed/other", &other, &other_key, w).await;
    let err = pull(
        &reg.addr,
        &store,
        Some(policy.clone()),
        "signed/other:v1",
        &w.join("r3"),
    )
    .await
    .unwrap_err();
    eprintln!("refused: {err}");
    assert!(matches!(err, Error::PolicyDenied(_)), "{err}");

    // A valid signature of a different image, copied to this one's tag.
    let swapped = push_image(&reg.addr, "signed/swapped:v1", &layers(b"swapped")).await;
    let fake = Sha256Digest::of(b"some other manifest");
    cosign_sign(
        &reg.addr,
        "signed/swapped",
        &fake.to_string(),
        &trusted_key,
        w,
    )
    .await;
    // Re-tag that signature under the swapped image's signature tag.
    let raw = run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!(
            "docker://{}/signed/swapped:{}",
            reg.addr,
            signature_tag(&fake)
        ),
        &format!(
            "docker://{}/signed/swapped:{}",
            reg.addr,
            signature_tag(&Sha256Digest::parse(&swapped).unwrap())
        ),
    ]));
    let _ = raw;
    let err = pull(
        &reg.addr,
        &store,
        Some(policy.clone()),
        "signed/swapped:v1",
        &w.join("r4"),
    )
    .await
    .unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(&err, Error::PolicyDenied(m) if m.contains("not")),
        "{err}"
    );

    // Default scope rejects everything else.
    push_image(&reg.addr, "elsewhere/app:v1", &layers(b"x")).await;
    let err = pull(
        &reg.addr,
        &store,
        Some(policy.clone()),
        "elsewhere/app:v1",
        &w.join("r5"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::PolicyDenied(_)), "{err}");
    push_image(&reg.addr, "open/app:v1", &layers(b"open")).await;
    pull(
        &reg.addr,
        &store,
        Some(policy.clone()),
        "open/app:v1",
        &w.join("r6"),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_image_does_not_bypass_the_policy() {
    if !common::tools_present(&["docker-registry", "openssl"]) {
        return;
    }
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (_, trusted_pub) = keypair(w, "trusted");
    let store = w.join("store");
    push_image(&reg.addr, "signed/cached:v1", &layers(b"cached")).await;
    // Pulled once without a policy: every blob is now in the store.
    pull(&reg.addr, &store, None, "signed/cached:v1", &w.join("r1"))
        .await
        .unwrap();
    let policy = sigstore_policy(w, &reg.addr, &trusted_pub);
    let err = pull(
        &reg.addr,
        &store,
        Some(policy),
        "signed/cached:v1",
        &w.join("r2"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::PolicyDenied(_)), "{err}");
    assert!(!w.join("r2").exists());
}
