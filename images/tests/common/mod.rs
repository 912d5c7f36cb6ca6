//! Shared test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
#![allow(dead_code)]

use coco_image::measure::ovmf::{
    guid_le, SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID, TABLE_FOOTER_GUID,
};

/// A 64 KiB firmware image with a footer table, SEV metadata (secrets, CPUID, zeroed
/// memory and a 4 KiB kernel-hashes page), the hashes-table GPA and a reset vector.
pub fn synthetic_firmware(with_hashes: bool) -> Vec<u8> {
    const SIZE: usize = 0x10000;
    // Non-trivial content so the firmware page hashes mean something.
    let mut fw: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();

    // SEV metadata at offset 0x1000: "ASEV", size, version 1, item count, items.
    let mut items: Vec<(u32, u32, u32)> = vec![
        (0x0080_0000, 0x9000, 1), // SNP_SEC_MEMORY (zero pages)
        (0x0080_9000, 0x1000, 2), // SNP_SECRETS
        (0x0080_A000, 0x1000, 3), // CPUID
        (0x0080_B000, 0x2000, 1), // more zeroed memory
    ];
    if with_hashes {
        items.push((0x0080_F000, 0x1000, 0x10)); // SNP_KERNEL_HASHES
    }
    let meta_at = 0x1000;
    let meta_len = 16 + 12 * items.len();
    let mut meta = Vec::new();
    meta.extend_from_slice(b"ASEV");
    meta.extend_from_slice(&(meta_len as u32).to_le_bytes());
    meta.extend_from_slice(&1u32.to_le_bytes());
    meta.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (gpa, size, ty) in &items {
        meta.extend_from_slice(&gpa.to_le_bytes());
        meta.extend_from_slice(&size.to_le_bytes());
        meta.extend_from_slice(&ty.to_le_bytes());
    }
    fw[meta_at..meta_at + meta_len].copy_from_slice(&meta);

    // Footer table, built back to front: entry data, u16 size, GUID.
    let entry = |data: &[u8], guid: &str| {
        let mut e = data.to_vec();
        e.extend_from_slice(&((data.len() + 18) as u16).to_le_bytes());
        e.extend_from_slice(&guid_le(guid));
        e
    };
    let mut table = Vec::new();
    table.extend(entry(
        &((SIZE - meta_at) as u32).to_le_bytes(),
        SEV_METADATA_GUID,
    ));
    let (hash_gpa, hash_size) = if with_hashes {
        (0x0080_FC00u32, 0x400u32)
    } else {
        (0, 0)
    };
    table.extend(entry(
        &[hash_gpa.to_le_bytes(), hash_size.to_le_bytes()].concat(),
        SEV_HASH_TABLE_RV_GUID,
    ));
    table.extend(entry(
        &0xFFFF_F000u32.to_le_bytes(),
        SEV_ES_RESET_BLOCK_GUID,
    ));
    let footer_total = table.len() + 18;
    table.extend_from_slice(&(footer_total as u16).to_le_bytes());
    table.extend_from_slice(&guid_le(TABLE_FOOTER_GUID));
    let end = SIZE - 32;
    fw[end - table.len()..end].copy_from_slice(&table);
    fw
}
