//! TPM attestation through the whole KBS over TLS: a real swtpm quotes the
//! KBS's nonce through our attester, the KBS verifies it, the default policies
//! (no test policy!) release a resource to the registered initdata; without it,
//! or after a PCR changes, they refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use attester::kbs_client::KbsClientError;
use attester::tpm::swtpm::Swtpm;
use attester::tpm::{AkConfig, EsapiTpm, TpmAttester, TpmAttesterConfig, TpmDevice};
use attester::Attester;
use base64::Engine;
use common::{KbsProcess, POD_INIT_DATA};
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

    // The guest binds its initdata into PCR 8 first.
    let init = coco_jose::initdata::Initdata::parse(POD_INIT_DATA).unwrap();
    attester.bind_init_data(init.digest()).unwrap();

    // Provisioning: the operator records the AK, the PCRs of a good boot and the
    // pod's initdata.
    let provisioning = attester.evidence(&[0; 48]).unwrap();
    let ak_der = base64::engine::general_purpose::STANDARD
        .decode(provisioning["ak_public"].as_str().unwrap())
        .unwrap();
    let mut reference = serde_json::json!({
        "tpm_ak": [hex::encode(Sha256::digest(&ak_der))],
        coco_jose::initdata::REFERENCE_VALUE: [init.digest_hex()],
    });
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
        .client_with_init_data(attester.clone(), false, Some(POD_INIT_DATA))
        .get_resource("default/key/tpm")
        .await
        .unwrap();
    assert_eq!(got.as_slice(), b"tpm-secret");
    // The same guest without its initdata sent: nothing pins the pod's policy.
    let err = kbs
        .client(attester.clone(), false)
        .get_resource("default/key/tpm")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KbsClientError::Refused { status: 401, kind, .. } if kind == "PolicyDeny"),
        "{err}"
    );

    // Something is measured after the reference values were registered.
    device
        .extend_pcr(5, &Sha256::digest(b"rootkit").into())
        .unwrap();
    let err = kbs
        .client_with_init_data(attester, false, Some(POD_INIT_DATA))
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
