//! The messaging side of clawpen: what an adapter is, and the code every adapter shares.
//!
//! An adapter translates, nothing more: it turns platform events into [`Inbound`] messages
//! handed to an [`InboundSink`], and carries out outbound operations (send, edit, typing,
//! draft, upload) within its platform's limits, which it declares as [`Capabilities`]. When
//! to edit, when to start a new message and how to split a long reply is decided once, in
//! [`reply`] (pure policy) and [`stream`] (the async driver), for every adapter alike.
//!
//! # Layout
//! - [`command`]: chat commands (`/help`, `/status`, `/stop`, `/reset`), parsed and
//!   answered alike for every adapter.
//! - [`access`]: who may talk to the bot: allowlists, owner pairing, rate-limited refusals.
//! - [`registry`]: every adapter the daemon can run, with its settings and checks.
//! - [`reply`]: splitting a reply into parts and deciding the next platform operation.
//! - [`stream`]: drives one reply to a platform through an [`Adapter`], throttled and retried.
//! - [`telegram`]: Telegram bots, through the Bot API (long polling or a webhook).
//! - [`terminal`]: the local terminal channel behind `clawpen chat`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub mod access;
pub mod command;
#[cfg(test)]
mod fake_sink;
pub mod registry;
pub mod reply;
pub mod stream;
pub mod telegram;
pub mod terminal;

/// Which conversation something belongs to: (platform, chat, optional thread).
///
/// It is the key of everything clawpen keeps: the box, the inbound log, delivery state.
/// Its text form is `platform:chat` or `platform:chat:thread`, with `%` and `:` inside a
/// part escaped as `%25` and `%3A`, so that any platform id round-trips.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey {
    /// The adapter's platform name, e.g. `telegram`, `discord`, `terminal`.
    pub platform: String,
    /// The platform's chat (or channel) id.
    pub chat: String,
    /// A thread or forum topic inside the chat, which is a conversation of its own.
    pub thread: Option<String>,
}

impl ConversationKey {
    /// A conversation without a thread.
    pub fn new(platform: impl Into<String>, chat: impl Into<String>) -> Self {
        Self {
            platform: platform.into(),
            chat: chat.into(),
            thread: None,
        }
    }

    /// The same chat, narrowed to a thread.
    pub fn with_thread(mut self, thread: impl Into<String>) -> Self {
        self.thread = Some(thread.into());
        self
    }
}

fn escape_part(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

fn unescape_part(part: &str) -> String {
    part.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%25", "%")
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            escape_part(&self.platform),
            escape_part(&self.chat)
        )?;
        if let Some(thread) = &self.thread {
            write!(f, ":{}", escape_part(thread))?;
        }
        Ok(())
    }
}

/// A conversation key's text form did not parse.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a conversation key (expected platform:chat or platform:chat:thread)")]
pub struct BadConversationKey(pub String);

impl FromStr for ConversationKey {
    type Err = BadConversationKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || BadConversationKey(s.to_string());
        match parts.as_slice() {
            [p, c] if !p.is_empty() && !c.is_empty() => {
                Ok(Self::new(unescape_part(p), unescape_part(c)))
            }
            [p, c, t] if !p.is_empty() && !c.is_empty() && !t.is_empty() => {
                Ok(Self::new(unescape_part(p), unescape_part(c)).with_thread(unescape_part(t)))
            }
            _ => Err(bad()),
        }
    }
}

/// A platform's id of one message it holds (sent by us or by a user).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRef(pub String);

impl fmt::Display for MessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file that came with an inbound message; the adapter can fetch its bytes on demand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name to give it in the workspace.
    pub name: String,
    /// The MIME type, when the platform says.
    pub mime: Option<String>,
    /// Size in bytes, when the platform says (used to refuse oversized files early).
    pub size: Option<u64>,
    /// The platform's handle for fetching it (a Telegram file_id, a Discord URL).
    pub platform_ref: String,
}

/// One message from a platform, as the router sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// The platform's id of this message, unique within its conversation: the dedupe key.
    pub id: String,
    /// Which conversation it belongs to.
    pub conversation: ConversationKey,
    /// The sender's platform id.
    pub sender_id: String,
    /// The sender's display name, given to the agent.
    pub sender_name: String,
    /// The message text.
    pub text: String,
    /// Files that came with it.
    pub attachments: Vec<Attachment>,
    /// The message it replies to, if any.
    pub reply_to: Option<MessageRef>,
    /// Whether the bot was addressed (mention, reply, trigger word, DM); others are context.
    pub addressed: bool,
    /// When it was sent, in seconds since the Unix epoch.
    pub at: u64,
}

/// How a platform counts a message's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LengthUnit {
    /// Unicode scalar values (Discord, the terminal).
    Chars,
    /// UTF-16 code units (Telegram).
    Utf16,
}

/// What a platform can do, declared by its adapter; the streaming policy follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The longest message the platform accepts, in `length_unit`s.
    pub max_len: usize,
    /// How `max_len` is counted.
    pub length_unit: LengthUnit,
    /// Whether a sent message can be edited (streaming by edit in place).
    pub can_edit: bool,
    /// Whether the platform shows drafts (streaming without sending a message yet).
    pub has_drafts: bool,
    /// Whether chats have threads that are conversations of their own.
    pub has_threads: bool,
    /// The shortest gap between two edits of one chat's messages.
    pub min_edit_interval: Duration,
    /// How often to renew the typing indicator while a turn runs; `None`: no indicator.
    pub typing_interval: Option<Duration>,
}

/// An outbound operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The platform asked us to slow down; the operation may be retried after the delay.
    #[error("rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// How long the platform asked us to wait.
        retry_after: Duration,
    },
    /// The platform refused the content (formatting, length); retrying it unchanged fails again.
    #[error("rejected by the platform: {0}")]
    Rejected(String),
    /// The target message or chat no longer exists.
    #[error("not found: {0}")]
    NotFound(String),
    /// The adapter does not offer this operation.
    #[error("not supported by this adapter: {0}")]
    Unsupported(&'static str),
    /// The platform could not be reached or answered with a server error; worth retrying.
    #[error("transport error: {0}")]
    Transport(String),
}

impl AdapterError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transport(_))
    }
}

/// A file the agent sends back to the chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// File name shown to the user.
    pub name: String,
    /// Its contents.
    pub data: Vec<u8>,
}

/// What became of an inbound message handed to the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Durably stored and queued for its conversation.
    Stored,
    /// Already in the inbound log (a redelivery); nothing was done.
    Duplicate,
}

/// The sink could not take a message; the adapter must not move its cursor past it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The daemon is shutting down and accepts nothing more.
    #[error("clawpen is shutting down")]
    ShuttingDown,
    /// The message could not be stored.
    #[error("could not store the message: {0}")]
    Store(String),
}

/// Where adapters hand inbound messages. `accept` returns only once the message is durable,
/// so an adapter may then move its platform cursor (e.g. the Telegram offset) past it.
///
/// The sink also keeps small durable values for adapters (cursors, a paired owner) and
/// carries out what chat commands ([`command`]) ask of a conversation: cancel its turn,
/// report its state.
#[async_trait]
pub trait InboundSink: Send + Sync {
    /// Store the message and queue it for its conversation.
    async fn accept(&self, message: Inbound) -> Result<Accepted, SinkError>;

    /// A value the adapter saved earlier under `key` (namespaced by the adapter, e.g.
    /// `telegram.offset`).
    async fn load_value(&self, key: &str) -> Result<Option<String>, SinkError>;

    /// Save a value durably (flushed before this returns).
    async fn save_value(&self, key: &str, value: &str) -> Result<(), SinkError>;

    /// End the running turn of a conversation (`/stop`).
    async fn cancel(&self, conversation: &ConversationKey);

    /// What a conversation is doing (`/status`, worded by [`command::Status`]).
    async fn status(&self, conversation: &ConversationKey) -> StatusReport;
}

/// The facts `/status` reports about one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// What its box is doing (`running a turn`, `idle`); `None` while it has no box.
    pub state: Option<String>,
    /// Its messages stored but not yet given to its agent.
    pub queued: usize,
    /// Boxes alive now, over all conversations.
    pub live_boxes: usize,
    /// The cap on live boxes.
    pub max_boxes: usize,
}

/// One messaging platform.
///
/// Outbound methods address a conversation and a platform message; they never retry on
/// their own, the shared [`stream`] driver does, honouring [`AdapterError::RateLimited`].
#[async_trait]
pub trait Adapter: Send + Sync {
    /// The platform name used in conversation keys (`telegram`, `discord`, `terminal`).
    fn platform(&self) -> &str;

    /// What this platform can do.
    fn capabilities(&self) -> Capabilities;

    /// What this platform can do in one conversation, where that differs by chat (Telegram
    /// offers drafts in private chats only, and allows fewer writes in groups). Replies
    /// follow this; the default is [`Adapter::capabilities`].
    fn capabilities_for(&self, _conversation: &ConversationKey) -> Capabilities {
        self.capabilities()
    }

    /// Receive from the platform until `shutdown` fires, handing messages to `sink`.
    async fn run(
        self: Arc<Self>,
        sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError>;

    /// Send a new message; returns the platform's id for it.
    async fn send(
        &self,
        conversation: &ConversationKey,
        text: &str,
        reply_to: Option<&MessageRef>,
    ) -> Result<MessageRef, AdapterError>;

    /// Replace the text of a message sent earlier.
    async fn edit(
        &self,
        conversation: &ConversationKey,
        message: &MessageRef,
        text: &str,
    ) -> Result<(), AdapterError>;

    /// Show that the agent is working (renewed every `typing_interval`).
    async fn typing(&self, _conversation: &ConversationKey) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Show streaming text as a draft (platforms with `has_drafts`).
    async fn draft(
        &self,
        _conversation: &ConversationKey,
        _draft_id: u64,
        _text: &str,
    ) -> Result<(), AdapterError> {
        Err(AdapterError::Unsupported("draft"))
    }

    /// Show a short status line ("running: cargo test"); platforms may ignore it.
    async fn status(
        &self,
        _conversation: &ConversationKey,
        _text: &str,
    ) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Download an attachment of an inbound message (at most `max_bytes`).
    async fn fetch_attachment(
        &self,
        _attachment: &Attachment,
        _max_bytes: u64,
    ) -> Result<Vec<u8>, AdapterError> {
        Err(AdapterError::Unsupported("attachments"))
    }

    /// Upload a file into the chat.
    async fn upload(
        &self,
        _conversation: &ConversationKey,
        _file: &Upload,
    ) -> Result<MessageRef, AdapterError> {
        Err(AdapterError::Unsupported("upload"))
    }

    /// What keeps this adapter from working fully, in words for the operator (shown by
    /// `clawpen status` and `clawpen doctor`); `None` when nothing does.
    fn trouble(&self) -> Option<String> {
        None
    }

    /// The reply of a turn is complete and fully delivered.
    async fn finished(&self, _conversation: &ConversationKey) -> Result<(), AdapterError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_key_round_trips_through_text() {
        let plain = ConversationKey::new("telegram", "-100123");
        assert_eq!(plain.to_string(), "telegram:-100123");
        assert_eq!(
            plain.to_string().parse::<ConversationKey>().ok(),
            Some(plain)
        );

        let odd = ConversationKey::new("terminal", "a:b%c").with_thread("t:1");
        let text = odd.to_string();
        assert_eq!(text, "terminal:a%3Ab%25c:t%3A1");
        assert_eq!(text.parse::<ConversationKey>().ok(), Some(odd));
    }

    #[test]
    fn malformed_conversation_keys_are_refused() {
        for bad in ["", "telegram", "telegram:", ":1", "a:b:c:d", "a:b:"] {
            assert!(bad.parse::<ConversationKey>().is_err(), "{bad:?} parsed");
        }
    }
}
