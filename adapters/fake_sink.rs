//! A sink standing in for the router in unit tests: it records what adapters hand it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::{Accepted, ConversationKey, Inbound, InboundSink, SinkError, StatusReport};

/// Records messages, cancels and saved values; reports `status` as set.
#[derive(Default)]
pub struct FakeSink {
    pub accepted: Mutex<Vec<Inbound>>,
    pub cancelled: Mutex<Vec<ConversationKey>>,
    pub values: Mutex<HashMap<String, String>>,
    pub report: Mutex<StatusReport>,
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl InboundSink for FakeSink {
    async fn accept(&self, message: Inbound) -> Result<Accepted, SinkError> {
        lock(&self.accepted).push(message);
        Ok(Accepted::Stored)
    }

    async fn load_value(&self, key: &str) -> Result<Option<String>, SinkError> {
        Ok(lock(&self.values).get(key).cloned())
    }

    async fn save_value(&self, key: &str, value: &str) -> Result<(), SinkError> {
        lock(&self.values).insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn cancel(&self, conversation: &ConversationKey) {
        lock(&self.cancelled).push(conversation.clone());
    }

    async fn status(&self, _conversation: &ConversationKey) -> StatusReport {
        lock(&self.report).clone()
    }
}

/// A message of `conversation` saying `text`, addressed to the bot.
pub fn message(conversation: &ConversationKey, text: &str) -> Inbound {
    Inbound {
        id: "1".into(),
        conversation: conversation.clone(),
        sender_id: "5".into(),
        sender_name: "Ann".into(),
        text: text.into(),
        attachments: Vec::new(),
        reply_to: None,
        addressed: true,
        at: 0,
    }
}
