//! The mounts a pod's declared volumes become in the guest, as regexes over the
//! source the Kata runtime will send. The standard mounts (/etc/hosts, resolv.conf,
//! the service account token, /dev/shm, kernel file systems) are the generic
//! rules' business and are not listed.
//!
//! Facts (kata-containers @7c6ba40c, src/runtime/virtcontainers):
//! - a shared or copied volume lands at `/run/kata-containers/shared/containers/`
//!   `<container id>-<16 hex>-<basename of the mount destination>`
//!   (fs_share_linux.go shareFileName);
//! - a disk-backed emptyDir is a `local` storage at
//!   `/run/kata-containers/shared/containers/<sandbox id>/rootfs/local/<volume>`
//!   (kata_agent.go handleLocalStorage); a memory-backed one an `ephemeral` tmpfs at
//!   `/run/kata-containers/sandbox/ephemeral/<volume>` (handleEphemeralStorage);
//!   both become bind mounts;
//! - with a subPath, kubelet's source is no longer the emptyDir directory, so the
//!   runtime shares it like any other file.

use k8s_openapi::api::core::v1::{Container, Volume};
use serde::Serialize;

/// `policy_data.containers[].mounts[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountRule {
    pub destination: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// A regex over the guest path the runtime binds.
    pub source: String,
}

/// Used in regexes as is: outside a class, its `-` is literal.
const SHARED: &str = "/run/kata-containers/shared/containers";

/// The shared-file form of a mount at `destination`.
fn shared(destination: &str) -> Result<String, String> {
    let base = std::path::Path::new(destination)
        .file_name()
        .and_then(|b| b.to_str())
        .ok_or_else(|| format!("mount path {destination:?} has no last component"))?;
    Ok(format!(
        "^{SHARED}/[A-Za-z0-9]+-[A-Za-z0-9]+-{}$",
        regex::escape(base)
    ))
}

fn bind(destination: &str, source: String) -> MountRule {
    MountRule {
        destination: destination.to_owned(),
        type_: "bind".into(),
        source,
    }
}

/// The mount rules of `c`'s volumeMounts over `volumes`, and of its image's
/// `Volumes` (containerd gives each a directory, shared like a file).
pub fn container_mounts(
    c: &Container,
    volumes: &[Volume],
    image_volumes: &[String],
) -> Result<Vec<MountRule>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let dest = m.mount_path.as_str();
        if !dest.starts_with('/') {
            return Err(format!("mount path {dest:?} is not absolute"));
        }
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(format!(
                "volumeMount {:?}: subPathExpr depends on values the cluster sets at run time",
                m.name
            ));
        }
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volumeMount {:?} names no volume of the pod", m.name))?;
        let sub_path = m.sub_path.as_deref().is_some_and(|s| !s.is_empty());
        let name = regex::escape(&v.name);
        let source = if let Some(e) = &v.empty_dir {
            match (sub_path, e.medium.as_deref()) {
                (true, _) => shared(dest)?,
                (false, Some("Memory")) => {
                    format!("^/run/kata-containers/sandbox/ephemeral/{name}$")
                }
                (false, None | Some("")) => {
                    format!("^{SHARED}/[A-Za-z0-9]+/rootfs/local/{name}$")
                }
                (false, Some(m)) => {
                    return Err(format!(
                        "emptyDir {:?}: medium {m:?} is not supported",
                        v.name
                    ))
                }
            }
        } else if v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
        {
            shared(dest)?
        } else {
            // hostPath, persistent volumes, CSI...: host storage a confidential pod
            // cannot trust, and sources this tool cannot predict.
            return Err(format!(
                "volume {:?}: only emptyDir, configMap, secret, downwardAPI and projected \
                 volumes can be pinned",
                v.name
            ));
        };
        out.push(bind(dest, source));
    }
    for dest in image_volumes {
        if !out.iter().any(|m| m.destination == *dest) {
            out.push(bind(dest, shared(dest)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes() -> Vec<Volume> {
        serde_yaml::from_str(
            "- {name: data, emptyDir: {}}\n- {name: mem, emptyDir: {medium: Memory}}\n\
             - {name: cfg, configMap: {name: c}}\n- {name: sec, secret: {secretName: s}}\n\
             - {name: dapi, downwardAPI: {items: []}}\n- {name: proj, projected: {sources: []}}\n\
             - {name: host, hostPath: {path: /etc}}\n- {name: huge, emptyDir: {medium: HugePages}}",
        )
        .unwrap()
    }

    fn mounts(yaml: &str, image_volumes: &[String]) -> Result<Vec<MountRule>, String> {
        let c: Container =
            serde_yaml::from_str(&format!("name: app\nvolumeMounts:\n{yaml}")).unwrap();
        container_mounts(&c, &volumes(), image_volumes)
    }

    #[test]
    fn each_volume_kind_has_its_source_form() {
        let m = mounts(
            "- {name: data, mountPath: /data}\n- {name: mem, mountPath: /scratch}\n\
             - {name: cfg, mountPath: /etc/app.d}\n- {name: sec, mountPath: /run/secret}\n\
             - {name: dapi, mountPath: /info}\n- {name: proj, mountPath: /p}\n\
             - {name: data, mountPath: /x/one, subPath: sub}",
            &["/var/lib/img".into(), "/data".into()],
        )
        .unwrap();
        let src: Vec<(&str, &str)> = m
            .iter()
            .map(|m| (m.destination.as_str(), m.source.as_str()))
            .collect();
        let sf = |b: &str| {
            format!(r"^/run/kata-containers/shared/containers/[A-Za-z0-9]+-[A-Za-z0-9]+-{b}$")
        };
        let want = [
            (
                "/data",
                r"^/run/kata-containers/shared/containers/[A-Za-z0-9]+/rootfs/local/data$"
                    .to_string(),
            ),
            (
                "/scratch",
                "^/run/kata-containers/sandbox/ephemeral/mem$".to_string(),
            ),
            ("/etc/app.d", sf(r"app\.d")),
            ("/run/secret", sf("secret")),
            ("/info", sf("info")),
            ("/p", sf("p")),
            ("/x/one", sf("one")),
            // Image volumes not already covered by a volumeMount.
            ("/var/lib/img", sf("img")),
        ];
        assert_eq!(
            src,
            want.iter()
                .map(|(a, b)| (*a, b.as_str()))
                .collect::<Vec<_>>()
        );
        assert!(m.iter().all(|m| m.type_ == "bind"));
        // The regexes match the paths the runtime makes, and not their neighbours.
        let cid = "a".repeat(64);
        let re = |i: usize| regex::Regex::new(&m[i].source).unwrap();
        assert!(re(2).is_match(&format!("{SHARED}/{cid}-0123456789abcdef-app.d")));
        assert!(!re(2).is_match(&format!("{SHARED}/{cid}-0123456789abcdef-appxd")));
        assert!(!re(2).is_match(&format!("{SHARED}/{cid}/x-0123456789abcdef-app.d")));
        assert!(re(0).is_match(&format!("{SHARED}/{cid}/rootfs/local/data")));
        assert!(!re(0).is_match(&format!("{SHARED}/{cid}/rootfs/local/data/../../x")));
    }

    #[test]
    fn unpinnable_volumes_are_refused() {
        for (yaml, why) in [
            ("- {name: host, mountPath: /h}", "only emptyDir"),
            ("- {name: huge, mountPath: /h}", "HugePages"),
            ("- {name: missing, mountPath: /m}", "names no volume"),
            ("- {name: data, mountPath: rel}", "not absolute"),
            ("- {name: cfg, mountPath: /}", "has no last component"),
            (
                "- {name: data, mountPath: /d, subPathExpr: $(POD)}",
                "subPathExpr",
            ),
        ] {
            let e = mounts(yaml, &[]).unwrap_err();
            assert!(e.contains(why), "{yaml}: {e}");
        }
    }
}
