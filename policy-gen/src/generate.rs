//! From a manifest to pinned pods: per pod template, resolve the images, compute
//! every container's process and mounts, render and check the policy, wrap it in
//! initdata, and write the initdata annotation and the pinned images back into the
//! manifest.

use std::collections::{BTreeMap, HashMap};

use coco_jose::initdata::{Initdata, ANNOTATION};
use k8s_openapi::api::core::v1::Container;

use crate::env_rules::{env_rules, Needs};
use crate::error::{Error, Result};
use crate::image::{PinnedImage, Resolver};
use crate::initdata::{self, Settings};
use crate::manifest::{Manifest, Workload};
use crate::mounts::container_mounts;
use crate::policy::{self, ContainerPolicy, PolicyData};
use crate::process;

/// Pod annotation `coco-policy/exec-<container>`: a JSON list of argv lists the host
/// may run in that container (`kubectl exec`).
pub const EXEC_ANNOTATION_PREFIX: &str = "coco-policy/exec-";
/// Pod annotation `coco-policy/read-logs: "true"`: the host may read the containers'
/// output (`kubectl logs`). Default false.
pub const READ_LOGS_ANNOTATION: &str = "coco-policy/read-logs";

/// What a generation needs besides the manifest.
#[derive(Debug)]
pub struct Options {
    pub resolver: Resolver,
    pub initdata: Settings,
}

/// The policy of one pod template.
#[derive(Debug, Clone)]
pub struct PodPolicy {
    pub workload: Workload,
    pub data: PolicyData,
    /// The full policy text (rules + `policy_data`).
    pub policy: String,
    pub initdata: Initdata,
}

/// Everything a generation produces.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The input manifest with the images pinned and the initdata annotations set.
    pub manifest: String,
    pub pods: Vec<PodPolicy>,
    /// Things the pod owner should know (nothing here weakens the policy silently).
    pub warnings: Vec<String>,
}

/// Generates the policy of every pod template of `manifest_text`.
pub async fn generate(manifest_text: &str, opts: &Options) -> Result<Generated> {
    let mut manifest = Manifest::parse(manifest_text)?;
    let workloads = manifest.workloads()?;
    if workloads.is_empty() {
        return Err(Error::Manifest(
            "no Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob in it".into(),
        ));
    }
    let caps = policy::default_caps()?;
    let mut images: HashMap<String, PinnedImage> = HashMap::new();
    let mut warnings = Vec::new();
    let mut pods = Vec::new();
    for w in workloads {
        let (data, pins) = pod(&w, &caps, &opts.resolver, &mut images, &mut warnings).await?;
        let text = policy::render(&data)?;
        policy::verify(&text, &data)?;
        let init = initdata::build(&opts.initdata, &text)?;
        if w.annotations.contains_key(ANNOTATION) {
            warnings.push(format!("{}: replacing its initdata annotation", w.label()));
        }
        manifest.set_annotation(&w, ANNOTATION, &init.to_annotation()?)?;
        for (name, image) in &pins {
            manifest.set_image(&w, name, image)?;
        }
        pods.push(PodPolicy {
            workload: w,
            data,
            policy: text,
            initdata: init,
        });
    }
    Ok(Generated {
        manifest: manifest.to_yaml()?,
        pods,
        warnings,
    })
}

/// Allowed argv lists by container name.
type Execs = BTreeMap<String, Vec<Vec<String>>>;

/// The annotations' exec lists by container name, and read_logs.
fn annotations(w: &Workload, names: &[&str]) -> Result<(Execs, bool)> {
    let bad = |reason: String| Error::Pod {
        workload: w.label(),
        reason,
    };
    let mut exec = BTreeMap::new();
    for (k, v) in &w.annotations {
        let Some(name) = k.strip_prefix(EXEC_ANNOTATION_PREFIX) else {
            continue;
        };
        if !names.contains(&name) {
            return Err(bad(format!(
                "annotation {k}: the pod has no container {name:?}"
            )));
        }
        let lists: Vec<Vec<String>> = serde_json::from_str(v).map_err(|e| {
            bad(format!(
                "annotation {k} must be a JSON list of argv lists: {e}"
            ))
        })?;
        if lists.iter().any(Vec::is_empty) {
            return Err(bad(format!("annotation {k}: an empty argv")));
        }
        exec.insert(name.to_owned(), lists);
    }
    let read_logs = match w.annotations.get(READ_LOGS_ANNOTATION).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad(format!(
                "annotation {READ_LOGS_ANNOTATION} must be \"true\" or \"false\", not {other:?}"
            )))
        }
    };
    Ok((exec, read_logs))
}

/// Exec probes run through ExecProcess too (genpolicy allows them the same way,
/// src/tools/genpolicy/src/pod.rs get_exec_commands @7c6ba40c); lifecycle hooks are
/// run as written.
fn manifest_execs(c: &Container) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for p in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
    {
        if let Some(cmd) = p.exec.as_ref().and_then(|e| e.command.as_ref()) {
            out.push(process::probe_command(c, cmd));
        }
    }
    if let Some(l) = &c.lifecycle {
        for h in [&l.post_start, &l.pre_stop].into_iter().flatten() {
            if let Some(cmd) = h.exec.as_ref().and_then(|e| e.command.clone()) {
                out.push(cmd);
            }
        }
    }
    out
}

type Pins = Vec<(String, String)>;

async fn pod(
    w: &Workload,
    caps: &[String],
    resolver: &Resolver,
    images: &mut HashMap<String, PinnedImage>,
    warnings: &mut Vec<String>,
) -> Result<(PolicyData, Pins)> {
    let spec = &w.spec;
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    if spec.containers.is_empty() {
        return Err(Error::Pod {
            workload: w.label(),
            reason: "no containers".into(),
        });
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(Error::Pod {
            workload: w.label(),
            reason: "ephemeral containers are added at run time by the host".into(),
        });
    }
    if spec.runtime_class_name.is_none() {
        warnings.push(format!(
            "{}: no runtimeClassName; the pod will not run in a confidential VM",
            w.label()
        ));
    }
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let (mut exec, read_logs) = annotations(w, &names)?;
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    let mut pins = Vec::new();
    let mut runtime_env = Vec::new();
    let mut tty = false;
    for c in containers {
        let fail = |reason: String| Error::Container {
            workload: w.label(),
            container: c.name.clone(),
            reason,
        };
        let image = c
            .image
            .as_deref()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| fail("no image".into()))?;
        let pinned = match images.get(image) {
            Some(p) => p.clone(),
            None => {
                let p = resolver.resolve(image).await?;
                images.insert(image.to_owned(), p.clone());
                p
            }
        };
        let computed = process::compute(c, spec.security_context.as_ref(), &pinned.config, caps)
            .map_err(fail)?;
        for cap in &computed.extra_caps {
            warnings.push(format!(
                "{}, container {:?}: {cap} is beyond containerd's default set; the agent's generic rules refuse it",
                w.label(),
                c.name
            ));
        }
        for v in &computed.runtime_env {
            warnings.push(format!(
                "{}, container {:?}: ${v} is set by the cluster at run time; any value is allowed",
                w.label(),
                c.name
            ));
        }
        runtime_env.extend(computed.runtime_env.iter().cloned());
        tty |= computed.process.terminal;
        let mounts = container_mounts(c, volumes, &pinned.config.volumes).map_err(fail)?;
        let mut execs = exec.remove(&c.name).unwrap_or_default();
        for e in manifest_execs(c) {
            if !execs.contains(&e) {
                execs.push(e);
            }
        }
        pins.push((c.name.clone(), pinned.reference.clone()));
        out.push(ContainerPolicy {
            name: c.name.clone(),
            image: pinned.reference,
            process: computed.process,
            readonly_root: c
                .security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem)
                == Some(true),
            mounts,
            exec: execs,
        });
    }
    let needs = Needs {
        job: matches!(w.kind.as_str(), "Job" | "CronJob"),
        tty,
    };
    Ok((
        PolicyData {
            version: policy::VERSION,
            containers: out,
            env_rules: env_rules(needs, &runtime_env),
            read_logs,
        },
        pins,
    ))
}

#[cfg(test)]
#[path = "generate_tests.rs"]
mod tests;
