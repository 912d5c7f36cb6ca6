//! TDX quote v4/v5 layout (Intel TDX DCAP Quote Generation Library and Quote
//! Verification spec): header, TD report body, ECDSA-P256 signature data with the
//! QE report and its certification data (the PCK chain).

use super::TdxError;

pub const HEADER_LEN: usize = 48;
pub const TD10_BODY_LEN: usize = 584;
pub const TD15_BODY_LEN: usize = 648;
pub const QE_REPORT_LEN: usize = 384;
const TEE_TYPE_TDX: u32 = 0x81;
const ATT_KEY_ECDSA_P256: u16 = 2;
const CERT_TYPE_QE_REPORT: u16 = 6;
const CERT_TYPE_PCK_CHAIN: u16 = 5;

/// The TD report body a quote carries (TD 1.0, plus the TD 1.5 fields).
#[derive(Debug, Clone)]
pub struct TdReport {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: [u8; 8],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    /// TD 1.5 only.
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TD 1.5 only.
    pub mr_service_td: Option<[u8; 48]>,
}

/// The quoting enclave's SGX report (384 bytes).
#[derive(Debug, Clone)]
pub struct QeReport {
    pub raw: [u8; QE_REPORT_LEN],
}

impl QeReport {
    pub fn miscselect(&self) -> u32 {
        u32::from_le_bytes([self.raw[16], self.raw[17], self.raw[18], self.raw[19]])
    }
    pub fn attributes(&self) -> &[u8] {
        &self.raw[48..64]
    }
    pub fn mr_enclave(&self) -> &[u8] {
        &self.raw[64..96]
    }
    pub fn mr_signer(&self) -> &[u8] {
        &self.raw[128..160]
    }
    pub fn isv_prod_id(&self) -> u16 {
        u16::from_le_bytes([self.raw[256], self.raw[257]])
    }
    pub fn isv_svn(&self) -> u16 {
        u16::from_le_bytes([self.raw[258], self.raw[259]])
    }
    pub fn report_data(&self) -> &[u8] {
        &self.raw[320..384]
    }
}

/// A parsed quote, borrowing nothing: the signed region is kept as bytes.
#[derive(Debug, Clone)]
pub struct Quote {
    pub version: u16,
    pub tee_type: u32,
    pub qe_vendor_id: [u8; 16],
    pub report: TdReport,
    /// Header and body exactly as signed by the attestation key.
    pub signed: Vec<u8>,
    /// Raw r||s (big-endian) of the quote signature.
    pub signature: [u8; 64],
    /// Raw x||y of the attestation public key.
    pub attestation_key: [u8; 64],
    pub qe_report: QeReport,
    pub qe_report_signature: [u8; 64],
    pub qe_auth_data: Vec<u8>,
    /// PEM of the PCK certificate chain (leaf first).
    pub pck_chain_pem: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], TdxError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| TdxError::Malformed(format!("quote truncated in {what}")))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], TdxError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u16(&mut self, what: &str) -> Result<u16, TdxError> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, TdxError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
}

fn parse_body(b: &[u8], td15: bool) -> Result<TdReport, TdxError> {
    let mut r = Reader { b, pos: 0 };
    let mut rep = TdReport {
        tee_tcb_svn: r.arr("tee_tcb_svn")?,
        mr_seam: r.arr("mr_seam")?,
        mr_signer_seam: r.arr("mr_signer_seam")?,
        seam_attributes: r.arr("seam_attributes")?,
        td_attributes: r.arr("td_attributes")?,
        xfam: r.arr("xfam")?,
        mr_td: r.arr("mr_td")?,
        mr_config_id: r.arr("mr_config_id")?,
        mr_owner: r.arr("mr_owner")?,
        mr_owner_config: r.arr("mr_owner_config")?,
        rtmr: [
            r.arr("rtmr0")?,
            r.arr("rtmr1")?,
            r.arr("rtmr2")?,
            r.arr("rtmr3")?,
        ],
        report_data: r.arr("report_data")?,
        tee_tcb_svn2: None,
        mr_service_td: None,
    };
    if td15 {
        rep.tee_tcb_svn2 = Some(r.arr("tee_tcb_svn2")?);
        rep.mr_service_td = Some(r.arr("mr_service_td")?);
    }
    Ok(rep)
}

impl Quote {
    pub fn parse(b: &[u8]) -> Result<Self, TdxError> {
        let mut r = Reader { b, pos: 0 };
        let version = r.u16("header")?;
        let att_key_type = r.u16("header")?;
        let tee_type = r.u32("header")?;
        r.take(4, "header")?; // QE SVN, PCE SVN (v4) / reserved
        let qe_vendor_id = r.arr::<16>("header")?;
        r.take(20, "header")?; // user data
        if tee_type != TEE_TYPE_TDX {
            return Err(TdxError::Malformed(format!(
                "TEE type {tee_type:#x} is not TDX"
            )));
        }
        if att_key_type != ATT_KEY_ECDSA_P256 {
            return Err(TdxError::Malformed(format!(
                "attestation key type {att_key_type} is not ECDSA-P256"
            )));
        }
        let report = match version {
            4 => parse_body(r.take(TD10_BODY_LEN, "TD report")?, false)?,
            5 => {
                let body_type = r.u16("body descriptor")?;
                let size = r.u32("body descriptor")? as usize;
                match (body_type, size) {
                    (2, TD10_BODY_LEN) => parse_body(r.take(size, "TD report")?, false)?,
                    (3, TD15_BODY_LEN) => parse_body(r.take(size, "TD report")?, true)?,
                    _ => {
                        return Err(TdxError::Malformed(format!(
                            "v5 body type {body_type} of size {size} is not a TD report"
                        )))
                    }
                }
            }
            v => return Err(TdxError::UnsupportedVersion(v)),
        };
        let signed = b[..r.pos].to_vec();
        let sig_len = r.u32("signature length")? as usize;
        let sig_data = r.take(sig_len, "signature data")?;
        let mut s = Reader {
            b: sig_data,
            pos: 0,
        };
        let signature = s.arr::<64>("quote signature")?;
        let attestation_key = s.arr::<64>("attestation key")?;
        let cert_type = s.u16("certification data")?;
        let cert_len = s.u32("certification data")? as usize;
        if cert_type != CERT_TYPE_QE_REPORT {
            return Err(TdxError::Malformed(format!(
                "certification data type {cert_type}, expected 6 (QE report)"
            )));
        }
        let mut c = Reader {
            b: s.take(cert_len, "certification data")?,
            pos: 0,
        };
        let qe_report = QeReport {
            raw: c.arr("QE report")?,
        };
        let qe_report_signature = c.arr::<64>("QE report signature")?;
        let auth_len = c.u16("QE auth data")? as usize;
        let qe_auth_data = c.take(auth_len, "QE auth data")?.to_vec();
        let inner_type = c.u16("PCK certification data")?;
        let inner_len = c.u32("PCK certification data")? as usize;
        if inner_type != CERT_TYPE_PCK_CHAIN {
            return Err(TdxError::Malformed(format!(
                "QE certification data type {inner_type}, expected 5 (PCK chain)"
            )));
        }
        let pck_chain_pem = c.take(inner_len, "PCK chain")?.to_vec();
        Ok(Self {
            version,
            tee_type,
            qe_vendor_id,
            report,
            signed,
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
        })
    }
}

/// Verify a raw r||s ECDSA-P256/SHA-256 signature with a raw x||y public key.
pub fn verify_p256_raw(key_xy: &[u8; 64], msg: &[u8], sig: &[u8; 64]) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier as _;
    let mut sec1 = [0u8; 65];
    sec1[0] = 4;
    sec1[1..].copy_from_slice(key_xy);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|e| e.to_string())?;
    let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|e| e.to_string())?;
    key.verify(msg, &sig).map_err(|e| e.to_string())
}

/// Verify the quote's own signature (attestation key over header and body).
pub fn verify_quote_signature(q: &Quote) -> Result<(), TdxError> {
    verify_p256_raw(&q.attestation_key, &q.signed, &q.signature).map_err(TdxError::QuoteSignature)
}
