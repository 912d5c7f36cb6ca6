//! vTPM PCR values (SHA-256 bank) that follow from the image alone.
//!
//! PCR 9 after a QEMU direct kernel boot through OVMF: OVMF measures the load options it
//! hands the kernel (UTF-16LE command line, plus `" initrd=initrd"` when QEMU supplied an
//! initrd, NUL-terminated) and then the initrd bytes.
//! PCR 4: the Authenticode hash of the kernel as QEMU patched it, then the
//! "Calling EFI Application from Boot Option" action, then the separator.
//! Both sequences were read from a real OVMF + swtpm boot's event log and are checked
//! against a booted VM's PCRs in `tests/vm`.

use sha2::{Digest, Sha256};

use super::tdx::load_options;

/// PCR extension: `new = SHA-256(old || digest)`, starting from zeros.
pub fn fold(digests: &[[u8; 32]]) -> [u8; 32] {
    let mut r = [0u8; 32];
    for d in digests {
        let mut h = Sha256::new();
        h.update(r);
        h.update(d);
        r = h.finalize().into();
    }
    r
}

/// PCR 4 after a direct kernel boot, given the kernel's Authenticode SHA-256 (of the
/// image as QEMU patched it: see [`super::authenticode::DirectBoot`]).
pub fn pcr4(kernel_authenticode: [u8; 32]) -> [u8; 32] {
    fold(&[
        kernel_authenticode,
        Sha256::digest(b"Calling EFI Application from Boot Option").into(),
        Sha256::digest([0u8; 4]).into(),
    ])
}

/// PCR 9 after a direct kernel boot with this command line and initrd.
pub fn pcr9(cmdline: &str, initrd: Option<&[u8]>) -> [u8; 32] {
    let mut events: Vec<[u8; 32]> =
        vec![Sha256::digest(load_options(cmdline, initrd.is_some())).into()];
    if let Some(i) = initrd {
        events.push(Sha256::digest(i).into());
    }
    fold(&events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr9_depends_on_every_input() {
        let a = pcr9("console=ttyS0", Some(b"initrd"));
        assert_ne!(a, pcr9("console=ttyS1", Some(b"initrd")));
        assert_ne!(a, pcr9("console=ttyS0", Some(b"initrD")));
        assert_ne!(a, pcr9("console=ttyS0", None));
        // Hand-folded: SHA-256(0^32 || SHA-256(opts)) then with the initrd digest.
        let o: [u8; 32] = Sha256::digest(load_options("console=ttyS0", true)).into();
        let i: [u8; 32] = Sha256::digest(b"initrd").into();
        let step1: [u8; 32] = Sha256::digest([[0u8; 32], o].concat()).into();
        let step2: [u8; 32] = Sha256::digest([step1, i].concat()).into();
        assert_eq!(a, step2);
    }
}
