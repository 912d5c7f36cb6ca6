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
    fn cmdline_then_env() {
        let mut c = AgentConfig::default();
        assert_eq!(c.server_addr, DEFAULT_SERVER_ADDR);
        assert_eq!(c.policy, PolicySource::Confidential);
        c.apply_cmdline(
            "console=ttyS0 agent.server_addr=vsock://-1:2048 agent.policy=allow-all quiet",
        );
        assert_eq!(c.server_addr, "vsock://-1:2048");
        assert_eq!(c.policy, PolicySource::AllowAll);
        c.apply_env(|k| (k == SERVER_ADDR_ENV).then(|| "unix:///tmp/a.sock".to_string()));
        assert_eq!(c.server_addr, "unix:///tmp/a.sock");
    }
}
