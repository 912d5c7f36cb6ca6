//! The OCI runtime behind the agent. The real implementation drives the `runc` binary
//! shipped in the guest image (runc is what Kata guests and our tests run; youki's
//! `libcontainer` would put a container runtime's fork/exec/namespace code inside the agent
//! process and needs `unsafe` there, which this workspace denies).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::process::{run_command, ChildIo};
use crate::reaper::Reaper;

/// Errors from the OCI runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime {op} of {id} failed (status {status}): {stderr}")]
    Failed {
        op: &'static str,
        id: String,
        status: i32,
        stderr: String,
    },
    #[error("runtime {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime {op}: bad pid file: {reason}")]
    PidFile { op: &'static str, reason: String },
}

/// A process the runtime started: its PID and its future exit status.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub exit: oneshot::Receiver<i32>,
}

/// What the agent needs from an OCI runtime.
#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// `create`: sets the container up from `bundle/config.json`; its init waits for start.
    async fn create(&self, id: &str, bundle: &Path, io: ChildIo) -> Result<Started, RuntimeError>;
    /// `start`: runs the user program of a created container.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// `exec`: runs `process` (OCI process JSON) in the running container.
    async fn exec(
        &self,
        id: &str,
        process: &serde_json::Value,
        io: ChildIo,
    ) -> Result<Started, RuntimeError>;
    /// `kill`: signals the init, or with `all` every process of the container.
    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError>;
    /// `delete --force`: removes the container, killing what is left.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError>;
    /// `update`: applies new cgroup resources (OCI `linux.resources` JSON).
    async fn update(&self, id: &str, resources: &serde_json::Value) -> Result<(), RuntimeError>;
    /// `pause` / `resume` (freezer).
    async fn pause(&self, id: &str, pause: bool) -> Result<(), RuntimeError>;
}

/// `runc` with its state in `root`.
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
    /// `runc create --no-pivot` (MS_MOVE + chroot instead of pivot_root): only when
    /// the guest's root is still the initramfs, where pivot_root(2) is refused.
    pub no_pivot: bool,
}

impl Runc {
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            root: root.into(),
            no_pivot: false,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    async fn simple(&self, op: &'static str, id: &str, args: &[&str]) -> Result<(), RuntimeError> {
        let mut cmd = self.command();
        cmd.args(args);
        let out = run_command(cmd, None)
            .await
            .map_err(|source| RuntimeError::Io { op, source })?;
        check(op, id, out.status, &out.stderr)
    }

    /// Spawns runc with the child's stdio, waits for runc itself, then returns the PID
    /// the container process wrote to `pid_file`.
    async fn spawn_detached(
        &self,
        op: &'static str,
        id: &str,
        mut cmd: Command,
        io: ChildIo,
        pid_file: &Path,
    ) -> Result<Started, RuntimeError> {
        let reaper = Reaper::global();
        if let Some(sock) = &io.console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg(id);
        cmd.stdin(match io.stdin {
            Some(fd) => Stdio::from(fd),
            None => Stdio::null(),
        })
        .stdout(Stdio::from(io.stdout))
        .stderr(Stdio::from(io.stderr));
        let epoch = reaper.epoch();
        let child = cmd
            .spawn()
            .map_err(|source| RuntimeError::Io { op, source })?;
        // Our copies of the child's pipe ends went into `cmd`: drop them now so the
        // container holds the only writers and readers see EOF when it exits.
        drop(cmd);
        let status = reaper.watch(child.id() as i32, epoch).await.unwrap_or(255);
        let log = std::fs::read_to_string(pid_file.with_extension("log")).unwrap_or_default();
        let pid_text = std::fs::read_to_string(pid_file).map_err(|e| RuntimeError::PidFile {
            op,
            reason: format!("{}: {e}", pid_file.display()),
        });
        if status != 0 {
            return Err(RuntimeError::Failed {
                op,
                id: id.to_string(),
                status,
                stderr: runc_log_errors(&log),
            });
        }
        let pid: i32 = pid_text?
            .trim()
            .parse()
            .map_err(|e| RuntimeError::PidFile {
                op,
                reason: format!("{e}"),
            })?;
        Ok(Started {
            pid,
            exit: reaper.watch(pid, epoch),
        })
    }
}

/// The `msg` of error-level lines of runc's JSON log.
fn runc_log_errors(log: &str) -> String {
    let msgs: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .collect();
    if msgs.is_empty() {
        "no error in runc's log".into()
    } else {
        msgs.join("; ")
    }
}

fn check(op: &'static str, id: &str, status: i32, stderr: &[u8]) -> Result<(), RuntimeError> {
    if status == 0 {
        Ok(())
    } else {
        Err(RuntimeError::Failed {
            op,
            id: id.to_string(),
            status,
            stderr: String::from_utf8_lossy(stderr).trim().to_string(),
        })
    }
}

#[async_trait]
impl Runtime for Runc {
    async fn create(&self, id: &str, bundle: &Path, io: ChildIo) -> Result<Started, RuntimeError> {
        let pid_file = bundle.join("init.pid");
        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(pid_file.with_extension("log"))
            .arg("--log-format")
            .arg("json")
            .arg("create")
            .args(self.no_pivot.then_some("--no-pivot"))
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        self.spawn_detached("create", id, cmd, io, &pid_file).await
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.simple("start", id, &["start", id]).await
    }

    async fn exec(
        &self,
        id: &str,
        process: &serde_json::Value,
        io: ChildIo,
    ) -> Result<Started, RuntimeError> {
        let dir = tempfile_dir(&self.root, "exec")
            .map_err(|source| RuntimeError::Io { op: "exec", source })?;
        let spec = dir.join("process.json");
        let pid_file = dir.join("pid");
        let write = serde_json::to_vec(process)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&spec, b));
        write.map_err(|source| RuntimeError::Io { op: "exec", source })?;
        let mut cmd = self.command();
        cmd.arg("--log")
            .arg(pid_file.with_extension("log"))
            .arg("--log-format")
            .arg("json")
            .arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(&spec)
            .arg("--pid-file")
            .arg(&pid_file);
        let r = self.spawn_detached("exec", id, cmd, io, &pid_file).await;
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let sig = signal.to_string();
        if all {
            self.simple("kill", id, &["kill", "--all", id, &sig]).await
        } else {
            self.simple("kill", id, &["kill", id, &sig]).await
        }
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.simple("delete", id, &["delete", "--force", id]).await
    }

    async fn update(&self, id: &str, resources: &serde_json::Value) -> Result<(), RuntimeError> {
        let mut cmd = self.command();
        cmd.args(["update", "--resources", "-", id]);
        let body = serde_json::to_vec(resources).map_err(|e| RuntimeError::Io {
            op: "update",
            source: std::io::Error::other(e),
        })?;
        let out = run_command(cmd, Some(body))
            .await
            .map_err(|source| RuntimeError::Io {
                op: "update",
                source,
            })?;
        check("update", id, out.status, &out.stderr)
    }

    async fn pause(&self, id: &str, pause: bool) -> Result<(), RuntimeError> {
        if pause {
            self.simple("pause", id, &["pause", id]).await
        } else {
            self.simple("resume", id, &["resume", id]).await
        }
    }
}

fn tempfile_dir(base: &Path, prefix: &str) -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = base.join(format!(
        ".{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
