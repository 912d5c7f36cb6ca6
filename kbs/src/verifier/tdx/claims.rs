//! Claims of a verified TDX quote, as the attestation policy sees them.

use super::ccel::CcEvent;
use super::collateral::TcbResult;
use super::pck::PckExtension;
use super::quote::Quote;
use serde::Serialize;

/// Everything a verified TDX quote states, with digests as lowercase hex.
#[derive(Debug, Clone, Serialize)]
pub struct TdxClaims {
    /// Quote format version (4 or 5).
    pub quote_version: u16,
    /// TDX module and platform TEE TCB SVN (16 bytes).
    pub tee_tcb_svn: String,
    /// Measurement of the TDX module (48 bytes).
    pub mr_seam: String,
    /// Signer of the TDX module (48 bytes; zero for Intel's).
    pub mr_signer_seam: String,
    /// TDX module attributes (8 bytes).
    pub seam_attributes: String,
    /// TD attributes (8 bytes, little-endian bit field).
    pub td_attributes: String,
    /// TD attribute bit 0: the TD is debuggable (its memory readable by the host).
    pub debug: bool,
    /// TD attribute bit 28: SEPT #VE disabled.
    pub sept_ve_disable: bool,
    /// Extended features allowed in the TD (XFAM, 8 bytes).
    pub xfam: String,
    /// Build-time measurement of the TD (firmware image): MRTD (48 bytes).
    pub mrtd: String,
    /// MRCONFIGID (48 bytes): carries the initdata digest.
    pub mr_config_id: String,
    /// MROWNER (48 bytes).
    pub mr_owner: String,
    /// MROWNERCONFIG (48 bytes).
    pub mr_owner_config: String,
    /// RTMR0: firmware configuration (ACPI tables, TD HOB) (48 bytes).
    pub rtmr_0: String,
    /// RTMR1: boot loader and kernel (48 bytes).
    pub rtmr_1: String,
    /// RTMR2: kernel command line and initrd (48 bytes).
    pub rtmr_2: String,
    /// RTMR3: runtime measurements (48 bytes).
    pub rtmr_3: String,
    /// REPORT_DATA (64 bytes): carries the session binding.
    pub report_data: String,
    /// TD 1.5: second TEE TCB SVN (16 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tee_tcb_svn2: Option<String>,
    /// TD 1.5: measurement of the service TD (48 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_service_td: Option<String>,
    /// True when an initdata digest was sent and found bound in MRCONFIGID.
    pub init_data_bound: bool,
    /// Platform family (FMSPC, 6 bytes) from the PCK certificate.
    pub fmspc: String,
    /// PCE security version from the PCK certificate.
    pub pce_svn: u16,
    /// TCB status from Intel's collateral (platform converged with module and QE):
    /// `UpToDate`, `SWHardeningNeeded`, `ConfigurationNeeded`,
    /// `ConfigurationAndSWHardeningNeeded`, `OutOfDate`,
    /// `OutOfDateConfigurationNeeded`; `null` when no collateral was checked.
    pub tcb_status: Option<String>,
    /// Platform TCB status alone.
    pub platform_tcb_status: Option<String>,
    /// Quoting enclave TCB status alone.
    pub qe_tcb_status: Option<String>,
    /// TDX module TCB status alone (module major version > 0 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_tcb_status: Option<String>,
    /// Intel security advisories that apply to the matched TCB levels.
    pub advisory_ids: Vec<String>,
    /// Date of the matched platform TCB level (RFC 3339).
    pub tcb_date: Option<String>,
    /// Intel's TCB evaluation data number of the collateral.
    pub tcb_evaluation_data_number: Option<u32>,
    /// True when a CC event log was supplied and replayed to the RTMRs.
    pub ccel_replayed: bool,
    /// The replayed events (without their data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Vec<CcEvent>>,
}

impl TdxClaims {
    pub fn new(
        q: &Quote,
        pck: &PckExtension,
        tcb: Option<TcbResult>,
        events: Option<Vec<CcEvent>>,
        init_data_bound: bool,
    ) -> Self {
        let r = &q.report;
        let attrs = u64::from_le_bytes(r.td_attributes);
        Self {
            quote_version: q.version,
            tee_tcb_svn: hex::encode(r.tee_tcb_svn),
            mr_seam: hex::encode(r.mr_seam),
            mr_signer_seam: hex::encode(r.mr_signer_seam),
            seam_attributes: hex::encode(r.seam_attributes),
            td_attributes: hex::encode(r.td_attributes),
            debug: attrs & 1 != 0,
            sept_ve_disable: attrs & (1 << 28) != 0,
            xfam: hex::encode(r.xfam),
            mrtd: hex::encode(r.mr_td),
            mr_config_id: hex::encode(r.mr_config_id),
            mr_owner: hex::encode(r.mr_owner),
            mr_owner_config: hex::encode(r.mr_owner_config),
            rtmr_0: hex::encode(r.rtmr[0]),
            rtmr_1: hex::encode(r.rtmr[1]),
            rtmr_2: hex::encode(r.rtmr[2]),
            rtmr_3: hex::encode(r.rtmr[3]),
            report_data: hex::encode(r.report_data),
            tee_tcb_svn2: r.tee_tcb_svn2.map(hex::encode),
            mr_service_td: r.mr_service_td.map(hex::encode),
            init_data_bound,
            fmspc: hex::encode(pck.fmspc),
            pce_svn: pck.pce_svn,
            tcb_status: tcb.as_ref().map(|t| t.status.clone()),
            platform_tcb_status: tcb.as_ref().map(|t| t.platform_status.clone()),
            qe_tcb_status: tcb.as_ref().map(|t| t.qe_status.clone()),
            module_tcb_status: tcb.as_ref().and_then(|t| t.module_status.clone()),
            advisory_ids: tcb
                .as_ref()
                .map(|t| t.advisory_ids.clone())
                .unwrap_or_default(),
            tcb_date: tcb.as_ref().map(|t| t.tcb_date.clone()),
            tcb_evaluation_data_number: tcb.as_ref().map(|t| t.tcb_evaluation_data_number),
            ccel_replayed: events.is_some(),
            event_log: events,
        }
    }
}
