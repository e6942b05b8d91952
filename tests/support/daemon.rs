//! The real `clawpen run` as a child process, for the tests that SIGKILL it at random
//! moments and start it again (`crash.rs`, `schedule_kill.rs`): the process, the seed of a
//! run (printed, and repeated by `CLAWPEN_CRASH_SEED`), the kill loop, and the logs of
//! every start for when a run goes wrong.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Cleanup;

/// How often the kill loop's `work` runs while it waits for the next kill.
const WORK_EVERY: Duration = Duration::from_millis(25);

/// How long a start may take before [`Daemon::terminate`] stops it anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `clawpen run` child process, killed when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `clawpen run` on the data directory `data` (no config file) with `env`
    /// besides; its log goes to `daemon-<run>.log` there.
    pub fn start(data: &Path, run: u32, env: &[(&str, String)]) -> Self {
        let log_file = log_path(data, run);
        let log = std::fs::File::create(&log_file).unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_clawpen"))
            .arg("run")
            .env_remove("CLAWPEN_CONFIG")
            .env("CLAWPEN_DATA_DIR", data)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
        Daemon {
            child,
            log: log_file,
        }
    }

    /// SIGKILL, and the exit reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM once the daemon says it is running (a stop asked for earlier is honoured
    /// too, but a signal that comes before the process listens at all ends it by default),
    /// then wait for the exit: after it nothing more reaches the chats.
    pub fn terminate(mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("clawpen is running") {
                break;
            }
            std::thread::sleep(WORK_EVERY);
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The environment of a daemon whose Telegram adapter talks to the fake at `url` with
/// `token` and lets in `chats`.
pub fn telegram_env(url: &str, token: &str, chats: &[i64]) -> Vec<(&'static str, String)> {
    let chats: Vec<String> = chats.iter().map(i64::to_string).collect();
    vec![
        ("TELEGRAM_BOT_TOKEN", token.to_string()),
        ("TELEGRAM_API_URL", url.to_string()),
        ("CLAWPEN_TELEGRAM_ALLOWED_CHATS", chats.join(",")),
    ]
}

/// Removes the boxes of the daemons on `data` at the end of the test, however it ends.
pub fn cleanup(data: &Path) -> Cleanup {
    let store =
        clawpen::store::Store::open(&data.join("store")).unwrap_or_else(|e| panic!("store: {e}"));
    Cleanup {
        instance: store.instance_id(),
    }
}

/// The seed of a run: `CLAWPEN_CRASH_SEED`, else one from the clock.
pub fn crash_seed() -> u64 {
    std::env::var("CLAWPEN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(88_172_645_463_325_252)
        })
}

/// A small deterministic generator (xorshift), seeded per run and printed, so a failing
/// run can be repeated.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration of `low..high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// Kills `daemon` `kills` times, each after a random wait of `low..high` ms drawn from
/// `rng`, during which `work` runs every [`WORK_EVERY`]; after each kill `start(kill)`
/// starts the next daemon. Returns the last one started.
pub async fn kill_at_random(
    mut daemon: Daemon,
    kills: u32,
    rng: &mut Rng,
    (low, high): (u64, u64),
    mut work: impl FnMut(),
    mut start: impl FnMut(u32) -> Daemon,
) -> Daemon {
    for kill in 1..=kills {
        let until = Instant::now() + rng.millis(low, high);
        while Instant::now() < until {
            work();
            tokio::time::sleep(WORK_EVERY).await;
        }
        daemon.kill();
        daemon = start(kill);
    }
    daemon
}

fn log_path(data: &Path, run: u32) -> std::path::PathBuf {
    data.join(format!("daemon-{run}.log"))
}

/// Prints the last `lines` lines of each start's log, starts `0..=last`.
pub fn print_log_tails(data: &Path, last: u32, lines: usize) {
    for run in 0..=last {
        if let Ok(log) = std::fs::read_to_string(log_path(data, run)) {
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            eprintln!("--- daemon run {run} (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
