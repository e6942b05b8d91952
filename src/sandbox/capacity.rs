//! How many boxes the engine's machine can hold, for `max_boxes` when the operator sets
//! none.
//!
//! Measured on the development machine (`cargo run --release --example bench -- density`):
//! an idle box takes about 6 MiB of the host's memory (its engine shim, its init and agent,
//! the kernel's share) and about 16 of its processes and threads (mostly the shim's). The
//! first limit met is `kernel.pid_max` where it is the old default of 32,768 (the host runs
//! out of pids near 2,000 boxes, and then nothing on it can start a process), and memory
//! after that. The estimate leaves room on both for what boxes do when they work: half the
//! engine's memory at [`BOX_MEMORY`] a box, and 60% of the pids at [`BOX_TASKS`].

/// Host memory counted per box: about 2.5 times what an idle one takes.
pub const BOX_MEMORY: u64 = 16 * 1024 * 1024;
/// Host processes and threads counted per box: a little above an idle one's.
pub const BOX_TASKS: u64 = 20;
/// Used when the engine does not say how much memory it has.
pub const FALLBACK: usize = 32;
/// Never fewer than this (a small machine still serves a small team).
const MIN: usize = 8;
/// Never more than this: past it, the bridge's own share (an attach stream and a few tasks
/// per box) is untried.
const MAX: usize = 10_000;

/// The estimate and how it was made, for the log and `clawpen doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub boxes: usize,
    pub why: String,
}

/// The boxes a machine with `memory` bytes (the engine's `MemTotal`) and `pid_max` (when
/// known: the engine runs on this host) can hold.
pub fn estimate(memory: Option<u64>, pid_max: Option<u64>) -> Capacity {
    let Some(memory) = memory.filter(|&m| m > 0) else {
        return Capacity {
            boxes: FALLBACK,
            why: format!("the engine did not say how much memory it has; {FALLBACK}"),
        };
    };
    let by_memory = memory / 2 / BOX_MEMORY;
    let gib = memory as f64 / (1024.0 * 1024.0 * 1024.0);
    let (bound, why) = match pid_max {
        Some(pids) if pids * 6 / 10 / BOX_TASKS < by_memory => (
            pids * 6 / 10 / BOX_TASKS,
            format!("kernel.pid_max {pids} (60% at {BOX_TASKS} per box; raise it to hold more)"),
        ),
        _ => (
            by_memory,
            format!(
                "{gib:.1} GiB of engine memory (half at {} MiB per box)",
                BOX_MEMORY >> 20
            ),
        ),
    };
    let boxes = usize::try_from(bound).unwrap_or(MAX).clamp(MIN, MAX);
    Capacity {
        boxes,
        why: format!("{boxes} from {why}"),
    }
}

/// This host's `kernel.pid_max`.
pub fn local_pid_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn the_estimate_takes_the_lower_of_memory_and_pids_within_bounds() {
        // 24 GiB and the old pid_max: memory allows 768, pids 983.
        let c = estimate(Some(24 * GIB), Some(32_768));
        assert_eq!(c.boxes, 768);
        assert!(c.why.contains("GiB of engine memory"), "{}", c.why);
        // 64 GiB: pids are the limit.
        let c = estimate(Some(64 * GIB), Some(32_768));
        assert_eq!(c.boxes, 983);
        assert!(c.why.contains("pid_max 32768"), "{}", c.why);
        // A raised pid_max leaves memory as the limit; an unknown one is not counted.
        assert_eq!(estimate(Some(64 * GIB), Some(4_194_304)).boxes, 2048);
        assert_eq!(estimate(Some(64 * GIB), None).boxes, 2048);
        // Small and huge machines stay within bounds; no figure gives the old default.
        assert_eq!(estimate(Some(GIB / 4), None).boxes, MIN);
        assert_eq!(estimate(Some(4096 * GIB), None).boxes, MAX);
        assert_eq!(estimate(None, Some(32_768)).boxes, FALLBACK);
        assert_eq!(estimate(Some(0), None).boxes, FALLBACK);
    }
}
