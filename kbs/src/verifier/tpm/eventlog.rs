//! TCG crypto-agile event log (TCG PC Client Platform Firmware Profile §10):
//! parse it and replay its SHA-256 digests, so the log can be checked against the
//! PCR values the quote signed. The same format carries TDX's CCEL (with SHA-384
//! and RTMR indices), which is what the parser is tested against.
//!
//! Layout (little-endian, unlike the TPM's own structures): one legacy
//! `TCG_PCClientPCREvent` holding the `Spec ID Event03` header (the algorithms and
//! their digest sizes), then `TCG_PCR_EVENT2` records: pcrIndex u32, eventType
//! u32, digest count u32, (algId u16, digest)*, eventSize u32, event bytes.

use super::wire::{TPM_ALG_SHA256, TPM_ALG_SHA384};
use super::TpmError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";
// Bounds on hostile input: far above any real firmware log.
const MAX_EVENTS: usize = 100_000;
const MAX_ALGORITHMS: u32 = 16;

/// One measured (or informational) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub event_type: u32,
    /// (TPM algorithm id, digest), in log order.
    pub digests: Vec<(u16, Vec<u8>)>,
    pub data: Vec<u8>,
}

/// A parsed log.
#[derive(Debug, Clone)]
pub struct EventLog {
    /// (TPM algorithm id, digest size) from the Spec ID header.
    pub algorithms: Vec<(u16, u16)>,
    /// Events after the Spec ID header.
    pub events: Vec<Event>,
}

fn bad(reason: impl Into<String>) -> TpmError {
    TpmError::EventLog(reason.into())
}

struct Le<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad(format!("truncated at offset {}", self.pos)))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TpmError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TpmError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn sized(&mut self) -> Result<&'a [u8], TpmError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// The rest is padding (ACPI log areas are pre-filled with 0xFF or zeros).
    fn at_end(&self) -> bool {
        let rest = &self.buf[self.pos..];
        rest.iter().all(|b| *b == 0xff) || rest.iter().all(|b| *b == 0)
    }
}

/// Parse a crypto-agile event log. SHA-1-only (legacy) logs are refused.
pub fn parse(buf: &[u8]) -> Result<EventLog, TpmError> {
    let mut r = Le { buf, pos: 0 };
    // Legacy header event: pcrIndex, eventType, SHA-1 digest, event.
    let _pcr = r.u32()?;
    let ty = r.u32()?;
    let _sha1 = r.take(20)?;
    let spec = r.sized()?;
    if ty != EV_NO_ACTION || spec.len() < 16 || &spec[..16] != SPEC_ID_SIGNATURE {
        return Err(bad("no `Spec ID Event03` header: not a crypto-agile log"));
    }
    let mut s = Le {
        buf: &spec[16..],
        pos: 0,
    };
    let _platform_class = s.u32()?;
    let _version = s.take(4)?; // minor, major, errata, uintnSize
    let count = s.u32()?;
    if count == 0 || count > MAX_ALGORITHMS {
        return Err(bad(format!("{count} digest algorithms in the header")));
    }
    let mut algorithms = Vec::new();
    for _ in 0..count {
        algorithms.push((s.u16()?, s.u16()?));
    }
    let vendor = usize::from(s.u8()?);
    s.take(vendor)?;

    let mut events = Vec::new();
    while !r.at_end() {
        if events.len() == MAX_EVENTS {
            return Err(bad(format!("more than {MAX_EVENTS} events")));
        }
        let pcr = r.u32()?;
        let event_type = r.u32()?;
        let n = r.u32()?;
        if n > count {
            return Err(bad(format!("event {} has {n} digests", events.len())));
        }
        let mut digests = Vec::new();
        for _ in 0..n {
            let alg = r.u16()?;
            let size = algorithms
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| usize::from(*s))
                .ok_or_else(|| bad(format!("digest algorithm {alg:#06x} not in the header")))?;
            digests.push((alg, r.take(size)?.to_vec()));
        }
        let data = r.sized()?.to_vec();
        events.push(Event {
            pcr,
            event_type,
            digests,
            data,
        });
    }
    Ok(EventLog { algorithms, events })
}

impl EventLog {
    /// Replay the SHA-256 bank: the value each PCR the log extends must have now.
    /// A `StartupLocality` event sets PCR 0's starting value to the locality.
    pub fn replay_sha256(&self) -> Result<BTreeMap<u32, [u8; 32]>, TpmError> {
        if !self.algorithms.iter().any(|(a, _)| *a == TPM_ALG_SHA256) {
            return Err(bad("the log has no SHA-256 digests"));
        }
        let mut pcrs: BTreeMap<u32, [u8; 32]> = BTreeMap::new();
        for (i, e) in self.events.iter().enumerate() {
            if e.event_type == EV_NO_ACTION {
                if e.pcr == 0 && e.data.len() >= 17 && &e.data[..16] == STARTUP_LOCALITY {
                    let mut start = [0u8; 32];
                    start[31] = e.data[16];
                    pcrs.insert(0, start);
                }
                continue;
            }
            let digest = e
                .digests
                .iter()
                .find(|(a, _)| *a == TPM_ALG_SHA256)
                .ok_or_else(|| bad(format!("event {i} has no SHA-256 digest")))?;
            let pcr = pcrs.entry(e.pcr).or_insert([0u8; 32]);
            let mut h = Sha256::new();
            h.update(*pcr);
            h.update(&digest.1);
            *pcr = h.finalize().into();
        }
        Ok(pcrs)
    }
}

/// TPM algorithm name for logs and tests.
pub fn algorithm_name(alg: u16) -> &'static str {
    match alg {
        TPM_ALG_SHA256 => "SHA-256",
        TPM_ALG_SHA384 => "SHA-384",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// TDX CCEL logs from Trustee, and the parse its tools made of them.
    fn check_against_reference(raw: &[u8], parsed_json: &str) {
        let log = parse(raw).unwrap();
        assert_eq!(log.algorithms, vec![(TPM_ALG_SHA384, 48)]);
        let want: serde_json::Value = serde_json::from_str(parsed_json).unwrap();
        let want = want["uefi_event_logs"].as_array().unwrap();
        assert_eq!(log.events.len(), want.len());
        let b64 = base64::engine::general_purpose::STANDARD;
        for (got, want) in log.events.iter().zip(want) {
            assert_eq!(u64::from(got.pcr), want["index"].as_u64().unwrap());
            let wd = &want["digests"][0];
            assert_eq!(
                algorithm_name(got.digests[0].0),
                wd["alg"].as_str().unwrap()
            );
            assert_eq!(
                hex::encode(&got.digests[0].1),
                wd["digest"].as_str().unwrap()
            );
            assert_eq!(b64.encode(&got.data), want["event"].as_str().unwrap());
        }
        // No SHA-256 bank in a TDX log: nothing to replay for a TPM.
        assert!(matches!(log.replay_sha256(), Err(TpmError::EventLog(_))));
    }

    #[test]
    fn parses_real_ccel_logs_like_the_reference_parser() {
        check_against_reference(
            include_bytes!("../../../testdata/eventlog/CCEL_data"),
            include_str!("../../../testdata/eventlog/CCEL_data.parsed.json"),
        );
        check_against_reference(
            include_bytes!("../../../testdata/eventlog/CCEL_data_ovmf"),
            include_str!("../../../testdata/eventlog/CCEL_data_ovmf.parsed.json"),
        );
    }

    #[test]
    fn truncated_and_legacy_logs_are_refused() {
        let raw = include_bytes!("../../../testdata/eventlog/CCEL_data_ovmf");
        let log = parse(raw).unwrap();
        // Cut in the middle of the second event.
        let cut = 4 + 4 + 20 + 4 + 60 + 30;
        assert!(matches!(parse(&raw[..cut]), Err(TpmError::EventLog(_))));
        assert!(!log.events.is_empty());
        let mut legacy = raw.to_vec();
        legacy[32] = b'X'; // breaks the Spec ID signature
        assert!(matches!(parse(&legacy), Err(TpmError::EventLog(_))));
    }
}
