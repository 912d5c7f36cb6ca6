//! The OVMF footer GUID table: a list of (data, u16 size, GUID) entries that ends 32
//! bytes before the end of the firmware image with the table-footer GUID, read
//! backwards. SEV metadata, the SNP kernel-hashes table and the TDX metadata are all
//! found through it.

use std::collections::BTreeMap;

pub const TABLE_FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
pub const SEV_HASH_TABLE_RV_GUID: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
pub const SEV_ES_RESET_BLOCK_GUID: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
pub const SEV_METADATA_GUID: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";

#[derive(Debug, thiserror::Error)]
pub enum FooterError {
    #[error("firmware has no OVMF footer table")]
    NoTable,
    #[error("firmware footer table: {0}")]
    Malformed(&'static str),
    #[error("firmware footer table has no {0} entry")]
    Missing(&'static str),
}

/// A GUID in the mixed-endian byte order EFI stores it in.
pub fn guid_le(s: &str) -> [u8; 16] {
    let hexdigits: String = s.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hexdigits[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// Parses the footer table into GUID → entry data.
pub fn footer_table(fw: &[u8]) -> Result<BTreeMap<[u8; 16], Vec<u8>>, FooterError> {
    const HDR: usize = 18;
    let footer_at = fw.len().checked_sub(32 + HDR).ok_or(FooterError::NoTable)?;
    let footer = &fw[footer_at..footer_at + HDR];
    if footer[2..] != guid_le(TABLE_FOOTER_GUID) {
        return Err(FooterError::NoTable);
    }
    let total = u16::from_le_bytes([footer[0], footer[1]]) as usize;
    let body_len = total.checked_sub(HDR).ok_or(FooterError::Malformed(
        "footer size smaller than its header",
    ))?;
    let body_start = footer_at
        .checked_sub(body_len)
        .ok_or(FooterError::Malformed("footer size beyond the image"))?;
    let mut body = &fw[body_start..footer_at];
    let mut out = BTreeMap::new();
    while body.len() >= HDR {
        let hdr = &body[body.len() - HDR..];
        let size = u16::from_le_bytes([hdr[0], hdr[1]]) as usize;
        if size < HDR || size > body.len() {
            return Err(FooterError::Malformed("entry size"));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&hdr[2..]);
        out.insert(guid, body[body.len() - size..body.len() - HDR].to_vec());
        body = &body[..body.len() - size];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_byte_order() {
        let g = guid_le("96b582de-1fb2-45f7-baea-a366c55a082d");
        assert_eq!(g[..4], [0xde, 0x82, 0xb5, 0x96]);
        assert_eq!(g[4..6], [0xb2, 0x1f]);
        assert_eq!(g[8..], [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]);
    }

    #[test]
    fn parses_debian_ovmf_when_present() {
        let Ok(fw) = std::fs::read("/usr/share/ovmf/OVMF.fd") else {
            eprintln!("skipped: /usr/share/ovmf/OVMF.fd absent (apt-get install ovmf)");
            return;
        };
        let t = footer_table(&fw).unwrap();
        assert!(t.contains_key(&guid_le(SEV_METADATA_GUID)));
        assert!(t.contains_key(&guid_le(SEV_ES_RESET_BLOCK_GUID)));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            footer_table(&[0u8; 10]),
            Err(FooterError::NoTable)
        ));
        assert!(matches!(
            footer_table(&[0u8; 4096]),
            Err(FooterError::NoTable)
        ));
        let mut fw = vec![0u8; 4096];
        let at = fw.len() - 50;
        fw[at..at + 2].copy_from_slice(&5000u16.to_le_bytes());
        fw[at + 2..at + 18].copy_from_slice(&guid_le(TABLE_FOOTER_GUID));
        assert!(matches!(footer_table(&fw), Err(FooterError::Malformed(_))));
    }
}
