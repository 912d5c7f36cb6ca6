//! Launch measurements of a built image, written as KBS reference values.

pub mod authenticode;
pub mod ovmf;
pub mod snp;
pub mod tdx;
pub mod tpm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use ovmf::FooterError;

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("invalid measurement input: {0}")]
    Input(String),
    #[error("SNP launch digest: {0}")]
    Snp(String),
    #[error(transparent)]
    Footer(#[from] FooterError),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reference values in the KBS's shape: name → accepted values (lowercase hex).
/// `kbs-client config ... set-reference-values FILE` loads this file as is.
pub type ReferenceValues = BTreeMap<String, Vec<String>>;

/// Reference value names the KBS's policies read.
pub const SNP_LAUNCH_MEASUREMENT: &str = "snp_launch_measurement";
pub const TDX_MRTD: &str = "tdx_mrtd";
pub const TDX_RTMR_1: &str = "tdx_rtmr_1";
pub const TDX_RTMR_2: &str = "tdx_rtmr_2";
pub const TPM_PCR04: &str = "tpm_pcr04";
pub const TPM_PCR09: &str = "tpm_pcr09";

/// Which measurements to compute for an image (kernel + initrd + cmdline).
#[derive(Debug, Clone, Default)]
pub struct MeasureConfig {
    /// AmdSev OVMF with the SNP kernel-hashes section.
    pub snp_ovmf: Option<PathBuf>,
    /// One SNP digest per vCPU count (the reference list accepts any of them).
    pub snp_vcpus: Vec<u32>,
    pub snp_vcpu_type: String,
    /// IntelTdx OVMF or Debian's unified OVMF.fd (has TDX metadata).
    pub tdx_ovmf: Option<PathBuf>,
    pub tdx_page_order: tdx::PageOrder,
    /// Also emit the vTPM PCR 4 and 9 values (direct boot through OVMF with a TPM).
    pub tpm: bool,
    /// How QEMU loads the kernel (machine type, RAM): QEMU patches the kernel's setup
    /// header with addresses that depend on it, and the firmware hashes the result
    /// (PCR 4, RTMR1).
    pub direct_boot: authenticode::DirectBoot,
}

fn read(path: &Path) -> Result<Vec<u8>, MeasureError> {
    std::fs::read(path).map_err(|source| MeasureError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Computes the reference values of one image.
pub fn reference_values(
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    cfg: &MeasureConfig,
) -> Result<ReferenceValues, MeasureError> {
    let mut rv = ReferenceValues::new();
    if let Some(ovmf) = &cfg.snp_ovmf {
        let mut values = Vec::new();
        for &vcpus in &cfg.snp_vcpus {
            let mut l = snp::SnpLaunch::new(ovmf, vcpus);
            l.kernel = Some(kernel.to_path_buf());
            l.initrd = Some(initrd.to_path_buf());
            l.cmdline = Some(cmdline.to_string());
            if !cfg.snp_vcpu_type.is_empty() {
                l.vcpu_type = cfg.snp_vcpu_type.clone();
            }
            values.push(hex::encode(snp::launch_digest(&l)?));
        }
        values.dedup();
        rv.insert(SNP_LAUNCH_MEASUREMENT.into(), values);
    }
    let initrd_bytes = if cfg.tdx_ovmf.is_some() || cfg.tpm {
        Some(read(initrd)?)
    } else {
        None
    };
    let patched = if cfg.tdx_ovmf.is_some() || cfg.tpm {
        let k = read(kernel)?;
        let size = initrd_bytes.as_ref().map(|i| i.len() as u64);
        Some(cfg.direct_boot.patched_kernel(&k, size)?)
    } else {
        None
    };
    if let (Some(ovmf), Some(k)) = (&cfg.tdx_ovmf, &patched) {
        let fw = read(ovmf)?;
        let kernel_hash: [u8; 48] = authenticode::authenticode::<sha2::Sha384>(k)?
            .try_into()
            .map_err(|_| MeasureError::Input("digest length".into()))?;
        rv.insert(
            TDX_RTMR_1.into(),
            vec![hex::encode(tdx::rtmr1(kernel_hash))],
        );
        rv.insert(
            TDX_MRTD.into(),
            vec![hex::encode(tdx::mrtd(&fw, cfg.tdx_page_order)?)],
        );
        rv.insert(
            TDX_RTMR_2.into(),
            vec![hex::encode(tdx::rtmr2(cmdline, initrd_bytes.as_deref()))],
        );
    }
    if let (true, Some(k)) = (cfg.tpm, &patched) {
        let kernel_hash: [u8; 32] = authenticode::authenticode::<sha2::Sha256>(k)?
            .try_into()
            .map_err(|_| MeasureError::Input("digest length".into()))?;
        rv.insert(TPM_PCR04.into(), vec![hex::encode(tpm::pcr4(kernel_hash))]);
        rv.insert(
            TPM_PCR09.into(),
            vec![hex::encode(tpm::pcr9(cmdline, initrd_bytes.as_deref()))],
        );
    }
    Ok(rv)
}

/// Serialises reference values (sorted, pretty, trailing newline: stable bytes).
pub fn to_json(rv: &ReferenceValues) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(rv).unwrap_or_default();
    v.push(b'\n');
    v
}
