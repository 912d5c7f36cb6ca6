//! The pod's image policy as its owner delivers it: in the initdata, as the
//! `cdh.toml` `[image] image_security_policy` entry, enforced on real pulls
//! from a real registry (signatures made by openssl, layers encrypted by
//! coco-encrypt, a plaintext layer added by umoci).
// Test helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use coco_jose::initdata::Initdata;
use common::{pull_options, raw_tar, Layer, RawEntry, TestBroker, TestRegistry};
use image_mgmt::keybroker::KeyBroker;
use image_mgmt::settings::ImageSettings;
use image_mgmt::{Error, ImagePuller};

/// The initdata a pod owner writes: the registry it may reach over HTTP and
/// its image policy, inline in `cdh.toml`.
fn initdata(addr: &str, cosign_pub: &Path) -> Initdata {
    let key = base64::engine::general_purpose::STANDARD.encode(std::fs::read(cosign_pub).unwrap());
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{addr}/signed"): [{"type": "sigstoreSigned", "keyData": key,
                                         "signedIdentity": {"type": "matchRepository"}}],
            format!("{addr}/enc"): [{"type": "encryptedLayers"}],
        }}
    });
    let toml = format!(
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"cdh.toml\" = '''\n[image]\ninsecure_registries = [\"{addr}\"]\nimage_security_policy = \"\"\"\n{policy}\n\"\"\"\n'''\n"
    );
    Initdata::parse(&toml).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initdata_image_policy_governs_every_pull() {
    if !common::tools_present(&["docker-registry", "openssl", "umoci", "skopeo"]) {
        return;
    }
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (cosign_key, cosign_pub) = common::ec_keypair(w, "cosign");

    // What the agent does with the initdata.
    let data = initdata(&reg.addr, &cosign_pub);
    let settings = ImageSettings::from_cdh_toml(&data.data["cdh.toml"]).unwrap();
    assert_eq!(
        settings.insecure_registries,
        std::slice::from_ref(&reg.addr)
    );
    let policy = settings.policy.load(None).await.unwrap();
    assert!(policy.is_some());

    let layout = common::umoci_image(w);
    let kek = common::coco_encrypt(&layout, "v1", "v1-enc", "kbs:///default/image-kek/pod", w);
    common::append_plain_layer(&layout, "v1-enc", "v1-evil", w);
    let l = layout.display();
    common::skopeo_push(&format!("{l}:v1-enc"), &reg.addr, "enc/app:v1", &[]);
    common::skopeo_push(&format!("{l}:v1-evil"), &reg.addr, "enc/app:evil", &[]);
    let plain = vec![Layer::gzip_tar(&raw_tar(&[RawEntry::file("id", b"x")]))];
    let signed = common::push_image(&reg.addr, "signed/app:v1", &plain).await;
    common::cosign_sign(&reg.addr, "signed/app", &signed, &cosign_key, w).await;
    common::push_image(&reg.addr, "signed/unsigned:v1", &plain).await;
    common::push_image(&reg.addr, "elsewhere/app:v1", &plain).await;

    let broker = Arc::new(TestBroker::new(
        HashMap::from([("default/image-kek/pod".to_owned(), kek)]),
        false,
    ));
    let pull = |image: &str, name: &str| {
        let mut o = pull_options("unused", &w.join("store"));
        o.registry.insecure_registries = settings.insecure_registries.clone();
        o.policy = policy.clone();
        let b: Arc<dyn KeyBroker> = broker.clone();
        o.decrypt.broker = Some(b);
        let (r, out) = (format!("{}/{image}", reg.addr), w.join(name));
        async move {
            let res = ImagePuller::new(o)?.pull(&r, &out, None).await;
            if res.is_err() {
                assert!(!out.exists(), "a refused image left {}", out.display());
            }
            res
        }
    };

    pull("signed/app:v1", "signed").await.unwrap();
    pull("enc/app:v1", "enc").await.unwrap();
    for (image, why) in [
        ("signed/unsigned:v1", "no acceptable sigstore signature"),
        ("enc/app:evil", "not encrypted"),
        ("elsewhere/app:v1", "rejected by policy"),
    ] {
        let err = pull(image, "refused").await.unwrap_err();
        eprintln!("refused: {err}");
        assert!(
            matches!(&err, Error::PolicyDenied(m) if m.contains(why)),
            "{image}: {err}"
        );
    }
    // The encrypted image's keys were asked for once, by the good pull.
    assert_eq!(broker.requests(), 1);
}
