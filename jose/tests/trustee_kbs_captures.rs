//! Conformance against Trustee's own programs, from captures (no peer needed): whole
//! `get-resource` exchanges between Trustee's kbs-client and Trustee's KBS (both 78962cd),
//! one per TEE key kind, with the TEE private key the client was given
//! (`kbs/testdata/peers/trustee-kbs/`, see its README). They show that
//! - our binding computes the `report_data` Trustee's client put into its sample
//!   evidence, for P-256, P-521 and RSA `tee-pubkey` JWKs alike;
//! - our JWE code opens the resource Trustee's KBS sealed to each key kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use coco_jose::binding::runtime_data_hash;
use coco_jose::jwe::{decrypt, FlattenedJwe};
use coco_jose::keys::TeeKeyPair;
use kbs_types::TeePubKey;
use serde_json::Value;

const CAPTURES: [(&str, &str); 3] = [
    (
        "p256",
        include_str!("../../kbs/testdata/peers/trustee-kbs/get-resource-p256.json"),
    ),
    (
        "p521",
        include_str!("../../kbs/testdata/peers/trustee-kbs/get-resource-p521.json"),
    ),
    (
        "rsa",
        include_str!("../../kbs/testdata/peers/trustee-kbs/get-resource-rsa.json"),
    ),
];

fn unb64u(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn private_key(jwk: &Value) -> TeeKeyPair {
    let f = |k: &str| unb64u(jwk[k].as_str().unwrap());
    match (jwk["kty"].as_str().unwrap(), jwk["crv"].as_str()) {
        ("EC", Some("P-256")) => TeeKeyPair::Ec(p256::SecretKey::from_slice(&f("d")).unwrap()),
        ("EC", Some("P-521")) => {
            TeeKeyPair::Ec521(Box::new(p521::SecretKey::from_slice(&f("d")).unwrap()))
        }
        ("RSA", _) => {
            let u = |k: &str| rsa::BoxedUint::from_be_slice_vartime(&f(k));
            TeeKeyPair::Rsa(Box::new(
                rsa::PrivateKey::from_p_q(u("p"), u("q"), u("e")).unwrap(),
            ))
        }
        other => panic!("unexpected key {other:?}"),
    }
}

fn exchange<'a>(cap: &'a Value, method: &str, path_end: &str, status: u64) -> &'a Value {
    cap["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["method"] == method
                && e["path"].as_str().unwrap().ends_with(path_end)
                && e["status"] == status
        })
        .unwrap_or_else(|| panic!("no {method} {path_end} {status}"))
}

#[test]
fn report_data_of_trustees_client_for_every_key_kind() {
    for (kind, text) in CAPTURES {
        let cap: Value = serde_json::from_str(text).unwrap();
        let att: Value = serde_json::from_str(
            exchange(&cap, "POST", "/attest", 200)["request_body"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let jwk: TeePubKey =
            serde_json::from_value(att["runtime-data"]["tee-pubkey"].clone()).unwrap();
        let nonce = att["runtime-data"]["nonce"].as_str().unwrap();
        let extra = att["tee-evidence"]["additional_evidence"].as_str().unwrap();
        let carried = base64::engine::general_purpose::STANDARD
            .decode(
                att["tee-evidence"]["primary_evidence"]["report_data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            runtime_data_hash(nonce, &jwk, extra).unwrap().to_vec(),
            carried,
            "{kind}"
        );
        // The key the client sent is the public half of the key it was given.
        let ours = private_key(&cap["tee_key_jwk"]).public_jwk();
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            att["runtime-data"]["tee-pubkey"],
            "{kind}"
        );
    }
}

#[test]
fn resources_sealed_by_trustees_kbs_open_for_every_key_kind() {
    for (kind, text) in CAPTURES {
        let cap: Value = serde_json::from_str(text).unwrap();
        let body = exchange(&cap, "GET", "/resource/default/peer/key", 200)["response_body"]
            .as_str()
            .unwrap();
        let jwe: FlattenedJwe = serde_json::from_str(body).unwrap();
        let key = private_key(&cap["tee_key_jwk"]);
        let plain = decrypt(&jwe, &key).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            &plain[..],
            cap["resource_plaintext"].as_str().unwrap().as_bytes(),
            "{kind}"
        );
        // A wrong key of the same kind must not open it.
        let wrong = match key {
            TeeKeyPair::Ec(_) => TeeKeyPair::generate_ec(),
            TeeKeyPair::Ec521(_) => TeeKeyPair::generate_ec521(),
            TeeKeyPair::Rsa(_) => TeeKeyPair::generate_rsa().unwrap(),
        };
        assert!(decrypt(&jwe, &wrong).is_err(), "{kind}");
    }
}
