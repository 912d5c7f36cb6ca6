//! Claims of a verified SEV-SNP report, as the attestation policy sees them.

use super::{Product, SigningKey};
use serde::Serialize;
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::TcbVersion;

/// A TCB version (security patch levels of the platform's firmware).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SnpTcb {
    /// SVN of the PSP bootloader.
    pub bootloader: u8,
    /// SVN of the PSP operating system.
    pub tee: u8,
    /// SVN of the SNP firmware.
    pub snp: u8,
    /// Lowest microcode patch level of all cores.
    pub microcode: u8,
    /// SVN of the FMC firmware (Turin and later only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

impl From<&TcbVersion> for SnpTcb {
    fn from(t: &TcbVersion) -> Self {
        Self {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        }
    }
}

/// The guest policy the VM was launched with, decoded.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SnpPolicy {
    /// Raw 64-bit policy value.
    pub raw: u64,
    /// Minimum ABI major version the guest requires.
    pub abi_major: u64,
    /// Minimum ABI minor version the guest requires.
    pub abi_minor: u64,
    /// Host SMT is allowed.
    pub smt_allowed: bool,
    /// A migration agent may be associated.
    pub migrate_ma_allowed: bool,
    /// Debugging (host access to guest memory) is allowed.
    pub debug_allowed: bool,
    /// The guest may only run on a single socket.
    pub single_socket_required: bool,
}

/// Everything a verified SNP report states, with digests as lowercase hex.
#[derive(Debug, Clone, Serialize)]
pub struct SnpClaims {
    /// Report format version.
    pub version: u32,
    /// CPU generation whose AMD root signed the endorsement key.
    pub product: Product,
    /// Key that signed the report: `vcek` (per chip) or `vlek` (per cloud provider).
    pub signing_key: SigningKey,
    /// Launch measurement (48 bytes): the digest of the initial guest memory.
    pub measurement: String,
    /// HOST_DATA (32 bytes) set by the host at launch; carries the initdata digest.
    pub host_data: String,
    /// REPORT_DATA (64 bytes) the guest asked to be signed; carries the session binding.
    pub report_data: String,
    /// True when an initdata digest was sent and found bound in HOST_DATA.
    pub init_data_bound: bool,
    /// Guest security version number from the ID block.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: SnpPolicy,
    /// Family ID from the ID block (16 bytes).
    pub family_id: String,
    /// Image ID from the ID block (16 bytes).
    pub image_id: String,
    /// VMPL the report was requested at.
    pub vmpl: u32,
    /// SHA-384 of the ID-block signing key (zero if none).
    pub id_key_digest: String,
    /// SHA-384 of the ID-block author key (zero if none).
    pub author_key_digest: String,
    /// Report ID of this guest (32 bytes).
    pub report_id: String,
    /// Report ID of the migration agent (32 bytes).
    pub report_id_ma: String,
    /// Chip identifier (64 bytes; zero when masked).
    pub chip_id: String,
    /// TCB the signing key was derived for; equals the VCEK's TCB extensions.
    pub reported_tcb: SnpTcb,
    /// TCB the platform runs now.
    pub current_tcb: SnpTcb,
    /// TCB the platform has committed to (anti-rollback floor).
    pub committed_tcb: SnpTcb,
    /// TCB at the time the guest was launched.
    pub launch_tcb: SnpTcb,
    /// Raw PLATFORM_INFO bits.
    pub platform_info: u64,
    /// Platform has SMT enabled.
    pub platform_smt_enabled: bool,
    /// Platform has transparent SME enabled.
    pub platform_tsme_enabled: bool,
    /// Current SNP firmware version, `major.minor.build`.
    pub firmware_version: String,
}

impl SnpClaims {
    pub fn from_report(
        r: &AttestationReport,
        product: Product,
        signing_key: SigningKey,
        init_data_bound: bool,
    ) -> Self {
        Self {
            version: r.version,
            product,
            signing_key,
            measurement: hex::encode(r.measurement),
            host_data: hex::encode(r.host_data),
            report_data: hex::encode(r.report_data),
            init_data_bound,
            guest_svn: r.guest_svn,
            policy: SnpPolicy {
                raw: r.policy.0,
                abi_major: r.policy.abi_major(),
                abi_minor: r.policy.abi_minor(),
                smt_allowed: r.policy.smt_allowed(),
                migrate_ma_allowed: r.policy.migrate_ma_allowed(),
                debug_allowed: r.policy.debug_allowed(),
                single_socket_required: r.policy.single_socket_required(),
            },
            family_id: hex::encode(r.family_id),
            image_id: hex::encode(r.image_id),
            vmpl: r.vmpl,
            id_key_digest: hex::encode(r.id_key_digest),
            author_key_digest: hex::encode(r.author_key_digest),
            report_id: hex::encode(r.report_id),
            report_id_ma: hex::encode(r.report_id_ma),
            chip_id: hex::encode(r.chip_id),
            reported_tcb: (&r.reported_tcb).into(),
            current_tcb: (&r.current_tcb).into(),
            committed_tcb: (&r.committed_tcb).into(),
            launch_tcb: (&r.launch_tcb).into(),
            platform_info: r.plat_info.0,
            platform_smt_enabled: r.plat_info.smt_enabled(),
            platform_tsme_enabled: r.plat_info.tsme_enabled(),
            firmware_version: format!(
                "{}.{}.{}",
                r.current.major, r.current.minor, r.current.build
            ),
        }
    }
}
