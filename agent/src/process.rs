//! Child processes of the agent: process groups that die together, and reaping.
//!
//! Shell commands and the harness run in process groups of their own, so that everything
//! they start can be stopped at once: a [`Group`] kills its group when dropped, which makes
//! a timeout, a `Cancel` and the end of a turn all stop the whole tree.
//!
//! The agent is PID 1 in the box, so orphans of background jobs become its children, and
//! a zombie each when they exit (eating into the box's pids limit). [`Reaper`] remembers
//! the groups of finished commands and reaps what is left of them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};
use tokio::io::AsyncReadExt;
use tokio::process::Child;

/// How long to keep reading after a child exits: a background job that keeps the output
/// pipe open must not make the command look like it hangs.
pub const AFTER_EXIT: Duration = Duration::from_millis(200);

/// How many finished process groups the reaper remembers; past it the oldest is forgotten
/// (a zombie or two at worst, gone when the box restarts).
const GROUPS_KEPT: usize = 64;

/// Kills a process group when dropped, unless disarmed.
#[derive(Debug)]
pub struct Group {
    pid: Option<Pid>,
    reaper: Reaper,
}

impl Group {
    /// The group led by `child` (spawned with `process_group(0)`).
    pub fn new(child: &Child, reaper: &Reaper) -> Self {
        Group {
            pid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw),
            reaper: reaper.clone(),
        }
    }

    /// The leader finished on its own and was waited for; leave its background jobs alone.
    pub fn disarm(&mut self) {
        if let Some(pid) = self.pid.take() {
            self.reaper.watch(pid);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // Already gone is fine; there is nobody to tell about other errors.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            self.reaper.watch(pid);
        }
    }
}

/// Reaps exited processes of finished process groups (see the module comment).
#[derive(Clone, Debug, Default)]
pub struct Reaper {
    /// Groups whose leader has been (or is being) waited for; a std mutex, never held
    /// across an await.
    groups: Arc<Mutex<Vec<Pid>>>,
}

impl Reaper {
    fn watch(&self, pid: Pid) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if groups.len() >= GROUPS_KEPT {
            groups.remove(0);
        }
        groups.push(pid);
    }

    /// Reap every exited process left in the remembered groups and forget empty groups.
    /// Only groups whose leader is no longer awaited are remembered, so this never takes
    /// an exit status tokio is waiting for.
    pub fn reap(&self) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.retain(|pid| {
            while let Ok(Some(_)) = rustix::process::waitpgid(*pid, WaitOptions::NOHANG) {}
            rustix::process::test_kill_process_group(*pid).is_ok()
        });
    }
}

/// Read from a pipe that may already be closed (`None` pends forever, so a `select!` skips
/// it). Returns `None` at end of file or on error.
pub async fn read_some<R: AsyncReadExt + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    let Some(reader) = pipe else {
        return std::future::pending().await;
    };
    match reader.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}
