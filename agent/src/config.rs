//! Agent configuration: defaults, the kernel command line (`agent.*` keys, as Kata's
//! agent reads them) and the environment.

use std::path::PathBuf;

/// Default listen address: vsock, any CID, port 1024.
pub const DEFAULT_SERVER_ADDR: &str = "vsock://-1:1024";
/// Environment variable naming the listen address (as for Kata's agent).
pub const SERVER_ADDR_ENV: &str = "KATA_AGENT_SERVER_ADDR";

/// Which policy to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The built-in confidential policy (the default).
    Confidential,
    /// The built-in allow-all development policy; only when asked for by name.
    AllowAll,
    /// A Rego file (e.g. from the image).
    File(PathBuf),
    /// Rego text (e.g. `policy.rego` of the initdata).
    Text(String),
}

/// Everything the agent needs to know at start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_addr: String,
    /// Root below which `CopyFile` may write.
    pub copy_root: PathBuf,
    /// Largest file `CopyFile` accepts.
    pub copy_max_size: u64,
    /// Where the shim's shared files (hostname, hosts, resolv.conf, ...) are copied to;
    /// bind mounts into containers may only come from here or from `state_dir`.
    pub shared_dir: PathBuf,
    /// Container bundles and rootfs (on the ephemeral encrypted storage).
    pub state_dir: PathBuf,
    /// The sandbox (pause) container's bundle in the guest image (`rootfs/` inside).
    pub pause_bundle: PathBuf,
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub policy: PolicySource,
    /// Running as the VM's init: DestroySandbox powers the VM off.
    pub init_mode: bool,
    /// Evidence source for the KBS: `auto` (detect SNP/TDX/TPM, none without a TEE),
    /// `snp`, `tdx`, `tpm`, or `sample` (development only, never trusted by default).
    pub attester: String,
    /// Registries (`host:port`) the guest pull may reach over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Hex digest standing in for the launch-time `HOST_DATA` of the sample TEE
    /// (`agent.sample_host_data=`); development and tests only.
    pub sample_host_data: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            server_addr: DEFAULT_SERVER_ADDR.into(),
            copy_root: "/run".into(),
            copy_max_size: 64 << 20,
            shared_dir: "/run/kata-containers/shared/containers".into(),
            state_dir: "/run/kata-containers".into(),
            pause_bundle: "/pause_bundle".into(),
            runc: "runc".into(),
            runc_root: "/run/runc".into(),
            policy: PolicySource::Confidential,
            init_mode: false,
            attester: "auto".into(),
            insecure_registries: Vec::new(),
            sample_host_data: None,
        }
    }
}

impl AgentConfig {
    /// Applies `agent.*` keys of a kernel command line.
    pub fn apply_cmdline(&mut self, cmdline: &str) {
        for word in cmdline.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            match k {
                "agent.server_addr" => self.server_addr = v.into(),
                "agent.policy" => self.policy = parse_policy(v),
                "agent.runc" => self.runc = v.into(),
                "agent.attester" => self.attester = v.into(),
                "agent.sample_host_data" => self.sample_host_data = Some(v.into()),
                _ => {}
            }
        }
    }

    /// Applies the environment (`KATA_AGENT_SERVER_ADDR`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(a) = get(SERVER_ADDR_ENV) {
            self.server_addr = a;
        }
    }
}

/// The agent's configuration file in the (measured) guest image, e.g.
/// `/etc/coco-agent/config.toml`. When the agent is `/init` it has no command line of its
/// own, so this is where the image says how to start.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server_addr: Option<String>,
    /// `confidential`, `allow-all` or a Rego file path.
    pub policy: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub pause_bundle: Option<PathBuf>,
    pub runc: Option<PathBuf>,
    pub runc_root: Option<PathBuf>,
    pub modules_file: Option<PathBuf>,
    /// Initdata device, or `auto` to look for the initdata magic on virtio disks.
    pub initdata: Option<String>,
    pub attester_bin: Option<PathBuf>,
    #[serde(default)]
    pub attester_args: Vec<String>,
    pub attester_socket: Option<PathBuf>,
    /// Evidence source (see [`AgentConfig::attester`]).
    pub attester: Option<String>,
    /// Registries the guest pull may reach over plain HTTP (test and lab setups).
    #[serde(default)]
    pub insecure_registries: Vec<String>,
}

impl FileConfig {
    /// Parses the TOML text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Applies the settings that live in [`AgentConfig`].
    pub fn apply(&self, c: &mut AgentConfig) {
        if let Some(v) = &self.server_addr {
            c.server_addr = v.clone();
        }
        if let Some(v) = &self.policy {
            c.policy = parse_policy(v);
        }
        for (dst, src) in [
            (&mut c.state_dir, &self.state_dir),
            (&mut c.pause_bundle, &self.pause_bundle),
            (&mut c.runc, &self.runc),
            (&mut c.runc_root, &self.runc_root),
        ] {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        if let Some(a) = &self.attester {
            c.attester = a.clone();
        }
        c.insecure_registries
            .extend(self.insecure_registries.iter().cloned());
    }
}

/// `confidential`, `allow-all` or a file path.
pub fn parse_policy(v: &str) -> PolicySource {
    match v {
        "confidential" => PolicySource::Confidential,
        "allow-all" => PolicySource::AllowAll,
        p => PolicySource::File(p.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file() {
        let f = FileConfig::parse(
            "policy = \"allow-all\"\npause_bundle = \"/opt/pause\"\nattester_bin = \"/usr/bin/aa\"\nattester_args = [\"--x\"]\ninitdata = \"auto\"\nattester = \"tpm\"\ninsecure_registries = [\"10.0.2.2:5000\"]\n",
        )
        .unwrap();
        let mut c = AgentConfig::default();
        f.apply(&mut c);
        assert_eq!(c.policy, PolicySource::AllowAll);
        assert_eq!(c.pause_bundle, PathBuf::from("/opt/pause"));
        assert_eq!(f.attester_args, vec!["--x"]);
        assert_eq!(c.attester, "tpm");
        assert_eq!(c.insecure_registries, vec!["10.0.2.2:5000"]);
        assert!(
            FileConfig::parse("typo_key = 1\n").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn cmdline_then_env() {
        let mut c = AgentConfig::default();
        assert_eq!(c.server_addr, DEFAULT_SERVER_ADDR);
        assert_eq!(c.policy, PolicySource::Confidential);
        c.apply_cmdline(
            "console=ttyS0 agent.server_addr=vsock://-1:2048 agent.policy=allow-all quiet",
        );
        assert_eq!(c.server_addr, "vsock://-1:2048");
        assert_eq!(c.policy, PolicySource::AllowAll);
        assert_eq!(c.attester, "auto");
        c.apply_cmdline("agent.attester=sample");
        assert_eq!(c.attester, "sample");
        c.apply_env(|k| (k == SERVER_ADDR_ENV).then(|| "unix:///tmp/a.sock".to_string()));
        assert_eq!(c.server_addr, "unix:///tmp/a.sock");
    }
}
