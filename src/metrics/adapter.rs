//! [`Metered`]: an adapter as the router sees it, with its outbound calls counted.
//!
//! Wrapping the adapter once, where the router takes it, counts every platform error and
//! 429 by method without any adapter or the shared reply-streaming code knowing about
//! metrics, and notices the first message of each reply the platform accepts. It also
//! remembers whether the platform's last outbound call failed in transport, which
//! `/readyz` reports.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use clawpen_adapters::{
    Adapter, AdapterError, Attachment, Capabilities, ConversationKey, InboundSink, MessageRef,
    Upload,
};
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// An adapter whose outbound calls are counted. Every method delegates to the adapter.
pub struct Metered {
    inner: Arc<dyn Adapter>,
    metrics: Metrics,
    /// The error of the last outbound call if it could not reach the platform; cleared by
    /// the next call that does. A std mutex, held to copy or replace one string.
    unreachable: Mutex<Option<String>>,
}

impl Metered {
    /// Wraps `inner`, reporting to `metrics`.
    pub fn new(inner: Arc<dyn Adapter>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            inner,
            metrics,
            unreachable: Mutex::new(None),
        })
    }

    /// Why the platform could not be reached on the last outbound call, if it could not.
    pub fn unreachable(&self) -> Option<String> {
        self.unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts the outcome of one call of `method`.
    fn count<T>(
        &self,
        method: &'static str,
        result: Result<T, AdapterError>,
    ) -> Result<T, AdapterError> {
        let reached = match &result {
            Ok(_) => None,
            // An operation the adapter does not offer never reached the platform.
            Err(AdapterError::Unsupported(_)) => None,
            Err(error) => {
                self.metrics
                    .platform_error(self.inner.platform(), method, error);
                match error {
                    AdapterError::Transport(why) => Some(why.clone()),
                    // The platform answered, so it is reachable.
                    _ => None,
                }
            }
        };
        *self
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reached;
        result
    }
}

#[async_trait]
impl Adapter for Metered {
    fn platform(&self) -> &str {
        self.inner.platform()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn capabilities_for(&self, conversation: &ConversationKey) -> Capabilities {
        self.inner.capabilities_for(conversation)
    }

    async fn run(
        self: Arc<Self>,
        sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        self.inner.clone().run(sink, shutdown).await
    }

    async fn send(
        &self,
        conversation: &ConversationKey,
        text: &str,
        reply_to: Option<&MessageRef>,
    ) -> Result<MessageRef, AdapterError> {
        let sent = self.inner.send(conversation, text, reply_to).await;
        if sent.is_ok() {
            self.metrics.reply_shown(conversation);
        }
        self.count("send", sent)
    }

    async fn edit(
        &self,
        conversation: &ConversationKey,
        message: &MessageRef,
        text: &str,
    ) -> Result<(), AdapterError> {
        let edited = self.inner.edit(conversation, message, text).await;
        self.count("edit", edited)
    }

    async fn typing(&self, conversation: &ConversationKey) -> Result<(), AdapterError> {
        let typing = self.inner.typing(conversation).await;
        self.count("typing", typing)
    }

    async fn draft(
        &self,
        conversation: &ConversationKey,
        draft_id: u64,
        text: &str,
    ) -> Result<(), AdapterError> {
        let drafted = self.inner.draft(conversation, draft_id, text).await;
        if drafted.is_ok() {
            self.metrics.reply_shown(conversation);
        }
        self.count("draft", drafted)
    }

    async fn status(&self, conversation: &ConversationKey, text: &str) -> Result<(), AdapterError> {
        let status = self.inner.status(conversation, text).await;
        self.count("status", status)
    }

    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
        max_bytes: u64,
    ) -> Result<Vec<u8>, AdapterError> {
        let fetched = self.inner.fetch_attachment(attachment, max_bytes).await;
        self.count("fetch_attachment", fetched)
    }

    async fn upload(
        &self,
        conversation: &ConversationKey,
        file: &Upload,
    ) -> Result<MessageRef, AdapterError> {
        let uploaded = self.inner.upload(conversation, file).await;
        self.count("upload", uploaded)
    }

    fn trouble(&self) -> Option<String> {
        self.inner.trouble()
    }

    async fn finished(&self, conversation: &ConversationKey) -> Result<(), AdapterError> {
        let finished = self.inner.finished(conversation).await;
        self.count("finished", finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawpen_adapters::terminal::TerminalAdapter;

    #[tokio::test]
    async fn sends_are_delegated_and_their_errors_counted_by_method() {
        let metrics = Metrics::on();
        let terminal = TerminalAdapter::new();
        let metered = Metered::new(terminal.clone(), metrics.clone());
        let key = ConversationKey::new("terminal", "a");
        assert_eq!(metered.platform(), "terminal");
        assert_eq!(metered.capabilities(), terminal.capabilities());
        // The terminal offers no drafts: not a platform error, nor a sign that the
        // platform is unreachable.
        let drafted = metered.draft(&key, 1, "hi").await;
        assert!(matches!(drafted, Err(AdapterError::Unsupported(_))));
        assert_eq!(metered.unreachable(), None);
        assert!(!metrics.encode().contains("clawpen_platform_errors_total{"));
    }
}
