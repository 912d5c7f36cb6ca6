//! Intel TDX measurements computable offline.
//!
//! * MRTD: the TDX module hashes, with SHA-384, one 128-byte record per 4 KiB page the
//!   VMM adds (`"MEM.PAGE.ADD"`, GPA) and, for sections marked MR.EXTEND, one 128-byte
//!   record (`"MR.EXTEND"`, GPA) followed by the 256 data bytes for every 256-byte chunk.
//!   Which pages and data come from the TDVF metadata in the firmware (OVMF IntelTdx or
//!   Debian's unified `OVMF.fd`), found through the OVMF footer GUID table.
//!   Current KVM adds and extends page by page ([`PageOrder::Interleaved`]); some older
//!   TDX stacks added every page of a section first ([`PageOrder::TwoPass`]).
//! * RTMR2 for a QEMU direct kernel boot: OVMF extends the kernel command line it passes
//!   to the kernel (`LOADED_IMAGE::LoadOptions`: UTF-16LE of the command line plus
//!   `" initrd=initrd"` when an initrd is given, NUL-terminated) and the initrd bytes.
//!   The event sequence is the one in a real OVMF TD event log (`testdata/`).

use sha2::{Digest, Sha384};

use super::ovmf::{footer_table, guid_le, FooterError};
use super::MeasureError;

const TDX_METADATA_OFFSET_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";
const PAGE: u64 = 4096;
const CHUNK: usize = 256;
const ATTR_MR_EXTEND: u32 = 0x1;
const ATTR_PAGE_AUG: u32 = 0x2;
/// Upper bound on measured pages (a corrupt table must not spin for hours).
const MAX_PAGES: u64 = 1 << 20;

/// One TDVF metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    pub data_offset: u32,
    pub raw_data_size: u32,
    pub memory_address: u64,
    pub memory_data_size: u64,
    /// 0 BFV, 1 CFV, 2 TD_HOB, 3 TempMem, 4 PermMem, 5 Payload, 6 PayloadParam.
    pub section_type: u32,
    pub attributes: u32,
}

/// The order in which the VMM adds and extends pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageOrder {
    /// Per page: PAGE.ADD, then its 16 MR.EXTENDs (upstream KVM, QEMU ≥ 9.2).
    #[default]
    Interleaved,
    /// Per section: every PAGE.ADD, then every MR.EXTEND.
    TwoPass,
}

/// Parses the TDVF metadata of a firmware image.
pub fn tdvf_sections(fw: &[u8]) -> Result<Vec<TdvfSection>, MeasureError> {
    let table = footer_table(fw)?;
    let entry = table
        .get(&guid_le(TDX_METADATA_OFFSET_GUID))
        .ok_or(FooterError::Missing("TDX metadata offset"))?;
    let off = entry
        .get(..4)
        .ok_or(FooterError::Malformed("short TDX metadata entry"))?;
    let from_end = u32::from_le_bytes([off[0], off[1], off[2], off[3]]) as usize;
    let start = fw
        .len()
        .checked_sub(from_end)
        .ok_or(FooterError::Malformed(
            "TDX metadata offset beyond the image",
        ))?;
    let desc = fw
        .get(start..start + 16)
        .ok_or(FooterError::Malformed("truncated TDVF descriptor"))?;
    if &desc[..4] != b"TDVF" {
        return Err(FooterError::Malformed("TDVF descriptor signature").into());
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |b: &[u8], i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    if u32_at(desc, 8) != 1 {
        return Err(FooterError::Malformed("TDVF descriptor version is not 1").into());
    }
    let count = u32_at(desc, 12) as usize;
    let mut out = Vec::with_capacity(count.min(64));
    for i in 0..count {
        let at = start + 16 + 32 * i;
        let s = fw
            .get(at..at + 32)
            .ok_or(FooterError::Malformed("truncated TDVF section table"))?;
        let sec = TdvfSection {
            data_offset: u32_at(s, 0),
            raw_data_size: u32_at(s, 4),
            memory_address: u64_at(s, 8),
            memory_data_size: u64_at(s, 16),
            section_type: u32_at(s, 24),
            attributes: u32_at(s, 28),
        };
        if !sec.memory_address.is_multiple_of(PAGE) || !sec.memory_data_size.is_multiple_of(PAGE) {
            return Err(FooterError::Malformed("TDVF section not page aligned").into());
        }
        if sec.attributes & ATTR_MR_EXTEND != 0 {
            let end = sec.data_offset as u64 + sec.memory_data_size;
            if sec.memory_data_size < u64::from(sec.raw_data_size) || end > fw.len() as u64 {
                return Err(
                    FooterError::Malformed("measured TDVF section outside the image").into(),
                );
            }
        }
        out.push(sec);
    }
    Ok(out)
}

fn record(tag: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[..tag.len()].copy_from_slice(tag);
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

/// MRTD of a TD booted from this firmware.
pub fn mrtd(fw: &[u8], order: PageOrder) -> Result<[u8; 48], MeasureError> {
    let sections = tdvf_sections(fw)?;
    let total: u64 = sections.iter().map(|s| s.memory_data_size / PAGE).sum();
    if total > MAX_PAGES {
        return Err(FooterError::Malformed("TDVF sections cover too much memory").into());
    }
    let mut h = Sha384::new();
    let add = |h: &mut Sha384, s: &TdvfSection, page: u64| {
        if s.attributes & ATTR_PAGE_AUG == 0 {
            h.update(record(b"MEM.PAGE.ADD", s.memory_address + page * PAGE));
        }
    };
    let extend = |h: &mut Sha384, s: &TdvfSection, page: u64| {
        if s.attributes & ATTR_MR_EXTEND == 0 {
            return;
        }
        for c in 0..(PAGE as usize / CHUNK) {
            let off = (page * PAGE) as usize + c * CHUNK;
            h.update(record(b"MR.EXTEND", s.memory_address + off as u64));
            let at = s.data_offset as usize + off;
            // Bounds were checked when parsing.
            h.update(&fw[at..at + CHUNK]);
        }
    };
    for s in &sections {
        let pages = s.memory_data_size / PAGE;
        match order {
            PageOrder::Interleaved => {
                for p in 0..pages {
                    add(&mut h, s, p);
                    extend(&mut h, s, p);
                }
            }
            PageOrder::TwoPass => {
                (0..pages).for_each(|p| add(&mut h, s, p));
                (0..pages).for_each(|p| extend(&mut h, s, p));
            }
        }
    }
    Ok(h.finalize().into())
}

/// RTMR extension: `new = SHA-384(old || digest)`, starting from zeros.
pub fn fold(digests: &[[u8; 48]]) -> [u8; 48] {
    let mut r = [0u8; 48];
    for d in digests {
        let mut h = Sha384::new();
        h.update(r);
        h.update(d);
        r = h.finalize().into();
    }
    r
}

/// What OVMF passes as the kernel's load options: the command line, plus
/// `" initrd=initrd"` when QEMU gave it an initrd, as NUL-terminated UTF-16LE.
pub fn load_options(cmdline: &str, has_initrd: bool) -> Vec<u8> {
    let mut s = cmdline.to_string();
    if has_initrd {
        s.push_str(" initrd=initrd");
    }
    let mut out: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&[0, 0]);
    out
}

/// RTMR2 after a direct kernel boot: [load options, initrd].
pub fn rtmr2(cmdline: &str, initrd: Option<&[u8]>) -> [u8; 48] {
    let mut events: Vec<[u8; 48]> =
        vec![Sha384::digest(load_options(cmdline, initrd.is_some())).into()];
    if let Some(i) = initrd {
        events.push(Sha384::digest(i).into());
    }
    fold(&events)
}

/// RTMR1 after a direct kernel boot, given the Authenticode SHA-384 of the kernel image
/// exactly as the firmware loaded it: [kernel, "Calling EFI Application from Boot
/// Option", "Exit Boot Services Invocation", "Exit Boot Services Returned with Success"].
pub fn rtmr1(kernel_authenticode: [u8; 48]) -> [u8; 48] {
    let action = |s: &str| -> [u8; 48] { Sha384::digest(s.as_bytes()).into() };
    fold(&[
        kernel_authenticode,
        action("Calling EFI Application from Boot Option"),
        action("Exit Boot Services Invocation"),
        action("Exit Boot Services Returned with Success"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_options_encoding() {
        let o = load_options("a b", true);
        assert_eq!(&o[..6], &[b'a', 0, b' ', 0, b'b', 0]);
        assert_eq!(&o[o.len() - 2..], &[0, 0]);
        assert_eq!(o.len(), ("a b initrd=initrd".len() + 1) * 2);
        assert_eq!(load_options("x", false), vec![b'x', 0, 0, 0]);
    }

    #[test]
    fn fold_is_order_sensitive() {
        let a = [1u8; 48];
        let b = [2u8; 48];
        assert_ne!(fold(&[a, b]), fold(&[b, a]));
        assert_eq!(fold(&[]), [0u8; 48]);
    }

    #[test]
    fn efi_action_digests_match_a_real_td_event_log() {
        // Digests of EV_EFI_ACTION events copied from testdata/CCEL_data_ovmf.parsed.json.
        let want = "77a0dab2312b4e1e57a84d86";
        assert!(
            hex::encode(Sha384::digest(b"Calling EFI Application from Boot Option"))
                .starts_with(want)
        );
    }
}
