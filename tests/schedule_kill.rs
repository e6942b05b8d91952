//! Scheduled occurrences against SIGKILL, as an operator would see it: the real `clawpen
//! run` binary with a fake Telegram, occurrences coming due one after another, the daemon
//! killed at random moments and started again, and a count of what the chats got.
//!
//! Reminders are delivered with no box; jobs run as turns in their conversation's box,
//! where the echo provider streams the occurrence's text back as the answer. Every task
//! has its own text, so each occurrence has exactly one right answer: shown once. Lost:
//! never shown. Duplicated: shown again, whole or as the beginning a send repeated after a
//! kill leaves, which only the one-round-trip window every reply has allows (the platform
//! accepted a message the kill kept from being recorded), at most once per kill. A job's
//! answer begins with the line that marks it as a scheduled run, which is stored with the
//! turn: an answer shown without it counts as lost.
//! `CLAWPEN_CRASH_SEED` repeats a run.

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::path::Path;
use std::time::{Duration, Instant};

use clawpen::adapters::ConversationKey;
use clawpen::schedule::occurrence::{self, Why};
use clawpen::store::{CatchUp, Store, StoredSchedule, TaskKind, TaskRecord, TaskState};
use support::daemon::{self, Daemon, Rng};
use support::eventually;
use telegram_fake::{FakeTelegram, Sent, TOKEN};

/// Occurrences, one due every [`SPACING`].
const OCCURRENCES: i64 = 12;
const SPACING: Duration = Duration::from_millis(1000);
/// Kills while they come due.
const KILLS: u32 = 6;
/// How long the last start gets to show every occurrence.
const SETTLE: Duration = Duration::from_secs(60);

/// One occurrence and what the chat must show for it.
struct Expected {
    chat: i64,
    /// The answer: a reminder's text, or the echo of a job's run after the line that
    /// marks it as a scheduled run.
    answer: String,
}

/// Puts once-tasks into the store before the daemon's first start: task `n` (made by
/// `kind`) belongs to `chats[n % chats.len()]` and is due `first + n * SPACING`.
fn seed(
    store_dir: &Path,
    chats: &[i64],
    first: i64,
    kind: impl Fn(i64) -> TaskKind,
) -> Vec<Expected> {
    let store = Store::open(store_dir).unwrap_or_else(|e| panic!("store: {e}"));
    let spacing = i64::try_from(SPACING.as_millis()).unwrap_or(1000);
    let mut expected = Vec::new();
    for n in 0..OCCURRENCES {
        let at = first + (n * spacing) / 1000;
        let chat = chats[n as usize % chats.len()];
        let task = TaskRecord {
            id: 0,
            conversation: ConversationKey::new("telegram", chat.to_string()),
            title: format!("task {n}"),
            kind: kind(n),
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
        let task = store
            .create_task(&task)
            .unwrap_or_else(|e| panic!("task: {e}"));
        // Due on time after each restart (well within `LATE_AFTER`), so this is its text.
        let message = occurrence::message(&task, at, at, Why::Due);
        let heading = match task.kind {
            TaskKind::Job { .. } => occurrence::reply_heading(std::slice::from_ref(&message)),
            TaskKind::Reminder { .. } => String::new(),
        };
        expected.push(Expected {
            chat,
            answer: heading + &message.text,
        });
    }
    expected
}

/// What the chats showed.
#[derive(Debug, Default)]
struct Tally {
    /// Per occurrence, how often its whole answer was shown.
    shown: Vec<usize>,
    /// Messages holding only a beginning of an answer (a send repeated after a kill).
    partial: Vec<String>,
    /// Anything else.
    stray: Vec<String>,
}

impl Tally {
    fn lost(&self) -> Vec<usize> {
        (0..self.shown.len())
            .filter(|n| self.shown[*n] == 0)
            .collect()
    }

    fn duplicated(&self) -> usize {
        self.shown
            .iter()
            .map(|c| c.saturating_sub(1))
            .sum::<usize>()
            + self.partial.len()
    }
}

fn tally(sent: &[Sent], expected: &[Expected]) -> Tally {
    let mut tally = Tally {
        shown: vec![0; expected.len()],
        ..Tally::default()
    };
    for m in sent {
        let ours = |e: &&Expected| e.chat == m.chat;
        if let Some(n) = expected.iter().position(|e| ours(&e) && e.answer == m.text) {
            tally.shown[n] += 1;
        } else if !m.text.is_empty()
            && expected
                .iter()
                .any(|e| ours(&e) && e.answer.starts_with(&m.text))
        {
            tally.partial.push(format!("chat {}: {:?}", m.chat, m.text));
        } else {
            tally.stray.push(format!("chat {}: {:?}", m.chat, m.text));
        }
    }
    tally
}

/// Seeds the tasks `kind` makes for `chats`, runs the daemon through [`KILLS`] kills while
/// they come due, and checks what the chats showed; `label` names the run in the output.
async fn kill_while_due(label: &str, chats: &[i64], kind: impl Fn(i64) -> TaskKind) {
    let seed_value = daemon::crash_seed();
    eprintln!("{label}: CLAWPEN_CRASH_SEED={seed_value}");
    let mut rng = Rng(seed_value);
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().to_path_buf();
    let store_dir = data.join("store");
    let _cleanup = daemon::cleanup(&data);
    let now = i64::try_from(clawpen::router::now_secs()).unwrap_or(0);
    // The first comes due a few seconds after the first start (which may build the image).
    let expected = seed(&store_dir, chats, now + 3, kind);

    let mut env = daemon::telegram_env(fake.url(), TOKEN, chats);
    // A job's answer streams for about a second, so some kills land in the middle of one.
    env.push(("CLAWPEN_ECHO_DELAY_MS", "60".into()));
    env.push(("CLAWPEN_LOG", "clawpen=debug".into()));
    let started = Instant::now();
    let daemon = daemon::kill_at_random(
        Daemon::start(&data, 0, &env),
        KILLS,
        &mut rng,
        (800, 3_000),
        || {},
        |kill| {
            eprintln!("{label}: kill {kill} after {:?}", started.elapsed());
            Daemon::start(&data, kill, &env)
        },
    )
    .await;
    let sent = || -> Vec<Sent> { chats.iter().flat_map(|c| fake.messages(*c)).collect() };
    eventually(SETTLE, || {
        let done = tally(&sent(), &expected).lost().is_empty();
        async move { done }
    })
    .await;
    let status = daemon.terminate();

    let tally = tally(&sent(), &expected);
    let lost = tally.lost();
    eprintln!(
        "{label}: kills {KILLS}, occurrences {}, lost {}, duplicated {}, stray {}; shown per \
         occurrence {:?}",
        expected.len(),
        lost.len(),
        tally.duplicated(),
        tally.stray.len(),
        tally.shown,
    );
    for partial in &tally.partial {
        eprintln!("{label}: a beginning shown again: {partial}");
    }
    if !lost.is_empty() || !tally.stray.is_empty() {
        daemon::print_log_tails(&data, KILLS, 40);
    }
    assert!(
        lost.is_empty(),
        "occurrences never shown (seed {seed_value}): {lost:?}"
    );
    assert!(
        tally.duplicated() <= KILLS as usize,
        "more duplicates than the one-round-trip window allows (seed {seed_value}): {tally:?}"
    );
    assert!(
        tally.stray.is_empty(),
        "unexpected messages: {:?}",
        tally.stray
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon did not stop cleanly: {status:?}"
    );
    // Every once-task ran (and went) exactly once as far as the store knows.
    let store = Store::open(&store_dir).unwrap_or_else(|e| panic!("store: {e}"));
    let left = store.all_tasks().unwrap_or_default();
    assert!(left.is_empty(), "tasks that never ran: {left:?}");
    for chat in chats {
        let key = ConversationKey::new("telegram", chat.to_string());
        assert!(store.pending_inbound(&key).unwrap_or_default().is_empty());
    }
    assert!(store.pending_deliveries().unwrap_or_default().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_reminders_come_due_shows_each_once() {
    kill_while_due("schedule kill run (reminders)", &[4242], |n| {
        TaskKind::Reminder {
            text: format!("reminder {n}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_jobs_run_shows_each_answer_once() {
    kill_while_due("schedule kill run (jobs)", &[4343, 4344], |n| {
        TaskKind::Job {
            prompt: format!("Say that job {n} ran."),
            check: None,
        }
    })
    .await;
}
