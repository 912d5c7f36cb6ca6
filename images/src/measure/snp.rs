//! SEV-SNP launch digest, computed with the `sev` crate's measurement module (pure-Rust
//! crypto back-end) and cross-checked against PyPI `sev-snp-measure` in the tests.

use std::path::PathBuf;

use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};
use sev::parser::ByteParser;

use super::MeasureError;

/// Inputs of one SNP launch (what QEMU and the firmware measure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpLaunch {
    /// AmdSev OVMF (needs the SNP kernel-hashes section when a kernel is given).
    pub ovmf: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub vcpus: u32,
    /// QEMU CPU model name, e.g. `EPYC-v4`, `EPYC-Milan`, `EPYC-Genoa`.
    pub vcpu_type: String,
    /// `qemu`, `ec2` or `krun`.
    pub vmm: String,
    /// SEV_FEATURES of the guest (default 0x1: SNPActive).
    pub guest_features: u64,
}

impl SnpLaunch {
    pub fn new(ovmf: impl Into<PathBuf>, vcpus: u32) -> Self {
        Self {
            ovmf: ovmf.into(),
            kernel: None,
            initrd: None,
            cmdline: None,
            vcpus,
            vcpu_type: "EPYC-v4".into(),
            vmm: "qemu".into(),
            guest_features: 0x1,
        }
    }
}

/// Parses a CPU model name the way QEMU (and `sev-snp-measure`) spell it.
pub fn cpu_type(name: &str) -> Result<CpuType, MeasureError> {
    (0u8..=32)
        .filter_map(|i| CpuType::try_from(i).ok())
        .find(|t| t.to_string().eq_ignore_ascii_case(name))
        .ok_or_else(|| MeasureError::Input(format!("unknown SNP vCPU type {name:?}")))
}

/// The 48-byte launch digest (the report's MEASUREMENT field).
pub fn launch_digest(l: &SnpLaunch) -> Result<[u8; 48], MeasureError> {
    if l.vcpus == 0 {
        return Err(MeasureError::Input("vCPU count must be at least 1".into()));
    }
    if l.kernel.is_none() && (l.initrd.is_some() || l.cmdline.is_some()) {
        return Err(MeasureError::Input(
            "initrd and cmdline are only measured together with a kernel".into(),
        ));
    }
    let vmm: VMMType = l
        .vmm
        .parse()
        .map_err(|e| MeasureError::Input(format!("VMM type {:?}: {e}", l.vmm)))?;
    let guest_features = GuestFeatures::from_bytes(&l.guest_features.to_le_bytes())
        .map_err(|e| MeasureError::Input(format!("guest features: {e}")))?;
    let args = SnpMeasurementArgs {
        vcpus: l.vcpus,
        vcpu_type: cpu_type(&l.vcpu_type)?,
        ovmf_file: l.ovmf.clone(),
        guest_features,
        kernel_file: l.kernel.clone(),
        initrd_file: l.initrd.clone(),
        append: l.cmdline.as_deref(),
        ovmf_hash_str: None,
        vmm_type: Some(vmm),
    };
    let ld = snp_calc_launch_digest(args).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("SNP_KERNEL_HASHES") {
            MeasureError::Snp(format!(
                "{msg}: {} is not an AmdSev OVMF build (Debian's OVMF.fd has no kernel-hashes \
                 section); use an OvmfPkg/AmdSev build",
                l.ovmf.display()
            ))
        } else {
            MeasureError::Snp(msg)
        }
    })?;
    let hex = ld.get_hex_ld();
    let bytes = hex::decode(&hex).map_err(|e| MeasureError::Snp(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| MeasureError::Snp(format!("launch digest has wrong length: {hex}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_names() {
        assert_eq!(cpu_type("EPYC-v4").unwrap().to_string(), "EPYC-v4");
        assert_eq!(cpu_type("epyc-milan").unwrap().to_string(), "EPYC-Milan");
        assert!(cpu_type("Pentium").is_err());
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut l = SnpLaunch::new("/nonexistent.fd", 0);
        assert!(launch_digest(&l).is_err());
        l.vcpus = 1;
        l.cmdline = Some("x".into());
        assert!(launch_digest(&l)
            .unwrap_err()
            .to_string()
            .contains("kernel"));
        l.cmdline = None;
        assert!(launch_digest(&l).is_err(), "missing firmware file");
    }
}
