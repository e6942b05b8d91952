//! A due occurrence as the inbound message it enters the router as, and how the router
//! tells such a message apart: no I/O.
//!
//! The message's id names the task and the due time (`task:<id>:<due>`), so the inbound
//! log's dedupe makes a second attempt at the same occurrence a duplicate; its sender id is
//! one of ours (`clawpen:reminder`, `clawpen:job`), which no platform's user ids look like,
//! and the router refuses such senders from adapters.

use chrono_tz::Tz;
use clawpen_domain::Inbound;

use super::spec;
use crate::store::{TaskKind, TaskRecord};

/// The sender id of a reminder (or a note about a task): delivered as it is, no box.
pub const REMINDER_SENDER: &str = "clawpen:reminder";

/// The sender id of a job's run: a turn in the conversation's box.
pub const JOB_SENDER: &str = "clawpen:job";

/// What the router does with a scheduled message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occurrence {
    /// Deliver its text to the chat, with no model call and no box.
    Reminder,
    /// Run it as a turn, marked as a scheduled run.
    Job,
}

/// Whether a message is a scheduled occurrence, and which kind.
pub fn kind_of(message: &Inbound) -> Option<Occurrence> {
    if !message.id.starts_with("task:") {
        return None;
    }
    match message.sender_id.as_str() {
        REMINDER_SENDER => Some(Occurrence::Reminder),
        JOB_SENDER => Some(Occurrence::Job),
        _ => None,
    }
}

/// Whether a sender id is one of the scheduler's (adapters' messages never may be).
pub fn is_reserved_sender(sender: &str) -> bool {
    sender.starts_with("clawpen:")
}

/// Why an occurrence runs, for what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// On time.
    Due,
    /// Late: clawpen was down when it was due (`catch_up = "once"`).
    Late,
    /// Asked for with `/run`.
    Now,
}

/// The inbound message of `task`'s occurrence due at `due`, entering at `now`.
pub fn message(task: &TaskRecord, due: i64, now: i64, why: Why) -> Inbound {
    let tz = spec::zone(&task.zone).unwrap_or(Tz::UTC);
    let when = spec::show(tz, due);
    let id = match why {
        Why::Now => format!("task:{}:run:{now}", task.id),
        Why::Due | Why::Late => format!("task:{}:{due}", task.id),
    };
    let late = match why {
        Why::Late => format!(" (late: it was due {when}, while clawpen was down)"),
        Why::Due | Why::Now => String::new(),
    };
    let (sender_id, text) = match &task.kind {
        TaskKind::Reminder { text } => (REMINDER_SENDER, format!("⏰ {text}{late}")),
        TaskKind::Job { prompt, check } => {
            let check = check
                .as_ref()
                .map(|c| {
                    format!(" Its check command `{c}` ran first; see its output below if any.")
                })
                .unwrap_or_default();
            let run = match why {
                Why::Now => "asked for now with /run".to_string(),
                Why::Due => format!("due {when}"),
                Why::Late => format!("due {when}, running late because clawpen was down"),
            };
            let text = format!(
                "[Scheduled run of task #{} “{}”, {run}.{check} This is not a message from \
                 the user: do what the task says and answer for the chat. Do not schedule \
                 new tasks because of it.]\n\n{prompt}",
                task.id, task.title
            );
            (JOB_SENDER, text)
        }
    };
    Inbound {
        id,
        conversation: task.conversation.clone(),
        sender_id: sender_id.to_string(),
        sender_name: format!("scheduled run of task #{}", task.id),
        text,
        attachments: Vec::new(),
        reply_to: None,
        addressed: true,
        at: u64::try_from(now).unwrap_or(0),
    }
}

/// The note delivered instead of an occurrence missed while clawpen was down, for a task
/// with `catch_up = "skip"`; `next` is its next run, if any.
pub fn skipped(task: &TaskRecord, due: i64, now: i64, next: Option<i64>) -> Inbound {
    let tz = spec::zone(&task.zone).unwrap_or(Tz::UTC);
    let next = next
        .map(|n| format!(" Next run: {}.", spec::show(tz, n)))
        .unwrap_or_default();
    Inbound {
        id: format!("task:{}:{due}", task.id),
        conversation: task.conversation.clone(),
        sender_id: REMINDER_SENDER.to_string(),
        sender_name: format!("scheduled task #{}", task.id),
        text: format!(
            "⏭ Task #{} “{}” was due {} while clawpen was down; it was skipped (its catch-up \
             policy is “skip”).{next}",
            task.id,
            task.title,
            spec::show(tz, due)
        ),
        attachments: Vec::new(),
        reply_to: None,
        addressed: true,
        at: u64::try_from(now).unwrap_or(0),
    }
}

/// A job's answer is marked as a scheduled run: this line goes before it (see
/// [`reply_heading`]).
pub fn job_heading(message: &Inbound) -> Option<String> {
    let id = clawpen_protocol::scheduled_task(&message.id)?;
    let title = message
        .text
        .split_once('“')
        .and_then(|(_, rest)| rest.split_once('”'))
        .map(|(title, _)| title)
        .unwrap_or("");
    Some(format!("⏰ Scheduled run of task #{id} “{title}”"))
}

/// What a reply answering `messages` shows before the agent's text: the heading of each
/// job run among them, then a blank line; empty when none is a job run.
pub fn reply_heading(messages: &[Inbound]) -> String {
    let mut heading: String = messages
        .iter()
        .filter_map(job_heading)
        .map(|line| line + "\n")
        .collect();
    if !heading.is_empty() {
        heading.push('\n');
    }
    heading
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CatchUp, StoredSchedule, TaskState};
    use clawpen_domain::ConversationKey;

    fn task(kind: TaskKind) -> TaskRecord {
        TaskRecord {
            id: 7,
            conversation: ConversationKey::new("telegram", "5"),
            title: "standup".into(),
            kind,
            schedule: StoredSchedule::Cron {
                expr: "0 9 * * 1-5".into(),
            },
            zone: "Europe/Berlin".into(),
            catch_up: CatchUp::Once,
            state: TaskState::Active,
            next_due: None,
            last_due: None,
            last_outcome: None,
            created_by: "5".into(),
            created_at: 0,
        }
    }

    #[test]
    fn occurrences_are_named_by_task_and_due_time_and_told_apart_by_sender() {
        let reminder = task(TaskKind::Reminder {
            text: "Send the standup".into(),
        });
        // Mon 30 Nov 2026 08:00 UTC = 09:00 CET.
        let due = 1_796_025_600;
        let message = message(&reminder, due, due + 3, Why::Due);
        assert_eq!(message.id, format!("task:7:{due}"));
        assert_eq!(message.text, "⏰ Send the standup");
        assert_eq!(kind_of(&message), Some(Occurrence::Reminder));
        let late = super::message(&reminder, due, due + 7200, Why::Late);
        assert_eq!(late.id, message.id, "late or not, one occurrence");
        assert!(
            late.text
                .contains("late: it was due Mon 30 Nov 2026 09:00 CET"),
            "{}",
            late.text
        );

        let job = task(TaskKind::Job {
            prompt: "Summarise my notes".into(),
            check: None,
        });
        let run = super::message(&job, due, due, Why::Due);
        assert_eq!(kind_of(&run), Some(Occurrence::Job));
        assert!(
            run.text
                .starts_with("[Scheduled run of task #7 “standup”, due Mon 30 Nov 2026 09:00 CET."),
            "{}",
            run.text
        );
        assert!(run.text.ends_with("\n\nSummarise my notes"));
        assert_eq!(
            job_heading(&run).as_deref(),
            Some("⏰ Scheduled run of task #7 “standup”")
        );
        let now = super::message(&job, due, due + 5, Why::Now);
        assert_eq!(now.id, format!("task:7:run:{}", due + 5));

        // A platform's message is never an occurrence, whatever its id says.
        let mut forged = message.clone();
        forged.sender_id = "5".into();
        assert_eq!(kind_of(&forged), None);
        assert!(is_reserved_sender(REMINDER_SENDER));
        assert!(!is_reserved_sender("local"));
        let skipped = skipped(&reminder, due, due + 7200, Some(due + 86_400));
        assert_eq!(kind_of(&skipped), Some(Occurrence::Reminder));
        assert!(skipped.text.contains("skipped"), "{}", skipped.text);
        assert!(
            skipped.text.contains("Next run: Tue 01 Dec 2026 09:00 CET"),
            "{}",
            skipped.text
        );
    }
}
