//! What goes into the guest image and how it is measured, from
//! `deploy/guest-image.toml`: the one list the Debian build path (this crate's
//! users, `scripts/build-ovmf.sh`) and the Nix build (`nix/guest-image.nix`, which
//! reads the same file with `builtins.fromTOML`) share.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The file's text, compiled in so every user reads the same list.
pub const GUEST_IMAGE_TOML: &str = include_str!("../../deploy/guest-image.toml");

/// Guest path of the agent's configuration file.
pub const AGENT_CONFIG_PATH: &str = "etc/coco-agent/config.toml";

#[derive(Debug, thiserror::Error)]
#[error("deploy/guest-image.toml: {0}")]
pub struct ContentsError(String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestContents {
    /// Binary (a workspace program) that is `/init`.
    pub init: String,
    /// Tools shipped as `/usr/bin/NAME`.
    pub binaries: Vec<String>,
    /// Shared objects loaded with dlopen (by soname).
    pub dlopen_libraries: Vec<String>,
    pub busybox: bool,
    pub pause_bundle: bool,
    /// Guest path of the CA bundle.
    pub ca_bundle: String,
    pub agent_config: String,
    pub kernel: KernelFeatures,
    pub firmware: BTreeMap<String, Firmware>,
    pub measure: Measure,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelFeatures {
    /// Module name (distribution kernel) → Kconfig symbol (built-in kernel).
    pub modules: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub dsc: String,
    pub file: String,
    pub tee: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// File name under `deploy/kata/`.
    pub kata_config: String,
    pub vcpus: Vec<u32>,
    pub tpm: bool,
    pub edk2_min: String,
}

impl GuestContents {
    pub fn parse(text: &str) -> Result<Self, ContentsError> {
        let c: Self = toml::from_str(text).map_err(|e| ContentsError(e.to_string()))?;
        if c.kernel.modules.is_empty() || c.firmware.is_empty() || c.measure.vcpus.is_empty() {
            return Err(ContentsError(
                "kernel.modules, firmware and measure.vcpus must not be empty".into(),
            ));
        }
        Ok(c)
    }

    /// The shipped list.
    pub fn shipped() -> Result<Self, ContentsError> {
        Self::parse(GUEST_IMAGE_TOML)
    }

    /// Module names a distribution kernel must ship and the agent loads.
    pub fn modules(&self) -> Vec<String> {
        self.kernel.modules.keys().cloned().collect()
    }

    /// The firmware build for a TEE (`snp`, `tdx`).
    pub fn firmware_for(&self, tee: &str) -> Option<&Firmware> {
        self.firmware.values().find(|f| f.tee == tee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_parses() {
        let c = GuestContents::shipped().unwrap();
        assert_eq!(c.init, "coco-agent");
        assert!(c.binaries.iter().any(|b| b == "runc"));
        assert!(c.firmware_for("snp").is_some() && c.firmware_for("tdx").is_some());
        assert!(c.modules().iter().any(|m| m == "dm_crypt"));
    }

    #[test]
    fn unknown_keys_and_empty_lists_are_refused() {
        let good = GUEST_IMAGE_TOML;
        assert!(GuestContents::parse(&format!("typo = 1\n{good}")).is_err());
        let no_vcpus = good.replace("vcpus = [1, 2, 4]", "vcpus = []");
        assert_ne!(no_vcpus, good);
        assert!(GuestContents::parse(&no_vcpus).is_err());
    }
}
