//! The process of a container as kubelet, containerd and the agent will run it: the
//! Kubernetes fields over the image config's defaults. These are the values the
//! policy pins, so each rule below follows the component that applies it.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext};
use serde::Serialize;

use crate::image::ImageConfig;

/// `policy_data.containers[].process` (docs/WORKLOAD-POLICY.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub terminal: bool,
}

/// A computed process and what of it the policy cannot pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    pub process: Process,
    /// Variables whose value the cluster supplies at run time (`valueFrom`): present
    /// in the container but not in `process.env`.
    pub runtime_env: Vec<String>,
    /// Capabilities beyond containerd's default set.
    pub extra_caps: Vec<String>,
}

/// Computes the process of `c`; `Err` is a reason the pod owner must fix.
pub fn compute(
    c: &Container,
    pod_sc: Option<&PodSecurityContext>,
    img: &ImageConfig,
    default_caps: &[String],
) -> Result<Computed, String> {
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Err("privileged: a confidential pod cannot be privileged (it would own the guest and every secret in it)".into());
    }
    if c.env_from.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err("envFrom: the variable names would come from the cluster at run time; list them under env instead".into());
    }
    let vars = container_vars(c)?;
    let args = args(c, img, &vars)?;
    let (env, runtime_env) = env(img, &vars);
    let cwd = match c.working_dir.as_deref() {
        Some(w) if !w.is_empty() => w.to_owned(),
        _ if !img.working_dir.is_empty() => img.working_dir.clone(),
        _ => "/".to_owned(),
    };
    let (uid, gid) = user(sc, pod_sc, &img.user)?;
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|p| p.run_as_non_root));
    if non_root == Some(true) && uid == 0 {
        return Err("runAsNonRoot is set but the process would run as uid 0".into());
    }
    let additional_gids = additional_gids(gid, pod_sc)?;
    let capabilities = capabilities(sc, default_caps)?;
    let extra_caps = capabilities
        .iter()
        .filter(|c| !default_caps.contains(c))
        .cloned()
        .collect();
    Ok(Computed {
        process: Process {
            args,
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            capabilities,
            // kubelet asks for no_new_privs only when allowPrivilegeEscalation is
            // explicitly false (genpolicy does the same, src/tools/genpolicy/src/pod.rs
            // get_process_fields @7c6ba40c).
            no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
            terminal: c.tty == Some(true),
        },
        runtime_env,
        extra_caps,
    })
}

/// A container variable: a literal value, or one the cluster fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Value(String),
    Runtime,
}

/// The container's `env`, in order, values expanded as kubelet does: a `$(NAME)` in
/// a value refers to the variables defined before it.
fn container_vars(c: &Container) -> Result<Vec<(String, Var)>, String> {
    let mut out: Vec<(String, Var)> = Vec::new();
    for e in c.env.iter().flatten() {
        let v = if e.value_from.is_some() {
            Var::Runtime
        } else {
            let known: HashMap<&str, &Var> = out.iter().map(|(k, v)| (k.as_str(), v)).collect();
            Var::Value(
                expand(e.value.as_deref().unwrap_or_default(), &known)
                    .map_err(|r| format!("env {}: {r}", e.name))?,
            )
        };
        out.retain(|(k, _)| *k != e.name);
        out.push((e.name.clone(), v));
    }
    Ok(out)
}

/// Kubernetes' `$(VAR)` expansion: `$$` is `$`, `$(NAME)` is the variable's value, a
/// reference to an undefined variable stays as written, anything else is literal.
/// A reference to a variable the cluster fills in cannot be pinned.
fn expand(s: &str, vars: &HashMap<&str, &Var>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(') {
            match r.find(')') {
                Some(end) => {
                    let name = &r[..end];
                    match vars.get(name) {
                        Some(Var::Value(v)) => out.push_str(v),
                        Some(Var::Runtime) => {
                            return Err(format!(
                                "refers to $({name}), whose value the cluster sets at run time"
                            ))
                        }
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &r[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = r;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// An exec probe's command as kubelet runs it: `$(VAR)` expanded with the literal
/// `value` of the container's variables only (a `valueFrom` variable reads as empty).
pub fn probe_command(c: &Container, argv: &[String]) -> Vec<String> {
    let vars: Vec<(&str, Var)> = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            (
                e.name.as_str(),
                Var::Value(e.value.clone().unwrap_or_default()),
            )
        })
        .collect();
    let known: HashMap<&str, &Var> = vars.iter().map(|(k, v)| (*k, v)).collect();
    argv.iter()
        .map(|a| expand(a, &known).unwrap_or_else(|_| a.clone()))
        .collect()
}

/// containerd's CRI rule (WithProcessArgs, inherited from Docker): `command` replaces
/// the image's Entrypoint and drops its Cmd; `args` alone replaces Cmd only; an
/// Entrypoint of `[""]` means none. kubelet expands `$(VAR)` in both first.
fn args(c: &Container, img: &ImageConfig, vars: &[(String, Var)]) -> Result<Vec<String>, String> {
    let known: HashMap<&str, &Var> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let exp = |list: &Option<Vec<String>>, what: &str| -> Result<Vec<String>, String> {
        list.iter()
            .flatten()
            .map(|a| expand(a, &known).map_err(|r| format!("{what} {a:?}: {r}")))
            .collect()
    };
    let mut command = exp(&c.command, "command")?;
    let mut args = exp(&c.args, "args")?;
    if command.is_empty() {
        if args.is_empty() {
            args = img.cmd.clone();
        }
        if img.entrypoint != [""] {
            command = img.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err("no command: neither the container nor its image names a program".into());
    }
    Ok(command)
}

/// The image's Env, then the container's variables replacing same-named entries in
/// place and appending the others (containerd's WithEnv). Returns the pinned entries
/// and the names of the variables the cluster fills in.
fn env(img: &ImageConfig, vars: &[(String, Var)]) -> (Vec<String>, Vec<String>) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let mut entries: Vec<(String, Option<String>)> =
        img.env.iter().map(|e| (key(e), Some(e.clone()))).collect();
    for (name, v) in vars {
        let entry = match v {
            Var::Value(v) => Some(format!("{name}={v}")),
            Var::Runtime => None,
        };
        match entries.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = entry,
            None => entries.push((name.clone(), entry)),
        }
    }
    let runtime = entries
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    (
        entries.into_iter().filter_map(|(_, e)| e).collect(),
        runtime,
    )
}

fn id(v: i64, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} {v} is not a valid id"))
}

/// uid and gid: runAsUser / runAsGroup (container over pod) over the image's
/// numeric `User` (`uid` or `uid:gid`). Names would need the image's /etc/passwd,
/// which this tool does not read. Without a group, the gid is 0: the host has no
/// image rootfs to look it up in under guest pull, and the agent keeps what the host
/// sent (agent/src/spec.rs merge_image_config).
fn user(
    sc: Option<&SecurityContext>,
    pod: Option<&PodSecurityContext>,
    image_user: &str,
) -> Result<(u32, u32), String> {
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group));
    let (uid, gid) = match run_as_user {
        Some(u) => (id(u, "runAsUser")?, 0),
        None if image_user.is_empty() => (0, 0),
        None => {
            let (u, g) = match image_user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (image_user, None),
            };
            let num = |s: &str, what: &str| {
                s.parse::<u32>().map_err(|_| {
                    format!(
                        "the image's User {image_user:?} names a {what} {s:?}; only numeric \
                         ids can be pinned: set securityContext.runAsUser/runAsGroup"
                    )
                })
            };
            let uid = num(u, "user")?;
            let gid = match g {
                // runAsGroup replaces a named group, so only then is it not needed.
                Some(g) if run_as_group.is_none() => num(g, "group")?,
                _ => 0,
            };
            (uid, gid)
        }
    };
    let gid = match run_as_group {
        Some(g) => id(g, "runAsGroup")?,
        None => gid,
    };
    Ok((uid, gid))
}

/// The primary gid, the pod's supplementalGroups and its fsGroup (kubelet adds it
/// to the supplemental groups), as a sorted set.
fn additional_gids(gid: u32, pod: Option<&PodSecurityContext>) -> Result<Vec<u32>, String> {
    let mut set = BTreeSet::from([gid]);
    if let Some(p) = pod {
        for g in p.supplemental_groups.iter().flatten() {
            set.insert(id(*g, "supplementalGroups entry")?);
        }
        if let Some(g) = p.fs_group {
            set.insert(id(g, "fsGroup")?);
        }
    }
    Ok(set.into_iter().collect())
}

/// containerd's default set, then securityContext.capabilities as containerd's CRI
/// applies them: `drop: [ALL]` empties the set, then each `add` is added, then each
/// other `drop` removed (a capability both added and dropped is dropped). Names
/// are given without `CAP_`, any case.
fn capabilities(sc: Option<&SecurityContext>, defaults: &[String]) -> Result<Vec<String>, String> {
    let mut set: Vec<String> = defaults.to_vec();
    let Some(caps) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(set);
    };
    let norm = |c: &String| -> Result<Option<String>, String> {
        let u = c.to_ascii_uppercase();
        if u == "ALL" {
            return Ok(None);
        }
        if u.starts_with("CAP_") {
            return Err(format!(
                "capability {c:?}: Kubernetes names capabilities without the CAP_ prefix"
            ));
        }
        if u.is_empty() || !u.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return Err(format!("capability {c:?} is not a capability name"));
        }
        Ok(Some(format!("CAP_{u}")))
    };
    let add = caps.add.as_deref().unwrap_or_default();
    let drop = caps.drop.as_deref().unwrap_or_default();
    if add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        return Err("capabilities.add: ALL would give the container every capability, the power to undo its isolation".into());
    }
    if drop.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        set.clear();
    }
    for c in add {
        if let Some(c) = norm(c)? {
            if !set.contains(&c) {
                set.push(c);
            }
        }
    }
    for c in drop {
        if let Some(c) = norm(c)? {
            set.retain(|x| *x != c);
        }
    }
    Ok(set)
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
