//! The terminal [`Adapter`]: reply operations become [`TerminalEvent`]s for subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    Adapter, AdapterError, Capabilities, ConversationKey, InboundSink, LengthUnit, MessageRef,
};

/// The platform name of terminal conversations.
pub const PLATFORM: &str = "terminal";

/// Room for events not yet printed by one watcher; when full, the reply waits for the
/// terminal (a slow terminal slows its own conversation only).
const WATCHER_CAPACITY: usize = 1024;

/// What a terminal watcher is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TerminalEvent {
    /// A new reply message.
    Send {
        /// Its id.
        id: String,
        /// Its text.
        text: String,
    },
    /// A reply message's new full text.
    Edit {
        /// Its id.
        id: String,
        /// Its text.
        text: String,
    },
    /// A status line ("running: cargo test").
    Status {
        /// The line.
        text: String,
    },
    /// The bridge's own answer, outside any reply (to a command such as `/help`).
    Notice {
        /// The answer.
        text: String,
    },
    /// The reply of the turn is complete.
    Finished,
}

/// The terminal adapter; inbound messages come from `clawpen chat` sessions through
/// [`TerminalAdapter::say`].
#[derive(Default)]
pub struct TerminalAdapter {
    /// Watchers per conversation; a std mutex held only to copy the list.
    watchers: Mutex<HashMap<ConversationKey, Vec<mpsc::Sender<TerminalEvent>>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for TerminalAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalAdapter").finish_non_exhaustive()
    }
}

impl TerminalAdapter {
    /// A new adapter with no watchers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Watch a conversation's replies; dropping the receiver ends the watch.
    pub fn watch(&self, conversation: &ConversationKey) -> mpsc::Receiver<TerminalEvent> {
        let (tx, rx) = mpsc::channel(WATCHER_CAPACITY);
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        // Watches that ended are forgotten here, in every conversation: a sender kept for
        // a closed watch holds its channel's buffer for as long as it is kept.
        watchers.retain(|_, list| {
            list.retain(|w| !w.is_closed());
            !list.is_empty()
        });
        watchers.entry(conversation.clone()).or_default().push(tx);
        rx
    }

    pub(super) async fn emit(&self, conversation: &ConversationKey, event: TerminalEvent) {
        let targets: Vec<_> = {
            let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            let targets = match watchers.get_mut(conversation) {
                Some(list) => {
                    list.retain(|w| !w.is_closed());
                    list.clone()
                }
                None => Vec::new(),
            };
            if targets.is_empty() {
                watchers.remove(conversation);
            }
            targets
        };
        for target in targets {
            // A watcher that went away is simply skipped; the store keeps the reply state.
            let _ = target.send(event.clone()).await;
        }
    }
}

#[async_trait]
impl Adapter for TerminalAdapter {
    fn platform(&self) -> &str {
        PLATFORM
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_len: 1 << 20,
            length_unit: LengthUnit::Chars,
            can_edit: true,
            has_drafts: false,
            has_threads: false,
            min_edit_interval: Duration::ZERO,
            typing_interval: None,
            status_in_reply: false,
        }
    }

    async fn run(
        self: Arc<Self>,
        _sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        shutdown.cancelled().await;
        Ok(())
    }

    async fn send(
        &self,
        conversation: &ConversationKey,
        text: &str,
        _reply_to: Option<&MessageRef>,
    ) -> Result<MessageRef, AdapterError> {
        // Unique across restarts: a resumed reply keeps editing the ids of the last run.
        let id = format!(
            "{:x}-{}",
            std::process::id(),
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        self.emit(
            conversation,
            TerminalEvent::Send {
                id: id.clone(),
                text: text.to_string(),
            },
        )
        .await;
        Ok(MessageRef(id))
    }

    async fn edit(
        &self,
        conversation: &ConversationKey,
        message: &MessageRef,
        text: &str,
    ) -> Result<(), AdapterError> {
        let event = TerminalEvent::Edit {
            id: message.0.clone(),
            text: text.to_string(),
        };
        self.emit(conversation, event).await;
        Ok(())
    }

    async fn status(&self, conversation: &ConversationKey, text: &str) -> Result<(), AdapterError> {
        self.emit(
            conversation,
            TerminalEvent::Status {
                text: text.to_string(),
            },
        )
        .await;
        Ok(())
    }

    async fn finished(&self, conversation: &ConversationKey) -> Result<(), AdapterError> {
        self.emit(conversation, TerminalEvent::Finished).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl TerminalAdapter {
        /// Conversations with a watch kept.
        fn watched(&self) -> usize {
            self.watchers.lock().map_or(0, |w| w.len())
        }
    }

    #[tokio::test]
    async fn a_watch_that_ended_is_forgotten_by_the_next_watch_or_event() {
        let terminal = TerminalAdapter::new();
        let (a, b) = (
            ConversationKey::new(PLATFORM, "a"),
            ConversationKey::new(PLATFORM, "b"),
        );
        drop(terminal.watch(&a));
        assert_eq!(terminal.watched(), 1);
        // Another conversation's watch forgets it.
        let mut watching_b = terminal.watch(&b);
        assert_eq!(terminal.watched(), 1);
        // An event for a conversation whose watch ended forgets that one too.
        terminal.emit(&b, TerminalEvent::Finished).await;
        assert_eq!(watching_b.recv().await, Some(TerminalEvent::Finished));
        drop(watching_b);
        terminal.emit(&b, TerminalEvent::Finished).await;
        assert_eq!(terminal.watched(), 0);
    }
}
