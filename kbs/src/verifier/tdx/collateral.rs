//! DCAP collateral for TDX: Intel's TCB info and QE identity (signed JSON), CRLs,
//! loaded from an offline bundle directory or a PCCS, and the TCB evaluation of a
//! quote against them.

use super::pck::{self, PckExtension};
use super::quote::Quote;
use super::TdxError;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::Path;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

#[derive(Deserialize)]
struct Signed<'a> {
    #[serde(borrow, alias = "tcbInfo", alias = "enclaveIdentity")]
    body: &'a RawValue,
    signature: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Svn {
    svn: u8,
}

#[derive(Debug, Clone, Deserialize)]
struct PlatformTcb {
    sgxtcbcomponents: Vec<Svn>,
    pcesvn: u16,
    #[serde(default)]
    tdxtcbcomponents: Vec<Svn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlatformLevel {
    tcb: PlatformTcb,
    tcb_date: String,
    tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct IsvSvn {
    isvsvn: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IsvLevel {
    tcb: IsvSvn,
    tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TdxModule {
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TdxModuleIdentity {
    id: String,
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
    tcb_levels: Vec<IsvLevel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfo {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tcb_evaluation_data_number: u32,
    tdx_module: Option<TdxModule>,
    #[serde(default)]
    tdx_module_identities: Vec<TdxModuleIdentity>,
    tcb_levels: Vec<PlatformLevel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentity {
    id: String,
    issue_date: String,
    next_update: String,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<IsvLevel>,
}

/// Verified, parsed collateral for one platform (FMSPC).
#[derive(Debug, Clone)]
pub struct Collateral {
    tcb_info: TcbInfo,
    qe_identity: QeIdentity,
    crls: Vec<CertificateList>,
    signing_chain: Vec<Certificate>,
}

/// The outcome of TCB evaluation.
#[derive(Debug, Clone)]
pub struct TcbResult {
    /// Platform status converged with the TDX module's and the QE's (as Intel QVL).
    pub status: String,
    pub platform_status: String,
    pub qe_status: String,
    pub module_status: Option<String>,
    pub advisory_ids: Vec<String>,
    pub tcb_date: String,
    pub tcb_evaluation_data_number: u32,
}

fn signed_body(json: &[u8], what: &str) -> Result<(Vec<u8>, [u8; 64]), TdxError> {
    let s: Signed<'_> =
        serde_json::from_slice(json).map_err(|e| TdxError::Malformed(format!("{what}: {e}")))?;
    let sig = hex::decode(&s.signature)
        .ok()
        .and_then(|v| <[u8; 64]>::try_from(v).ok())
        .ok_or_else(|| TdxError::Malformed(format!("{what}: signature is not 64 hex bytes")))?;
    Ok((s.body.get().as_bytes().to_vec(), sig))
}

fn verify_body(
    signer: &Certificate,
    body: &[u8],
    sig: &[u8; 64],
    what: &str,
) -> Result<(), TdxError> {
    let key = pck::spki_sec1(signer);
    let xy: [u8; 64] = key
        .get(1..65)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| TdxError::CertParse("TCB signing key is not P-256".into()))?;
    super::quote::verify_p256_raw(&xy, body, sig)
        .map_err(|e| TdxError::CollateralSignature(format!("{what}: {e}")))
}

fn parse_crl(bytes: &[u8]) -> Result<CertificateList, TdxError> {
    use der::Decode;
    let der_bytes = if bytes.starts_with(b"-----BEGIN") {
        der::pem::decode_vec(bytes)
            .map_err(|e| TdxError::Malformed(format!("CRL PEM: {e}")))?
            .1
    } else {
        bytes.to_vec()
    };
    CertificateList::from_der(&der_bytes).map_err(|e| TdxError::Malformed(format!("CRL: {e}")))
}

fn time(s: &str, what: &str) -> Result<i64, TdxError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| TdxError::Malformed(format!("{what} date {s:?}: {e}")))
}

fn hex_eq(a: &str, b: &[u8]) -> bool {
    hex::decode(a).map(|a| a == b).unwrap_or(false)
}

fn masked_eq(value: &[u8], mask_hex: &str, want_hex: &str) -> bool {
    match (hex::decode(mask_hex), hex::decode(want_hex)) {
        (Ok(m), Ok(w)) if m.len() == value.len() && w.len() == value.len() => {
            value.iter().zip(&m).zip(&w).all(|((v, m), w)| v & m == *w)
        }
        _ => false,
    }
}

/// Intel QVL's convergence of the platform status with a component's (TDX
/// module or QE): an out-of-date component makes the platform out of date,
/// keeping "configuration needed"; a revoked one revokes it.
fn converge(platform: &str, component: &str) -> String {
    match (component, platform) {
        ("Revoked", _) => "Revoked",
        ("OutOfDate", "UpToDate" | "SWHardeningNeeded") => "OutOfDate",
        ("OutOfDate", "ConfigurationNeeded" | "ConfigurationAndSWHardeningNeeded") => {
            "OutOfDateConfigurationNeeded"
        }
        _ => platform,
    }
    .to_string()
}

impl Collateral {
    /// Parse and verify collateral: the signatures of TCB info and QE identity by
    /// the TCB signing certificate (`signing_chain_pem`, else Intel's built-in one),
    /// whose signature must chain to the built-in Intel root. Time validity is
    /// checked per quote ([`Self::check_current`]).
    pub fn from_parts(
        tcb_info_json: &[u8],
        qe_identity_json: &[u8],
        signing_chain_pem: Option<&[u8]>,
        crls: &[Vec<u8>],
    ) -> Result<Self, TdxError> {
        let signing_chain =
            pck::parse_pem_chain(signing_chain_pem.unwrap_or(pck::INTEL_TCB_SIGNING_PEM))?;
        let signer = &signing_chain[0];
        if !signer
            .tbs_certificate
            .subject
            .to_string()
            .contains("CN=Intel SGX TCB Signing")
        {
            return Err(TdxError::PckChain(
                "collateral signer is not Intel SGX TCB Signing".into(),
            ));
        }
        // Signatures up to Intel's root once, here; validity per quote.
        pck::verify_chain_inner(&signing_chain, &pck::intel_root()?, None, true)?;
        let (tb, ts) = signed_body(tcb_info_json, "tcbInfo")?;
        verify_body(signer, &tb, &ts, "tcbInfo")?;
        let (qb, qs) = signed_body(qe_identity_json, "enclaveIdentity")?;
        verify_body(signer, &qb, &qs, "enclaveIdentity")?;
        let tcb_info: TcbInfo = serde_json::from_slice(&tb)
            .map_err(|e| TdxError::Malformed(format!("tcbInfo: {e}")))?;
        let qe_identity: QeIdentity = serde_json::from_slice(&qb)
            .map_err(|e| TdxError::Malformed(format!("enclaveIdentity: {e}")))?;
        if tcb_info.id != "TDX" || tcb_info.version != 3 {
            return Err(TdxError::Malformed(format!(
                "tcbInfo is {} v{}, expected TDX v3",
                tcb_info.id, tcb_info.version
            )));
        }
        if qe_identity.id != "TD_QE" {
            return Err(TdxError::Malformed(format!(
                "enclaveIdentity is {}, expected TD_QE",
                qe_identity.id
            )));
        }
        let crls = crls
            .iter()
            .map(|c| parse_crl(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tcb_info,
            qe_identity,
            crls,
            signing_chain,
        })
    }

    /// Load an offline bundle: `tcbInfo.json` (or `tcbInfo-<FMSPC>.json`),
    /// `enclaveIdentity.json`, optionally `tcb_signing_chain.pem`,
    /// `root_ca_crl.{der,pem}` and `pck_crl.{der,pem}`.
    pub fn from_dir(dir: &Path, fmspc: Option<&[u8; 6]>) -> Result<Self, TdxError> {
        let read = |name: &str| -> Result<Option<Vec<u8>>, TdxError> {
            match std::fs::read(dir.join(name)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(TdxError::CollateralMissing(format!(
                    "{}: {e}",
                    dir.join(name).display()
                ))),
            }
        };
        let per_fmspc = match fmspc {
            Some(f) => read(&format!("tcbInfo-{}.json", hex::encode_upper(f)))?,
            None => None,
        };
        let tcb = match per_fmspc {
            Some(t) => t,
            None => read("tcbInfo.json")?.ok_or_else(|| {
                TdxError::CollateralMissing(format!("no tcbInfo.json in {}", dir.display()))
            })?,
        };
        let qe = read("enclaveIdentity.json")?.ok_or_else(|| {
            TdxError::CollateralMissing(format!("no enclaveIdentity.json in {}", dir.display()))
        })?;
        let chain = read("tcb_signing_chain.pem")?;
        let mut crls = Vec::new();
        for name in [
            "root_ca_crl.der",
            "root_ca_crl.pem",
            "pck_crl.der",
            "pck_crl.pem",
        ] {
            if let Some(c) = read(name)? {
                crls.push(c);
            }
        }
        Self::from_parts(&tcb, &qe, chain.as_deref(), &crls)
    }

    pub fn fmspc(&self) -> &str {
        &self.tcb_info.fmspc
    }

    pub fn crls(&self) -> &[CertificateList] {
        &self.crls
    }

    /// Check that the collateral is current at `at`: TCB info and QE identity
    /// inside issueDate..nextUpdate, the signing chain valid and not revoked.
    pub fn check_current(&self, root: &Certificate, at: OffsetDateTime) -> Result<(), TdxError> {
        let t = at.unix_timestamp();
        for (what, issue, next) in [
            (
                "tcbInfo",
                &self.tcb_info.issue_date,
                &self.tcb_info.next_update,
            ),
            (
                "enclaveIdentity",
                &self.qe_identity.issue_date,
                &self.qe_identity.next_update,
            ),
        ] {
            let (from, until) = (time(issue, what)?, time(next, what)?);
            if t < from || t > until {
                return Err(TdxError::CollateralExpired {
                    what: what.to_string(),
                    from,
                    until,
                    at: t,
                });
            }
        }
        let signing = pck::verify_chain_inner(&self.signing_chain, root, Some(at), false)?;
        // The root CA CRL can revoke the TCB signing certificate too.
        for crl in &self.crls {
            if crl.tbs_cert_list.issuer == root.tbs_certificate.subject {
                pck::verify_crl(crl, &[root], at)?;
            }
        }
        pck::check_revocation(&signing, &self.crls)
    }

    /// Evaluate the quote's TCB (PCK extension, TEE TCB SVN, QE report).
    pub fn evaluate(&self, q: &Quote, pck_ext: &PckExtension) -> Result<TcbResult, TdxError> {
        let ti = &self.tcb_info;
        if !hex_eq(&ti.fmspc, &pck_ext.fmspc) {
            return Err(TdxError::FmspcMismatch {
                quote: hex::encode(pck_ext.fmspc),
                collateral: ti.fmspc.clone(),
            });
        }
        if !hex_eq(&ti.pce_id, &pck_ext.pce_id) {
            return Err(TdxError::FmspcMismatch {
                quote: format!("pceId {}", hex::encode(pck_ext.pce_id)),
                collateral: format!("pceId {}", ti.pce_id),
            });
        }

        // Quoting enclave identity.
        let qi = &self.qe_identity;
        let qe = &q.qe_report;
        if !hex_eq(&qi.mrsigner, qe.mr_signer()) || qi.isvprodid != qe.isv_prod_id() {
            return Err(TdxError::QeIdentityMismatch(
                "MRSIGNER or ISVPRODID differ".into(),
            ));
        }
        if !masked_eq(
            &qe.miscselect().to_le_bytes(),
            &qi.miscselect_mask,
            &qi.miscselect,
        ) && !masked_eq(
            &qe.miscselect().to_be_bytes(),
            &qi.miscselect_mask,
            &qi.miscselect,
        ) {
            return Err(TdxError::QeIdentityMismatch("MISCSELECT".into()));
        }
        if !masked_eq(qe.attributes(), &qi.attributes_mask, &qi.attributes) {
            return Err(TdxError::QeIdentityMismatch("ATTRIBUTES".into()));
        }
        let qe_level = qi
            .tcb_levels
            .iter()
            .find(|l| l.tcb.isvsvn <= qe.isv_svn())
            .ok_or_else(|| TdxError::TcbLevelNotFound(format!("QE ISVSVN {}", qe.isv_svn())))?;

        // TDX module (SEAM) identity.
        let r = &q.report;
        if let Some(m) = &ti.tdx_module {
            if !hex_eq(&m.mrsigner, &r.mr_signer_seam)
                || !masked_eq(&r.seam_attributes, &m.attributes_mask, &m.attributes)
            {
                return Err(TdxError::QeIdentityMismatch(
                    "TDX module MRSIGNERSEAM/SEAMATTRIBUTES differ from tcbInfo".into(),
                ));
            }
        }
        let module_major = r.tee_tcb_svn[1];
        let mut module_status = None;
        if module_major > 0 {
            let id = format!("TDX_{module_major:02X}");
            let ident = ti
                .tdx_module_identities
                .iter()
                .find(|i| i.id.eq_ignore_ascii_case(&id))
                .ok_or_else(|| TdxError::TcbLevelNotFound(format!("module identity {id}")))?;
            if !hex_eq(&ident.mrsigner, &r.mr_signer_seam)
                || !masked_eq(
                    &r.seam_attributes,
                    &ident.attributes_mask,
                    &ident.attributes,
                )
            {
                return Err(TdxError::QeIdentityMismatch(format!(
                    "TDX module does not match identity {id}"
                )));
            }
            let lvl = ident
                .tcb_levels
                .iter()
                .find(|l| l.tcb.isvsvn <= u16::from(r.tee_tcb_svn[0]))
                .ok_or_else(|| {
                    TdxError::TcbLevelNotFound(format!("module {id} SVN {}", r.tee_tcb_svn[0]))
                })?;
            module_status = Some(lvl.tcb_status.clone());
        }

        // Platform: first level that the PCK's SGX TCB and the TEE TCB SVN meet.
        let level = ti
            .tcb_levels
            .iter()
            .find(|l| {
                let sgx_ok = l.tcb.sgxtcbcomponents.len() == 16
                    && l.tcb
                        .sgxtcbcomponents
                        .iter()
                        .zip(pck_ext.sgx_tcb_components)
                        .all(|(lv, have)| have >= lv.svn);
                let pce_ok = pck_ext.pce_svn >= l.tcb.pcesvn;
                // With a TDX module major version the first two SVNs are the
                // module's, evaluated against tdxModuleIdentities above.
                let skip = if module_major > 0 { 2 } else { 0 };
                let tdx_ok = l.tcb.tdxtcbcomponents.len() == 16
                    && l.tcb
                        .tdxtcbcomponents
                        .iter()
                        .zip(r.tee_tcb_svn)
                        .skip(skip)
                        .all(|(lv, have)| have >= lv.svn);
                sgx_ok && pce_ok && tdx_ok
            })
            .ok_or_else(|| TdxError::TcbLevelNotFound("platform".into()))?;

        let mut status = level.tcb_status.clone();
        if let Some(m) = &module_status {
            status = converge(&status, m);
        }
        status = converge(&status, &qe_level.tcb_status);
        if status == "Revoked" {
            return Err(TdxError::TcbRevoked);
        }
        let mut advisory_ids = level.advisory_ids.clone();
        advisory_ids.extend(qe_level.advisory_ids.iter().cloned());
        Ok(TcbResult {
            status,
            platform_status: level.tcb_status.clone(),
            qe_status: qe_level.tcb_status.clone(),
            module_status,
            advisory_ids,
            tcb_date: level.tcb_date.clone(),
            tcb_evaluation_data_number: ti.tcb_evaluation_data_number,
        })
    }
}

/// Where collateral comes from when not in the offline bundle: a PCCS (or
/// Intel PCS). The KBS binary supplies the HTTP client.
pub trait PccsClient: Send + Sync + std::fmt::Debug {
    /// GET `url`, returning the body.
    fn get(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// PCCS URLs (API v4) for a platform's TCB info and the TD QE identity.
pub fn pccs_urls(base: &str, fmspc: &[u8; 6]) -> (String, String) {
    let base = base.trim_end_matches('/');
    (
        format!(
            "{base}/tdx/certification/v4/tcb?fmspc={}",
            hex::encode_upper(fmspc)
        ),
        format!("{base}/tdx/certification/v4/qe/identity"),
    )
}

#[cfg(test)]
mod tests {
    use super::converge;

    #[test]
    fn convergence_follows_intel_qvl() {
        assert_eq!(converge("UpToDate", "UpToDate"), "UpToDate");
        assert_eq!(converge("UpToDate", "OutOfDate"), "OutOfDate");
        assert_eq!(converge("SWHardeningNeeded", "OutOfDate"), "OutOfDate");
        assert_eq!(
            converge("ConfigurationNeeded", "OutOfDate"),
            "OutOfDateConfigurationNeeded"
        );
        assert_eq!(converge("OutOfDate", "UpToDate"), "OutOfDate");
        assert_eq!(converge("UpToDate", "Revoked"), "Revoked");
        assert_eq!(
            converge("SWHardeningNeeded", "UpToDate"),
            "SWHardeningNeeded"
        );
    }
}
