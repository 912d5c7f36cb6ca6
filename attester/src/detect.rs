//! Which TEE is this guest in, and the attester for it.
//!
//! SNP: `/dev/sev-guest`. TDX: `/dev/tdx_guest`, or configfs-tsm whose provider
//! is `tdx_guest`. TPM: `/dev/tpmrm0`. Confidential-computing TEEs win over a
//! (v)TPM. `Auto` with none of these fails: it never falls back to `sample`.

use crate::sample::SampleAttester;
use crate::snp::{SevGuestDevice, SnpAttester};
use crate::tdx::{LinuxTdx, TdxAttester};
use crate::{Attester, AttesterError};
use std::fmt::{self, Debug};
use std::path::Path;
use std::str::FromStr;

/// Looks at the machine.
pub trait HostProbe: Debug {
    fn exists(&self, path: &Path) -> bool;
    /// The configfs-tsm report provider (`tdx_guest`, `sev_guest`, ...), if any.
    fn tsm_provider(&self) -> Option<String>;
}

/// The running system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHost;

const TSM_REPORT: &str = "/sys/kernel/config/tsm/report";

impl HostProbe for RealHost {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn tsm_provider(&self) -> Option<String> {
        // The provider is only visible inside a report entry: make a transient one.
        let dir = Path::new(TSM_REPORT).join(format!("coco-probe-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let p = std::fs::read_to_string(dir.join("provider")).ok();
        if let Err(e) = std::fs::remove_dir(&dir) {
            tracing::warn!(path = %dir.display(), "cannot remove configfs-tsm probe: {e}");
        }
        p.map(|s| s.trim().to_string())
    }
}

/// TEEs found on this machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Detected {
    pub snp: bool,
    pub tdx: bool,
    pub tpm: bool,
}

impl Detected {
    /// The one to attest with: SNP or TDX before TPM.
    pub fn primary(&self) -> Option<AttesterKind> {
        if self.snp {
            Some(AttesterKind::Snp)
        } else if self.tdx {
            Some(AttesterKind::Tdx)
        } else if self.tpm {
            Some(AttesterKind::Tpm)
        } else {
            None
        }
    }
}

pub fn detect(host: &dyn HostProbe) -> Detected {
    let snp = host.exists(Path::new("/dev/sev-guest"));
    let tdx = host.exists(Path::new("/dev/tdx_guest"))
        || (host.exists(Path::new(TSM_REPORT))
            && host.tsm_provider().as_deref() == Some("tdx_guest"));
    let tpm = host.exists(Path::new("/dev/tpmrm0"));
    Detected { snp, tdx, tpm }
}

/// Attester selection (configuration / command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttesterKind {
    #[default]
    Auto,
    Sample,
    Snp,
    Tdx,
    Tpm,
}

impl fmt::Display for AttesterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttesterKind::Auto => "auto",
            AttesterKind::Sample => "sample",
            AttesterKind::Snp => "snp",
            AttesterKind::Tdx => "tdx",
            AttesterKind::Tpm => "tpm",
        })
    }
}

impl FromStr for AttesterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(AttesterKind::Auto),
            "sample" => Ok(AttesterKind::Sample),
            "snp" => Ok(AttesterKind::Snp),
            "tdx" => Ok(AttesterKind::Tdx),
            "tpm" => Ok(AttesterKind::Tpm),
            other => Err(format!(
                "unknown attester {other:?} (auto, sample, snp, tdx, tpm)"
            )),
        }
    }
}

/// Build the attester for `kind`; `Auto` picks the detected TEE.
pub fn build(kind: AttesterKind, host: &dyn HostProbe) -> Result<Box<dyn Attester>, AttesterError> {
    let kind = match kind {
        AttesterKind::Auto => detect(host).primary().ok_or_else(|| {
            AttesterError::NoTee(
                "checked /dev/sev-guest, /dev/tdx_guest, configfs-tsm and /dev/tpmrm0".into(),
            )
        })?,
        k => k,
    };
    tracing::info!(attester = %kind, "selected attester");
    match kind {
        AttesterKind::Sample => Ok(Box::new(SampleAttester::default())),
        AttesterKind::Snp => Ok(Box::new(SnpAttester::new(SevGuestDevice))),
        AttesterKind::Tdx => Ok(Box::new(TdxAttester::new(LinuxTdx::default()))),
        #[cfg(feature = "tpm")]
        AttesterKind::Tpm => Ok(Box::new(crate::tpm::TpmAttester::with_tcti(
            crate::tpm::DEFAULT_TCTI,
            crate::tpm::AkConfig::default(),
            crate::tpm::TpmAttesterConfig::default(),
        )?)),
        #[cfg(not(feature = "tpm"))]
        AttesterKind::Tpm => Err(AttesterError::NotBuiltIn("tpm")),
        AttesterKind::Auto => Err(AttesterError::NoTee("auto did not resolve".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbs_types::Tee;
    use std::path::PathBuf;

    #[derive(Debug, Default)]
    struct FakeHost {
        paths: Vec<PathBuf>,
        provider: Option<String>,
    }

    impl HostProbe for FakeHost {
        fn exists(&self, path: &Path) -> bool {
            self.paths.iter().any(|p| p == path)
        }
        fn tsm_provider(&self) -> Option<String> {
            self.provider.clone()
        }
    }

    fn host(paths: &[&str], provider: Option<&str>) -> FakeHost {
        FakeHost {
            paths: paths.iter().map(PathBuf::from).collect(),
            provider: provider.map(str::to_string),
        }
    }

    #[test]
    fn detects_each_tee() {
        assert_eq!(
            detect(&host(&["/dev/sev-guest"], None)).primary(),
            Some(AttesterKind::Snp)
        );
        assert_eq!(
            detect(&host(&["/dev/tdx_guest"], None)).primary(),
            Some(AttesterKind::Tdx)
        );
        assert_eq!(
            detect(&host(&[TSM_REPORT], Some("tdx_guest"))).primary(),
            Some(AttesterKind::Tdx)
        );
        assert_eq!(
            detect(&host(&[TSM_REPORT], Some("sev_guest"))).primary(),
            None
        );
        assert_eq!(
            detect(&host(&["/dev/tpmrm0"], None)).primary(),
            Some(AttesterKind::Tpm)
        );
        // A confidential VM with a vTPM attests with the CC hardware.
        let d = detect(&host(&["/dev/tpmrm0", "/dev/sev-guest"], None));
        assert!(d.snp && d.tpm);
        assert_eq!(d.primary(), Some(AttesterKind::Snp));
    }

    #[test]
    fn auto_without_tee_fails_and_never_picks_sample() {
        let e = build(AttesterKind::Auto, &host(&[], None)).unwrap_err();
        assert!(matches!(e, AttesterError::NoTee(_)), "{e}");
    }

    #[test]
    fn auto_builds_the_detected_attester() {
        let a = build(AttesterKind::Auto, &host(&["/dev/sev-guest"], None)).unwrap();
        assert_eq!(a.tee(), Tee::Snp);
        let a = build(AttesterKind::Auto, &host(&["/dev/tdx_guest"], None)).unwrap();
        assert_eq!(a.tee(), Tee::Tdx);
        let a = build(AttesterKind::Sample, &host(&[], None)).unwrap();
        assert_eq!(a.tee(), Tee::Sample);
    }

    #[cfg(feature = "tpm")]
    #[test]
    fn tpm_builds_the_real_tpm_attester() {
        if Path::new("/dev/tpmrm0").exists() {
            eprintln!("skipped: this machine has a TPM; the test checks the no-TPM error path");
            return;
        }
        // Auto picks the TPM when only /dev/tpmrm0 is probed. The device is
        // opened per operation, so collecting evidence here (no TPM) fails
        // with a collection error rather than inventing evidence.
        for kind in [AttesterKind::Tpm, AttesterKind::Auto] {
            let a = build(kind, &host(&["/dev/tpmrm0"], None)).unwrap();
            assert_eq!(a.tee(), Tee::Tpm);
            let e = a.evidence(&[0u8; 48]).unwrap_err();
            assert!(matches!(e, AttesterError::Collect { .. }), "{e}");
        }
    }

    #[test]
    fn kinds_parse_and_print() {
        for k in ["auto", "sample", "snp", "tdx", "tpm"] {
            assert_eq!(k.parse::<AttesterKind>().unwrap().to_string(), k);
        }
        assert!("sgx".parse::<AttesterKind>().is_err());
    }

    #[test]
    fn real_host_detection_runs() {
        // Whatever this machine has, detection must not fail or leave entries.
        let d = detect(&RealHost);
        eprintln!("detected on this machine: {d:?}");
    }
}
