//! Attestation inputs the relying party prepares for a vTPM pod: the node's TPM
//! enrolled on the host (its attestation key), and reference values computed from
//! the guest artifacts and the pod's initdata.

use std::path::Path;

use attester::tpm::{extend_sha256, initdata_extend_value};
use base64::Engine;
use coco_image::measure::{self, authenticode, MeasureConfig};
use sha2::Digest;

use crate::guest::Guest;
use crate::pod::PodVm;
use crate::VmError;

/// Enrolls a TPM as an operator records a node's vTPM: a fresh swtpm whose
/// attestation key (a primary key, so the guest derives the same one from the same
/// seeds) is read out; its state is saved to `state` for the VM. Returns the AK
/// reference value (hex SHA-256 of its SubjectPublicKeyInfo).
pub fn enroll_tpm(state: &Path) -> Result<String, VmError> {
    use attester::tpm::{swtpm::Swtpm, AkConfig, TpmAttester, TpmAttesterConfig};
    use attester::Attester;
    let err = |e: &dyn std::fmt::Display| VmError::Config(format!("TPM enrollment: {e}"));
    let tpm = Swtpm::start().map_err(|e| err(&e))?;
    let ak = {
        let a = TpmAttester::with_tcti(
            &tpm.tcti(),
            AkConfig::default(),
            TpmAttesterConfig {
                event_log: None,
                ..Default::default()
            },
        )
        .map_err(|e| err(&e))?;
        let ev = a.evidence(&[0; 48]).map_err(|e| err(&e))?;
        let b64 = ev["ak_public"].as_str().unwrap_or_default().to_string();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| err(&e))?
    };
    tpm.save_state(state).map_err(|e| err(&e))?;
    Ok(hex::encode(sha2::Sha256::digest(ak)))
}

/// PCR 8 after the guest's attester binds `initdata_toml` (digest truncated to the
/// SHA-256 bank, extended once from zero).
pub fn pcr8_for(initdata_toml: &str) -> Result<String, VmError> {
    let doc = coco_image::initdata::Initdata::parse(initdata_toml)
        .map_err(|e| VmError::Config(format!("initdata: {e}")))?;
    Ok(hex::encode(extend_sha256(
        &[0; 32],
        &initdata_extend_value(doc.digest()),
    )))
}

/// The KBS reference values for `pod` on `guest`: AK, PCR 4 (kernel) and 9 (initrd +
/// cmdline) of an OVMF direct boot, PCR 8 (initdata) and the initdata's digest as
/// the only registered one (`init_data_digest`).
pub fn tpm_reference_values(
    guest: &Guest,
    pod: &PodVm,
    ak: &str,
) -> Result<serde_json::Value, VmError> {
    let rv = measure::reference_values(
        &guest.kernel,
        &guest.initrd,
        &pod.cmdline(guest),
        &MeasureConfig {
            tpm: true,
            direct_boot: authenticode::DirectBoot {
                machine: authenticode::Machine::Pc,
                ram_mib: u64::from(pod.memory_mib),
            },
            ..Default::default()
        },
    )
    .map_err(|e| VmError::Config(format!("measuring the guest: {e}")))?;
    Ok(serde_json::json!({
        "tpm_ak": [ak],
        "tpm_pcr04": rv[measure::TPM_PCR04],
        "tpm_pcr09": rv[measure::TPM_PCR09],
        "tpm_pcr08": [pcr8_for(&pod.initdata_toml)?],
        coco_jose::initdata::REFERENCE_VALUE: [coco_image::initdata::Initdata::parse(&pod.initdata_toml)
            .map_err(|e| VmError::Config(format!("initdata: {e}")))?
            .digest_hex()],
    }))
}
