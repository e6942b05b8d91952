//! The messaging side of clawpen: what an adapter is, and the code every adapter shares.
//!
//! An adapter translates, nothing more: it turns platform events into [`Inbound`] messages
//! handed to an [`InboundSink`], and carries out outbound operations (send, edit, typing,
//! draft, upload) within its platform's limits, which it declares as [`Capabilities`]. When
//! to edit, when to start a new message and how to split a long reply is decided once, in
//! [`reply`] (pure policy) and [`stream`] (the async driver), for every adapter alike.
//!
//! The types messages are made of ([`ConversationKey`], [`Inbound`], [`MessageRef`]...) live
//! in `clawpen-domain`, shared with the core and its store, and are re-exported here.
//!
//! # Layout
//! - [`command`]: chat commands (`/help`, `/status`, `/stop`, `/reset`, and the scheduled
//!   tasks' `/tasks`, `/pause`, `/resume`, `/cancel`, `/run`, `/tz`), parsed and answered
//!   alike for every adapter.
//! - [`discord`]: Discord bots: servers, channels, threads and DMs, with slash commands.
//! - [`access`]: who may talk to the bot: allowlists, owner pairing, rate-limited refusals.
//! - [`egress`]: how every outbound HTTP client reaches the outside (proxy, extra CAs).
//! - [`registry`]: every adapter the daemon can run, with its settings and checks.
//! - [`reply`]: splitting a reply into parts and deciding the next platform operation.
//! - [`stream`]: drives one reply to a platform through an [`Adapter`], throttled and retried.
//! - [`telegram`]: Telegram bots, through the Bot API (long polling or a webhook).
//! - [`terminal`]: the local terminal channel behind `clawpen chat`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub mod access;
pub mod command;
pub mod discord;
pub mod egress;
#[cfg(test)]
mod fake_sink;
pub mod registry;
pub mod reply;
pub mod stream;
pub mod telegram;
pub mod terminal;

pub use clawpen_domain::{
    Attachment, BadConversationKey, ContainerId, ConversationKey, Inbound, MessageRef, TurnId,
};

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
    /// Whether tool status lines ("running: cargo test") show inside the reply being
    /// streamed, under its growing message, rather than through [`Adapter::status`].
    pub status_in_reply: bool,
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

    /// Carry out a scheduled-task command (`/tasks`, `/pause`, …, worded by
    /// [`command::task_words`]) for `caller`. A sink without a scheduler has none.
    async fn tasks(
        &self,
        _caller: &command::Caller<'_>,
        _request: command::TaskRequest,
    ) -> command::TaskReply {
        command::TaskReply::Unavailable
    }
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
