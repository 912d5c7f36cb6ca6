//! TDX measurements: MRTD from TDVF metadata (synthetic firmware with known layout and
//! Debian's real OVMF.fd), and the RTMR event sequences checked against the event log
//! of a real TD booted by OVMF with a direct kernel boot (testdata/, from Trustee).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use coco_image::measure::ovmf::{guid_le, TABLE_FOOTER_GUID};
use coco_image::measure::tdx::{self, PageOrder};
use sha2::{Digest, Sha384};

const TDX_METADATA_OFFSET_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";

/// 32 KiB image: BFV (2 pages, measured) at offset 0, a TD HOB (1 page, added, not
/// extended), a PAGE.AUG section (neither), TDVF descriptor at 0x4000, footer table.
fn synthetic_tdvf() -> Vec<u8> {
    const SIZE: usize = 0x8000;
    let mut fw: Vec<u8> = (0..SIZE).map(|i| (i * 13 % 241) as u8).collect();
    let sections: [(u32, u32, u64, u64, u32, u32); 3] = [
        (0, 0x2000, 0xFFC0_0000, 0x2000, 0, 1), // BFV, MR.EXTEND
        (0, 0, 0x0080_9000, 0x1000, 2, 0),      // TD_HOB
        (0, 0, 0x0080_A000, 0x3000, 3, 2),      // TempMem, PAGE.AUG
    ];
    let desc_at = 0x4000;
    let mut d = Vec::new();
    d.extend_from_slice(b"TDVF");
    d.extend_from_slice(&((16 + 32 * sections.len()) as u32).to_le_bytes());
    d.extend_from_slice(&1u32.to_le_bytes());
    d.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (off, raw, gpa, size, ty, attr) in sections {
        d.extend_from_slice(&off.to_le_bytes());
        d.extend_from_slice(&raw.to_le_bytes());
        d.extend_from_slice(&gpa.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&ty.to_le_bytes());
        d.extend_from_slice(&attr.to_le_bytes());
    }
    fw[desc_at..desc_at + d.len()].copy_from_slice(&d);
    let mut table = Vec::new();
    table.extend_from_slice(&((SIZE - desc_at) as u32).to_le_bytes());
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&guid_le(TDX_METADATA_OFFSET_GUID));
    table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
    table.extend_from_slice(&guid_le(TABLE_FOOTER_GUID));
    fw[SIZE - 32 - table.len()..SIZE - 32].copy_from_slice(&table);
    fw
}

fn rec(tag: &str, gpa: u64) -> Vec<u8> {
    let mut r = vec![0u8; 128];
    r[..tag.len()].copy_from_slice(tag.as_bytes());
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

#[test]
fn mrtd_of_synthetic_tdvf_follows_the_tdx_module_rules() {
    let fw = synthetic_tdvf();
    let secs = tdx::tdvf_sections(&fw).unwrap();
    assert_eq!(secs.len(), 3);
    assert_eq!(secs[0].memory_address, 0xFFC0_0000);

    // The stream the TDX module hashes, written out by hand for this layout.
    let bfv = |page: u64, h: &mut Sha384| {
        for c in 0..16u64 {
            let off = page * 0x1000 + c * 256;
            h.update(rec("MR.EXTEND", 0xFFC0_0000 + off));
            h.update(&fw[off as usize..off as usize + 256]);
        }
    };
    let mut h = Sha384::new();
    h.update(rec("MEM.PAGE.ADD", 0xFFC0_0000));
    bfv(0, &mut h);
    h.update(rec("MEM.PAGE.ADD", 0xFFC0_1000));
    bfv(1, &mut h);
    h.update(rec("MEM.PAGE.ADD", 0x0080_9000));
    let want: [u8; 48] = h.finalize().into();
    assert_eq!(tdx::mrtd(&fw, PageOrder::Interleaved).unwrap(), want);

    let mut h = Sha384::new();
    h.update(rec("MEM.PAGE.ADD", 0xFFC0_0000));
    h.update(rec("MEM.PAGE.ADD", 0xFFC0_1000));
    bfv(0, &mut h);
    bfv(1, &mut h);
    h.update(rec("MEM.PAGE.ADD", 0x0080_9000));
    let want: [u8; 48] = h.finalize().into();
    assert_eq!(tdx::mrtd(&fw, PageOrder::TwoPass).unwrap(), want);

    // Any byte of measured firmware changes MRTD; unmeasured bytes do not.
    let mut changed = fw.clone();
    changed[0x1234] ^= 1;
    assert_ne!(
        tdx::mrtd(&changed, PageOrder::Interleaved).unwrap(),
        tdx::mrtd(&fw, PageOrder::Interleaved).unwrap()
    );
    let mut unmeasured = fw.clone();
    unmeasured[0x3000] ^= 1;
    assert_eq!(
        tdx::mrtd(&unmeasured, PageOrder::Interleaved).unwrap(),
        tdx::mrtd(&fw, PageOrder::Interleaved).unwrap()
    );
}

#[test]
fn corrupt_tdvf_metadata_is_refused() {
    let fw = synthetic_tdvf();
    let mut bad = fw.clone();
    bad[0x4000] = b'X'; // descriptor signature
    assert!(tdx::mrtd(&bad, PageOrder::Interleaved).is_err());
    let mut bad = fw.clone();
    // BFV raw data would run past the end of the image.
    bad[0x4010..0x4014].copy_from_slice(&0x7000u32.to_le_bytes());
    assert!(tdx::mrtd(&bad, PageOrder::Interleaved).is_err());
    assert!(tdx::mrtd(&[0u8; 4096], PageOrder::Interleaved).is_err());
}

#[test]
fn debian_ovmf_has_tdx_metadata() {
    let Ok(fw) = std::fs::read("/usr/share/ovmf/OVMF.fd") else {
        panic!("Debian OVMF missing: run scripts/setup-measure-tools.sh (installs ovmf)");
    };
    let secs = tdx::tdvf_sections(&fw).unwrap();
    // BFV + CFV measured; at least one section (TD HOB / temp memory) only added.
    assert!(
        secs.iter().filter(|s| s.attributes & 1 == 1).count() >= 1,
        "{secs:?}"
    );
    assert!(
        secs.iter().any(|s| s.section_type == 2),
        "TD HOB section: {secs:?}"
    );
    let m = tdx::mrtd(&fw, PageOrder::Interleaved).unwrap();
    eprintln!("Debian OVMF.fd MRTD: {}", hex::encode(m));
    assert_ne!(m, tdx::mrtd(&fw, PageOrder::TwoPass).unwrap());
}

/// The IntelTdx OVMF built by `scripts/build-ovmf.sh` (or `COCO_INTELTDX_OVMF`).
fn cached_inteltdx_ovmf() -> Option<Vec<u8>> {
    let path = std::env::var_os("COCO_INTELTDX_OVMF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/coco-image/ovmf/OVMF-IntelTdx.fd".into());
    match std::fs::read(&path) {
        Ok(fw) => Some(fw),
        Err(e) => {
            eprintln!(
                "skipped: no IntelTdx OVMF at {} ({e}); build it with scripts/build-ovmf.sh \
                 or set COCO_INTELTDX_OVMF",
                path.display()
            );
            None
        }
    }
}

/// MRTD written out from the TDX module's rules for a section list, independently of
/// `tdx::mrtd`'s loop: every non-PAGE.AUG page added, MR.EXTEND pages hashed in
/// 256-byte chunks right after their PAGE.ADD.
fn mrtd_by_hand(fw: &[u8], secs: &[tdx::TdvfSection]) -> [u8; 48] {
    let mut h = Sha384::new();
    for s in secs {
        for page in 0..s.memory_data_size / 0x1000 {
            let gpa = s.memory_address + page * 0x1000;
            if s.attributes & 2 == 0 {
                h.update(rec("MEM.PAGE.ADD", gpa));
            }
            if s.attributes & 1 == 1 {
                for c in 0..16u64 {
                    let off = (u64::from(s.data_offset) + page * 0x1000 + c * 256) as usize;
                    h.update(rec("MR.EXTEND", gpa + c * 256));
                    h.update(&fw[off..off + 256]);
                }
            }
        }
    }
    h.finalize().into()
}

#[test]
fn cached_inteltdx_ovmf_mrtd_when_present() {
    let Some(fw) = cached_inteltdx_ovmf() else {
        return;
    };
    let secs = tdx::tdvf_sections(&fw).unwrap();
    eprintln!("IntelTdx TDVF sections: {secs:#x?}");
    // TDVF layout (edk2 OvmfPkg/IntelTdx): BFV measured into MRTD from the image, CFV
    // (variables) in the image but measured into RTMR0 by the firmware, a TD HOB, and
    // temporary memory that is accepted at build or augmented later.
    let bfv: Vec<_> = secs.iter().filter(|s| s.section_type == 0).collect();
    assert_eq!(bfv.len(), 1, "{secs:?}");
    assert_eq!(bfv[0].attributes & 1, 1, "BFV must be MR.EXTENDed");
    assert_eq!(u64::from(bfv[0].raw_data_size), bfv[0].memory_data_size);
    // The BFV ends at 4 GiB with the image's last byte (the reset vector).
    assert_eq!(bfv[0].memory_address + bfv[0].memory_data_size, 1 << 32);
    assert_eq!(
        u64::from(bfv[0].data_offset) + bfv[0].memory_data_size,
        fw.len() as u64
    );
    let cfv: Vec<_> = secs.iter().filter(|s| s.section_type == 1).collect();
    assert_eq!(cfv.len(), 1, "{secs:?}");
    assert_eq!(cfv[0].attributes & 1, 0, "CFV is not part of MRTD");
    assert!(secs.iter().any(|s| s.section_type == 2), "TD HOB: {secs:?}");

    let m = tdx::mrtd(&fw, PageOrder::Interleaved).unwrap();
    assert_eq!(m, mrtd_by_hand(&fw, &secs));
    eprintln!("IntelTdx OVMF MRTD: {}", hex::encode(m));
    // A byte of the BFV changes MRTD; a byte of the CFV (variable store) does not.
    let mut changed = fw.clone();
    changed[bfv[0].data_offset as usize + 0x1000] ^= 1;
    assert_ne!(tdx::mrtd(&changed, PageOrder::Interleaved).unwrap(), m);
    let mut vars = fw.clone();
    vars[cfv[0].data_offset as usize + 0x100] ^= 1;
    assert_eq!(tdx::mrtd(&vars, PageOrder::Interleaved).unwrap(), m);
    // Not the same firmware as Debian's unified OVMF.fd.
    if let Ok(debian) = std::fs::read("/usr/share/ovmf/OVMF.fd") {
        assert_ne!(tdx::mrtd(&debian, PageOrder::Interleaved).unwrap(), m);
    }
}

fn event_log() -> Vec<(u32, String, String, String)> {
    let text = include_str!("../testdata/CCEL_data_ovmf.parsed.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["uefi_event_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap() as u32,
                e["type_name"].as_str().unwrap().to_string(),
                e["digests"][0]["digest"].as_str().unwrap().to_string(),
                e["details"]["string"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn digest48(h: &str) -> [u8; 48] {
    hex::decode(h).unwrap().try_into().unwrap()
}

#[test]
fn rtmr1_event_sequence_matches_a_real_ovmf_direct_boot_log() {
    // CC MR index 2 = RTMR1. Our model: kernel Authenticode, then three EFI actions.
    let events: Vec<_> = event_log().into_iter().filter(|e| e.0 == 2).collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0].1, "EV_EFI_BOOT_SERVICES_APPLICATION");
    let kernel = digest48(&events[0].2);
    let replayed = tdx::fold(&events.iter().map(|e| digest48(&e.2)).collect::<Vec<_>>());
    assert_eq!(tdx::rtmr1(kernel), replayed);
}

#[test]
fn rtmr2_event_sequence_matches_a_real_ovmf_direct_boot_log() {
    // CC MR index 3 = RTMR2: the load options (command line), then the initrd.
    let events: Vec<_> = event_log().into_iter().filter(|e| e.0 == 3).collect();
    let tags: Vec<&str> = events.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(tags, ["LOADED_IMAGE::LoadOptions", "Linux initrd"]);
    // Same shape as ours: fold(options, initrd) with the digests the log recorded.
    let logged = tdx::fold(&events.iter().map(|e| digest48(&e.2)).collect::<Vec<_>>());
    let opts = digest48(&events[0].2);
    let initrd = digest48(&events[1].2);
    assert_eq!(tdx::fold(&[opts, initrd]), logged);
    // And our value changes with the command line and the initrd.
    assert_ne!(tdx::rtmr2("a", Some(b"x")), tdx::rtmr2("b", Some(b"x")));
    assert_ne!(tdx::rtmr2("a", Some(b"x")), tdx::rtmr2("a", Some(b"y")));
}
