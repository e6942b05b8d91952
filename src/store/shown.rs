//! What the platform shows of a reply, as the store writes it down.
//!
//! The store owns this format: the reply streaming code ([`ReplyState`]) may change its
//! fields, and then the conversion below must be changed with it, at compile time, while
//! what is on disk stays as it is. The layout is the one stored since delivery records
//! began (it was `ReplyState`'s own serialization then), so records of earlier releases
//! read back unchanged; `tests::a_store_written_by_the_last_release_reads_back_whole` keeps
//! that true.

use clawpen_adapters::reply::{ReplyState, Snapshot, SnapshotPart};
use clawpen_domain::MessageRef;
use serde::{Deserialize, Serialize};

/// A reply's platform messages and the text they carry, at the last accepted message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownReply {
    /// The reply's text at that moment.
    #[serde(default)]
    pub text: String,
    /// Its platform messages, in order.
    #[serde(default)]
    pub parts: Vec<ShownPart>,
    /// The inbound message it answers.
    #[serde(default)]
    pub reply_to: Option<MessageRef>,
    /// Where the growing part's text begins in `text`.
    #[serde(default)]
    pub consumed: usize,
    /// A code block a sealed part closed early, reopened in the next part.
    #[serde(default)]
    pub fence: Option<ShownFence>,
    /// Messages of an answer that started over, with what they show, to be reused.
    #[serde(default)]
    pub reuse: Vec<(MessageRef, String)>,
}

/// One platform message of a [`ShownReply`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownPart {
    /// The platform's id, once sent.
    #[serde(default)]
    pub message: Option<MessageRef>,
    /// What the platform shows for it.
    #[serde(default)]
    pub shown: String,
    /// What it should show.
    #[serde(default)]
    pub text: String,
    /// Whether a later part has taken over.
    #[serde(default)]
    pub sealed: bool,
}

/// The opening line of a code block, enough to reopen it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownFence {
    /// How many backticks.
    pub ticks: usize,
    /// Its info string (the language).
    #[serde(default)]
    pub info: String,
}

impl From<&ReplyState> for ShownReply {
    fn from(reply: &ReplyState) -> Self {
        let snapshot = reply.snapshot();
        Self {
            text: snapshot.text,
            parts: snapshot
                .parts
                .into_iter()
                .map(|p| ShownPart {
                    message: p.message,
                    shown: p.shown,
                    text: p.text,
                    sealed: p.sealed,
                })
                .collect(),
            reply_to: snapshot.reply_to,
            consumed: snapshot.consumed,
            fence: snapshot
                .fence
                .map(|(ticks, info)| ShownFence { ticks, info }),
            reuse: snapshot.reuse,
        }
    }
}

impl From<ShownReply> for ReplyState {
    fn from(shown: ShownReply) -> Self {
        ReplyState::from_snapshot(Snapshot {
            text: shown.text,
            parts: shown
                .parts
                .into_iter()
                .map(|p| SnapshotPart {
                    message: p.message,
                    shown: p.shown,
                    text: p.text,
                    sealed: p.sealed,
                })
                .collect(),
            reply_to: shown.reply_to,
            consumed: shown.consumed,
            fence: shown.fence.map(|f| (f.ticks, f.info)),
            reuse: shown.reuse,
        })
    }
}
