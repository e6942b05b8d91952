//! Child processes of the agent: process groups that die together.
//!
//! Shell commands and the harness run in process groups of their own, so that everything
//! they start can be stopped at once: a [`Group`] kills its group when dropped, which makes
//! a timeout, a `Cancel` and the end of a turn all stop the whole tree.
//!
//! Orphans of background jobs are not the agent's to reap: in a box the agent runs under
//! the box's init (`init`), which reaps them.

use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::process::Child;

/// How long to keep reading after a child exits: a background job that keeps the output
/// pipe open must not make the command look like it hangs.
pub const AFTER_EXIT: Duration = Duration::from_millis(200);

/// Kills a process group when dropped, unless disarmed.
#[derive(Debug)]
pub struct Group {
    pid: Option<Pid>,
}

impl Group {
    /// The group led by `child` (spawned with `process_group(0)`).
    pub fn new(child: &Child) -> Self {
        Group {
            pid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw),
        }
    }

    /// The leader finished on its own and was waited for; leave its background jobs alone.
    pub fn disarm(&mut self) {
        self.pid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // Already gone is fine; there is nobody to tell about other errors.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
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
