//! A running VM and the helper processes it needs (vhost-device-vsock, swtpm). Every
//! process is killed and reaped when the [`Vm`] is dropped, and a watchdog kills QEMU
//! at the hard deadline even if the test forgets to.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::qemu::{Hypervisor, Qemu, VmConfig, VmPaths};
use crate::{tools, VmError};

/// A child process that is killed and reaped on drop.
#[derive(Debug)]
pub struct Guard {
    name: String,
    child: Arc<Mutex<Child>>,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self, VmError> {
        let child = cmd.spawn().map_err(|e| VmError::Spawn {
            what: name.to_string(),
            source: e,
        })?;
        tracing::debug!(name, pid = child.id(), "started");
        Ok(Self {
            name: name.to_string(),
            child: Arc::new(Mutex::new(child)),
        })
    }

    /// Exit status if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child.lock().ok()?.try_wait().ok().flatten()
    }

    pub fn kill(&self) {
        if let Ok(mut c) = self.child.lock() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        tracing::debug!(name = %self.name, "stopping");
        self.kill();
    }
}

/// Polls until `ready` or the deadline; `alive` reports early death.
pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), VmError>,
    mut ready: impl FnMut() -> bool,
) -> Result<Duration, VmError> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(start.elapsed());
        }
        alive()?;
        if start.elapsed() > timeout {
            return Err(VmError::Timeout {
                what: what.to_string(),
                after: timeout,
                log: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A booted (or booting) VM.
#[derive(Debug)]
pub struct Vm {
    pub paths: VmPaths,
    /// Host side of hybrid vsock: connect here and send `CONNECT <port>`.
    pub vsock_uds: Option<PathBuf>,
    started: Instant,
    // Field order matters for drop: QEMU first, then its backends, then the directory.
    qemu: Guard,
    watchdog: Option<mpsc::Sender<()>>,
    _vhost: Option<Guard>,
    _swtpm: Option<Guard>,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Starts the VM. `hard_timeout` bounds its whole life.
    pub fn start(cfg: &VmConfig, hard_timeout: Duration) -> Result<Self, VmError> {
        let dir = tempfile::Builder::new()
            .prefix("coco-vm-")
            .tempdir()
            .map_err(|e| VmError::io("creating VM work dir", e))?;
        let paths = VmPaths::in_dir(dir.path());
        std::fs::write(&paths.serial_log, b"").map_err(|e| VmError::io("serial log", e))?;
        if let Some(data) = &cfg.initdata {
            std::fs::write(&paths.initdata_disk, data)
                .map_err(|e| VmError::io("writing initdata disk", e))?;
        }
        if let Some(mib) = cfg.scratch_mib {
            let f = std::fs::File::create(&paths.scratch_disk)
                .map_err(|e| VmError::io("creating scratch disk", e))?;
            f.set_len(mib * 1024 * 1024)
                .map_err(|e| VmError::io("sizing scratch disk", e))?;
        }

        let mut vsock_uds = None;
        let vhost = if cfg.vsock {
            let bin = tools::vhost_device_vsock()?;
            let uds = dir.path().join("vm.vsock");
            let log = std::fs::File::create(dir.path().join("vhost-device-vsock.log"))
                .map_err(|e| VmError::io("vhost log", e))?;
            let g = Guard::spawn(
                "vhost-device-vsock",
                Command::new(bin)
                    .arg("--guest-cid")
                    .arg("3")
                    .arg("--socket")
                    .arg(&paths.vhost_user_socket)
                    .arg("--uds-path")
                    .arg(&uds)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log),
            )?;
            let sock = paths.vhost_user_socket.clone();
            wait_until(
                "vhost-device-vsock socket",
                Duration::from_secs(10),
                || exited(&g, "vhost-device-vsock"),
                || sock.exists(),
            )?;
            vsock_uds = Some(uds);
            Some(g)
        } else {
            None
        };

        let swtpm = if cfg.tpm {
            let bin = tools::swtpm()?;
            let state = dir.path().join("tpm");
            std::fs::create_dir_all(&state).map_err(|e| VmError::io("tpm state dir", e))?;
            if let Some(from) = &cfg.tpm_state {
                for e in std::fs::read_dir(from).map_err(|e| VmError::io("tpm state", e))? {
                    let e = e.map_err(|e| VmError::io("tpm state", e))?;
                    if e.path().is_file() {
                        std::fs::copy(e.path(), state.join(e.file_name()))
                            .map_err(|e| VmError::io("copying tpm state", e))?;
                    }
                }
            }
            let g = Guard::spawn(
                "swtpm",
                Command::new(bin)
                    .args(["socket", "--tpm2", "--tpmstate"])
                    .arg(format!("dir={}", state.display()))
                    .arg("--ctrl")
                    .arg(format!("type=unixio,path={}", paths.swtpm_socket.display()))
                    .arg("--log")
                    .arg(format!("file={}", dir.path().join("swtpm.log").display()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            let sock = paths.swtpm_socket.clone();
            wait_until(
                "swtpm socket",
                Duration::from_secs(10),
                || exited(&g, "swtpm"),
                || sock.exists(),
            )?;
            Some(g)
        } else {
            None
        };

        let qemu_bin = tools::qemu()?;
        let mut cmd = Qemu { binary: qemu_bin }.command(cfg, &paths);
        let stderr = std::fs::File::create(dir.path().join("qemu.stderr"))
            .map_err(|e| VmError::io("qemu stderr", e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        tracing::info!(?cmd, "starting VM");
        let qemu = Guard::spawn("qemu", &mut cmd)?;

        // Watchdog: kill QEMU at the hard deadline unless the VM is dropped first.
        let (tx, rx) = mpsc::channel::<()>();
        let child = Arc::clone(&qemu.child);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(hard_timeout) {
                tracing::warn!(?hard_timeout, "VM hit its hard timeout, killing QEMU");
                if let Ok(mut c) = child.lock() {
                    let _ = c.kill();
                }
            }
        });

        Ok(Self {
            paths,
            vsock_uds,
            started: Instant::now(),
            qemu,
            watchdog: Some(tx),
            _vhost: vhost,
            _swtpm: swtpm,
            _dir: dir,
        })
    }

    /// Everything the guest wrote to its serial console so far.
    pub fn serial(&self) -> String {
        std::fs::read(&self.paths.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// QEMU's stderr so far (e.g. "Error starting vhost").
    pub fn qemu_stderr(&self) -> String {
        let p = self.paths.serial_log.with_file_name("qemu.stderr");
        std::fs::read_to_string(p).unwrap_or_default()
    }

    fn check_alive(&self) -> Result<(), VmError> {
        match self.qemu.try_wait() {
            None => Ok(()),
            Some(status) => Err(VmError::Exited {
                status: status.to_string(),
                log: self.diagnostics(),
            }),
        }
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial console's last lines and QEMU's stderr, for error reports.
    pub fn diagnostics(&self) -> String {
        let serial = self.serial();
        let tail: String = serial
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "--- serial (tail) ---\n{tail}\n--- qemu stderr ---\n{}",
            self.qemu_stderr()
        )
    }

    /// Waits until `marker` appears on the serial console; returns the time since start.
    pub fn wait_for_serial(&self, marker: &str, timeout: Duration) -> Result<Duration, VmError> {
        wait_until(
            &format!("serial marker {marker:?}"),
            timeout,
            || self.check_alive(),
            || self.serial().contains(marker),
        )
        .map(|_| self.started.elapsed())
        .map_err(|e| self.with_log(e))
    }

    fn with_log(&self, e: VmError) -> VmError {
        match e {
            VmError::Timeout { what, after, .. } => VmError::Timeout {
                what,
                after,
                log: self.diagnostics(),
            },
            other => other,
        }
    }

    /// Opens a hybrid-vsock connection to the guest's `port`: connect to the unix
    /// socket, send `CONNECT <port>\n`, expect `OK <host port>\n`. Retries until the
    /// guest listens or `timeout`. The stream is then a plain byte pipe to the guest
    /// (the agent's ttrpc client takes it from here).
    pub fn connect_vsock(&self, port: u32, timeout: Duration) -> Result<UnixStream, VmError> {
        let uds = self
            .vsock_uds
            .as_ref()
            .ok_or_else(|| VmError::Config("VM was started without vsock".into()))?;
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            self.check_alive()?;
            match hybrid_connect(uds, port) {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.with_log(VmError::Timeout {
            what: format!("vsock port {port} (last error: {last})"),
            after: timeout,
            log: String::new(),
        }))
    }

    /// Waits for QEMU to exit by itself (e.g. the guest powered off).
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, VmError> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.qemu.try_wait() {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                return Err(self.with_log(VmError::Timeout {
                    what: "VM exit".into(),
                    after: timeout,
                    log: String::new(),
                }));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(tx) = self.watchdog.take() {
            let _ = tx.send(());
        }
        self.qemu.kill();
    }
}

pub(crate) fn exited(g: &Guard, name: &str) -> Result<(), VmError> {
    match g.try_wait() {
        None => Ok(()),
        Some(s) => Err(VmError::Exited {
            status: format!("{name}: {s}"),
            log: String::new(),
        }),
    }
}

/// The Firecracker / Cloud Hypervisor hybrid-vsock handshake on an open unix socket.
pub fn hybrid_connect(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Read the reply byte by byte: anything after the newline belongs to the caller.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        let n = s.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection closed during CONNECT (guest not listening yet?)",
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let reply = String::from_utf8_lossy(&line);
    if !reply.starts_with("OK ") {
        return Err(std::io::Error::other(format!(
            "unexpected hybrid vsock reply {reply:?}"
        )));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// Reads lines from a stream until one contains `needle` (small helper for tests).
pub fn read_until(stream: &UnixStream, needle: &str, timeout: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    let mut r = BufReader::new(stream);
    let mut all = String::new();
    while !all.contains(needle) {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            break;
        }
        all.push_str(&l);
    }
    Ok(all)
}
