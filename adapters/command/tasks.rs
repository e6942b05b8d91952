//! `/tasks`: the conversation's scheduled tasks, with ids, schedules, next runs and what
//! became of their last runs; and
//! what every task command (`/pause`, `/resume`, `/cancel`, `/run`, `/tz`) asks of the
//! scheduler and how its answer is worded.
//!
//! The scheduler lives in the core, behind [`InboundSink::tasks`]: it checks who may do
//! what (a conversation manages its own tasks, the owner all of them) and reports facts
//! ([`TaskReply`]); the words are here, the same on every platform.

use super::{Origin, Outcome, Spec};
use crate::InboundSink;

/// The most characters of a last run's outcome `/tasks` shows: a failure's reason can be a
/// provider's whole error body, and the list keeps one line per task.
const OUTCOME_CHARS: usize = 160;

/// What a task command asks of the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskRequest {
    /// The conversation's tasks; with `all`, every task (the owner only).
    List {
        /// Every conversation's tasks.
        all: bool,
    },
    /// Stop a task from running until resumed.
    Pause(u64),
    /// Let a paused task run again.
    Resume(u64),
    /// Delete a task.
    Cancel(u64),
    /// Run a task now, once, besides its schedule.
    Run(u64),
    /// Show (`None`) or set the conversation's time zone.
    Zone(Option<String>),
}

/// Who asks, as the scheduler needs to know.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The conversation the command was given in.
    pub conversation: &'a crate::ConversationKey,
    /// The sender's platform user id.
    pub sender: &'a str,
}

/// One task as `/tasks` shows it; every field already in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLine {
    /// Its id.
    pub id: u64,
    /// Its title.
    pub title: String,
    /// `reminder` or `job`.
    pub kind: String,
    /// Its schedule in words.
    pub schedule: String,
    /// When it runs next, in its zone; `None` when paused or finished.
    pub next: Option<String>,
    /// `None` when active; why it is paused otherwise.
    pub paused: Option<String>,
    /// When its last occurrence was due, in its zone; `None` before its first run.
    pub last_run: Option<String>,
    /// What became of its last run, as the scheduler noted it ("ran", "failed: …").
    pub last_outcome: Option<String>,
    /// Its conversation, when listing every conversation's tasks.
    pub conversation: Option<String>,
}

/// What a task command did, as facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskReply {
    /// The tasks asked for, and the conversation's zone.
    List {
        /// The conversation's time zone.
        zone: String,
        /// The tasks, by id.
        tasks: Vec<TaskLine>,
    },
    /// A task was paused, resumed, cancelled or started.
    Done {
        /// Which request.
        request: TaskRequest,
        /// The task's title.
        title: String,
        /// Its next run, in words, if it has one.
        next: Option<String>,
    },
    /// The conversation's time zone (and whether it was just set).
    Zone {
        /// The zone's name.
        zone: String,
        /// Set by this command.
        set: bool,
    },
    /// No such task.
    NotFound(u64),
    /// The task belongs to another conversation and the caller is not the owner.
    NotYours(u64),
    /// The request was refused, with the reason in words (a bad zone name).
    Refused(String),
    /// This bridge has no scheduler.
    Unavailable,
}

/// `/tasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tasks {
    /// `all`: every conversation's tasks.
    pub args: String,
}

impl Tasks {
    /// Its name.
    pub const NAME: &'static str = "tasks";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Scheduled reminders and jobs"),
        help: Some(
            "this chat's scheduled reminders and jobs (/tasks all: every chat's, for the owner)",
        ),
        argument: Some("all: every chat's tasks (the owner only)"),
    };

    /// Asks for the list and words it.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        let all = self.args.trim().eq_ignore_ascii_case("all");
        ask(sink, origin, TaskRequest::List { all }).await
    }
}

/// Asks the scheduler and words its answer.
pub(super) async fn ask(
    sink: &dyn InboundSink,
    origin: &Origin<'_>,
    request: TaskRequest,
) -> Outcome {
    let caller = Caller {
        conversation: origin.conversation,
        sender: origin.sender,
    };
    Outcome::Answer(words(&sink.tasks(&caller, request).await))
}

/// A command that takes a task id: the id from its arguments, or how to use it.
pub(super) async fn by_id(
    sink: &dyn InboundSink,
    origin: &Origin<'_>,
    name: &str,
    args: &str,
    request: fn(u64) -> TaskRequest,
) -> Outcome {
    let id = args.trim().trim_start_matches('#');
    match id.parse::<u64>() {
        Ok(id) => ask(sink, origin, request(id)).await,
        Err(_) => Outcome::Answer(format!(
            "Usage: /{name} ID, with the task's number from /tasks."
        )),
    }
}

/// A task's last run for its line in `/tasks` (` — last: <when>, <outcome>`), or nothing
/// before its first run. The outcome is made one line and cut to [`OUTCOME_CHARS`].
fn last_run(task: &TaskLine) -> String {
    let outcome = task.last_outcome.as_deref().map(|outcome| {
        let line = outcome.split_whitespace().collect::<Vec<_>>().join(" ");
        match line.char_indices().nth(OUTCOME_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line,
        }
    });
    match (&task.last_run, outcome) {
        (Some(at), Some(outcome)) => format!(" — last: {at}, {outcome}"),
        (Some(at), None) => format!(" — last: {at}"),
        (None, Some(outcome)) => format!(" — last: {outcome}"),
        (None, None) => String::new(),
    }
}

/// A reply in words.
pub fn words(reply: &TaskReply) -> String {
    match reply {
        TaskReply::List { zone, tasks } if tasks.is_empty() => format!(
            "No scheduled tasks. Ask me for a reminder or a recurring job (“remind me every \
             weekday at 9 to send the standup”). Time zone: {zone}."
        ),
        TaskReply::List { zone, tasks } => {
            let mut lines = vec![format!("Scheduled tasks (time zone {zone}):")];
            for task in tasks {
                let state = match (&task.paused, &task.next) {
                    (Some(why), _) if why.is_empty() => "paused".into(),
                    (Some(why), _) => format!("paused: {why}"),
                    (None, Some(next)) => format!("next: {next}"),
                    (None, None) => "no further runs".into(),
                };
                let place = task
                    .conversation
                    .as_ref()
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default();
                lines.push(format!(
                    "#{} {} ({}){place} — {} — {state}{}",
                    task.id,
                    task.title,
                    task.kind,
                    task.schedule,
                    last_run(task)
                ));
            }
            lines.join("\n")
        }
        TaskReply::Done {
            request,
            title,
            next,
        } => {
            let next = next
                .as_ref()
                .map(|n| format!(" Next run: {n}."))
                .unwrap_or_default();
            match request {
                TaskRequest::Pause(id) => format!("⏸ Paused task #{id} “{title}”."),
                TaskRequest::Resume(id) => format!("▶️ Resumed task #{id} “{title}”.{next}"),
                TaskRequest::Cancel(id) => format!("🗑 Cancelled task #{id} “{title}”."),
                TaskRequest::Run(id) => format!("⏩ Running task #{id} “{title}” now.{next}"),
                TaskRequest::List { .. } | TaskRequest::Zone(_) => format!("Done: {title}."),
            }
        }
        TaskReply::Zone { zone, set: true } => format!(
            "🕒 This chat's time zone is now {zone}. New tasks use it; existing tasks keep theirs."
        ),
        TaskReply::Zone { zone, set: false } => {
            format!("🕒 This chat's time zone is {zone}. Change it with /tz ZONE (e.g. /tz Europe/Berlin).")
        }
        TaskReply::NotFound(id) => format!("There is no task #{id}. /tasks lists them."),
        TaskReply::NotYours(id) => {
            format!(
                "Task #{id} belongs to another chat; only the bot's owner can change it from here."
            )
        }
        TaskReply::Refused(why) => format!("⚠️ {why}"),
        TaskReply::Unavailable => "Scheduled tasks are not available here.".into(),
    }
}
