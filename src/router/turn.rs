//! Turn bookkeeping with no I/O: ids, what the agent is given, what the user is told.

use clawpen_domain::TurnId;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clawpen_adapters::{AdapterError, Inbound};
use clawpen_protocol::TurnMessage;

use crate::sandbox::{BoxExit, SandboxError};

/// A file that could not be carried between a chat and a box's workspace: the platform's
/// side or the box's failed; either says what went wrong in its own words.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// The platform would not give or take the file.
    #[error(transparent)]
    Chat(#[from] AdapterError),
    /// The box's workspace would not take or give it.
    #[error(transparent)]
    Box(#[from] SandboxError),
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A turn id unique across restarts: wall-clock nanoseconds plus a process counter.
pub fn turn_id(counter: u64) -> TurnId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    TurnId(format!("t{nanos:x}-{counter}"))
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

/// Why the bridge stopped a box in the middle of a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// No sign of life from the box for this long.
    Stalled(Duration),
    /// The turn ran this long in all, the most a turn may.
    TooLong(Duration),
    /// The box kept writing past its reply's limit of this many KiB.
    Flooding(u64),
    /// The box's agent speaks this protocol version, which the bridge cannot use.
    Incompatible(u32),
    /// The user stopped the turn and the box did not end it within this.
    Unstoppable(Duration),
}

impl Stopped {
    /// The cause, in words for the user.
    fn cause(self) -> String {
        match self {
            Self::Stalled(after) => format!(
                "the agent did not answer for {} s and its box was stopped",
                after.as_secs()
            ),
            Self::TooLong(after) => format!(
                "it ran for {}, the most a turn may, and its box was stopped",
                minutes(after)
            ),
            Self::Flooding(kb) => {
                format!("the box kept writing past the reply limit of {kb} KB and was stopped")
            }
            Self::Unstoppable(after) => format!(
                "its box did not stop within {} s of being asked and was stopped",
                after.as_secs()
            ),
            Self::Incompatible(version) => format!(
                "the box's agent speaks protocol version {version}, which this clawpen cannot \
                 use, so the box was replaced"
            ),
        }
    }
}

/// `30 min`, or seconds when under a minute.
fn minutes(d: Duration) -> String {
    match d.as_secs() {
        s if s < 60 => format!("{s} s"),
        s => format!("{} min", s / 60),
    }
}

/// Why a box ended a turn, in words for the user.
pub fn box_gone_message(exit: Option<&BoxExit>, stopped: Option<Stopped>) -> String {
    let cause = match (stopped, exit) {
        (Some(stopped), _) => stopped.cause(),
        // Gone, or going: `docker rm -f` kills first, so the box would also show 137.
        (None, None) => "the box was removed".to_string(),
        (None, Some(exit)) if exit.removing => "the box was removed".to_string(),
        // The bridge stopped it (over its workspace quota): its own words say why and what
        // to do, so the usual advice to retry does not follow.
        (
            None,
            Some(BoxExit {
                stopped_for: Some(reason),
                ..
            }),
        ) => return format!("This turn failed: the box was stopped: {reason}."),
        (None, Some(exit)) if exit.oom_killed => {
            "the box ran out of memory and was stopped".to_string()
        }
        (None, Some(exit)) if exit.running => "the connection to the box was lost".to_string(),
        (None, Some(exit)) => match exit.exit_code {
            // SIGKILL, and the kernel's memory killer is reported above: `docker kill` or
            // the engine killing it (or, rarely, a process in the box killing its agent,
            // which the box's init reports the same way).
            Some(137) => "the box was stopped from outside (killed)".to_string(),
            // The agent exits 0 only on a stop signal or when its input ends, and the bridge
            // keeps its input open through a turn: so `docker stop`, or the engine shutting
            // down. 143 is SIGTERM itself, should the agent not get to handle it.
            Some(0 | 143) => "the box was stopped from outside".to_string(),
            Some(code) => format!("the agent process in the box exited with code {code}"),
            None => "the box stopped".to_string(),
        },
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

    /// A box that stopped with `code`.
    fn exited(code: i64) -> BoxExit {
        BoxExit {
            running: false,
            exit_code: Some(code),
            oom_killed: false,
            removing: false,
            stopped_for: None,
        }
    }

    #[test]
    fn a_box_the_bridge_stopped_is_explained_in_the_bridges_words() {
        let stopped = BoxExit {
            stopped_for: Some("its workspace is over the 5 MB limit (8 MB used)".into()),
            ..exited(137)
        };
        assert_eq!(
            box_gone_message(Some(&stopped), None),
            "This turn failed: the box was stopped: its workspace is over the 5 MB limit (8 MB used)."
        );
    }

    #[test]
    fn box_failures_are_explained() {
        let oom = BoxExit {
            oom_killed: true,
            ..exited(137)
        };
        assert!(box_gone_message(Some(&oom), None).contains("ran out of memory"));
        let stalled = Stopped::Stalled(Duration::from_secs(120));
        assert!(box_gone_message(None, Some(stalled)).contains("120 s"));
        let long = Stopped::TooLong(Duration::from_secs(1800));
        assert!(box_gone_message(None, Some(long)).contains("ran for 30 min"));
        let running = BoxExit {
            running: true,
            exit_code: None,
            ..exited(0)
        };
        assert!(box_gone_message(Some(&running), None).contains("connection to the box was lost"));
        let message = box_gone_message(Some(&exited(137)), None);
        assert!(message.starts_with("This turn failed: "), "{message}");
        assert!(
            message.ends_with("send your message again to retry."),
            "{message}"
        );
    }

    #[test]
    fn a_box_removed_from_outside_is_called_removed_not_an_exit_code() {
        let removed = "This turn failed: the box was removed. Your workspace is intact; send your message again to retry.";
        // Gone already, or caught while `docker rm -f` removes it (it was killed first).
        assert_eq!(box_gone_message(None, None), removed);
        let removing = BoxExit {
            removing: true,
            ..exited(137)
        };
        assert_eq!(box_gone_message(Some(&removing), None), removed);
    }

    #[test]
    fn a_box_stopped_from_outside_is_told_apart_from_an_agent_that_exited() {
        let said = |code| box_gone_message(Some(&exited(code)), None);
        assert!(
            said(137).contains("the box was stopped from outside (killed)"),
            "{}",
            said(137)
        );
        assert!(
            said(0).contains("the box was stopped from outside."),
            "{}",
            said(0)
        );
        assert!(
            said(143).contains("the box was stopped from outside."),
            "{}",
            said(143)
        );
        assert!(
            said(101).contains("the agent process in the box exited with code 101"),
            "{}",
            said(101)
        );
        for code in [0, 1, 101, 137, 143] {
            assert!(!said(code).contains("exit code"), "{}", said(code));
        }
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
