//! The files of a generation: the pinned manifest, per pod template its
//! `initdata.toml` and `policy.rego`, and `reference-values.json` for the KBS.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{io, Error, Result};
use crate::generate::Generated;

/// Where one pod template's files went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    pub workload: String,
    pub initdata: PathBuf,
    pub policy: PathBuf,
    /// Hex SHA-256 of the policy text.
    pub policy_sha256: String,
    /// Hex initdata digest (the document's algorithm): what the TEE measures.
    pub initdata_digest: String,
}

/// Everything written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub manifest: PathBuf,
    pub reference_values: PathBuf,
    pub pods: Vec<PodFiles>,
}

/// A file-name-safe form of a Kubernetes name.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

fn write(path: &Path, data: &str) -> Result<()> {
    std::fs::write(path, data).map_err(io(format!("writing {}", path.display())))
}

/// Writes `g` below `out_dir`; the manifest keeps `input`'s file name. One pod
/// template: `initdata.toml` and `policy.rego` in `out_dir`; several: one
/// `<kind>-<name>/` directory each.
pub fn write_all(out_dir: &Path, input: &Path, g: &Generated) -> Result<Written> {
    std::fs::create_dir_all(out_dir).map_err(io(format!("creating {}", out_dir.display())))?;
    let name = input
        .file_name()
        .ok_or_else(|| Error::Settings(format!("{} has no file name", input.display())))?;
    let manifest = out_dir.join(name);
    if let (Ok(a), Ok(b)) = (manifest.canonicalize(), input.canonicalize()) {
        if a == b {
            return Err(Error::Settings(format!(
                "the output directory holds the input {}; choose another",
                input.display()
            )));
        }
    }
    write(&manifest, &g.manifest)?;
    let mut pods = Vec::new();
    let mut digests: Vec<String> = Vec::new();
    for p in &g.pods {
        let dir = if g.pods.len() == 1 {
            out_dir.to_owned()
        } else {
            let w = &p.workload;
            out_dir.join(format!("{}-{}", safe(&w.kind), safe(&w.name)))
        };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let initdata = dir.join("initdata.toml");
        let policy = dir.join("policy.rego");
        write(&initdata, &p.initdata.toml)?;
        write(&policy, &p.policy)?;
        let digest = p.initdata.digest_hex();
        if !digests.contains(&digest) {
            digests.push(digest.clone());
        }
        pods.push(PodFiles {
            workload: p.workload.label(),
            initdata,
            policy,
            policy_sha256: hex::encode(Sha256::digest(p.policy.as_bytes())),
            initdata_digest: digest,
        });
    }
    let reference_values = out_dir.join("reference-values.json");
    let rv = serde_json::json!({ "init_data_digest": digests });
    write(&reference_values, &format!("{rv:#}\n"))?;
    Ok(Written {
        manifest,
        reference_values,
        pods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe("Deployment"), "deployment");
        assert_eq!(safe("../etc/x"), "_etc_x");
        assert_eq!(safe("web-1.a"), "web-1.a");
    }
}
