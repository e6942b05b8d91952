//! Throughput and long replies: how many messages a second the bridge routes with 1, 10
//! and 100 conversations sending back to back, what each reply costs it in CPU time and
//! disk flushes, the 100 again with the workspace quota's checks off (an exec into every
//! box every `workspace_check_secs`: engine work that grows with the boxes), then the long
//! replies of [`super::long`] (`cargo run --release --example bench -- load [SECONDS]`).
//!
//! Every conversation sends its next message as soon as the previous reply finished, so
//! the figure is the bridge's (and engine's, and agents') ceiling, not an arrival rate.
//! The echo provider with no delay answers at once; the bridge's CPU time over the window
//! is read from /proc, so the cost per reply is the bridge's own.

use std::time::Duration;

use anyhow::Context;
use clawpen::daemon::Bridge;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::long::{self, LongReply};
use super::procfs::{clock_ticks, CpuTime};
use super::turn::Conversation;
use super::CLEANUP_TIMEOUT;

/// How many conversations send at once, one phase each.
const PARALLEL: [usize; 3] = [1, 10, BUSIEST];
/// The most conversations sending at once.
const BUSIEST: usize = 100;
/// How long each phase sends, by default.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One phase's figures.
pub struct Phase {
    conversations: usize,
    replies: usize,
    wall: Duration,
    cpu: Duration,
    /// The store's flushes (each a disk sync) over the window.
    flushes: u64,
    /// Whether the workspace quota's checks ran (an exec into every box each
    /// `workspace_check_secs`), as by default.
    checks: bool,
}

/// Everything measured.
pub struct LoadReport {
    phases: Vec<Phase>,
    /// The long replies.
    long: Vec<LongReply>,
    window: Duration,
}

/// Runs the phases on a bridge of their own and removes its boxes however it went.
pub async fn measure(window: Duration) -> anyhow::Result<LoadReport> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let config = super::echo_config(dir.path(), PARALLEL.iter().sum::<usize>() + 2, 0);
    let bridge = super::start_bridge(&config).await?;
    let measured = phases(&bridge, window).await;
    super::retire(bridge, CLEANUP_TIMEOUT).await;
    let mut report = measured?;
    // The busiest phase again without the workspace quota's checks, whose execs into every
    // box are the engine work that grows with the number of boxes.
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let mut config = super::echo_config(dir.path(), BUSIEST + 2, 0);
    config.limits.workspace_mb = 0;
    let bridge = super::start_bridge(&config).await?;
    let unchecked = phase(&bridge, "load-unchecked", BUSIEST, window).await;
    super::retire(bridge, CLEANUP_TIMEOUT).await;
    report.phases.push(Phase {
        checks: false,
        ..unchecked?
    });
    report.long = long::measure().await?;
    Ok(report)
}

async fn phases(bridge: &Bridge, window: Duration) -> anyhow::Result<LoadReport> {
    let mut phases = Vec::new();
    for (p, &n) in PARALLEL.iter().enumerate() {
        phases.push(phase(bridge, &format!("load{p}"), n, window).await?);
    }
    Ok(LoadReport {
        phases,
        long: Vec::new(),
        window,
    })
}

/// One phase: `n` conversations named after `name`, warmed up, then sending back to back
/// for `window`.
async fn phase(bridge: &Bridge, name: &str, n: usize, window: Duration) -> anyhow::Result<Phase> {
    let ticks = clock_ticks();
    eprintln!("load: {n} conversations, each sending back to back for {window:?}");
    let mut conversations: Vec<Conversation> = (0..n)
        .map(|i| Conversation::watch(bridge, &format!("{name}-{i:03}")))
        .collect();
    // Boxes started and warm before the window opens.
    for result in join_all(conversations.iter_mut().map(|c| c.turn(bridge, "warm up"))).await {
        result?;
    }
    let flushes_before = bridge.router.store().flushes();
    let (before, started) = (CpuTime::now()?, Instant::now());
    let end = started + window;
    let counts = join_all(conversations.iter_mut().map(|c| async move {
        let mut replies = 0usize;
        while Instant::now() < end {
            c.turn(bridge, &format!("message {replies}")).await?;
            replies += 1;
        }
        anyhow::Ok(replies)
    }))
    .await;
    let wall = started.elapsed();
    let (_, _, cpu) = CpuTime::now()?.since(before).split(ticks);
    let flushes = bridge.router.store().flushes() - flushes_before;
    let mut replies = 0;
    for count in counts {
        replies += count?;
    }
    Ok(Phase {
        conversations: n,
        replies,
        wall,
        cpu,
        flushes,
        checks: true,
    })
}

/// The rows, as a table of their own.
pub fn print(r: &LoadReport) {
    println!(
        "| Conversations sending back to back ({} s each) | replies | replies/s | bridge CPU per reply | store flushes per reply |",
        r.window.as_secs()
    );
    println!("|---|---|---|---|---|");
    for phase in &r.phases {
        let per_second = phase.replies as f64 / phase.wall.as_secs_f64();
        let cpu = phase.cpu.as_secs_f64() * 1000.0 / phase.replies.max(1) as f64;
        let flushes = phase.flushes as f64 / phase.replies.max(1) as f64;
        let checks = if phase.checks {
            ""
        } else {
            ", workspace checks off"
        };
        println!(
            "| {}{checks} | {} | {per_second:.0} | {cpu:.2} ms | {flushes:.2} |",
            phase.conversations, phase.replies
        );
    }
    println!();
    long::print(&r.long);
}
