//! `/start`: what a Telegram client sends when a chat with the bot begins. It is greeted
//! with the help text; a pairing code after it is read by access control before this.

use super::{Help, Origin, Outcome, Spec};

/// `/start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Start;

impl Start {
    /// Its name.
    pub const NAME: &'static str = "start";

    /// Unlisted: clients send it by themselves.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: None,
        help: None,
        argument: None,
    };

    /// Answers with the help text.
    pub fn apply(&self, origin: &Origin<'_>) -> Outcome {
        Outcome::Answer(Help::text(origin))
    }
}
