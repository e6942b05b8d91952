//! New conversations with and without the warm pool: one at a time, and a burst of many
//! at once, on bridges of their own (`warm_pool` 0 and 2, then a pool as large as the
//! burst), so the main run's figures keep their meaning (its bridge runs without a pool).
//!
//! One at a time, a new conversation with the pool is measured once the pool is full
//! again, which is what a conversation arriving at an ordinary pace meets. The burst sends
//! every first message at once and times each first reply from that moment; `max_boxes`
//! is above every conversation's box and the pool's, so no conversation waits for a slot and the figure is the engine's
//! start queue (`sandbox::STARTS_AT_ONCE` at once) and the pool.

use std::time::Duration;

use anyhow::Context;
use clawpen::daemon::Bridge;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::report::latency_row;
use super::turn::first_turn;
use super::CLEANUP_TIMEOUT;

/// New conversations timed one at a time, with and without the pool.
pub const NEW_SAMPLES: usize = 20;
/// New conversations whose first messages arrive at once.
pub const BURST: usize = 200;
/// The pool of the runs with a pool: the default.
const WARM_POOL: usize = 2;
/// The longest wait for the pool to fill.
const FILL_TIMEOUT: Duration = Duration::from_secs(120);

/// First replies of new conversations, by pool size.
pub struct PoolReport {
    /// One at a time, without a pool.
    pub cold: Vec<Duration>,
    /// One at a time, each finding the pool full.
    pub warm: Vec<Duration>,
    /// All at once, without a pool.
    pub burst_cold: Vec<Duration>,
    /// All at once, with the pool full when they came.
    pub burst_warm: Vec<Duration>,
    /// All at once, with a full pool as large as the burst.
    pub burst_pooled: Vec<Duration>,
}

/// Runs both bridges: `samples` conversations one at a time, then `burst` at once.
pub async fn measure(samples: usize, burst: usize) -> anyhow::Result<PoolReport> {
    let (cold, burst_cold) = run(0, samples, burst).await?;
    let (warm, burst_warm) = run(WARM_POOL, samples, burst).await?;
    // What an operator who expects bursts can buy: a pool that holds one.
    let (_, burst_pooled) = run(burst, 0, burst).await?;
    Ok(PoolReport {
        cold,
        warm,
        burst_cold,
        burst_warm,
        burst_pooled,
    })
}

/// One bridge with a pool of `warm_pool`; removes its boxes and volumes however it went.
async fn run(
    warm_pool: usize,
    samples: usize,
    burst: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    // Every conversation keeps its box (idle ones stop after 15 minutes), the pool holds
    // its own: nobody waits for a slot.
    let config = super::echo_config(dir.path(), samples + burst + warm_pool + 1, warm_pool);
    let bridge = super::start_bridge(&config).await?;
    let measured = async {
        eprintln!("pool {warm_pool}: {samples} new conversations, one at a time");
        let mut one = Vec::new();
        for n in 0..samples {
            full(&bridge, warm_pool).await?;
            one.push(
                first_turn(&bridge, &format!("new-{n:03}"))
                    .await?
                    .first_reply,
            );
        }
        full(&bridge, warm_pool).await?;
        eprintln!("pool {warm_pool}: {burst} new conversations at once");
        let names: Vec<String> = (0..burst).map(|n| format!("burst-{n:03}")).collect();
        // Every first turn is polled at once, so each one's clock (from just before its
        // `accept`) starts with the burst.
        let turns = join_all(names.iter().map(|name| first_turn(&bridge, name))).await;
        let mut all = Vec::new();
        for timing in turns {
            all.push(timing?.first_reply);
        }
        anyhow::Ok((one, all))
    }
    .await;
    super::retire(bridge, CLEANUP_TIMEOUT).await;
    measured
}

/// Waits until the bridge's pool holds `warm_pool` boxes.
async fn full(bridge: &Bridge, warm_pool: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + FILL_TIMEOUT;
    while bridge.router.warm_boxes() < warm_pool {
        if Instant::now() >= deadline {
            anyhow::bail!("the pool did not fill within {FILL_TIMEOUT:?}");
        }
        // Polling a gauge between measurements; nothing is timed while it waits.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The rows, as a table of their own.
pub fn print(r: &PoolReport) {
    let row = latency_row;
    println!("| New conversations → first reply message | N | p50 | p99 |");
    println!("|---|---|---|---|");
    row("One at a time, `warm_pool = 0` (box created)", &r.cold);
    row(
        &format!("One at a time, `warm_pool = {WARM_POOL}` (pool full when it comes)"),
        &r.warm,
    );
    let n = r.burst_cold.len();
    row(&format!("{n} at once, `warm_pool = 0`"), &r.burst_cold);
    row(
        &format!("{n} at once, `warm_pool = {WARM_POOL}`"),
        &r.burst_warm,
    );
    row(
        &format!("{n} at once, `warm_pool = {n}` (pool full when they come)"),
        &r.burst_pooled,
    );
}
