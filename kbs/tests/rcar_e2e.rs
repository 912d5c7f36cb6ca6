//! End to end on loopback against a real `kbs` process over TLS: the RCAR
//! handshake, policies, the admin API, hostile requests and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use attester::kbs_client::KbsClientError;
use attester::sample::SampleAttester;
use attester::Attester;
use coco_jose::keys::TeeKeyPair;
use common::{KbsProcess, ALLOW_SAMPLE, POD_INIT_DATA};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;

fn sample() -> Arc<dyn Attester> {
    Arc::new(SampleAttester::default())
}

/// A hand-driven RCAR session, to send what a well-behaved client would not.
struct Raw {
    http: reqwest::Client,
    url: String,
}

impl Raw {
    fn new(kbs: &KbsProcess) -> Self {
        Self {
            http: kbs.http(),
            url: kbs.url.clone(),
        }
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/kbs/v0/{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    async fn nonce(&self) -> String {
        let (s, v) = self
            .post(
                "auth",
                json!({"version":"0.4.0","tee":"sample","extra-params":{}}).to_string(),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["nonce"].as_str().unwrap().to_owned()
    }
}

/// An attest body for `nonce`, with evidence bound to `evidence_nonce`.
fn attestation(nonce: &str, evidence_nonce: &str, key: &TeeKeyPair) -> Value {
    let jwk = key.public_jwk();
    let rd = coco_jose::binding::runtime_data_hash(evidence_nonce, &jwk, "").unwrap();
    let evidence = SampleAttester::default().evidence(&rd).unwrap();
    json!({
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}
    })
}

fn refused_kind(e: &KbsClientError) -> (u16, String) {
    match e {
        KbsClientError::Refused { status, kind, .. } => (*status, kind.clone()),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn sample_attests_and_gets_a_resource_when_policy_allows() {
    let kbs = KbsProcess::start("");
    kbs.set_resource("default/key/1", b"the-key").await;
    kbs.allow_sample().await;
    for rsa in [false, true] {
        let client = kbs.sample_client(POD_INIT_DATA, rsa);
        let got = client.get_resource("default/key/1").await.unwrap();
        assert_eq!(got.as_slice(), b"the-key");
        // The token is reused: a second fetch needs no new handshake.
        let got = client.get_resource("kbs:///default/key/1").await.unwrap();
        assert_eq!(got.as_slice(), b"the-key");
    }
    // Unknown resource: 404, after the policy allowed the path.
    let err = kbs
        .sample_client(POD_INIT_DATA, false)
        .get_resource("default/key/missing")
        .await
        .unwrap_err();
    assert_eq!(refused_kind(&err), (404, "ResourceNotFound".into()));
}

/// The default attestation policy trusts the sample TEE (as far as it ever
/// does: "warning") only with a registered initdata, so even a resource policy
/// that accepts warnings releases nothing to a pod whose initdata the owner did
/// not register, or that sends none.
#[tokio::test]
async fn sample_gets_nothing_without_registered_initdata() {
    let kbs = KbsProcess::start("");
    kbs.set_resource("default/key/1", b"the-key").await;
    kbs.set_resource_policy(ALLOW_SAMPLE).await;
    let swapped = POD_INIT_DATA.replace("false", "true");
    let denied = |client: attester::kbs_client::KbsClient| async move {
        let err = client.get_resource("default/key/1").await.unwrap_err();
        assert_eq!(refused_kind(&err), (401, "PolicyDeny".into()));
    };
    denied(kbs.sample_client(POD_INIT_DATA, false)).await;
    kbs.register_init_data(&[POD_INIT_DATA]).await;
    denied(kbs.client(sample(), false)).await;
    denied(kbs.sample_client(&swapped, false)).await;
    let got = kbs
        .sample_client(POD_INIT_DATA, false)
        .get_resource("default/key/1")
        .await
        .unwrap();
    assert_eq!(got.as_slice(), b"the-key");
    // The token says why: its status and the initdata digest it was issued for.
    let token = kbs.sample_client(&swapped, false).attest().await.unwrap();
    let claims = token_claims(&token);
    assert_eq!(claims["submods"]["cpu0"]["ear.status"], "contraindicated");
    assert_eq!(
        claims["init_data"]["digest"],
        coco_jose::initdata::Initdata::parse(&swapped)
            .unwrap()
            .digest_hex()
    );
}

fn token_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn default_policy_denies_the_sample_tee() {
    let kbs = KbsProcess::start("");
    kbs.set_resource("default/key/1", b"the-key").await;
    let err = kbs
        .client(sample(), false)
        .get_resource("default/key/1")
        .await
        .unwrap_err();
    assert_eq!(refused_kind(&err), (401, "PolicyDeny".into()));
}

#[tokio::test]
async fn reference_values_drive_the_attestation_policy() {
    use base64::Engine;
    let kbs = KbsProcess::start("");
    kbs.set_resource("default/key/1", b"k").await;
    // Releases only on "affirming"; the policy affirms a sample whose svn is a
    // registered reference value.
    kbs.set_resource_policy(
        "package policy\ndefault allow := false\nallow if { input.submods.cpu0[\"ear.status\"] == \"affirming\" }",
    )
    .await;
    let policy = "package policy\ndefault status := \"contraindicated\"\nstatus := \"affirming\" if { input.claims.svn in data.reference.sample_svn }";
    let body = json!({"policy_id": "default", "type": "rego",
        "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(policy)});
    assert_eq!(
        kbs.admin(
            Method::POST,
            "attestation-policy",
            body.to_string().into_bytes()
        )
        .await,
        200
    );
    let err = kbs
        .client(sample(), false)
        .get_resource("default/key/1")
        .await
        .unwrap_err();
    assert_eq!(refused_kind(&err), (401, "PolicyDeny".into()));
    let rv = json!({"version":"0.1.0","type":"sample",
        "payload": base64::engine::general_purpose::STANDARD.encode(json!({"sample_svn": ["1"]}).to_string())});
    assert_eq!(
        kbs.admin(Method::POST, "reference-value", rv.to_string().into_bytes())
            .await,
        200
    );
    let got = kbs
        .client(sample(), false)
        .get_resource("default/key/1")
        .await
        .unwrap();
    assert_eq!(got.as_slice(), b"k");
    // A broken policy is refused and the working one stays.
    let broken = json!({"policy_id": "default", "type": "rego",
        "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("package policy\nstatus := ")});
    assert_eq!(
        kbs.admin(
            Method::POST,
            "attestation-policy",
            broken.to_string().into_bytes()
        )
        .await,
        400
    );
    assert!(kbs
        .client(sample(), false)
        .get_resource("default/key/1")
        .await
        .is_ok());
}

#[tokio::test]
async fn evidence_bound_to_another_nonce_or_key_is_rejected() {
    let kbs = KbsProcess::start("");
    let raw = Raw::new(&kbs);
    let key = TeeKeyPair::generate_ec();

    // report_data computed over another nonce.
    let nonce = raw.nonce().await;
    let (s, v) = raw
        .post(
            "attest",
            attestation(&nonce, "some-other-nonce", &key).to_string(),
        )
        .await;
    assert_eq!(s, 401);
    assert!(
        v["type"].as_str().unwrap().ends_with("EvidenceRejected"),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("report_data"), "{v}");

    // report_data over this nonce but another key than the one presented.
    let nonce = raw.nonce().await;
    let mut body = attestation(&nonce, &nonce, &key);
    body["runtime-data"]["tee-pubkey"] =
        serde_json::to_value(TeeKeyPair::generate_ec().public_jwk()).unwrap();
    let (s, v) = raw.post("attest", body.to_string()).await;
    assert_eq!(
        (s, v["type"].as_str().unwrap().ends_with("EvidenceRejected")),
        (401, true),
        "{v}"
    );
}

#[tokio::test]
async fn evidence_and_nonces_replayed_across_sessions_are_rejected() {
    let kbs = KbsProcess::start("");
    let key = TeeKeyPair::generate_ec();
    let a = Raw::new(&kbs);
    let nonce_a = a.nonce().await;
    let body_a = attestation(&nonce_a, &nonce_a, &key).to_string();
    let (s, v) = a.post("attest", body_a.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["token"].is_string());

    // The same attestation again on the same session: the nonce is spent.
    let (s, v) = a.post("attest", body_a.clone()).await;
    assert_eq!(s, 401);
    assert!(v["type"].as_str().unwrap().ends_with("NonceReused"), "{v}");

    // Session B receives A's whole attestation: wrong nonce for B.
    let b = Raw::new(&kbs);
    b.nonce().await;
    let (s, v) = b.post("attest", body_a).await;
    assert_eq!(s, 401);
    assert!(v["type"].as_str().unwrap().ends_with("InvalidNonce"), "{v}");

    // Session C relabels A's evidence with C's nonce: the evidence binds A's.
    let c = Raw::new(&kbs);
    let nonce_c = c.nonce().await;
    let (s, v) = c
        .post("attest", attestation(&nonce_c, &nonce_a, &key).to_string())
        .await;
    assert_eq!(s, 401);
    assert!(
        v["type"].as_str().unwrap().ends_with("EvidenceRejected"),
        "{v}"
    );

    // Without any session cookie.
    let fresh = kbs.http_with_cookies(false);
    let s = fresh
        .post(format!("{}/kbs/v0/attest", kbs.url))
        .body(attestation(&nonce_c, &nonce_c, &key).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s.as_u16(), 401);
}

#[tokio::test]
async fn expired_session_is_rejected() {
    let kbs = KbsProcess::start("[session]\nttl_secs = 1");
    let key = TeeKeyPair::generate_ec();
    // Keep the cookie by hand: a client's cookie jar would drop it at Max-Age,
    // and the point is what the server does with a stale session.
    let http = kbs.http();
    let r = http
        .post(format!("{}/kbs/v0/auth", kbs.url))
        .body(json!({"version":"0.4.0","tee":"sample","extra-params":{}}).to_string())
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=1"));
    let nonce = r.json::<Value>().await.unwrap()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = kbs
        .http_with_cookies(false)
        .post(format!("{}/kbs/v0/attest", kbs.url))
        .header("cookie", cookie)
        .body(attestation(&nonce, &nonce, &key).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["type"].as_str().unwrap().ends_with("InvalidSession"),
        "{v}"
    );
}

#[tokio::test]
async fn tampered_or_foreign_tokens_are_rejected() {
    let kbs = KbsProcess::start("");
    kbs.set_resource("default/key/1", b"k").await;
    kbs.allow_sample().await;
    let token = kbs
        .sample_client(POD_INIT_DATA, false)
        .attest()
        .await
        .unwrap();
    let http = kbs.http();
    let get = |t: String| {
        let http = http.clone();
        let url = format!("{}/kbs/v0/resource/default/key/1", kbs.url);
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(token.clone()).await, 200);
    // Flip one character of the signature.
    let mut t = token.clone().into_bytes();
    let i = t.len() - 5;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(get(String::from_utf8(t).unwrap()).await, 401);
    // Change a claim (status) and keep the signature.
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["tee"] = json!("snp");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(get(forged).await, 401);
    // A token signed by someone else.
    let other = coco_jose::jwt::SigningKey::generate_es256()
        .sign(&claims)
        .unwrap();
    assert_eq!(get(other).await, 401);
    assert_eq!(get("not-a-jwt".into()).await, 401);
}

#[tokio::test]
async fn path_tricks_are_refused_and_write_nothing_outside() {
    let kbs = KbsProcess::start("");
    kbs.allow_sample().await;
    let token = kbs
        .sample_client(POD_INIT_DATA, false)
        .attest()
        .await
        .unwrap();
    let http = kbs.http();
    // Dot segments, sent raw: an HTTP client would normalize them away.
    for bad in [
        "../../etc/passwd",
        "a/../c",
        "%2e%2e/%2e%2e/x",
        "a/%2e%2e/c",
        "..%2f..%2fetc/x/y",
    ] {
        let get = format!("GET /kbs/v0/resource/{bad} HTTP/1.1\r\nAuthorization: Bearer {token}");
        assert_eq!(kbs.raw_request(&get, "").await, 400, "raw GET {bad}");
        let post = format!(
            "POST /kbs/v0/resource/{bad} HTTP/1.1\r\nAuthorization: Bearer {}\r\nContent-Length: 5",
            kbs.admin_token()
        );
        assert_eq!(kbs.raw_request(&post, "pwned").await, 400, "raw POST {bad}");
    }
    for bad in [
        "a%2Fb/c/d",
        "a/b",
        "a/b/c/d",
        "a/b/.hidden",
        "a/%2e%2e/c",
        "a/b/c%00",
        "a//c",
    ] {
        let url = format!("{}/kbs/v0/resource/{bad}", kbs.url);
        let s = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s.as_u16(), 400, "GET {bad}");
        let s = http
            .post(&url)
            .bearer_auth(kbs.admin_token())
            .body("pwned")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s.as_u16(), 400, "POST {bad}");
    }
    // Nothing was written anywhere below the temp dir but the expected files.
    let mut written = Vec::new();
    let mut stack = vec![kbs.dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if std::fs::read(e.path()).unwrap() == b"pwned" {
                written.push(e.path());
            }
        }
    }
    assert!(written.is_empty(), "{written:?}");
}

#[tokio::test]
async fn malformed_requests_and_wrong_versions_get_400() {
    let kbs = KbsProcess::start("");
    let raw = Raw::new(&kbs);
    for body in [
        "{",
        "[]",
        "{\"version\":\"0.4.0\"}",
        "{\"version\":\"0.4.0\",\"tee\":\"nope\",\"extra-params\":{}}",
    ] {
        let (s, v) = raw.post("auth", body).await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    let (s, v) = raw
        .post(
            "auth",
            json!({"version":"0.3.0","tee":"sample","extra-params":{}}).to_string(),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["type"].as_str().unwrap().ends_with("ProtocolVersion"),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("0.4.0"), "{v}");
    // TEE with no verifier configured.
    let (s, v) = raw
        .post(
            "auth",
            json!({"version":"0.4.0","tee":"cca","extra-params":{}}).to_string(),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // Malformed attestation on a live session.
    raw.nonce().await;
    let (s, _) = raw.post("attest", "{\"runtime-data\": 5}").await;
    assert_eq!(s, 400);
    // Oversized attest body.
    raw.nonce().await;
    let (s, _) = raw.post("attest", vec![b' '; 5 << 20]).await;
    assert_eq!(s, 413);
}

#[tokio::test]
async fn admin_needs_a_valid_unexpired_admin_token() {
    let kbs = KbsProcess::start("");
    let http = kbs.http();
    let url = format!("{}/kbs/v0/resource/default/key/admin-test", kbs.url);
    let now = coco_jose::now_secs();
    let expired = kbs
        .admin_key
        .sign(&json!({"role":"admin","exp": now - 10}))
        .unwrap();
    let stranger = coco_jose::jwt::SigningKey::generate_ed25519()
        .sign(&json!({"role":"admin","exp": now + 60}))
        .unwrap();
    let wrong_role = kbs
        .admin_key
        .sign(&json!({"role":"viewer","exp": now + 60}))
        .unwrap();
    for (token, want) in [
        (None, 401),
        (Some(expired), 401),
        (Some(stranger), 401),
        (Some("garbage".to_string()), 401),
        (Some(wrong_role), 403),
    ] {
        let mut req = http.post(&url).body("x");
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        assert_eq!(
            req.send().await.unwrap().status().as_u16(),
            want,
            "{token:?}"
        );
        let mut req = http
            .post(format!("{}/kbs/v0/resource-policy", kbs.url))
            .body(json!({"policy": "cGFja2FnZSBwb2xpY3kKYWxsb3cgOj0gdHJ1ZQ"}).to_string());
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), want);
    }
    // Nothing changed: no resource, and the default policy still denies.
    assert!(!kbs
        .state_dir()
        .join("resources/default/key/admin-test")
        .exists());
    assert!(!kbs.state_dir().join("policies/resource.rego").exists());
    // A valid token works, and delete of a missing resource is a 404.
    assert_eq!(
        kbs.admin(
            Method::POST,
            "resource/default/key/admin-test",
            b"x".to_vec()
        )
        .await,
        200
    );
    assert_eq!(
        kbs.admin(Method::DELETE, "resource/default/key/admin-test", vec![])
            .await,
        200
    );
    assert_eq!(
        kbs.admin(Method::DELETE, "resource/default/key/admin-test", vec![])
            .await,
        404
    );
}

#[tokio::test]
async fn admin_api_is_closed_without_an_admin_key() {
    let kbs = KbsProcess::start_without_admin();
    assert_eq!(
        kbs.admin(Method::POST, "resource/default/key/1", b"x".to_vec())
            .await,
        401
    );
    assert!(!kbs.state_dir().join("resources/default/key/1").exists());
}

#[tokio::test]
async fn resources_policies_and_reference_values_survive_a_restart() {
    let mut kbs = KbsProcess::start("");
    kbs.set_resource("default/key/1", b"persisted").await;
    kbs.allow_sample().await;
    let rv = json!({"sample_svn": ["1"]});
    assert_eq!(
        kbs.admin(Method::POST, "reference-value", rv.to_string().into_bytes())
            .await,
        200
    );
    let token_before = kbs
        .sample_client(POD_INIT_DATA, false)
        .attest()
        .await
        .unwrap();
    kbs.restart();
    let got = kbs
        .sample_client(POD_INIT_DATA, false)
        .get_resource("default/key/1")
        .await
        .unwrap();
    assert_eq!(got.as_slice(), b"persisted");
    let r = kbs
        .http()
        .get(format!("{}/kbs/v0/reference-value", kbs.url))
        .bearer_auth(kbs.admin_token())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sample_svn"], json!(["1"]));
    assert_eq!(
        v[coco_jose::initdata::REFERENCE_VALUE],
        json!([coco_jose::initdata::Initdata::parse(POD_INIT_DATA)
            .unwrap()
            .digest_hex()])
    );
    // Tokens issued before the restart still verify (the signing key persisted).
    let s = kbs
        .http()
        .get(format!("{}/kbs/v0/resource/default/key/1", kbs.url))
        .bearer_auth(token_before)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s.as_u16(), 200);
}

#[tokio::test]
async fn auth_is_rate_limited_and_sessions_are_bounded() {
    let kbs = KbsProcess::start("[rate_limit]\nauth_per_second = 0.001\nauth_burst = 3");
    let raw = Raw::new(&kbs);
    for _ in 0..3 {
        raw.nonce().await;
    }
    let (s, _) = raw
        .post(
            "auth",
            json!({"version":"0.4.0","tee":"sample","extra-params":{}}).to_string(),
        )
        .await;
    assert_eq!(s, 429);

    let kbs = KbsProcess::start("[session]\nmax_sessions = 2");
    let raw = Raw::new(&kbs);
    raw.nonce().await;
    raw.nonce().await;
    let (s, v) = raw
        .post(
            "auth",
            json!({"version":"0.4.0","tee":"sample","extra-params":{}}).to_string(),
        )
        .await;
    assert_eq!(s, 503, "{v}");
    let metrics = kbs
        .http()
        .get(format!("{}/metrics", kbs.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kbs_sessions 2"), "{metrics}");
    assert!(
        metrics.contains("kbs_auth_requests_total{outcome=\"rejected\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn plain_http_needs_explicit_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kbs.toml"), "state_dir = \"s\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kbs"))
        .args(["check-config", "--config"])
        .arg(dir.path().join("kbs.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS is required"));
}
