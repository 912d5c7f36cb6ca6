//! Content digests (`sha256:<hex>`) and hashing readers used while streaming.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:<64 hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sha256Digest {
    hex: String,
}

impl Sha256Digest {
    /// Parses `sha256:<hex>`; other algorithms are refused (fail closed).
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::Unsupported(format!("digest algorithm of {s:?}")))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::Manifest(format!("malformed digest {s:?}")));
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }

    /// Digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    pub(crate) fn from_hasher(h: Sha256) -> Self {
        Self {
            hex: hex::encode(h.finalize()),
        }
    }

    /// The lowercase hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks `self` against `actual`, naming `what` in the error.
    pub fn verify(&self, actual: &Sha256Digest, what: &str) -> Result<()> {
        if self == actual {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                what: what.to_owned(),
                expected: self.to_string(),
                actual: actual.to_string(),
            })
        }
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// A reader that hashes and counts everything read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Digest and byte count of everything read.
    pub fn finish(self) -> (Sha256Digest, u64, R) {
        (
            Sha256Digest::from_hasher(self.hasher),
            self.count,
            self.inner,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Message of the error [`LimitedReader`] returns.
pub const LIMIT_MSG: &str = "layer exceeds the configured size limit";

/// A reader that fails once more than `limit` bytes come through it, so a
/// decompression bomb cannot fill the disk.
#[derive(Debug)]
pub struct LimitedReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> LimitedReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
        }
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, LIMIT_MSG));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bad_digests() {
        assert!(Sha256Digest::parse("sha512:00").is_err());
        assert!(Sha256Digest::parse("sha256:abc").is_err());
        assert!(Sha256Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        let d = Sha256Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Sha256Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn hashing_reader_counts_and_hashes() {
        let mut r = HashingReader::new(&b"hello"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (d, n, _) = r.finish();
        assert_eq!(n, 5);
        assert_eq!(d, Sha256Digest::of(b"hello"));
    }

    #[test]
    fn limited_reader_stops_bombs() {
        let mut r = LimitedReader::new(&[0u8; 100][..], 10);
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
