//! Prometheus counters, rendered by hand in the text exposition format (the
//! handful of series here does not justify a metrics framework).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, name: &str, out: &mut String) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            let le = *b as f64 / 1000.0;
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters of the KBS.
#[derive(Debug, Default)]
pub struct Metrics {
    pub auth_ok: AtomicU64,
    pub auth_rejected: AtomicU64,
    pub auth_throttled: AtomicU64,
    pub attest_ok: AtomicU64,
    pub attest_failed: AtomicU64,
    pub resource_released: AtomicU64,
    pub resource_denied: AtomicU64,
    pub admin_ok: AtomicU64,
    pub admin_denied: AtomicU64,
    pub attest_duration: Histogram,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Metrics {
    pub fn render(&self, sessions: usize) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, series: &[(&str, &AtomicU64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (label, c) in series {
                let _ = writeln!(out, "{name}{{outcome=\"{label}\"}} {}", c.load(Relaxed));
            }
        };
        counter(
            "kbs_auth_requests_total",
            "RCAR /auth requests.",
            &[
                ("ok", &self.auth_ok),
                ("rejected", &self.auth_rejected),
                ("throttled", &self.auth_throttled),
            ],
        );
        counter(
            "kbs_attest_requests_total",
            "RCAR /attest requests.",
            &[("ok", &self.attest_ok), ("failed", &self.attest_failed)],
        );
        counter(
            "kbs_resource_requests_total",
            "Resource requests.",
            &[
                ("released", &self.resource_released),
                ("denied", &self.resource_denied),
            ],
        );
        counter(
            "kbs_admin_requests_total",
            "Admin API requests.",
            &[("ok", &self.admin_ok), ("denied", &self.admin_denied)],
        );
        let _ = writeln!(
            out,
            "# HELP kbs_sessions Live RCAR sessions.\n# TYPE kbs_sessions gauge\nkbs_sessions {sessions}"
        );
        self.attest_duration
            .render("kbs_attest_duration_seconds", &mut out);
        out
    }
}
