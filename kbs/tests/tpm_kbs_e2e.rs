//! TPM attestation through the whole KBS over TLS: a real swtpm quotes the
//! KBS's nonce through our attester, the KBS verifies it, the default policies
//! (no test policy!) release a resource; after a PCR changes, they refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use attester::kbs_client::KbsClientError;
use attester::tpm::swtpm::Swtpm;
use attester::tpm::{AkConfig, EsapiTpm, TpmAttester, TpmAttesterConfig, TpmDevice};
use attester::Attester;
use base64::Engine;
use common::KbsProcess;
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swtpm_guest_gets_a_resource_until_a_pcr_changes() {
    let tpm = Swtpm::start().unwrap();
    let device = EsapiTpm::new(&tpm.tcti(), AkConfig::default()).unwrap();
    device
        .extend_pcr(4, &Sha256::digest(b"kernel").into())
        .unwrap();
    let attester = Arc::new(
        TpmAttester::with_tcti(
            &tpm.tcti(),
            AkConfig::default(),
            TpmAttesterConfig {
                event_log: None,
                ..Default::default()
            },
        )
        .unwrap(),
    );

    // Provisioning: the operator records the AK and the PCRs of a good boot.
    let provisioning = attester.evidence(&[0; 48]).unwrap();
    let ak_der = base64::engine::general_purpose::STANDARD
        .decode(provisioning["ak_public"].as_str().unwrap())
        .unwrap();
    let mut reference = serde_json::json!({ "tpm_ak": [hex::encode(Sha256::digest(&ak_der))] });
    let pcr_list: Vec<u8> = (0..16).collect();
    for (i, v) in pcr_list.iter().zip(device.read_pcrs(&pcr_list).unwrap()) {
        reference[format!("tpm_pcr{i:02}")] = serde_json::json!([hex::encode(v)]);
    }

    let kbs = KbsProcess::start("");
    kbs.set_resource("default/key/tpm", b"tpm-secret").await;
    let status = kbs
        .admin(
            reqwest::Method::POST,
            "reference-value",
            reference.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, 200);

    let got = kbs
        .client(attester.clone(), false)
        .get_resource("default/key/tpm")
        .await
        .unwrap();
    assert_eq!(got.as_slice(), b"tpm-secret");

    // Something is measured after the reference values were registered.
    device
        .extend_pcr(5, &Sha256::digest(b"rootkit").into())
        .unwrap();
    let err = kbs
        .client(attester, false)
        .get_resource("default/key/tpm")
        .await
        .unwrap_err();
    match err {
        KbsClientError::Refused { status, kind, .. } => {
            assert_eq!((status, kind.as_str()), (401, "PolicyDeny"));
        }
        other => panic!("expected a policy denial, got {other}"),
    }
}
