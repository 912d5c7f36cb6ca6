//! Encrypted images: JWE images made by skopeo, `attestation-agent`
//! keyprovider images made by coco-encrypt, and tampering with either.
// Test helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{pull_options, run, TestBroker, TestRegistry};
use image_mgmt::keybroker::KeyBroker;
use image_mgmt::ocicrypt::keys::PrivateKey;
use image_mgmt::policy::Policy;
use image_mgmt::{Error, ImagePuller};

struct Fixture {
    work: tempfile::TempDir,
    layout: PathBuf,
    reference: PathBuf,
    reg: TestRegistry,
}

fn fixture() -> Option<Fixture> {
    if !common::tools_present(&["umoci", "skopeo", "docker-registry", "openssl"]) {
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = common::umoci_image(work.path());
    let reference = work.path().join("reference");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&reference));
    Some(Fixture {
        work,
        layout,
        reference: reference.join("rootfs"),
        reg: TestRegistry::start(),
    })
}

/// (private PKCS#8 PEM, public PEM) made by openssl.
fn keypair(dir: &Path, name: &str, algo: &[&str]) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    run(Command::new("openssl")
        .arg("genpkey")
        .args(algo)
        .arg("-out")
        .arg(&private));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    (private, public)
}

fn key(path: &Path) -> PrivateKey {
    PrivateKey::from_pem(&std::fs::read(path).unwrap()).unwrap()
}

async fn pull_with(
    f: &Fixture,
    image: &str,
    keys: Vec<PrivateKey>,
    broker: Option<Arc<dyn KeyBroker>>,
    rootfs: &Path,
) -> Result<image_mgmt::PulledImage, Error> {
    let mut o = pull_options(&f.reg.addr, &f.work.path().join("store"));
    o.decrypt.private_keys = keys;
    o.decrypt.broker = broker;
    ImagePuller::new(o)?
        .pull(&format!("{}/{image}", f.reg.addr), rootfs, None)
        .await
}

fn assert_clean_failure(rootfs: &Path) {
    assert!(
        !rootfs.exists(),
        "rootfs must not exist after a failed pull"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_jwe_images_decrypt_with_rsa_and_ec_keys() {
    let Some(f) = fixture() else { return };
    let (rsa_priv, rsa_pub) = keypair(
        f.work.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec_priv, ec_pub) = keypair(
        f.work.path(),
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let layout_ref = format!("{}:v1", f.layout.display());
    let enc_rsa = format!("jwe:{}", rsa_pub.display());
    common::skopeo_push(
        &layout_ref,
        &f.reg.addr,
        "enc/rsa:v1",
        &["--encryption-key", &enc_rsa],
    );
    let enc_ec = format!("jwe:{}", ec_pub.display());
    common::skopeo_push(
        &layout_ref,
        &f.reg.addr,
        "enc/ec:v1",
        &["--encryption-key", &enc_ec],
    );

    let out = f.work.path().join("rsa-rootfs");
    pull_with(&f, "enc/rsa:v1", vec![key(&rsa_priv)], None, &out)
        .await
        .unwrap();
    common::tree::assert_same(&out, &f.reference);

    let out = f.work.path().join("ec-rootfs");
    pull_with(
        &f,
        "enc/ec:v1",
        vec![key(&rsa_priv), key(&ec_priv)],
        None,
        &out,
    )
    .await
    .unwrap();
    common::tree::assert_same(&out, &f.reference);

    // The wrong key: a clear error, nothing unpacked.
    let out = f.work.path().join("wrong");
    let err = pull_with(&f, "enc/rsa:v1", vec![key(&ec_priv)], None, &out)
        .await
        .unwrap_err();
    eprintln!("refused: {err}");
    assert!(matches!(err, Error::NoKey(_)), "{err}");
    assert_clean_failure(&out);
    // No key at all.
    let err = pull_with(&f, "enc/rsa:v1", vec![], None, &out)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoKey(_)), "{err}");
    assert_clean_failure(&out);
}

/// Re-pushes the manifest of `src` as `dst` after `edit`.
async fn repush_manifest(
    addr: &str,
    src: &str,
    dst: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{addr}/{src}"),
    ]));
    let mut m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    edit(&mut m);
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let r: oci_client::Reference = format!("{addr}/{dst}").parse().unwrap();
    client
        .store_auth_if_needed(
            r.resolve_registry(),
            &oci_client::secrets::RegistryAuth::Anonymous,
        )
        .await;
    let ct = m["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned();
    client
        .push_manifest_raw(
            &r,
            serde_json::to_vec(&m).unwrap(),
            reqwest::header::HeaderValue::from_str(&ct).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hmac_is_detected_before_anything_is_written() {
    let Some(f) = fixture() else { return };
    let (priv_key, pub_key) = keypair(
        f.work.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let enc = format!("jwe:{}", pub_key.display());
    common::skopeo_push(
        &format!("{}:v1", f.layout.display()),
        &f.reg.addr,
        "enc/app:v1",
        &["--encryption-key", &enc],
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    repush_manifest(&f.reg.addr, "enc/app:v1", "enc/app:badhmac", |m| {
        let ann = &mut m["layers"][1]["annotations"]["org.opencontainers.image.enc.pubopts"];
        let mut pubopts: serde_json::Value =
            serde_json::from_slice(&b64.decode(ann.as_str().unwrap()).unwrap()).unwrap();
        let mut hmac = b64.decode(pubopts["hmac"].as_str().unwrap()).unwrap();
        hmac[0] ^= 1;
        pubopts["hmac"] = b64.encode(hmac).into();
        *ann = b64.encode(serde_json::to_vec(&pubopts).unwrap()).into();
    })
    .await;
    let out = f.work.path().join("rootfs");
    let err = pull_with(&f, "enc/app:badhmac", vec![key(&priv_key)], None, &out)
        .await
        .unwrap_err();
    eprintln!("refused: {err}");
    assert!(matches!(err, Error::BadHmac(_)), "{err}");
    assert_clean_failure(&out);
    // The unauthenticated ciphertext was not admitted to the store either.
    let blobs: Vec<_> = std::fs::read_dir(f.work.path().join("store/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .collect();
    assert!(blobs.len() < 3, "store: {blobs:?}");

    // The intact image still works afterwards (and from the store).
    let out = f.work.path().join("good");
    pull_with(&f, "enc/app:v1", vec![key(&priv_key)], None, &out)
        .await
        .unwrap();
    common::tree::assert_same(&out, &f.reference);
    // A cached blob is re-verified against the (tampered) manifest's HMAC.
    let out = f.work.path().join("again");
    let err = pull_with(&f, "enc/app:badhmac", vec![key(&priv_key)], None, &out)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadHmac(_)), "{err}");
    assert_clean_failure(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coco_encrypt_keyprovider_image_decrypts_with_the_kbs_kek() {
    let Some(f) = fixture() else { return };
    let kek_file = f.work.path().join("kek.bin");
    run(Command::new(env!("CARGO_BIN_EXE_coco-encrypt"))
        .args([
            "encrypt",
            "--tag",
            "v1",
            "--out-tag",
            "v1-enc",
            "--kid",
            "kbs:///default/image-kek/app",
        ])
        .arg("--layout")
        .arg(&f.layout)
        .arg("--kek-out")
        .arg(&kek_file));
    let kek = std::fs::read(&kek_file).unwrap();
    assert_eq!(kek.len(), 32);
    common::skopeo_push(
        &format!("{}:v1-enc", f.layout.display()),
        &f.reg.addr,
        "aa/app:v1",
        &[],
    );

    let broker = |deny: bool, k: &[u8]| -> Arc<dyn KeyBroker> {
        Arc::new(TestBroker::new(
            HashMap::from([("default/image-kek/app".to_owned(), k.to_vec())]),
            deny,
        ))
    };
    let out = f.work.path().join("rootfs");
    pull_with(&f, "aa/app:v1", vec![], Some(broker(false, &kek)), &out)
        .await
        .unwrap();
    common::tree::assert_same(&out, &f.reference);

    // The KBS refuses (attestation or resource policy): clean failure.
    let out = f.work.path().join("denied");
    let err = pull_with(&f, "aa/app:v1", vec![], Some(broker(true, &kek)), &out)
        .await
        .unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(&err, Error::NoKey(m) if m.contains("denied")),
        "{err}"
    );
    assert_clean_failure(&out);
    // A wrong KEK does not unwrap the layer keys.
    let err = pull_with(
        &f,
        "aa/app:v1",
        vec![],
        Some(broker(false, &[7u8; 32])),
        &out,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NoKey(_)), "{err}");
    assert_clean_failure(&out);
    // No KBS at all.
    let err = pull_with(&f, "aa/app:v1", vec![], None, &out)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoKey(_)), "{err}");
}

/// Blob files in a pull's store.
fn stored_blobs(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256"))
        .map(|d| d.filter(|e| e.is_ok()).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_layer_next_to_encrypted_ones_is_refused_when_encryption_is_required() {
    let Some(f) = fixture() else { return };
    let w = f.work.path();
    let kek = common::coco_encrypt(&f.layout, "v1", "v1-enc", "kbs:///default/image-kek/app", w);
    common::append_plain_layer(&f.layout, "v1-enc", "v1-evil", w);
    let layout = f.layout.display();
    common::skopeo_push(&format!("{layout}:v1-enc"), &f.reg.addr, "enc/app:v1", &[]);
    common::skopeo_push(
        &format!("{layout}:v1-evil"),
        &f.reg.addr,
        "enc/app:evil",
        &[],
    );
    common::skopeo_push(&format!("{layout}:v1"), &f.reg.addr, "enc/app:plain", &[]);
    let broker = Arc::new(TestBroker::new(
        HashMap::from([("default/image-kek/app".to_owned(), kek)]),
        false,
    ));
    let required = Policy::parse(br#"{"default":[{"type":"encryptedLayers"}]}"#, None).unwrap();
    let pull = |image: &'static str, policy: Option<Policy>, store: &'static str, out: PathBuf| {
        let broker: Arc<dyn KeyBroker> = broker.clone();
        let mut o = pull_options(&f.reg.addr, &w.join(store));
        o.decrypt.broker = Some(broker);
        o.policy = policy;
        let r = format!("{}/{image}", f.reg.addr);
        async move { ImagePuller::new(o)?.pull(&r, &out, None).await }
    };

    // The owner's encrypted image passes.
    let out = w.join("enc");
    pull("enc/app:v1", Some(required.clone()), "store", out.clone())
        .await
        .unwrap();
    common::tree::assert_same(&out, &f.reference);
    let keys_released = broker.requests();
    assert!(keys_released > 0);

    // With the host's plain layer on top: refused before any key is asked
    // for or any layer is downloaded.
    for image in ["enc/app:evil", "enc/app:plain"] {
        let out = w.join("refused");
        let err = pull(image, Some(required.clone()), "store-refused", out.clone())
            .await
            .unwrap_err();
        eprintln!("refused: {err}");
        assert!(
            matches!(&err, Error::PolicyDenied(m) if m.contains("not encrypted")),
            "{image}: {err}"
        );
        assert_clean_failure(&out);
        assert_eq!(broker.requests(), keys_released, "{image}");
        assert_eq!(stored_blobs(&w.join("store-refused")), 0, "{image}");
    }

    // Without the requirement the attack works: the host's file is in the
    // rootfs, over the owner's.
    let out = w.join("evil");
    pull("enc/app:evil", None, "store", out.clone())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("etc/hello")).unwrap(),
        "pwned by the host\n"
    );
    assert!(out.join("etc/ld.so.preload").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coco_encrypt_jwe_image_decrypts_with_skopeo_and_with_us() {
    let Some(f) = fixture() else { return };
    let (priv_key, pub_key) = keypair(
        f.work.path(),
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    run(Command::new(env!("CARGO_BIN_EXE_coco-encrypt"))
        .args(["encrypt", "--tag", "v1", "--out-tag", "v1-jwe"])
        .arg("--layout")
        .arg(&f.layout)
        .arg("--recipient")
        .arg(format!("jwe:{}", pub_key.display())));
    common::skopeo_push(
        &format!("{}:v1-jwe", f.layout.display()),
        &f.reg.addr,
        "jwe/app:v1",
        &[],
    );
    // skopeo (Go ocicrypt) decrypts what we encrypted.
    let decrypted = f.work.path().join("skopeo-out");
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--decryption-key",
        ])
        .arg(&priv_key)
        .arg(format!("docker://{}/jwe/app:v1", f.reg.addr))
        .arg(format!("oci:{}:plain", decrypted.display())));
    let umoci_out = f.work.path().join("skopeo-unpacked");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:plain", decrypted.display()))
        .arg(&umoci_out));
    common::tree::assert_same(&umoci_out.join("rootfs"), &f.reference);
    // And so do we.
    let out = f.work.path().join("rootfs");
    pull_with(&f, "jwe/app:v1", vec![key(&priv_key)], None, &out)
        .await
        .unwrap();
    common::tree::assert_same(&out, &f.reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_cli_fetches_keys_by_kbs_uri() {
    let Some(f) = fixture() else { return };
    let (priv_key, pub_key) = keypair(
        f.work.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let enc = format!("jwe:{}", pub_key.display());
    common::skopeo_push(
        &format!("{}:v1", f.layout.display()),
        &f.reg.addr,
        "cli/jwe:v1",
        &["--encryption-key", &enc],
    );
    // KBS-style resource tree: the private key and a KEK.
    let resources = f.work.path().join("resources");
    std::fs::create_dir_all(resources.join("default/keys")).unwrap();
    std::fs::copy(&priv_key, resources.join("default/keys/image-priv")).unwrap();
    std::fs::create_dir_all(resources.join("default/image-kek")).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_coco-encrypt"))
        .args([
            "encrypt",
            "--tag",
            "v1",
            "--out-tag",
            "v1-aa",
            "--kid",
            "kbs:///default/image-kek/cli",
        ])
        .arg("--layout")
        .arg(&f.layout)
        .arg("--kek-out")
        .arg(resources.join("default/image-kek/cli")));
    common::skopeo_push(
        &format!("{}:v1-aa", f.layout.display()),
        &f.reg.addr,
        "cli/aa:v1",
        &[],
    );

    let pull = |image: &str, rootfs: &Path, key: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_image-pull"));
        c.arg(format!("{}/{image}", f.reg.addr))
            .arg("--rootfs")
            .arg(rootfs)
            .arg("--store")
            .arg(f.work.path().join("cli-store"))
            .args(["--insecure-registry", &f.reg.addr])
            .arg("--resource-dir")
            .arg(&resources);
        if let Some(k) = key {
            c.args(["--decryption-key", k]);
        }
        c.output().unwrap()
    };
    let out = f.work.path().join("cli-jwe");
    let o = pull("cli/jwe:v1", &out, Some("kbs:///default/keys/image-priv"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::tree::assert_same(&out, &f.reference);
    let out = f.work.path().join("cli-aa");
    let o = pull("cli/aa:v1", &out, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::tree::assert_same(&out, &f.reference);
    // Without the key the command fails with a readable reason.
    let out = f.work.path().join("cli-fail");
    let o = pull("cli/jwe:v1", &out, None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no private key configured"), "{err}");
    assert!(!out.exists());
}

/// Accepts one HTTP request on loopback, answers `status`, returns the
/// request head and body.
fn one_http_request(status: &'static str) -> (String, std::thread::JoinHandle<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let mut s = s;
        write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        (head, body)
    });
    (url, h)
}

#[test]
fn coco_encrypt_uploads_the_kek_through_the_kbs_admin_api() {
    if !common::tools_present(&["umoci"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = common::umoci_image(work.path());
    let token = work.path().join("admin.jwt");
    std::fs::write(&token, "header.claims.sig\n").unwrap();
    let kek_out = work.path().join("kek");

    let (url, server) = one_http_request("200 OK");
    run(Command::new(env!("CARGO_BIN_EXE_coco-encrypt"))
        .args([
            "encrypt",
            "--tag",
            "v1",
            "--kid",
            "kbs:///default/image-kek/up",
            "--kbs",
            &url,
        ])
        .arg("--layout")
        .arg(&layout)
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--kek-out")
        .arg(&kek_out));
    let (head, body) = server.join().unwrap();
    assert!(
        head.starts_with("POST /kbs/v0/resource/default/image-kek/up HTTP/1.1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer header.claims.sig"),
        "{head}"
    );
    assert_eq!(body, std::fs::read(&kek_out).unwrap());
    assert_eq!(body.len(), 32);

    // A refusal by the KBS fails the command and names the status.
    let (url, server) = one_http_request("401 Unauthorized");
    let out = Command::new(env!("CARGO_BIN_EXE_coco-encrypt"))
        .args([
            "encrypt",
            "--tag",
            "v1",
            "--out-tag",
            "v1-b",
            "--kid",
            "kbs:///default/image-kek/up2",
            "--kbs",
            &url,
        ])
        .arg("--layout")
        .arg(&layout)
        .arg("--admin-token-file")
        .arg(&token)
        .output()
        .unwrap();
    server.join().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
