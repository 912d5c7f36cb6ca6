//! End-to-end pulls from a real `docker-registry` on loopback.
// Test helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{
    pull_options, push_image, push_image_with, raw_tar, run, Layer, RawEntry, TestRegistry,
};
use image_mgmt::{Error, ImagePuller};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_multilayer_umoci_image_matches_umoci_unpack() {
    if !common::tools_present(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = common::umoci_image(work.path());
    let reg = TestRegistry::start();
    common::skopeo_push(
        &format!("{}:v1", layout.display()),
        &reg.addr,
        "plain/app:v1",
        &[],
    );

    let reference = work.path().join("reference");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&reference));

    let puller = ImagePuller::new(pull_options(&reg.addr, &work.path().join("store"))).unwrap();
    let ours = work.path().join("ours");
    let img = puller
        .pull(&format!("{}/plain/app:v1", reg.addr), &ours, None)
        .await
        .unwrap();
    assert_eq!(img.layers, 3);
    common::tree::assert_same(&ours, &reference.join("rootfs"));

    // A second pull reuses the verified blobs from the store.
    let again = work.path().join("again");
    puller
        .pull(&format!("{}/plain/app:v1", reg.addr), &again, None)
        .await
        .unwrap();
    common::tree::assert_same(&again, &reference.join("rootfs"));
}

/// Incompressible bytes, so blobs have a useful size.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn small_layers() -> Vec<Layer> {
    vec![
        Layer::gzip_tar(&raw_tar(&[
            RawEntry::dir("a"),
            RawEntry::file("a/one", b"1"),
        ])),
        Layer::zstd_tar(&raw_tar(&[RawEntry::file("a/two", &noise(200_000))])),
    ]
}

fn assert_no_rootfs(dir: &std::path::Path, rootfs: &std::path::Path) {
    assert!(!rootfs.exists(), "a partial rootfs was left behind");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("unpacking"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_layers_unpack() {
    let reg = TestRegistry::start();
    push_image(&reg.addr, "mixed/app:v1", &small_layers()).await;
    let work = tempfile::tempdir().unwrap();
    let puller = ImagePuller::new(pull_options(&reg.addr, &work.path().join("store"))).unwrap();
    let rootfs = work.path().join("rootfs");
    puller
        .pull(&format!("{}/mixed/app:v1", reg.addr), &rootfs, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(rootfs.join("a/one")).unwrap(), b"1");
    assert_eq!(std::fs::read(rootfs.join("a/two")).unwrap().len(), 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_layer_digest_is_rejected() {
    let reg = TestRegistry::start();
    let layers = small_layers();
    let blob_digest = format!("sha256:{}", common::sha256_hex(&layers[1].blob));
    push_image(&reg.addr, "tampered/app:v1", &layers).await;
    // Flip one byte in the registry's stored copy (same size).
    let f = reg.blob_file(&blob_digest);
    let mut data = std::fs::read(&f).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&f, data).unwrap();

    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let puller = ImagePuller::new(pull_options(&reg.addr, &store)).unwrap();
    let rootfs = work.path().join("rootfs");
    let err = puller
        .pull(&format!("{}/tampered/app:v1", reg.addr), &rootfs, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    eprintln!("refused: {err}");
    assert_no_rootfs(work.path(), &rootfs);
    // The bad blob did not enter the store under its claimed name.
    let hex = blob_digest.trim_start_matches("sha256:");
    assert!(!store.join("blobs/sha256").join(hex).exists());
    assert!(!store
        .join("blobs/sha256")
        .join(format!("{hex}.partial"))
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_layer_is_rejected() {
    let reg = TestRegistry::start();
    let layers = small_layers();
    let blob_digest = format!("sha256:{}", common::sha256_hex(&layers[1].blob));
    push_image(&reg.addr, "short/app:v1", &layers).await;
    let f = reg.blob_file(&blob_digest);
    let data = std::fs::read(&f).unwrap();
    std::fs::write(&f, &data[..data.len() / 2]).unwrap();

    let work = tempfile::tempdir().unwrap();
    let puller = ImagePuller::new(pull_options(&reg.addr, &work.path().join("store"))).unwrap();
    let rootfs = work.path().join("rootfs");
    let err = puller
        .pull(&format!("{}/short/app:v1", reg.addr), &rootfs, None)
        .await
        .unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(err, Error::SizeMismatch { .. } | Error::Registry(_)),
        "{err}"
    );
    assert_no_rootfs(work.path(), &rootfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_diff_id_is_rejected() {
    let reg = TestRegistry::start();
    let mut layers = small_layers();
    layers[1].diff_id = format!("sha256:{}", common::sha256_hex(b"not this layer"));
    push_image(&reg.addr, "diffid/app:v1", &layers).await;
    let work = tempfile::tempdir().unwrap();
    let puller = ImagePuller::new(pull_options(&reg.addr, &work.path().join("store"))).unwrap();
    let rootfs = work.path().join("rootfs");
    let err = puller
        .pull(&format!("{}/diffid/app:v1", reg.addr), &rootfs, None)
        .await
        .unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(&err, Error::DigestMismatch { what, .. } if what.contains("diff_id")),
        "{err}"
    );
    assert_no_rootfs(work.path(), &rootfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layer_from_registry_leaves_nothing() {
    let reg = TestRegistry::start();
    let layers = vec![
        Layer::gzip_tar(&raw_tar(&[RawEntry::file("fine", b"ok")])),
        Layer::gzip_tar(&raw_tar(&[RawEntry::file("../../escape", b"x")])),
    ];
    push_image(&reg.addr, "evil/app:v1", &layers).await;
    let work = tempfile::tempdir().unwrap();
    let puller = ImagePuller::new(pull_options(&reg.addr, &work.path().join("store"))).unwrap();
    let rootfs = work.path().join("sub/rootfs");
    let err = puller
        .pull(&format!("{}/evil/app:v1", reg.addr), &rootfs, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert_no_rootfs(&work.path().join("sub"), &rootfs);
    assert!(!work.path().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_is_resumed() {
    let reg = TestRegistry::start();
    let layers = small_layers();
    let blob = layers[1].blob.clone();
    let hex = common::sha256_hex(&blob);
    push_image(&reg.addr, "resume/app:v1", &layers).await;
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // What an interrupted earlier pull left: the first third of the blob.
    std::fs::create_dir_all(store.join("blobs/sha256")).unwrap();
    std::fs::write(
        store.join(format!("blobs/sha256/{hex}.partial")),
        &blob[..blob.len() / 3],
    )
    .unwrap();
    let puller = ImagePuller::new(pull_options(&reg.addr, &store)).unwrap();
    let rootfs = work.path().join("rootfs");
    puller
        .pull(&format!("{}/resume/app:v1", reg.addr), &rootfs, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(rootfs.join("a/two")).unwrap().len(), 200_000);
    assert_eq!(
        std::fs::read(store.join(format!("blobs/sha256/{hex}"))).unwrap(),
        blob
    );

    // A corrupt leftover prefix is detected by the digest and not kept.
    let work2 = tempfile::tempdir().unwrap();
    let store2 = work2.path().join("store");
    std::fs::create_dir_all(store2.join("blobs/sha256")).unwrap();
    std::fs::write(
        store2.join(format!("blobs/sha256/{hex}.partial")),
        vec![0u8; 1000],
    )
    .unwrap();
    let puller2 = ImagePuller::new(pull_options(&reg.addr, &store2)).unwrap();
    let err = puller2
        .pull(
            &format!("{}/resume/app:v1", reg.addr),
            &work2.path().join("r"),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    puller2
        .pull(
            &format!("{}/resume/app:v1", reg.addr),
            &work2.path().join("r"),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_compressed_layer_is_refused_before_download() {
    let reg = TestRegistry::start();
    push_image(&reg.addr, "big/app:v1", &small_layers()).await;
    let work = tempfile::tempdir().unwrap();
    let mut o = pull_options(&reg.addr, &work.path().join("store"));
    o.max_layer_compressed = 100;
    let err = ImagePuller::new(o)
        .unwrap()
        .pull(
            &format!("{}/big/app:v1", reg.addr),
            &work.path().join("r"),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LayerTooLarge { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_index_selects_the_platform() {
    let reg = TestRegistry::start();
    let d = push_image(&reg.addr, "multi/app:amd64", &small_layers()).await;
    let m = push_image_with(&reg.addr, "multi/app:arm", &small_layers()[..1], |m| m).await;
    let sizes: Vec<u64> = ["amd64", "arm"]
        .iter()
        .map(|t| {
            let out = run(Command::new("skopeo").args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}/multi/app:{t}", reg.addr),
            ]));
            out.len() as u64
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m, "size": sizes[1],
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": sizes[0],
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let r: oci_client::Reference = format!("{}/multi/app:latest", reg.addr).parse().unwrap();
    client
        .store_auth_if_needed(
            r.resolve_registry(),
            &oci_client::secrets::RegistryAuth::Anonymous,
        )
        .await;
    client
        .push_manifest_raw(
            &r,
            serde_json::to_vec(&index).unwrap(),
            reqwest::header::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        )
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let puller = ImagePuller::new(pull_options(&reg.addr, &work.path().join("store"))).unwrap();
    let img = puller
        .pull(
            &format!("{}/multi/app:latest", reg.addr),
            &work.path().join("r"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(img.manifest_digest.to_string(), d);
    assert!(work.path().join("r/a/two").exists());

    let mut o = pull_options(&reg.addr, &work.path().join("store"));
    o.registry.platform = "linux/s390x".parse().unwrap();
    let err = ImagePuller::new(o)
        .unwrap()
        .pull(
            &format!("{}/multi/app:latest", reg.addr),
            &work.path().join("r2"),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoPlatform(_)), "{err}");
}
