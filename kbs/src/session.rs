//! RCAR sessions: created by `/auth`, consumed by `/attest`, then carrying the
//! attestation token for resource requests.
//!
//! Bounded: at most `max_sessions` live at once, each expires after its TTL;
//! when the table is full the oldest attested session makes room, and if all
//! are pending `/auth` answers "try later" instead of growing (Trustee keeps
//! every session of every `/auth` call in memory until it expires).

use kbs_types::Tee;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum SessionState {
    /// Waiting for evidence bound to `nonce`.
    Pending { nonce: String },
    /// Evidence was appraised; the token carries the result.
    Attested { token: String },
}

#[derive(Debug, Clone)]
pub struct Session {
    pub tee: Tee,
    pub state: SessionState,
    pub expires: Instant,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("no such session (unknown, expired or already used)")]
    Unknown,
    #[error("too many sessions in progress; retry later")]
    Full,
    #[error("this session's nonce was already used for an attestation")]
    AlreadyAttested,
}

#[derive(Debug)]
pub struct SessionStore {
    ttl: Duration,
    max: usize,
    inner: Mutex<HashMap<String, Session>>,
}

impl SessionStore {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves a consistent map (every
        // mutation is a single insert/remove), so poisoning can be ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a session. Expired sessions are swept first when the table is full.
    pub fn create(&self, id: String, tee: Tee, nonce: String) -> Result<(), SessionError> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.max {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= self.max {
            // Attested sessions only serve cookie-based resource requests; a
            // client whose session is evicted gets 401 and attests again. Pending
            // sessions are never evicted, or a flood of /auth could starve
            // honest handshakes in flight.
            let oldest_attested = map
                .iter()
                .filter(|(_, s)| matches!(s.state, SessionState::Attested { .. }))
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            match oldest_attested {
                Some(k) => {
                    map.remove(&k);
                }
                None => return Err(SessionError::Full),
            }
        }
        map.insert(
            id,
            Session {
                tee,
                state: SessionState::Pending { nonce },
                expires: now + self.ttl,
            },
        );
        Ok(())
    }

    /// Take the pending nonce of a session for an attestation attempt. The
    /// nonce is single-use: a second attempt on the same session fails, so a
    /// captured challenge cannot be retried against the verifier.
    pub fn begin_attest(&self, id: &str) -> Result<(Tee, String), SessionError> {
        let now = Instant::now();
        let mut map = self.lock();
        let s = map.get_mut(id).ok_or(SessionError::Unknown)?;
        if s.expires <= now {
            map.remove(id);
            return Err(SessionError::Unknown);
        }
        match std::mem::replace(
            &mut s.state,
            SessionState::Pending {
                nonce: String::new(),
            },
        ) {
            SessionState::Pending { nonce } if !nonce.is_empty() => Ok((s.tee, nonce)),
            other => {
                s.state = other;
                Err(SessionError::AlreadyAttested)
            }
        }
    }

    /// Record the token of a successful attestation; the session lives on
    /// until `token_expires` (capped by the session limit of the table).
    pub fn finish_attest(&self, id: &str, token: String, token_ttl: Duration) {
        let mut map = self.lock();
        if let Some(s) = map.get_mut(id) {
            s.state = SessionState::Attested { token };
            s.expires = Instant::now() + token_ttl;
        }
    }

    /// Drop a session (failed attestation).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The token of an attested, unexpired session.
    pub fn token(&self, id: &str) -> Result<String, SessionError> {
        let now = Instant::now();
        let map = self.lock();
        match map.get(id) {
            Some(Session {
                state: SessionState::Attested { token },
                expires,
                ..
            }) if *expires > now => Ok(token.clone()),
            _ => Err(SessionError::Unknown),
        }
    }

    /// Remove expired sessions; returns how many are left.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        map.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_single_use() {
        let s = SessionStore::new(Duration::from_secs(60), 2);
        s.create("a".into(), Tee::Sample, "n1".into()).unwrap();
        s.create("b".into(), Tee::Sample, "n2".into()).unwrap();
        assert_eq!(
            s.create("c".into(), Tee::Sample, "n3".into()),
            Err(SessionError::Full)
        );
        assert_eq!(s.begin_attest("a").unwrap().1, "n1");
        assert_eq!(s.begin_attest("a"), Err(SessionError::AlreadyAttested));
        assert_eq!(s.begin_attest("zz"), Err(SessionError::Unknown));
        assert_eq!(s.token("a"), Err(SessionError::Unknown));
        s.finish_attest("a", "tok".into(), Duration::from_secs(60));
        assert_eq!(s.token("a").unwrap(), "tok");
        assert_eq!(s.begin_attest("a"), Err(SessionError::AlreadyAttested));
        // Full: the attested session "a" makes room, pending "b" stays.
        s.create("c".into(), Tee::Sample, "n3".into()).unwrap();
        assert_eq!(s.token("a"), Err(SessionError::Unknown));
        assert_eq!(s.begin_attest("b").unwrap().1, "n2");
        s.remove("b");
        s.create("d".into(), Tee::Sample, "n4".into()).unwrap();
        assert_eq!(
            s.create("e".into(), Tee::Sample, "n5".into()),
            Err(SessionError::Full)
        );
    }

    #[test]
    fn expiry_frees_room() {
        let s = SessionStore::new(Duration::from_millis(1), 1);
        s.create("a".into(), Tee::Sample, "n".into()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.begin_attest("a"), Err(SessionError::Unknown));
        s.create("b".into(), Tee::Sample, "n".into()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // Full, but the expired entry is swept to make room.
        s.create("c".into(), Tee::Sample, "n".into()).unwrap();
        assert_eq!(s.len(), 1);
    }
}
