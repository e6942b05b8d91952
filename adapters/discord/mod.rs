//! Discord bots: servers, channels, threads and DMs, through the gateway and the REST API
//! (serenity's routes, builders and models; rustls only).
//!
//! A DM is one conversation, a server text channel is one, and every thread (and forum
//! post) is its own, keyed by its parent channel and itself, so a team runs parallel tasks
//! side by side. In servers the bot answers when @mentioned, replied to or called with
//! `/ask`; in DMs always; the rest of a channel's chatter reaches the router unaddressed,
//! as context. Bots never start a turn. With `thread_per_mention`, a mention in a channel
//! opens a thread for its answer. Replies stream as one message edited in place and
//! continue in new messages past 2,000 characters; no output ever pings @everyone, @here or
//! a role. Strangers never reach the router.
//!
//! # Layout
//! - [`config`]: the `[discord]` settings and their environment variables.
//! - [`registration`]: how the daemon reads, checks and builds it, and its doctor check.
//! - `adapter`: the [`DiscordAdapter`] and its outbound operations.
//! - [`format`]: the agent's Markdown as Discord shows it (unchanged).
//! - `inbound`: a Discord message or slash command as an [`crate::Inbound`]; no I/O.
//! - `wire`: the gateway's payloads as our own lenient types that cannot panic.
//! - `gateway`: the websocket session: identify, heartbeat, resume, close codes.
//! - `receive`: one event through access control and commands to the sink; threads and
//!   slash commands. Access control is [`crate::access`], commands [`crate::command`].
//! - `api`: REST calls on serenity's routes, with Discord's rate limits and errors read.

mod adapter;
mod api;
pub(crate) mod config;
pub(crate) mod format;
mod gateway;
mod inbound;
mod receive;
pub mod registration;
mod wire;

pub use adapter::{DiscordAdapter, EDIT_INTERVAL, MAX_MESSAGE_LEN};
pub use config::DiscordConfig;
pub use gateway::INTENT_REFUSED;

/// The platform name of Discord conversations.
pub const PLATFORM: &str = "discord";
