//! Scheduled tasks in the protocol (version 3): what the agent asks the bridge to
//! schedule, and how a scheduled run is told apart from a user's message.

use serde::{Deserialize, Serialize};

/// The task a scheduled run belongs to, read from the id of its [`crate::TurnMessage`]
/// (`task:<id>:<due>`, and `task:<id>:run:<at>` for a run asked for with `/run`).
pub fn scheduled_task(message_id: &str) -> Option<u64> {
    let rest = message_id.strip_prefix("task:")?;
    let (id, _) = rest.split_once(':')?;
    id.parse().ok()
}

/// A task as the model asks for it (the `schedule_task` tool's arguments), all text, for
/// the bridge to check: exactly one of `at`, `in`, `every` and `cron` says when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// A short title.
    #[serde(default)]
    pub title: String,
    /// `reminder` (deliver `text`) or `job` (run `text` as a prompt).
    #[serde(default)]
    pub kind: String,
    /// The reminder's text, or the job's prompt.
    #[serde(default)]
    pub text: String,
    /// Once, at this local date-time (`2026-12-01 09:00`) or RFC 3339 instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Once, after this long from now (`20m`, `2h`).
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Repeatedly, every this long (`30m`, `1d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// At the matches of a five-field cron expression (`0 9 * * 1-5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// An IANA time zone; the conversation's by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `once` (default) or `skip`: occurrences missed while clawpen was down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
    /// Jobs: a shell command run in the box first; the model runs only if it exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, FromAgent, Request};

    #[test]
    fn task_requests_round_trip_and_scheduled_runs_are_told_by_their_id(
    ) -> Result<(), serde_json::Error> {
        let request = FromAgent::Request {
            id: 9,
            request: Request::ScheduleTask {
                task: Box::new(TaskSpec {
                    title: "stretch".into(),
                    kind: "reminder".into(),
                    text: "Stretch!".into(),
                    after: Some("20m".into()),
                    ..TaskSpec::default()
                }),
            },
            window: Some(8),
        };
        let line = encode(&request)?;
        let text = String::from_utf8_lossy(&line).into_owned();
        assert!(text.contains(r#""kind":"schedule_task""#), "{text}");
        assert!(text.contains(r#""in":"20m""#), "{text}");
        assert_eq!(decode::<FromAgent>(&line)?, request);
        let list = encode(&FromAgent::Request {
            id: 10,
            request: Request::ListTasks,
            window: None,
        })?;
        assert!(String::from_utf8_lossy(&list).contains(r#""kind":"list_tasks""#));
        assert_eq!(scheduled_task("task:12:1764000000"), Some(12));
        assert_eq!(scheduled_task("task:12:run:1764000000"), Some(12));
        for other in ["12", "task:", "task:x:1", "tasks:1:2"] {
            assert_eq!(scheduled_task(other), None, "{other}");
        }
        Ok(())
    }
}
