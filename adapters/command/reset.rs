//! `/reset`: the agent forgets the conversation's history (it keeps `MEMORY.md`).
//!
//! The agent in the box carries it out when the message `/reset` reaches it, so the bridge
//! forwards it like any message; it is listed here so that menus and `/help` offer it.

use super::{Outcome, Spec};

/// `/reset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reset;

impl Reset {
    /// Its name.
    pub const NAME: &'static str = "reset";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Ask the agent to start afresh"),
        help: Some("ask me to start afresh"),
        argument: None,
    };

    /// Forwarded: the agent acts on it.
    pub fn apply(&self) -> Outcome {
        Outcome::Forward
    }
}
