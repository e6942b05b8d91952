//! Scheduled tasks at scale: 100,000 tasks across 1,000 conversations in a store of their
//! own, with what they cost on disk and in memory, and the time of one scheduler tick,
//! which reads only the due part of the index, never every task.
//!
//! `cargo run --release --example bench -- tasks` runs this part alone (no engine needed).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clawpen::adapters::ConversationKey;
use clawpen::router::{Clock, WeakRouter};
use clawpen::schedule::{Scheduler, Settings};
use clawpen::store::{CatchUp, Store, StoredSchedule, TaskKind, TaskRecord, TaskState};
use tokio::time::Instant;

use super::procfs;

/// Tasks held.
pub const TASKS: usize = 100_000;
/// Conversations they belong to.
pub const CONVERSATIONS: usize = 1_000;
/// Tasks due in the measured busy tick.
pub const DUE: usize = 100;
/// Ticks timed with nothing due.
const IDLE_TICKS: usize = 1_000;

/// What the tasks cost.
pub struct TaskReport {
    /// The store's files with the tasks, in bytes.
    pub store_bytes: u64,
    /// This process's RSS before the store was opened and after the tasks were loaded and
    /// ticked, in KiB.
    pub rss_before: u64,
    pub rss_after: u64,
    /// RSS of a fresh process that opened the store and ticked, in KiB (as a bridge
    /// restarted on such a store).
    pub rss_reopened: u64,
    /// How long loading them took.
    pub load: Duration,
    /// One tick with nothing due (median of [`IDLE_TICKS`]).
    pub idle_tick: Duration,
    /// One tick firing [`DUE`] occurrences (each logged with its task's next due time).
    pub busy_tick: Duration,
    /// Occurrences that busy tick fired.
    pub fired: usize,
}

/// Loads the tasks into a store in `dir` and times the scheduler's tick over them.
pub async fn measure(dir: &Path) -> anyhow::Result<TaskReport> {
    let rss_before = procfs::vm_rss_kib("self").context("reading VmRSS")?;
    let store = Store::open(dir).context("opening the task store")?;
    let now = i64::try_from(clawpen::router::now_secs()).unwrap_or(0);
    let started = Instant::now();
    for n in 0..TASKS {
        let conversation = ConversationKey::new("telegram", format!("{}", n % CONVERSATIONS));
        // The first `DUE` are due now; the rest spread over the next week.
        let due = if n < DUE {
            now - 1
        } else {
            now + 60 + i64::try_from(n).unwrap_or(0) * 6
        };
        let task = TaskRecord {
            id: 0,
            conversation,
            title: format!("task {n}"),
            kind: TaskKind::Reminder {
                text: format!("Reminder number {n}: time to stretch and drink some water."),
            },
            schedule: StoredSchedule::Every {
                secs: 86_400,
                anchor: due,
            },
            zone: "Europe/Berlin".into(),
            catch_up: CatchUp::Once,
            state: TaskState::Active,
            next_due: Some(due),
            last_due: None,
            last_outcome: None,
            created_by: "bench".into(),
            created_at: now,
        };
        store.create_task_unflushed(&task)?;
    }
    store.flush()?;
    let load = started.elapsed();
    let scheduler = Scheduler::new(
        store.clone(),
        WeakRouter::default(),
        Settings::default(),
        Clock::default(),
    );
    // Nothing due a minute ago: the tick is the index probe alone.
    let mut idle = Vec::with_capacity(IDLE_TICKS);
    for _ in 0..IDLE_TICKS {
        let began = Instant::now();
        scheduler.tick(now - 60).await?;
        idle.push(began.elapsed());
    }
    idle.sort();
    let began = Instant::now();
    let fired = scheduler.tick(now).await?;
    let busy_tick = began.elapsed();
    store.flush()?;
    let rss_after = procfs::vm_rss_kib("self").context("reading VmRSS")?;
    Ok(TaskReport {
        store_bytes: dir_size(dir),
        rss_before,
        rss_after,
        rss_reopened: 0,
        load,
        idle_tick: idle[idle.len() / 2],
        busy_tick,
        fired,
    })
}

/// The Markdown rows of a [`TaskReport`].
pub fn print(r: &TaskReport) {
    println!("| Scheduled tasks ({TASKS} across {CONVERSATIONS} conversations) | |");
    println!("|---|---|");
    println!(
        "| Store size with the tasks | {:.1} MiB ({:.0} bytes per task) |",
        r.store_bytes as f64 / (1024.0 * 1024.0),
        r.store_bytes as f64 / TASKS as f64
    );
    println!(
        "| Process RSS before the store / after loading and ticking | {:.1} MiB / {:.1} MiB |",
        r.rss_before as f64 / 1024.0,
        r.rss_after as f64 / 1024.0
    );
    println!(
        "| A fresh process that opens that store and ticks {IDLE_TICKS} times | {:.1} MiB |",
        r.rss_reopened as f64 / 1024.0
    );
    println!(
        "| Loading them (one transaction each, one flush) | {:.1} s |",
        r.load.as_secs_f64()
    );
    println!(
        "| One tick with nothing due (median of {IDLE_TICKS}) | {:.3} ms |",
        r.idle_tick.as_secs_f64() * 1000.0
    );
    println!(
        "| One tick firing {} due occurrences (each stored with its next due time, flushed) | {:.1} ms |",
        r.fired,
        r.busy_tick.as_secs_f64() * 1000.0
    );
}

/// Runs this bench again as `tasks-reopen DIR` and reads the RSS it reports.
pub fn reopened_rss(dir: &Path) -> anyhow::Result<u64> {
    let exe = std::env::current_exe().context("finding the bench binary")?;
    let out = std::process::Command::new(exe)
        .arg("tasks-reopen")
        .arg(dir)
        .output()
        .context("running the bench again")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("reading the reopened process's RSS")
}

/// `tasks-reopen DIR`: opens the store in DIR, ticks [`IDLE_TICKS`] times and prints its
/// RSS in KiB.
pub async fn reopen_and_tick() -> anyhow::Result<()> {
    let dir = std::env::args().nth(2).context("tasks-reopen DIR")?;
    let store = Store::open(Path::new(&dir)).context("opening the task store")?;
    let now = i64::try_from(clawpen::router::now_secs()).unwrap_or(0);
    let scheduler = Scheduler::new(
        store,
        WeakRouter::default(),
        Settings::default(),
        Clock::default(),
    );
    for _ in 0..IDLE_TICKS {
        scheduler.tick(now - 60).await?;
    }
    println!("{}", procfs::vm_rss_kib("self").context("reading VmRSS")?);
    Ok(())
}

/// The bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
