//! A real software TPM (`swtpm`) for tests, here and in other crates (feature
//! `swtpm`). Not compiled into release builds.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use attester::{tpm::{swtpm::Swtpm, AkConfig, TpmAttester, TpmAttesterConfig}, Attester};
//! let tpm = Swtpm::start()?; // killed and its state removed on drop
//! let attester = TpmAttester::with_tcti(&tpm.tcti(), AkConfig::default(), TpmAttesterConfig::default())?;
//! let evidence = attester.evidence(&[0u8; 48])?;
//! # Ok(()) }
//! ```
//!
//! No `swtpm_setup` is needed: the AK is a primary key of the endorsement
//! hierarchy, derived from the seed swtpm creates on first start; no EK
//! certificate is involved.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running `swtpm` on 127.0.0.1 (server port `port`, control port `port + 1`).
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    state_dir: PathBuf,
    port: u16,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two consecutive free loopback ports. Another process may take them before
/// swtpm binds; [`Swtpm::start`] retries then.
fn free_port_pair() -> io::Result<u16> {
    for _ in 0..50 {
        let l = TcpListener::bind(("127.0.0.1", 0))?;
        let p = l.local_addr()?.port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(io::Error::other(
        "no two consecutive free ports on 127.0.0.1",
    ))
}

impl Swtpm {
    /// Start a fresh TPM 2.0 (new state, `TPM2_Startup(CLEAR)` done by swtpm).
    pub fn start() -> io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let state_dir = std::env::temp_dir().join(format!("swtpm-test-{}-{n}", std::process::id()));
        let mut last = None;
        for _ in 0..5 {
            match Self::spawn(&state_dir) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&state_dir);
        Err(last.unwrap_or_else(|| io::Error::other("swtpm did not start")))
    }

    fn spawn(state_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let port = free_port_pair()?;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .args([
                "--server",
                &format!("type=tcp,bindaddr=127.0.0.1,port={port}"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,bindaddr=127.0.0.1,port={}", port + 1),
            ])
            .args(["--tpmstate", &format!("dir={}", state_dir.display())])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run swtpm (install the `swtpm` package): {e}"),
                )
            })?;
        let mut me = Self {
            child,
            state_dir: state_dir.to_path_buf(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = me.child.try_wait()? {
                return Err(io::Error::other(format!("swtpm exited at start: {status}")));
            }
            let up = |p| TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(port) && up(port + 1) {
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("swtpm did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCTI string for tss-esapi / tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the TPM and copies its state (seeds, persistent objects) into `to`,
    /// e.g. to boot a VM with a TPM whose keys were enrolled beforehand.
    pub fn save_state(mut self, to: &Path) -> io::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(&self.state_dir)? {
            let e = e?;
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name()))?;
            }
        }
        Ok(())
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
