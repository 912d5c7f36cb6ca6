//! Parsers for the TPM 2.0 wire structures a quote carries (TPM 2.0 Library,
//! Part 2: Structures). Big-endian, size-prefixed; every parser rejects
//! truncated input and trailing bytes so that what is verified is exactly what
//! was signed.

use super::TpmError;

/// `TPM_GENERATED_VALUE`: the TPM only puts this in structures it generated itself.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

pub const TPM_ALG_RSA: u16 = 0x0001;
pub const TPM_ALG_SHA1: u16 = 0x0004;
pub const TPM_ALG_SHA256: u16 = 0x000b;
pub const TPM_ALG_SHA384: u16 = 0x000c;
pub const TPM_ALG_SHA512: u16 = 0x000d;
pub const TPM_ALG_NULL: u16 = 0x0010;
pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
pub const TPM_ALG_ECDSA: u16 = 0x0018;
pub const TPM_ALG_ECDAA: u16 = 0x001a;
pub const TPM_ALG_ECC: u16 = 0x0023;
pub const TPM_ECC_NIST_P256: u16 = 0x0003;

/// TPMA_OBJECT bits the verifier looks at.
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

/// Digest size of a TPM hash algorithm, `None` for algorithms we do not know.
pub fn digest_size(alg: u16) -> Option<usize> {
    match alg {
        TPM_ALG_SHA1 => Some(20),
        TPM_ALG_SHA256 => Some(32),
        TPM_ALG_SHA384 => Some(48),
        TPM_ALG_SHA512 => Some(64),
        _ => None,
    }
}

/// A cursor over big-endian TPM bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return Err(TpmError::Truncated {
                what: self.what,
                offset: self.pos,
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TpmError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TpmError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, TpmError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A TPM2B: u16 size then that many bytes, at most `max`.
    fn tpm2b(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], TpmError> {
        let at = self.pos;
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(TpmError::Malformed {
                what: self.what,
                reason: format!("{field} is {n} bytes at offset {at}, at most {max} allowed"),
            });
        }
        self.take(n)
    }

    fn finish(self) -> Result<(), TpmError> {
        if self.pos != self.buf.len() {
            return Err(TpmError::Malformed {
                what: self.what,
                reason: format!("{} trailing bytes", self.buf.len() - self.pos),
            });
        }
        Ok(())
    }
}

/// One `TPMS_PCR_SELECTION`: a bank and the PCRs chosen in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub hash: u16,
    /// Selected PCR indices, ascending (the order the TPM hashes them in).
    pub pcrs: Vec<u8>,
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// A `TPMS_ATTEST` of type quote.
#[derive(Debug, Clone)]
pub struct QuoteAttest {
    /// `qualifiedSigner`: the TPM name of the signing key (nameAlg ‖ digest).
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the caller's qualifying data.
    pub extra_data: Vec<u8>,
    pub clock: ClockInfo,
    pub firmware_version: u64,
    pub selections: Vec<PcrSelection>,
    pub pcr_digest: Vec<u8>,
}

// TPM2B size limits: names carry at most a 2-byte alg + SHA-512 digest, data and
// digests at most a SHA-512 digest (TPMU_HA).
const MAX_NAME: usize = 2 + 64;
const MAX_DIGEST: usize = 64;
// Implementations have 24 PCRs; the selection bitmap is at least 3 bytes. Allow
// up to 64 PCRs and a handful of banks, which bounds the work on hostile input.
const MAX_SELECT_BYTES: u8 = 8;
const MAX_BANKS: u32 = 8;

pub fn parse_quote_attest(buf: &[u8]) -> Result<QuoteAttest, TpmError> {
    let mut r = Reader::new(buf, "TPMS_ATTEST");
    let magic = r.u32()?;
    if magic != TPM_GENERATED_VALUE {
        return Err(TpmError::BadMagic(magic));
    }
    let ty = r.u16()?;
    if ty != TPM_ST_ATTEST_QUOTE {
        return Err(TpmError::NotAQuote(ty));
    }
    let qualified_signer = r.tpm2b("qualifiedSigner", MAX_NAME)?.to_vec();
    let extra_data = r.tpm2b("extraData", MAX_DIGEST)?.to_vec();
    let clock = ClockInfo {
        clock: r.u64()?,
        reset_count: r.u32()?,
        restart_count: r.u32()?,
        safe: r.u8()? != 0,
    };
    let firmware_version = r.u64()?;
    let count = r.u32()?;
    if count > MAX_BANKS {
        return Err(TpmError::Malformed {
            what: "TPMS_ATTEST",
            reason: format!("{count} PCR banks selected"),
        });
    }
    let mut selections = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let hash = r.u16()?;
        let size = r.u8()?;
        if size > MAX_SELECT_BYTES {
            return Err(TpmError::Malformed {
                what: "TPMS_ATTEST",
                reason: format!("PCR select bitmap of {size} bytes"),
            });
        }
        let bitmap = r.take(usize::from(size))?;
        let mut pcrs = Vec::new();
        for (byte_index, byte) in bitmap.iter().enumerate() {
            for bit in 0..8u8 {
                if byte & (1 << bit) != 0 {
                    // byte_index < 8, so the index fits in a u8.
                    pcrs.push(byte_index as u8 * 8 + bit);
                }
            }
        }
        selections.push(PcrSelection { hash, pcrs });
    }
    let pcr_digest = r.tpm2b("pcrDigest", MAX_DIGEST)?.to_vec();
    r.finish()?;
    Ok(QuoteAttest {
        qualified_signer,
        extra_data,
        clock,
        firmware_version,
        selections,
        pcr_digest,
    })
}

/// A `TPMT_SIGNATURE` of the kinds a quote can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSignature {
    RsaSsa { hash: u16, sig: Vec<u8> },
    Ecdsa { hash: u16, r: Vec<u8>, s: Vec<u8> },
}

// RSA moduli up to 4096 bits; ECC parameters up to P-521 (66 bytes).
const MAX_RSA: usize = 512;
const MAX_ECC: usize = 66;

pub fn parse_signature(buf: &[u8]) -> Result<TpmSignature, TpmError> {
    let mut r = Reader::new(buf, "TPMT_SIGNATURE");
    let alg = r.u16()?;
    let sig = match alg {
        TPM_ALG_RSASSA => {
            let hash = r.u16()?;
            let sig = r.tpm2b("signature", MAX_RSA)?.to_vec();
            TpmSignature::RsaSsa { hash, sig }
        }
        TPM_ALG_ECDSA => {
            let hash = r.u16()?;
            let sr = r.tpm2b("signatureR", MAX_ECC)?.to_vec();
            let ss = r.tpm2b("signatureS", MAX_ECC)?.to_vec();
            TpmSignature::Ecdsa { hash, r: sr, s: ss }
        }
        other => return Err(TpmError::UnsupportedSignature(other)),
    };
    r.finish()?;
    Ok(sig)
}

/// The public key inside a `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmPublicKey {
    /// Modulus (big-endian, as stored) and exponent (0 means the default 65537).
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// Affine coordinates on `curve`.
    Ecc { curve: u16, x: Vec<u8>, y: Vec<u8> },
}

/// A `TPMT_PUBLIC`, with what the verifier needs of it.
#[derive(Debug, Clone)]
pub struct TpmPublic {
    pub name_alg: u16,
    pub attributes: u32,
    /// Signing scheme and its hash, when the key is bound to one.
    pub scheme: Option<(u16, u16)>,
    pub key: TpmPublicKey,
}

fn sym_def_object(r: &mut Reader<'_>) -> Result<(), TpmError> {
    let alg = r.u16()?;
    if alg != TPM_ALG_NULL {
        let _key_bits = r.u16()?;
        let _mode = r.u16()?;
    }
    Ok(())
}

fn scheme(r: &mut Reader<'_>) -> Result<Option<(u16, u16)>, TpmError> {
    let alg = r.u16()?;
    if alg == TPM_ALG_NULL {
        return Ok(None);
    }
    let hash = r.u16()?;
    if alg == TPM_ALG_ECDAA {
        let _count = r.u16()?;
    }
    Ok(Some((alg, hash)))
}

pub fn parse_public(buf: &[u8]) -> Result<TpmPublic, TpmError> {
    let mut r = Reader::new(buf, "TPMT_PUBLIC");
    let ty = r.u16()?;
    let name_alg = r.u16()?;
    let attributes = r.u32()?;
    let _auth_policy = r.tpm2b("authPolicy", MAX_DIGEST)?;
    let (scheme, key) = match ty {
        TPM_ALG_RSA => {
            sym_def_object(&mut r)?;
            let scheme = scheme(&mut r)?;
            let _key_bits = r.u16()?;
            let exponent = r.u32()?;
            let modulus = r.tpm2b("unique.rsa", MAX_RSA)?.to_vec();
            (scheme, TpmPublicKey::Rsa { modulus, exponent })
        }
        TPM_ALG_ECC => {
            sym_def_object(&mut r)?;
            let scheme = scheme(&mut r)?;
            let curve = r.u16()?;
            let kdf = r.u16()?;
            if kdf != TPM_ALG_NULL {
                let _kdf_hash = r.u16()?;
            }
            let x = r.tpm2b("unique.ecc.x", MAX_ECC)?.to_vec();
            let y = r.tpm2b("unique.ecc.y", MAX_ECC)?.to_vec();
            (scheme, TpmPublicKey::Ecc { curve, x, y })
        }
        other => {
            return Err(TpmError::Malformed {
                what: "TPMT_PUBLIC",
                reason: format!("key type {other:#06x} is neither RSA nor ECC"),
            })
        }
    };
    r.finish()?;
    Ok(TpmPublic {
        name_alg,
        attributes,
        scheme,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_truncation_and_oversize() {
        assert!(matches!(
            parse_quote_attest(&[0xff, 0x54]),
            Err(TpmError::Truncated { .. })
        ));
        let mut b = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
        b.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        b.extend_from_slice(&[0x01, 0x00]); // qualifiedSigner of 256 bytes
        assert!(matches!(
            parse_quote_attest(&b),
            Err(TpmError::Malformed { .. })
        ));
    }

    #[test]
    fn signature_rejects_unknown_alg_and_trailing_bytes() {
        assert!(matches!(
            parse_signature(&[0x00, 0x16, 0x00, 0x0b, 0x00, 0x00]),
            Err(TpmError::UnsupportedSignature(TPM_ALG_RSAPSS))
        ));
        assert!(matches!(
            parse_signature(&[0x00, 0x14, 0x00, 0x0b, 0x00, 0x01, 0xaa, 0xbb]),
            Err(TpmError::Malformed { .. })
        ));
    }
}
