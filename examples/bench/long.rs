//! A 100 KB reply end to end, against the model's own streaming time, and the bridge's
//! memory before and after it (`cargo run --release --example bench -- long`).
//!
//! The model here is the echo provider, which streams a message back in chunks of at most
//! 16 characters with `echo_delay_ms` between two chunks: at no delay it is as fast as the
//! agent can write, at 1 ms a model far faster than any real one (6,400 chunks). For each
//! pace the same reply is taken twice on a bridge of its own: straight from a directly
//! attached box (the agent's own streaming time with the engine's attach, the floor) and
//! through the router to the terminal adapter (accept to the whole text shown).

use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::procfs;
use super::turn::{direct_reply, Conversation};
use super::CLEANUP_TIMEOUT;

/// The long reply's size.
pub const LONG: usize = 100 * 1024;
/// The echo's pauses between two chunks, one run each.
const PACES_MS: [u64; 2] = [0, 1];

/// One pace's figures.
pub struct LongReply {
    pace_ms: u64,
    /// The agent streaming it straight to an attach.
    direct: Duration,
    /// Accept to the whole text shown at the terminal adapter.
    bridged: Duration,
    /// This process's RSS after the warm-up turn, and a second after the long reply, KiB.
    rss_before: u64,
    rss_after: u64,
}

/// Both paces, each on a bridge of its own; its boxes are removed however it went.
pub async fn measure() -> anyhow::Result<Vec<LongReply>> {
    let mut replies = Vec::new();
    for pace_ms in PACES_MS {
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        let mut config = super::echo_config(dir.path(), 4, 0);
        config.echo_delay_ms = pace_ms;
        let bridge = super::start_bridge(&config).await?;
        let measured = one(&bridge, pace_ms).await;
        super::retire(bridge, CLEANUP_TIMEOUT).await;
        replies.push(measured?);
    }
    Ok(replies)
}

async fn one(bridge: &clawpen::daemon::Bridge, pace_ms: u64) -> anyhow::Result<LongReply> {
    eprintln!("long: one reply of {LONG} bytes, {pace_ms} ms between the echo's chunks");
    let text = super::words(LONG, "long");
    let direct = direct_reply(bridge.router.sandbox(), "long-direct", &text).await?;
    let mut long = Conversation::watch(bridge, "long");
    long.turn(bridge, "warm up").await?;
    let rss_before = procfs::vm_rss_kib("self").context("reading this process's VmRSS")?;
    let started = Instant::now();
    long.turn(bridge, &text).await?;
    let bridged = started.elapsed();
    // Freed buffers go back once the turn's tasks are done with them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = procfs::vm_rss_kib("self").context("reading this process's VmRSS")?;
    Ok(LongReply {
        pace_ms,
        direct,
        bridged,
        rss_before,
        rss_after,
    })
}

/// The rows, as a table of their own.
pub fn print(replies: &[LongReply]) {
    println!("| A {} KB reply (echo) | the agent's own streaming, straight to an attach | through the bridge, accept → whole text shown | ratio | bridge RSS before / after |", LONG / 1024);
    println!("|---|---|---|---|---|");
    for r in replies {
        let pace = match r.pace_ms {
            0 => "no delay between chunks".to_string(),
            ms => format!("{ms} ms between chunks"),
        };
        println!(
            "| {pace} | {:.0} ms | {:.0} ms | {:.2}× | {:.1} / {:.1} MiB |",
            r.direct.as_secs_f64() * 1000.0,
            r.bridged.as_secs_f64() * 1000.0,
            r.bridged.as_secs_f64() / r.direct.as_secs_f64().max(f64::EPSILON),
            r.rss_before as f64 / 1024.0,
            r.rss_after as f64 / 1024.0
        );
    }
}
