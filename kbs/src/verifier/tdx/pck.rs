//! Intel PKI for TDX: X.509 chains to the built-in Intel SGX Root CA (ECDSA
//! P-256), CRLs, and the SGX extension of PCK certificates.

use super::TdxError;
use der::{Decode, DecodePem, Encode};
use time::OffsetDateTime;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

/// Intel SGX Root CA (CN=Intel SGX Root CA, valid 2018..2049), DER; SHA-256
/// 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3.
pub const INTEL_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");
/// Intel SGX TCB Signing certificate (2025..2032 issue), which signs tcbInfo and
/// QE identity; used when the collateral bundle brings no issuer chain.
pub const INTEL_TCB_SIGNING_PEM: &[u8] = include_bytes!("intel_tcb_signing.pem");

pub fn parse_pem_chain(pem: &[u8]) -> Result<Vec<Certificate>, TdxError> {
    let text = std::str::from_utf8(pem)
        .map_err(|e| TdxError::CertParse(format!("PEM is not UTF-8: {e}")))?
        .trim_end_matches('\0');
    let marker = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end = rest[start..]
            .find(marker)
            .ok_or_else(|| TdxError::CertParse("unterminated PEM certificate".into()))?
            + start
            + marker.len();
        out.push(
            Certificate::from_pem(&rest.as_bytes()[start..end])
                .map_err(|e| TdxError::CertParse(e.to_string()))?,
        );
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err(TdxError::CertParse("no certificate in PEM".into()));
    }
    Ok(out)
}

pub fn intel_root() -> Result<Certificate, TdxError> {
    Certificate::from_der(INTEL_ROOT_CA_DER).map_err(|e| TdxError::CertParse(e.to_string()))
}

/// SEC1 public key of a certificate.
pub fn spki_sec1(cert: &Certificate) -> &[u8] {
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
}

/// ECDSA-P256 (DER signature) over `msg` by `issuer`'s key.
fn verify_signed_by(issuer: &Certificate, msg: &[u8], sig_der: &[u8]) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier as _;
    let key =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(spki_sec1(issuer)).map_err(|e| e.to_string())?;
    let sig = p256::ecdsa::Signature::from_der(sig_der).map_err(|e| e.to_string())?;
    key.verify(msg, &sig).map_err(|e| e.to_string())
}

fn check_time(cert: &Certificate, at: OffsetDateTime) -> Result<(), TdxError> {
    let v = &cert.tbs_certificate.validity;
    let nb = v.not_before.to_unix_duration().as_secs() as i64;
    let na = v.not_after.to_unix_duration().as_secs() as i64;
    let t = at.unix_timestamp();
    if t < nb || t > na {
        return Err(TdxError::CertExpired {
            subject: cert.tbs_certificate.subject.to_string(),
            not_before: nb,
            not_after: na,
            at: t,
        });
    }
    Ok(())
}

/// Verify `chain` (leaf first; a trailing root is allowed and must be Intel's)
/// up to the built-in Intel root, each certificate valid at `at`. Returns the
/// chain without the root. Revocation is [`check_revocation`], once the CRLs
/// themselves are verified against this chain.
pub fn verify_chain(
    chain: &[Certificate],
    root: &Certificate,
    at: OffsetDateTime,
) -> Result<Vec<Certificate>, TdxError> {
    verify_chain_inner(chain, root, Some(at), true)
}

/// As [`verify_chain`]; with `check_signatures` false the signatures (verified
/// before for these exact bytes) are skipped, names are not; validity periods
/// are checked when `at` is given.
pub(crate) fn verify_chain_inner(
    chain: &[Certificate],
    root: &Certificate,
    at: Option<OffsetDateTime>,
    check_signatures: bool,
) -> Result<Vec<Certificate>, TdxError> {
    let mut certs: Vec<Certificate> = chain.to_vec();
    if let Some(last) = certs.last() {
        if last.tbs_certificate.subject == root.tbs_certificate.subject {
            if last != root {
                return Err(TdxError::PckChain(
                    "chain ends in a root that is not Intel's SGX Root CA".into(),
                ));
            }
            certs.pop();
        }
    }
    if certs.is_empty() {
        return Err(TdxError::PckChain("empty certificate chain".into()));
    }
    if let Some(at) = at {
        check_time(root, at)?;
    }
    for (i, cert) in certs.iter().enumerate() {
        let issuer = certs.get(i + 1).unwrap_or(root);
        if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
            return Err(TdxError::PckChain(format!(
                "{} is not issued by {}",
                cert.tbs_certificate.subject, issuer.tbs_certificate.subject
            )));
        }
        if check_signatures {
            let tbs = cert
                .tbs_certificate
                .to_der()
                .map_err(|e| TdxError::CertParse(e.to_string()))?;
            verify_signed_by(issuer, &tbs, cert.signature.raw_bytes()).map_err(|e| {
                TdxError::PckChain(format!(
                    "signature of {} does not verify: {e}",
                    cert.tbs_certificate.subject
                ))
            })?;
        }
        if let Some(at) = at {
            check_time(cert, at)?;
        }
    }
    Ok(certs)
}

/// Fail if a CRL of a certificate's issuer lists its serial number. The CRLs
/// must have been verified ([`verify_crl`]) first.
pub fn check_revocation(chain: &[Certificate], crls: &[CertificateList]) -> Result<(), TdxError> {
    for cert in chain {
        for crl in crls {
            if crl.tbs_cert_list.issuer != cert.tbs_certificate.issuer {
                continue;
            }
            let revoked = crl.tbs_cert_list.revoked_certificates.iter().flatten();
            if revoked
                .into_iter()
                .any(|r| r.serial_number == cert.tbs_certificate.serial_number)
            {
                return Err(TdxError::CertRevoked(
                    cert.tbs_certificate.subject.to_string(),
                ));
            }
        }
    }
    Ok(())
}

/// Check a CRL's signature (by `issuer`) and that it is current at `at`.
pub fn verify_crl(
    crl: &CertificateList,
    issuers: &[&Certificate],
    at: OffsetDateTime,
) -> Result<(), TdxError> {
    let issuer = issuers
        .iter()
        .find(|c| c.tbs_certificate.subject == crl.tbs_cert_list.issuer)
        .ok_or_else(|| {
            TdxError::CollateralSignature(format!(
                "no known issuer for CRL of {}",
                crl.tbs_cert_list.issuer
            ))
        })?;
    let tbs = crl
        .tbs_cert_list
        .to_der()
        .map_err(|e| TdxError::Malformed(e.to_string()))?;
    verify_signed_by(issuer, &tbs, crl.signature.raw_bytes())
        .map_err(|e| TdxError::CollateralSignature(format!("CRL: {e}")))?;
    let this = crl.tbs_cert_list.this_update.to_unix_duration().as_secs() as i64;
    let next = crl
        .tbs_cert_list
        .next_update
        .map(|n| n.to_unix_duration().as_secs() as i64)
        .unwrap_or(i64::MAX);
    let t = at.unix_timestamp();
    if t < this || t > next {
        return Err(TdxError::CollateralExpired {
            what: format!("CRL of {}", crl.tbs_cert_list.issuer),
            from: this,
            until: next,
            at: t,
        });
    }
    Ok(())
}

/// The SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1).
#[derive(Debug, Clone, Default)]
pub struct PckExtension {
    pub fmspc: [u8; 6],
    pub pce_id: [u8; 2],
    /// SGX TCB component SVNs 1..16.
    pub sgx_tcb_components: [u8; 16],
    pub pce_svn: u16,
    pub cpu_svn: [u8; 16],
}

const OID_SGX_EXT: &str = "1.2.840.113741.1.13.1";

/// Minimal DER reader: (tag, content) of the next TLV.
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), TdxError> {
    let bad = || TdxError::CertParse("bad DER in PCK SGX extension".into());
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    let (&l0, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |a, x| (a << 8) | *x as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Iterate `SEQUENCE { OID, value }` entries of a SEQUENCE body.
/// (OID, value tag, value) of one extension entry.
type Entry<'a> = (String, u8, &'a [u8]);

fn entries(mut body: &[u8]) -> Result<Vec<Entry<'_>>, TdxError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (_, seq, rest) = tlv(body)?;
        body = rest;
        let (_, oid, after) = tlv(seq)?;
        let oid = der::asn1::ObjectIdentifier::from_bytes(oid)
            .map_err(|e| TdxError::CertParse(e.to_string()))?;
        let (tag, value, _) = tlv(after)?;
        out.push((oid.to_string(), tag, value));
    }
    Ok(out)
}

fn small_int(v: &[u8]) -> u16 {
    v.iter()
        .fold(0u16, |a, x| a.wrapping_shl(8) | u16::from(*x))
}

pub fn pck_extension(cert: &Certificate) -> Result<PckExtension, TdxError> {
    let ext = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == OID_SGX_EXT)
        .ok_or_else(|| TdxError::CertParse("PCK certificate has no SGX extension".into()))?;
    let (_, body, _) = tlv(ext.extn_value.as_bytes())?;
    let mut out = PckExtension::default();
    let (mut have_fmspc, mut have_tcb) = (false, false);
    for (oid, _, value) in entries(body)? {
        match oid.as_str() {
            "1.2.840.113741.1.13.1.2" => {
                have_tcb = true;
                for (sub, _, v) in entries(value)? {
                    let idx: usize = sub
                        .rsplit('.')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    match idx {
                        1..=16 => out.sgx_tcb_components[idx - 1] = small_int(v) as u8,
                        17 => out.pce_svn = small_int(v),
                        18 if v.len() == 16 => out.cpu_svn.copy_from_slice(v),
                        _ => {}
                    }
                }
            }
            "1.2.840.113741.1.13.1.3" if value.len() == 2 => out.pce_id.copy_from_slice(value),
            "1.2.840.113741.1.13.1.4" if value.len() == 6 => {
                have_fmspc = true;
                out.fmspc.copy_from_slice(value)
            }
            _ => {}
        }
    }
    if !(have_fmspc && have_tcb) {
        return Err(TdxError::CertParse(
            "PCK SGX extension lacks FMSPC or TCB".into(),
        ));
    }
    Ok(out)
}
