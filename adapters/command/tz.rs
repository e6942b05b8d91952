//! `/tz [ZONE]`: show or set the chat's time zone (an IANA name such as Europe/Berlin),
//! which new tasks use. The scheduler checks the name.

use super::tasks::{ask, TaskRequest};
use super::{Origin, Outcome, Spec};
use crate::InboundSink;

/// `/tz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tz {
    /// What followed the command: the zone, if any.
    pub args: String,
}

impl Tz {
    /// Its name.
    pub const NAME: &'static str = "tz";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("Show or set this chat's time zone: /tz Europe/Berlin"),
        help: Some("show or set this chat's time zone (/tz Europe/Berlin)"),
        argument: Some("An IANA time zone, e.g. Europe/Berlin"),
    };

    /// Asks the scheduler, through the sink.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        let zone = self.args.trim();
        let zone = (!zone.is_empty()).then(|| zone.to_string());
        ask(sink, origin, TaskRequest::Zone(zone)).await
    }
}
