//! Many live conversations: bridge memory, per-conversation memory, the engine's share and
//! warm latency at 10, 100, 1,000 and 3,000 conversations with a running box each, or the
//! point where the machine cannot hold more and why
//! (`cargo run --release --example bench -- density [MAX]`).
//!
//! Conversations are added in batches; before each batch the host's available memory and
//! its tasks (processes and threads, against `kernel.pid_max`) are read, and the ramp
//! stops, as its breaking point, when the batch would leave less than [`RESERVE_MIB`] of
//! memory or use more than [`PID_SHARE`] of the pids (so the machine, its engine and this
//! run stay healthy: past pid_max nothing on the host can start a process or a thread),
//! when a box cannot be started (the engine's refusal is the cause), or when a first reply
//! does not come. At each level reached: the bridge's RSS and its growth per conversation, its open
//! files and threads, the engine's threads, the boxes' and their shims' memory, and 100
//! sequential warm turns on the first conversation, after [`SETTLE`].

use std::time::Duration;

use anyhow::Context;
use clawpen::config::Config;
use clawpen::daemon::Bridge;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::procfs::{self, proc_field, proc_kib};
use super::report::{ms, percentile};
use super::turn::{first_turn, Conversation};

/// The levels measured, up to the run's maximum.
const LEVELS: [usize; 4] = [10, 100, 1000, 3000];
/// New conversations started at once in a batch.
const BATCH: usize = 50;
/// The ramp stops before the host's available memory would fall below this.
const RESERVE_MIB: u64 = 3 * 1024;
/// The share of `kernel.pid_max` the ramp may take the host's tasks to.
const PID_SHARE: f64 = 0.8;
/// Sequential warm turns timed at each level.
const WARM_TURNS: usize = 100;
/// How long the host gets to settle after the last batch before a level is measured: the
/// engine is busy for a while after starting boxes, which is not what a warm turn meets.
const SETTLE: Duration = Duration::from_secs(20);
/// Removing thousands of boxes takes a while.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(1800);

/// One level's figures.
struct Level {
    live: usize,
    rss_kib: u64,
    fds: usize,
    threads: u64,
    engine_threads: u64,
    available_mib: u64,
    /// Processes and threads on the host.
    tasks: u64,
    /// Median RSS of a box's processes (init and agent) and of its shim, KiB.
    box_kib: u64,
    shim_kib: u64,
    warm: Vec<Duration>,
}

/// Everything measured.
pub struct DensityReport {
    rss_empty_kib: u64,
    levels: Vec<Level>,
    /// Why the ramp stopped before the last level, if it did.
    stopped: Option<String>,
    max: usize,
}

/// Runs the ramp on a bridge of its own and removes its boxes however it went.
pub async fn measure(max: usize) -> anyhow::Result<DensityReport> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let config = Config {
        // No box is stopped for idleness during the run.
        idle_timeout_secs: 24 * 3600,
        ..super::echo_config(dir.path(), max + 1, 0)
    };
    let bridge = super::start_bridge(&config).await?;
    let measured = ramp(&bridge, max).await;
    eprintln!("density: stopping the bridge and removing its boxes");
    super::retire(bridge, CLEANUP_TIMEOUT).await;
    measured
}

async fn ramp(bridge: &Bridge, max: usize) -> anyhow::Result<DensityReport> {
    let rss_empty_kib = procfs::vm_rss_kib("self").context("reading this process's VmRSS")?;
    let mut warm = Conversation::watch(bridge, "dense-0000");
    warm.turn(bridge, "first").await?;
    let mut live = 1;
    let mut levels = Vec::new();
    let mut stopped = None;
    let mut per_box_mib = 16;
    let mut per_box_tasks = 20;
    let pid_max = pid_max();
    'levels: for level in LEVELS.into_iter().filter(|&l| l <= max) {
        while live < level {
            let available = available_mib();
            let batch = BATCH.min(level - live);
            if available < RESERVE_MIB + per_box_mib * batch as u64 {
                stopped = Some(format!(
                    "memory: {available} MiB available with {live} live conversations, \
                     about {per_box_mib} MiB more per box"
                ));
                break 'levels;
            }
            let tasks = host_tasks();
            if (tasks + per_box_tasks * batch as u64) as f64 > pid_max as f64 * PID_SHARE {
                stopped = Some(format!(
                    "pids: {tasks} processes and threads on the host with {live} live \
                     conversations, about {per_box_tasks} more per box, against \
                     kernel.pid_max {pid_max}"
                ));
                break 'levels;
            }
            let before = available;
            let started = Instant::now();
            let names: Vec<String> = (live..live + batch)
                .map(|n| format!("dense-{n:04}"))
                .collect();
            let turns = join_all(names.iter().map(|name| first_turn(bridge, name))).await;
            if let Some(error) = turns.into_iter().find_map(Result::err) {
                stopped = Some(format!("a box did not answer with {live} live: {error:#}"));
                break 'levels;
            }
            live += batch;
            // What the batch took from the host, per box (at least 1 MiB).
            let used = before.saturating_sub(available_mib());
            per_box_mib = per_box_mib.max((used / batch as u64).max(1));
            let added = host_tasks().saturating_sub(tasks);
            per_box_tasks = per_box_tasks.max(added.div_ceil(batch as u64));
            eprintln!(
                "density: {live} live ({batch} more in {:.1} s; {} MiB available)",
                started.elapsed().as_secs_f64(),
                available_mib()
            );
        }
        tokio::time::sleep(SETTLE).await;
        eprintln!("density: measuring at {live} live conversations");
        let mut samples = Vec::with_capacity(WARM_TURNS);
        for n in 0..WARM_TURNS {
            samples.push(warm.turn(bridge, &format!("ping {n}")).await?.first_reply);
        }
        let (boxes, shims) = procfs::box_memory(bridge.router.sandbox()).await?;
        levels.push(Level {
            live,
            rss_kib: procfs::vm_rss_kib("self").context("reading VmRSS")?,
            fds: std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count),
            threads: proc_field("/proc/self/status", "Threads")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            engine_threads: engine_threads(),
            available_mib: available_mib(),
            tasks: host_tasks(),
            box_kib: median(boxes),
            shim_kib: median(shims),
            warm: samples,
        });
    }
    Ok(DensityReport {
        rss_empty_kib,
        levels,
        stopped,
        max,
    })
}

/// Processes and threads on the host: the total of /proc/loadavg's `running/total`.
fn host_tasks() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
        .unwrap_or(0)
}

fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(32_768)
}

fn available_mib() -> u64 {
    proc_kib("/proc/meminfo", "MemAvailable").unwrap_or(0) / 1024
}

/// Threads of the engine's processes on this host (dockerd, containerd and its shims).
fn engine_threads() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let path = e.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            let engine = ["dockerd", "containerd"]
                .iter()
                .any(|n| comm.starts_with(n));
            engine.then(|| proc_field(&format!("{}/status", path.display()), "Threads"))?
        })
        .filter_map(|t| t.parse::<u64>().ok())
        .sum()
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// The rows, as a table of their own.
pub fn print(r: &DensityReport) {
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    println!("| Live conversations (a running box each) | Bridge RSS | per conversation | bridge fds / threads | engine threads | host tasks | box (init + agent) / shim, median | host memory available | warm p50 / p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for l in &r.levels {
        let per = l.rss_kib.saturating_sub(r.rss_empty_kib) as f64 / l.live as f64;
        println!(
            "| {} | {} | {per:.0} KiB | {} / {} | {} | {} | {} / {} | {} MiB | {} / {} |",
            l.live,
            mib(l.rss_kib),
            l.fds,
            l.threads,
            l.engine_threads,
            l.tasks,
            mib(l.box_kib),
            mib(l.shim_kib),
            l.available_mib,
            ms(percentile(&l.warm, 50.0)),
            ms(percentile(&l.warm, 99.0)),
        );
    }
    println!();
    match &r.stopped {
        Some(why) => println!("The ramp to {} stopped: {why}.", r.max),
        None => println!("Every level up to {} was reached.", r.max),
    }
}
