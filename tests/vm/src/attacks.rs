//! What a hostile host or registry does to a pod's images, with real tools: moves a tag,
//! appends its own plaintext layer to an encrypted image, pushes an unsigned image.

use std::path::Path;
use std::process::Command;

use crate::services::{AppImage, Registry};
use crate::VmError;

fn output(cmd: &mut Command) -> Result<String, VmError> {
    let out = cmd
        .output()
        .map_err(|e| VmError::io(&format!("running {cmd:?}"), e))?;
    if !out.status.success() {
        return Err(VmError::Config(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The manifest digest `repo:tag` has in `registry` now (`sha256:…`).
pub fn digest_of(registry: &Registry, repo_tag: &str) -> Result<String, VmError> {
    output(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{}/{repo_tag}", registry.host_addr()),
    ]))
}

/// `guest_ref` (`host:port/repo:tag`) pinned to `digest`: `host:port/repo@digest`.
pub fn pinned(guest_ref: &str, digest: &str) -> String {
    let repo = match guest_ref.rfind(':') {
        Some(i) if !guest_ref[i..].contains('/') => &guest_ref[..i],
        _ => guest_ref,
    };
    format!("{repo}@{digest}")
}

/// Appends a plaintext layer (an `/etc/ld.so.preload` naming the attacker's library and
/// a replaced `/app.sh`) to the layout's `src_tag`, as `dst_tag`, and pushes it as
/// `repo:dst_tag`. The encrypted layers stay as they were.
pub fn push_with_plain_layer(
    app: &AppImage,
    registry: &Registry,
    work: &Path,
    src_tag: &str,
    repo: &str,
    dst_tag: &str,
) -> Result<String, VmError> {
    let dir = work.join(format!("evil-layer-{dst_tag}"));
    let io = |e| VmError::io("writing the attacker's layer", e);
    std::fs::create_dir_all(dir.join("etc")).map_err(io)?;
    std::fs::write(dir.join("etc/ld.so.preload"), "/evil.so\n").map_err(io)?;
    std::fs::write(dir.join("app.sh"), "#!/bin/sh\necho pwned by the host\n").map_err(io)?;
    let tar = work.join(format!("evil-layer-{dst_tag}.tar"));
    output(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tar)
            .args(["etc", "app.sh"]),
    )?;
    output(
        Command::new("umoci")
            .args(["raw", "add-layer", "--no-history", "--image"])
            .arg(format!("{}:{src_tag}", app.layout.display()))
            .args(["--tag", dst_tag])
            .arg(&tar),
    )?;
    app.push(registry, dst_tag, repo)
}
