//! Scheduled tasks end to end: asked for in chat through the scripted fake model, fired by
//! the scheduler on a manual clock, delivered to the terminal; jobs, their checks and
//! failures; commands, the permission rule and the limits. Telegram, downtime and crashes
//! are in `schedule_telegram.rs`, SIGKILL in `schedule_kill.rs`.

mod support;

use std::time::Duration;

use clawpen::adapters::command::{Caller, TaskReply, TaskRequest};
use clawpen::adapters::terminal::TerminalEvent;
use clawpen::adapters::{ConversationKey, InboundSink};
use clawpen::config::{Config, Secret};
use clawpen::protocol::TaskSpec;
use clawpen::router::ManualClock;
use clawpen::schedule::spec;
use clawpen::store::TaskState;
use serde_json::{json, Value};
use support::model::{FakeModel, Reply};
use support::{eventually, next_reply, TestBridge, REPLY_TIMEOUT};
use tokio::sync::mpsc;

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

/// The text of the last tool result in an Anthropic request.
fn last_tool_result(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .iter()
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .collect::<Vec<_>>()
        .pop();
    match last.map(|b| b["content"].clone()) {
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Waits for the bridge's own answer to a command.
async fn notice(events: &mut mpsc::Receiver<TerminalEvent>) -> String {
    loop {
        match tokio::time::timeout(REPLY_TIMEOUT, events.recv()).await {
            Ok(Some(TerminalEvent::Notice { text })) => return text,
            Ok(Some(_)) => {}
            other => panic!("no notice: {other:?}"),
        }
    }
}

/// Types a command into a terminal conversation and returns the bridge's answer.
async fn command(t: &TestBridge, name: &str, text: &str) -> String {
    let mut events = t.watch(name);
    t.say(name, text).await;
    notice(&mut events).await
}

fn spec(kind: &str, title: &str, text: &str) -> TaskSpec {
    TaskSpec {
        kind: kind.into(),
        title: title.into(),
        text: text.into(),
        ..TaskSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_asked_for_in_chat_fires_once_with_no_model_and_no_box() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::tool_call(
        "schedule_task",
        json!({"kind": "reminder", "title": "stretch", "text": "Time to stretch!", "in": "20m"}),
    ));
    model.push_reply(Reply::text("I'll remind you in 20 minutes."));
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), serve(&model)).await;

    let reply = t.ask("desk", "in 20 minutes tell me to stretch").await;
    assert_eq!(reply, "I'll remind you in 20 minutes.");
    let result = last_tool_result(&model.requests()[1].body);
    assert!(
        result.starts_with("Scheduled task #1 “stretch” (reminder), once, at "),
        "{result}"
    );
    assert!(result.contains("next runs: "), "{result}");
    let key = TestBridge::key("desk");
    let store = t.bridge.router.store().clone();
    assert_eq!(store.tasks_of(&key).unwrap_or_default().len(), 1);

    // Not due yet: a tick fires nothing.
    let scheduler = t.bridge.scheduler().clone();
    assert_eq!(scheduler.tick(clock.unix_now()).await.ok(), Some(0));
    let mut events = t.watch("desk");
    clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(next_reply(&mut events).await, "⏰ Time to stretch!");
    // Delivered without asking the model, and only once: a once-task is gone after its
    // run, and a tick at the same time finds nothing more.
    assert_eq!(model.requests().len(), 2);
    assert_eq!(scheduler.tick(clock.unix_now()).await.ok(), Some(0));
    assert!(store.tasks_of(&key).unwrap_or_default().is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_as_a_marked_turn_its_answer_is_delivered_and_it_cannot_schedule_more() {
    let model = FakeModel::start().await;
    model.push_reply(Reply::tool_call(
        "schedule_task",
        json!({"kind": "job", "title": "notes", "text": "Summarise my notes", "every": "1h"}),
    ));
    model.push_reply(Reply::text("Every hour, then."));
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), serve(&model)).await;
    assert_eq!(
        t.ask("work", "summarise my notes every hour").await,
        "Every hour, then."
    );

    // The run: the model tries to schedule again (refused), then answers.
    model.push_reply(Reply::tool_call(
        "schedule_task",
        json!({"kind": "reminder", "text": "again", "in": "5m"}),
    ));
    model.push_reply(Reply::text("Your notes: nothing new."));
    let mut events = t.watch("work");
    clock.advance(Duration::from_secs(3600));
    // One reply: the mark of a scheduled run, then the answer.
    assert_eq!(
        next_reply(&mut events).await,
        "⏰ Scheduled run of task #1 “notes”\n\nYour notes: nothing new."
    );
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    let asked = requests[2].body.to_string();
    assert!(
        asked.contains("[Scheduled run of task #1 “notes”"),
        "{asked}"
    );
    assert!(asked.contains("Summarise my notes"), "{asked}");
    let refused = last_tool_result(&requests[3].body);
    assert!(refused.contains("may not schedule tasks"), "{refused}");
    // Still one task, scheduled for the next hour.
    let tasks = t
        .bridge
        .router
        .store()
        .tasks_of(&TestBridge::key("work"))
        .unwrap_or_default();
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].next_due > Some(clock.unix_now()), "{tasks:?}");
    assert_eq!(tasks[0].last_outcome.as_deref(), Some("ran"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_mark_is_stored_with_its_turn_so_a_resumed_answer_keeps_it() {
    let model = FakeModel::start().await;
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), serve(&model)).await;
    let key = TestBridge::key("digest");
    let job = TaskSpec {
        every: Some("1h".into()),
        ..spec("job", "digest", "Send the digest")
    };
    assert!(t.bridge.scheduler().schedule(&key, &job).await.is_ok());
    let (held, hold) = Reply::held("Digest: ", "all quiet.");
    model.push_reply(held);
    let mut events = t.watch("digest");
    clock.advance(Duration::from_secs(3600));
    hold.arrived().await;
    // While the answer streams, the turn's record (what a restart resumes from) holds the
    // mark: a restart shows it again before the answer rather than losing it.
    let running = t.bridge.router.store().turn(&key).ok().flatten();
    assert_eq!(
        running.map(|r| r.heading),
        Some("⏰ Scheduled run of task #1 “digest”\n\n".to_string())
    );
    hold.release();
    assert_eq!(
        next_reply(&mut events).await,
        "⏰ Scheduled run of task #1 “digest”\n\nDigest: all quiet."
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_reported_in_the_chat_and_stays_scheduled() {
    let model = FakeModel::start().await;
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), serve(&model)).await;
    let key = TestBridge::key("ci");
    let scheduler = t.bridge.scheduler().clone();
    let made = scheduler
        .schedule(
            &key,
            &TaskSpec {
                every: Some("2h".into()),
                ..spec("job", "build", "Check the build")
            },
        )
        .await;
    assert!(made.is_ok(), "{made:?}");
    model.push_reply(Reply::unauthorized());
    let mut events = t.watch("ci");
    clock.advance(Duration::from_secs(2 * 3600));
    let failed = next_reply(&mut events).await;
    assert!(
        failed.starts_with("⏰ Scheduled run of task #1 “build”\n\n"),
        "{failed}"
    );
    assert!(failed.contains("401"), "{failed}");
    let tasks = t.bridge.router.store().tasks_of(&key).unwrap_or_default();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, TaskState::Active);
    assert!(tasks[0].next_due > Some(clock.unix_now()));
    // And the task records why its last run failed.
    let store = t.bridge.router.store().clone();
    let noted = eventually(REPLY_TIMEOUT, || {
        let store = store.clone();
        async move {
            let outcome = store.task(1).ok().flatten().and_then(|t| t.last_outcome);
            outcome.is_some_and(|o| o.starts_with("failed: ") && o.contains("401"))
        }
    })
    .await;
    assert!(noted, "{:?}", store.task(1));
    // `/tasks` shows it too: when the last run was due, in the task's zone, and why it failed.
    let due = tasks[0]
        .last_due
        .unwrap_or_else(|| panic!("no last run: {tasks:?}"));
    let listed = command(&t, "ci", "/tasks").await;
    let last = format!(
        "#1 build (job) — every 2 hours — next: {} — last: {}, failed: ",
        spec::show(chrono_tz::UTC, due + 2 * 3600),
        spec::show(chrono_tz::UTC, due)
    );
    assert!(listed.contains(&last), "{listed}");
    assert!(listed.contains("401"), "{listed}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pause_resume_cancel_within_the_permission_rule_and_the_limits() {
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), |c| {
        c.max_tasks_per_conversation = 2;
        c.min_task_interval_secs = 300;
    })
    .await;
    let key = TestBridge::key("home");
    let scheduler = t.bridge.scheduler().clone();

    assert!(command(&t, "home", "/tz Mars/Olympus")
        .await
        .contains("not a time zone"));
    let set = command(&t, "home", "/tz Europe/Berlin").await;
    assert!(set.contains("time zone is now Europe/Berlin"), "{set}");
    let standup = TaskSpec {
        cron: Some("0 9 * * 1-5".into()),
        ..spec("reminder", "standup", "Send the standup")
    };
    let made = scheduler
        .schedule(&key, &standup)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(made.contains("time zone Europe/Berlin"), "{made}");
    assert!(made.contains(" CET") || made.contains(" CEST"), "{made}");
    let too_often = TaskSpec {
        every: Some("1m".into()),
        ..spec("reminder", "often", "tick")
    };
    let refused = scheduler.schedule(&key, &too_often).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("min_task_interval_secs")),
        "{refused:?}"
    );
    let water = TaskSpec {
        every: Some("2h".into()),
        ..spec("reminder", "water", "Drink water")
    };
    assert!(scheduler.schedule(&key, &water).await.is_ok());
    let third = scheduler.schedule(&key, &water).await;
    assert!(
        third
            .as_ref()
            .is_err_and(|e| e.contains("max_tasks_per_conversation")),
        "{third:?}"
    );

    let listed = command(&t, "home", "/tasks").await;
    assert!(
        listed.starts_with("Scheduled tasks (time zone Europe/Berlin):"),
        "{listed}"
    );
    assert!(
        listed.contains("#1 standup (reminder) — cron `0 9 * * 1-5`"),
        "{listed}"
    );
    assert!(
        listed.contains("#2 water (reminder) — every 2 hours — next: "),
        "{listed}"
    );
    assert_eq!(
        command(&t, "home", "/pause 2").await,
        "⏸ Paused task #2 “water”."
    );
    assert!(command(&t, "home", "/tasks")
        .await
        .contains("every 2 hours — paused"));
    let resumed = command(&t, "home", "/resume 2").await;
    assert!(
        resumed.starts_with("▶️ Resumed task #2 “water”. Next run: "),
        "{resumed}"
    );
    assert_eq!(
        command(&t, "home", "/cancel 1").await,
        "🗑 Cancelled task #1 “standup”."
    );
    assert_eq!(
        command(&t, "home", "/cancel 1").await,
        "There is no task #1. /tasks lists them."
    );
    assert!(command(&t, "home", "/pause soon")
        .await
        .starts_with("Usage: /pause ID"));

    // A chat manages only its own tasks; the paired owner manages all, from any chat.
    let group = ConversationKey::new("telegram", "-100");
    let theirs = scheduler
        .schedule(&group, &water)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(theirs.starts_with("Scheduled task #3"), "{theirs}");
    let stranger_chat = ConversationKey::new("telegram", "55");
    let stranger = Caller {
        conversation: &stranger_chat,
        sender: "55",
    };
    let router = &t.bridge.router;
    assert_eq!(
        router.tasks(&stranger, TaskRequest::Pause(3)).await,
        TaskReply::NotYours(3)
    );
    let all = router
        .tasks(&stranger, TaskRequest::List { all: true })
        .await;
    assert!(matches!(all, TaskReply::Refused(_)), "{all:?}");
    let member = Caller {
        conversation: &group,
        sender: "56",
    };
    assert!(matches!(
        router.tasks(&member, TaskRequest::Pause(3)).await,
        TaskReply::Done { .. }
    ));
    router
        .save_value("telegram.owner", "77")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let owner = Caller {
        conversation: &stranger_chat,
        sender: "77",
    };
    assert!(matches!(
        router.tasks(&owner, TaskRequest::Resume(3)).await,
        TaskReply::Done { .. }
    ));

    // This bridge has no Telegram adapter: when the task comes due it is paused, with why.
    clock.advance(Duration::from_secs(2 * 3600 + 5));
    assert!(scheduler.tick(clock.unix_now()).await.is_ok());
    let everything = command(&t, "home", "/tasks all").await;
    assert!(
        everything.contains("#3 water (reminder) [telegram:-100] — every 2 hours — paused: the telegram adapter is not configured any more"),
        "{everything}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_check_wakes_the_model_only_when_the_check_passes() {
    let model = FakeModel::start().await;
    let clock = ManualClock::new();
    let t = TestBridge::start_on(clock.clock(), serve(&model)).await;
    let key = TestBridge::key("inbox");
    let job = TaskSpec {
        every: Some("1h".into()),
        check: Some("cat inbox.txt".into()),
        ..spec("job", "inbox", "Answer what is in the inbox")
    };
    let made = t.bridge.scheduler().schedule(&key, &job).await;
    assert!(made.is_ok(), "{made:?}");

    // No inbox yet: the check fails, and the model is not asked.
    clock.advance(Duration::from_secs(3600));
    let store = t.bridge.router.store().clone();
    let skipped = eventually(REPLY_TIMEOUT, || {
        let store = store.clone();
        async move {
            let outcome = store.task(1).ok().flatten().and_then(|t| t.last_outcome);
            outcome.as_deref() == Some("check exited 1: nothing to do")
        }
    })
    .await;
    assert!(skipped, "{:?}", store.task(1));
    assert!(model.requests().is_empty(), "the model was woken");

    // Mail came: the check passes and its output reaches the model.
    let (code, _) = t
        .exec(
            "inbox",
            &["sh", "-c", "echo new mail from Ada > /workspace/inbox.txt"],
        )
        .await;
    assert_eq!(code, 0);
    model.push_reply(Reply::text("Ada wrote to you."));
    let mut events = t.watch("inbox");
    clock.advance(Duration::from_secs(3600));
    // One reply: the mark of a scheduled run, then the answer.
    assert_eq!(
        next_reply(&mut events).await,
        "⏰ Scheduled run of task #1 “inbox”\n\nAda wrote to you."
    );
    let asked = model.requests()[0].body.to_string();
    assert!(asked.contains("new mail from Ada"), "{asked}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_due_during_a_turn_runs_after_it_as_a_turn_of_its_own() {
    let model = FakeModel::start().await;
    let clock = ManualClock::new();
    let tweak = serve(&model);
    let t = TestBridge::start_on(clock.clock(), |c| {
        tweak(c);
        // The clock jumps an hour while the turn runs; that is no stall, nor too long.
        c.turn_stall_secs = 24 * 3600;
        c.max_turn_secs = 24 * 3600;
        c.idle_timeout_secs = 24 * 3600;
    })
    .await;
    let key = TestBridge::key("busy");
    let job = TaskSpec {
        every: Some("1h".into()),
        ..spec("job", "report", "Write the report")
    };
    assert!(t.bridge.scheduler().schedule(&key, &job).await.is_ok());
    let (held, hold) = Reply::held("Still ", "working.");
    model.push_reply(held);
    model.push_reply(Reply::text("Report done."));
    let mut events = t.watch("busy");
    t.say("busy", "do something long").await;
    hold.arrived().await;

    // The job comes due while the user's turn runs: it waits for a turn of its own.
    clock.advance(Duration::from_secs(3600));
    let store = t.bridge.router.store().clone();
    let fired = eventually(REPLY_TIMEOUT, || {
        let store = store.clone();
        async move {
            store
                .task(1)
                .ok()
                .flatten()
                .is_some_and(|t| t.last_due.is_some())
        }
    })
    .await;
    assert!(fired, "the job never came due");
    hold.release();
    assert_eq!(next_reply(&mut events).await, "Still working.");
    // One reply: the mark of a scheduled run, then the answer.
    assert_eq!(
        next_reply(&mut events).await,
        "⏰ Scheduled run of task #1 “report”\n\nReport done."
    );
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        !requests[0].body["messages"]
            .to_string()
            .contains("Scheduled run"),
        "a follow-up of the user's turn"
    );
    assert!(requests[1]
        .body
        .to_string()
        .contains("[Scheduled run of task #1 “report”"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_the_tasks_of_a_platform_no_longer_configured_are_paused_with_why() {
    support::logs::logs();
    let t = TestBridge::start(|_| {}).await;
    let scheduler = t.bridge.scheduler().clone();
    let water = TaskSpec {
        every: Some("2h".into()),
        ..spec("reminder", "water", "Drink water")
    };
    // A Telegram group's task, in a store this bridge (which has no Telegram adapter)
    // starts on, and one of the terminal's.
    let group = ConversationKey::new("telegram", "-100");
    assert!(scheduler.schedule(&group, &water).await.is_ok());
    assert!(scheduler
        .schedule(&TestBridge::key("home"), &water)
        .await
        .is_ok());
    // The scheduler holds the store, as the bridge does: both go before the restart.
    drop(scheduler);
    let t = t.restart().await;

    // Right after the start, two hours before it is due, the group's task is paused.
    let store = t.bridge.router.store().clone();
    let now = i64::try_from(clawpen::router::now_secs()).unwrap_or(0);
    let theirs = store.task(1).ok().flatten();
    assert_eq!(
        theirs.as_ref().map(|task| &task.state),
        Some(&TaskState::Paused {
            reason: Some("the telegram adapter is not configured any more".into())
        }),
        "{theirs:?}"
    );
    assert!(theirs.is_some_and(|task| task.next_due > Some(now + 3600)));
    let ours = store.task(2).ok().flatten();
    assert!(ours.is_some_and(|task| task.is_active()));
    // The owner (the terminal's operator) sees it from another chat.
    let everything = command(&t, "home", "/tasks all").await;
    assert!(
        everything.contains("#1 water (reminder) [telegram:-100] — every 2 hours — paused: the telegram adapter is not configured any more"),
        "{everything}"
    );
    assert!(
        everything.contains("#2 water (reminder) [terminal:home] — every 2 hours — next: "),
        "{everything}"
    );
    // Said once in the log, with the count.
    let said: Vec<String> = support::logs::logged()
        .lines()
        .filter(|l| l.contains("paused the tasks of platforms that are not configured any more"))
        .map(str::to_string)
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("count=1"), "{said:?}");
    t.stop().await;
}
