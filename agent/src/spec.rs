//! The OCI runtime spec: conversion from the agent API's `grpc.Spec` to runc's
//! `config.json`, and the guest-side adjustments the agent makes to what the host sent.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::image::ImageConfig;
use crate::protocols::oci;

fn put<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, v: T, keep: bool) {
    if keep {
        m.insert(key.into(), v.into());
    }
}

/// The working directory runc is given: `/` when none is set.
pub fn runc_cwd(p: &oci::Process) -> &str {
    if p.Cwd.is_empty() {
        "/"
    } else {
        p.Cwd.as_str()
    }
}

/// The OCI `process` object.
pub fn process_to_json(p: &oci::Process) -> Value {
    let mut m = Map::new();
    put(&mut m, "terminal", p.Terminal, true);
    if let Some(b) = p.ConsoleSize.as_ref() {
        m.insert(
            "consoleSize".into(),
            json!({"height": b.Height, "width": b.Width}),
        );
    }
    let u = p.User.as_ref().cloned().unwrap_or_default();
    let mut user = Map::new();
    put(&mut user, "uid", u.UID, true);
    put(&mut user, "gid", u.GID, true);
    put(
        &mut user,
        "additionalGids",
        u.AdditionalGids.clone(),
        !u.AdditionalGids.is_empty(),
    );
    put(
        &mut user,
        "username",
        u.Username.clone(),
        !u.Username.is_empty(),
    );
    m.insert("user".into(), Value::Object(user));
    put(&mut m, "args", p.Args.clone(), true);
    put(&mut m, "env", p.Env.clone(), true);
    put(&mut m, "cwd", runc_cwd(p), true);
    if let Some(c) = p.Capabilities.as_ref() {
        m.insert(
            "capabilities".into(),
            json!({"bounding": c.Bounding, "effective": c.Effective,
                   "inheritable": c.Inheritable, "permitted": c.Permitted,
                   "ambient": c.Ambient}),
        );
    }
    let rl: Vec<Value> = p
        .Rlimits
        .iter()
        .map(|r| json!({"type": r.Type, "hard": r.Hard, "soft": r.Soft}))
        .collect();
    put(&mut m, "rlimits", rl, !p.Rlimits.is_empty());
    put(&mut m, "noNewPrivileges", p.NoNewPrivileges, true);
    put(
        &mut m,
        "apparmorProfile",
        p.ApparmorProfile.clone(),
        !p.ApparmorProfile.is_empty(),
    );
    put(&mut m, "oomScoreAdj", p.OOMScoreAdj, p.OOMScoreAdj != 0);
    put(
        &mut m,
        "selinuxLabel",
        p.SelinuxLabel.clone(),
        !p.SelinuxLabel.is_empty(),
    );
    Value::Object(m)
}

/// The OCI `linux.resources` object (zero means "not set", as in Kata's Go shim).
pub fn resources_to_json(r: &oci::LinuxResources) -> Value {
    let mut m = Map::new();
    let devs: Vec<Value> = r
        .Devices
        .iter()
        .map(|d| {
            let mut o = Map::new();
            put(&mut o, "allow", d.Allow, true);
            put(&mut o, "type", d.Type.clone(), !d.Type.is_empty());
            put(&mut o, "major", d.Major, d.Major >= 0 && d.Type != "a");
            put(&mut o, "minor", d.Minor, d.Minor >= 0 && d.Type != "a");
            put(&mut o, "access", d.Access.clone(), !d.Access.is_empty());
            Value::Object(o)
        })
        .collect();
    put(&mut m, "devices", devs, !r.Devices.is_empty());
    if let Some(mem) = r.Memory.as_ref() {
        let mut o = Map::new();
        put(&mut o, "limit", mem.Limit, mem.Limit != 0);
        put(&mut o, "reservation", mem.Reservation, mem.Reservation != 0);
        put(&mut o, "swap", mem.Swap, mem.Swap != 0);
        put(&mut o, "swappiness", mem.Swappiness, mem.Swappiness != 0);
        put(
            &mut o,
            "disableOOMKiller",
            mem.DisableOOMKiller,
            mem.DisableOOMKiller,
        );
        m.insert("memory".into(), Value::Object(o));
    }
    if let Some(cpu) = r.CPU.as_ref() {
        let mut o = Map::new();
        put(&mut o, "shares", cpu.Shares, cpu.Shares != 0);
        put(&mut o, "quota", cpu.Quota, cpu.Quota != 0);
        put(&mut o, "period", cpu.Period, cpu.Period != 0);
        put(&mut o, "cpus", cpu.Cpus.clone(), !cpu.Cpus.is_empty());
        put(&mut o, "mems", cpu.Mems.clone(), !cpu.Mems.is_empty());
        m.insert("cpu".into(), Value::Object(o));
    }
    if let Some(p) = r.Pids.as_ref() {
        if p.Limit != 0 {
            m.insert("pids".into(), json!({"limit": p.Limit}));
        }
    }
    let huge: Vec<Value> = r
        .HugepageLimits
        .iter()
        .map(|h| json!({"pageSize": h.Pagesize, "limit": h.Limit}))
        .collect();
    put(&mut m, "hugepageLimits", huge, !r.HugepageLimits.is_empty());
    Value::Object(m)
}

fn linux_to_json(l: &oci::Linux) -> Value {
    let mut m = Map::new();
    let idmap = |v: &[oci::LinuxIDMapping]| -> Vec<Value> {
        v.iter()
            .map(|i| json!({"containerID": i.ContainerID, "hostID": i.HostID, "size": i.Size}))
            .collect()
    };
    put(
        &mut m,
        "uidMappings",
        idmap(&l.UIDMappings),
        !l.UIDMappings.is_empty(),
    );
    put(
        &mut m,
        "gidMappings",
        idmap(&l.GIDMappings),
        !l.GIDMappings.is_empty(),
    );
    if !l.Sysctl.is_empty() {
        m.insert("sysctl".into(), json!(l.Sysctl));
    }
    if let Some(r) = l.Resources.as_ref() {
        m.insert("resources".into(), resources_to_json(r));
    }
    put(
        &mut m,
        "cgroupsPath",
        l.CgroupsPath.clone(),
        !l.CgroupsPath.is_empty(),
    );
    let ns: Vec<Value> = l
        .Namespaces
        .iter()
        .map(|n| {
            let mut o = Map::new();
            put(&mut o, "type", n.Type.clone(), true);
            put(&mut o, "path", n.Path.clone(), !n.Path.is_empty());
            Value::Object(o)
        })
        .collect();
    m.insert("namespaces".into(), Value::Array(ns));
    let devs: Vec<Value> = l
        .Devices
        .iter()
        .map(|d| {
            json!({"path": d.Path, "type": d.Type, "major": d.Major, "minor": d.Minor,
                   "fileMode": d.FileMode, "uid": d.UID, "gid": d.GID})
        })
        .collect();
    put(&mut m, "devices", devs, !l.Devices.is_empty());
    if let Some(s) = l.Seccomp.as_ref() {
        let calls: Vec<Value> = s
            .Syscalls
            .iter()
            .map(|c| {
                let mut o = Map::new();
                put(&mut o, "names", c.Names.clone(), true);
                put(&mut o, "action", c.Action.clone(), true);
                if let Some(oci::linux_syscall::ErrnoRet::Errnoret(e)) = c.ErrnoRet {
                    o.insert("errnoRet".into(), json!(e));
                }
                let args: Vec<Value> = c
                    .Args
                    .iter()
                    .map(|a| json!({"index": a.Index, "value": a.Value, "valueTwo": a.ValueTwo, "op": a.Op}))
                    .collect();
                put(&mut o, "args", args, !c.Args.is_empty());
                Value::Object(o)
            })
            .collect();
        m.insert(
            "seccomp".into(),
            json!({"defaultAction": s.DefaultAction, "architectures": s.Architectures,
                   "flags": s.Flags, "syscalls": calls}),
        );
    }
    put(
        &mut m,
        "rootfsPropagation",
        l.RootfsPropagation.clone(),
        !l.RootfsPropagation.is_empty(),
    );
    put(
        &mut m,
        "maskedPaths",
        l.MaskedPaths.clone(),
        !l.MaskedPaths.is_empty(),
    );
    put(
        &mut m,
        "readonlyPaths",
        l.ReadonlyPaths.clone(),
        !l.ReadonlyPaths.is_empty(),
    );
    put(
        &mut m,
        "mountLabel",
        l.MountLabel.clone(),
        !l.MountLabel.is_empty(),
    );
    Value::Object(m)
}

/// The whole `config.json` for a container.
pub fn spec_to_json(s: &oci::Spec) -> Value {
    let mut m = Map::new();
    let version = if s.Version.is_empty() {
        "1.0.2"
    } else {
        s.Version.as_str()
    };
    put(&mut m, "ociVersion", version, true);
    let process = s.Process.as_ref().cloned().unwrap_or_default();
    m.insert("process".into(), process_to_json(&process));
    let root = s.Root.as_ref().cloned().unwrap_or_default();
    m.insert(
        "root".into(),
        json!({"path": root.Path, "readonly": root.Readonly}),
    );
    put(
        &mut m,
        "hostname",
        s.Hostname.clone(),
        !s.Hostname.is_empty(),
    );
    let mounts: Vec<Value> = s
        .Mounts
        .iter()
        .map(|x| json!({"destination": x.destination, "source": x.source, "type": x.type_, "options": x.options}))
        .collect();
    m.insert("mounts".into(), Value::Array(mounts));
    if let Some(h) = s.Hooks.as_ref() {
        let hooks = |v: &[oci::Hook]| -> Vec<Value> {
            v.iter()
                .map(|h| {
                    let mut o = Map::new();
                    put(&mut o, "path", h.Path.clone(), true);
                    put(&mut o, "args", h.Args.clone(), !h.Args.is_empty());
                    put(&mut o, "env", h.Env.clone(), !h.Env.is_empty());
                    put(&mut o, "timeout", h.Timeout, h.Timeout > 0);
                    Value::Object(o)
                })
                .collect()
        };
        m.insert(
            "hooks".into(),
            json!({"prestart": hooks(&h.Prestart), "createRuntime": hooks(&h.CreateRuntime),
                   "createContainer": hooks(&h.CreateContainer),
                   "startContainer": hooks(&h.StartContainer),
                   "poststart": hooks(&h.Poststart), "poststop": hooks(&h.Poststop)}),
        );
    }
    if !s.Annotations.is_empty() {
        m.insert("annotations".into(), json!(s.Annotations));
    }
    let linux = s.Linux.as_ref().cloned().unwrap_or_default();
    m.insert("linux".into(), linux_to_json(&linux));
    Value::Object(m)
}

/// Fills what the host left empty from the image config, as Kata does for guest pull:
/// args from entrypoint + cmd, image env vars the spec does not set, the working
/// directory, and a numeric user.
pub fn merge_image_config(process: &mut oci::Process, img: &ImageConfig) {
    if process.Args.is_empty() {
        process.Args = img
            .entrypoint
            .iter()
            .chain(img.cmd.iter())
            .cloned()
            .collect();
    }
    for e in &img.env {
        let key = e.split('=').next().unwrap_or_default();
        if !process.Env.iter().any(|x| x.split('=').next() == Some(key)) {
            process.Env.push(e.clone());
        }
    }
    if (process.Cwd.is_empty() || process.Cwd == "/") && !img.working_dir.is_empty() {
        process.Cwd = img.working_dir.clone();
    }
    if let Some(u) = process.User.as_mut() {
        if u.UID == 0 && u.Username.is_empty() {
            let mut parts = img.user.splitn(2, ':');
            if let Some(Ok(uid)) = parts.next().map(str::parse::<u32>) {
                u.UID = uid;
                if let Some(Ok(gid)) = parts.next().map(str::parse::<u32>) {
                    u.GID = gid;
                }
            }
        }
    }
}

/// The guest decides the namespaces: the host's network namespace path means nothing
/// here (containers share the VM's network), and app containers join the sandbox
/// (pause) container's IPC/UTS (and PID, if shared) namespaces.
pub fn fix_namespaces(linux: &mut oci::Linux, pause_pid: Option<i32>, share_pidns: bool) {
    let mut out = Vec::new();
    for mut ns in std::mem::take(&mut linux.Namespaces) {
        match ns.Type.as_str() {
            "network" => continue,
            "ipc" | "uts" => {
                ns.Path = pause_pid
                    .map(|p| format!("/proc/{p}/ns/{}", ns.Type))
                    .unwrap_or_default();
            }
            "pid" => {
                ns.Path = match (pause_pid, share_pidns) {
                    (Some(p), true) => format!("/proc/{p}/ns/pid"),
                    _ => String::new(),
                };
            }
            // The host may not point a container into another one's mount, user, cgroup
            // or time namespace: runc creates them fresh.
            _ => ns.Path.clear(),
        }
        out.push(ns);
    }
    linux.Namespaces = out;
}

/// Keeps only mounts the guest can and may honour: kernel filesystems, and bind mounts
/// whose source lies below one of `allowed_bind_roots` (what the host copied in or the
/// sandbox storages). Anything else would let the host graft guest paths into a container.
pub fn filter_mounts(mounts: &mut Vec<oci::Mount>, allowed_bind_roots: &[&Path]) {
    mounts.retain(|m| {
        let is_bind = m.type_ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            return true;
        }
        let src = Path::new(&m.source);
        let ok = src.is_absolute()
            && !m.source.split('/').any(|c| c == "..")
            && allowed_bind_roots.iter().any(|r| src.starts_with(r))
            && src.exists();
        if !ok {
            tracing::warn!(source = %m.source, dest = %m.destination, "dropping bind mount");
        }
        ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_converts_to_runc_config() {
        let mut s = oci::Spec::new();
        let mut p = oci::Process::new();
        p.Args = vec!["/bin/sh".into(), "-c".into(), "echo hi".into()];
        p.Env = vec!["PATH=/bin".into()];
        s.Process = Some(p).into();
        let mut l = oci::Linux::new();
        let mut ns = oci::LinuxNamespace::new();
        ns.Type = "mount".into();
        l.Namespaces.push(ns);
        let mut r = oci::LinuxResources::new();
        let mut mem = oci::LinuxMemory::new();
        mem.Limit = 1 << 20;
        r.Memory = Some(mem).into();
        l.Resources = Some(r).into();
        s.Linux = Some(l).into();
        let j = spec_to_json(&s);
        assert_eq!(j["process"]["args"][2], "echo hi");
        assert_eq!(j["process"]["cwd"], "/");
        assert_eq!(j["linux"]["namespaces"][0]["type"], "mount");
        assert_eq!(j["linux"]["resources"]["memory"]["limit"], 1 << 20);
        assert!(j["linux"]["resources"]["memory"].get("swap").is_none());
    }

    #[test]
    fn image_config_fills_only_what_is_missing() {
        let img = ImageConfig {
            env: vec!["PATH=/img".into(), "FOO=bar".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["arg".into()],
            working_dir: "/work".into(),
            user: "1000:2000".into(),
        };
        let mut p = oci::Process::new();
        p.Env = vec!["PATH=/spec".into()];
        p.User = Some(oci::User::new()).into();
        merge_image_config(&mut p, &img);
        assert_eq!(p.Args, vec!["/entry", "arg"]);
        assert_eq!(p.Env, vec!["PATH=/spec", "FOO=bar"]);
        assert_eq!(p.Cwd, "/work");
        assert_eq!((p.User.UID, p.User.GID), (1000, 2000));
        let mut p2 = oci::Process::new();
        p2.Args = vec!["/mine".into()];
        merge_image_config(&mut p2, &img);
        assert_eq!(p2.Args, vec!["/mine"]);
    }

    #[test]
    fn namespaces_join_the_sandbox() {
        let mut l = oci::Linux::new();
        for t in ["network", "ipc", "uts", "pid", "mount"] {
            let mut ns = oci::LinuxNamespace::new();
            ns.Type = t.into();
            ns.Path = "/var/run/netns/host-side".into();
            l.Namespaces.push(ns);
        }
        fix_namespaces(&mut l, Some(77), false);
        let got: Vec<(String, String)> = l
            .Namespaces
            .iter()
            .map(|n| (n.Type.clone(), n.Path.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ipc".into(), "/proc/77/ns/ipc".into()),
                ("uts".into(), "/proc/77/ns/uts".into()),
                ("pid".into(), String::new()),
                // Never a host-named mount namespace.
                ("mount".into(), String::new()),
            ]
        );
    }

    #[test]
    fn bind_mounts_are_confined() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), "x").unwrap();
        let mk = |src: &str, ty: &str| {
            let mut m = oci::Mount::new();
            m.source = src.into();
            m.type_ = ty.into();
            m.destination = "/d".into();
            m
        };
        let ok = dir.path().join("hosts").display().to_string();
        let mut mounts = vec![
            mk("proc", "proc"),
            mk(&ok, "bind"),
            mk("/etc", "bind"),
            mk(&format!("{}/../../etc", dir.path().display()), "bind"),
        ];
        filter_mounts(&mut mounts, &[dir.path()]);
        let srcs: Vec<&str> = mounts.iter().map(|m| m.source.as_str()).collect();
        assert_eq!(srcs, vec!["proc", ok.as_str()]);
    }
}
