//! Reaps every child of the agent (as PID 1 or child subreaper, container processes are
//! re-parented to us) and hands exit statuses to whoever waits for that PID.
//!
//! There is one reaper per process because `waitpid(-1)` is process-wide. Nothing else in
//! the agent may wait for children (no `std::process::Child::wait`, no `tokio::process`):
//! commands are run with [`crate::process::run_command`], which goes through this reaper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Statuses of children nobody waits for (yet) are kept up to this many.
const MAX_UNCLAIMED: usize = 4096;

/// A point in the reaper's history, taken before spawning a child, so that a stale status
/// of an earlier process with the same PID is never mistaken for the new one's.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(u64);

#[derive(Debug, Default)]
struct State {
    seq: u64,
    waiters: HashMap<i32, Vec<oneshot::Sender<i32>>>,
    unclaimed: HashMap<i32, (u64, i32)>,
}

/// The process-wide child reaper.
#[derive(Debug, Default)]
pub struct Reaper {
    state: Mutex<State>,
}

static GLOBAL: OnceLock<Arc<Reaper>> = OnceLock::new();

/// Exit status as the shim expects it: the exit code, or 128 + signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

impl Reaper {
    /// The process-wide reaper; the first call starts the SIGCHLD loop on the current
    /// tokio runtime and makes this process a child subreaper.
    pub fn global() -> Arc<Reaper> {
        GLOBAL
            .get_or_init(|| {
                let reaper = Arc::new(Reaper::default());
                if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                    tracing::warn!("cannot become child subreaper: {e}");
                }
                let r = reaper.clone();
                // A dedicated thread so that reaping goes on even while the runtime that
                // first asked for the reaper (e.g. one test's) is gone.
                std::thread::Builder::new()
                    .name("reaper".into())
                    .spawn(move || r.run_blocking())
                    .map_err(|e| tracing::error!("cannot start reaper thread: {e}"))
                    .ok();
                reaper
            })
            .clone()
    }

    fn run_blocking(&self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("reaper runtime: {e}");
                return;
            }
        };
        rt.block_on(async {
            let mut sig =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot watch SIGCHLD: {e}");
                        return;
                    }
                };
            loop {
                self.reap();
                // Also poll now and then: a SIGCHLD that arrived before the handler was
                // installed is not delivered again.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sig.recv()).await;
            }
        });
    }

    /// Marks the present; pass it to [`Reaper::watch`] for a child spawned after it.
    pub fn epoch(&self) -> Epoch {
        let st = self.lock();
        Epoch(st.seq)
    }

    /// Reaps every exited child now.
    pub fn reap(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) {
                        self.deliver(pid.as_raw(), code);
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, pid: i32, code: i32) {
        let mut st = self.lock();
        st.seq += 1;
        let seq = st.seq;
        match st.waiters.remove(&pid) {
            Some(ws) => {
                for w in ws {
                    let _ = w.send(code);
                }
            }
            None => {
                if st.unclaimed.len() >= MAX_UNCLAIMED {
                    // Forget the oldest: those are orphans nobody asked about.
                    if let Some(oldest) = st
                        .unclaimed
                        .iter()
                        .min_by_key(|(_, (s, _))| *s)
                        .map(|(p, _)| *p)
                    {
                        st.unclaimed.remove(&oldest);
                    }
                }
                st.unclaimed.insert(pid, (seq, code));
            }
        }
    }

    /// Resolves with the exit status of `pid`, a process started after `since`.
    pub fn watch(&self, pid: i32, since: Epoch) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if let Some((seq, code)) = st.unclaimed.get(&pid).copied() {
            st.unclaimed.remove(&pid);
            if seq > since.0 {
                let _ = tx.send(code);
                return rx;
            }
        }
        st.waiters.entry(pid).or_default().push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_status_of_reused_pid_is_ignored() {
        let r = Reaper::default();
        r.deliver(42, 1);
        let epoch = r.epoch();
        let mut rx = r.watch(42, epoch);
        assert!(rx.try_recv().is_err(), "stale status must not be delivered");
        r.deliver(42, 7);
        assert_eq!(rx.try_recv().unwrap(), 7);
    }

    #[test]
    fn early_exit_before_watch_is_delivered() {
        let r = Reaper::default();
        let epoch = r.epoch();
        r.deliver(43, 137);
        let mut rx = r.watch(43, epoch);
        assert_eq!(rx.try_recv().unwrap(), 137);
    }
}
