//! The terminal channel behind `clawpen chat`: one conversation, typed or piped.
//!
//! # Layout
//! - `adapter`: the [`TerminalAdapter`]; reply operations become [`TerminalEvent`]s for
//!   whoever watches the conversation (a local renderer, or a `clawpen chat` client on the
//!   daemon's control socket).
//! - [`inbound`]: a typed line as a command or an [`crate::Inbound`].
//! - [`session`]: one chat client of a running daemon, over its control socket.
//! - [`render`]: printing events, streaming on a terminal and whole replies on a pipe.
//!
//! The terminal has no settings of its own and is always there, so it has no `config`.

mod adapter;
pub mod inbound;
pub mod render;
pub mod session;

pub use adapter::{TerminalAdapter, TerminalEvent, PLATFORM};
pub use session::ChatLine;
