//! Parsing and applying commands, as every adapter sees them.

use super::*;
use crate::fake_sink::{lock, message, FakeSink};
use crate::StatusReport;

fn command(text: &str, bot: Option<&str>) -> (String, Option<Command>) {
    match parse(text, bot) {
        Parsed::Command { text, command } => (text, command),
        Parsed::Text => panic!("{text:?} is not a command"),
    }
}

#[test]
fn commands_parse_once_with_or_without_our_bot_suffix() {
    let bot = Some("ClawBot");
    assert_eq!(
        command("/status", bot),
        ("/status".into(), Some(Command::Status(Status)))
    );
    assert_eq!(
        command("/STOP@clawbot", bot),
        ("/stop".into(), Some(Command::Stop(Stop)))
    );
    assert_eq!(
        command("/reset@ClawBot   now please ", bot),
        ("/reset now please".into(), Some(Command::Reset(Reset)))
    );
    // A name the bridge does not know is for the agent, still without the suffix.
    assert_eq!(
        command("/deploy@ClawBot prod", bot),
        ("/deploy prod".into(), None)
    );
    assert_eq!(
        command("/help", None),
        ("/help".into(), Some(Command::Help(Help)))
    );
}

#[test]
fn text_and_other_bots_commands_are_not_ours() {
    for (text, bot) in [
        ("hello", Some("ClawBot")),
        ("/stop@OtherBot", Some("ClawBot")),
        ("/stop@ClawBot", None),
        ("/", None),
        ("/ what", None),
        ("/stöp", None),
        ("a /stop in the middle", None),
    ] {
        assert_eq!(parse(text, bot), Parsed::Text, "{text:?}");
    }
}

#[test]
fn menus_list_the_commands_people_type_and_help_lists_them_too() {
    let menu: Vec<_> = menu().collect();
    assert_eq!(
        menu,
        [
            ("help", "What this bot does"),
            ("status", "What this conversation's box is doing"),
            ("stop", "Stop the current answer"),
            ("reset", "Ask the agent to start afresh"),
            ("tasks", "Scheduled reminders and jobs"),
            ("pause", "Pause a scheduled task: /pause ID"),
            ("resume", "Resume a paused task: /resume ID"),
            ("cancel", "Delete a scheduled task: /cancel ID"),
            ("run", "Run a scheduled task now: /run ID"),
            ("tz", "Show or set this chat's time zone: /tz Europe/Berlin"),
        ]
    );
    let key = ConversationKey::new("terminal", "local");
    let origin = Origin {
        conversation: &key,
        addressing: "Write to me here.",
        sender: "5",
    };
    assert_eq!(
        Help::text(&origin),
        "I am an AI agent with a sandbox of my own for this chat. Write to me here.\n\n\
         /status — what this conversation's box is doing\n\
         /stop — stop the current answer\n\
         /reset — ask me to start afresh\n\
         /tasks — this chat's scheduled reminders and jobs (/tasks all: every chat's, for the owner)\n\
         /pause — pause a scheduled task until /resume (/pause ID)\n\
         /resume — let a paused task run again (/resume ID)\n\
         /cancel — delete a scheduled task (/cancel ID)\n\
         /run — run a task now, to try it out (/run ID)\n\
         /tz — show or set this chat's time zone (/tz Europe/Berlin)\n\
         /help — this message"
    );
}

#[tokio::test]
async fn stop_cancels_through_the_sink_and_says_so() {
    let sink = FakeSink::default();
    let key = ConversationKey::new("terminal", "local");
    let (text, stop) = command("/stop", None);
    let handled = handle(&sink, message(&key, &text), stop.as_ref(), "").await;
    assert_eq!(
        handled.ok(),
        Some(Handled::Answer("⏹ Stop requested.".into()))
    );
    assert_eq!(*lock(&sink.cancelled), [key]);
    assert!(lock(&sink.accepted).is_empty(), "/stop reached the agent");
}

#[tokio::test]
async fn status_words_what_the_router_reports() {
    let sink = FakeSink::default();
    let key = ConversationKey::new("telegram", "5");
    let status = Command::Status(Status);
    let origin = Origin {
        conversation: &key,
        addressing: "",
        sender: "5",
    };
    *lock(&sink.report) = StatusReport {
        state: None,
        queued: 0,
        live_boxes: 1,
        max_boxes: 32,
    };
    assert_eq!(
        status.apply(&sink, &origin).await,
        Outcome::Answer(
            "This conversation: no box running; it starts with your next message. \
             1 of 32 boxes live."
                .into()
        )
    );
    lock(&sink.report).state = Some("running a turn".into());
    lock(&sink.report).queued = 2;
    assert_eq!(
        status.apply(&sink, &origin).await,
        Outcome::Answer("This conversation: running a turn, 2 queued. 1 of 32 boxes live.".into())
    );
}

#[tokio::test]
async fn reset_and_unknown_commands_reach_the_agent_as_text() {
    let sink = FakeSink::default();
    let key = ConversationKey::new("terminal", "local");
    for typed in ["/reset", "/deploy now"] {
        let (text, known) = command(typed, None);
        let handled = handle(&sink, message(&key, &text), known.as_ref(), "").await;
        assert_eq!(handled.ok(), Some(Handled::Accepted(Accepted::Stored)));
    }
    let texts: Vec<String> = lock(&sink.accepted)
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, ["/reset", "/deploy now"]);
}

#[tokio::test]
async fn task_commands_take_an_id_and_word_what_the_sink_reports() {
    let sink = FakeSink::default();
    let key = ConversationKey::new("telegram", "5");
    let (text, pause) = command("/pause #7", None);
    assert_eq!(text, "/pause #7");
    let handled = handle(&sink, message(&key, &text), pause.as_ref(), "").await;
    // The fake sink has no scheduler, as an adapter's unit test has none.
    assert_eq!(
        handled.ok(),
        Some(Handled::Answer(
            "Scheduled tasks are not available here.".into()
        ))
    );
    let (text, bad) = command("/cancel soon", None);
    let handled = handle(&sink, message(&key, &text), bad.as_ref(), "").await;
    assert_eq!(
        handled.ok(),
        Some(Handled::Answer(
            "Usage: /cancel ID, with the task's number from /tasks.".into()
        ))
    );
    assert!(
        lock(&sink.accepted).is_empty(),
        "a task command reached the agent"
    );
    let listed = task_words(&TaskReply::List {
        zone: "Europe/Berlin".into(),
        tasks: vec![TaskLine {
            id: 3,
            title: "standup".into(),
            kind: "reminder".into(),
            schedule: "cron `0 9 * * 1-5`".into(),
            next: Some("Mon 30 Nov 2026 09:00 CET".into()),
            paused: None,
            last_run: None,
            last_outcome: None,
            conversation: None,
        }],
    });
    assert_eq!(
        listed,
        "Scheduled tasks (time zone Europe/Berlin):\n#3 standup (reminder) — cron `0 9 * * 1-5` — next: Mon 30 Nov 2026 09:00 CET"
    );
}

#[test]
fn tasks_shows_each_tasks_last_run_and_what_became_of_it_on_its_line() {
    let task = |id, last_run: Option<&str>, last_outcome: Option<&str>| TaskLine {
        id,
        title: "build".into(),
        kind: "job".into(),
        schedule: "every 2 hours".into(),
        next: Some("Mon 30 Nov 2026 11:00 CET".into()),
        paused: None,
        last_run: last_run.map(str::to_string),
        last_outcome: last_outcome.map(str::to_string),
        conversation: None,
    };
    // A provider's error body: several lines, and longer than a list line should be.
    let body = format!(
        "failed: model error 401\n{{\"error\": \"{}\"}}",
        "x".repeat(300)
    );
    let listed = task_words(&TaskReply::List {
        zone: "Europe/Berlin".into(),
        tasks: vec![
            task(1, Some("Mon 30 Nov 2026 09:00 CET"), Some("ran")),
            task(2, Some("Mon 30 Nov 2026 09:00 CET"), Some(&body)),
            task(3, None, None),
        ],
    });
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "one line per task: {listed}");
    assert_eq!(
        lines[1],
        "#1 build (job) — every 2 hours — next: Mon 30 Nov 2026 11:00 CET — last: Mon 30 Nov 2026 09:00 CET, ran"
    );
    let failed = format!(
        "#2 build (job) — every 2 hours — next: Mon 30 Nov 2026 11:00 CET — last: Mon 30 Nov 2026 09:00 CET, failed: model error 401 {{\"error\": \"{}…",
        "x".repeat(160 - 35)
    );
    assert_eq!(lines[2], failed);
    // Before its first run there is no last run to show.
    assert_eq!(
        lines[3],
        "#3 build (job) — every 2 hours — next: Mon 30 Nov 2026 11:00 CET"
    );
}
