//! The scheduled-task tools: `schedule_task`, `list_tasks`, `pause_task`, `resume_task`,
//! `cancel_task`. The box holds no task list: each call is a request to the bridge
//! (protocol version 3), which checks it, stores it and answers in words for the model
//! (a new task's description and next runs). With a bridge too old to schedule, the tools
//! say so instead of sending a line it could not read.

use clawpen_protocol::{Request, ResponsePart, TaskSpec};
use serde_json::{json, Value};

use crate::provider::run::Out;
use crate::provider::wire::ToolSpec;
use crate::tunnel::Tunnel;

/// The names of the task tools.
pub const NAMES: &[&str] = &[
    "schedule_task",
    "list_tasks",
    "pause_task",
    "resume_task",
    "cancel_task",
];

/// The task tools as offered to the model.
pub fn specs() -> Vec<ToolSpec> {
    let id = json!({
        "type": "object",
        "properties": {"id": {"type": "integer", "description": "The task's number."}},
        "required": ["id"]
    });
    vec![
        ToolSpec {
            name: "schedule_task",
            description: "Schedule a reminder (its text is delivered to this chat as it is, no model involved) or a job (its text is a prompt you will run then, answering in this chat). Say when with exactly one of `at`, `in`, `every`, `cron`. Returns the task's number, its schedule in words and its next runs: confirm those to the user.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string", "description": "A short title."},
                    "kind": {"type": "string", "enum": ["reminder", "job"]},
                    "text": {"type": "string", "description": "Reminder: the text to deliver. Job: the prompt to run (self-contained: you will not see this conversation's request then)."},
                    "at": {"type": "string", "description": "Once, at this local date and time: YYYY-MM-DD HH:MM."},
                    "in": {"type": "string", "description": "Once, after this delay from now: 20m, 2h, 1d."},
                    "every": {"type": "string", "description": "Repeatedly, at this interval: 30m, 2h, 1d."},
                    "cron": {"type": "string", "description": "Five-field cron expression in local time: minute hour day-of-month month day-of-week (0 9 * * 1-5 = weekdays at 9:00)."},
                    "timezone": {"type": "string", "description": "IANA time zone (Europe/Berlin); default: the chat's."},
                    "catch_up": {"type": "string", "enum": ["once", "skip"], "description": "If clawpen was down when it was due: run once late (default) or skip."},
                    "check": {"type": "string", "description": "Jobs only: a shell command run first; the job runs only if it exits 0."}
                },
                "required": ["kind", "text"]
            }),
        },
        ToolSpec {
            name: "list_tasks",
            description: "List this chat's scheduled tasks with their numbers, schedules and next runs, and the chat's time zone and current time.",
            parameters: json!({"type": "object", "properties": {}}),
        },
        ToolSpec {
            name: "pause_task",
            description: "Pause one of this chat's tasks until resumed.",
            parameters: id.clone(),
        },
        ToolSpec {
            name: "resume_task",
            description: "Resume a paused task of this chat.",
            parameters: id.clone(),
        },
        ToolSpec {
            name: "cancel_task",
            description: "Delete one of this chat's tasks.",
            parameters: id,
        },
    ]
}

/// Runs one task tool; `Err` is a tool error the model reads.
pub async fn run(
    tunnel: &Tunnel,
    name: &str,
    input: &Value,
    out: &mut Out,
) -> Result<String, String> {
    if !tunnel.bridge_schedules() {
        return Err("this clawpen bridge is too old to schedule tasks".into());
    }
    let request = match name {
        "schedule_task" => {
            out.status("scheduling a task").await;
            Request::ScheduleTask {
                task: Box::new(task_spec(input)),
            }
        }
        "list_tasks" => {
            out.status("listing tasks").await;
            Request::ListTasks
        }
        "pause_task" => Request::PauseTask { id: id(input)? },
        "resume_task" => Request::ResumeTask { id: id(input)? },
        "cancel_task" => Request::CancelTask { id: id(input)? },
        other => return Err(format!("there is no tool called `{other}`")),
    };
    ask(tunnel, request).await
}

/// The tool's arguments as the bridge reads them; numbers become text, the rest is left
/// to the bridge to check.
fn task_spec(input: &Value) -> TaskSpec {
    let text = |key: &str| match input.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    TaskSpec {
        title: text("title").unwrap_or_default(),
        kind: text("kind").unwrap_or_default(),
        text: text("text").unwrap_or_default(),
        at: text("at"),
        after: text("in"),
        every: text("every"),
        cron: text("cron"),
        timezone: text("timezone"),
        catch_up: text("catch_up"),
        check: text("check"),
    }
}

/// The task id argument (models sometimes send `"#3"` or `"3"`).
fn id(input: &Value) -> Result<u64, String> {
    match input.get("id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().trim_start_matches('#').parse().ok(),
        _ => None,
    }
    .ok_or_else(|| "`id` must be a task's number".to_string())
}

/// Sends a request and reads its text answer.
async fn ask(tunnel: &Tunnel, request: Request) -> Result<String, String> {
    let mut response = tunnel.send(request).await.map_err(|e| e.to_string())?;
    let mut text = String::new();
    loop {
        match response.next().await.map_err(|e| e.to_string())? {
            ResponsePart::Head { .. } => {}
            ResponsePart::Body { data } => text.push_str(&data),
            ResponsePart::End => return Ok(text),
            ResponsePart::Failed { message } => return Err(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_become_a_spec_and_ids_are_read_leniently() {
        let spec = task_spec(&json!({
            "title": "stretch", "kind": "reminder", "text": "Stretch!", "in": "20m", "every": 3600
        }));
        assert_eq!(spec.after.as_deref(), Some("20m"));
        assert_eq!(spec.every.as_deref(), Some("3600"));
        assert_eq!(spec.cron, None);
        assert_eq!(id(&json!({"id": 3})), Ok(3));
        assert_eq!(id(&json!({"id": "#4"})), Ok(4));
        assert!(id(&json!({"id": "x"})).is_err());
        assert!(id(&json!({})).is_err());
        assert_eq!(specs().len(), NAMES.len());
    }
}
