//! PE/COFF Authenticode image hash (what UEFI firmware measures for an EFI application,
//! e.g. the kernel's EFI stub), and QEMU's patching of the Linux setup header on a
//! direct kernel boot, which changes the bytes OVMF hashes.
//!
//! Authenticode: hash the headers without the checksum field and the certificate-table
//! directory entry, then every section's raw data in file order, then any data after
//! the last section except the attribute certificates.

use sha2::Digest;

use super::MeasureError;

fn bad(what: &str) -> MeasureError {
    MeasureError::Input(format!("kernel is not a usable PE image: {what}"))
}

fn u16_at(d: &[u8], at: usize) -> Result<u16, MeasureError> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| bad("truncated header"))
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, MeasureError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| bad("truncated header"))
}

/// The Authenticode digest of a PE image with hash `D` (SHA-256 for TPM PCRs, SHA-384
/// for TDX RTMRs).
pub fn authenticode<D: Digest>(img: &[u8]) -> Result<Vec<u8>, MeasureError> {
    let pe = u32_at(img, 0x3c)? as usize;
    if img.get(pe..pe + 4) != Some(b"PE\0\0".as_slice()) {
        return Err(bad("no PE signature"));
    }
    let sections = u16_at(img, pe + 6)? as usize;
    let opt_size = u16_at(img, pe + 20)? as usize;
    let opt = pe + 24;
    let dirs = match u16_at(img, opt)? {
        0x10b => opt + 96,  // PE32
        0x20b => opt + 112, // PE32+
        _ => return Err(bad("unknown optional header magic")),
    };
    let checksum = opt + 64;
    let cert_dir = dirs + 4 * 8;
    let header_size = u32_at(img, opt + 60)? as usize;
    let cert_size = u32_at(img, cert_dir + 4)? as usize;
    if header_size > img.len() || cert_dir + 8 > header_size {
        return Err(bad("header size"));
    }
    let mut h = D::new();
    h.update(&img[..checksum]);
    h.update(&img[checksum + 4..cert_dir]);
    h.update(&img[cert_dir + 8..header_size]);
    let mut raw: Vec<(usize, usize)> = Vec::with_capacity(sections);
    for i in 0..sections {
        let s = opt + opt_size + 40 * i;
        let size = u32_at(img, s + 16)? as usize;
        let ptr = u32_at(img, s + 20)? as usize;
        if size > 0 {
            raw.push((ptr, size));
        }
    }
    raw.sort();
    let mut hashed = header_size;
    for (ptr, size) in raw {
        let data = img
            .get(ptr..ptr + size)
            .ok_or_else(|| bad("section beyond the end of the file"))?;
        h.update(data);
        hashed += size;
    }
    let end = img
        .len()
        .checked_sub(cert_size)
        .ok_or_else(|| bad("certificate table size"))?;
    if end > hashed {
        h.update(&img[hashed..end]);
    }
    Ok(h.finalize().to_vec())
}

/// The QEMU machine type: decides how much RAM sits below 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// `pc` (i440fx).
    #[default]
    Pc,
    /// `q35`.
    Q35,
}

/// How QEMU loads the kernel (`-kernel/-initrd/-append`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectBoot {
    pub machine: Machine,
    /// Guest RAM (`-m`), MiB.
    pub ram_mib: u64,
}

impl Default for DirectBoot {
    fn default() -> Self {
        Self {
            machine: Machine::Pc,
            ram_mib: 512,
        }
    }
}

/// QEMU reserves this much at the top of low RAM for ACPI tables (pc and q35, ≥ 2.x).
const ACPI_DATA_SIZE: u64 = 0x20000 + 0x8000;
const REAL_ADDR: u32 = 0x10000;
const CMDLINE_ADDR: u32 = 0x20000;

impl DirectBoot {
    fn below_4g(&self) -> u64 {
        let ram = self.ram_mib << 20;
        match self.machine {
            // i440fx splits at 3.5 GiB, aligned down to 3 GiB ("gigabyte_align").
            Machine::Pc if ram >= 0xe000_0000 => 0xc000_0000,
            Machine::Q35 if ram >= 0xb000_0000 => 0x8000_0000,
            _ => ram,
        }
    }

    /// The kernel image as OVMF receives it: QEMU's patched setup header in front of
    /// the unchanged rest. Mirrors QEMU's x86 Linux loader for boot protocol ≥ 2.02
    /// kernels loaded high (every kernel from the last decade).
    pub fn patched_kernel(
        &self,
        kernel: &[u8],
        initrd_size: Option<u64>,
    ) -> Result<Vec<u8>, MeasureError> {
        if u32_at(kernel, 0x202)? != 0x5372_6448 {
            return Err(bad("no Linux boot protocol header (HdrS)"));
        }
        let protocol = u16_at(kernel, 0x206)?;
        if protocol < 0x202 || kernel[0x211] & 0x01 == 0 {
            return Err(MeasureError::Input(format!(
                "Linux boot protocol {protocol:#x} without LOADED_HIGH is not supported"
            )));
        }
        let mut k = kernel.to_vec();
        k[0x210] = 0xb0; // type_of_loader: QEMU
        k[0x211] |= 0x80; // CAN_USE_HEAP
        let heap_end = (CMDLINE_ADDR - REAL_ADDR - 0x200) as u16;
        k[0x224..0x226].copy_from_slice(&heap_end.to_le_bytes());
        k[0x228..0x22c].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
        if let Some(size) = initrd_size {
            let header_max = if protocol >= 0x203 {
                u64::from(u32_at(kernel, 0x22c)?)
            } else {
                0x37ff_ffff
            };
            let ram_max = self
                .below_4g()
                .checked_sub(ACPI_DATA_SIZE + 1)
                .ok_or_else(|| MeasureError::Input("guest RAM too small".into()))?;
            let max = header_max.min(ram_max);
            if size >= max {
                return Err(MeasureError::Input(format!(
                    "initrd of {size} bytes does not fit below {max:#x}"
                )));
            }
            let addr = (max - size) & !0xfff;
            let addr = u32::try_from(addr).map_err(|_| bad("initrd address"))?;
            let size = u32::try_from(size).map_err(|_| bad("initrd size"))?;
            k[0x218..0x21c].copy_from_slice(&addr.to_le_bytes());
            k[0x21c..0x220].copy_from_slice(&size.to_le_bytes());
        }
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

    #[test]
    fn non_pe_is_refused() {
        assert!(authenticode::<Sha256>(&[0u8; 100]).is_err());
        let mut fake = vec![0u8; 0x300];
        fake[0x3c] = 0x80;
        fake[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert!(
            authenticode::<Sha256>(&fake).is_err(),
            "bad optional header magic"
        );
        assert!(DirectBoot::default().patched_kernel(&fake, None).is_err());
    }

    #[test]
    fn ram_layout() {
        let b = |machine, ram_mib| DirectBoot { machine, ram_mib }.below_4g();
        assert_eq!(b(Machine::Pc, 512), 512 << 20);
        assert_eq!(b(Machine::Pc, 4096), 0xc000_0000);
        assert_eq!(b(Machine::Q35, 2048), 0x8000_0000);
        assert_eq!(b(Machine::Q35, 8192), 0x8000_0000);
    }
}
