//! The `attestation-agent` binary on a temp unix socket, driven by a ttrpc
//! client generated from the same protos, against a real KBS in this process
//! (plain HTTP on loopback; TLS is covered by the KBS's own tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use attestation_agent::protocols::{attestation_agent as aa, attestation_agent_ttrpc as aa_ttrpc};
use attestation_agent::protocols::{keyprovider as kp, keyprovider_ttrpc as kp_ttrpc};
use base64::Engine;
use image_mgmt::ocicrypt::keyprovider::AnnotationPacket;
use kbs::verifier::Verifier;
use sha2::{Digest, Sha384};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use ttrpc::context;

const INIT_DATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault AllowRequestsFailingPolicy := true\\n\"\n";

use kbs::local::LocalKbs as Kbs;

/// A KBS in this process on a free loopback port (plain HTTP: TLS is covered by
/// the KBS's own end-to-end tests).
async fn start_kbs() -> Kbs {
    Kbs::start(None).unwrap()
}

async fn admin_post(kbs: &Kbs, path: &str, body: reqwest::Body, json: bool) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/kbs/v0/{path}", kbs.url))
        .bearer_auth(&kbs.admin_token);
    if !json {
        req = req.header("Content-Type", "application/octet-stream");
    } else {
        req = req.header("Content-Type", "application/json");
    }
    let status = req.body(body).send().await.unwrap().status();
    assert!(status.is_success(), "admin POST {path}: {status}");
}

/// The agent process; killed on drop.
struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_cmd(socket: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attestation-agent"));
    c.arg("--socket").arg(socket).args(["--attester", "sample"]);
    c
}

async fn start_agent(mut cmd: Command, socket: &Path) -> (AgentProc, ttrpc::r#async::Client) {
    let child = AgentProc(cmd.spawn().unwrap());
    for _ in 0..200 {
        if socket.exists() {
            let client = ttrpc::r#async::Client::connect(&format!("unix://{}", socket.display()))
                .await
                .unwrap();
            return (child, client);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("attestation-agent did not create {}", socket.display());
}

fn code(e: ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code.enum_value_or(ttrpc::Code::UNKNOWN), s.message),
        other => panic!("expected a status, got {other:?}"),
    }
}

fn ctx() -> context::Context {
    context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_evidence_token_resources_and_unwraps_keys() {
    let kbs = start_kbs().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/aa.sock");
    let init = dir.path().join("initdata.toml");
    std::fs::write(&init, INIT_DATA).unwrap();
    let mut cmd = agent_cmd(&socket);
    cmd.args(["--kbs-url", &kbs.url])
        .arg("--init-data")
        .arg(&init);
    let (_agent, client) = start_agent(cmd, &socket).await;
    let aa = aa_ttrpc::AttestationAgentServiceClient::new(client.clone());
    let kp = kp_ttrpc::KeyProviderServiceClient::new(client);

    // Evidence bound to SHA-384(runtime data), checked by the KBS's verifier.
    let runtime_data = b"nonce-and-key-from-a-relying-party";
    let ev = aa
        .get_evidence(
            ctx(),
            &aa::GetEvidenceRequest {
                RuntimeData: runtime_data.to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&ev.Evidence).unwrap();
    let expected = |rd: &[u8]| kbs::verifier::Expected {
        report_data: Sha384::digest(rd).into(),
        init_data_digest: None,
    };
    kbs::verifier::sample::SampleVerifier
        .verify(&ev, &expected(runtime_data))
        .unwrap();
    assert!(kbs::verifier::sample::SampleVerifier
        .verify(&ev, &expected(b"other"))
        .is_err());

    // The rest of guest-components' API, answered as its agent answers without
    // additional attesters or an event log.
    let tee = aa
        .get_tee_type(ctx(), &aa::GetTeeTypeRequest::new())
        .await
        .unwrap();
    assert_eq!(tee.tee, "sample");
    let more = aa
        .get_additional_tees(ctx(), &aa::GetAdditionalTeesRequest::new())
        .await
        .unwrap();
    assert!(more.additional_tees.is_empty());
    let extra = aa
        .get_additional_evidence(ctx(), &aa::GetAdditionalEvidenceRequest::new())
        .await
        .unwrap();
    assert!(extra.Evidence.is_empty());
    let m = aa
        .extend_runtime_measurement(ctx(), &aa::ExtendRuntimeMeasurementRequest::new())
        .await
        .unwrap();
    assert_eq!(
        m.Result.enum_value().unwrap(),
        aa::RuntimeMeasurementResult::NOT_ENABLED
    );
    let (c, msg) = code(
        aa.bind_init_data(ctx(), &aa::BindInitDataRequest::new())
            .await
            .unwrap_err(),
    );
    assert_eq!(c, ttrpc::Code::UNIMPLEMENTED);
    assert!(msg.starts_with("BindInitData is not implemented"), "{msg}");
    let (c, msg) = code(
        kp.wrap_key(ctx(), &kp::KeyProviderKeyWrapProtocolInput::new())
            .await
            .unwrap_err(),
    );
    assert_eq!(c, ttrpc::Code::UNIMPLEMENTED);
    assert!(msg.starts_with("WrapKey is not implemented"), "{msg}");

    // Stored resources: the sample TEE is denied by the default policy.
    admin_post(
        &kbs,
        "resource/default/app/secret",
        b"s3cret".to_vec().into(),
        false,
    )
    .await;
    let kek = [7u8; 32];
    admin_post(
        &kbs,
        "resource/default/image-kek/app",
        kek.to_vec().into(),
        false,
    )
    .await;
    let get = |path: &str| aa::GetResourceRequest {
        ResourcePath: path.into(),
        ..Default::default()
    };
    let (c, msg) = code(
        aa.get_resource(ctx(), &get("kbs:///default/app/secret"))
            .await
            .unwrap_err(),
    );
    assert_eq!(c, ttrpc::Code::PERMISSION_DENIED, "{msg}");

    // The test explicitly trusts the (non-confidential) sample TEE.
    let rego = "package policy\ndefault allow := false\nallow if { input.tee == \"sample\" }";
    let body = serde_json::json!({
        "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rego)
    });
    admin_post(&kbs, "resource-policy", body.to_string().into(), true).await;

    let token = aa
        .get_token(
            ctx(),
            &aa::GetTokenRequest {
                TokenType: "kbs".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(token.Token).unwrap().split('.').count(),
        3
    );

    for path in ["kbs:///default/app/secret", "default/app/secret"] {
        let r = aa.get_resource(ctx(), &get(path)).await.unwrap();
        assert_eq!(r.Resource, b"s3cret");
    }
    let (c, msg) = code(
        aa.get_resource(ctx(), &get("default/app/missing"))
            .await
            .unwrap_err(),
    );
    assert_eq!(c, ttrpc::Code::NOT_FOUND, "{msg}");

    // Keyprovider: an annotation wrapped with image-mgmt's code, KEK in the KBS.
    let opts = br#"{"symkey":"c3ltbWV0cmljIGtleQ==","digest":"","cipheroptions":{}}"#;
    let ann = AnnotationPacket::wrap(opts, &kek, "kbs:///default/image-kek/app")
        .unwrap()
        .to_json()
        .unwrap();
    let req = serde_json::json!({"op": "keyunwrap", "keyunwrapparams": {
        "dc": {}, "annotation": base64::engine::general_purpose::STANDARD.encode(&ann)}});
    let out = kp
        .un_wrap_key(
            ctx(),
            &kp::KeyProviderKeyWrapProtocolInput {
                KeyProviderKeyWrapProtocolInput: req.to_string().into_bytes(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let out: serde_json::Value =
        serde_json::from_slice(&out.KeyProviderKeyWrapProtocolOutput).unwrap();
    let got = base64::engine::general_purpose::STANDARD
        .decode(out["keyunwrapresults"]["optsdata"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, opts);

    // Malformed input: clear statuses, and the service keeps serving.
    for bad in [
        b"not json".to_vec(),
        br#"{"op":"keywrap"}"#.to_vec(),
        br#"{"op":"keyunwrap","keyunwrapparams":{"annotation":"e30="}}"#.to_vec(),
    ] {
        let (c, msg) = code(
            kp.un_wrap_key(
                ctx(),
                &kp::KeyProviderKeyWrapProtocolInput {
                    KeyProviderKeyWrapProtocolInput: bad,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    }
    let (c, _) = code(
        aa.get_resource(ctx(), &get("kbs:///../etc/passwd"))
            .await
            .unwrap_err(),
    );
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    let (c, _) = code(
        aa.get_token(
            ctx(),
            &aa::GetTokenRequest {
                TokenType: "coco_as".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    let r = aa
        .get_resource(ctx(), &get("default/app/secret"))
        .await
        .unwrap();
    assert_eq!(r.Resource, b"s3cret");
}

#[tokio::test]
async fn refuses_to_start_when_the_tee_carries_another_initdata_digest() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("initdata.toml");
    std::fs::write(&init, INIT_DATA).unwrap();
    let out = agent_cmd(&dir.path().join("aa.sock"))
        .arg("--init-data")
        .arg(&init)
        .args(["--sample-init-data-digest", &"00".repeat(48)])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("initdata digest"), "{err}");
    assert!(!dir.path().join("aa.sock").exists());
}

#[test]
fn default_socket_is_the_one_the_guest_agent_waits_for() {
    // coco-agent's --attester-socket default (agent/src/main.rs).
    let agent_main = include_str!("../../agent/src/main.rs");
    assert!(agent_main.contains(&format!("\"{}\"", attestation_agent::DEFAULT_SOCKET)));
}
