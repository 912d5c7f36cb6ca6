//! The kernel command line Kata Containers boots the guest with, composed from a Kata
//! configuration file the way the Kata 3.x Go runtime (`containerd-shim-kata-v2`) does
//! for QEMU on x86_64. The cmdline is measured (SNP kernel-hashes table, TDX RTMR2,
//! vTPM PCR 9), so the image must be measured with exactly this string, not just the
//! configuration's `kernel_params`.
//!
//! Kata builds it in this order (`qemu.kernelParameters`, `katautils.SetKernelParams`):
//! 1. the amd64 defaults: `tsc=reliable no_timer_check rcupdate.rcu_expedited=1
//!    i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 noreplace-smp
//!    reboot=k cryptomgr.notests net.ifnames=0 pci=lastbus=0`, then
//!    `intel_iommu=on iommu=pt` with `enable_iommu`;
//! 2. the console: `console=hvc0 console=hvc1` (virtio console), or `console=ttyS0`
//!    with `use_legacy_serial`;
//! 3. `quiet`, or `debug` with `enable_debug`;
//! 4. `panic=1`;
//! 5. `nr_cpus=<default_maxvcpus>`;
//! 6. `selinux=0` with `disable_guest_selinux`, else `selinux=1`;
//! 7. `scsi_mod.scan=none` when the block device driver is `virtio-scsi` (the default);
//! 8. the agent's: `agent.log=debug` (`[agent.kata] enable_debug`),
//!    `agent.debug_console agent.debug_console_vport=1026`, `agent.cdh_api_timeout=N`;
//! 9. `kernel_params`, last, so they win where the kernel takes the last value.
//!
//! Parameters are split at whitespace (double quotes group) and re-joined as
//! `key=value`, or `key` alone when the value is empty, as Kata does. Settings that
//! would make the cmdline depend on the host or the pod are refused: an unset
//! `default_maxvcpus` (Kata then uses the host's CPU count), `kernel_params` in
//! `enable_annotations` (a pod could append to the measured cmdline), a disk `image`
//! (Kata adds `root=` and systemd parameters), and agent tracing (its parameter
//! changed between Kata releases).

/// The amd64 defaults of Kata's QEMU driver (`qemu_amd64.go`).
pub const AMD64_PARAMS: &[&str] = &[
    "tsc=reliable",
    "no_timer_check",
    "rcupdate.rcu_expedited=1",
    "i8042.direct=1",
    "i8042.dumbkbd=1",
    "i8042.nopnp=1",
    "i8042.noaux=1",
    "noreplace-smp",
    "reboot=k",
    "cryptomgr.notests",
    "net.ifnames=0",
    "pci=lastbus=0",
];

/// Block device drivers Kata accepts; only `virtio-scsi` adds a parameter.
const BLOCK_DRIVERS: &[&str] = &[
    "virtio-scsi",
    "virtio-blk",
    "virtio-mmio",
    "nvdimm",
    "virtio-blk-ccw",
];

#[derive(Debug, thiserror::Error)]
pub enum KataError {
    #[error("Kata configuration is not valid TOML: {0}")]
    Toml(String),
    #[error("Kata configuration has no [hypervisor.qemu] table (only QEMU is modelled)")]
    NotQemu,
    #[error("Kata configuration: {key} must be {expected}")]
    Type { key: String, expected: &'static str },
    #[error("Kata configuration: {0}")]
    Unsupported(String),
}

/// The command line Kata boots the guest of `config` (a Kata TOML file's text) with.
pub fn cmdline(config: &str) -> Result<String, KataError> {
    let doc: toml::Table = config
        .parse()
        .map_err(|e: toml::de::Error| KataError::Toml(e.to_string()))?;
    let hv = doc
        .get("hypervisor")
        .and_then(|h| h.get("qemu"))
        .and_then(toml::Value::as_table)
        .ok_or(KataError::NotQemu)?;
    let empty = toml::Table::new();
    let agent = doc
        .get("agent")
        .and_then(|a| a.get("kata"))
        .and_then(toml::Value::as_table)
        .unwrap_or(&empty);
    let q = Section {
        t: hv,
        name: "hypervisor.qemu",
    };
    let a = Section {
        t: agent,
        name: "agent.kata",
    };

    if !q.string("image")?.is_empty() {
        return Err(KataError::Unsupported(
            "`image` is set; only initrd guests are modelled (Kata adds root= and systemd parameters for disk images)".into(),
        ));
    }
    if q.string("initrd")?.is_empty() {
        return Err(KataError::Unsupported("`initrd` is not set".into()));
    }
    if q.strings("enable_annotations")?
        .iter()
        .any(|a| a == "kernel_params")
    {
        return Err(KataError::Unsupported(
            "`enable_annotations` allows kernel_params: a pod could change the measured cmdline"
                .into(),
        ));
    }
    let max_vcpus = q.integer("default_maxvcpus")?;
    if max_vcpus < 1 {
        return Err(KataError::Unsupported(
            "`default_maxvcpus` must be set (>= 1): unset, Kata puts the host's CPU count into nr_cpus".into(),
        ));
    }
    if a.bool("enable_tracing")? {
        return Err(KataError::Unsupported(
            "[agent.kata] enable_tracing: its kernel parameter differs between Kata releases"
                .into(),
        ));
    }
    let driver = match q.string("block_device_driver")? {
        "" => "virtio-scsi",
        d if BLOCK_DRIVERS.contains(&d) => d,
        other => {
            return Err(KataError::Unsupported(format!(
                "unknown block_device_driver {other:?}"
            )))
        }
    };

    let mut out: Vec<String> = AMD64_PARAMS.iter().map(|s| s.to_string()).collect();
    if q.bool("enable_iommu")? {
        out.extend(["intel_iommu=on".into(), "iommu=pt".into()]);
    }
    if q.bool("use_legacy_serial")? {
        out.push("console=ttyS0".into());
    } else {
        out.extend(["console=hvc0".into(), "console=hvc1".into()]);
    }
    out.push(
        if q.bool("enable_debug")? {
            "debug"
        } else {
            "quiet"
        }
        .into(),
    );
    out.push("panic=1".into());
    out.push(format!("nr_cpus={max_vcpus}"));
    let selinux = if q.bool("disable_guest_selinux")? {
        0
    } else {
        1
    };
    out.push(format!("selinux={selinux}"));
    if driver == "virtio-scsi" {
        out.push("scsi_mod.scan=none".into());
    }
    if a.bool("enable_debug")? {
        out.push("agent.log=debug".into());
    }
    if a.bool("debug_console_enabled")? {
        out.extend([
            "agent.debug_console".into(),
            "agent.debug_console_vport=1026".into(),
        ]);
    }
    let cdh = a.integer("cdh_api_timeout")?;
    if cdh > 0 {
        out.push(format!("agent.cdh_api_timeout={cdh}"));
    }
    out.extend(
        fields(q.string("kernel_params")?)
            .iter()
            .map(|f| normalise(f)),
    );
    Ok(out.join(" "))
}

/// Splits at whitespace; double quotes group (and are kept), like Kata's
/// `KernelParamFields`.
fn fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A parameter as Kata re-serializes it: `key=value`, or `key` for an empty value.
fn normalise(field: &str) -> String {
    match field.split_once('=') {
        Some((k, "")) => k.to_string(),
        Some((k, v)) => format!("{k}={v}"),
        None => field.to_string(),
    }
}

/// Typed access to one table, with the key named in errors.
struct Section<'a> {
    t: &'a toml::Table,
    name: &'static str,
}

impl Section<'_> {
    fn err(&self, key: &str, expected: &'static str) -> KataError {
        KataError::Type {
            key: format!("{}.{key}", self.name),
            expected,
        }
    }

    fn string(&self, key: &str) -> Result<&str, KataError> {
        match self.t.get(key) {
            None => Ok(""),
            Some(v) => v.as_str().ok_or_else(|| self.err(key, "a string")),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, KataError> {
        match self.t.get(key) {
            None => Ok(false),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, "true or false")),
        }
    }

    fn integer(&self, key: &str) -> Result<i64, KataError> {
        match self.t.get(key) {
            None => Ok(0),
            Some(v) => v
                .as_integer()
                .filter(|n| *n >= 0)
                .ok_or_else(|| self.err(key, "a non-negative integer")),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, KataError> {
        match self.t.get(key) {
            None => Ok(vec![]),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err(key, "a list of strings"))
                })
                .collect(),
            Some(_) => Err(self.err(key, "a list of strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[hypervisor.qemu]\ninitrd = \"/g/initrd.img\"\ndefault_maxvcpus = 1\ndisable_guest_selinux = true\nkernel_params = \"console=hvc0 panic=-1 agent.log=info\"\n";
    const KATA_DEFAULTS: &str = "tsc=reliable no_timer_check rcupdate.rcu_expedited=1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 noreplace-smp reboot=k cryptomgr.notests net.ifnames=0 pci=lastbus=0";

    #[test]
    fn composes_in_katas_order() {
        assert_eq!(
            cmdline(BASE).unwrap(),
            format!("{KATA_DEFAULTS} console=hvc0 console=hvc1 quiet panic=1 nr_cpus=1 selinux=0 scsi_mod.scan=none console=hvc0 panic=-1 agent.log=info")
        );
    }

    #[test]
    fn every_modelled_knob_changes_its_part() {
        let with = |extra: &str| {
            cmdline(&BASE.replace(
                "[hypervisor.qemu]\n",
                &format!("[hypervisor.qemu]\n{extra}\n"),
            ))
            .unwrap()
        };
        assert!(with("enable_debug = true").contains(" debug panic=1 "));
        assert!(with("use_legacy_serial = true").contains(" console=ttyS0 quiet "));
        assert!(with("enable_iommu = true")
            .contains("pci=lastbus=0 intel_iommu=on iommu=pt console=hvc0"));
        assert!(!with("block_device_driver = \"virtio-blk\"").contains("scsi_mod"));
        let four = cmdline(&BASE.replace("default_maxvcpus = 1", "default_maxvcpus = 4")).unwrap();
        assert!(four.contains(" nr_cpus=4 "), "{four}");
        let selinux_on = cmdline(&BASE.replace("disable_guest_selinux = true\n", "")).unwrap();
        assert!(selinux_on.contains(" selinux=1 "));
        let agent = format!("{BASE}[agent.kata]\nenable_debug = true\ndebug_console_enabled = true\ncdh_api_timeout = 50\n");
        assert!(cmdline(&agent).unwrap().contains(
            "scsi_mod.scan=none agent.log=debug agent.debug_console agent.debug_console_vport=1026 agent.cdh_api_timeout=50 console=hvc0"
        ));
    }

    #[test]
    fn user_params_are_split_and_reserialized_like_kata() {
        let c = cmdline(&BASE.replace(
            "console=hvc0 panic=-1 agent.log=info",
            "  a=1   flag b=  x=\\\"y z\\\" ",
        ))
        .unwrap();
        assert!(
            c.ends_with(" scsi_mod.scan=none a=1 flag b x=\"y z\""),
            "{c}"
        );
    }

    #[test]
    fn host_or_pod_dependent_settings_are_refused() {
        for (bad, why) in [
            (
                BASE.replace("default_maxvcpus = 1\n", ""),
                "default_maxvcpus",
            ),
            (
                BASE.replace("initrd =", "image = \"/g/img\"\ninitrd ="),
                "image",
            ),
            (BASE.replace("initrd = \"/g/initrd.img\"\n", ""), "initrd"),
            (
                format!("{BASE}enable_annotations = [\"kernel_params\"]\n"),
                "kernel_params",
            ),
            (
                format!("{BASE}[agent.kata]\nenable_tracing = true\n"),
                "enable_tracing",
            ),
            (
                BASE.replace("default_maxvcpus = 1", "default_maxvcpus = \"1\""),
                "non-negative integer",
            ),
            (
                format!("{BASE}block_device_driver = \"floppy\"\n"),
                "floppy",
            ),
            ("[hypervisor.clh]\n".to_string(), "QEMU"),
            ("[x".to_string(), "TOML"),
        ] {
            let e = cmdline(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
