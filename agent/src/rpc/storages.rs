//! Kata's guest-side storage drivers besides guest pull: `local` (emptyDir: a directory)
//! and `ephemeral` (tmpfs: /dev/shm, memory-backed emptyDir). Mount points must lie below
//! the agent's state or shared directory.

use std::path::{Component, Path, PathBuf};

use super::{Agent, AgentError, Result};
use crate::image::GUEST_PULL_DRIVER;
use crate::protocols::agent::Storage;

/// What a storage left behind, to undo on removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Dir(PathBuf),
    Tmpfs(PathBuf),
}

impl Agent {
    fn confined_mount_point(&self, mp: &str) -> Result<PathBuf> {
        let p = Path::new(mp);
        let ok = p.is_absolute()
            && !p
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            && (p.starts_with(&self.config.state_dir) || p.starts_with(&self.config.shared_dir));
        // Never an existing directory (the host would chmod it, and it is deleted with
        // the container) and never inside what the agent keeps for containers and images.
        let reserved = [
            self.config.state_dir.join("containers"),
            self.config.state_dir.join("image-store"),
        ];
        if ok && (p.exists() || reserved.iter().any(|r| p.starts_with(r))) {
            return Err(AgentError::InvalidArgument(format!(
                "storage mount point {mp:?} exists or belongs to a container or the image store"
            )));
        }
        if ok {
            Ok(p.to_path_buf())
        } else {
            Err(AgentError::InvalidArgument(format!(
                "storage mount point {mp:?} is outside the agent's directories"
            )))
        }
    }

    /// Sets up `local` and `ephemeral` storages; others (besides guest pull) are skipped.
    pub(super) fn prepare_storages(&self, storages: &[Storage]) -> Result<Vec<Prepared>> {
        let mut done = Vec::new();
        let r = self.prepare_all(storages, &mut done);
        if r.is_err() {
            self.release_storages(&done);
        }
        r.map(|()| done)
    }

    fn prepare_all(&self, storages: &[Storage], done: &mut Vec<Prepared>) -> Result<()> {
        for s in storages {
            match s.driver.as_str() {
                GUEST_PULL_DRIVER => {}
                "local" => {
                    let mp = self.confined_mount_point(&s.mount_point)?;
                    let mode = s
                        .options
                        .iter()
                        .find_map(|o| o.strip_prefix("mode="))
                        .and_then(|m| u32::from_str_radix(m, 8).ok())
                        .unwrap_or(0o777)
                        & 0o7777;
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::create_dir_all(&mp)?;
                    std::fs::set_permissions(&mp, std::fs::Permissions::from_mode(mode))?;
                    done.push(Prepared::Dir(mp));
                }
                "ephemeral" => {
                    let mp = self.confined_mount_point(&s.mount_point)?;
                    // Only size/mode-like options reach the kernel: no host-chosen flags.
                    let opts: Vec<&str> = s
                        .options
                        .iter()
                        .map(String::as_str)
                        .filter(|o| {
                            ["size=", "mode=", "nr_inodes="]
                                .iter()
                                .any(|k| o.starts_with(k))
                        })
                        .collect();
                    self.host.mount_tmpfs(&mp, &opts.join(","))?;
                    done.push(Prepared::Tmpfs(mp));
                }
                other => {
                    tracing::warn!(driver = other, mount_point = %s.mount_point, "storage driver not supported, ignored");
                }
            }
        }
        Ok(())
    }

    /// Undoes [`Agent::prepare_storages`].
    pub(super) fn release_storages(&self, prepared: &[Prepared]) {
        for p in prepared.iter().rev() {
            let r = match p {
                Prepared::Dir(d) => std::fs::remove_dir_all(d),
                Prepared::Tmpfs(d) => self.host.unmount(d).and_then(|()| std::fs::remove_dir(d)),
            };
            if let Err(e) = r {
                tracing::warn!("releasing storage {p:?}: {e}");
            }
        }
    }
}
