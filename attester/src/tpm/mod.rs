//! TPM 2.0 attester: a quote over the SHA-256 PCR bank, signed by a restricted
//! attestation key (AK), bound to the session by its qualifying data.
//!
//! The TPM is reached through [`TpmDevice`]: [`EsapiTpm`] is the real one (tss-esapi,
//! any TCTI: the kernel resource manager or a `swtpm`), tests use a software
//! double. Evidence is the JSON shape Trustee's TPM verifier reads:
//! `{"ak_public", "tpm_quote": {"message", "signature", "pcrs"}}`, plus
//! `ak_tpm_public` (the AK's `TPMT_PUBLIC`, so a verifier can check the AK is a
//! restricted fixedTPM key and is the quote's signer) and `eventlog` when the
//! firmware left one.

mod esapi;
#[cfg(any(test, feature = "swtpm"))]
pub mod swtpm;
#[cfg(test)]
mod swtpm_tests;
#[cfg(test)]
mod tests;

pub use esapi::{AkAlgorithm, AkConfig, AkHierarchy, EsapiTpm};

use crate::{Attester, AttesterError};
use base64::Engine;
use kbs_types::Tee;
use sha2::{Digest, Sha256};
use std::fmt::Debug;
use std::io::Read;
use std::path::PathBuf;

/// The PCR the initdata digest is extended into (SHA-256 bank).
pub const INITDATA_PCR: u8 = 8;
/// Where Linux exposes the firmware's TCG event log.
pub const DEFAULT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Default TCTI: the kernel's TPM resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Event logs are a few hundred KiB at most; refuse to ship anything absurd.
const MAX_EVENT_LOG: u64 = 16 << 20;
/// Quote attempts when PCRs keep changing under us.
const QUOTE_ATTEMPTS: usize = 3;

/// A TPM failure, with the TSS's own message.
#[derive(Debug, thiserror::Error)]
#[error("TPM {op}: {reason}")]
pub struct TpmDeviceError {
    pub op: &'static str,
    pub reason: String,
}

impl TpmDeviceError {
    pub fn new(op: &'static str, reason: impl ToString) -> Self {
        Self {
            op,
            reason: reason.to_string(),
        }
    }
}

/// A quote as the TPM returned it, with the AK that signed it.
#[derive(Debug, Clone)]
pub struct RawQuote {
    /// Marshalled `TPMS_ATTEST`: the signed bytes.
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// `pcrDigest` from the attest structure.
    pub pcr_digest: Vec<u8>,
    /// AK public key as DER `SubjectPublicKeyInfo`.
    pub ak_spki_der: Vec<u8>,
    /// AK as marshalled `TPMT_PUBLIC`.
    pub ak_tpm_public: Vec<u8>,
    /// Qualified name of the AK's parent (a hierarchy handle for a primary AK),
    /// when known. The quote names its signer by qualified name, so a verifier
    /// needs this to tie `ak_tpm_public` to the quote.
    pub ak_parent_qualified_name: Option<Vec<u8>>,
}

/// The TPM operations the attester needs.
pub trait TpmDevice: Send + Sync + Debug {
    /// Quote the SHA-256 PCRs `pcrs` (ascending) with `qualifying_data`.
    fn quote(&self, qualifying_data: &[u8], pcrs: &[u8]) -> Result<RawQuote, TpmDeviceError>;
    /// Read SHA-256 PCR values, in the order of `pcrs` (ascending).
    fn read_pcrs(&self, pcrs: &[u8]) -> Result<Vec<[u8; 32]>, TpmDeviceError>;
    /// Extend a SHA-256 PCR with a digest.
    fn extend_pcr(&self, pcr: u8, digest: &[u8; 32]) -> Result<(), TpmDeviceError>;
}

/// How the 48-byte report_data becomes the quote's qualifying data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QualifyingData {
    /// Its first 32 bytes. Every TPM accepts 32 bytes; our KBS expects this.
    #[default]
    First32,
    /// All 48 bytes zero-padded to 64, as Trustee's attester and verifier do.
    /// Needs a TPM whose TPM2B_DATA holds 64 bytes (one that implements SHA-512).
    Padded64,
}

/// Attester settings.
#[derive(Debug, Clone)]
pub struct TpmAttesterConfig {
    /// SHA-256 PCRs to quote (default 0–15). PCR 8 must be among them for
    /// initdata to be verifiable.
    pub pcrs: Vec<u8>,
    /// Event log to attach when the file exists.
    pub event_log: Option<PathBuf>,
    pub qualifying_data: QualifyingData,
}

impl Default for TpmAttesterConfig {
    fn default() -> Self {
        Self {
            pcrs: (0..16).collect(),
            event_log: Some(PathBuf::from(DEFAULT_EVENT_LOG)),
            qualifying_data: QualifyingData::default(),
        }
    }
}

/// The TPM attester.
#[derive(Debug)]
pub struct TpmAttester {
    device: Box<dyn TpmDevice>,
    pcrs: Vec<u8>,
    event_log: Option<PathBuf>,
    qualifying_data: QualifyingData,
}

fn collect_err(reason: impl ToString) -> AttesterError {
    AttesterError::Collect {
        tee: "tpm",
        reason: reason.to_string(),
    }
}

/// The 32 bytes extended into PCR 8 for an initdata digest: zero-padded or
/// truncated to the SHA-256 bank's size (the KBS verifier uses the same rule).
pub fn initdata_extend_value(digest: &[u8]) -> [u8; 32] {
    coco_jose::binding::init_data_register::<32>(digest)
}

/// SHA-256 PCR extend: `new = SHA-256(old ‖ value)`.
pub fn extend_sha256(old: &[u8; 32], value: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(value);
    h.finalize().into()
}

impl TpmAttester {
    pub fn new(
        device: Box<dyn TpmDevice>,
        config: TpmAttesterConfig,
    ) -> Result<Self, AttesterError> {
        let mut pcrs = config.pcrs;
        pcrs.sort_unstable();
        pcrs.dedup();
        if pcrs.is_empty() || pcrs.iter().any(|p| *p > 23) {
            return Err(collect_err(format!(
                "PCR selection {pcrs:?} must be non-empty and within 0..=23"
            )));
        }
        Ok(Self {
            device,
            pcrs,
            event_log: config.event_log,
            qualifying_data: config.qualifying_data,
        })
    }

    /// The real TPM through tss-esapi with the given TCTI (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=N`).
    pub fn with_tcti(
        tcti: &str,
        ak: AkConfig,
        config: TpmAttesterConfig,
    ) -> Result<Self, AttesterError> {
        let device = EsapiTpm::new(tcti, ak).map_err(collect_err)?;
        Self::new(Box::new(device), config)
    }

    fn read_event_log(&self) -> Result<Option<Vec<u8>>, AttesterError> {
        let Some(path) = &self.event_log else {
            return Ok(None);
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(collect_err(format!("event log {}: {e}", path.display()))),
        };
        let mut buf = Vec::new();
        file.take(MAX_EVENT_LOG + 1)
            .read_to_end(&mut buf)
            .map_err(|e| collect_err(format!("event log {}: {e}", path.display())))?;
        if buf.len() as u64 > MAX_EVENT_LOG {
            return Err(collect_err(format!(
                "event log {} is larger than {MAX_EVENT_LOG} bytes",
                path.display()
            )));
        }
        Ok(Some(buf))
    }

    /// Quote, then read the PCRs and keep them only if they hash to the quoted
    /// digest: TPM2_Quote does not return PCR values, and a PCR extended between
    /// the two calls would make the evidence inconsistent.
    fn consistent_quote(
        &self,
        qualifying: &[u8],
    ) -> Result<(RawQuote, Vec<[u8; 32]>), AttesterError> {
        for attempt in 1..=QUOTE_ATTEMPTS {
            let quote = self
                .device
                .quote(qualifying, &self.pcrs)
                .map_err(collect_err)?;
            let values = self.device.read_pcrs(&self.pcrs).map_err(collect_err)?;
            let mut h = Sha256::new();
            values.iter().for_each(|v| h.update(v));
            if h.finalize().as_slice() == quote.pcr_digest.as_slice() {
                return Ok((quote, values));
            }
            tracing::warn!(attempt, "PCRs changed while quoting; quoting again");
        }
        Err(collect_err(format!(
            "PCRs kept changing during {QUOTE_ATTEMPTS} quote attempts"
        )))
    }
}

/// Build the evidence JSON from a quote, its PCR values and an event log.
pub fn assemble_evidence(
    quote: &RawQuote,
    pcr_values: &[[u8; 32]],
    event_log: Option<&[u8]>,
) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ev = serde_json::json!({
        "ak_public": b64.encode(&quote.ak_spki_der),
        "tpm_quote": {
            "message": b64.encode(&quote.attest),
            "signature": b64.encode(&quote.signature),
            "pcrs": pcr_values.iter().map(hex::encode).collect::<Vec<_>>(),
        },
    });
    if let Some(parent) = &quote.ak_parent_qualified_name {
        ev["ak_tpm_public"] = b64.encode(&quote.ak_tpm_public).into();
        ev["ak_parent_qualified_name"] = b64.encode(parent).into();
    }
    if let Some(log) = event_log {
        ev["eventlog"] = serde_json::Value::String(b64.encode(log));
    }
    ev
}

impl Attester for TpmAttester {
    fn tee(&self) -> Tee {
        Tee::Tpm
    }

    fn evidence(&self, report_data: &[u8; 48]) -> Result<serde_json::Value, AttesterError> {
        // TPM2B_DATA is sized by the TPM's largest hash: 32 bytes always fit,
        // 64 only on TPMs with SHA-512.
        let mut padded = [0u8; 64];
        padded[..48].copy_from_slice(report_data);
        let qualifying = match self.qualifying_data {
            QualifyingData::First32 => &report_data[..32],
            QualifyingData::Padded64 => &padded[..],
        };
        let (quote, values) = self.consistent_quote(qualifying)?;
        let log = self.read_event_log()?;
        Ok(assemble_evidence(&quote, &values, log.as_deref()))
    }

    /// Extend PCR 8 with the initdata digest, once: a PCR 8 that already holds
    /// exactly this digest (the attester restarted) is accepted, any other
    /// non-zero value means something else was bound and the attester must stop.
    fn bind_init_data(&self, digest: &[u8]) -> Result<(), AttesterError> {
        let value = initdata_extend_value(digest);
        let want = extend_sha256(&[0u8; 32], &value);
        let read_pcr8 = || -> Result<[u8; 32], AttesterError> {
            let v = self
                .device
                .read_pcrs(&[INITDATA_PCR])
                .map_err(collect_err)?;
            v.first()
                .copied()
                .ok_or_else(|| collect_err("PCR 8 read returned nothing"))
        };
        let current = read_pcr8()?;
        if current == want {
            tracing::info!("initdata already bound into PCR 8");
            return Ok(());
        }
        let mismatch = |found: [u8; 32]| AttesterError::InitDataMismatch {
            expected: hex::encode(want),
            found: format!("PCR 8 = {}", hex::encode(found)),
        };
        if current != [0u8; 32] {
            return Err(mismatch(current));
        }
        self.device
            .extend_pcr(INITDATA_PCR, &value)
            .map_err(collect_err)?;
        let after = read_pcr8()?;
        if after != want {
            // Someone else extended PCR 8 at the same time.
            return Err(mismatch(after));
        }
        tracing::info!(pcr8 = %hex::encode(after), "initdata bound into PCR 8");
        Ok(())
    }
}
