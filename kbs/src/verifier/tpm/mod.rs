//! TPM 2.0 quote verifier, pure Rust (RustCrypto), no TSS on the KBS side.
//!
//! Evidence is the JSON Trustee's TPM verifier takes (see [`TpmEvidence`]): the
//! AK public key, a `TPMS_ATTEST` quote message, its `TPMT_SIGNATURE` and the
//! SHA-256 PCR values the quote covers. The verifier checks the signature with
//! the AK, the session binding (`extraData`), the PCR values against the signed
//! PCR digest and, when initdata was sent, PCR 8. It does **not** decide whether
//! the AK or the PCR values are trustworthy: the attestation policy compares the
//! claims ([`TpmClaims`]) with reference values.

mod ak;
pub mod eventlog;
pub mod wire;

pub use ak::AkKey;

use super::{Expected, TeeClaims, Verifier, VerifierError};
use base64::Engine;
use kbs_types::Tee;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The PCR that carries the initdata digest.
pub const INITDATA_PCR: u8 = 8;

/// TPM evidence, as guest-components' TPM attester and ours send it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TpmEvidence {
    /// Standard base64 of the AK public key as DER `SubjectPublicKeyInfo`.
    pub ak_public: String,
    pub tpm_quote: TpmQuote,
    /// Standard base64 of the AK's marshalled `TPMT_PUBLIC` (our attester adds it;
    /// Trustee's does not). When present the AK's template is checked: restricted
    /// signing key, fixedTPM, and the TPM's name for the quote's signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak_tpm_public: Option<String>,
    /// Standard base64 of the qualified name of the AK's parent (for a primary
    /// key: its hierarchy handle). Needed with `ak_tpm_public`, because the quote
    /// names its signer by qualified name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak_parent_qualified_name: Option<String>,
    /// Standard base64 of the TCG firmware event log, if the guest has one. Its
    /// SHA-256 digests are replayed and must reproduce the quoted PCRs they touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventlog: Option<String>,
}

/// The quote itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TpmQuote {
    /// Standard base64 of the marshalled `TPMT_SIGNATURE`.
    pub signature: String,
    /// Standard base64 of the marshalled `TPMS_ATTEST` (the signed bytes).
    pub message: String,
    /// Hex of the SHA-256 PCR values, in the order the quote selects them.
    pub pcrs: Vec<String>,
}

/// Claims of verified TPM evidence (the policy's `input.claims`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TpmClaims {
    /// SHA-256 bank PCR values the quote covers: two-digit PCR index ("00".."23")
    /// → lowercase hex. Matches the reference value names `tpm_pcrNN`.
    pub pcrs: BTreeMap<String, String>,
    /// Lowercase hex SHA-256 of the AK's DER `SubjectPublicKeyInfo` (Trustee hashes
    /// AKs the same way). Trusted only if a reference value `tpm_ak` lists it.
    pub ak_public: String,
    /// AK algorithm: `rsa2048`, `ecc-nist-p256`, ...
    pub ak_algorithm: String,
    /// True when the AK's TPM template was checked: a restricted, fixedTPM signing
    /// key whose TPM qualified name is the quote's `qualifiedSigner`.
    pub ak_template_checked: bool,
    /// Hierarchy the AK is a primary key of (`endorsement`, `owner`, ...), when
    /// the template was checked and the AK is a primary key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ak_hierarchy: Option<String>,
    /// Hex of the quote's `qualifiedSigner` (TPM qualified name of the AK).
    pub qualified_signer: String,
    /// Hex of the quote's `extraData` (the verified session binding).
    pub report_data: String,
    /// TPM clock, milliseconds the TPM has been powered (`TPMS_CLOCK_INFO.clock`).
    pub clock: u64,
    /// TPM resets (power cycles) since the clear: changes on every reboot.
    pub reset_count: u32,
    /// TPM restarts (hibernate resumes) since the last reset.
    pub restart_count: u32,
    /// Whether the clock has not gone backwards (`safe`).
    pub clock_safe: bool,
    /// Hex of the 64-bit vendor firmware version.
    pub firmware_version: String,
    /// Hex of the initdata digest found in PCR 8, when initdata was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_data: Option<String>,
    /// True when an initdata digest was sent and PCR 8 holds exactly its extension.
    pub init_data_bound: bool,
    /// The firmware event log, when the evidence carried one (already replayed
    /// against the quoted PCRs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_log: Option<EventLogClaims>,
}

/// What the replayed event log established.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventLogClaims {
    /// Number of events after the Spec ID header.
    pub events: usize,
    /// Quoted PCRs ("00".."23") whose value the log reproduces.
    pub replayed_pcrs: Vec<String>,
}

/// Why TPM evidence was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("TPM evidence is not JSON of the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("TPM evidence field `{field}` is not valid {encoding}")]
    Encoding {
        field: &'static str,
        encoding: &'static str,
    },
    #[error("{what} truncated at offset {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("{what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("quote magic is {0:#010x}, not TPM_GENERATED_VALUE: the TPM did not make it")]
    BadMagic(u32),
    #[error("attestation structure type {0:#06x} is not a quote")]
    NotAQuote(u16),
    #[error("AK public key: {0}")]
    AkPublic(String),
    #[error("signature algorithm {0:#06x} is not supported (RSASSA, ECDSA only)")]
    UnsupportedSignature(u16),
    #[error("hash algorithm {0:#06x} is not supported here")]
    UnsupportedHash(u16),
    #[error("a {signature} signature cannot come from a {key} AK")]
    SignatureKeyMismatch {
        key: String,
        signature: &'static str,
    },
    #[error("quote signature does not verify with the AK (another key or a damaged signature)")]
    BadSignature,
    #[error("quote body was altered after the AK signed it")]
    QuoteAltered,
    #[error("the AK's TPM template holds another key than ak_public")]
    AkTemplateMismatch,
    #[error("the AK is not a restricted fixedTPM signing key (attributes {0:#010x})")]
    AkNotRestrictedSigning(u32),
    #[error("the quote was signed by TPM object {quote}, not by the AK ({ak})")]
    SignerNameMismatch { quote: String, ak: String },
    #[error("AK template required by configuration but missing from the evidence")]
    AkTemplateMissing,
    #[error("quote selects PCR bank {0:#06x}; only the SHA-256 bank is verified")]
    UnsupportedPcrBank(u16),
    #[error("quote selects {selected} PCRs but the evidence carries {given} values")]
    PcrCount { selected: usize, given: usize },
    #[error("the PCR values do not hash to the quote's signed PCR digest")]
    PcrDigestMismatch,
    #[error("initdata was sent but the quote does not cover PCR 8")]
    InitDataPcrNotQuoted,
    #[error("event log: {0}")]
    EventLog(String),
    #[error("replaying the event log gives another PCR {pcr} than the quote's")]
    EventLogMismatch { pcr: u32 },
}

/// `[verifiers.tpm]` in kbs.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// Accept `tpm` evidence at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Reject evidence without the AK's `TPMT_PUBLIC` (`ak_tpm_public`). Off by
    /// default because Trustee's attester does not send it.
    #[serde(default)]
    pub require_ak_template: bool,
}

impl Default for TpmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            require_ak_template: false,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The value of a SHA-256 PCR that started at zero and was extended once with
/// `digest`, which is zero-padded or truncated to 32 bytes first (the same rule
/// as SNP `HOST_DATA`; the attester extends PCR 8 with exactly these bytes).
pub fn pcr_after_single_extend(digest: &[u8]) -> [u8; 32] {
    let mut input = [0u8; 64];
    input[32..].copy_from_slice(&coco_jose::binding::init_data_register::<32>(digest));
    Sha256::digest(input).into()
}

#[derive(Debug, Clone, Default)]
pub struct TpmVerifier {
    config: TpmConfig,
}

impl TpmVerifier {
    pub fn new(config: TpmConfig) -> Self {
        Self { config }
    }

    /// Verify typed evidence; [`Verifier::verify`] is this after JSON decoding.
    pub fn verify_evidence(
        &self,
        ev: &TpmEvidence,
        expected: &Expected<'_>,
    ) -> Result<TpmClaims, VerifierError> {
        let (mut claims, extra) = self.check_quote(ev)?;
        if !report_data_matches(&extra, expected) {
            tracing::debug!(quote = %claims.report_data, "TPM extraData is not this session's");
            return Err(VerifierError::ReportDataMismatch);
        }
        if let Some(digest) = expected.init_data_digest {
            let pcr8 = claims
                .pcrs
                .get(&format!("{INITDATA_PCR:02}"))
                .ok_or(TpmError::InitDataPcrNotQuoted)?;
            if *pcr8 != hex::encode(pcr_after_single_extend(digest)) {
                tracing::debug!(%pcr8, "PCR 8 does not hold the initdata digest");
                return Err(VerifierError::InitDataMismatch);
            }
            claims.init_data = Some(hex::encode(digest));
            claims.init_data_bound = true;
        }
        Ok(claims)
    }

    /// Authenticity and internal consistency of the quote; no session binding.
    /// Returns the claims and the quote's `extraData`.
    fn check_quote(&self, ev: &TpmEvidence) -> Result<(TpmClaims, Vec<u8>), TpmError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |field: &'static str, s: &str| {
            b64.decode(s.trim()).map_err(|_| TpmError::Encoding {
                field,
                encoding: "base64",
            })
        };
        let ak_der = decode("ak_public", &ev.ak_public)?;
        let message = decode("tpm_quote.message", &ev.tpm_quote.message)?;
        let sig_bytes = decode("tpm_quote.signature", &ev.tpm_quote.signature)?;
        let pcr_values = ev
            .tpm_quote
            .pcrs
            .iter()
            .map(|p| {
                hex::decode(p.trim())
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or(TpmError::Encoding {
                        field: "tpm_quote.pcrs",
                        encoding: "hex of 32 bytes",
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let ak = AkKey::from_spki_der(&ak_der)?;
        let signature = wire::parse_signature(&sig_bytes)?;
        let attest = wire::parse_quote_attest(&message)?;

        // The AK template is checked before the signature so that a swapped AK is
        // reported as such, not as a bad signature.
        let (ak_template_checked, ak_hierarchy) =
            match (&ev.ak_tpm_public, &ev.ak_parent_qualified_name) {
                (Some(t), Some(p)) => {
                    let t = decode("ak_tpm_public", t)?;
                    let p = decode("ak_parent_qualified_name", p)?;
                    let h = ak::check_template(&ak, &t, &p, &attest.qualified_signer)?;
                    (true, h.map(str::to_string))
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(TpmError::Malformed {
                        what: "TPM evidence",
                        reason: "ak_tpm_public and ak_parent_qualified_name go together".into(),
                    })
                }
                (None, None) if self.config.require_ak_template => {
                    return Err(TpmError::AkTemplateMissing)
                }
                (None, None) => (false, None),
            };
        ak::verify_signature(&ak, &message, &signature)?;

        // From here on the quote body is authentic.
        let mut pcrs = BTreeMap::new();
        let mut hasher = Sha256::new();
        let selected: Vec<u8> = attest
            .selections
            .iter()
            .map(|s| {
                if s.hash == wire::TPM_ALG_SHA256 || s.pcrs.is_empty() {
                    Ok(s.pcrs.iter().copied())
                } else {
                    Err(TpmError::UnsupportedPcrBank(s.hash))
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        if selected.len() != pcr_values.len() {
            return Err(TpmError::PcrCount {
                selected: selected.len(),
                given: pcr_values.len(),
            });
        }
        for (index, value) in selected.iter().zip(&pcr_values) {
            hasher.update(value);
            pcrs.insert(format!("{index:02}"), hex::encode(value));
        }
        if hasher.finalize().as_slice() != attest.pcr_digest.as_slice() {
            return Err(TpmError::PcrDigestMismatch);
        }
        let event_log = match &ev.eventlog {
            Some(log) => Some(check_event_log(
                &decode("eventlog", log)?,
                &selected,
                &pcr_values,
            )?),
            None => None,
        };
        let claims = TpmClaims {
            pcrs,
            ak_public: hex::encode(Sha256::digest(&ak_der)),
            ak_algorithm: ak.algorithm(),
            ak_template_checked,
            ak_hierarchy,
            qualified_signer: hex::encode(&attest.qualified_signer),
            report_data: hex::encode(&attest.extra_data),
            clock: attest.clock.clock,
            reset_count: attest.clock.reset_count,
            restart_count: attest.clock.restart_count,
            clock_safe: attest.clock.safe,
            firmware_version: format!("{:016x}", attest.firmware_version),
            init_data: None,
            init_data_bound: false,
            event_log,
        };
        Ok((claims, attest.extra_data))
    }
}

/// Replay the log and compare every PCR it extends that the quote covers. PCRs
/// the log extends but the quote does not cover cannot be checked and are not
/// reported as replayed.
fn check_event_log(
    raw: &[u8],
    selected: &[u8],
    values: &[[u8; 32]],
) -> Result<EventLogClaims, TpmError> {
    let log = eventlog::parse(raw)?;
    let replayed = log.replay_sha256()?;
    let mut replayed_pcrs = Vec::new();
    for (pcr, value) in &replayed {
        let quoted = selected
            .iter()
            .position(|s| u32::from(*s) == *pcr)
            .map(|i| &values[i]);
        match quoted {
            Some(q) if q == value => replayed_pcrs.push(format!("{pcr:02}")),
            Some(_) => return Err(TpmError::EventLogMismatch { pcr: *pcr }),
            None => {}
        }
    }
    Ok(EventLogClaims {
        events: log.events.len(),
        replayed_pcrs,
    })
}

/// Whether the quote's `extraData` is this session's report_data: the first 32
/// bytes (our attester; fits every TPM's TPM2B_DATA) or all 48 bytes zero-padded
/// to 64 (Trustee's attester; needs a TPM with SHA-512-sized TPM2B_DATA).
fn report_data_matches(extra_data: &[u8], expected: &Expected<'_>) -> bool {
    extra_data == expected.report_data_32().as_slice()
        || extra_data == expected.report_data_64().as_slice()
}

impl Verifier for TpmVerifier {
    fn tee(&self) -> Tee {
        Tee::Tpm
    }

    fn verify(
        &self,
        evidence: &serde_json::Value,
        expected: &Expected<'_>,
    ) -> Result<TeeClaims, VerifierError> {
        let ev = TpmEvidence::deserialize(evidence).map_err(TpmError::from)?;
        Ok(TeeClaims::Tpm(self.verify_evidence(&ev, expected)?))
    }
}

#[cfg(test)]
mod tests;
