//! The reply-streaming policy, with no I/O: how a growing reply maps onto platform messages.
//!
//! An agent's reply arrives in deltas while its turn runs and is shown as one or more
//! platform messages ("parts"), each within the platform's length limit:
//! - [`split`] cuts a text at the gentlest place in the second half of a message: a blank
//!   line, then a line break, then a space (earlier ones only if the second half has none),
//!   and only as a last resort between two characters. A fenced code block stays
//!   whole when it fits in one message; a longer one is closed at the end of a part and
//!   reopened (with its info string) at the start of the next, so that every part renders.
//! - While streaming ([`ReplyState::push`]) only the last part grows. When it would exceed the
//!   limit it is cut the same way: its first piece is *sealed*, so its text never changes again
//!   and it is never re-split, and a new part begins with the rest.
//! - [`ReplyState::next_op`] names the platform operation that brings the messages closer to
//!   the text, and [`EditThrottle`] says when an edit may go. Time is always passed in.
//! - On a platform with drafts (`caps.has_drafts`), the growing part is shown as a draft
//!   instead of a sent-then-edited message, and sent as a real message once it is final.
//! - A growing part is first sent, drafted or edited only once it shows something
//!   ([`markdown::has_visible_text`]): never an empty message, never a lone code fence. At
//!   the end of a turn whatever text there is goes out, for the adapter to render visibly.
//! - A part whose message the platform lost ([`ReplyState::lost`]) is sent again.
//! - A part never ends inside an inline Markdown span ([`markdown`]) while there is any other
//!   place to cut, because adapters format each part on its own.

use serde::{Deserialize, Serialize};

use crate::{Capabilities, MessageRef};

pub(crate) mod markdown;
mod snapshot;
mod split;
mod status;
mod throttle;

pub use split::{measure, split};
pub use throttle::EditThrottle;

pub use snapshot::{Snapshot, SnapshotPart};
use split::{cut, Cut, Fence};

/// Everything known about one turn's reply: the agent's text and the platform messages
/// ("reply parts") carrying it. Persisted after every step, so that a restart continues the
/// same messages instead of repeating them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyState {
    /// The agent's full text so far. Grow it with [`ReplyState::push`], which keeps the parts
    /// in step; changing it directly leaves them stale.
    pub text: String,
    /// The platform messages carrying the text, in order: sealed parts, then at most one
    /// growing part. A part exists only once it has something to show.
    pub parts: Vec<Part>,
    /// The inbound message the reply answers, for platforms that thread replies.
    pub reply_to: Option<MessageRef>,
    /// Byte offset in `text` where the growing part's text begins: sealed parts own the rest.
    #[serde(default)]
    consumed: usize,
    /// The code block that a sealed part closed early, reopened at the growing part's start.
    #[serde(default)]
    fence: Option<Fence>,
    /// Messages of an answer that started over ([`ReplyState::restart`]), with what they
    /// show: the new answer's parts take them over in order, editing instead of sending.
    #[serde(default)]
    reuse: std::collections::VecDeque<(MessageRef, String)>,
    /// The line shown under the growing part while the turn runs (the agent's latest
    /// status, see [`ReplyState::set_status`]); never persisted.
    #[serde(skip)]
    status: String,
}

/// One platform message of a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The platform's id, once sent.
    pub message: Option<MessageRef>,
    /// The text the platform shows for it now.
    pub shown: String,
    /// The text it should show: final once `sealed`, else the growing tail of the reply.
    #[serde(default)]
    pub text: String,
    /// A later part has taken over, so `text` is final and it only awaits delivery.
    #[serde(default)]
    pub sealed: bool,
    /// The text its draft shows, while it is streamed as a draft. Not persisted: a draft is
    /// ephemeral on the platform, so after a restart it is shown afresh.
    #[serde(skip)]
    pub drafted: String,
}

/// A platform operation that brings a reply's messages closer to its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Send part `part` as a new message.
    Send {
        /// Index into [`ReplyState::parts`].
        part: usize,
        /// The text to send.
        text: String,
    },
    /// Replace the text of part `part`, already sent as `message`.
    Edit {
        /// Index into [`ReplyState::parts`].
        part: usize,
        /// The platform message to edit.
        message: MessageRef,
        /// Its new text.
        text: String,
    },
    /// Show the growing part `part`, not yet sent, as a draft (platforms with drafts).
    Draft {
        /// Index into [`ReplyState::parts`].
        part: usize,
        /// The text to show.
        text: String,
    },
}

impl ReplyState {
    /// A reply not yet started.
    pub fn new(reply_to: Option<MessageRef>) -> Self {
        Self {
            reply_to,
            ..Self::default()
        }
    }

    /// Whether there is nothing to show: no non-whitespace text has arrived. A turn that
    /// finishes like this gets an error message from the caller instead of a reply.
    #[cfg(test)]
    pub fn is_blank(&self) -> bool {
        self.parts.is_empty()
    }

    /// Appends agent text and re-plans the growing part, sealing whatever no longer fits in
    /// one message of `caps.max_len` (hence the capabilities: where a part ends depends on the
    /// platform). Sealed parts are never looked at again, so pushes stay cheap.
    pub fn push(&mut self, delta: &str, caps: &Capabilities) {
        if !delta.is_empty() {
            // The agent has moved on from what its status said.
            self.status.clear();
        }
        self.text.push_str(delta);
        loop {
            let rest = self.text.get(self.consumed..).unwrap_or_default();
            match cut(rest, self.fence.as_ref(), caps.max_len, caps.length_unit) {
                Cut::Fits(text) => return self.set_growing(text),
                Cut::Split { head, next, fence } => {
                    self.set_growing(head);
                    if let Some(last) = self.parts.last_mut() {
                        last.sealed = true;
                    }
                    self.consumed += next;
                    self.fence = fence;
                }
            }
        }
    }

    fn set_growing(&mut self, text: String) {
        match self.parts.last_mut() {
            Some(last) if !last.sealed => last.text = text,
            _ if !text.is_empty() => self.new_part(text),
            _ => {}
        }
    }

    /// Adds a growing part, in the next message of an answer that started over if one is
    /// left.
    fn new_part(&mut self, text: String) {
        let (message, shown) = match self.reuse.pop_front() {
            Some((message, shown)) => (Some(message), shown),
            None => (None, String::new()),
        };
        self.parts.push(Part {
            text,
            message,
            shown,
            ..Part::default()
        })
    }

    /// The answer starts over (its producer lost it and answers again): the new text
    /// replaces the old in the messages already shown, which are edited rather than sent
    /// again. If the new answer needs fewer messages, the extra ones keep their old text.
    pub fn restart(&mut self) {
        let old = std::mem::take(&mut self.parts);
        self.text.clear();
        self.consumed = 0;
        self.fence = None;
        let shown = old.into_iter().filter_map(|p| Some((p.message?, p.shown)));
        let mut reuse: std::collections::VecDeque<_> = shown.collect();
        reuse.extend(self.reuse.drain(..));
        self.reuse = reuse;
    }

    /// The next operation due, or `None` when every part shows what it should for now.
    ///
    /// Parts are sent in order, and sends come before edits so that new text is never held
    /// back by a throttled edit. Without `caps.can_edit` a part is sent only once its text is
    /// final (sealed, or the turn `finished`), so nothing needs editing; with it, a part is
    /// sent as soon as it has text and edited as it grows. With `caps.has_drafts` the growing
    /// part is drafted instead and sent only once final, as without edits. A blank reply
    /// yields nothing.
    pub fn next_op(&self, caps: &Capabilities, finished: bool) -> Option<Op> {
        if let Some((part, p)) = self
            .parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.message.is_none())
        {
            let text = self.shows(part, caps, finished);
            // A growing part is shown only once it shows something: a platform refuses an
            // empty message, and a reply that opens with a code fence would otherwise be
            // nothing but an empty block until its first line of code arrives.
            let visible =
                !text.is_empty() && (p.sealed || finished || markdown::has_visible_text(&text));
            if visible && (p.sealed || finished || (caps.can_edit && !caps.has_drafts)) {
                return Some(Op::Send {
                    part,
                    text: text.into_owned(),
                });
            }
            if visible && caps.has_drafts && p.drafted != text {
                return Some(Op::Draft {
                    part,
                    text: text.into_owned(),
                });
            }
        }
        if !caps.can_edit {
            return None;
        }
        self.parts.iter().enumerate().find_map(|(part, p)| {
            let message = p.message.as_ref()?;
            let text = self.shows(part, caps, finished);
            let due = p.shown != text
                && !text.is_empty()
                && (finished || p.sealed || markdown::has_visible_text(&text));
            due.then(|| Op::Edit {
                part,
                message: message.clone(),
                text: text.into_owned(),
            })
        })
    }

    /// Records an operation the platform carried out; `sent` is the id a `Send` returned (a
    /// send without one is not recorded, as no edit could reach it). Called right after each
    /// success, so a send that went through is never repeated.
    pub fn applied(&mut self, op: &Op, sent: Option<MessageRef>) {
        match op {
            Op::Send { part, text } => {
                if let (Some(p), Some(message)) = (self.parts.get_mut(*part), sent) {
                    p.message = Some(message);
                    p.shown.clone_from(text);
                }
            }
            Op::Edit { part, text, .. } => {
                if let Some(p) = self.parts.get_mut(*part) {
                    p.shown.clone_from(text);
                }
            }
            Op::Draft { part, text } => {
                if let Some(p) = self.parts.get_mut(*part) {
                    p.drafted.clone_from(text);
                }
            }
        }
    }

    /// The platform lost the message of part `part` (someone deleted it): it is sent again
    /// as a new message, with the text it should show, and the reply goes on there.
    pub fn lost(&mut self, part: usize) {
        if let Some(p) = self.parts.get_mut(part) {
            p.message = None;
            p.shown.clear();
            p.drafted.clear();
        }
    }

    /// The draft being shown now, to show again before the platform lets it lapse: the
    /// growing part when it is drafted and not yet sent.
    pub fn current_draft(&self) -> Option<Op> {
        let (part, p) = self
            .parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.message.is_none())?;
        (!p.sealed && !p.drafted.is_empty()).then(|| Op::Draft {
            part,
            text: p.drafted.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::split::tests::{balanced, long_text, reassembles};
    use super::*;
    use crate::LengthUnit;

    pub(super) fn caps(max_len: usize, can_edit: bool) -> Capabilities {
        Capabilities {
            max_len,
            length_unit: LengthUnit::Chars,
            can_edit,
            has_drafts: false,
            has_threads: false,
            min_edit_interval: Duration::from_secs(1),
            typing_interval: None,
            status_in_reply: false,
        }
    }

    /// Carries out every operation due, as a platform that never fails would.
    pub(super) fn drain(
        state: &mut ReplyState,
        caps: &Capabilities,
        finished: bool,
        log: &mut Vec<Op>,
    ) {
        while let Some(op) = state.next_op(caps, finished) {
            let sent = matches!(op, Op::Send { .. }).then(|| MessageRef(format!("m{}", log.len())));
            state.applied(&op, sent);
            log.push(op);
            assert!(log.len() < 100_000, "operations never settle");
        }
    }

    pub(super) fn send(part: usize, text: &str) -> Op {
        Op::Send {
            part,
            text: text.into(),
        }
    }

    pub(super) fn edit(part: usize, message: &str, text: &str) -> Op {
        Op::Edit {
            part,
            message: MessageRef(message.into()),
            text: text.into(),
        }
    }

    #[test]
    fn streaming_sends_once_then_edits_as_text_grows() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        for delta in ["\n", "Hel", "lo", ",", " ", "world", "  "] {
            state.push(delta, &caps);
            drain(&mut state, &caps, false, &mut log);
        }
        drain(&mut state, &caps, true, &mut log);
        let expected = [
            send(0, "Hel"),
            edit(0, "m0", "Hello"),
            edit(0, "m0", "Hello,"),
            edit(0, "m0", "Hello, world"),
        ];
        assert_eq!(log, expected);
    }

    #[test]
    fn an_answer_that_starts_over_replaces_the_text_in_the_same_message() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        state.push("The answer broke o", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.restart();
        state.push("The answer, whole.", &caps);
        drain(&mut state, &caps, true, &mut log);
        assert_eq!(
            log,
            [
                send(0, "The answer broke o"),
                edit(0, "m0", "The answer, whole.")
            ]
        );
        assert_eq!(state.text, "The answer, whole.");
    }

    #[test]
    fn crossing_the_limit_seals_the_part_and_starts_a_new_one() {
        let (caps, mut state, mut log) = (caps(20, true), ReplyState::new(None), Vec::new());
        state.push("aaaa bbbb", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.push(" cccc dddd ee", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.push("ee ffff", &caps);
        drain(&mut state, &caps, true, &mut log);
        let expected = [
            send(0, "aaaa bbbb"),
            send(1, "ee"),
            edit(0, "m0", "aaaa bbbb cccc dddd"),
            edit(1, "m1", "eeee ffff"),
        ];
        assert_eq!(log, expected);
        assert!(state.parts[0].sealed && !state.parts[1].sealed);
    }

    #[test]
    fn a_part_is_first_shown_once_it_has_visible_text() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        state.push("```sh\n", &caps);
        drain(&mut state, &caps, false, &mut log);
        assert!(log.is_empty(), "an empty code block went out: {log:?}");
        state.push("ls\n```", &caps);
        drain(&mut state, &caps, false, &mut log);
        assert_eq!(log, [send(0, "```sh\nls\n```")]);
        // At the end, whatever the text is goes out: the adapter renders it visibly.
        let (mut empty, mut log) = (ReplyState::new(None), Vec::new());
        empty.push("```\n```", &caps);
        drain(&mut empty, &caps, false, &mut log);
        assert!(log.is_empty());
        drain(&mut empty, &caps, true, &mut log);
        assert_eq!(log, [send(0, "```\n```")]);
    }

    #[test]
    fn a_lost_message_is_sent_again_with_the_parts_text() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        state.push("Hello", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.lost(0);
        state.push(" again", &caps);
        drain(&mut state, &caps, false, &mut log);
        assert_eq!(log, [send(0, "Hello"), send(0, "Hello again")]);
        assert_eq!(state.parts[0].message, Some(MessageRef("m1".into())));
    }

    #[test]
    fn without_edits_a_part_goes_out_only_when_final() {
        let (caps, mut state, mut log) = (caps(20, false), ReplyState::new(None), Vec::new());
        for word in ["aaaa ", "bbbb ", "cccc ", "dddd "] {
            state.push(word, &caps);
            drain(&mut state, &caps, false, &mut log);
        }
        assert!(log.is_empty(), "{log:?}");
        state.push("eeee", &caps);
        drain(&mut state, &caps, false, &mut log);
        assert_eq!(log, [send(0, "aaaa bbbb cccc dddd")]);
        drain(&mut state, &caps, true, &mut log);
        assert_eq!(log, [send(0, "aaaa bbbb cccc dddd"), send(1, "eeee")]);
    }

    #[test]
    fn streamed_parts_show_the_whole_text_and_sealed_parts_never_change() {
        let text = long_text();
        for can_edit in [true, false] {
            let (caps, mut state, mut log) =
                (caps(1000, can_edit), ReplyState::new(None), Vec::new());
            let (mut sealed, mut rest, mut step) = (Vec::<String>::new(), text.as_str(), 0);
            while !rest.is_empty() {
                step = step % 13 + 1;
                let at = (0..=step.min(rest.len()))
                    .rev()
                    .find(|&i| rest.is_char_boundary(i))
                    .unwrap_or(0);
                state.push(&rest[..at], &caps);
                rest = &rest[at..];
                drain(&mut state, &caps, false, &mut log);
                let now: Vec<String> = state
                    .parts
                    .iter()
                    .filter(|p| p.sealed)
                    .map(|p| p.text.clone())
                    .collect();
                assert!(now.starts_with(&sealed), "a sealed part changed");
                sealed = now;
            }
            drain(&mut state, &caps, true, &mut log);
            let shown: Vec<String> = state.parts.iter().map(|p| p.shown.clone()).collect();
            for (part, shown) in state.parts.iter().zip(&shown) {
                assert_eq!(&part.text, shown);
                assert!(
                    measure(shown, LengthUnit::Chars) <= 1000 && balanced(shown),
                    "{shown:?}"
                );
            }
            assert!(reassembles(&text, &shown), "streamed parts lost text");
            let sends = log
                .iter()
                .filter(|op| matches!(op, Op::Send { .. }))
                .count();
            assert_eq!(sends, state.parts.len(), "one message per part");
            assert!(can_edit || sends == log.len(), "edited without can_edit");
        }
    }

    #[test]
    fn a_resumed_reply_keeps_editing_its_messages() {
        let (caps, mut state, mut log) = (caps(20, true), ReplyState::new(None), Vec::new());
        state.push("aaaa bbbb cccc dddd eeee", &caps);
        drain(&mut state, &caps, false, &mut log);
        let mut resumed = state.clone(); // what the store hands back after a restart
        resumed.push(" ffff", &caps);
        assert_eq!(
            resumed.next_op(&caps, false),
            Some(edit(1, "m1", "eeee ffff"))
        );
    }

    #[test]
    fn a_blank_reply_asks_for_nothing() {
        let (caps, mut state) = (caps(20, true), ReplyState::new(None));
        state.push(" \n\n ", &caps);
        assert!(state.is_blank());
        assert_eq!(state.next_op(&caps, true), None);
    }

    fn draft(part: usize, text: &str) -> Op {
        Op::Draft {
            part,
            text: text.into(),
        }
    }

    #[test]
    fn with_drafts_the_growing_part_is_drafted_and_sent_once_final() {
        let caps = Capabilities {
            has_drafts: true,
            ..caps(20, true)
        };
        let (mut state, mut log) = (ReplyState::new(None), Vec::new());
        state.push("aaaa bbbb", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.push(" cccc", &caps);
        drain(&mut state, &caps, false, &mut log);
        assert_eq!(state.current_draft(), Some(draft(0, "aaaa bbbb cccc")));
        state.push(" dddd eeee", &caps);
        drain(&mut state, &caps, false, &mut log);
        drain(&mut state, &caps, true, &mut log);
        let expected = [
            draft(0, "aaaa bbbb"),
            draft(0, "aaaa bbbb cccc"),
            send(0, "aaaa bbbb cccc dddd"),
            draft(1, "eeee"),
            send(1, "eeee"),
        ];
        assert_eq!(log, expected);
        assert_eq!(state.current_draft(), None, "nothing left to draft");
        let restarted: ReplyState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap_or_default())
                .unwrap_or_default();
        assert!(restarted.parts.iter().all(|p| p.drafted.is_empty()));
    }
}
