//! Turn bookkeeping with no I/O: ids, what the agent is given, what the user is told.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clawpen_adapters::Inbound;
use clawpen_protocol::TurnMessage;

use crate::sandbox::BoxExit;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A turn id unique across restarts: wall-clock nanoseconds plus a process counter.
pub fn turn_id(counter: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("t{nanos:x}-{counter}")
}

/// What the agent is given of an inbound message.
pub fn turn_message(inbound: &Inbound) -> TurnMessage {
    TurnMessage {
        id: inbound.id.clone(),
        sender: inbound.sender_name.clone(),
        at: inbound.at,
        text: inbound.text.clone(),
        addressed: inbound.addressed,
        attachments: Vec::new(),
    }
}

/// A file name safe to use inside the workspace: no separators, no leading dots.
pub fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() {
        "file".into()
    } else {
        cleaned.to_string()
    }
}

/// The text appended to a reply when the turn failed.
pub fn error_text(reply_so_far: &str, message: &str) -> String {
    let line = format!("⚠️ {message}");
    if reply_so_far.trim().is_empty() {
        line
    } else {
        format!("\n\n{line}")
    }
}

/// Why a box ended a turn, in words for the user.
pub fn box_gone_message(exit: Option<&BoxExit>, stalled: Option<Duration>) -> String {
    let cause = match (stalled, exit) {
        (Some(after), _) => format!(
            "the agent did not answer for {} s and its box was stopped",
            after.as_secs()
        ),
        (None, Some(exit)) if exit.oom_killed => {
            "the box ran out of memory and was stopped".to_string()
        }
        (
            None,
            Some(BoxExit {
                exit_code: Some(code),
                ..
            }),
        ) => format!("the box stopped (exit code {code})"),
        (None, Some(_)) => "the connection to the box was lost".to_string(),
        (None, None) => "the box was removed".to_string(),
    };
    format!(
        "This turn failed: {cause}. Your workspace is intact; send your message again to retry."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_follow_the_partial_reply_on_a_new_paragraph() {
        assert_eq!(error_text("", "boom"), "⚠️ boom");
        assert_eq!(error_text("partial", "boom"), "\n\n⚠️ boom");
    }

    #[test]
    fn box_failures_are_explained() {
        let oom = BoxExit {
            running: false,
            exit_code: Some(137),
            oom_killed: true,
        };
        assert!(box_gone_message(Some(&oom), None).contains("out of memory"));
        let killed = BoxExit {
            running: false,
            exit_code: Some(137),
            oom_killed: false,
        };
        assert!(box_gone_message(Some(&killed), None).contains("exit code 137"));
        assert!(box_gone_message(None, Some(Duration::from_secs(120))).contains("120 s"));
    }

    #[test]
    fn file_names_stay_inside_the_workspace() {
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_name(".env"), "env");
        assert_eq!(safe_file_name(""), "file");
        assert_eq!(safe_file_name("report 2026.pdf"), "report_2026.pdf");
    }

    #[test]
    fn turn_ids_differ() {
        assert_ne!(turn_id(1), turn_id(2));
    }
}
