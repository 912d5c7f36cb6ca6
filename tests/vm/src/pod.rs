//! One confidential pod end to end, shared by the VM tests, the demo and the
//! benchmark: the guest image, the pod's initdata (KBS address + CA, registry
//! settings, agent policy), the VM, and the shim.

use std::time::Duration;

use coco_image::initdata::Initdata;

use crate::guest::Guest;
use crate::services::{Kbs, Registry};
use crate::shim::Shim;
use crate::{Firmware, Vm, VmConfig, VmError};

/// Hard bound on a pod VM's life under TCG.
pub const POD_VM_TIMEOUT: Duration = Duration::from_secs(600);
/// Boot → agent answering Health.Check under TCG.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(240);

/// The pod's initdata TOML: the KBS the guest attests to (with its CA), the
/// registry it may reach over plain HTTP, and optionally an agent policy.
pub fn initdata_toml(kbs: Option<&Kbs>, registry: &Registry, policy: Option<&str>) -> String {
    initdata_toml_with_image_policy(kbs, registry, policy, None)
}

/// [`initdata_toml`] with the pod's image policy (containers-policy.json) inline in
/// `cdh.toml` `[image] image_security_policy`.
pub fn initdata_toml_with_image_policy(
    kbs: Option<&Kbs>,
    registry: &Registry,
    policy: Option<&str>,
    image_policy: Option<&str>,
) -> String {
    let mut t = String::from("version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n");
    if let Some(kbs) = kbs {
        t.push_str(&format!(
            "\"aa.toml\" = '''\n[token_configs]\n[token_configs.kbs]\nurl = \"{}\"\ncert = \"\"\"\n{}\"\"\"\n'''\n",
            kbs.guest_url(),
            kbs.ca_pem
        ));
    }
    t.push_str(&format!(
        "\"cdh.toml\" = '''\n[image]\ninsecure_registries = [\"{}\"]\n",
        registry.guest_addr()
    ));
    if let Some(p) = image_policy {
        t.push_str(&format!("image_security_policy = \"\"\"\n{p}\n\"\"\"\n"));
    }
    t.push_str("'''\n");
    if let Some(p) = policy {
        t.push_str(&format!("\"policy.rego\" = '''\n{p}'''\n"));
    }
    t
}

/// The agent policy the tests' pod owner ships in the initdata: the confidential
/// default (no exec, no stdin, no policy changes) plus reading the containers'
/// output, i.e. logs.
pub fn confidential_policy_with_logs() -> String {
    coco_agent::policy::CONFIDENTIAL_POLICY.replace(
        "default ReadStreamRequest := false",
        "default ReadStreamRequest := true",
    )
}

/// How to boot the pod VM.
#[derive(Debug, Clone)]
pub struct PodVm {
    pub initdata_toml: String,
    /// Extra kernel command line (`agent.attester=sample`, ...).
    pub cmdline_extra: String,
    pub firmware: Firmware,
    pub tpm: bool,
    pub tpm_state: Option<std::path::PathBuf>,
    pub memory_mib: u32,
    /// A scratch disk of this size for the agent's dm-crypt ephemeral storage
    /// (`agent.scratch_device=/dev/vdb`); tmpfs without it.
    pub scratch_mib: Option<u64>,
}

impl PodVm {
    pub fn new(initdata_toml: String) -> Self {
        Self {
            initdata_toml,
            cmdline_extra: String::new(),
            firmware: Firmware::SeaBios,
            tpm: false,
            tpm_state: None,
            memory_mib: 1024,
            scratch_mib: None,
        }
    }

    /// The full command line for `guest`.
    pub fn cmdline(&self, guest: &Guest) -> String {
        let mut c = guest.cmdline.clone();
        if self.scratch_mib.is_some() {
            // vda is the initdata disk, vdb the scratch disk.
            c.push_str(" agent.scratch_device=/dev/vdb");
        }
        if !self.cmdline_extra.is_empty() {
            c.push(' ');
            c.push_str(&self.cmdline_extra);
        }
        c
    }

    /// Boots the VM and connects the shim (Health.Check answered).
    pub async fn boot(&self, guest: &Guest) -> Result<(Vm, Shim), VmError> {
        let initdata = Initdata::parse(&self.initdata_toml)
            .and_then(|d| d.to_disk())
            .map_err(|e| VmError::Config(format!("initdata: {e}")))?;
        let mut cfg = VmConfig::new(&guest.kernel, &guest.initrd, &self.cmdline(guest));
        cfg.vsock = true;
        cfg.network = true;
        cfg.tpm = self.tpm;
        cfg.tpm_state = self.tpm_state.clone();
        cfg.firmware = self.firmware.clone();
        cfg.memory_mib = self.memory_mib;
        cfg.initdata = Some(initdata);
        cfg.scratch_mib = self.scratch_mib;
        let vm = Vm::start(&cfg, POD_VM_TIMEOUT)?;
        let shim = Shim::connect(&vm, AGENT_READY_TIMEOUT).await?;
        Ok((vm, shim))
    }
}

/// What the guest's KBS client logged about an attestation (serial console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationLog {
    pub tee: String,
    pub status: String,
    pub evidence_ms: u64,
    pub handshake_ms: u64,
}

/// The attestations the guest logged, in order (the agent's `attested to the KBS`
/// lines: `tee=Tpm status="affirming" evidence_ms=.. handshake_ms=..`).
pub fn attestations_from_serial(serial: &str) -> Vec<AttestationLog> {
    serial
        .lines()
        .filter_map(|l| l.split_once("attested to the KBS").map(|(_, rest)| rest))
        .map(|rest| {
            let field = |k: &str| -> String {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string()
            };
            AttestationLog {
                tee: field("tee").to_lowercase(),
                status: field("status"),
                evidence_ms: field("evidence_ms").parse().unwrap_or(0),
                handshake_ms: field("handshake_ms").parse().unwrap_or(0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_lines_are_read_from_the_console() {
        let serial = "[    1.0] virtio\n2026-11-28T09:30:00.1Z  INFO attester::kbs_client: attested to the KBS tee=Tpm status=\"affirming\" evidence_ms=123 handshake_ms=456\nnoise\n";
        assert_eq!(
            attestations_from_serial(serial),
            vec![AttestationLog {
                tee: "tpm".into(),
                status: "affirming".into(),
                evidence_ms: 123,
                handshake_ms: 456
            }]
        );
        assert!(attestations_from_serial("nothing here").is_empty());
    }
}
