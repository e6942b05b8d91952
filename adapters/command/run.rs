//! `/run ID`: a task runs once now, besides its schedule. The scheduler checks that the task is this chat's (or that the
//! owner asks) and carries it out; the answer is worded in `tasks`.

use super::tasks::{by_id, TaskRequest};
use super::{Origin, Outcome, Spec};
use crate::InboundSink;

/// `/run`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// What followed the command: the task's id.
    pub args: String,
}

impl Run {
    /// Its name.
    pub const NAME: &'static str = "run";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Run a scheduled task now: /run ID"),
        help: Some("run a task now, to try it out (/run ID)"),
        argument: Some("The task's id"),
    };

    /// Asks the scheduler, through the sink.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        by_id(sink, origin, Self::NAME, &self.args, TaskRequest::Run).await
    }
}
