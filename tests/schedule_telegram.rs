//! Scheduled tasks through the fake Telegram: a reminder asked for in a Telegram chat,
//! occurrences missed while the bridge was down (both catch-up policies), and a crash
//! between an occurrence's store step and its delivery. Telegram's record of what it was
//! sent is what the user saw, whenever the bridge started.

mod support;
#[path = "support/telegram/mod.rs"]
mod telegram_fake;

use std::sync::Arc;
use std::time::Duration;

use clawpen::adapters::telegram::TelegramAdapter;
use clawpen::adapters::{Adapter, ConversationKey};
use clawpen::config::{Config, Secret};
use clawpen::daemon::Bridge;
use clawpen::protocol::TaskSpec;
use clawpen::router::ManualClock;
use clawpen::store::{InboundState, Store};
use serde_json::json;
use support::model::{FakeModel, Reply};
use support::{eventually, test_config, Cleanup, REPLY_TIMEOUT};
use telegram_fake::bridge::telegram_config;
use telegram_fake::FakeTelegram;

/// Points a bridge's boxes at the fake model.
fn serve(model: &FakeModel) -> impl FnOnce(&mut Config) {
    let url = model.url();
    move |c| {
        c.provider = "anthropic".into();
        c.model = Some("claude-test".into());
        c.anthropic_base_url = url;
        c.anthropic_api_key = Some(Secret::new("sk-ant-test"));
    }
}

fn spec(kind: &str, title: &str, text: &str) -> TaskSpec {
    TaskSpec {
        kind: kind.into(),
        title: title.into(),
        text: text.into(),
        ..TaskSpec::default()
    }
}

/// The Telegram user (and private chat) of the Telegram tests.
const USER: i64 = 7;

/// A bridge with the Telegram adapter against `fake`, its timers on `clock`; started
/// again on the same `config` it is the same bridge after a restart.
async fn telegram_bridge(config: &Config, fake: &FakeTelegram, clock: &ManualClock) -> Bridge {
    let mut telegram = telegram_config(fake);
    telegram.allowed_users = vec![USER];
    let adapter = TelegramAdapter::new(telegram).unwrap_or_else(|e| panic!("adapter: {e}"));
    Bridge::start_on(config, vec![adapter as Arc<dyn Adapter>], clock.clock())
        .await
        .unwrap_or_else(|e| panic!("bridge start: {e}"))
}

/// Waits until the fake Telegram shows the user `count` messages that start with `start`;
/// returns them.
async fn telegram_texts(fake: &FakeTelegram, start: &str, count: usize) -> Vec<String> {
    let found = || -> Vec<String> {
        fake.messages(USER)
            .into_iter()
            .map(|m| m.text)
            .filter(|t| t.starts_with(start))
            .collect()
    };
    let seen = eventually(REPLY_TIMEOUT, || {
        let n = found().len();
        async move { n >= count }
    })
    .await;
    assert!(
        seen,
        "{count} messages starting {start:?} never came: {:?}",
        fake.messages(USER)
    );
    found()
}

/// The private chat of [`USER`].
fn dm() -> ConversationKey {
    ConversationKey::new("telegram", USER.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_asked_for_on_telegram_is_delivered_through_telegram() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::tool_call(
        "schedule_task",
        json!({"kind": "reminder", "title": "stretch", "text": "Time to stretch!", "in": "20m"}),
    ));
    model.push_reply(Reply::text("I'll remind you in 20 minutes."));
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = test_config(dir.path());
    serve(&model)(&mut config);
    let clock = ManualClock::new();
    let bridge = telegram_bridge(&config, &fake, &clock).await;
    let _cleanup = Cleanup {
        instance: bridge.router.sandbox().instance().to_string(),
    };
    fake.dm(USER, "in 20 minutes tell me to stretch");
    telegram_texts(&fake, "I'll remind you", 1).await;
    clock.advance(Duration::from_secs(20 * 60));
    let reminders = telegram_texts(&fake, "⏰", 1).await;
    assert_eq!(reminders, ["⏰ Time to stretch!"]);
    assert_eq!(model.requests().len(), 2, "the reminder asked the model");
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    let _ = sandbox.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_missed_while_down_run_once_late_or_are_skipped_with_a_note() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = test_config(dir.path());
    let clock = ManualClock::new();
    let bridge = telegram_bridge(&config, &fake, &clock).await;
    let _cleanup = Cleanup {
        instance: bridge.router.sandbox().instance().to_string(),
    };
    let scheduler = bridge.scheduler().clone();
    let hourly = |title: &str, catch_up: &str| TaskSpec {
        every: Some("1h".into()),
        catch_up: Some(catch_up.into()),
        ..spec("reminder", title, &format!("{title} now"))
    };
    assert!(scheduler
        .schedule(&dm(), &hourly("water", "once"))
        .await
        .is_ok());
    assert!(scheduler
        .schedule(&dm(), &hourly("plants", "skip"))
        .await
        .is_ok());
    // The scheduler holds the store, as the bridge does: both go before the restart.
    drop(scheduler);
    bridge.shutdown().await;

    // Down for three hours and a bit: three occurrences of each were missed.
    let later = ManualClock::at_unix(clock.unix_now() + 3 * 3600 + 600);
    let bridge = telegram_bridge(&config, &fake, &later).await;
    let late = telegram_texts(&fake, "⏰", 1).await;
    assert_eq!(late.len(), 1, "{late:?}");
    assert!(
        late[0].starts_with("⏰ water now (late: it was due "),
        "{late:?}"
    );
    let skipped = telegram_texts(&fake, "⏭", 1).await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].starts_with("⏭ Task #2 “plants” was due "),
        "{skipped:?}"
    );
    assert!(skipped[0].contains("it was skipped"), "{skipped:?}");
    // Never a burst: nothing more is due now, and the next runs are counted from now.
    assert_eq!(
        bridge.scheduler().tick(later.unix_now()).await.ok(),
        Some(0)
    );
    for task in bridge.router.store().tasks_of(&dm()).unwrap_or_default() {
        assert!(task.next_due > Some(later.unix_now()), "{task:?}");
    }
    assert_eq!(fake.messages(USER).len(), 2, "{:?}", fake.messages(USER));
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    let _ = sandbox.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occurrence_caught_between_due_and_run_by_a_crash_runs_exactly_once() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = test_config(dir.path());
    let clock = ManualClock::new();
    let bridge = telegram_bridge(&config, &fake, &clock).await;
    let _cleanup = Cleanup {
        instance: bridge.router.sandbox().instance().to_string(),
    };
    let every = TaskSpec {
        every: Some("1h".into()),
        ..spec("reminder", "tea", "Tea time")
    };
    assert!(bridge.scheduler().schedule(&dm(), &every).await.is_ok());
    let due = bridge
        .router
        .store()
        .task(1)
        .ok()
        .flatten()
        .and_then(|t| t.next_due)
        .unwrap_or_default();
    bridge.shutdown().await;

    // The process took the occurrence's store step (logged, next due stored) and died
    // before any actor saw it: what the store holds then is exactly this.
    {
        let store = Store::open(&config.store_dir()).unwrap_or_else(|e| panic!("{e}"));
        let task = store
            .task(1)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no task"));
        let occurrence = clawpen::schedule::occurrence::message(
            &task,
            due,
            due,
            clawpen::schedule::occurrence::Why::Due,
        );
        let mut next = task.clone();
        next.next_due = Some(due + 3600);
        next.last_due = Some(due);
        let step = store.fire_task_unflushed(&occurrence, &next, due, false);
        assert!(step.is_ok(), "{step:?}");
        assert!(store.flush().is_ok());
    }
    let at_due = ManualClock::at_unix(due + 5);
    let bridge = telegram_bridge(&config, &fake, &at_due).await;
    assert_eq!(telegram_texts(&fake, "⏰", 1).await, ["⏰ Tea time"]);
    // The scheduler does not fire it again, and the log holds it as done.
    assert_eq!(
        bridge.scheduler().tick(at_due.unix_now()).await.ok(),
        Some(0)
    );
    let id = format!("task:1:{due}");
    let store = bridge.router.store().clone();
    let done = eventually(Duration::from_secs(10), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            matches!(
                store.inbound_state(&dm(), &id),
                Ok(Some(InboundState::Done))
            )
        }
    })
    .await;
    assert!(done, "the occurrence was not marked done");

    // And one that comes due after the restart fires once too.
    at_due.advance(Duration::from_secs(3600));
    assert_eq!(telegram_texts(&fake, "⏰", 2).await.len(), 2);
    assert_eq!(
        bridge.scheduler().tick(at_due.unix_now()).await.ok(),
        Some(0)
    );
    assert_eq!(fake.messages(USER).len(), 2, "{:?}", fake.messages(USER));
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    let _ = sandbox.remove_all().await;
}
