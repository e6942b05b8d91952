//! `/resume ID`: a paused task runs again from its next due time. The scheduler checks that the task is this chat's (or that the
//! owner asks) and carries it out; the answer is worded in `tasks`.

use super::tasks::{by_id, TaskRequest};
use super::{Origin, Outcome, Spec};
use crate::InboundSink;

/// `/resume`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// What followed the command: the task's id.
    pub args: String,
}

impl Resume {
    /// Its name.
    pub const NAME: &'static str = "resume";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Resume a paused task: /resume ID"),
        help: Some("let a paused task run again (/resume ID)"),
        argument: Some("The task's id"),
    };

    /// Asks the scheduler, through the sink.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        by_id(sink, origin, Self::NAME, &self.args, TaskRequest::Resume).await
    }
}
