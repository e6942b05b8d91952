//! What the model is told: the system prompt and the chat messages as text.
//!
//! The prompt files live in `prompts/` at the top of the repository and are built into the
//! binary, so a box needs no file besides the agent. Around them go, read fresh every turn,
//! the operator's instructions (a read-only mount) and the conversation's `MEMORY.md`
//! (which the model edits with its file tools), so changes to either take effect at once.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use clawpen_protocol::TurnMessage;

use super::memory::clip;

/// The agent's standing instructions.
pub const SYSTEM: &str = include_str!("../../../prompts/system.md");

/// The instructions for summarizing older history.
pub const COMPACT: &str = include_str!("../../../prompts/compact.md");

/// The memory file, relative to the workspace.
pub const MEMORY_FILE: &str = "MEMORY.md";

/// The most bytes of `MEMORY.md` or the instructions put in the prompt; past that the
/// model is told the file was cut, so it can tidy it up.
const MAX_INCLUDED: usize = 32 * 1024;

/// What goes around the built-in prompt.
#[derive(Debug)]
pub struct Context<'a> {
    /// The workspace directory.
    pub workspace: &'a Path,
    /// The operator's instructions file.
    pub instructions: &'a Path,
    /// The model answering.
    pub model: &'a str,
    /// Now, seconds since the epoch.
    pub now: u64,
}

/// The full system prompt for a turn.
pub fn system(context: &Context<'_>) -> String {
    let mut prompt = SYSTEM.trim_end().to_owned();
    prompt.push_str(&format!(
        "\n\n# Environment\n\n- Workspace: {} (tool paths are relative to it)\n- Now: {}\n- Model: {}\n",
        context.workspace.display(),
        timestamp(context.now),
        context.model,
    ));
    if let Some(instructions) = read(context.instructions) {
        prompt.push_str("\n# Operator instructions\n\n");
        prompt.push_str(instructions.trim_end());
        prompt.push('\n');
    }
    prompt.push_str(&format!("\n# {MEMORY_FILE}\n\n"));
    match read(&context.workspace.join(MEMORY_FILE)) {
        Some(memory) if !memory.trim().is_empty() => {
            prompt.push_str(memory.trim_end());
            prompt.push('\n');
        }
        _ => prompt.push_str("(empty: MEMORY.md does not exist yet)\n"),
    }
    prompt
}

/// A file's text, clipped; `None` when it cannot be read (usually: it does not exist).
fn read(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(clip(&text, MAX_INCLUDED))
}

/// Chat messages as one user entry: each with its time and sender, chatter marked as such,
/// attachments named. `follow_up` marks messages that came while the agent worked.
pub fn messages(messages: &[TurnMessage], follow_up: bool) -> String {
    let mut text = String::new();
    if follow_up {
        text.push_str("(New messages arrived while you were working.)\n");
    }
    for message in messages {
        if !text.is_empty() {
            text.push('\n');
        }
        let aside = if message.addressed {
            ""
        } else {
            " (group chatter, not addressed to you)"
        };
        text.push_str(&format!(
            "[{}] {}{aside}: {}",
            timestamp(message.at),
            message.sender,
            message.text
        ));
        if !message.attachments.is_empty() {
            text.push_str(&format!(
                "\n(attached, saved in the workspace: {})",
                message.attachments.join(", ")
            ));
        }
    }
    text
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the epoch.
pub fn timestamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sender: &str, text: &str, addressed: bool, attachments: &[&str]) -> TurnMessage {
        TurnMessage {
            id: "1".into(),
            sender: sender.into(),
            at: 1_700_000_000,
            text: text.into(),
            addressed,
            attachments: attachments.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(timestamp(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn messages_name_sender_time_chatter_and_attachments() {
        let text = messages(
            &[
                message("ann", "look at this", true, &["photo.jpg"]),
                message("bob", "lol", false, &[]),
            ],
            false,
        );
        assert_eq!(
            text,
            "[2023-11-14 22:13 UTC] ann: look at this\n(attached, saved in the workspace: photo.jpg)\n[2023-11-14 22:13 UTC] bob (group chatter, not addressed to you): lol"
        );
        assert!(messages(&[message("ann", "also", true, &[])], true).starts_with("(New messages"));
    }

    #[test]
    fn the_system_prompt_has_instructions_and_memory() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let instructions = dir.path().join("instructions.md");
        let context = Context {
            workspace: dir.path(),
            instructions: &instructions,
            model: "m1",
            now: 0,
        };
        let prompt = system(&context);
        assert!(prompt.starts_with(SYSTEM.trim_end()));
        assert!(!prompt.contains("# Operator instructions"));
        assert!(prompt.contains("MEMORY.md does not exist yet"));
        std::fs::write(&instructions, "Answer in French.")?;
        std::fs::write(dir.path().join(MEMORY_FILE), "- ann likes tea")?;
        let prompt = system(&context);
        assert!(prompt.contains("# Operator instructions\n\nAnswer in French."));
        assert!(prompt.contains("- ann likes tea"));
        assert!(prompt.contains("Model: m1"));
        Ok(())
    }
}
