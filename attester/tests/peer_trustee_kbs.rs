//! Our RCAR client against Trustee's own KBS (built-in attestation service, sample
//! verifier): attest and get-resource with every TEE key kind. Runs when
//! `COCO_PEER_TRUSTEE_KBS` names a `kbs` built from Trustee (checked with 78962cd, built
//! with `coco-as-builtin`); otherwise it says it skipped and why. The test starts that KBS
//! on a free loopback port with its documented config keys (`kbs/src/config.rs`), plain
//! HTTP and `InsecureAllowAll` admin, and stores the resource through its admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use attester::kbs_client::{ClientOptions, KbsClient, TeeKeyKind};
use attester::sample::SampleAttester;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct TrusteeKbs {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for TrusteeKbs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(bin: &std::ffi::OsStr) -> TrusteeKbs {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let config = format!(
        "[http_server]\nsockets = [\"127.0.0.1:{port}\"]\ninsecure_http = true\n\
         [attestation_token]\ninsecure_header_jwk = true\n\
         [attestation_service]\ntype = \"coco_as_builtin\"\nwork_dir = \"{d}/as\"\n\
         [attestation_service.attestation_token_broker]\nduration_min = 5\n\
         [attestation_service.rvps_config]\ntype = \"BuiltIn\"\n\
         [admin]\nauthorization_mode = \"InsecureAllowAll\"\n\
         [storage_backend]\nstorage_type = \"LocalFs\"\n\
         [storage_backend.backends.local_fs]\ndir_path = \"{d}/storage\"\n\
         [[plugins]]\nname = \"resource\"\nstorage_backend_type = \"kvstorage\"\n"
    );
    std::fs::write(dir.path().join("kbs.toml"), config).unwrap();
    let child = Command::new(bin)
        .arg("--config-file")
        .arg(dir.path().join("kbs.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start Trustee's kbs");
    // Owned at once, so that every path below kills and reaps it.
    let kbs = TrusteeKbs {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return kbs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Trustee's kbs did not listen on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_attests_and_gets_resources_from_trustees_kbs() {
    let Some(bin) = std::env::var_os("COCO_PEER_TRUSTEE_KBS") else {
        eprintln!(
            "SKIPPED: COCO_PEER_TRUSTEE_KBS does not name Trustee's kbs \
             (built from confidential-containers/trustee outside this repository)"
        );
        return;
    };
    let kbs = start(&bin).await;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(attester::kbs_client::tls_config(None).unwrap())
        .build()
        .unwrap();
    let secret = b"stored in Trustee's KBS".to_vec();
    let r = http
        .post(format!("{}/kbs/v0/resource/default/peer/key", kbs.url))
        .body(secret.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "set resource: {}", r.status());
    // Trustee's default resource policy denies everything: the refusal is a 401.
    let client = |kind| {
        KbsClient::new(
            &kbs.url,
            Arc::new(SampleAttester::default()),
            ClientOptions {
                key_kind: kind,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let denied = client(TeeKeyKind::Ec)
        .get_resource("default/peer/key")
        .await
        .unwrap_err();
    assert_eq!(denied.status(), Some(401), "{denied}");

    // Trustee's allow-all resource policy (package policy, rule allow, data.plugin).
    use base64::Engine;
    let allow = "package policy\ndefault allow = false\nallow if { data.plugin == \"resource\" }\n";
    let r = http
        .post(format!("{}/kbs/v0/resource-policy", kbs.url))
        .json(&serde_json::json!({
            "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(allow)
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "set policy: {}", r.status());

    for kind in [TeeKeyKind::Ec, TeeKeyKind::Ec521, TeeKeyKind::Rsa] {
        let c = client(kind);
        let token = c.attest().await.unwrap();
        assert_eq!(token.split('.').count(), 3, "{kind:?}: a JWT");
        let got = c.get_resource("default/peer/key").await.unwrap();
        assert_eq!(&got[..], &secret[..], "{kind:?}");
    }
    // Trustee answers a missing resource with a 401 (its resource plugin's error).
    let missing = client(TeeKeyKind::Ec)
        .get_resource("default/peer/none")
        .await
        .unwrap_err();
    assert!(missing.status().is_some(), "{missing}");
}
