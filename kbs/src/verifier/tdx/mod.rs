//! Intel TDX verifier (DCAP quotes v4 and v5, ECDSA-P256 attestation key).
//!
//! Checks: the PCK chain (from the quote) up to the built-in Intel SGX Root CA,
//! valid at the verification time and not revoked by the collateral's CRLs; the
//! QE report signed by the PCK key and binding the attestation key; the quote
//! signed by the attestation key; the TCB status from Intel's signed collateral
//! (TCB info for the PCK's FMSPC, TD QE identity), current at the verification
//! time; TD attributes (debug); `report_data` and `MRCONFIGID` bindings; the CC
//! event log replayed against the RTMRs.
//!
//! Not `dcap-qvl`: 0.7 requires both CRLs and issuer chains in every collateral
//! and reports failures as `anyhow` strings; an offline bundle of Intel's
//! tcbInfo/QE identity is enough here, and callers need typed reasons.

pub mod ccel;
mod claims;
pub mod collateral;
pub mod pck;
pub mod quote;

pub use claims::TdxClaims;
pub use collateral::{Collateral, PccsClient, TcbResult};
pub use quote::Quote;

use super::{Expected, TeeClaims, Verifier, VerifierError};
use base64::Engine;
use kbs_types::Tee;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use x509_cert::Certificate;

/// QE vendor ID of Intel's quoting enclaves.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

/// Why TDX evidence was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TdxError {
    #[error("malformed TDX evidence: {0}")]
    Malformed(String),
    #[error("TDX quote version {0} is not supported (4 and 5 are)")]
    UnsupportedVersion(u16),
    #[error("cannot parse certificate: {0}")]
    CertParse(String),
    #[error("PCK certificate chain does not lead to Intel's root: {0}")]
    PckChain(String),
    #[error("certificate {subject} is not valid at {at} (valid {not_before}..{not_after}, unix seconds)")]
    CertExpired {
        subject: String,
        not_before: i64,
        not_after: i64,
        at: i64,
    },
    #[error("certificate {0} is revoked")]
    CertRevoked(String),
    #[error("QE report is not signed by the PCK key: {0}")]
    QeReportSignature(String),
    #[error("QE report does not bind the attestation key")]
    QeReportBinding,
    #[error("quote signature does not verify with the attestation key: {0}")]
    QuoteSignature(String),
    #[error("no collateral: {0}")]
    CollateralMissing(String),
    #[error("collateral signature invalid: {0}")]
    CollateralSignature(String),
    #[error("{what} is not current at {at} (valid {from}..{until}, unix seconds)")]
    CollateralExpired {
        what: String,
        from: i64,
        until: i64,
        at: i64,
    },
    #[error("collateral is for FMSPC {collateral}, the PCK certificate says {quote}")]
    FmspcMismatch { quote: String, collateral: String },
    #[error("no TCB level in the collateral matches ({0})")]
    TcbLevelNotFound(String),
    #[error("the platform TCB is revoked")]
    TcbRevoked,
    #[error("quoting enclave or TDX module identity mismatch: {0}")]
    QeIdentityMismatch(String),
    #[error("the TD has the DEBUG attribute set")]
    DebugTd,
    #[error("CC event log: {0}")]
    EventLog(String),
    #[error("CC event log replay does not match RTMR{index}")]
    RtmrMismatch { index: usize },
    #[error("fetching collateral from the PCCS failed: {0}")]
    Pccs(String),
}

/// `[verifiers.tdx]` in kbs.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TdxConfig {
    /// Accept TDX evidence at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Offline collateral bundle: `tcbInfo.json` or `tcbInfo-<FMSPC>.json`,
    /// `enclaveIdentity.json`, optional `tcb_signing_chain.pem` and CRLs.
    #[serde(default)]
    pub collateral_dir: Option<PathBuf>,
    /// PCCS base URL (e.g. `https://pccs.example:8081/sgx/certification/v4` minus
    /// the `sgx/...` part). Unset: never fetch.
    #[serde(default)]
    pub pccs_url: Option<String>,
    /// Accept TDs with the DEBUG attribute. Never in production.
    #[serde(default)]
    pub allow_debug: bool,
    /// Refuse quotes whose TCB cannot be evaluated for lack of collateral.
    #[serde(default = "default_true")]
    pub require_collateral: bool,
}

impl Default for TdxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            collateral_dir: None,
            pccs_url: None,
            allow_debug: false,
            require_collateral: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// TDX evidence reduced to bytes.
#[derive(Debug, Clone)]
pub struct TdxEvidence {
    pub quote: Vec<u8>,
    pub cc_eventlog: Option<Vec<u8>>,
}

impl TdxEvidence {
    /// `{"quote": <base64>, "cc_eventlog": <base64>?}` (guest-components shape).
    pub fn from_json(v: &serde_json::Value) -> Result<Self, TdxError> {
        let b64 = |k: &str| -> Result<Option<Vec<u8>>, TdxError> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map(Some)
                    .map_err(|e| TdxError::Malformed(format!("{k}: {e}"))),
                Some(_) => Err(TdxError::Malformed(format!("{k} is not a base64 string"))),
            }
        };
        Ok(Self {
            quote: b64("quote")?.ok_or_else(|| TdxError::Malformed("no `quote`".into()))?,
            cc_eventlog: b64("cc_eventlog")?,
        })
    }

    /// A raw quote (starts with version 4 or 5) or the JSON shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TdxError> {
        if bytes.len() > 2 && matches!(bytes[..2], [4, 0] | [5, 0]) {
            return Ok(Self {
                quote: bytes.to_vec(),
                cc_eventlog: None,
            });
        }
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| TdxError::Malformed(format!("neither a quote nor JSON evidence: {e}")))?;
        Self::from_json(&v)
    }
}

/// Verify the QE report signature, its binding of the attestation key, and the
/// quote signature: the cryptographic core, without chain or collateral.
pub fn verify_quote_signatures(q: &Quote, pck_leaf: &Certificate) -> Result<(), TdxError> {
    let key = pck::spki_sec1(pck_leaf);
    let xy: [u8; 64] = key
        .get(1..65)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| TdxError::CertParse("PCK key is not P-256".into()))?;
    quote::verify_p256_raw(&xy, &q.qe_report.raw, &q.qe_report_signature)
        .map_err(TdxError::QeReportSignature)?;
    let mut h = Sha256::new();
    h.update(q.attestation_key);
    h.update(&q.qe_auth_data);
    let rd = q.qe_report.report_data();
    if rd[..32] != h.finalize()[..] || rd[32..].iter().any(|b| *b != 0) {
        return Err(TdxError::QeReportBinding);
    }
    quote::verify_quote_signature(q)
}

/// The TDX verifier.
#[derive(Debug)]
pub struct TdxVerifier {
    root: Certificate,
    config: TdxConfig,
    pccs: Option<Box<dyn PccsClient>>,
    /// Verified collateral per FMSPC: parsed and signature-checked once.
    cache: Mutex<HashMap<[u8; 6], Arc<Collateral>>>,
    /// SHA-256 of PCK chains (PEM) whose signatures verified up to the root;
    /// validity and revocation are still checked on every quote.
    verified_chains: Mutex<HashSet<[u8; 32]>>,
    at: Option<OffsetDateTime>,
}

/// Bound on remembered PCK chains (one per platform).
const MAX_VERIFIED_CHAINS: usize = 4096;

impl TdxVerifier {
    pub fn new(config: TdxConfig) -> Result<Self, TdxError> {
        Ok(Self {
            root: pck::intel_root()?,
            config,
            pccs: None,
            cache: Mutex::new(HashMap::new()),
            verified_chains: Mutex::new(HashSet::new()),
            at: None,
        })
    }

    pub fn with_pccs(mut self, client: Box<dyn PccsClient>) -> Self {
        self.pccs = Some(client);
        self
    }

    /// Verify as of `at` instead of now.
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }

    /// Use `c` for its FMSPC (e.g. collateral a caller already holds).
    pub fn add_collateral(&self, fmspc: [u8; 6], c: Collateral) {
        if let Ok(mut m) = self.cache.lock() {
            m.insert(fmspc, Arc::new(c));
        }
    }

    fn collateral(&self, fmspc: &[u8; 6]) -> Result<Option<Arc<Collateral>>, TdxError> {
        if let Some(c) = self.cache.lock().ok().and_then(|m| m.get(fmspc).cloned()) {
            return Ok(Some(c));
        }
        let mut found = None;
        if let Some(dir) = &self.config.collateral_dir {
            let c = Collateral::from_dir(dir, Some(fmspc))?;
            if hex::decode(c.fmspc()).ok().as_deref() == Some(&fmspc[..]) {
                found = Some(c);
            }
        }
        if found.is_none() {
            if let (Some(base), Some(client)) = (&self.config.pccs_url, &self.pccs) {
                let (tcb_url, qe_url) = collateral::pccs_urls(base, fmspc);
                tracing::info!(%tcb_url, "fetching TDX collateral from PCCS");
                let tcb = client.get(&tcb_url).map_err(TdxError::Pccs)?;
                let qe = client.get(&qe_url).map_err(TdxError::Pccs)?;
                found = Some(Collateral::from_parts(&tcb, &qe, None, &[])?);
            }
        }
        Ok(found.map(|c| {
            let c = Arc::new(c);
            if let Ok(mut m) = self.cache.lock() {
                m.insert(*fmspc, c.clone());
            }
            c
        }))
    }

    /// Verify evidence. `report_data`: the 64 bytes the quote must carry;
    /// `init_data_digest`: must be bound in MRCONFIGID (zero-padded to 48).
    pub fn verify_evidence(
        &self,
        ev: &TdxEvidence,
        report_data: Option<&[u8; 64]>,
        init_data_digest: Option<&[u8]>,
    ) -> Result<TdxClaims, VerifierError> {
        let at = self.at.unwrap_or_else(OffsetDateTime::now_utc);
        let q = Quote::parse(&ev.quote)?;
        let chain = pck::parse_pem_chain(&q.pck_chain_pem)?;
        let leaf_ext = pck::pck_extension(&chain[0])?;
        let chain_id: [u8; 32] = Sha256::digest(&q.pck_chain_pem).into();
        let known = self
            .verified_chains
            .lock()
            .map(|s| s.contains(&chain_id))
            .unwrap_or(false);
        let chain = pck::verify_chain_inner(&chain, &self.root, Some(at), !known)?;
        if !known {
            if let Ok(mut s) = self.verified_chains.lock() {
                if s.len() >= MAX_VERIFIED_CHAINS {
                    s.clear();
                }
                s.insert(chain_id);
            }
        }
        // Only a PCK certificate Intel issued may make us look up (or fetch)
        // collateral for its FMSPC.
        let coll = self.collateral(&leaf_ext.fmspc)?;
        if q.qe_vendor_id != INTEL_QE_VENDOR_ID {
            return Err(TdxError::QeIdentityMismatch(format!(
                "QE vendor {} is not Intel",
                hex::encode(q.qe_vendor_id)
            ))
            .into());
        }
        verify_quote_signatures(&q, &chain[0])?;

        let tcb = match &coll {
            Some(c) => {
                // CRLs are trusted only once verified: root CRL by the root, PCK
                // CRL by the (now verified) intermediate CA of this chain.
                let mut issuers: Vec<&Certificate> = chain.iter().skip(1).collect();
                issuers.push(&self.root);
                for crl in c.crls() {
                    pck::verify_crl(crl, &issuers, at)?;
                }
                pck::check_revocation(&chain, c.crls())?;
                c.check_current(&self.root, at)?;
                Some(c.evaluate(&q, &leaf_ext)?)
            }
            None if self.config.require_collateral => {
                return Err(TdxError::CollateralMissing(format!(
                    "none configured for FMSPC {}",
                    hex::encode_upper(leaf_ext.fmspc)
                ))
                .into())
            }
            None => None,
        };

        let r = &q.report;
        if r.td_attributes[0] & 1 != 0 && !self.config.allow_debug {
            return Err(TdxError::DebugTd.into());
        }
        if let Some(rd) = report_data {
            if rd != &r.report_data {
                return Err(VerifierError::ReportDataMismatch);
            }
        }
        if let Some(d) = init_data_digest {
            if coco_jose::binding::init_data_register::<48>(d) != r.mr_config_id {
                return Err(VerifierError::InitDataMismatch);
            }
        }
        let events = match &ev.cc_eventlog {
            Some(log) => {
                let events = ccel::parse(log)?;
                let replayed = ccel::replay(&events)?;
                // RTMR3 holds runtime measurements that are not in the firmware
                // log; compare it only when the log covers it.
                let has_rtmr3 = events.iter().any(|e| e.index == 4);
                for (index, (log, quoted)) in replayed.iter().zip(&r.rtmr).enumerate() {
                    if (index < 3 || has_rtmr3) && log != quoted {
                        return Err(TdxError::RtmrMismatch { index }.into());
                    }
                }
                Some(events)
            }
            None => None,
        };
        Ok(TdxClaims::new(
            &q,
            &leaf_ext,
            tcb,
            events,
            init_data_digest.is_some(),
        ))
    }
}

impl Verifier for TdxVerifier {
    fn tee(&self) -> Tee {
        Tee::Tdx
    }

    fn verify(
        &self,
        evidence: &serde_json::Value,
        expected: &Expected<'_>,
    ) -> Result<TeeClaims, VerifierError> {
        let ev = TdxEvidence::from_json(evidence)?;
        let claims = self.verify_evidence(
            &ev,
            Some(&expected.report_data_64()),
            expected.init_data_digest,
        )?;
        Ok(TeeClaims::Tdx(Box::new(claims)))
    }
}

#[cfg(test)]
mod tests;
