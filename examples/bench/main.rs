//! The numbers in the README: what the bridge adds to a message's trip to its box, how long
//! a new conversation's box takes to answer, what idle conversations cost in memory, and
//! what a turn costs in CPU time, disk writes and flushes.
//!
//! Run with `cargo run --release --example bench`, as root (it reads the boxes' memory in
//! /proc on the engine's host and attaches strace to itself) after building the static
//! agent as for the tests. It starts a bridge in this process on a temporary data
//! directory, with the echo provider and no delay between chunks, so every number is the
//! bridge, the engine and the agent, never a model. It prints a Markdown table to stdout
//! (progress goes to stderr) and removes every box and volume it created, also when a
//! measurement fails.
//!
//! Latencies are round trips: from handing a message to the router to the first reply
//! operation reaching the terminal adapter. The one-way time to the box's stdin is not
//! observable from outside the router, so the same round trip is also measured straight
//! through an attach, without the router, to show how much of it is the engine and agent.
//!
//! CPU time, flushes and bytes written do not depend on how busy the machine is, unlike
//! the latencies. Flushes and write sizes are counted by `strace -f` attached to this
//! process for the last two phases only, after everything timed.
//!
//! # Layout
//! - `discord`: turns to a Discord conversation, answered through the Discord adapter to
//!   the test suite's fake Discord.
//! - `turn`: turns through the router, and round trips straight through an attach.
//! - `procfs`: what /proc says about this process and the boxes (memory, CPU, writes).
//! - `trace`: strace attached to this process for one phase, and its lines counted.
//! - `report`: the Markdown table.
//! - `tasks`: 100,000 scheduled tasks: store size, memory, one scheduler tick
//!   (`cargo run --release --example bench -- tasks` runs only this part).
//! - `density`: bridge and engine memory, threads and warm latency at 10, 100, 1,000 and
//!   3,000 live conversations, or where the machine stops holding more
//!   (`cargo run --release --example bench -- density [MAX]`).
//! - `load`: replies per second with 1, 10 and 100 conversations sending back to back (and
//!   100 with the workspace quota's checks off), then `long` (`cargo run --release
//!   --example bench -- load [SECONDS]` runs only these, SECONDS per phase).
//! - `long`: a 100 KB reply end to end against the agent's own streaming time, at two
//!   paces, and the bridge's memory around it (`cargo run --release --example bench -- long`
//!   runs only this part).
//! - `pool`: new conversations with and without the warm pool, one at a time and in a
//!   burst, on bridges of their own (`cargo run --release --example bench -- pool [N]
//!   [BURST]` runs only this part, with N one at a time and BURST at once).

mod density;
mod discord;
mod load;
mod long;
mod pool;
mod procfs;
mod report;
mod tasks;
mod trace;
mod turn;

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clawpen::config::Config;
use clawpen::daemon::Bridge;
use clawpen::sandbox::Sandbox;
use tokio::time::{timeout, Instant};

use procfs::CpuTime;
use trace::{Syscalls, Trace};
use turn::{first_turn, Conversation};

/// Sequential warm turns measured, after [`WARM_UP`] unmeasured ones.
const WARM_SAMPLES: usize = 200;
/// Turns run before measuring, so one-time costs (first store writes, lazy allocations)
/// are not counted as steady state.
const WARM_UP: usize = 20;
/// New conversations timed from their first message.
const COLD_SAMPLES: usize = 20;
/// Conversations alive, each with an idle box, when memory is read.
const IDLE_CONVERSATIONS: usize = 100;
/// Above [`IDLE_CONVERSATIONS`] plus the direct-attach box, so no conversation waits for a
/// slot and every cold start is a real start.
const MAX_BOXES: usize = 128;
/// Warm turns whose CPU time is read: the bridge's cost per 1,000 messages.
const CPU_TURNS: usize = 1000;
/// How long the process's CPU time is read without messages, to compare with; long enough
/// for /proc's 10 ms ticks to show a background cost of a few ms per second.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// Warm turns of a short message traced with strace.
const TRACED_TURNS: usize = 50;
/// Warm turns of a [`LONG_REPLY`] message (echoed as a reply of that size) traced.
const TRACED_LONG_TURNS: usize = 10;
/// The size of the long message and of its echo, in bytes.
const LONG_REPLY: usize = 10 * 1024;
/// The longest wait for the bridge to start, which may include building the box image.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest wait for removing every box and volume at the end.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything measured, for the table.
struct Report {
    /// Accept to the first reply event, warm box, through the router.
    warm: Vec<Duration>,
    /// How long `accept` itself took in those turns (store write and hand-off).
    accept: Vec<Duration>,
    /// Accept to the first reply message created at the fake Discord's REST API, warm box.
    discord: Vec<Duration>,
    /// Turn request to the first event, warm box, straight through an attach.
    direct: Vec<Duration>,
    /// Accept to the first reply event of a conversation never seen before.
    cold: Vec<Duration>,
    /// The same without the router, straight through the sandbox.
    cold_direct: Vec<Duration>,
    /// The bridge's RSS once started, before any conversation, in KiB.
    rss_before: u64,
    /// The bridge's RSS with [`IDLE_CONVERSATIONS`] idle conversations, in KiB.
    rss_idle: u64,
    /// Live boxes when `rss_idle` was read.
    live_boxes: usize,
    /// RSS of each idle box's processes (init and agent), in KiB.
    agent_rss: Vec<u64>,
    /// RSS of the engine's per-container shim of each idle box, in KiB (when found).
    shim_rss: Vec<u64>,
    /// This process's CPU time over [`CPU_TURNS`] warm turns, and their wall time.
    cpu: CpuTime,
    cpu_wall: Duration,
    /// This process's CPU time over [`IDLE_WINDOW`] without messages.
    idle_cpu: CpuTime,
    /// Storage syscalls and writes of short warm turns.
    short: Storage,
    /// The same for turns whose message and reply are [`LONG_REPLY`] bytes.
    long: Storage,
}

/// What a traced phase of warm turns wrote and flushed.
struct Storage {
    turns: usize,
    syscalls: Syscalls,
    /// The kernel's count of bytes sent to storage over the phase (`write_bytes`).
    write_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLAWPEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("tasks") => {
            let dir = tempfile::tempdir().context("creating a temporary data directory")?;
            eprintln!("tasks: loading {} tasks", tasks::TASKS);
            let mut report = tasks::measure(dir.path()).await?;
            report.rss_reopened = tasks::reopened_rss(dir.path())?;
            tasks::print(&report);
            return Ok(());
        }
        Some("tasks-reopen") => return tasks::reopen_and_tick().await,
        Some("density") => {
            let max = std::env::args()
                .nth(2)
                .and_then(|a| a.parse().ok())
                .unwrap_or(3000);
            let load = load_average();
            let report = density::measure(max).await?;
            println!("`cargo run --release --example bench -- density {max}`, provider `echo` with `echo_delay_ms = 0`; load average at start {load}, at the end {}", load_average());
            println!();
            density::print(&report);
            return Ok(());
        }
        Some("load") => {
            let window = std::env::args()
                .nth(2)
                .and_then(|a| a.parse().ok())
                .map_or(load::WINDOW, Duration::from_secs);
            let load = load_average();
            let report = load::measure(window).await?;
            println!("`cargo run --release --example bench -- load {}`, provider `echo` with `echo_delay_ms = 0`; load average at start {load}, at the end {}", window.as_secs(), load_average());
            println!();
            load::print(&report);
            return Ok(());
        }
        Some("long") => {
            let load = load_average();
            let replies = long::measure().await?;
            println!("`cargo run --release --example bench -- long`, provider `echo`; load average at start {load}, at the end {}", load_average());
            println!();
            long::print(&replies);
            return Ok(());
        }
        Some("pool") => {
            let arg = |n: usize, default: usize| {
                std::env::args()
                    .nth(n)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(default)
            };
            let (samples, burst) = (arg(2, pool::NEW_SAMPLES), arg(3, pool::BURST));
            let load = load_average();
            let report = pool::measure(samples, burst).await?;
            println!("`cargo run --release --example bench -- pool {samples} {burst}`, provider `echo` with `echo_delay_ms = 0`; load average at start {load}, at the end {}", load_average());
            println!();
            pool::print(&report);
            return Ok(());
        }
        _ => {}
    }
    let run_started = Instant::now();
    // Other work on the host skews the latencies; the table says how busy it was.
    let load = load_average();
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    // New conversations here are cold starts; the pool has its own rows (`pool`).
    let config = echo_config(dir.path(), MAX_BOXES, 0);
    eprintln!("starting the bridge (builds the box image if it is missing)");
    let (fake_discord, discord_adapter) = discord::start().await?;
    let bridge = timeout(START_TIMEOUT, Bridge::start(&config, vec![discord_adapter]))
        .await
        .map_err(|_| anyhow!("the bridge did not start within {START_TIMEOUT:?}"))?
        .context("starting the bridge (is the static agent built? see the README)")?;
    let sandbox = bridge.router.sandbox().clone();
    let engine = engine_version(&sandbox).await;

    // Whatever happens while measuring, the boxes and volumes go away.
    let measured = measure(&bridge, &fake_discord, dir.path()).await;
    eprintln!("stopping the bridge and removing its boxes and volumes");
    retire(bridge, CLEANUP_TIMEOUT).await;
    let report = measured?;
    eprintln!("pool: new conversations with and without the warm pool");
    let pooled = pool::measure(pool::NEW_SAMPLES, pool::BURST).await?;
    report::print(
        &report,
        &engine,
        &load,
        &load_average(),
        run_started.elapsed(),
    );
    println!();
    pool::print(&pooled);
    Ok(())
}

/// Run every measurement in order on a started bridge whose data directory is `data_dir`.
/// Everything timed comes first; strace is attached only for the last phases.
async fn measure(
    bridge: &Bridge,
    fake_discord: &discord::FakeDiscord,
    data_dir: &Path,
) -> anyhow::Result<Report> {
    let rss_before = procfs::vm_rss_kib("self").context("reading this process's VmRSS")?;
    let names: Vec<String> = (0..IDLE_CONVERSATIONS)
        .map(|i| format!("bench-{i:03}"))
        .collect();

    // The first conversation is the warm one; its box starts with the first turn.
    eprintln!("warm: {WARM_UP} turns to warm up, then {WARM_SAMPLES} measured");
    let mut warm_conversation = Conversation::watch(bridge, &names[0]);
    let (mut warm, mut accept) = (Vec::new(), Vec::new());
    for n in 0..WARM_UP + WARM_SAMPLES {
        let timing = warm_conversation.turn(bridge, &format!("ping {n}")).await?;
        if n >= WARM_UP {
            warm.push(timing.first_reply);
            accept.push(timing.accept);
        }
    }

    eprintln!("discord: {WARM_UP} turns to warm up, then {WARM_SAMPLES} measured");
    let discord = discord::warm_turns(bridge, fake_discord, WARM_UP, WARM_SAMPLES).await?;

    // Conversations never seen: each creates its volume and box, then answers. Each is
    // followed by one started straight through the sandbox, so both see the same engine.
    eprintln!("cold: {COLD_SAMPLES} new conversations, and as many without the router");
    let (mut cold, mut cold_direct) = (Vec::new(), Vec::new());
    for (n, name) in names[1..=COLD_SAMPLES].iter().enumerate() {
        cold.push(first_turn(bridge, name).await?.first_reply);
        cold_direct.push(turn::direct_cold_start(bridge.router.sandbox(), n).await?);
    }

    // The rest, to reach the idle count; each box keeps running after its reply.
    eprintln!("idle: {IDLE_CONVERSATIONS} conversations with a running box");
    for name in &names[COLD_SAMPLES + 1..] {
        first_turn(bridge, name).await?;
    }
    // Let the last replies' buffers and tasks settle before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = procfs::vm_rss_kib("self").context("reading this process's VmRSS")?;
    let live_boxes = bridge.router.live_boxes();
    let (agent_rss, shim_rss) = procfs::box_memory(bridge.router.sandbox()).await?;

    eprintln!("direct: {WARM_SAMPLES} round trips through an attach, without the router");
    let direct = turn::direct_round_trips(bridge.router.sandbox(), WARM_UP, WARM_SAMPLES).await?;

    eprintln!("cpu: {IDLE_WINDOW:?} without messages, then {CPU_TURNS} warm turns");
    let before = CpuTime::now()?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu = CpuTime::now()?.since(before);
    let (before, started) = (CpuTime::now()?, Instant::now());
    for n in 0..CPU_TURNS {
        warm_conversation.turn(bridge, &format!("ping {n}")).await?;
    }
    let cpu = CpuTime::now()?.since(before);
    let cpu_wall = started.elapsed();

    eprintln!("storage: {TRACED_TURNS} short warm turns under strace");
    let short = traced(
        bridge,
        data_dir,
        &mut warm_conversation,
        TRACED_TURNS,
        |n| format!("ping {n}"),
    )
    .await?;
    eprintln!("storage: {TRACED_LONG_TURNS} warm turns of {LONG_REPLY} bytes under strace");
    let long = traced(
        bridge,
        data_dir,
        &mut warm_conversation,
        TRACED_LONG_TURNS,
        long_message,
    )
    .await?;

    Ok(Report {
        warm,
        discord,
        accept,
        direct,
        cold,
        cold_direct,
        rss_before,
        rss_idle,
        live_boxes,
        agent_rss,
        shim_rss,
        cpu,
        cpu_wall,
        idle_cpu,
        short,
        long,
    })
}

/// `turns` warm turns of `conversation` with strace attached, the `n`th saying `text(n)`.
async fn traced(
    bridge: &Bridge,
    data_dir: &Path,
    conversation: &mut Conversation,
    turns: usize,
    text: impl Fn(usize) -> String,
) -> anyhow::Result<Storage> {
    let texts: Vec<String> = (0..turns).map(text).collect();
    let trace = Trace::start(data_dir).await?;
    let written = procfs::storage_write_bytes()?;
    let mut ran = Ok(());
    for text in &texts {
        ran = conversation.turn(bridge, text).await.map(drop);
        if ran.is_err() {
            break;
        }
    }
    let written = procfs::storage_write_bytes()?.saturating_sub(written);
    // Detached before a failed turn is reported, so the rest of the run is not traced.
    let syscalls = trace.stop().await?;
    ran?;
    Ok(Storage {
        turns,
        syscalls,
        write_bytes: written,
    })
}

/// Message `n` of the long turns: exactly [`LONG_REPLY`] bytes of plain words.
fn long_message(n: usize) -> String {
    words(LONG_REPLY, &format!("long {n}"))
}

/// `start` and plain words after it, exactly `len` bytes, which the terminal shows
/// unchanged, so an echo can be compared byte for byte.
fn words(len: usize, start: &str) -> String {
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut text = start.to_string();
    for word in WORDS.iter().cycle() {
        if text.len() >= len {
            break;
        }
        text.push(' ');
        text.push_str(word);
    }
    text.truncate(len);
    if text.ends_with(' ') {
        text.pop();
        text.push('x');
    }
    text
}

/// A bridge's config for the bench: on `dir`, the echo provider with no delay, at most
/// `max_boxes` boxes and a pool of `warm_pool`.
fn echo_config(dir: &Path, max_boxes: usize, warm_pool: usize) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        provider: "echo".into(),
        echo_delay_ms: 0,
        max_boxes: Some(max_boxes),
        warm_pool,
        ..Config::default()
    }
}

/// A bridge with no platform adapter (the terminal's only), on `config`.
async fn start_bridge(config: &Config) -> anyhow::Result<Bridge> {
    timeout(START_TIMEOUT, Bridge::start(config, Vec::new()))
        .await
        .map_err(|_| anyhow!("the bridge did not start within {START_TIMEOUT:?}"))?
        .context("starting the bridge (is the static agent built? see the README)")
}

/// Stops `bridge` and removes its boxes and volumes, however its measurement went.
async fn retire(bridge: Bridge, within: Duration) {
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    match timeout(within, sandbox.remove_all()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("cleanup failed: {e}"),
        Err(_) => eprintln!("cleanup did not finish within {within:?}"),
    }
}

/// The load average over 1, 5 and 15 minutes.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The engine's version and kernel, for the machine line.
async fn engine_version(sandbox: &Sandbox) -> String {
    match sandbox.docker().version().await {
        Ok(v) => format!(
            "Docker Engine {} (API {}, kernel {})",
            v.version.as_deref().unwrap_or("?"),
            v.api_version.as_deref().unwrap_or("?"),
            v.kernel_version.as_deref().unwrap_or("?"),
        ),
        Err(e) => format!("Docker Engine of unknown version ({e})"),
    }
}
