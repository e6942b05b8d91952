//! Scheduled occurrences against SIGKILL, as an operator would see it: the real `clawpen
//! run` binary with a fake Telegram, reminders coming due one after another, the daemon
//! killed at random moments and started again, and a count of what the chat got.
//!
//! Every reminder has its own text, so each has exactly one right outcome: shown once.
//! Lost: never shown. Duplicated: shown twice, which only the one-round-trip window every
//! reply has allows (the platform accepted a message the kill kept from being recorded),
//! at most once per kill. `CLAWPEN_CRASH_SEED` repeats a run.

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawpen::adapters::ConversationKey;
use clawpen::store::{CatchUp, Store, StoredSchedule, TaskKind, TaskRecord, TaskState};
use support::Cleanup;
use telegram_fake::{FakeTelegram, TOKEN};

/// The chat the reminders go to.
const CHAT: i64 = 4242;
/// Reminders, one due every [`SPACING`].
const REMINDERS: i64 = 12;
const SPACING: Duration = Duration::from_millis(1500);
/// Kills while they come due.
const KILLS: u32 = 6;
/// How long the last start gets to show every reminder.
const SETTLE: Duration = Duration::from_secs(60);

/// A `clawpen run` child process, killed when dropped.
struct Daemon(Child);

impl Daemon {
    fn start(data: &std::path::Path, fake: &FakeTelegram, run: u32) -> Self {
        let log = std::fs::File::create(data.join(format!("daemon-{run}.log")))
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_clawpen"))
            .arg("run")
            .env_remove("CLAWPEN_CONFIG")
            .env("CLAWPEN_DATA_DIR", data)
            .env("TELEGRAM_BOT_TOKEN", TOKEN)
            .env("TELEGRAM_API_URL", fake.url())
            .env("CLAWPEN_TELEGRAM_ALLOWED_CHATS", CHAT.to_string())
            .env("CLAWPEN_LOG", "clawpen=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn clawpen: {e}"));
        Daemon(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait for the exit.
    fn terminate(mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small deterministic generator (xorshift), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(low + self.0 % (high - low))
    }
}

fn text(n: i64) -> String {
    format!("reminder {n}")
}

/// Puts the reminders into the store before the daemon's first start: reminder `n` is
/// due `first + n * SPACING`.
fn seed(store_dir: &std::path::Path, first: i64) {
    let store = Store::open(store_dir).unwrap_or_else(|e| panic!("store: {e}"));
    let spacing = i64::try_from(SPACING.as_millis()).unwrap_or(1000);
    for n in 0..REMINDERS {
        let at = first + (n * spacing) / 1000;
        let task = TaskRecord {
            id: 0,
            conversation: ConversationKey::new("telegram", CHAT.to_string()),
            title: text(n),
            kind: TaskKind::Reminder { text: text(n) },
            schedule: StoredSchedule::Once { at },
            zone: "UTC".into(),
            catch_up: CatchUp::Once,
            state: TaskState::Active,
            next_due: Some(at),
            last_due: None,
            last_outcome: None,
            created_by: "test".into(),
            created_at: first,
        };
        store
            .create_task(&task)
            .unwrap_or_else(|e| panic!("task: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_reminders_come_due_shows_each_once() {
    let seed_value = std::env::var("CLAWPEN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(88_172_645_463_325_252)
        });
    eprintln!("schedule kill run: CLAWPEN_CRASH_SEED={seed_value}");
    let mut rng = Rng(seed_value);
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let store_dir = data.join("store");
    let _cleanup = {
        let store = Store::open(&store_dir).unwrap_or_else(|e| panic!("store: {e}"));
        Cleanup {
            instance: store.instance_id(),
        }
    };
    let now = i64::try_from(clawpen::router::now_secs()).unwrap_or(0);
    // The first comes due a few seconds after the first start (which may build the image).
    seed(&store_dir, now + 3);

    let started = Instant::now();
    let mut daemon = Daemon::start(&data, &fake, 0);
    for kill in 1..=KILLS {
        tokio::time::sleep(rng.millis(800, 3_000)).await;
        daemon.kill();
        eprintln!(
            "schedule kill run: kill {kill} after {:?}",
            started.elapsed()
        );
        daemon = Daemon::start(&data, &fake, kill);
    }
    let shown = |n: i64| {
        fake.messages(CHAT)
            .iter()
            .filter(|m| m.text == format!("⏰ {}", text(n)))
            .count()
    };
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline && (0..REMINDERS).any(|n| shown(n) == 0) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.terminate();

    let counts: Vec<usize> = (0..REMINDERS).map(shown).collect();
    eprintln!("schedule kill run: shown per reminder {counts:?}");
    let lost: Vec<i64> = (0..REMINDERS)
        .filter(|n| counts[*n as usize] == 0)
        .collect();
    assert!(
        lost.is_empty(),
        "reminders never shown (seed {seed_value}): {lost:?}"
    );
    let duplicated: usize = counts.iter().map(|c| c.saturating_sub(1)).sum();
    assert!(
        duplicated <= KILLS as usize,
        "more duplicates than the one-round-trip window allows (seed {seed_value}): {counts:?}"
    );
    let stray: Vec<String> = fake
        .messages(CHAT)
        .into_iter()
        .map(|m| m.text)
        .filter(|t| !t.starts_with("⏰ reminder "))
        .collect();
    assert!(stray.is_empty(), "unexpected messages: {stray:?}");
    // Every once-task ran (and went) exactly once as far as the store knows.
    let store = Store::open(&store_dir).unwrap_or_else(|e| panic!("store: {e}"));
    let left = store.all_tasks().unwrap_or_default();
    assert!(left.is_empty(), "tasks that never ran: {left:?}");
    let key = ConversationKey::new("telegram", CHAT.to_string());
    assert!(store.pending_inbound(&key).unwrap_or_default().is_empty());
    assert!(store.pending_deliveries().unwrap_or_default().is_empty());
}
