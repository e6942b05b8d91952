//! The numbers in the README: what the bridge adds to a message's trip to its box, how long
//! a new conversation's box takes to answer, and what idle conversations cost in memory.
//!
//! Run with `cargo run --release --example bench`, as root (it reads the boxes' memory in
//! /proc on the engine's host) after building the static agent as for the tests. It starts
//! a bridge in this process on a temporary data directory, with the echo provider and no
//! delay between chunks, so every number is the bridge, the engine and the agent, never a
//! model. It prints a Markdown table to stdout (progress goes to stderr) and removes every
//! box and volume it created, also when a measurement fails.
//!
//! Latencies are round trips: from handing a message to the router to the first reply
//! operation reaching the terminal adapter. The one-way time to the box's stdin is not
//! observable from outside the router, so the same round trip is also measured straight
//! through an attach, without the router, to show how much of it is the engine and agent.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use clawpen::adapters::terminal::{TerminalEvent, PLATFORM};
use clawpen::adapters::{Accepted, ConversationKey, InboundSink};
use clawpen::config::Config;
use clawpen::control::terminal_inbound;
use clawpen::daemon::Bridge;
use clawpen::protocol::{EventBody, FromAgent, ToAgent, VERSION};
use clawpen::sandbox::{BoxConn, BoxOutput, Sandbox};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

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
/// The longest wait for one complete reply; a box that takes longer fails the run.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// Turn request to the first event, warm box, straight through an attach.
    direct: Vec<Duration>,
    /// Accept to the first reply event of a conversation never seen before.
    cold: Vec<Duration>,
    /// The bridge's RSS once started, before any conversation, in KiB.
    rss_before: u64,
    /// The bridge's RSS with [`IDLE_CONVERSATIONS`] idle conversations, in KiB.
    rss_idle: u64,
    /// Live boxes when `rss_idle` was read.
    live_boxes: usize,
    /// RSS of each idle box's agent process, in KiB.
    agent_rss: Vec<u64>,
    /// RSS of the engine's per-container shim of each idle box, in KiB (when found).
    shim_rss: Vec<u64>,
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
    let run_started = Instant::now();
    // Other work on the host skews the tail; the table says how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        provider: "echo".into(),
        echo_delay_ms: 0,
        max_boxes: MAX_BOXES,
        ..Config::default()
    };
    eprintln!("starting the bridge (builds the box image if it is missing)");
    let bridge = timeout(START_TIMEOUT, Bridge::start(&config, Vec::new()))
        .await
        .map_err(|_| anyhow!("the bridge did not start within {START_TIMEOUT:?}"))?
        .context("starting the bridge (is the static agent built? see the README)")?;
    let sandbox = bridge.router.sandbox().clone();
    let engine = engine_version(&sandbox).await;

    // Whatever happens while measuring, the boxes and volumes go away.
    let measured = measure(&bridge).await;
    eprintln!("stopping the bridge and removing its boxes and volumes");
    bridge.shutdown().await;
    match timeout(CLEANUP_TIMEOUT, sandbox.remove_all()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("cleanup failed: {e}"),
        Err(_) => eprintln!("cleanup did not finish within {CLEANUP_TIMEOUT:?}"),
    }
    let report = measured?;
    print_report(&report, &engine, &load, run_started.elapsed());
    Ok(())
}

/// Run every measurement in order on a started bridge.
async fn measure(bridge: &Bridge) -> anyhow::Result<Report> {
    let rss_before = vm_rss_kib("self").context("reading this process's VmRSS")?;
    let names: Vec<String> = (0..IDLE_CONVERSATIONS)
        .map(|i| format!("bench-{i:03}"))
        .collect();

    // The first conversation is the warm one; its box starts with the first turn.
    eprintln!("warm: {WARM_UP} turns to warm up, then {WARM_SAMPLES} measured");
    let key = ConversationKey::new(PLATFORM, names[0].as_str());
    let mut events = bridge.terminal.watch(&key);
    let (mut warm, mut accept) = (Vec::new(), Vec::new());
    for n in 0..WARM_UP + WARM_SAMPLES {
        let timing = turn(bridge, &key, &mut events, n).await?;
        if n >= WARM_UP {
            warm.push(timing.first_reply);
            accept.push(timing.accept);
        }
    }
    drop(events);

    // Conversations never seen: each creates its volume and box, then answers.
    eprintln!("cold: {COLD_SAMPLES} new conversations");
    let mut cold = Vec::new();
    for name in &names[1..=COLD_SAMPLES] {
        cold.push(first_turn(bridge, name).await?.first_reply);
    }

    // The rest, to reach the idle count; each box keeps running after its reply.
    eprintln!("idle: {IDLE_CONVERSATIONS} conversations with a running box");
    for name in &names[COLD_SAMPLES + 1..] {
        first_turn(bridge, name).await?;
    }
    // Let the last replies' buffers and tasks settle before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = vm_rss_kib("self").context("reading this process's VmRSS")?;
    let live_boxes = bridge.router.live_boxes();
    let (agent_rss, shim_rss) = box_memory(bridge.router.sandbox()).await?;

    eprintln!("direct: {WARM_SAMPLES} round trips through an attach, without the router");
    let direct = direct_round_trips(bridge.router.sandbox()).await?;

    Ok(Report {
        warm,
        accept,
        direct,
        cold,
        rss_before,
        rss_idle,
        live_boxes,
        agent_rss,
        shim_rss,
    })
}

/// The times of one turn, from just before `accept`.
struct Timing {
    accept: Duration,
    first_reply: Duration,
}

/// The first turn of a conversation, watched only for that turn.
async fn first_turn(bridge: &Bridge, name: &str) -> anyhow::Result<Timing> {
    let key = ConversationKey::new(PLATFORM, name);
    let mut events = bridge.terminal.watch(&key);
    turn(bridge, &key, &mut events, 0)
        .await
        .with_context(|| format!("first turn of {key}"))
}

/// Send message `n` of a conversation and wait for its whole reply; checks that the reply
/// is the echo, so an error reply (a box that failed to start) never passes for a fast
/// answer. `n` makes the message id unique in its conversation, where a repeated id would
/// be dropped as a redelivery.
async fn turn(
    bridge: &Bridge,
    key: &ConversationKey,
    events: &mut mpsc::Receiver<TerminalEvent>,
    n: usize,
) -> anyhow::Result<Timing> {
    let text = format!("ping {n}");
    let mut message = terminal_inbound(key, &text);
    message.id = format!("bench-{n}");
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let started = Instant::now();
    let accepted = bridge.router.accept(message).await?;
    let accept = started.elapsed();
    ensure!(accepted == Accepted::Stored, "message {n} was not stored");
    let mut first_reply = None;
    let mut shown = String::new();
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| anyhow!("no complete reply within {REPLY_TIMEOUT:?}"))?
            .context("the terminal watch closed")?;
        match event {
            TerminalEvent::Send { text, .. } => {
                first_reply.get_or_insert_with(|| started.elapsed());
                shown = text;
            }
            TerminalEvent::Edit { text, .. } => shown = text,
            TerminalEvent::Finished => break,
            // Status lines (and whatever the terminal shows in future) are not reply text.
            _ => {}
        }
    }
    ensure!(shown == text, "expected the echo {text:?}, got {shown:?}");
    let first_reply = first_reply.context("the reply finished without a message")?;
    Ok(Timing {
        accept,
        first_reply,
    })
}

/// The same warm round trip without the router: a box of its own, attached directly,
/// given turns and acknowledging every event as the router does.
async fn direct_round_trips(sandbox: &Sandbox) -> anyhow::Result<Vec<Duration>> {
    let key = ConversationKey::new(PLATFORM, "bench-direct");
    let started = sandbox.ensure_box(&key).await?;
    let mut conn = sandbox.attach(&started.container).await?;
    conn.send(&ToAgent::Resume {
        version: VERSION,
        after: 0,
    })
    .await?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !matches!(
        next_output(&mut conn, deadline).await?,
        BoxOutput::Message(FromAgent::State { .. })
    ) {}
    let mut samples = Vec::new();
    for n in 0..WARM_UP + WARM_SAMPLES {
        let turn = format!("direct-{n}");
        // Built from its wire form, so optional fields added to the protocol later keep
        // their defaults here instead of breaking this example.
        let request: ToAgent = serde_json::from_value(serde_json::json!({
            "type": "turn",
            "turn": turn,
            "messages": [{ "id": turn, "sender": "bench", "at": 0, "text": format!("ping {n}") }],
        }))
        .context("building a turn request")?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let sent = Instant::now();
        conn.send(&request).await?;
        let mut first = None;
        loop {
            let BoxOutput::Message(FromAgent::Event(event)) =
                next_output(&mut conn, deadline).await?
            else {
                continue;
            };
            if event.turn == turn {
                first.get_or_insert_with(|| sent.elapsed());
            }
            conn.send(&ToAgent::Ack { seq: event.seq }).await?;
            if event.turn == turn && event.body == EventBody::Final {
                break;
            }
        }
        if n >= WARM_UP {
            samples.push(first.context("the turn ended without an event")?);
        }
    }
    Ok(samples)
}

/// The next output of a directly attached box, before `deadline`.
async fn next_output(conn: &mut BoxConn, deadline: Instant) -> anyhow::Result<BoxOutput> {
    match tokio::time::timeout_at(deadline, conn.output.recv()).await {
        Err(_) => bail!("the box did not answer within {REPLY_TIMEOUT:?}"),
        Ok(None | Some(BoxOutput::Closed)) => bail!("the box closed its output"),
        Ok(Some(output)) => Ok(output),
    }
}

/// RSS of every running box's agent and of its engine shim, from the host's /proc.
async fn box_memory(sandbox: &Sandbox) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let (mut agents, mut shims) = (Vec::new(), Vec::new());
    for info in sandbox.list().await?.into_iter().filter(|b| b.running) {
        let inspected = sandbox
            .docker()
            .inspect_container(&info.id, None)
            .await
            .with_context(|| format!("inspecting box {}", info.name))?;
        let pid = inspected
            .state
            .and_then(|s| s.pid)
            .filter(|pid| *pid > 0)
            .with_context(|| format!("box {} has no host pid", info.name))?
            .to_string();
        agents.push(vm_rss_kib(&pid).with_context(|| {
            format!(
                "reading /proc/{pid}/status of box {} (run as root on the engine's host)",
                info.name
            )
        })?);
        // The agent is the box's pid 1; its host parent is the engine's per-container shim.
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
fn proc_field(path: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

/// A `Name: N kB` field of a /proc file, in KiB.
fn proc_kib(path: &str, field: &str) -> Option<u64> {
    proc_field(path, field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// VmRSS of a process (`self` or a pid), in KiB.
fn vm_rss_kib(pid: &str) -> Option<u64> {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS")
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

/// The nearest-rank percentile `p` (0 to 100) of `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

fn print_report(r: &Report, engine: &str, load: &str, took: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = proc_kib("/proc/meminfo", "MemTotal").map_or("?".into(), |kib| {
        format!("{:.0} GiB", kib as f64 / (1024.0 * 1024.0))
    });
    let row = |what: &str, samples: &[Duration]| {
        println!(
            "| {what} | {} | {} | {} |",
            samples.len(),
            ms(percentile(samples, 50.0)),
            ms(percentile(samples, 99.0))
        );
    };
    println!("`cargo run --release --example bench`, provider `echo` with `echo_delay_ms = 0`");
    println!();
    println!(
        "Machine: {cores} cores ({}), {memory} RAM, {engine}; load average at start {load}. The run took {:.0} s.",
        cpu_model(),
        took.as_secs_f64()
    );
    println!();
    println!("| Latency (round trip, sequential) | N | p50 | p99 |");
    println!("|---|---|---|---|");
    row(
        "Warm box: `accept` → first reply message at the adapter",
        &r.warm,
    );
    row(
        "… of which `accept` (message stored durably, handed to the actor)",
        &r.accept,
    );
    row(
        "Warm box without the router: turn written to the attach → first event",
        &r.direct,
    );
    row(
        "Cold start: new conversation (volume and box created) → first reply message",
        &r.cold,
    );
    println!();
    println!("| Memory (VmRSS) | Value |");
    println!("|---|---|");
    println!(
        "| Bridge, started, no conversations | {} |",
        mib(r.rss_before)
    );
    let per = r.rss_idle.saturating_sub(r.rss_before) / IDLE_CONVERSATIONS as u64;
    println!(
        "| Bridge, {IDLE_CONVERSATIONS} idle conversations ({} boxes running and attached) | {} (≈{per} KiB per conversation) |",
        r.live_boxes,
        mib(r.rss_idle)
    );
    println!(
        "| One idle clawpen-agent (median of {} boxes; max {}) | {} |",
        r.agent_rss.len(),
        mib(r.agent_rss.iter().copied().max().unwrap_or_default()),
        mib(median(&r.agent_rss))
    );
    if !r.shim_rss.is_empty() {
        println!(
            "| Engine's containerd-shim per box (median of {}) | {} |",
            r.shim_rss.len(),
            mib(median(&r.shim_rss))
        );
    }
    println!();
    println!(
        "p99 is nearest-rank, so for N = {COLD_SAMPLES} it is the slowest sample. The one-way time to the box's stdin is not observable without instrumenting the router; the direct-attach row bounds what the engine and the agent take of the round trip."
    );
}
