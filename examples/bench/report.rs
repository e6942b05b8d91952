//! The Markdown table the bench prints, and the statistics in it.

use std::time::Duration;

use super::procfs::{clock_ticks, proc_kib, CpuTime};
use super::trace::SYNCS;
use super::{
    Report, Storage, COLD_SAMPLES, CPU_TURNS, IDLE_CONVERSATIONS, IDLE_WINDOW, LONG_REPLY,
};

/// One latency row: what, how many samples, p50 and p99.
pub fn latency_row(what: &str, samples: &[Duration]) {
    println!(
        "| {what} | {} | {} | {} |",
        samples.len(),
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0))
    );
}

/// Print the whole table to stdout.
pub fn print(r: &Report, engine: &str, load: &str, load_end: &str, took: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = proc_kib("/proc/meminfo", "MemTotal").map_or("?".into(), |kib| {
        format!("{:.0} GiB", kib as f64 / (1024.0 * 1024.0))
    });
    let row = latency_row;
    println!("`cargo run --release --example bench`, provider `echo` with `echo_delay_ms = 0`");
    println!();
    println!(
        "Machine: {cores} cores ({}), {memory} RAM, {engine}; load average at start {load}, at the end {load_end}. The run took {:.0} s.",
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
        "Warm box, Discord: `accept` → first reply message created at the (fake, loopback) REST API",
        &r.discord,
    );
    row(
        "Warm box without the router: turn written to the attach → first event",
        &r.direct,
    );
    row(
        "Cold start: new conversation (volume and box created) → first reply message",
        &r.cold,
    );
    row(
        "Cold start without the router: volume and box created, started, attached, turn written → first event",
        &r.cold_direct,
    );
    println!();
    let ratio = |of: &[Duration], floor: &[Duration]| {
        percentile(of, 50.0).as_secs_f64() / percentile(floor, 50.0).as_secs_f64().max(1e-9)
    };
    println!(
        "Against the engine's floor, p50: a warm turn is {:.2}× the direct-attach row ({:.2}× through Discord), a cold start {:.2}× the cold start without the router.",
        ratio(&r.warm, &r.direct),
        ratio(&r.discord, &r.direct),
        ratio(&r.cold, &r.cold_direct)
    );
    println!();
    print_memory(r);
    println!();
    print_cpu(r.cpu, r.cpu_wall, r.idle_cpu);
    println!();
    print_storage(&r.short, &r.long);
    println!();
    println!(
        "p99 is nearest-rank, so for N = {COLD_SAMPLES} it is the slowest sample. The one-way time to the box's stdin is not observable without instrumenting the router; the direct-attach row bounds what the engine and the agent take of the round trip."
    );
}

fn print_memory(r: &Report) {
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
        "| One idle box: its init and clawpen-agent (median of {} boxes; max {}) | {} |",
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
}

fn print_cpu(cpu: CpuTime, wall: Duration, idle: CpuTime) {
    let hz = clock_ticks();
    let per_thousand = |d: Duration| d.as_secs_f64() * 1000.0 / CPU_TURNS as f64;
    let (user, sys, total) = cpu.split(hz);
    println!("| CPU time of the bridge's process (user + sys, /proc/self/stat) | Value |");
    println!("|---|---|");
    println!(
        "| Per 1,000 messages: {CPU_TURNS} sequential short turns on one warm box, {:.1} s of wall time | {:.2} s (user {:.2} s, sys {:.2} s) |",
        wall.as_secs_f64(),
        per_thousand(total),
        per_thousand(user),
        per_thousand(sys),
    );
    let (_, _, idle) = idle.split(hz);
    println!(
        "| For comparison: {} s with no messages, the same boxes attached | {:.0} ms ({:.1} ms per second; /proc counts in {} ms ticks) |",
        IDLE_WINDOW.as_secs(),
        idle.as_secs_f64() * 1000.0,
        idle.as_secs_f64() * 1000.0 / IDLE_WINDOW.as_secs_f64(),
        1000 / hz.max(1),
    );
}

fn print_storage(short: &Storage, long: &Storage) {
    let kib = LONG_REPLY / 1024;
    println!(
        "| Storage per warm turn (strace -f attached; /proc/self/io) | Short message (\"ping N\") | {kib} KiB message and its {kib} KiB echo reply |"
    );
    println!("|---|---|---|");
    let row = |what: &str, value: &dyn Fn(&Storage) -> String| {
        println!("| {what} | {} | {} |", value(short), value(long));
    };
    let per_turn = |s: &Storage, n: u64| n as f64 / s.turns as f64;
    row("Turns traced", &|s| s.turns.to_string());
    row(
        "fsync-class calls on the turn's path (sync_file_range + fsync + fdatasync + …)",
        &|s| format!("{:.1}", per_turn(s, s.syscalls.turn_calls(&SYNCS))),
    );
    row("… of which sync_file_range (sled's flush)", &|s| {
        format!(
            "{:.1}",
            per_turn(s, s.syscalls.turn_calls(&["sync_file_range"]))
        )
    });
    row(
        "sled's flusher thread meanwhile (time-based, not per turn): fsync-class calls per second",
        &|s| {
            format!(
                "{:.1}",
                s.syscalls.flusher_calls(&SYNCS) as f64 / s.syscalls.traced_for.as_secs_f64()
            )
        },
    );
    row(
        "Bytes written to the store's files (write syscalls' results, all threads)",
        &|s| size(per_turn(s, s.syscalls.stored_bytes())),
    );
    row(
        "Bytes the kernel counted as sent to storage (`write_bytes`, whole pages)",
        &|s| size(per_turn(s, s.write_bytes)),
    );
    row("Write calls on the store's files (all threads)", &|s| {
        let writes: u64 = s
            .syscalls
            .turn_path
            .iter()
            .chain(&s.syscalls.flusher)
            .filter(|(name, _)| !SYNCS.contains(&name.as_str()))
            .map(|(_, n)| n)
            .sum();
        format!("{:.1}", per_turn(s, writes))
    });
    row("Store files written (bytes per turn)", &|s| {
        s.syscalls
            .stored
            .iter()
            .map(|(file, bytes)| format!("{file} {}", size(per_turn(s, *bytes))))
            .collect::<Vec<_>>()
            .join(", ")
    });
}

/// The nearest-rank percentile `p` (0 to 100) of `samples`.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
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

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Bytes in KiB, or in MiB from 1 MiB up.
fn size(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}
