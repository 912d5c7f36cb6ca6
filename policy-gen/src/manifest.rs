//! Kubernetes manifests: the pod templates of a multi-document YAML file, typed with
//! `k8s-openapi` for reading and kept as YAML values for writing back, so fields this
//! tool does not know survive unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

/// Where a kind keeps its pod template (`metadata` + `spec`), from the object's root.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// One pod template of the manifest.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Index of the YAML document holding it.
    pub doc: usize,
    pub kind: String,
    /// `metadata.name` of the object (the Pod, Deployment, ...).
    pub name: String,
    /// The pod template's annotations.
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
}

impl Workload {
    /// `Kind/name`, for messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// A parsed multi-document manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    docs: Vec<Value>,
}

impl Manifest {
    /// Parses every YAML document; empty documents are dropped.
    pub fn parse(text: &str) -> Result<Self> {
        let mut docs = Vec::new();
        for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(d)
                .map_err(|e| Error::Manifest(format!("document {}: {e}", i + 1)))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        Ok(Self { docs })
    }

    /// The pod templates, in document order. Objects of other kinds are kept but
    /// not returned.
    pub fn workloads(&self) -> Result<Vec<Workload>> {
        let mut out = Vec::new();
        for (i, d) in self.docs.iter().enumerate() {
            let kind = d.get("kind").and_then(Value::as_str).unwrap_or_default();
            let Some(path) = template_path(kind) else {
                continue;
            };
            let name = d
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>")
                .to_owned();
            let label = format!("{kind}/{name}");
            let template = walk(d, path).ok_or_else(|| Error::Pod {
                workload: label.clone(),
                reason: format!("no pod template at {}", path.join(".")),
            })?;
            let bad = |what: &str, e: serde_yaml::Error| Error::Pod {
                workload: label.clone(),
                reason: format!("{what}: {e}"),
            };
            let meta: ObjectMeta = match template.get("metadata") {
                Some(m) => serde_yaml::from_value(m.clone()).map_err(|e| bad("metadata", e))?,
                None => ObjectMeta::default(),
            };
            let spec: PodSpec =
                serde_yaml::from_value(template.get("spec").cloned().ok_or_else(|| {
                    Error::Pod {
                        workload: label.clone(),
                        reason: "the pod template has no spec".into(),
                    }
                })?)
                .map_err(|e| bad("pod spec", e))?;
            out.push(Workload {
                doc: i,
                kind: kind.to_owned(),
                name,
                annotations: meta.annotations.unwrap_or_default(),
                spec,
            });
        }
        Ok(out)
    }

    fn template_mut(&mut self, w: &Workload) -> Result<&mut Mapping> {
        let path = template_path(&w.kind).unwrap_or(&[]);
        let doc = self
            .docs
            .get_mut(w.doc)
            .ok_or_else(|| Error::Manifest(format!("no document {}", w.doc)))?;
        walk_mut(doc, path)
            .and_then(Value::as_mapping_mut)
            .ok_or_else(|| Error::Pod {
                workload: w.label(),
                reason: "pod template is not a mapping".into(),
            })
    }

    /// Sets `key` in the pod template's annotations (replacing an older value).
    pub fn set_annotation(&mut self, w: &Workload, key: &str, value: &str) -> Result<()> {
        let t = self.template_mut(w)?;
        let meta = t
            .entry("metadata".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        let meta = meta.as_mapping_mut().ok_or_else(|| Error::Pod {
            workload: w.label(),
            reason: "metadata is not a mapping".into(),
        })?;
        let ann = meta
            .entry("annotations".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        let ann = ann.as_mapping_mut().ok_or_else(|| Error::Pod {
            workload: w.label(),
            reason: "annotations is not a mapping".into(),
        })?;
        ann.insert(key.into(), value.into());
        Ok(())
    }

    /// Replaces the image of container `name` (regular or init) with `image`.
    pub fn set_image(&mut self, w: &Workload, name: &str, image: &str) -> Result<()> {
        let t = self.template_mut(w)?;
        let mut found = false;
        for list in ["initContainers", "containers"] {
            let Some(cs) = t
                .get_mut("spec")
                .and_then(|s| s.get_mut(list))
                .and_then(Value::as_sequence_mut)
            else {
                continue;
            };
            for c in cs {
                if c.get("name").and_then(Value::as_str) == Some(name) {
                    if let Some(m) = c.as_mapping_mut() {
                        m.insert("image".into(), image.into());
                        found = true;
                    }
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(Error::Pod {
                workload: w.label(),
                reason: format!("no container {name:?} to pin"),
            })
        }
    }

    /// The manifest as multi-document YAML.
    pub fn to_yaml(&self) -> Result<String> {
        let mut out = String::new();
        for (i, d) in self.docs.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(
                &serde_yaml::to_string(d).map_err(|e| Error::Manifest(format!("writing: {e}")))?,
            );
        }
        Ok(out)
    }
}

fn walk<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn walk_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn containers(name: &str) -> String {
        format!(
            "containers:\n- name: {name}\n  image: busybox@sha256:{}\n",
            "a".repeat(64)
        )
    }

    fn indent(s: &str, n: usize) -> String {
        s.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect()
    }

    #[test]
    fn every_kind_yields_its_pod_template() {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{}",
            indent(&containers("c-pod"), 2)
        );
        let templ = |kind: &str, name: &str| {
            format!(
                "kind: {kind}\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        a: b\n    spec:\n{}",
                indent(&containers(&format!("c-{name}")), 6)
            )
        };
        let cron = format!(
            "kind: CronJob\nmetadata:\n  name: cj\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n{}",
            indent(&containers("c-cj"), 10)
        );
        let text = [
            pod,
            templ("Deployment", "d"),
            "kind: Service\nmetadata:\n  name: svc\n".into(),
            templ("StatefulSet", "s"),
            templ("DaemonSet", "ds"),
            templ("Job", "j"),
            cron,
            String::new(),
        ]
        .join("---\n");
        let mut m = Manifest::parse(&text).unwrap();
        let ws = m.workloads().unwrap();
        let got: Vec<(String, String)> = ws
            .iter()
            .map(|w| (w.label(), w.spec.containers[0].name.clone()))
            .collect();
        let want: Vec<(String, String)> = [
            ("Pod/p", "c-pod"),
            ("Deployment/d", "c-d"),
            ("StatefulSet/s", "c-s"),
            ("DaemonSet/ds", "c-ds"),
            ("Job/j", "c-j"),
            ("CronJob/cj", "c-cj"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(ws[1].annotations.get("a").map(String::as_str), Some("b"));

        for w in &ws {
            m.set_annotation(w, "k", &w.label()).unwrap();
            m.set_image(w, &w.spec.containers[0].name, "pinned")
                .unwrap();
        }
        assert!(m.set_image(&ws[0], "nope", "x").is_err());
        let again = Manifest::parse(&m.to_yaml().unwrap()).unwrap();
        let ws2 = again.workloads().unwrap();
        for (a, b) in ws.iter().zip(&ws2) {
            assert_eq!(b.annotations.get("k"), Some(&a.label()));
            assert_eq!(b.spec.containers[0].image.as_deref(), Some("pinned"));
        }
        // Other objects and fields pass through.
        let y = again.to_yaml().unwrap();
        assert!(y.contains("kind: Service") && y.contains("schedule:"));
    }

    #[test]
    fn broken_templates_are_refused() {
        assert!(Manifest::parse("kind: Pod\nspec: [").is_err());
        let m = Manifest::parse("kind: Deployment\nmetadata:\n  name: d\nspec: {}\n").unwrap();
        assert!(m
            .workloads()
            .unwrap_err()
            .to_string()
            .contains("Deployment/d"));
        let m =
            Manifest::parse("kind: Pod\nmetadata:\n  name: p\nspec:\n  containers: 7\n").unwrap();
        assert!(m.workloads().is_err());
    }
}
