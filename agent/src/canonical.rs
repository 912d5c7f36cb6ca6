//! One spelling for what Kata's two runtimes send differently, applied to every request
//! before the policy sees it, so that a policy rule and runc see the same words.
//!
//! Kata's Go runtime sends OCI names as runc writes them (`CAP_NET_ADMIN`, `network`,
//! `mount`). runtime-rs and `kata-agent-ctl` go through Kata's Rust conversion
//! (`src/libs/protocols/src/trans.rs` @7c6ba40c), which prints `oci-spec` 0.10 enums:
//! capabilities without the `CAP_` prefix (sometimes JSON-quoted), namespaces as `net`,
//! `mnt`. Passed on unchanged, runc silently drops the unknown capabilities (the container
//! runs with none) and refuses the namespaces. Anything that is neither spelling is refused:
//! a name this agent cannot interpret must not reach runc or slip past a policy rule.

use std::any::Any;

use crate::protocols::{agent, oci};

/// Why a request cannot be put into canonical form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("unknown capability {0:?}")]
    Capability(String),
    #[error("unknown namespace type {0:?}")]
    Namespace(String),
    #[error("namespace type {0:?} given twice")]
    DuplicateNamespace(String),
    #[error(
        "passfd I/O ({0}) is not supported: the shim reads and writes stdio through \
         ReadStdout/ReadStderr/WriteStdin"
    )]
    PassfdIo(&'static str),
}

/// The capabilities Linux defines (`include/uapi/linux/capability.h`, 0 to 40), without
/// the `CAP_` prefix.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `CAP_NET_ADMIN`, `NET_ADMIN`, `"CAP_NET_ADMIN"` (JSON-quoted, as trans.rs may pass
/// it) and `net_admin` all become `CAP_NET_ADMIN`.
pub fn capability(name: &str) -> Result<String, CanonicalError> {
    let unquoted = serde_json::from_str::<String>(name).unwrap_or_else(|_| name.to_string());
    let upper = unquoted.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        Err(CanonicalError::Capability(name.to_string()))
    }
}

/// runc's namespace type for the OCI name or its `oci-spec` short form.
pub fn namespace_type(name: &str) -> Result<&'static str, CanonicalError> {
    Ok(match name {
        "network" | "net" => "network",
        "mount" | "mnt" => "mount",
        "pid" => "pid",
        "ipc" => "ipc",
        "uts" => "uts",
        "user" => "user",
        "cgroup" => "cgroup",
        "time" => "time",
        _ => return Err(CanonicalError::Namespace(name.to_string())),
    })
}

fn capability_list(list: &mut Vec<String>) -> Result<(), CanonicalError> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for c in list.iter() {
        let c = capability(c)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    *list = out;
    Ok(())
}

/// Canonical capability names in all five sets of a process.
pub fn process(p: &mut oci::Process) -> Result<(), CanonicalError> {
    if let Some(c) = p.Capabilities.as_mut() {
        for set in [
            &mut c.Bounding,
            &mut c.Effective,
            &mut c.Inheritable,
            &mut c.Permitted,
            &mut c.Ambient,
        ] {
            capability_list(set)?;
        }
    }
    Ok(())
}

/// Canonical process capabilities and namespace types of a spec.
pub fn spec(s: &mut oci::Spec) -> Result<(), CanonicalError> {
    if let Some(p) = s.Process.as_mut() {
        process(p)?;
    }
    if let Some(l) = s.Linux.as_mut() {
        let mut seen: Vec<&'static str> = Vec::new();
        for ns in l.Namespaces.iter_mut() {
            let t = namespace_type(&ns.Type)?;
            if seen.contains(&t) {
                return Err(CanonicalError::DuplicateNamespace(t.to_string()));
            }
            seen.push(t);
            ns.Type = t.to_string();
        }
    }
    Ok(())
}

fn no_passfd(ports: [(u32, &'static str); 3]) -> Result<(), CanonicalError> {
    match ports.iter().find(|(p, _)| *p != 0) {
        Some((_, name)) => Err(CanonicalError::PassfdIo(name)),
        None => Ok(()),
    }
}

/// Puts a request into canonical form; requests without such fields pass unchanged.
pub fn request<M: Any>(req: &mut M) -> Result<(), CanonicalError> {
    let req: &mut dyn Any = req;
    if let Some(r) = req.downcast_mut::<agent::CreateContainerRequest>() {
        no_passfd([
            (r.stdin_port, "stdin_port"),
            (r.stdout_port, "stdout_port"),
            (r.stderr_port, "stderr_port"),
        ])?;
        if let Some(s) = r.OCI.as_mut() {
            spec(s)?;
        }
    } else if let Some(r) = req.downcast_mut::<agent::ExecProcessRequest>() {
        no_passfd([
            (r.stdin_port, "stdin_port"),
            (r.stdout_port, "stdout_port"),
            (r.stderr_port, "stderr_port"),
        ])?;
        if let Some(p) = r.process.as_mut() {
            process(p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The spellings of trans.rs (Kata 7c6ba40c, `cap_hashset2vec` prints oci-spec 0.10's
    // `Capability` without the prefix; its tests feed JSON-quoted names) and of the Go runtime.
    #[test]
    fn capabilities_of_both_kata_runtimes_become_runc_names() {
        for given in [
            "CAP_NET_ADMIN",
            "NET_ADMIN",
            "\"CAP_NET_ADMIN\"",
            "net_admin",
        ] {
            assert_eq!(capability(given).unwrap(), "CAP_NET_ADMIN", "{given}");
        }
        assert_eq!(
            capability("CHECKPOINT_RESTORE").unwrap(),
            "CAP_CHECKPOINT_RESTORE"
        );
        for bad in ["CAP_DOES_NOT_EXIST", "", "CAP_", "ALL"] {
            assert!(capability(bad).is_err(), "{bad}");
        }
    }

    // oci-spec 0.10 `LinuxNamespaceType` displays as `mnt` and `net` (strum `to_string`).
    #[test]
    fn namespaces_of_both_kata_runtimes_become_runc_names() {
        assert_eq!(namespace_type("net").unwrap(), "network");
        assert_eq!(namespace_type("mnt").unwrap(), "mount");
        for same in [
            "network", "mount", "pid", "ipc", "uts", "user", "cgroup", "time",
        ] {
            assert_eq!(namespace_type(same).unwrap(), same);
        }
        assert!(namespace_type("NET").is_err());
        assert!(namespace_type("").is_err());
    }

    fn spec_with(caps: &[&str], ns: &[&str]) -> oci::Spec {
        let mut s = oci::Spec::new();
        let mut c = oci::LinuxCapabilities::new();
        c.Bounding = caps.iter().map(|c| c.to_string()).collect();
        c.Effective = c.Bounding.clone();
        c.Permitted = c.Bounding.clone();
        let mut p = oci::Process::new();
        p.Capabilities = Some(c).into();
        s.Process = Some(p).into();
        let mut l = oci::Linux::new();
        for t in ns {
            let mut n = oci::LinuxNamespace::new();
            n.Type = t.to_string();
            l.Namespaces.push(n);
        }
        s.Linux = Some(l).into();
        s
    }

    #[test]
    fn create_request_is_canonical_before_the_policy_sees_it() {
        let mut r = agent::CreateContainerRequest::new();
        r.OCI = Some(spec_with(
            &["CHOWN", "CAP_KILL", "KILL"],
            &["mnt", "net", "pid"],
        ))
        .into();
        request(&mut r).unwrap();
        let s = r.OCI.as_ref().unwrap();
        let c = s.Process.Capabilities.as_ref().unwrap();
        assert_eq!(c.Bounding, ["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(c.Permitted, ["CAP_CHOWN", "CAP_KILL"]);
        let ns: Vec<_> = s.Linux.Namespaces.iter().map(|n| n.Type.as_str()).collect();
        assert_eq!(ns, ["mount", "network", "pid"]);
    }

    #[test]
    fn unknown_or_ambiguous_names_and_passfd_are_refused() {
        let mut r = agent::CreateContainerRequest::new();
        r.OCI = Some(spec_with(&["CAP_BOGUS"], &[])).into();
        assert_eq!(
            request(&mut r),
            Err(CanonicalError::Capability("CAP_BOGUS".into()))
        );
        r.OCI = Some(spec_with(&[], &["net", "network"])).into();
        assert_eq!(
            request(&mut r),
            Err(CanonicalError::DuplicateNamespace("network".into()))
        );
        r.OCI = Some(spec_with(&[], &["mnt"])).into();
        r.stdout_port = 1025;
        assert_eq!(
            request(&mut r),
            Err(CanonicalError::PassfdIo("stdout_port"))
        );
        let mut e = agent::ExecProcessRequest::new();
        e.stdin_port = 7;
        assert_eq!(request(&mut e), Err(CanonicalError::PassfdIo("stdin_port")));
        // Requests without such fields are untouched.
        let mut w = agent::WaitProcessRequest::new();
        w.container_id = "c".into();
        request(&mut w).unwrap();
        assert_eq!(w.container_id, "c");
    }
}
