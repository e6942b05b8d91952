//! Telegram bots through the Bot API (teloxide, rustls only).
//!
//! Each private chat is a conversation, and so is each group and each forum topic. In
//! groups the bot answers when mentioned, replied to or called by its trigger word; the rest
//! of the chatter reaches the router unaddressed, as context. Replies stream as one message
//! edited in place (in private chats as a draft, then sent), formatted as HTML from the
//! agent's Markdown, paced under Telegram's limits. Strangers never reach the router.
//!
//! # Layout
//! - [`config`]: the `[telegram]` settings and their environment variables.
//! - [`registration`]: how the daemon reads, checks and builds it.
//! - `adapter`: the [`TelegramAdapter`] and its outbound operations.
//! - [`format`]: Markdown to Telegram HTML.
//! - `inbound`: a Telegram message as an [`crate::Inbound`], and the command it holds.
//! - `wire`: the Bot API objects read from an update, as our own types that cannot panic.
//! - `update`: one update, through access control to the sink.
//! - `poll` and `webhook`: the two ways of receiving updates.
//! - `migrate`: groups upgraded to supergroups, followed to their new id.
//! - [`pace`]: per-chat and global pacing. Access control is [`crate::access`], commands
//!   [`crate::command`], shared with every adapter.
//! - `api`: Bot API payloads teloxide lacks, and error conversion.

mod adapter;
mod api;
pub(crate) mod config;
pub(crate) mod format;
mod inbound;
mod migrate;
pub(crate) mod pace;
mod poll;
pub mod registration;
mod update;
mod webhook;
mod wire;

pub use adapter::{TelegramAdapter, MAX_MESSAGE_LEN};
pub use config::{TelegramConfig, TelegramConfigError};
pub use poll::OFFSET_KEY;
pub use webhook::SECRET_HEADER;

/// The platform name of Telegram conversations.
pub const PLATFORM: &str = "telegram";

/// 64 random bits from the operating system, for pairing codes and webhook secrets; if the
/// OS has none to give, std's per-process random hash keys are the fallback.
use crate::access::random_u64;
