//! Trustee's own `kbs-client`, unchanged, against our KBS over TLS: every verb, each with
//! its effect observed. Runs when `COCO_PEER_TRUSTEE_KBS_CLIENT` names a kbs-client built
//! from Trustee (checked with 78962cd); the attestation-policy part also needs
//! `COCO_PEER_TRUSTEE_SRC`, a Trustee checkout whose default EAR policy
//! (`attestation-service/src/ear_token/ear_default_policy_cpu.rego`) is uploaded as is.
//! Without them the test says it skipped and why (peer programs are not part of CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::KbsProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Peer {
    bin: PathBuf,
    url: String,
    ca: PathBuf,
    token: PathBuf,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Peer {
    fn run(&self, args: &[&str]) -> Out {
        let o = Command::new(&self.bin)
            .arg("--url")
            .arg(&self.url)
            .arg("--cert-file")
            .arg(&self.ca)
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .expect("run Trustee kbs-client");
        let out = Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        let why = out.stderr.lines().last().unwrap_or_default();
        eprintln!(
            "peer kbs-client {}: {}",
            args.join(" "),
            if out.ok {
                "ok".to_string()
            } else {
                format!("refused: {why}")
            }
        );
        out
    }

    fn config(&self, args: &[&str]) -> Out {
        let tok = self.token.display().to_string();
        let mut a = vec!["config", "--admin-token-file", tok.as_str()];
        a.extend_from_slice(args);
        self.run(&a)
    }

    fn must(&self, o: Out, what: &str) -> String {
        assert!(o.ok, "{what}: {}\n{}", o.stdout, o.stderr);
        o.stdout
    }

    /// `get-resource`, decoded from the base64 the client prints; None if refused.
    fn get(&self, path: &str, key: Option<&Path>) -> Result<Vec<u8>, String> {
        let mut a = vec!["get-resource", "--path", path];
        let k;
        if let Some(key) = key {
            k = key.display().to_string();
            a.extend(["--tee-key-file", k.as_str()]);
        }
        let o = self.run(&a);
        if !o.ok {
            return Err(o.stderr);
        }
        Ok(base64::engine::general_purpose::STANDARD
            .decode(o.stdout.trim())
            .expect("kbs-client prints base64"))
    }
}

/// TEE keys in the forms Trustee's kbs_protocol reads (`TeeKeyPair::from_pem`,
/// guest-components da8d93f): RSA as PKCS#1, EC P-256 and P-521 as PKCS#8.
fn tee_keys(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    for (name, args) in [
        (
            "p256",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ][..],
        ),
        (
            "p521",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-521",
            ][..],
        ),
        ("rsa", &["genrsa", "-traditional"][..]),
    ] {
        let path = dir.join(format!("{name}.pem"));
        let st = Command::new("openssl")
            .args(args)
            .arg("-out")
            .arg(&path)
            .args(if name == "rsa" {
                &["2048"][..]
            } else {
                &[][..]
            })
            .status()
            .expect("openssl");
        assert!(st.success(), "openssl {name}");
        out.push((name, path));
    }
    out
}

fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.trim().split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trustee_kbs_client_against_our_kbs() {
    let Some(bin) = std::env::var_os("COCO_PEER_TRUSTEE_KBS_CLIENT") else {
        eprintln!(
            "SKIPPED: COCO_PEER_TRUSTEE_KBS_CLIENT does not name Trustee's kbs-client \
             (built from confidential-containers/trustee outside this repository)"
        );
        return;
    };
    let kbs = KbsProcess::start("");
    let dir = kbs.dir.path().to_path_buf();
    std::fs::write(dir.join("ca.pem"), &kbs.ca_pem).unwrap();
    std::fs::write(dir.join("admin.jwt"), kbs.admin_token()).unwrap();
    let peer = Peer {
        bin: bin.into(),
        url: kbs.url.clone(),
        ca: dir.join("ca.pem"),
        token: dir.join("admin.jwt"),
    };
    let secret = b"released only to an attested sample TEE\n";
    std::fs::write(dir.join("secret"), secret).unwrap();
    let secret_file = dir.join("secret").display().to_string();

    // set-resource, then our default resource policy: nothing for the sample TEE.
    peer.must(
        peer.config(&[
            "set-resource",
            "--path",
            "default/peer/key",
            "--resource-file",
            &secret_file,
        ]),
        "set-resource",
    );
    let denied = peer.get("default/peer/key", None).unwrap_err();
    assert!(
        !denied.contains("internal error"),
        "a denial must not look like a server fault: {denied}"
    );

    // attest: a token from our KBS.
    let token = peer.must(peer.run(&["attest"]), "attest");
    let claims = jwt_claims(&token);
    assert!(
        claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["sample"].is_object(),
        "{claims}"
    );

    // --allow-all: the same bytes for every TEE key kind Trustee's client uses.
    peer.must(
        peer.config(&["set-resource-policy", "--allow-all"]),
        "allow-all",
    );
    assert_eq!(peer.get("default/peer/key", None).unwrap(), secret);
    for (kind, key) in tee_keys(&dir) {
        assert_eq!(
            peer.get("default/peer/key", Some(&key)).unwrap(),
            secret,
            "{kind}"
        );
    }

    // --deny-all and --default (Trustee's default is deny-all) refuse again.
    for form in ["--deny-all", "--default"] {
        peer.must(peer.config(&["set-resource-policy", form]), form);
        assert!(peer.get("default/peer/key", None).is_err(), "{form}");
    }

    // --policy-file with Trustee's data shape: resource-path is [repository, type, tag].
    let by_tag = dir.join("by-tag.rego");
    std::fs::write(
        &by_tag,
        "package policy\nimport rego.v1\ndefault allow := false\n\
         allow if {\n\tdata.plugin == \"resource\"\n\tdata[\"resource-path\"][2] == \"key\"\n}\n",
    )
    .unwrap();
    peer.must(
        peer.config(&[
            "set-resource-policy",
            "--policy-file",
            by_tag.to_str().unwrap(),
        ]),
        "policy-file",
    );
    assert_eq!(peer.get("default/peer/key", None).unwrap(), secret);
    peer.must(
        peer.config(&[
            "set-resource",
            "--path",
            "default/peer/other",
            "--resource-file",
            &secret_file,
        ]),
        "set-resource other",
    );
    assert!(peer.get("default/peer/other", None).is_err());

    // Reference values in Trustee's three forms, read back with get-reference-value.
    for args in [
        &["launch_digest", "abcde"][..],
        &["svn", "1"][..],
        &["major_version", "1", "--as-integer", "--as-single-value"][..],
        &[
            "minimum_minor_version",
            "0",
            "--as-integer",
            "--as-single-value",
        ][..],
        &["debug", "false", "--as-bool"][..],
    ] {
        let mut a = vec!["set-sample-reference-value"];
        a.extend_from_slice(args);
        peer.must(peer.config(&a), &a.join(" "));
    }
    for (id, want) in [
        ("svn", serde_json::json!(["1"])),
        ("major_version", serde_json::json!(1)),
        ("debug", serde_json::json!([false])),
    ] {
        let got = peer.must(
            peer.config(&["get-reference-value", "--id", id]),
            "get-reference-value",
        );
        // The client prints the body with `{:?}`: a quoted JSON text.
        let body: String = serde_json::from_str(got.trim()).expect("a quoted string");
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(value, want, "{id}");
    }
    let status = kbs
        .admin(
            reqwest::Method::GET,
            "reference-value/major_version",
            vec![],
        )
        .await;
    assert_eq!(status, 200);

    // --affirming with Trustee's own default EAR policy uploaded without --id
    // (Trustee's id `default_cpu`): affirming once the reference values match.
    peer.must(
        peer.config(&["set-resource-policy", "--affirming"]),
        "affirming",
    );
    let Some(src) = std::env::var_os("COCO_PEER_TRUSTEE_SRC") else {
        eprintln!(
            "SKIPPED (attestation-policy part): COCO_PEER_TRUSTEE_SRC does not name a \
             Trustee checkout with its default EAR policy"
        );
        return;
    };
    let trustee_policy =
        Path::new(&src).join("attestation-service/src/ear_token/ear_default_policy_cpu.rego");
    peer.must(
        peer.config(&[
            "set-attestation-policy",
            "--policy-file",
            trustee_policy.to_str().unwrap(),
        ]),
        "set-attestation-policy (default id)",
    );
    let token = peer.must(peer.run(&["attest"]), "attest under Trustee's policy");
    let cpu0 = &jwt_claims(&token)["submods"]["cpu0"];
    assert_eq!(cpu0["ear.status"], "affirming", "{cpu0}");
    assert_eq!(cpu0["ear.trustworthiness-vector"]["hardware"], 2, "{cpu0}");
    assert_eq!(peer.get("default/peer/key", None).unwrap(), secret);

    // A reference value the policy compares now mismatches: hardware is no longer
    // affirmed and the resource is refused.
    peer.must(
        peer.config(&["set-sample-reference-value", "svn", "2"]),
        "svn 2",
    );
    assert!(peer.get("default/peer/key", None).is_err());
    peer.must(
        peer.config(&["set-sample-reference-value", "svn", "1"]),
        "svn 1",
    );

    // A policy that cannot be evaluated is refused at upload; the previous one stays.
    let broken = dir.join("broken.rego");
    std::fs::write(
        &broken,
        "package policy\nimport rego.v1\nsomething_else := 1\n",
    )
    .unwrap();
    for id in [None, Some("default")] {
        let mut a = vec![
            "set-attestation-policy",
            "--policy-file",
            broken.to_str().unwrap(),
        ];
        if let Some(id) = id {
            a.extend(["--id", id]);
        }
        let o = peer.config(&a);
        assert!(!o.ok, "broken policy accepted ({id:?})");
    }
    assert_eq!(peer.get("default/peer/key", None).unwrap(), secret);

    // set-attestation-policy --id: a named policy is stored and answered back.
    peer.must(
        peer.config(&[
            "set-attestation-policy",
            "--id",
            "peer-named",
            "--policy-file",
            trustee_policy.to_str().unwrap(),
        ]),
        "set-attestation-policy --id",
    );
    assert_eq!(
        kbs.admin(
            reqwest::Method::GET,
            "attestation-policy/peer-named",
            vec![]
        )
        .await,
        200
    );

    // delete-resource: the client that was just given it now finds nothing.
    peer.must(
        peer.config(&["delete-resource", "--path", "default/peer/key"]),
        "delete-resource",
    );
    let gone = peer.get("default/peer/key", None).unwrap_err();
    assert!(gone.to_lowercase().contains("not found"), "{gone}");
}
