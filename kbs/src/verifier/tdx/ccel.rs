//! The TDX CC event log (ACPI CCEL table data): TCG2 crypto-agile format.
//! The first record is a SHA-1-format `TCG_PCR_EVENT` holding the Spec ID event
//! (which lists the digest algorithms and sizes); every further record is a
//! `TCG_PCR_EVENT2`. Index 1..=4 of a record is RTMR 0..=3 (0 is MRTD).

use super::TdxError;
use serde::Serialize;
use sha2::{Digest, Sha384};

const TPM_ALG_SHA384: u16 = 0x000c;
const EV_NO_ACTION: u32 = 0x3;
/// Upper bound on one event, so a corrupt length cannot make us allocate much.
const MAX_EVENT_SIZE: usize = 16 << 20;

/// One digest of an event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventDigest {
    /// TCG algorithm id.
    pub alg: u16,
    /// Lowercase hex.
    pub digest: String,
}

/// One measured event.
#[derive(Debug, Clone, Serialize)]
pub struct CcEvent {
    /// CC measurement register index (1..=4 = RTMR0..3).
    pub index: u32,
    /// TCG event type.
    pub event_type: u32,
    /// TCG event type name (e.g. `EV_EFI_ACTION`), or the number in hex.
    pub type_name: String,
    /// Digests of the event, one per algorithm.
    pub digests: Vec<EventDigest>,
    /// Raw event data.
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl CcEvent {
    pub fn sha384(&self) -> Option<[u8; 48]> {
        self.digests
            .iter()
            .find(|d| d.alg == TPM_ALG_SHA384)
            .and_then(|d| hex::decode(&d.digest).ok())
            .and_then(|v| v.try_into().ok())
    }
}

pub fn type_name(t: u32) -> String {
    let s = match t {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x3 => "EV_NO_ACTION",
        0x4 => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        0x6 => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xa => "EV_PLATFORM_CONFIG_FLAGS",
        0xb => "EV_TABLE_OF_DEVICES",
        0xc => "EV_COMPACT_HASH",
        0xd => "EV_IPL",
        0xe => "EV_IPL_PARTITION_DATA",
        0xf => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000c => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00e1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00e2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        other => return format!("{other:#x}"),
    };
    s.to_string()
}

struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TdxError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| TdxError::EventLog(format!("truncated at offset {}", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, TdxError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, TdxError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn remaining(&self) -> &'a [u8] {
        &self.b[self.pos..]
    }
}

/// Parse a CCEL event log. The ACPI region is larger than the log; parsing
/// stops at the first record that is all 0xFF or zero (unused space).
pub fn parse(log: &[u8]) -> Result<Vec<CcEvent>, TdxError> {
    let mut c = Cur { b: log, pos: 0 };
    // Spec ID event (TCG_PCR_EVENT, SHA-1 layout).
    c.take(4)?; // pcr index
    let t = c.u32()?;
    if t != EV_NO_ACTION {
        return Err(TdxError::EventLog(
            "first event is not the Spec ID event".into(),
        ));
    }
    c.take(20)?;
    let size = c.u32()? as usize;
    let spec = c.take(size)?;
    if spec.len() < 28 || !spec.starts_with(b"Spec ID Event03\0") {
        return Err(TdxError::EventLog(
            "not a crypto-agile (Spec ID Event03) log".into(),
        ));
    }
    let mut s = Cur { b: spec, pos: 24 };
    let n_algs = s.u32()? as usize;
    let mut sizes = Vec::with_capacity(n_algs.min(16));
    for _ in 0..n_algs {
        let alg = s.u16()?;
        let sz = s.u16()? as usize;
        sizes.push((alg, sz));
    }
    let mut out = Vec::new();
    while c.remaining().len() >= 8 {
        let head = &c.remaining()[..8];
        if head.iter().all(|b| *b == 0xff) || head.iter().all(|b| *b == 0) {
            break;
        }
        let index = c.u32()?;
        let event_type = c.u32()?;
        let count = c.u32()? as usize;
        if count > sizes.len() {
            return Err(TdxError::EventLog(format!(
                "event with {count} digests, log declares {}",
                sizes.len()
            )));
        }
        let mut digests = Vec::with_capacity(count);
        for _ in 0..count {
            let alg = c.u16()?;
            let sz = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    TdxError::EventLog(format!("undeclared digest algorithm {alg:#x}"))
                })?;
            digests.push(EventDigest {
                alg,
                digest: hex::encode(c.take(sz)?),
            });
        }
        let size = c.u32()? as usize;
        if size > MAX_EVENT_SIZE {
            return Err(TdxError::EventLog(format!("event of {size} bytes")));
        }
        let data = c.take(size)?.to_vec();
        out.push(CcEvent {
            index,
            event_type,
            type_name: type_name(event_type),
            digests,
            data,
        });
    }
    Ok(out)
}

/// Replay the log into RTMR 0..=3 values (start at zero, extend with SHA-384).
pub fn replay(events: &[CcEvent]) -> Result<[[u8; 48]; 4], TdxError> {
    let mut rtmr = [[0u8; 48]; 4];
    for e in events {
        if e.event_type == EV_NO_ACTION {
            continue;
        }
        let i = match e.index {
            1..=4 => (e.index - 1) as usize,
            other => {
                return Err(TdxError::EventLog(format!(
                    "event for MR index {other}, not an RTMR"
                )))
            }
        };
        let d = e
            .sha384()
            .ok_or_else(|| TdxError::EventLog("event without a SHA-384 digest".into()))?;
        let mut h = Sha384::new();
        h.update(rtmr[i]);
        h.update(d);
        rtmr[i].copy_from_slice(&h.finalize());
    }
    Ok(rtmr)
}
