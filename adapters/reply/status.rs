//! The status line under a streaming reply: while a turn runs, the agent's latest status
//! ("running: cargo test") shows at the end of the reply's growing message, on a line of
//! its own, and goes once more text comes or the reply is final. It is never part of the
//! reply's text, and never persisted: a message a restart resumes loses it at its next
//! edit.

use std::borrow::Cow;

use super::split::{ends_in_code, measure};
use super::ReplyState;
use crate::Capabilities;

/// The longest status shown, in characters; the rest is cut.
const MAX_STATUS_CHARS: usize = 100;

impl ReplyState {
    /// Shows `line` under the growing part until more text comes or the reply is final;
    /// an empty line takes the status away. With no growing part yet (a turn whose first
    /// step is a tool), the status opens the reply's next message, which its text then
    /// fills.
    pub fn set_status(&mut self, line: &str) {
        self.status = status_line(line);
        if !self.status.is_empty() && self.parts.last().is_none_or(|p| p.sealed) {
            self.new_part(String::new());
        }
    }

    /// What part `index` should show now: its text, and under the growing part of a
    /// running reply the status line, when it fits in the message and the text does not
    /// end inside a code block (where the line would show as code).
    pub(super) fn shows(&self, index: usize, caps: &Capabilities, finished: bool) -> Cow<'_, str> {
        let Some(part) = self.parts.get(index) else {
            return Cow::Borrowed("");
        };
        let growing = !part.sealed && index + 1 == self.parts.len();
        if finished || !growing || self.status.is_empty() || ends_in_code(&part.text) {
            return Cow::Borrowed(&part.text);
        }
        let body = part.text.trim_end();
        let with = if body.is_empty() {
            self.status.clone()
        } else {
            format!("{body}\n\n{}", self.status)
        };
        if measure(&with, caps.length_unit) <= caps.max_len {
            Cow::Owned(with)
        } else {
            Cow::Borrowed(&part.text)
        }
    }
}

/// The line shown for a status from the box: one line, no backticks (which could open
/// code in the message), at most [`MAX_STATUS_CHARS`]; empty for a blank status.
fn status_line(status: &str) -> String {
    let words: Vec<&str> = status.split_whitespace().collect();
    let clean: String = words
        .join(" ")
        .chars()
        .filter(|c| *c != '`' && !c.is_control())
        .take(MAX_STATUS_CHARS)
        .collect();
    if clean.is_empty() {
        String::new()
    } else {
        format!("⚙️ {clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{caps, drain, edit, send};
    use super::*;
    use crate::reply::Op;

    #[test]
    fn a_status_shows_under_the_growing_message_until_more_text_comes() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        state.push("Let me run the tests.", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.set_status("running: cargo test");
        drain(&mut state, &caps, false, &mut log);
        state.push(" All pass.", &caps);
        drain(&mut state, &caps, true, &mut log);
        assert_eq!(
            log,
            [
                send(0, "Let me run the tests."),
                edit(0, "m0", "Let me run the tests.\n\n⚙️ running: cargo test"),
                edit(0, "m0", "Let me run the tests. All pass."),
            ]
        );
        assert_eq!(state.text, "Let me run the tests. All pass.");
    }

    #[test]
    fn a_status_before_any_text_opens_the_message_the_answer_then_fills() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        state.set_status("running: ls");
        drain(&mut state, &caps, false, &mut log);
        state.push("Two files.", &caps);
        drain(&mut state, &caps, true, &mut log);
        assert_eq!(
            log,
            [send(0, "⚙️ running: ls"), edit(0, "m0", "Two files.")]
        );
    }

    #[test]
    fn the_final_reply_never_shows_a_status() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        state.push("Working on it.", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.set_status("running: make");
        // The turn ends before the edit that would show it went out.
        drain(&mut state, &caps, true, &mut log);
        assert_eq!(log, [send(0, "Working on it.")]);
    }

    #[test]
    fn no_status_inside_a_code_block_nor_past_the_limit() {
        let (caps, mut state, mut log) = (caps(40, true), ReplyState::new(None), Vec::new());
        state.push("```sh\nls -l\n", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.set_status("running: ls -l");
        assert_eq!(
            state.next_op(&caps, false),
            None,
            "the status would show as code"
        );
        state.push("```\n", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.set_status("running: a command whose line is far too long for the message");
        assert_eq!(state.next_op(&caps, false), None, "it does not fit");
        state.set_status("running: ok");
        assert_eq!(
            state.next_op(&caps, false),
            Some(edit(0, "m0", "```sh\nls -l\n```\n\n⚙️ running: ok"))
        );
    }

    #[test]
    fn a_status_is_one_clean_line() {
        assert_eq!(
            status_line("running:\n`rm -rf`\t  build\u{7}"),
            "⚙️ running: rm -rf build"
        );
        assert_eq!(status_line(" \n "), "");
        assert_eq!(
            status_line(&"x".repeat(500)).chars().count(),
            3 + MAX_STATUS_CHARS
        );
    }

    #[test]
    fn drafts_show_the_status_too_and_the_sent_message_does_not() {
        let mut caps = caps(100, true);
        caps.has_drafts = true;
        let (mut state, mut log) = (ReplyState::new(None), Vec::new());
        state.push("Checking", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.set_status("running: df -h");
        drain(&mut state, &caps, false, &mut log);
        drain(&mut state, &caps, true, &mut log);
        let draft = |text: &str| Op::Draft {
            part: 0,
            text: text.into(),
        };
        assert_eq!(
            log,
            [
                draft("Checking"),
                draft("Checking\n\n⚙️ running: df -h"),
                send(0, "Checking"),
            ]
        );
    }
}
