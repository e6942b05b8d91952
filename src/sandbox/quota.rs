//! The workspace quota (`[box] workspace_mb`): a watchdog that measures every running box's
//! workspace and stops a box found over its quota, telling its chat why.
//!
//! Why a watchdog and not the engine: a workspace is a named volume of the engine's `local`
//! driver, a directory on the engine host's disk, and that driver takes no size option
//! except for `tmpfs` volumes, which live in memory and are lost when the box stops.
//! (`--storage-opt size` bounds only a container's own writable layer, which a box does not
//! write to: its root is read-only.) So the bridge measures instead, and a box can exceed
//! its quota by what it writes between two checks (`[box] workspace_check_secs`).
//!
//! The measurement runs in the box (the engine host's disk may be out of the bridge's reach,
//! in a VM or behind `DOCKER_HOST`), as the box user, so a hostile box may try to make it
//! slow or wrong. Hence:
//! - it counts allocated blocks (`du -sk`), so sparse files count for what they take;
//! - it adds files deleted but still held open by a process in the box, which `du` cannot
//!   see but which fill the disk all the same;
//! - it has a time limit, and a box whose workspace cannot be measured (a directory it made
//!   unreadable, a tree too big to walk in time, no room for one more process)
//!   [`UNMEASURED_LIMIT`] times in a row is stopped as well: measuring it is the condition
//!   of running it.
//!
//! A measurement is an exec, which costs the engine a `runc exec` and the box a shell and
//! its `du`: with many boxes, more than the replies they serve. Writing to a workspace costs
//! the writer CPU time, which the engine counts per box at the price of reading a file
//! (its stats). So a box that used less than [`IDLE_CPU`] since its last measurement (which
//! a box at rest does: its agent waits on its input) is not measured again that round; it
//! is measured at least every [`IDLE_ROUNDS`] rounds all the same, and whenever its CPU
//! time cannot be read. A box at work (a turn, or a job it left running) is measured every
//! round, as before.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::query_parameters::StatsOptions;
use clawpen_domain::ContainerId;
use futures_util::StreamExt;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Sandbox;

/// CPU time a box may use between two rounds and still count as at rest. Writing a few
/// megabytes costs more; an agent waiting on its input, next to nothing.
pub const IDLE_CPU: Duration = Duration::from_millis(20);

/// CPU time since a box's last reading that marks it plainly at work: likely at work at
/// the next round too, so its reading before a measurement serves as the next baseline.
const BUSY_CPU: Duration = Duration::from_millis(100);

/// A box at rest is still measured every this many rounds.
pub const IDLE_ROUNDS: u32 = 10;

/// Boxes whose CPU time is read at once.
const READ_AT_ONCE: usize = 16;

/// What the watchdog did so far, for tests and the curious.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    rounds: AtomicU64,
    measured: AtomicU64,
}

/// One box as the watchdog knows it.
#[derive(Debug, Default)]
struct Watched {
    /// Checks in a row that could not measure it.
    unmeasured: u32,
    /// Its CPU time (ns) at its last measurement, if it could be read: read right after
    /// it, or just before it for a box plainly at work (see [`BUSY_CPU`]).
    cpu: Option<u64>,
    /// Rounds since its last measurement.
    skipped: u32,
}

/// How long one box's measurement may take.
pub const MEASURE_TIMEOUT: Duration = Duration::from_secs(60);

/// Boxes measured at once, so that many boxes do not load the engine all together.
const MEASURED_AT_ONCE: usize = 4;

/// How many checks in a row may fail to measure a box before it is stopped.
pub const UNMEASURED_LIMIT: u32 = 3;

/// The marker of the measurement's result line, so that whatever else the box prints is
/// ignored.
const MARK: &str = "clawpen-workspace-kb";

/// The measurement, run with `sh -c` in the box: the workspace's allocated KiB, plus the
/// blocks of deleted files that processes in the box hold open there, then whether all of
/// it could be read: `du`'s exit status, or 1 when a process hides its open files (one
/// that made itself non-dumpable has a `/proc/PID/fd` the box user cannot read).
const MEASURE: &str = r#"used=$(du -sk /workspace 2>/dev/null); status=$?
kb=${used%%[!0-9]*}
kb=${kb:-0}
for dir in /proc/[0-9]*/fd; do
  if [ ! -r "$dir" ] && [ -e "$dir" ]; then status=1; fi
done
for fd in /proc/[0-9]*/fd/*; do
  case "$(readlink "$fd" 2>/dev/null)" in
    /workspace/*" (deleted)")
      if held=$(stat -L -c '%b*%B/1024' "$fd" 2>/dev/null); then kb=$((kb + $held)); fi;;
  esac
done
echo "clawpen-workspace-kb $kb $status""#;

/// What one measurement found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measured {
    /// The workspace takes this many KiB.
    Kib(u64),
    /// Parts could not be read; they take at least this many KiB.
    AtLeast(u64),
    /// Nothing usable came back.
    Unknown,
}

/// Read the measurement's output.
pub fn parse(output: &str) -> Measured {
    let Some(line) = output.lines().rev().find(|l| l.starts_with(MARK)) else {
        return Measured::Unknown;
    };
    let mut fields = line.split_whitespace().skip(1);
    let kib = fields.next().and_then(|f| f.parse::<u64>().ok());
    let status = fields.next().and_then(|f| f.parse::<i64>().ok());
    match (kib, status) {
        (Some(kib), Some(0)) => Measured::Kib(kib),
        (Some(kib), _) => Measured::AtLeast(kib),
        (None, _) => Measured::Unknown,
    }
}

/// What to do with a box after a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within its quota (or not measured yet often enough to act).
    Keep,
    /// Stop it; the text completes "the box was stopped: …".
    Stop(String),
}

/// The quota's decisions for one box, with no I/O: `unmeasured` counts the checks in a
/// row that could not measure it, and is updated here.
pub fn judge(limit_mb: u64, measured: Measured, unmeasured: &mut u32) -> Verdict {
    let limit_kib = limit_mb.saturating_mul(1024);
    let over = |kib: u64| {
        Verdict::Stop(format!(
            "its workspace is over the {limit_mb} MB limit ({} MB used). The next message \
             starts it again: have files deleted to make room, or ask the operator to raise \
             `[box] workspace_mb`",
            kib.div_ceil(1024)
        ))
    };
    match measured {
        Measured::Kib(kib) if kib > limit_kib => over(kib),
        Measured::Kib(_) => {
            *unmeasured = 0;
            Verdict::Keep
        }
        Measured::AtLeast(kib) if kib > limit_kib => over(kib),
        Measured::AtLeast(_) | Measured::Unknown => {
            *unmeasured += 1;
            if *unmeasured < UNMEASURED_LIMIT {
                return Verdict::Keep;
            }
            Verdict::Stop(format!(
                "its workspace could not be measured against the {limit_mb} MB limit \
                 {UNMEASURED_LIMIT} times in a row (a directory the box user cannot read, \
                 too many files to count within {} s, or no room for one more process)",
                MEASURE_TIMEOUT.as_secs()
            ))
        }
    }
}

impl Sandbox {
    /// How many rounds the workspace watchdog ran, and how many measurements it made.
    pub fn quota_counts(&self) -> (u64, u64) {
        let counts = &self.inner.quota;
        (
            counts.rounds.load(Ordering::Relaxed),
            counts.measured.load(Ordering::Relaxed),
        )
    }

    /// The CPU time a running box used so far, in nanoseconds, as the engine counts it;
    /// `None` when the engine does not say (a count of 0 is taken for not saying).
    async fn cpu_used(&self, container: &ContainerId) -> Option<u64> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.inner.docker.stats(container.as_str(), Some(options));
        let stats = stats.next().await?.ok()?;
        stats.cpu_stats?.cpu_usage?.total_usage.filter(|&ns| ns > 0)
    }

    /// Measure one running box's workspace.
    pub async fn measure_workspace(&self, container: &ContainerId) -> Measured {
        match self.run_in_box(container, MEASURE, MEASURE_TIMEOUT).await {
            Ok(ran) => parse(&ran.output),
            Err(e) => {
                tracing::debug!(r#box = %container, error = %e, "could not measure the workspace");
                Measured::Unknown
            }
        }
    }
}

/// Check every running box of this instance every `[box] workspace_check_secs` until
/// `stop` fires; does nothing when `[box] workspace_mb` is 0.
pub async fn watch(sandbox: Sandbox, stop: CancellationToken) {
    let limit_mb = sandbox.limits().workspace_mb;
    if limit_mb == 0 {
        return;
    }
    let mut ticks =
        tokio::time::interval(Duration::from_secs(sandbox.limits().workspace_check_secs));
    // A round that took longer than the interval is followed by the next, not by a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // What is known of each box; boxes no longer running drop out.
    let mut watched: HashMap<ContainerId, Watched> = HashMap::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let round = check_all(&sandbox, limit_mb, &mut watched);
        tokio::select! {
            _ = round => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One round: measure every running box that is at work or due (a few at a time) and stop
/// those over quota.
async fn check_all(sandbox: &Sandbox, limit_mb: u64, watched: &mut HashMap<ContainerId, Watched>) {
    sandbox.inner.quota.rounds.fetch_add(1, Ordering::Relaxed);
    let running: Vec<ContainerId> = match sandbox.list().await {
        Ok(boxes) => boxes
            .into_iter()
            .filter(|b| b.running)
            .map(|b| b.id)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not list the boxes to check their workspaces");
            return;
        }
    };
    let still_running: HashSet<&ContainerId> = running.iter().collect();
    watched.retain(|id, _| still_running.contains(id));
    let cpu: Vec<(ContainerId, Option<u64>)> = futures_util::stream::iter(running)
        .map(|id| async move {
            let cpu = sandbox.cpu_used(&id).await;
            (id, cpu)
        })
        .buffer_unordered(READ_AT_ONCE)
        .collect()
        .await;
    // The boxes to measure, each with its CPU time now when it is plainly at work.
    let mut due: Vec<(ContainerId, Option<u64>)> = Vec::new();
    for (id, now) in cpu {
        let known = watched.entry(id.clone()).or_default();
        let used = match (known.cpu, now) {
            (Some(then), Some(now)) => Some(Duration::from_nanos(now.saturating_sub(then))),
            _ => None,
        };
        if used.is_some_and(|used| used < IDLE_CPU) && known.skipped + 1 < IDLE_ROUNDS {
            known.skipped += 1;
        } else {
            due.push((
                id,
                now.filter(|_| used.is_some_and(|used| used >= BUSY_CPU)),
            ));
        }
    }
    let measured: Vec<(ContainerId, Measured, Option<u64>)> = futures_util::stream::iter(due)
        .map(|(id, busy)| async move {
            let measured = sandbox.measure_workspace(&id).await;
            // A box at work is likely at work next round too: its reading before the
            // measurement will do. Otherwise it is read again after, since the box's count
            // includes the measurement's own shell (tens of milliseconds), which would
            // otherwise make a box at rest look at work.
            let cpu = match busy {
                Some(now) => Some(now),
                None => sandbox.cpu_used(&id).await,
            };
            (id, measured, cpu)
        })
        .buffer_unordered(MEASURED_AT_ONCE)
        .collect()
        .await;
    sandbox
        .inner
        .quota
        .measured
        .fetch_add(measured.len() as u64, Ordering::Relaxed);
    for (id, measured, cpu) in measured {
        let known = watched.entry(id.clone()).or_default();
        (known.cpu, known.skipped) = (cpu, 0);
        let Verdict::Stop(reason) = judge(limit_mb, measured, &mut known.unmeasured) else {
            continue;
        };
        // Stopped in the meantime (idle, or its conversation ended it): nothing to do.
        if !matches!(sandbox.inspect(&id).await, Ok(Some(exit)) if exit.running) {
            continue;
        }
        tracing::warn!(r#box = %id, limit_mb, ?measured, "stopping a box over its workspace quota");
        watched.remove(&id);
        if let Err(e) = sandbox.stop_for(&id, reason).await {
            tracing::warn!(r#box = %id, error = %e, "could not stop a box over its workspace quota");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measurement_is_read_from_its_own_line() {
        assert_eq!(parse("clawpen-workspace-kb 1234 0\n"), Measured::Kib(1234));
        assert_eq!(
            parse("noise from a hostile profile\nclawpen-workspace-kb 77 1\n"),
            Measured::AtLeast(77)
        );
        assert_eq!(parse("clawpen-workspace-kb  0\n"), Measured::AtLeast(0));
        assert_eq!(parse(""), Measured::Unknown);
        assert_eq!(parse("clawpen-workspace-kb lots 0"), Measured::Unknown);
    }

    #[test]
    fn a_box_over_its_quota_is_stopped_with_the_numbers() {
        let mut unmeasured = 0;
        assert_eq!(
            judge(5, Measured::Kib(5 * 1024), &mut unmeasured),
            Verdict::Keep
        );
        let Verdict::Stop(reason) = judge(5, Measured::Kib(7 * 1024 + 1), &mut unmeasured) else {
            panic!("kept a box over its quota");
        };
        assert!(
            reason.starts_with("its workspace is over the 5 MB limit (8 MB used)"),
            "{reason}"
        );
        // A partial count already over the limit is enough.
        assert!(matches!(
            judge(5, Measured::AtLeast(6 * 1024), &mut unmeasured),
            Verdict::Stop(_)
        ));
    }

    #[test]
    fn a_box_that_cannot_be_measured_is_stopped_after_a_few_tries() {
        let mut unmeasured = 0;
        for _ in 1..UNMEASURED_LIMIT {
            assert_eq!(judge(5, Measured::Unknown, &mut unmeasured), Verdict::Keep);
        }
        // One good measurement starts the count again.
        assert_eq!(judge(5, Measured::Kib(1), &mut unmeasured), Verdict::Keep);
        assert_eq!(unmeasured, 0);
        for _ in 1..UNMEASURED_LIMIT {
            assert_eq!(
                judge(5, Measured::AtLeast(1), &mut unmeasured),
                Verdict::Keep
            );
        }
        let Verdict::Stop(reason) = judge(5, Measured::Unknown, &mut unmeasured) else {
            panic!("kept a box that cannot be measured");
        };
        assert!(reason.contains("could not be measured"), "{reason}");
    }
}
