//! What /proc says about this process (memory, CPU time, storage writes) and about the
//! boxes' processes on the engine's host.

use std::time::Duration;

use anyhow::{ensure, Context};
use clawpen::sandbox::Sandbox;

/// CPU time a process has used so far, all its threads (live and exited) together, in
/// /proc's clock ticks; converted only when printed, so that reading it runs nothing else.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    user: u64,
    sys: u64,
}

impl CpuTime {
    /// This process's CPU time from /proc/self/stat.
    pub fn now() -> anyhow::Result<CpuTime> {
        let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
        // Fields after the command name, which is in parentheses and may hold spaces; utime
        // and stime are fields 14 and 15 of the whole line, so 12 and 13 after it.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .context("unexpected /proc/self/stat")
        };
        Ok(CpuTime {
            user: ticks(11)?,
            sys: ticks(12)?,
        })
    }

    /// The CPU time used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }

    /// User, system and total time, given /proc's clock ticks per second.
    pub fn split(self, ticks_per_second: u64) -> (Duration, Duration, Duration) {
        let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64);
        (time(self.user), time(self.sys), time(self.user + self.sys))
    }
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100)
}

/// Bytes this process has caused to be sent to the storage layer (`write_bytes` of
/// /proc/self/io): the kernel counts whole pages as they are dirtied, so a small write to
/// a clean page counts 4 KiB, and rewriting a page already dirty counts nothing.
pub fn storage_write_bytes() -> anyhow::Result<u64> {
    proc_field("/proc/self/io", "write_bytes")
        .and_then(|v| v.parse().ok())
        .context("reading write_bytes in /proc/self/io (needs task I/O accounting)")
}

/// RSS of every running box's processes (its init and the agent) and of its engine shim,
/// from the host's /proc.
pub async fn box_memory(sandbox: &Sandbox) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let (mut agents, mut shims) = (Vec::new(), Vec::new());
    for info in sandbox.list().await?.into_iter().filter(|b| b.running) {
        let inspected = sandbox
            .docker()
            .inspect_container(info.id.as_str(), None)
            .await
            .with_context(|| format!("inspecting box {}", info.name))?;
        let pid = inspected
            .state
            .and_then(|s| s.pid)
            .filter(|pid| *pid > 0)
            .with_context(|| format!("box {} has no host pid", info.name))?
            .to_string();
        let init = vm_rss_kib(&pid).with_context(|| {
            format!(
                "reading /proc/{pid}/status of box {} (run as root on the engine's host)",
                info.name
            )
        })?;
        // The box's pid 1 is its small init; the agent is its child.
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let agent: u64 = children.split_whitespace().filter_map(vm_rss_kib).sum();
        agents.push(init + agent);
        // The init's host parent is the engine's per-container shim.
        let parent = proc_field(&format!("/proc/{pid}/status"), "PPid").unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
        if comm.starts_with("containerd-shim") {
            shims.extend(vm_rss_kib(&parent));
        }
    }
    ensure!(!agents.is_empty(), "no running box found");
    Ok((agents, shims))
}

/// A `Name: value` line of a /proc file such as /proc/<pid>/status, its value trimmed.
pub fn proc_field(path: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

/// A `Name: N kB` field of a /proc file, in KiB.
pub fn proc_kib(path: &str, field: &str) -> Option<u64> {
    proc_field(path, field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// VmRSS of a process (`self` or a pid), in KiB.
pub fn vm_rss_kib(pid: &str) -> Option<u64> {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS")
}
