//! clawpen: a sandboxed chat-agent bridge. People talk to an AI agent from chat; every
//! conversation gets its own hardened container (its "box"), and replies stream back.
//!
//! # Layout
//! - [`config`]: the TOML file and environment, secrets redacted.
//! - [`store`]: sled, the one durable place: conversations, inbound log, delivery state.
//! - [`sandbox`]: boxes through the Docker API: hardening, volumes, attach, image build,
//!   box starts a few at once, warm boxes started ahead of need.
//! - [`router`]: one actor per conversation, the live-box cap, the warm pool, turns and
//!   replies.
//! - [`schedule`]: tasks asked for in chat (reminders, recurring jobs), due occurrences
//!   entering the router like messages.
//! - [`tunnel`]: what boxes ask of the outside (model calls, web fetches), keys added here.
//! - [`control`]: the daemon's local socket for `chat` and `status`.
//! - [`component`]: what has a lifetime, started in order and stopped in reverse.
//! - [`metrics`]: counters and histograms, and the `/metrics`, `/healthz`, `/readyz` endpoint.
//! - [`daemon`]: starting and stopping all of it.
//! - [`cli`]: the `clawpen` subcommands.
//! - [`log`]: text or JSON log lines, repeated warnings and errors counted, not repeated.
//!
//! The box protocol lives in the `clawpen-protocol` crate (shared with clawpen-agent) and
//! the adapters and the reply-streaming policy in `clawpen-adapters`.

pub mod cli;
pub mod component;
pub mod config;
pub mod control;
pub mod daemon;
pub mod log;
pub mod metrics;
pub mod router;
pub mod sandbox;
pub mod schedule;
pub mod store;
pub mod tunnel;

pub use clawpen_adapters as adapters;
pub use clawpen_protocol as protocol;
