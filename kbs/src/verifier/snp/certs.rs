//! AMD certificates for SEV-SNP: built-in ARK/ASK/ASVK per product, VCEK/VLEK
//! chain verification, the VCEK's TCB and hwID extensions, and the KDS URL.

use super::SnpError;
use der::Decode;
use sev::certs::snp::{Certificate as SevCert, Verifiable};
use std::fmt;
use time::OffsetDateTime;
use x509_cert::Certificate;

/// A CPU generation with its own AMD root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// Name as AMD's KDS spells it in URLs.
    pub fn kds_name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// The product a report's CPUID family/model points to (report v3+).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(Product::Milan),
            (0x19, 0x10..=0x1f) | (0x19, 0xa0..=0xaf) => Some(Product::Genoa),
            (0x1a, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    fn pem(self) -> &'static [u8] {
        match self {
            Product::Milan => include_bytes!("../../../testdata/amd/milan_ask_ark_asvk.pem"),
            Product::Genoa => include_bytes!("../../../testdata/amd/genoa_ask_ark_asvk.pem"),
            Product::Turin => include_bytes!("../../../testdata/amd/turin_ask_ark_asvk.pem"),
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kds_name())
    }
}

/// Which key signed a report (report KEY_INFO.SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    Vcek,
    Vlek,
}

/// One product's AMD certificates, checked once at start-up: ARK self-signed,
/// ASK and ASVK signed by the ARK.
#[derive(Debug, Clone)]
pub struct AmdRoots {
    pub product: Product,
    ask: SevCert,
    asvk: SevCert,
    ask_x509: Certificate,
    asvk_x509: Certificate,
    ark_x509: Certificate,
}

/// A parsed endorsement key certificate (VCEK or VLEK).
#[derive(Debug, Clone)]
pub struct EndorsementKey {
    pub x509: Certificate,
    sev: SevCert,
}

impl EndorsementKey {
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, SnpError> {
        let x509 = Certificate::from_der(der_bytes)
            .map_err(|e| SnpError::CertParse(format!("endorsement key: {e}")))?;
        let sev = SevCert::from_der(der_bytes)
            .map_err(|e| SnpError::CertParse(format!("endorsement key: {e}")))?;
        Ok(Self { x509, sev })
    }

    /// SEC1 bytes of the P-384 public key the report is signed with.
    pub fn public_key_sec1(&self) -> &[u8] {
        self.sev.public_key_sec1()
    }
}

fn split_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, SnpError> {
    let text = std::str::from_utf8(pem).map_err(|e| SnpError::CertParse(e.to_string()))?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end_marker = "-----END CERTIFICATE-----";
        let end = rest[start..]
            .find(end_marker)
            .ok_or_else(|| SnpError::CertParse("unterminated PEM certificate".into()))?
            + start
            + end_marker.len();
        out.push(rest.as_bytes()[start..end].to_vec());
        rest = &rest[end..];
    }
    Ok(out)
}

fn x509_from_pem(pem: &[u8]) -> Result<Certificate, SnpError> {
    use der::DecodePem;
    Certificate::from_pem(pem).map_err(|e| SnpError::CertParse(e.to_string()))
}

impl AmdRoots {
    /// Load and check the built-in certificates of `product`.
    pub fn builtin(product: Product) -> Result<Self, SnpError> {
        let pems = split_pem(product.pem())?;
        if pems.len() != 3 {
            return Err(SnpError::CertParse(format!(
                "{product}: expected ASK, ARK and ASVK, found {} certificates",
                pems.len()
            )));
        }
        let sev = |p: &[u8]| SevCert::from_pem(p).map_err(|e| SnpError::CertParse(e.to_string()));
        let (ask, ark, asvk) = (sev(&pems[0])?, sev(&pems[1])?, sev(&pems[2])?);
        for (what, signee) in [("ARK", &ark), ("ASK", &ask), ("ASVK", &asvk)] {
            (&ark, signee)
                .verify()
                .map_err(|e| SnpError::ChainInvalid {
                    product: Some(product),
                    reason: format!("built-in {what} not signed by the ARK: {e}"),
                })?;
        }
        Ok(Self {
            product,
            ask,
            asvk,
            ask_x509: x509_from_pem(&pems[0])?,
            ark_x509: x509_from_pem(&pems[1])?,
            asvk_x509: x509_from_pem(&pems[2])?,
        })
    }

    /// Check that `ek` is signed by this product's ASK (VCEK) or ASVK (VLEK) and
    /// that every certificate of the chain is valid at `at`.
    pub fn verify_endorsement_key(
        &self,
        ek: &EndorsementKey,
        key: SigningKey,
        at: OffsetDateTime,
    ) -> Result<(), SnpError> {
        self.verify_endorsement_key_inner(ek, key, at, true)
    }

    /// As [`Self::verify_endorsement_key`]; with `check_signature` false only the
    /// validity periods are checked (for a certificate whose signature was
    /// verified before).
    pub(crate) fn verify_endorsement_key_inner(
        &self,
        ek: &EndorsementKey,
        key: SigningKey,
        at: OffsetDateTime,
        check_signature: bool,
    ) -> Result<(), SnpError> {
        let (issuer, issuer_x509) = match key {
            SigningKey::Vcek => (&self.ask, &self.ask_x509),
            SigningKey::Vlek => (&self.asvk, &self.asvk_x509),
        };
        if check_signature {
            (issuer, &ek.sev)
                .verify()
                .map_err(|e| SnpError::ChainInvalid {
                    product: Some(self.product),
                    reason: e.to_string(),
                })?;
        }
        for (what, cert) in [
            ("endorsement key", &ek.x509),
            ("ASK/ASVK", issuer_x509),
            ("ARK", &self.ark_x509),
        ] {
            check_validity(what, cert, at)?;
        }
        Ok(())
    }
}

fn check_validity(what: &str, cert: &Certificate, at: OffsetDateTime) -> Result<(), SnpError> {
    let v = &cert.tbs_certificate.validity;
    let nb = v.not_before.to_unix_duration().as_secs() as i64;
    let na = v.not_after.to_unix_duration().as_secs() as i64;
    let t = at.unix_timestamp();
    if t < nb || t > na {
        return Err(SnpError::CertExpired {
            what: what.to_string(),
            not_before: nb,
            not_after: na,
            at: t,
        });
    }
    Ok(())
}

/// The TCB a VCEK was issued for, from its X.509 extensions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertTcb {
    pub bootloader: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub microcode: Option<u8>,
    pub fmc: Option<u8>,
}

const OID_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

fn ext_int(value: &[u8]) -> Result<u8, SnpError> {
    // AMD encodes the SPL values as DER INTEGERs inside the extension OCTET STRING.
    let i = der::asn1::Int::from_der(value)
        .map_err(|e| SnpError::CertParse(format!("TCB extension: {e}")))?;
    let b = i.as_bytes();
    let v = b
        .iter()
        .try_fold(0u32, |acc, x| {
            acc.checked_mul(256).map(|a| a + u32::from(*x))
        })
        .filter(|v| *v <= 255)
        .ok_or_else(|| SnpError::CertParse("TCB extension out of range".into()))?;
    Ok(v as u8)
}

/// Extract the TCB and hwID extensions of a VCEK.
pub fn cert_tcb_and_hwid(cert: &Certificate) -> Result<(CertTcb, Option<Vec<u8>>), SnpError> {
    let mut tcb = CertTcb::default();
    let mut hwid = None;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        let v = ext.extn_value.as_bytes();
        match ext.extn_id.to_string().as_str() {
            OID_BL => tcb.bootloader = Some(ext_int(v)?),
            OID_TEE => tcb.tee = Some(ext_int(v)?),
            OID_SNP => tcb.snp = Some(ext_int(v)?),
            OID_UCODE => tcb.microcode = Some(ext_int(v)?),
            OID_FMC => tcb.fmc = Some(ext_int(v)?),
            OID_HWID => {
                // Normally a DER OCTET STRING; some VCEKs carry the raw bytes.
                let raw = der::asn1::OctetString::from_der(v)
                    .map(|o| o.as_bytes().to_vec())
                    .unwrap_or_else(|_| v.to_vec());
                hwid = Some(raw);
            }
            _ => {}
        }
    }
    Ok((tcb, hwid))
}

/// AMD KDS URL of the VCEK for a chip at a reported TCB.
pub fn kds_vcek_url(
    base: &str,
    product: Product,
    chip_id: &[u8; 64],
    tcb: &sev::firmware::host::TcbVersion,
) -> String {
    // Turin's KDS identifies chips by the first 8 bytes of CHIP_ID and adds fmcSPL.
    let (hwid, fmc) = match product {
        Product::Turin => (hex::encode(&chip_id[..8]), tcb.fmc),
        _ => (hex::encode(chip_id), None),
    };
    let mut url = format!(
        "{}/vcek/v1/{}/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        base.trim_end_matches('/'),
        product.kds_name(),
        hwid,
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode
    );
    if let Some(f) = fmc {
        url.push_str(&format!("&fmcSPL={f}"));
    }
    url
}
