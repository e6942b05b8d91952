//! `/status`: what this conversation's box is doing, and how many boxes are live. The
//! router reports the facts ([`StatusReport`]); the words are here.

use super::{Origin, Outcome, Spec};
use crate::{InboundSink, StatusReport};

/// `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status;

impl Status {
    /// Its name.
    pub const NAME: &'static str = "status";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("What this conversation's box is doing"),
        help: Some("what this conversation's box is doing"),
        argument: None,
    };

    /// The report in words.
    pub fn text(report: &StatusReport) -> String {
        let boxes = format!("{} of {} boxes live", report.live_boxes, report.max_boxes);
        match &report.state {
            Some(state) => format!(
                "This conversation: {state}, {} queued. {boxes}.",
                report.queued
            ),
            None => format!(
                "This conversation: no box running; it starts with your next message. {boxes}."
            ),
        }
    }

    /// Asks the router for the conversation's state and answers with it.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        let report = sink.status(origin.conversation).await;
        Outcome::Answer(Self::text(&report))
    }
}
