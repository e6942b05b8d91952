//! The terminal channel behind `clawpen chat`: one conversation, typed or piped.
//!
//! The adapter side turns reply operations into [`TerminalEvent`]s for whoever watches the
//! conversation (a local renderer, or a `clawpen chat` client on the daemon's control
//! socket); [`render`] prints them, streaming on a terminal and whole replies on a pipe.

mod adapter;
pub mod render;

pub use adapter::{TerminalAdapter, TerminalEvent, PLATFORM};
