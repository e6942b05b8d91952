//! A reply's state in plain public fields, for whoever keeps it across a restart.
//!
//! [`ReplyState`] keeps some of its bookkeeping private so that only its own methods keep
//! the parts in step. A store must still write all of it down and read it back; it does so
//! through a [`Snapshot`], and owns its own record type and format. A change to the reply's
//! fields then shows up here, at compile time, rather than as a silent change of what is on
//! disk.

use std::collections::VecDeque;

use super::{Fence, Part, ReplyState};
use crate::MessageRef;

/// Everything a [`ReplyState`] holds, but the ephemeral draft text of its parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The reply's text so far.
    pub text: String,
    /// Its platform messages, in order.
    pub parts: Vec<SnapshotPart>,
    /// The inbound message it answers.
    pub reply_to: Option<MessageRef>,
    /// Where the growing part's text begins in `text`.
    pub consumed: usize,
    /// A code block that a sealed part closed early: its backticks and info string.
    pub fence: Option<(usize, String)>,
    /// Messages of an answer that started over, with what they show, to be reused.
    pub reuse: Vec<(MessageRef, String)>,
}

/// One platform message of a [`Snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPart {
    /// The platform's id, once sent.
    pub message: Option<MessageRef>,
    /// What the platform shows for it.
    pub shown: String,
    /// What it should show.
    pub text: String,
    /// Whether a later part has taken over.
    pub sealed: bool,
}

impl ReplyState {
    /// The state in plain fields.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            text: self.text.clone(),
            parts: self
                .parts
                .iter()
                .map(|p| SnapshotPart {
                    message: p.message.clone(),
                    shown: p.shown.clone(),
                    text: p.text.clone(),
                    sealed: p.sealed,
                })
                .collect(),
            reply_to: self.reply_to.clone(),
            consumed: self.consumed,
            fence: self.fence.as_ref().map(|f| {
                let (ticks, info) = f.parts();
                (ticks, info.to_string())
            }),
            reuse: self.reuse.iter().cloned().collect(),
        }
    }

    /// The state a snapshot recorded. An offset past the text (a damaged record) is
    /// brought back inside it, so that nothing slices out of bounds later.
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut consumed = snapshot.consumed.min(snapshot.text.len());
        while !snapshot.text.is_char_boundary(consumed) {
            consumed -= 1;
        }
        Self {
            text: snapshot.text,
            parts: snapshot
                .parts
                .into_iter()
                .map(|p| Part {
                    message: p.message,
                    shown: p.shown,
                    text: p.text,
                    sealed: p.sealed,
                    drafted: String::new(),
                })
                .collect(),
            reply_to: snapshot.reply_to,
            consumed,
            fence: snapshot
                .fence
                .map(|(ticks, info)| Fence::from_parts(ticks, info)),
            reuse: snapshot.reuse.into_iter().collect::<VecDeque<_>>(),
            // A status is of the moment: after a restart the next one shows.
            status: String::new(),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;
    use crate::{Capabilities, LengthUnit};
    use std::time::Duration;

    #[test]
    fn a_snapshot_gives_back_the_same_reply() {
        let caps = Capabilities {
            max_len: 20,
            length_unit: LengthUnit::Chars,
            can_edit: true,
            has_drafts: false,
            has_threads: false,
            min_edit_interval: Duration::ZERO,
            typing_interval: None,
            status_in_reply: false,
        };
        let mut reply = ReplyState::new(Some(MessageRef("1".into())));
        reply.push("```rust\nlet a = 1;\nlet b = 2;\nlet c = 3;\n", &caps);
        let mut id = 10;
        while let Some(op) = reply.next_op(&caps, false) {
            reply.applied(&op, Some(MessageRef(id.to_string())));
            id += 1;
        }
        assert!(
            reply.fence.is_some(),
            "a sealed part closed the code block early"
        );
        assert_eq!(ReplyState::from_snapshot(reply.snapshot()), reply);
        reply.restart();
        reply.push("again", &caps);
        let back = ReplyState::from_snapshot(reply.snapshot());
        assert_eq!(back, reply);
        // A damaged offset is brought back inside the text.
        let mut bad = reply.snapshot();
        bad.consumed = 10_000;
        assert_eq!(ReplyState::from_snapshot(bad).consumed, reply.text.len());
    }
}
