//! The ocicrypt layer cipher: AES-256-CTR (16-byte nonce as the initial
//! counter block, big-endian increment like Go's `cipher.NewCTR`) with
//! HMAC-SHA256 over the ciphertext, keyed with the same symmetric key.

use std::io::{self, Read, Write};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = hmac::Hmac<Sha256>;

/// Cipher name in the public options.
pub const CIPHER_AES256_CTR: &str = "AES_256_CTR_HMAC_SHA256";

/// Key material of one encrypted layer.
#[derive(Clone)]
pub struct LayerKey {
    pub symkey: Zeroizing<[u8; 32]>,
    pub nonce: [u8; 16],
}

impl std::fmt::Debug for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerKey(..)")
    }
}

impl LayerKey {
    pub fn from_slices(symkey: &[u8], nonce: &[u8]) -> Result<Self> {
        let symkey: [u8; 32] = symkey.try_into().map_err(|_| {
            Error::Decrypt(format!("symmetric key is {} bytes, want 32", symkey.len()))
        })?;
        let nonce: [u8; 16] = nonce
            .try_into()
            .map_err(|_| Error::Decrypt(format!("nonce is {} bytes, want 16", nonce.len())))?;
        Ok(Self {
            symkey: Zeroizing::new(symkey),
            nonce,
        })
    }

    /// A fresh random key and nonce.
    pub fn generate() -> Result<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        let mut n = [0u8; 16];
        getrandom::fill(k.as_mut()).map_err(|e| Error::Key(format!("random: {e}")))?;
        getrandom::fill(&mut n).map_err(|e| Error::Key(format!("random: {e}")))?;
        Ok(Self {
            symkey: k,
            nonce: n,
        })
    }

    fn ctr(&self) -> Aes256Ctr {
        Aes256Ctr::new(&(*self.symkey).into(), &self.nonce.into())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length: this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(self.symkey.as_ref())
            .unwrap_or_else(|_| unreachable_hmac())
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> HmacSha256 {
    panic!("HMAC-SHA256 accepts any key length")
}

/// Streams ciphertext through HMAC only (the verification pass).
#[derive(Clone)]
pub struct HmacVerifier {
    mac: HmacSha256,
    fresh: HmacSha256,
}

impl std::fmt::Debug for HmacVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacVerifier")
    }
}

impl HmacVerifier {
    pub fn new(key: &LayerKey) -> Self {
        let mac = key.mac();
        Self {
            fresh: mac.clone(),
            mac,
        }
    }
    /// Forgets everything hashed so far (a download restarted from zero).
    pub fn reset(&mut self) {
        self.mac = self.fresh.clone();
    }
    pub fn update(&mut self, ciphertext: &[u8]) {
        self.mac.update(ciphertext);
    }
    /// Constant-time comparison with the expected tag.
    pub fn verify(self, expected: &[u8], layer: &str) -> Result<()> {
        let tag = self.mac.finalize().into_bytes();
        if tag.len() == expected.len() && bool::from(tag.as_slice().ct_eq(expected)) {
            Ok(())
        } else {
            Err(Error::BadHmac(layer.to_owned()))
        }
    }
}

/// Decrypts a ciphertext stream (call only after its HMAC was verified).
pub struct DecryptReader<R> {
    inner: R,
    ctr: Aes256Ctr,
}

impl<R> std::fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecryptReader")
    }
}

impl<R: Read> DecryptReader<R> {
    pub fn new(inner: R, key: &LayerKey) -> Self {
        Self {
            inner,
            ctr: key.ctr(),
        }
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctr.apply_keystream(&mut buf[..n]);
        Ok(n)
    }
}

/// Encrypts everything written to it and MACs the ciphertext.
pub struct EncryptWriter<W> {
    inner: W,
    ctr: Aes256Ctr,
    mac: HmacSha256,
    buf: Vec<u8>,
}

impl<W> std::fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptWriter")
    }
}

impl<W: Write> EncryptWriter<W> {
    pub fn new(inner: W, key: &LayerKey) -> Self {
        Self {
            inner,
            ctr: key.ctr(),
            mac: key.mac(),
            buf: Vec::new(),
        }
    }

    /// Returns the writer and the HMAC of all ciphertext.
    pub fn finish(mut self) -> io::Result<(W, Vec<u8>)> {
        self.inner.flush()?;
        Ok((self.inner, self.mac.finalize().into_bytes().to_vec()))
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.ctr.apply_keystream(&mut self.buf);
        self.mac.update(&self.buf);
        self.inner.write_all(&self.buf)?;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hmac() {
        let key = LayerKey::generate().unwrap();
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = EncryptWriter::new(Vec::new(), &key);
        for chunk in plain.chunks(777) {
            w.write_all(chunk).unwrap();
        }
        let (ct, tag) = w.finish().unwrap();
        assert_ne!(ct, plain);
        let mut v = HmacVerifier::new(&key);
        v.update(&ct);
        v.verify(&tag, "l").unwrap();
        let mut out = Vec::new();
        DecryptReader::new(&ct[..], &key)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);

        let mut bad = ct.clone();
        bad[5000] ^= 1;
        let mut v = HmacVerifier::new(&key);
        v.update(&bad);
        assert!(matches!(v.verify(&tag, "l"), Err(Error::BadHmac(_))));
    }

    #[test]
    fn counter_is_big_endian_128() {
        // Go's CTR increments the whole 16-byte block: with a nonce ending in
        // 0xff the second block must carry into the previous byte.
        let key = LayerKey::from_slices(
            &[7u8; 32],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
        )
        .unwrap();
        let mut a = vec![0u8; 32];
        key.ctr().apply_keystream(&mut a);
        let key2 = LayerKey::from_slices(
            &[7u8; 32],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        )
        .unwrap();
        let mut b = vec![0u8; 16];
        key2.ctr().apply_keystream(&mut b);
        assert_eq!(&a[16..], &b[..]);
    }
}
