//! Intel TDX attester.
//!
//! - Quote: configfs-tsm (`/sys/kernel/config/tsm/report/<entry>/{inblob,
//!   outblob,generation,provider}`), the kernel's interface since 6.7. A TDREPORT
//!   alone is not remotely verifiable, so there is no evidence without it.
//! - TDREPORT: `/dev/tdx_guest` `TDX_CMD_GET_REPORT0`, used to read MRCONFIGID
//!   for the initdata binding without a quoting round trip (falls back to a quote).
//! - Event log: the ACPI CCEL table data (`/sys/firmware/acpi/tables/data/CCEL`).
//! - RTMR extend: sysfs `/sys/class/misc/tdx_guest/measurements/rtmr<N>:sha384`
//!   (Linux 6.16+).

mod ioctl;

use crate::{Attester, AttesterError};
use base64::Engine;
use kbs_types::Tee;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Offset of MRCONFIGID in a TDREPORT (TDINFO at 512: attributes 8, xfam 8, MRTD 48).
const TDREPORT_MRCONFIGID: usize = 512 + 8 + 8 + 48;
/// Offset of MRCONFIGID in a quote's TD report body.
const BODY_MRCONFIGID: usize = 16 + 48 + 48 + 8 + 8 + 8 + 48;

/// Access to the TDX guest interfaces.
pub trait TdxPlatform: Send + Sync + Debug {
    /// A quote over `report_data` (configfs-tsm).
    fn quote(&self, report_data: &[u8; 64]) -> std::io::Result<Vec<u8>>;
    /// A TDREPORT over `report_data` (`/dev/tdx_guest`).
    fn tdreport(&self, report_data: &[u8; 64]) -> std::io::Result<[u8; 1024]>;
    /// The CC event log, if the firmware published one.
    fn ccel(&self) -> std::io::Result<Option<Vec<u8>>>;
    /// Extend RTMR `index` (2 or 3 are the ones the OS may use) with a SHA-384 digest.
    fn extend_rtmr(&self, index: u8, digest: &[u8; 48]) -> std::io::Result<()>;
}

/// The Linux interfaces, with paths overridable for tests and unusual layouts.
#[derive(Debug, Clone)]
pub struct LinuxTdx {
    pub tsm_report_dir: PathBuf,
    pub device: PathBuf,
    pub ccel: PathBuf,
    pub measurements: PathBuf,
}

impl Default for LinuxTdx {
    fn default() -> Self {
        Self {
            tsm_report_dir: "/sys/kernel/config/tsm/report".into(),
            device: "/dev/tdx_guest".into(),
            ccel: "/sys/firmware/acpi/tables/data/CCEL".into(),
            measurements: "/sys/class/misc/tdx_guest/measurements".into(),
        }
    }
}

static ENTRY_SEQ: AtomicU32 = AtomicU32::new(0);

/// A configfs-tsm report entry, removed on drop.
struct TsmEntry(PathBuf);

impl Drop for TsmEntry {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            tracing::warn!(path = %self.0.display(), "cannot remove configfs-tsm entry: {e}");
        }
    }
}

fn read_generation(entry: &Path) -> std::io::Result<u64> {
    let g = std::fs::read_to_string(entry.join("generation"))?;
    g.trim()
        .parse()
        .map_err(|e| std::io::Error::other(format!("bad generation {g:?}: {e}")))
}

impl TdxPlatform for LinuxTdx {
    fn quote(&self, report_data: &[u8; 64]) -> std::io::Result<Vec<u8>> {
        let name = format!(
            "coco-attester-{}-{}",
            std::process::id(),
            ENTRY_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.tsm_report_dir.join(name);
        std::fs::create_dir(&path)?;
        let entry = TsmEntry(path);
        let provider = std::fs::read_to_string(entry.0.join("provider"))?;
        if provider.trim() != "tdx_guest" {
            return Err(std::io::Error::other(format!(
                "configfs-tsm provider is {:?}, not tdx_guest",
                provider.trim()
            )));
        }
        std::fs::write(entry.0.join("inblob"), report_data)?;
        let before = read_generation(&entry.0)?;
        let quote = std::fs::read(entry.0.join("outblob"))?;
        // Another writer to the same entry would bump the generation: then the
        // quote may not be over our inblob.
        if read_generation(&entry.0)? != before {
            return Err(std::io::Error::other(
                "configfs-tsm entry changed while reading the quote",
            ));
        }
        Ok(quote)
    }

    fn tdreport(&self, report_data: &[u8; 64]) -> std::io::Result<[u8; 1024]> {
        ioctl::get_report0(&self.device, report_data)
    }

    fn ccel(&self) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(&self.ccel) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn extend_rtmr(&self, index: u8, digest: &[u8; 48]) -> std::io::Result<()> {
        std::fs::write(
            self.measurements.join(format!("rtmr{index}:sha384")),
            digest,
        )
    }
}

/// The TDX attester.
#[derive(Debug)]
pub struct TdxAttester<P: TdxPlatform = LinuxTdx> {
    platform: P,
}

impl<P: TdxPlatform> TdxAttester<P> {
    pub fn new(platform: P) -> Self {
        Self { platform }
    }

    /// Record a runtime measurement (e.g. of a container image) in RTMR `index`.
    pub fn extend_runtime_measurement(
        &self,
        index: u8,
        digest: &[u8; 48],
    ) -> Result<(), AttesterError> {
        if !(2..=3).contains(&index) {
            return Err(AttesterError::Collect {
                tee: "tdx",
                reason: format!("RTMR{index} is not for runtime measurements (use 2 or 3)"),
            });
        }
        self.platform
            .extend_rtmr(index, digest)
            .map_err(|e| AttesterError::Collect {
                tee: "tdx",
                reason: format!("extending RTMR{index}: {e}"),
            })
    }

    fn mr_config_id(&self) -> Result<[u8; 48], AttesterError> {
        let collect = |reason: String| AttesterError::Collect { tee: "tdx", reason };
        let mut out = [0u8; 48];
        match self.platform.tdreport(&[0u8; 64]) {
            Ok(r) => {
                out.copy_from_slice(&r[TDREPORT_MRCONFIGID..TDREPORT_MRCONFIGID + 48]);
                return Ok(out);
            }
            Err(e) => tracing::debug!("no TDREPORT ({e}); reading MRCONFIGID from a quote"),
        }
        let q = self
            .platform
            .quote(&[0u8; 64])
            .map_err(|e| collect(format!("neither TDREPORT nor quote: {e}")))?;
        let body = match q.get(..2) {
            Some([4, 0]) => 48,
            Some([5, 0]) => 48 + 6,
            _ => return Err(collect("quote of unknown version".into())),
        };
        let at = body + BODY_MRCONFIGID;
        let m = q
            .get(at..at + 48)
            .ok_or_else(|| collect("quote too short".into()))?;
        out.copy_from_slice(m);
        Ok(out)
    }
}

impl<P: TdxPlatform> Attester for TdxAttester<P> {
    fn tee(&self) -> Tee {
        Tee::Tdx
    }

    fn evidence(&self, report_data: &[u8; 48]) -> Result<serde_json::Value, AttesterError> {
        let collect = |reason: String| AttesterError::Collect { tee: "tdx", reason };
        let mut rd = [0u8; 64];
        rd[..48].copy_from_slice(report_data);
        let quote = self
            .platform
            .quote(&rd)
            .map_err(|e| collect(format!("quote via configfs-tsm: {e}")))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ev = serde_json::json!({ "quote": b64.encode(&quote) });
        match self.platform.ccel() {
            Ok(Some(log)) => ev["cc_eventlog"] = b64.encode(log).into(),
            Ok(None) => {}
            Err(e) => return Err(collect(format!("reading the CCEL: {e}"))),
        }
        Ok(ev)
    }

    fn bind_init_data(&self, digest: &[u8]) -> Result<(), AttesterError> {
        let want = coco_jose::binding::init_data_register::<48>(digest);
        let have = self.mr_config_id()?;
        if have != want {
            return Err(AttesterError::InitDataMismatch {
                expected: hex::encode(want),
                found: hex::encode(have),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
