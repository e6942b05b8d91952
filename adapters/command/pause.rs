//! `/pause ID`: a task stops running until resumed. The scheduler checks that the task is this chat's (or that the
//! owner asks) and carries it out; the answer is worded in `tasks`.

use super::tasks::{by_id, TaskRequest};
use super::{Origin, Outcome, Spec};
use crate::InboundSink;

/// `/pause`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pause {
    /// What followed the command: the task's id.
    pub args: String,
}

impl Pause {
    /// Its name.
    pub const NAME: &'static str = "pause";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Pause a scheduled task: /pause ID"),
        help: Some("pause a scheduled task until /resume (/pause ID)"),
        argument: Some("The task's id"),
    };

    /// Asks the scheduler, through the sink.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        by_id(sink, origin, Self::NAME, &self.args, TaskRequest::Pause).await
    }
}
