//! The tunnel: everything a box needs from outside, performed by the bridge, which alone
//! holds the keys. (Being built: model requests and web fetches are refused for now.)

use clawpen_adapters::ConversationKey;
use clawpen_protocol::{Request, ResponsePart};
use tokio::sync::mpsc;

/// Performs boxes' requests; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Tunnel {}

impl Tunnel {
    /// Perform one request of a box, sending the response parts to `out` in order.
    /// Never fails: refusals and errors become [`ResponsePart::Failed`].
    pub async fn perform(
        &self,
        conversation: &ConversationKey,
        request: Request,
        out: mpsc::Sender<ResponsePart>,
    ) {
        let what = match request {
            Request::Model { .. } => "model requests",
            Request::WebFetch { .. } => "web fetches",
        };
        tracing::debug!(conversation = %conversation, what, "refusing a box request");
        let message = format!("this bridge does not perform {what}");
        let _ = out.send(ResponsePart::Failed { message }).await;
    }
}
