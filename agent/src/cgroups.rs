//! Container statistics and OOM events from cgroup v2 (what `StatsContainer` and
//! `GetOOMEvent` report).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::protocols::agent::{
    CgroupStats, CpuStats, CpuUsage, MemoryData, MemoryStats, PidsStats, StatsContainerResponse,
    ThrottlingData,
};

/// Where a process's cgroup statistics live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v2 (what the guest mounts): one directory.
    V2(PathBuf),
    /// cgroup v1 (some development hosts): one directory per controller.
    V1 {
        memory: PathBuf,
        cpuacct: PathBuf,
        pids: PathBuf,
    },
}

/// The cgroup of `pid`, from `/proc/<pid>/cgroup`.
pub fn cgroup_of(proc_root: &Path, cgroup_root: &Path, pid: i32) -> std::io::Result<Cgroup> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))?;
    let mut v1: HashMap<String, PathBuf> = HashMap::new();
    let mut v2 = None;
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c.trim_start_matches('/')),
            _ => continue,
        };
        if ctrls.is_empty() {
            v2 = Some(cgroup_root.join(path));
        }
        for c in ctrls.split(',') {
            if matches!(c, "memory" | "cpuacct" | "pids") {
                v1.insert(c.to_string(), cgroup_root.join(c).join(path));
            }
        }
    }
    if let (Some(m), Some(c), Some(p)) = (v1.get("memory"), v1.get("cpuacct"), v1.get("pids")) {
        return Ok(Cgroup::V1 {
            memory: m.clone(),
            cpuacct: c.clone(),
            pids: p.clone(),
        });
    }
    v2.map(Cgroup::V2)
        .ok_or_else(|| std::io::Error::other("no cgroup entry"))
}

/// The file whose `oom_kill` counter grows on OOM kills.
pub fn oom_events_file(cg: &Cgroup) -> PathBuf {
    match cg {
        Cgroup::V2(d) => d.join("memory.events"),
        Cgroup::V1 { memory, .. } => memory.join("memory.oom_control"),
    }
}

/// Statistics of a cgroup of either version.
pub fn stats_of(cg: &Cgroup) -> StatsContainerResponse {
    match cg {
        Cgroup::V2(d) => stats(d),
        Cgroup::V1 {
            memory,
            cpuacct,
            pids,
        } => stats_v1(memory, cpuacct, pids),
    }
}

fn stats_v1(memory: &Path, cpuacct: &Path, pids_dir: &Path) -> StatsContainerResponse {
    let mut usage = CpuUsage::new();
    usage.total_usage = read_value(cpuacct, "cpuacct.usage");
    usage.usage_in_usermode = read_value(cpuacct, "cpuacct.usage_user");
    usage.usage_in_kernelmode = read_value(cpuacct, "cpuacct.usage_sys");
    let mut cpu_stats = CpuStats::new();
    cpu_stats.cpu_usage = Some(usage).into();
    let mem_stat = read_keyed(memory, "memory.stat");
    let mut mem_usage = MemoryData::new();
    mem_usage.usage = read_value(memory, "memory.usage_in_bytes");
    mem_usage.max_usage = read_value(memory, "memory.max_usage_in_bytes");
    mem_usage.limit = read_value(memory, "memory.limit_in_bytes");
    mem_usage.failcnt = read_value(memory, "memory.failcnt");
    let mut mem = MemoryStats::new();
    mem.cache = mem_stat.get("cache").copied().unwrap_or(0);
    mem.usage = Some(mem_usage).into();
    mem.use_hierarchy = read_value(memory, "memory.use_hierarchy") == 1;
    mem.stats = mem_stat;
    let mut pids = PidsStats::new();
    pids.current = read_value(pids_dir, "pids.current");
    pids.limit = read_value(pids_dir, "pids.max");
    let mut cg = CgroupStats::new();
    cg.cpu_stats = Some(cpu_stats).into();
    cg.memory_stats = Some(mem).into();
    cg.pids_stats = Some(pids).into();
    let mut r = StatsContainerResponse::new();
    r.cgroup_stats = Some(cg).into();
    r
}

/// `key value` lines (cpu.stat, memory.stat, memory.events).
pub fn parse_flat_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// A single number, or `max` (→ `u64::MAX`).
fn read_value(dir: &Path, file: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|t| {
            let t = t.trim();
            if t == "max" {
                Some(u64::MAX)
            } else {
                t.parse().ok()
            }
        })
        .unwrap_or(0)
}

fn read_keyed(dir: &Path, file: &str) -> HashMap<String, u64> {
    std::fs::read_to_string(dir.join(file))
        .map(|t| parse_flat_keyed(&t))
        .unwrap_or_default()
}

/// Statistics of the cgroup at `dir`, in the agent API's (cgroup v1 shaped) form.
pub fn stats(dir: &Path) -> StatsContainerResponse {
    let cpu = read_keyed(dir, "cpu.stat");
    let g = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let mut usage = CpuUsage::new();
    // cgroup v2 reports µs; the API (like cgroup v1) wants ns.
    usage.total_usage = g(&cpu, "usage_usec") * 1000;
    usage.usage_in_usermode = g(&cpu, "user_usec") * 1000;
    usage.usage_in_kernelmode = g(&cpu, "system_usec") * 1000;
    let mut thr = ThrottlingData::new();
    thr.periods = g(&cpu, "nr_periods");
    thr.throttled_periods = g(&cpu, "nr_throttled");
    thr.throttled_time = g(&cpu, "throttled_usec") * 1000;
    let mut cpu_stats = CpuStats::new();
    cpu_stats.cpu_usage = Some(usage).into();
    cpu_stats.throttling_data = Some(thr).into();

    let mem_stat = read_keyed(dir, "memory.stat");
    let events = read_keyed(dir, "memory.events");
    let mut mem_usage = MemoryData::new();
    mem_usage.usage = read_value(dir, "memory.current");
    mem_usage.max_usage = read_value(dir, "memory.peak");
    mem_usage.limit = read_value(dir, "memory.max");
    mem_usage.failcnt = g(&events, "max");
    let mut swap = MemoryData::new();
    swap.usage = read_value(dir, "memory.swap.current");
    swap.limit = read_value(dir, "memory.swap.max");
    let mut mem = MemoryStats::new();
    mem.cache = g(&mem_stat, "file");
    mem.usage = Some(mem_usage).into();
    mem.swap_usage = Some(swap).into();
    mem.use_hierarchy = true;
    mem.stats = mem_stat;

    let mut pids = PidsStats::new();
    pids.current = read_value(dir, "pids.current");
    pids.limit = read_value(dir, "pids.max");

    let mut cg = CgroupStats::new();
    cg.cpu_stats = Some(cpu_stats).into();
    cg.memory_stats = Some(mem).into();
    cg.pids_stats = Some(pids).into();
    let mut r = StatsContainerResponse::new();
    r.cgroup_stats = Some(cg).into();
    r
}

/// Watches the OOM counter (`oom_kill` in `file`: memory.events on v2,
/// memory.oom_control on v1) and reports each new OOM kill. Ends when the cgroup
/// disappears or the receiver is gone.
pub fn watch_oom(
    cid: String,
    file: PathBuf,
    tx: mpsc::UnboundedSender<String>,
) -> tokio::task::JoinHandle<()> {
    let mut seen = std::fs::read_to_string(&file)
        .map(|t| parse_flat_keyed(&t))
        .unwrap_or_default()
        .get("oom_kill")
        .copied()
        .unwrap_or(0);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(text) = tokio::fs::read_to_string(&file).await else {
                return;
            };
            let now = parse_flat_keyed(&text)
                .get("oom_kill")
                .copied()
                .unwrap_or(0);
            if now > seen {
                seen = now;
                tracing::info!(cid, "container was OOM-killed");
                if tx.send(cid.clone()).is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_from_cgroup_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(d.path().join(f), t).unwrap();
        w("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\nnr_throttled 1\nthrottled_usec 20\n");
        w("memory.current", "4096\n");
        w("memory.max", "max\n");
        w("memory.stat", "anon 100\nfile 200\n");
        w("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n");
        w("pids.current", "3\n");
        w("pids.max", "100\n");
        let s = stats(d.path());
        let cg = s.cgroup_stats.unwrap();
        assert_eq!(cg.cpu_stats.cpu_usage.total_usage, 1_500_000);
        assert_eq!(cg.cpu_stats.throttling_data.throttled_periods, 1);
        assert_eq!(cg.memory_stats.usage.usage, 4096);
        assert_eq!(cg.memory_stats.usage.limit, u64::MAX);
        assert_eq!(cg.memory_stats.usage.failcnt, 2);
        assert_eq!(cg.memory_stats.cache, 200);
        assert_eq!(cg.pids_stats.current, 3);
    }

    #[test]
    fn own_cgroup_is_found() {
        let p = cgroup_of(
            Path::new("/proc"),
            Path::new("/sys/fs/cgroup"),
            std::process::id() as i32,
        );
        match p {
            Ok(Cgroup::V2(p)) => assert!(p.starts_with("/sys/fs/cgroup")),
            Ok(Cgroup::V1 { memory, .. }) => assert!(memory.starts_with("/sys/fs/cgroup/memory")),
            Err(e) => eprintln!("SKIPPED: no cgroups here: {e}"),
        }
    }

    #[test]
    fn v1_and_v2_entries() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("7")).unwrap();
        std::fs::write(
            d.path().join("7/cgroup"),
            "4:memory:/a/b\n3:cpu,cpuacct:/a/b\n2:pids:/a/b\n0::/\n",
        )
        .unwrap();
        let r = Path::new("/cg");
        assert_eq!(
            cgroup_of(d.path(), r, 7).unwrap(),
            Cgroup::V1 {
                memory: "/cg/memory/a/b".into(),
                cpuacct: "/cg/cpuacct/a/b".into(),
                pids: "/cg/pids/a/b".into()
            }
        );
        std::fs::write(d.path().join("7/cgroup"), "0::/kubepods/x\n").unwrap();
        assert_eq!(
            cgroup_of(d.path(), r, 7).unwrap(),
            Cgroup::V2("/cg/kubepods/x".into())
        );
    }

    #[tokio::test]
    async fn oom_kill_is_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.events"), "oom_kill 0\n").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = watch_oom("c1".into(), d.path().join("memory.events"), tx);
        std::fs::write(d.path().join("memory.events"), "oom_kill 1\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some("c1"));
        h.abort();
    }
}
