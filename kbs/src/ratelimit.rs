//! Per-client token bucket for `/auth`, so one client cannot mint sessions
//! as fast as it can send requests. The table of clients is itself bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_clients: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64, max_clients: usize) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `client`; false means "slow down".
    pub fn allow(&self, client: IpAddr) -> bool {
        self.allow_at(client, Instant::now())
    }

    fn allow_at(&self, client: IpAddr, now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max_clients && !map.contains_key(&client) {
            // Forget clients whose buckets are full again: they lose nothing.
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if map.len() >= self.max_clients {
                return false;
            }
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(10.0, 3.0, 10);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(rl.allow_at(ip, t0));
        assert!(rl.allow_at(ip, t0));
        assert!(rl.allow_at(ip, t0));
        assert!(!rl.allow_at(ip, t0));
        // Another client is unaffected.
        assert!(rl.allow_at("10.0.0.2".parse().unwrap(), t0));
        // 100 ms at 10/s refills one token.
        assert!(rl.allow_at(ip, t0 + Duration::from_millis(100)));
        assert!(!rl.allow_at(ip, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn client_table_is_bounded() {
        let rl = RateLimiter::new(0.0, 1.0, 2);
        let t0 = Instant::now();
        assert!(rl.allow_at("10.0.0.1".parse().unwrap(), t0));
        assert!(rl.allow_at("10.0.0.2".parse().unwrap(), t0));
        // Both tracked clients are still throttled, so a third is refused.
        assert!(!rl.allow_at("10.0.0.3".parse().unwrap(), t0));
    }
}
