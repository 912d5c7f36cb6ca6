//! Ephemeral storage for image layers and container rootfs.
//!
//! With a scratch block device, everything lands on dm-crypt over it, keyed with random
//! bytes generated in the guest that never leave it (the key goes to `dmsetup` /
//! `cryptsetup` on stdin, never in argv, and is wiped from our memory afterwards); the
//! host only ever sees ciphertext. Optional integrity uses LUKS2 with HMAC-SHA256 so
//! that host tampering reads back as I/O errors. Without a device, a size-limited tmpfs.

use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

/// dm device name of the ephemeral storage.
pub const DM_NAME: &str = "coco-ephemeral";

/// Where ephemeral storage comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageMode {
    /// tmpfs with a hard size limit (MiB).
    Tmpfs { size_mib: u64 },
    /// dm-crypt over a scratch block device; `integrity` adds authenticated sectors.
    DmCrypt { device: PathBuf, integrity: bool },
}

/// Errors setting up storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{program} failed: {reason}")]
    Command { program: String, reason: String },
    #[error("bad device size {0:?}")]
    Size(String),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The OS operations storage setup needs (a recording double in tests).
#[async_trait]
pub trait BlockOps: Send + Sync + std::fmt::Debug {
    /// Runs a helper, feeding `stdin`; returns its stdout.
    async fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, StorageError>;
    fn mount(&self, source: &Path, target: &Path, fstype: &str, data: &str) -> std::io::Result<()>;
    fn random(&self, buf: &mut [u8]) -> std::io::Result<()>;
}

/// The real OS.
#[derive(Debug, Default)]
pub struct SystemBlockOps;

#[async_trait]
impl BlockOps for SystemBlockOps {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, StorageError> {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        let out = crate::process::run_command(cmd, stdin.map(<[u8]>::to_vec)).await?;
        if out.status != 0 {
            return Err(StorageError::Command {
                program: program.into(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    fn mount(&self, source: &Path, target: &Path, fstype: &str, data: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(target)?;
        nix::mount::mount(
            Some(source),
            target,
            Some(fstype),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(data),
        )?;
        Ok(())
    }

    fn random(&self, buf: &mut [u8]) -> std::io::Result<()> {
        std::fs::File::open("/dev/urandom")?.read_exact(buf)
    }
}

/// Overwrites secret bytes when dropped.
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        // Volatile writes: the wipe cannot be optimised away before the free.
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Sets up ephemeral storage at `target` and returns the mounted block device (if any).
pub async fn setup(
    ops: &dyn BlockOps,
    mode: &StorageMode,
    target: &Path,
) -> Result<Option<PathBuf>, StorageError> {
    match mode {
        StorageMode::Tmpfs { size_mib } => {
            ops.mount(
                Path::new("tmpfs"),
                target,
                "tmpfs",
                &format!("size={size_mib}m,mode=0755"),
            )?;
            tracing::info!(target = %target.display(), size_mib, "ephemeral storage on tmpfs");
            Ok(None)
        }
        StorageMode::DmCrypt { device, integrity } => {
            let dev = device.display().to_string();
            let mapped = PathBuf::from(format!("/dev/mapper/{DM_NAME}"));
            if *integrity {
                let mut key = Secret(vec![0u8; 64]);
                ops.random(&mut key.0)?;
                let fmt: Vec<String> = [
                    "luksFormat",
                    "--batch-mode",
                    "--type",
                    "luks2",
                    "--cipher",
                    "aes-xts-plain64",
                    "--key-size",
                    "512",
                    "--integrity",
                    "hmac-sha256",
                    "--integrity-no-wipe",
                    "--pbkdf",
                    "pbkdf2",
                    "--pbkdf-force-iterations",
                    "1000",
                    "--key-file",
                    "-",
                    &dev,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                ops.run("cryptsetup", &fmt, Some(&key.0)).await?;
                let open: Vec<String> = ["open", "--key-file", "-", &dev, DM_NAME]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                ops.run("cryptsetup", &open, Some(&key.0)).await?;
            } else {
                let sectors = ops
                    .run("blockdev", &["--getsz".into(), dev.clone()], None)
                    .await?;
                let sectors = String::from_utf8_lossy(&sectors).trim().to_string();
                let n: u64 = sectors
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| StorageError::Size(sectors.clone()))?;
                let mut key = Secret(vec![0u8; 64]);
                ops.random(&mut key.0)?;
                let table = crypt_table(n, &key.0, &dev);
                // Without --table, dmsetup reads the table from stdin.
                ops.run(
                    "dmsetup",
                    &["create".into(), DM_NAME.into()],
                    Some(&table.0),
                )
                .await?;
            }
            // No udev in the guest: create /dev/mapper/<name> ourselves.
            ops.run("dmsetup", &["mknodes".into(), DM_NAME.into()], None)
                .await?;
            let m = mapped.display().to_string();
            ops.run(
                "mkfs.ext4",
                &["-q".into(), "-F".into(), "-E".into(), "nodiscard".into(), m],
                None,
            )
            .await?;
            ops.mount(&mapped, target, "ext4", "")?;
            tracing::info!(target = %target.display(), integrity, "ephemeral storage on dm-crypt");
            Ok(Some(mapped))
        }
    }
}

/// From kernel command line keys: `agent.scratch_device=`, `agent.scratch_integrity=1`,
/// `agent.tmpfs_size_mib=` (default 512).
pub fn mode_from_cmdline(cmdline: &str) -> StorageMode {
    let mut device = None;
    let mut integrity = false;
    let mut size_mib = 512;
    for w in cmdline.split_whitespace() {
        match w.split_once('=') {
            Some(("agent.scratch_device", v)) => device = Some(PathBuf::from(v)),
            Some(("agent.scratch_integrity", v)) => integrity = v == "1" || v == "true",
            Some(("agent.tmpfs_size_mib", v)) => size_mib = v.parse().unwrap_or(size_mib),
            _ => {}
        }
    }
    match device {
        Some(device) => StorageMode::DmCrypt { device, integrity },
        None => StorageMode::Tmpfs { size_mib },
    }
}

/// The dm-crypt table line for `dev`, written straight into a wiped buffer: the key's
/// hex form never exists in a `String` that would stay in memory after use.
fn crypt_table(sectors: u64, key: &[u8], dev: &str) -> Secret {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let head = format!("0 {sectors} crypt aes-xts-plain64 ");
    let tail = format!(" 0 {dev} 0 1 allow_discards\n");
    // Sized up front so the buffer never reallocates (which would leave a copy).
    let mut out = Vec::with_capacity(head.len() + 2 * key.len() + tail.len());
    out.extend_from_slice(head.as_bytes());
    for b in key {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out.extend_from_slice(tail.as_bytes());
    Secret(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn crypt_table_is_dmsetup_syntax_and_never_reallocates() {
        let key: Vec<u8> = (0u8..64).collect();
        let t = crypt_table(2048, &key, "/dev/vdc");
        let want = format!(
            "0 2048 crypt aes-xts-plain64 {} 0 /dev/vdc 0 1 allow_discards\n",
            hex::encode(&key)
        );
        assert_eq!(t.0, want.as_bytes());
        assert_eq!(
            t.0.capacity(),
            t.0.len(),
            "a reallocation would leave a key copy"
        );
    }

    /// program, argv, stdin
    type Call = (String, Vec<String>, Option<Vec<u8>>);

    #[derive(Debug, Default)]
    struct Recorder {
        calls: Mutex<Vec<Call>>,
        mounts: Mutex<Vec<(PathBuf, PathBuf, String, String)>>,
    }

    #[async_trait]
    impl BlockOps for Recorder {
        async fn run(
            &self,
            p: &str,
            a: &[String],
            i: Option<&[u8]>,
        ) -> Result<Vec<u8>, StorageError> {
            self.calls
                .lock()
                .unwrap()
                .push((p.into(), a.to_vec(), i.map(<[u8]>::to_vec)));
            Ok(if p == "blockdev" {
                b"2097152\n".to_vec()
            } else {
                vec![]
            })
        }
        fn mount(&self, s: &Path, t: &Path, f: &str, d: &str) -> std::io::Result<()> {
            self.mounts
                .lock()
                .unwrap()
                .push((s.into(), t.into(), f.into(), d.into()));
            Ok(())
        }
        fn random(&self, buf: &mut [u8]) -> std::io::Result<()> {
            SystemBlockOps.random(buf)
        }
    }

    #[tokio::test]
    async fn dm_crypt_key_only_on_stdin() {
        let r = Recorder::default();
        let mode = StorageMode::DmCrypt {
            device: "/dev/vdc".into(),
            integrity: false,
        };
        let dev = setup(&r, &mode, Path::new("/run/kata-containers"))
            .await
            .unwrap();
        assert_eq!(dev, Some(PathBuf::from("/dev/mapper/coco-ephemeral")));
        let calls = r.calls.lock().unwrap().clone();
        assert_eq!(calls[1].0, "dmsetup");
        let table = String::from_utf8(calls[1].2.clone().unwrap()).unwrap();
        let f: Vec<&str> = table.split_whitespace().collect();
        assert_eq!(&f[..4], &["0", "2097152", "crypt", "aes-xts-plain64"]);
        assert_eq!(f[4].len(), 128, "512-bit key in hex");
        assert_eq!(f[6], "/dev/vdc");
        for (_, args, _) in calls.iter() {
            assert!(
                args.iter().all(|a| !a.contains(f[4])),
                "key leaked into argv"
            );
        }
        // No udev in the guest: the node is made explicitly before mkfs.
        assert_eq!(calls[2].1, ["mknodes", "coco-ephemeral"]);
        assert_eq!(calls[3].0, "mkfs.ext4");
        assert_eq!(r.mounts.lock().unwrap()[0].2, "ext4");
        // A fresh key each time.
        let r2 = Recorder::default();
        setup(&r2, &mode, Path::new("/x")).await.unwrap();
        let t2 = String::from_utf8(r2.calls.lock().unwrap()[1].2.clone().unwrap()).unwrap();
        assert_ne!(t2.split_whitespace().nth(4), Some(f[4]));
    }

    #[tokio::test]
    async fn integrity_uses_luks2_hmac() {
        let r = Recorder::default();
        let mode = StorageMode::DmCrypt {
            device: "/dev/vdc".into(),
            integrity: true,
        };
        setup(&r, &mode, Path::new("/run/kata-containers"))
            .await
            .unwrap();
        let calls = r.calls.lock().unwrap();
        assert_eq!(calls[0].0, "cryptsetup");
        assert!(calls[0]
            .1
            .windows(2)
            .any(|w| w == ["--integrity", "hmac-sha256"]));
        let k0 = calls[0].2.clone().unwrap();
        assert_eq!(k0.len(), 64);
        assert_eq!(calls[1].2.clone().unwrap(), k0, "open uses the same key");
        assert_eq!(calls[1].1[0], "open");
    }

    #[tokio::test]
    async fn tmpfs_has_a_size_limit() {
        let r = Recorder::default();
        let mode = mode_from_cmdline("quiet agent.tmpfs_size_mib=256");
        assert_eq!(mode, StorageMode::Tmpfs { size_mib: 256 });
        setup(&r, &mode, Path::new("/run/kata-containers"))
            .await
            .unwrap();
        assert_eq!(r.mounts.lock().unwrap()[0].3, "size=256m,mode=0755");
        assert_eq!(
            mode_from_cmdline("agent.scratch_device=/dev/vdc agent.scratch_integrity=1"),
            StorageMode::DmCrypt {
                device: "/dev/vdc".into(),
                integrity: true
            }
        );
    }
}
