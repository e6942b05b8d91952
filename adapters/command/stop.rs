//! `/stop`: end the conversation's running turn. The router cancels it; the reply then ends
//! marked as stopped, and the conversation goes on with the next message.

use super::{Origin, Outcome, Spec};
use crate::InboundSink;

/// What `/stop` answers at once (the reply itself shows when the turn ended).
pub const STOP_REQUESTED: &str = "⏹ Stop requested.";

/// `/stop`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stop;

impl Stop {
    /// Its name.
    pub const NAME: &'static str = "stop";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Stop the current answer"),
        help: Some("stop the current answer"),
        argument: None,
    };

    /// Asks the router to cancel the running turn (nothing happens when none runs).
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        sink.cancel(origin.conversation).await;
        Outcome::Answer(STOP_REQUESTED.to_string())
    }
}
