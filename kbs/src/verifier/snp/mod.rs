//! AMD SEV-SNP verifier.
//!
//! Checks, in this order: the endorsement key (VCEK or VLEK) chains to AMD's
//! built-in roots for the report's product and every certificate is valid at the
//! verification time; the report is signed by that key (ECDSA P-384 over the
//! first 0x2A0 bytes); the reported TCB equals the TCB the VCEK was issued for and
//! the chip id matches its hwID; the guest policy forbids debugging and migration
//! agents and the VMPL is allowed; `report_data` and `HOST_DATA` carry the
//! session's binding and the initdata digest.

pub mod certs;
mod claims;

pub use certs::{AmdRoots, EndorsementKey, Product, SigningKey};
pub use claims::{SnpClaims, SnpPolicy, SnpTcb};

use super::{Expected, TeeClaims, Verifier, VerifierError};
use base64::Engine;
use kbs_types::Tee;
use serde::{Deserialize, Serialize};
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::{CertTableEntry, CertType};
use sev::parser::ByteParser;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Mutex;
use time::OffsetDateTime;

/// Size of an SNP attestation report.
pub const REPORT_LEN: usize = 1184;
/// The report signature covers bytes 0..0x2A0.
pub const SIGNED_LEN: usize = 0x2a0;

/// Why SNP evidence was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    #[error("malformed SNP evidence: {0}")]
    Malformed(String),
    #[error("cannot parse certificate: {0}")]
    CertParse(String),
    #[error("no VCEK/VLEK for this report: not in the evidence, not in the cache{0}")]
    NoEndorsementKey(String),
    #[error("the report says it is not signed (MASK_CHIP_KEY or SIGNING_KEY=none)")]
    Unsigned,
    #[error("endorsement key does not chain to AMD's root ({}): {reason}", product.map(|p| p.to_string()).unwrap_or_else(|| "any product".into()))]
    ChainInvalid {
        product: Option<Product>,
        reason: String,
    },
    #[error(
        "{what} certificate is not valid at {at} (valid {not_before}..{not_after}, unix seconds)"
    )]
    CertExpired {
        what: String,
        not_before: i64,
        not_after: i64,
        at: i64,
    },
    #[error("report signature does not verify with the endorsement key: {0}")]
    ReportSignature(String),
    #[error("reported TCB {field}={report} differs from the VCEK's {cert}")]
    TcbMismatch {
        field: &'static str,
        report: u8,
        cert: String,
    },
    #[error("report CHIP_ID does not match the VCEK hwID")]
    ChipIdMismatch,
    #[error("guest policy allows debugging")]
    DebugAllowed,
    #[error("guest policy allows a migration agent")]
    MigrationAllowed,
    #[error("report was requested at VMPL {vmpl}, above the allowed {max}")]
    Vmpl { vmpl: u32, max: u32 },
    #[error("fetching the VCEK from AMD KDS failed: {0}")]
    Kds(String),
}

/// Gets a VCEK from AMD's Key Distribution Service. The KBS binary supplies an
/// HTTP implementation; the verifier only builds the URL (`certs::kds_vcek_url`).
pub trait KdsClient: Send + Sync + Debug {
    fn get(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// `[verifiers.snp]` in kbs.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnpConfig {
    /// Accept SNP evidence at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Directory of cached VCEKs named `<hwid hex>-<reported TCB as 16 hex digits>.der`
    /// (see [`cache_file_name`]); used when the evidence carries no VCEK.
    #[serde(default)]
    pub vcek_cache_dir: Option<PathBuf>,
    /// AMD KDS base URL (e.g. `https://kdsintf.amd.com`). Unset: never fetch.
    #[serde(default)]
    pub kds_url: Option<String>,
    /// Accept reports of guests whose policy allows debugging. Never in production.
    #[serde(default)]
    pub allow_debug: bool,
    /// Accept guests whose policy allows a migration agent.
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// Highest VMPL a report may be requested at (0 = only the most privileged).
    #[serde(default)]
    pub max_vmpl: u32,
}

impl Default for SnpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            vcek_cache_dir: None,
            kds_url: None,
            allow_debug: false,
            allow_migration_agent: false,
            max_vmpl: 0,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Evidence as the attester sends it, reduced to bytes.
#[derive(Debug, Clone)]
pub struct SnpEvidence {
    /// The raw 1184-byte report.
    pub report: Vec<u8>,
    /// DER of the VCEK or VLEK if the evidence carries one.
    pub endorsement_key: Option<Vec<u8>>,
}

impl SnpEvidence {
    /// Parse the guest-components JSON shape `{"attestation_report": <object as
    /// the sev crate serializes it, or base64 of the raw report>, "cert_chain":
    /// [{"cert_type": "VCEK", "data": [..]}]}`.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, SnpError> {
        let rep = v
            .get("attestation_report")
            .ok_or_else(|| SnpError::Malformed("no `attestation_report`".into()))?;
        let report = match rep {
            serde_json::Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| SnpError::Malformed(format!("attestation_report base64: {e}")))?,
            other => {
                let r: AttestationReport = serde_json::from_value(other.clone())
                    .map_err(|e| SnpError::Malformed(format!("attestation_report: {e}")))?;
                r.to_bytes()
                    .map_err(|e| SnpError::Malformed(format!("attestation_report: {e}")))?
                    .to_vec()
            }
        };
        let mut endorsement_key = None;
        match v.get("cert_chain") {
            None | Some(serde_json::Value::Null) => {}
            Some(chain) => {
                let entries: Vec<CertTableEntry> = serde_json::from_value(chain.clone())
                    .map_err(|e| SnpError::Malformed(format!("cert_chain: {e}")))?;
                for e in entries {
                    if matches!(e.cert_type, CertType::VCEK | CertType::VLEK) {
                        endorsement_key = Some(e.data);
                    }
                }
            }
        }
        Ok(Self {
            report,
            endorsement_key,
        })
    }

    /// Accept a raw report or the JSON shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnpError> {
        if bytes.len() == REPORT_LEN {
            return Ok(Self {
                report: bytes.to_vec(),
                endorsement_key: None,
            });
        }
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            SnpError::Malformed(format!(
                "neither a {REPORT_LEN}-byte report nor JSON evidence: {e}"
            ))
        })?;
        Self::from_json(&v)
    }
}

/// Name of a cached VCEK for a chip at a TCB.
pub fn cache_file_name(hwid: &[u8], tcb: &sev::firmware::host::TcbVersion) -> String {
    let raw = u64::from_le_bytes([tcb.bootloader, tcb.tee, 0, 0, 0, 0, tcb.snp, tcb.microcode]);
    let fmc = tcb.fmc.map(|f| format!("-{f:02x}")).unwrap_or_default();
    format!("{}-{raw:016x}{fmc}.der", hex::encode(hwid))
}

/// Verify the report signature alone: ECDSA P-384/SHA-384 over bytes 0..0x2A0,
/// r and s little-endian at 0x2A0 and 0x2E8 (72 bytes each, 48 used).
pub fn verify_report_signature(report: &[u8], key_sec1: &[u8]) -> Result<(), SnpError> {
    use p384::ecdsa::signature::Verifier as _;
    if report.len() != REPORT_LEN {
        return Err(SnpError::Malformed(format!(
            "report is {} bytes, expected {REPORT_LEN}",
            report.len()
        )));
    }
    let le_to_be = |b: &[u8]| -> [u8; 48] {
        let mut out = [0u8; 48];
        for (i, x) in b[..48].iter().enumerate() {
            out[47 - i] = *x;
        }
        out
    };
    let r = le_to_be(&report[SIGNED_LEN..SIGNED_LEN + 72]);
    let s = le_to_be(&report[SIGNED_LEN + 72..SIGNED_LEN + 144]);
    let sig = p384::ecdsa::Signature::from_scalars(r, s)
        .map_err(|e| SnpError::ReportSignature(format!("invalid signature scalars: {e}")))?;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_sec1)
        .map_err(|e| SnpError::CertParse(format!("endorsement key is not P-384: {e}")))?;
    key.verify(&report[..SIGNED_LEN], &sig)
        .map_err(|e| SnpError::ReportSignature(e.to_string()))
}

/// The SEV-SNP verifier.
#[derive(Debug)]
pub struct SnpVerifier {
    roots: Vec<AmdRoots>,
    config: SnpConfig,
    kds: Option<Box<dyn KdsClient>>,
    /// Fixed verification time (offline verification of old evidence); `None` = now.
    at: Option<OffsetDateTime>,
    /// SHA-256 of endorsement keys (DER and key kind) whose AMD signature was
    /// verified, with their product: the RSA check is skipped for them, the
    /// validity periods are still checked every time.
    verified_keys: Mutex<HashMap<[u8; 32], Product>>,
}

/// Bound on remembered endorsement keys (one per chip and TCB).
const MAX_VERIFIED_KEYS: usize = 4096;

impl SnpVerifier {
    pub fn new(config: SnpConfig) -> Result<Self, SnpError> {
        let roots = Product::ALL
            .iter()
            .map(|p| AmdRoots::builtin(*p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            roots,
            config,
            kds: None,
            at: None,
            verified_keys: Mutex::new(HashMap::new()),
        })
    }

    /// Use `client` to fetch VCEKs when `kds_url` is configured.
    pub fn with_kds(mut self, client: Box<dyn KdsClient>) -> Self {
        self.kds = Some(client);
        self
    }

    /// Verify as of `at` instead of the current time.
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }

    fn find_endorsement_key(
        &self,
        report: &AttestationReport,
        product: Option<Product>,
    ) -> Result<Vec<u8>, SnpError> {
        let hwid: &[u8] = match product {
            Some(Product::Turin) => &report.chip_id[..8],
            _ => &report.chip_id,
        };
        if let Some(dir) = &self.config.vcek_cache_dir {
            let p = dir.join(cache_file_name(hwid, &report.reported_tcb));
            match std::fs::read(&p) {
                Ok(d) => return Ok(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(SnpError::NoEndorsementKey(format!(
                        ": {}: {e}",
                        p.display()
                    )))
                }
            }
        }
        match (&self.config.kds_url, &self.kds, product) {
            (Some(base), Some(client), Some(product)) => {
                let url = certs::kds_vcek_url(base, product, &report.chip_id, &report.reported_tcb);
                tracing::info!(%url, "fetching VCEK from AMD KDS");
                client.get(&url).map_err(SnpError::Kds)
            }
            _ => Err(SnpError::NoEndorsementKey(String::new())),
        }
    }

    /// The product whose roots signed `ek` (hinted product first; a v2 report
    /// carries no CPUID, so all are tried).
    fn find_product(
        &self,
        ek: &EndorsementKey,
        key: SigningKey,
        hint: Option<Product>,
        at: OffsetDateTime,
    ) -> Result<Product, SnpError> {
        let mut order: Vec<&AmdRoots> = self.roots.iter().collect();
        order.sort_by_key(|r| Some(r.product) != hint);
        let mut last = None;
        for roots in order {
            match roots.verify_endorsement_key(ek, key, at) {
                Ok(()) => return Ok(roots.product),
                Err(e @ SnpError::ChainInvalid { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(SnpError::ChainInvalid {
            product: None,
            reason: "no AMD roots".into(),
        }))
    }

    /// Verify raw evidence. `report_data` is the full 64-byte value the report
    /// must carry; `init_data_digest`, when given, must be bound in HOST_DATA.
    pub fn verify_evidence(
        &self,
        ev: &SnpEvidence,
        report_data: Option<&[u8; 64]>,
        init_data_digest: Option<&[u8]>,
    ) -> Result<SnpClaims, VerifierError> {
        let at = self.at.unwrap_or_else(OffsetDateTime::now_utc);
        if ev.report.len() != REPORT_LEN {
            return Err(SnpError::Malformed(format!(
                "report is {} bytes, expected {REPORT_LEN}",
                ev.report.len()
            ))
            .into());
        }
        // The signature is checked on the raw bytes before the full parse, so a
        // tampered report is reported as such even where it no longer parses.
        let raw = &ev.report;
        let u32_at = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        let key_info = u32_at(0x48);
        if key_info & 0b10 != 0 {
            return Err(SnpError::Unsigned.into());
        }
        let key = match (key_info >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            _ => return Err(SnpError::Unsigned.into()),
        };
        let hint = if u32_at(0) >= 3 {
            Product::from_cpuid(raw[0x188], raw[0x189])
        } else {
            None
        };
        let parsed = AttestationReport::from_bytes(raw).map_err(|e| format!("report: {e}"));
        let ek_der = match (&ev.endorsement_key, &parsed) {
            (Some(k), _) => k.clone(),
            (None, Ok(report)) => self.find_endorsement_key(report, hint)?,
            (None, Err(e)) => return Err(SnpError::Malformed(e.clone()).into()),
        };
        let ek = EndorsementKey::from_der(&ek_der)?;

        let ek_id: [u8; 32] = Sha256::new()
            .chain_update(&ek_der)
            .chain_update([key as u8])
            .finalize()
            .into();
        let known = self
            .verified_keys
            .lock()
            .ok()
            .and_then(|m| m.get(&ek_id).copied());
        let product = match known.and_then(|p| self.roots.iter().find(|r| r.product == p)) {
            Some(roots) => {
                roots.verify_endorsement_key_inner(&ek, key, at, false)?;
                roots.product
            }
            None => {
                let product = self.find_product(&ek, key, hint, at)?;
                if let Ok(mut m) = self.verified_keys.lock() {
                    if m.len() >= MAX_VERIFIED_KEYS {
                        m.clear();
                    }
                    m.insert(ek_id, product);
                }
                product
            }
        };

        verify_report_signature(&ev.report, ek.public_key_sec1())?;
        let report = parsed.map_err(SnpError::Malformed)?;

        let (cert_tcb, hwid) = certs::cert_tcb_and_hwid(&ek.x509)?;
        check_tcb(&report.reported_tcb, &cert_tcb, product)?;
        if key == SigningKey::Vcek {
            let want: &[u8] = match product {
                Product::Turin => &report.chip_id[..8],
                _ => &report.chip_id,
            };
            match hwid {
                Some(h) if h.as_slice() == want => {}
                _ => return Err(SnpError::ChipIdMismatch.into()),
            }
        }

        if report.policy.debug_allowed() && !self.config.allow_debug {
            return Err(SnpError::DebugAllowed.into());
        }
        if report.policy.migrate_ma_allowed() && !self.config.allow_migration_agent {
            return Err(SnpError::MigrationAllowed.into());
        }
        if report.vmpl > self.config.max_vmpl {
            return Err(SnpError::Vmpl {
                vmpl: report.vmpl,
                max: self.config.max_vmpl,
            }
            .into());
        }
        if let Some(rd) = report_data {
            if rd != &report.report_data {
                return Err(VerifierError::ReportDataMismatch);
            }
        }
        if let Some(d) = init_data_digest {
            if coco_jose::binding::init_data_register::<32>(d) != report.host_data {
                return Err(VerifierError::InitDataMismatch);
            }
        }
        Ok(SnpClaims::from_report(
            &report,
            product,
            key,
            init_data_digest.is_some(),
        ))
    }
}

fn check_tcb(
    reported: &sev::firmware::host::TcbVersion,
    cert: &certs::CertTcb,
    product: Product,
) -> Result<(), SnpError> {
    let fields: [(&'static str, u8, Option<u8>); 4] = [
        ("bootloader", reported.bootloader, cert.bootloader),
        ("tee", reported.tee, cert.tee),
        ("snp", reported.snp, cert.snp),
        ("microcode", reported.microcode, cert.microcode),
    ];
    for (field, r, c) in fields {
        if Some(r) != c {
            return Err(SnpError::TcbMismatch {
                field,
                report: r,
                cert: c.map(|c| c.to_string()).unwrap_or_else(|| "missing".into()),
            });
        }
    }
    if product == Product::Turin && reported.fmc != cert.fmc {
        return Err(SnpError::TcbMismatch {
            field: "fmc",
            report: reported.fmc.unwrap_or(0),
            cert: cert
                .fmc
                .map(|c| c.to_string())
                .unwrap_or_else(|| "missing".into()),
        });
    }
    Ok(())
}

impl Verifier for SnpVerifier {
    fn tee(&self) -> Tee {
        Tee::Snp
    }

    fn verify(
        &self,
        evidence: &serde_json::Value,
        expected: &Expected<'_>,
    ) -> Result<TeeClaims, VerifierError> {
        let ev = SnpEvidence::from_json(evidence)?;
        let claims = self.verify_evidence(
            &ev,
            Some(&expected.report_data_64()),
            expected.init_data_digest,
        )?;
        Ok(TeeClaims::Snp(Box::new(claims)))
    }
}

#[cfg(test)]
mod tests;
