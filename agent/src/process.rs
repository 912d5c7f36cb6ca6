//! Container processes as the agent sees them: a PID, pipes for stdio and an exit status
//! that any number of `WaitProcess` callers can await. Also [`run_command`], the only way
//! the agent runs helper programs (so that the reaper, not `std`, collects them).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{watch, Mutex};

use crate::reaper::Reaper;

/// Most bytes one `ReadStdout`/`ReadStderr` returns.
pub const MAX_READ: usize = 1 << 20;

/// The child's ends of its stdio pipes, handed to the runtime; with a terminal, the
/// console socket on which the runtime sends the pty master instead.
#[derive(Debug)]
pub struct ChildIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub console_socket: Option<PathBuf>,
}

/// The agent's ends of a process's stdio.
#[derive(Debug)]
pub struct ParentIo {
    stdin: Mutex<Option<pipe::Sender>>,
    stdout: Mutex<Option<pipe::Receiver>>,
    stderr: Mutex<Option<pipe::Receiver>>,
    /// The pty master, for window size changes.
    tty: Option<OwnedFd>,
}

/// A listening console socket (`runc --console-socket`).
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: std::os::unix::net::UnixListener,
    pub path: PathBuf,
}

impl ConsoleSocket {
    /// Binds `dir/console.sock`.
    pub fn bind(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        Ok(Self { listener, path })
    }

    /// The child's side: stdio on /dev/null, the pty comes through the socket.
    pub fn child_io(&self) -> std::io::Result<ChildIo> {
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
        };
        Ok(ChildIo {
            stdin: None,
            stdout: null()?.into(),
            stderr: null()?.into(),
            console_socket: Some(self.path.clone()),
        })
    }

    /// Accepts the runtime's connection and receives the pty master (SCM_RIGHTS).
    pub async fn receive(self, timeout: std::time::Duration) -> std::io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(self.listener)?;
        let (stream, _) = tokio::time::timeout(timeout, listener.accept())
            .await
            .map_err(|_| std::io::Error::other("no console from the runtime"))??;
        let _ = std::fs::remove_file(&self.path);
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        tokio::task::spawn_blocking(move || {
            use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut buf = [0u8; 4096];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            rustix::net::recvmsg(&stream, &mut iov, &mut control, RecvFlags::empty())?;
            for msg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                    if let Some(fd) = fds.next() {
                        return Ok(fd);
                    }
                }
            }
            Err(std::io::Error::other(
                "console socket message carried no fd",
            ))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// The agent's side of a terminal process: stdout and stdin on the pty master.
pub fn tty_io(master: OwnedFd) -> std::io::Result<ParentIo> {
    let flags = rustix::fs::fcntl_getfl(&master)?;
    rustix::fs::fcntl_setfl(&master, flags | rustix::fs::OFlags::NONBLOCK)?;
    let out = pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
    let inp = pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
    Ok(ParentIo {
        stdin: Mutex::new(Some(inp)),
        stdout: Mutex::new(Some(out)),
        stderr: Mutex::new(None),
        tty: Some(master),
    })
}

/// Creates the pipes of a new process; `with_stdin` decides whether it gets a stdin pipe
/// (otherwise the runtime gives it /dev/null).
pub fn pipes(with_stdin: bool) -> std::io::Result<(ParentIo, ChildIo)> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (out_r, out_w) = nix::unistd::pipe2(cloexec)?;
    let (err_r, err_w) = nix::unistd::pipe2(cloexec)?;
    let (stdin_parent, stdin_child) = if with_stdin {
        let (in_r, in_w) = nix::unistd::pipe2(cloexec)?;
        (Some(pipe::Sender::from_owned_fd(in_w)?), Some(in_r))
    } else {
        (None, None)
    };
    Ok((
        ParentIo {
            stdin: Mutex::new(stdin_parent),
            stdout: Mutex::new(Some(pipe::Receiver::from_owned_fd(out_r)?)),
            stderr: Mutex::new(Some(pipe::Receiver::from_owned_fd(err_r)?)),
            tty: None,
        },
        ChildIo {
            stdin: stdin_child,
            stdout: out_w,
            stderr: err_w,
            console_socket: None,
        },
    ))
}

/// Errors of process I/O.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("stream is closed")]
    Closed,
    #[error("process has no terminal")]
    NoTerminal,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which output stream.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl ParentIo {
    /// Reads up to `len` bytes (at least 1, at most [`MAX_READ`]); waits for data.
    /// At end of stream, and on every read after it, the answer is empty, as Kata's agent
    /// gives it (src/agent/src/rpc.rs `read_stream` @7c6ba40c): both Kata shims take empty
    /// data as EOF and an error as an I/O failure.
    pub async fn read(&self, which: Stream, len: usize) -> Result<Vec<u8>, IoError> {
        let lock = match which {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        let mut guard = lock.lock().await;
        let Some(rx) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; len.clamp(1, MAX_READ)];
        let n = match rx.read(&mut buf).await {
            Ok(n) => n,
            // A pty master reads EIO once the terminal's last user is gone.
            Err(e) if self.tty.is_some() && e.raw_os_error() == Some(libc::EIO) => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            // Drop our end: the next read answers at once, and `drained` sees it.
            *guard = None;
            return Ok(Vec::new());
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes all of `data` to stdin.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<usize, IoError> {
        let mut guard = self.stdin.lock().await;
        let tx = guard.as_mut().ok_or(IoError::Closed)?;
        tx.write_all(data).await?;
        Ok(data.len())
    }

    /// Whether both output streams reached EOF (nothing left for the shim to read).
    pub fn drained(&self) -> bool {
        let gone = |m: &Mutex<Option<pipe::Receiver>>| m.try_lock().is_ok_and(|g| g.is_none());
        gone(&self.stdout) && gone(&self.stderr)
    }

    /// Sets the terminal's window size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), IoError> {
        let tty = self.tty.as_ref().ok_or(IoError::NoTerminal)?;
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(tty, ws).map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Closes stdin so the process sees end of file.
    pub async fn close_stdin(&self) {
        // On a terminal, stdin is the pty itself: send EOF (^D) instead of closing it.
        if self.tty.is_some() {
            if let Some(tx) = self.stdin.lock().await.as_mut() {
                let _ = tx.write_all(&[4]).await;
            }
            return;
        }
        self.stdin.lock().await.take();
    }
}

/// A process in a container (its init or an exec).
#[derive(Debug)]
pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    pub io: ParentIo,
    exit: watch::Receiver<Option<i32>>,
}

impl Process {
    /// Tracks `pid`; `exit` resolves with its status.
    pub fn new(
        exec_id: String,
        pid: i32,
        io: ParentIo,
        exit: tokio::sync::oneshot::Receiver<i32>,
    ) -> Arc<Self> {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            // A dropped sender means the process was never started: report 255.
            let code = exit.await.unwrap_or(255);
            let _ = tx.send(Some(code));
        });
        Arc::new(Self {
            exec_id,
            pid,
            io,
            exit: rx,
        })
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Waits for the process to exit.
    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.clone();
        let r = match rx.wait_for(|s| s.is_some()).await {
            Ok(v) => v.unwrap_or(255),
            Err(_) => 255,
        };
        r
    }
}

/// Output of a helper command.
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs a helper program to completion through the reaper, feeding `stdin` to it.
pub async fn run_command(mut cmd: Command, stdin: Option<Vec<u8>>) -> std::io::Result<Output> {
    let reaper = Reaper::global();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let epoch = reaper.epoch();
    let mut child = cmd.spawn()?;
    let exit = reaper.watch(child.id() as i32, epoch);
    let child_in = child.stdin.take();
    let child_out = child.stdout.take();
    let child_err = child.stderr.take();
    let feed = async move {
        if let (Some(data), Some(si)) = (stdin, child_in) {
            let mut tx = pipe::Sender::from_owned_fd(OwnedFd::from(si))?;
            tx.write_all(&data).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let read = |fd: Option<OwnedFd>| async move {
        let mut buf = Vec::new();
        if let Some(fd) = fd {
            let mut rx = pipe::Receiver::from_owned_fd(fd)?;
            rx.read_to_end(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let (fed, stdout, stderr) = tokio::join!(
        feed,
        read(child_out.map(OwnedFd::from)),
        read(child_err.map(OwnedFd::from))
    );
    let status = exit.await.unwrap_or(255);
    fed?;
    Ok(Output {
        status,
        stdout: stdout?,
        stderr: stderr?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_command_collects_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo err >&2; exit 3"]);
        let out = run_command(cmd, Some(b"hello".to_vec())).await.unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");
    }

    #[tokio::test]
    async fn pipes_read_until_eof() {
        let (parent, child) = pipes(true).unwrap();
        nix::unistd::write(&child.stdout, b"abc").unwrap();
        drop(child);
        assert_eq!(parent.read(Stream::Stdout, 10).await.unwrap(), b"abc");
        assert!(parent.read(Stream::Stdout, 10).await.unwrap().is_empty());
        assert!(parent.drained() || parent.read(Stream::Stderr, 1).await.is_ok());
        assert!(parent.read(Stream::Stdout, 10).await.unwrap().is_empty());
    }
}
