//! Counting this process's storage syscalls for one phase of the bench: `strace -f`
//! attached to every thread of this process, writing one line per call to a file that is
//! read once strace has detached.
//!
//! The bridge runs in this process, so its store's writes and flushes are this process's
//! syscalls. Only calls on files in the data directory are counted (sockets, pipes and
//! eventfds are not storage). strace slows every traced call, so nothing is timed while
//! it is attached.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use tokio::time::Instant;

/// The syscalls that write file data or wait for it to reach the disk: sled 0.34 writes
/// its log with `pwrite64` and makes each flush stable with `sync_file_range` (write and
/// wait); its background flusher thread calls `fsync` on every tick.
const TRACED: &str =
    "trace=write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,sync_file_range,syncfs,sync,msync";

/// Of [`TRACED`], the calls that wait for data to reach the disk.
pub const SYNCS: [&str; 6] = [
    "fsync",
    "fdatasync",
    "sync_file_range",
    "syncfs",
    "sync",
    "msync",
];

/// The name sled 0.34 gives its periodic flusher thread (as /proc shows a thread's name).
const FLUSHER_THREAD: &str = "log flusher";

/// The longest wait for strace to attach to, or detach from, every thread.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

/// strace, attached to this process until [`Trace::stop`].
pub struct Trace {
    /// The strace process; taken by [`Trace::stop`], otherwise signalled on drop so that a
    /// failed run never leaves this process traced.
    child: Option<Child>,
    /// Where strace writes its lines; a directory of its own, outside the data directory.
    out: tempfile::TempDir,
    /// The data directory, as strace prints paths: canonical.
    data_dir: PathBuf,
    started: Instant,
}

/// What strace saw while attached.
#[derive(Debug, Default)]
pub struct Syscalls {
    /// Calls on the store's files by syscall name, made by any thread but sled's flusher:
    /// the tokio workers and blocking pool that run the turns, and sled's I/O threads.
    pub turn_path: BTreeMap<String, u64>,
    /// Calls on the store's files by syscall name, made by sled's periodic flusher thread
    /// (every 500 ms by default, whether or not anything happened).
    pub flusher: BTreeMap<String, u64>,
    /// Bytes that write calls put into the store's files (their return values), by file
    /// name relative to the data directory.
    pub stored: BTreeMap<String, u64>,
    /// How long strace was attached.
    pub traced_for: Duration,
}

impl Syscalls {
    /// Calls on the turn path of the named syscalls.
    pub fn turn_calls(&self, names: &[&str]) -> u64 {
        names.iter().filter_map(|n| self.turn_path.get(*n)).sum()
    }

    /// Calls by the flusher of the named syscalls.
    pub fn flusher_calls(&self, names: &[&str]) -> u64 {
        names.iter().filter_map(|n| self.flusher.get(*n)).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.stored.values().sum()
    }
}

impl Trace {
    /// Attach strace to every thread of this process, and to the threads started later.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Trace> {
        let data_dir = data_dir
            .canonicalize()
            .context("resolving the data directory")?;
        let out = tempfile::tempdir().context("creating a directory for strace's output")?;
        let child = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-y",
                "-s",
                "0",
                "-e",
                TRACED,
                "-e",
                "signal=none",
            ])
            .arg("-o")
            .arg(out.path().join("strace.txt"))
            .arg("-p")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting strace (apt-get install strace)")?;
        let tracer = child.id().to_string();
        let mut trace = Trace {
            child: Some(child),
            out,
            data_dir,
            started: Instant::now(),
        };
        wait_for_tracer(|t| t == tracer, "strace to attach").await?;
        trace.started = Instant::now();
        Ok(trace)
    }

    /// Detach strace and count what it saw.
    pub async fn stop(mut self) -> anyhow::Result<Syscalls> {
        let traced_for = self.started.elapsed();
        // Thread names before the threads may end; a blocking-pool thread that ended
        // already is not the flusher, which lives as long as the store.
        let names = thread_names();
        let mut child = self.child.take().context("strace already stopped")?;
        ensure!(interrupt(&child), "could not signal strace");
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .context("waiting for strace")?
            .context("waiting for strace")?;
        wait_for_tracer(|t| t == "0", "strace to detach").await?;
        let text = std::fs::read_to_string(self.out.path().join("strace.txt"))
            .context("reading strace's output")?;
        Ok(count(&text, &self.data_dir, &names, traced_for))
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if interrupt(&child) {
                let _ = child.wait();
            }
        }
    }
}

/// Send strace SIGINT, which makes it detach cleanly and write out what it holds.
fn interrupt(strace: &Child) -> bool {
    Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Wait until every thread's `TracerPid` passes `ok`.
async fn wait_for_tracer(ok: impl Fn(&str) -> bool, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let tasks = std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")?;
        let all = tasks.flatten().all(|task| {
            let status = task.path().join("status");
            // A thread that ended meanwhile has no status; it does not matter.
            super::procfs::proc_field(&status.to_string_lossy(), "TracerPid").is_none_or(|t| ok(&t))
        });
        if all {
            // Attached threads are traced from their next syscall; give the last one time
            // to get there.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every live thread's name by thread id.
fn thread_names() -> HashMap<u32, String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            Some((tid, name.trim().to_string()))
        })
        .collect()
}

/// Count strace's lines (`TID name(fd</path>, ...) = result`, with `-f -y`).
fn count(
    text: &str,
    data_dir: &Path,
    names: &HashMap<u32, String>,
    traced_for: Duration,
) -> Syscalls {
    let mut counted = Syscalls {
        traced_for,
        ..Syscalls::default()
    };
    // A call interrupted by another thread's line comes in two: "... <unfinished ...>",
    // then "<... name resumed>...".
    let mut unfinished: HashMap<u32, String> = HashMap::new();
    for line in text.lines() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let call = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            unfinished.insert(tid, head.trim_end().to_string());
            continue;
        } else if let Some(resumed) = rest.strip_prefix("<... ") {
            let (Some(head), Some((_, tail))) =
                (unfinished.remove(&tid), resumed.split_once("resumed>"))
            else {
                continue;
            };
            format!("{head}{tail}")
        } else {
            rest.to_string()
        };
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        // `sync()` has no file; every other call names its file as `fd</path>`.
        let file = args
            .split_once('<')
            .and_then(|(_, p)| p.split_once('>'))
            .map(|(path, _)| Path::new(path));
        let in_store = file.and_then(|f| f.strip_prefix(data_dir).ok());
        if in_store.is_none() && name != "sync" {
            continue;
        }
        let by_thread = if names.get(&tid).map(String::as_str) == Some(FLUSHER_THREAD) {
            &mut counted.flusher
        } else {
            &mut counted.turn_path
        };
        *by_thread.entry(name.to_string()).or_default() += 1;
        let written = call
            .rsplit_once(" = ")
            .and_then(|(_, r)| r.split_whitespace().next()?.parse::<u64>().ok());
        if let (false, Some(file), Some(bytes)) = (SYNCS.contains(&name), in_store, written) {
            *counted
                .stored
                .entry(file.to_string_lossy().into_owned())
                .or_default() += bytes;
        }
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_store_calls_by_thread_and_joins_interrupted_lines() {
        let text = "\
10 pwrite64(7</data/db>, \"\"..., 100, 0) = 100
11 write(5<anon_inode:[eventfd]>, \"\"..., 8) = 8
10 sync_file_range(7</data/db>, 0, 100, SYNC_FILE_RANGE_WAIT_BEFORE <unfinished ...>
12 fsync(7</data/db>)                = 0
10 <... sync_file_range resumed>)   = 0
13 write(9</data/snap.0001>, \"\"..., 20) = 20
";
        let names = [(12, FLUSHER_THREAD.to_string())].into_iter().collect();
        let counted = count(text, Path::new("/data"), &names, Duration::ZERO);
        assert_eq!(counted.turn_calls(&["pwrite64"]), 1);
        assert_eq!(counted.turn_calls(&SYNCS), 1);
        assert_eq!(counted.flusher_calls(&["fsync"]), 1);
        assert_eq!(counted.stored["db"], 100);
        assert_eq!(counted.stored["snap.0001"], 20);
        assert_eq!(counted.stored_bytes(), 120);
        // The eventfd write is not storage.
        assert_eq!(counted.turn_calls(&["write"]), 1);
    }
}
