//! `/cancel ID`: a task is deleted. The scheduler checks that the task is this chat's (or that the
//! owner asks) and carries it out; the answer is worded in `tasks`.

use super::tasks::{by_id, TaskRequest};
use super::{Origin, Outcome, Spec};
use crate::InboundSink;

/// `/cancel`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cancel {
    /// What followed the command: the task's id.
    pub args: String,
}

impl Cancel {
    /// Its name.
    pub const NAME: &'static str = "cancel";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Delete a scheduled task: /cancel ID"),
        help: Some("delete a scheduled task (/cancel ID)"),
        argument: Some("The task's id"),
    };

    /// Asks the scheduler, through the sink.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        by_id(sink, origin, Self::NAME, &self.args, TaskRequest::Cancel).await
    }
}
