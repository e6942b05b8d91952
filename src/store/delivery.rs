//! Delivery records: which platform messages carry a turn's reply, and the final text of a
//! turn that finished but is not yet fully shown.
//!
//! The conversation's delivery task writes the snapshot after every message the platform
//! accepted, so a restart edits those messages instead of sending them again; the actor
//! writes the final text when the turn ends, in the same transaction that marks its
//! messages answered. Both are read-modify-writes of one record (the snapshot's a
//! compare-and-swap, see `store::update`), so neither loses the other's part. The record goes once the whole reply is shown.

use clawpen_adapters::reply::ReplyState;

use super::shown::ShownReply;
use clawpen_domain::{ConversationKey, MessageRef, TurnId};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{conversation_prefix, Store, StoreError};

/// Tree name, for error messages.
pub(super) const TREE: &str = "deliveries";

/// The delivery of one turn's reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The conversation it is shown in.
    pub conversation: ConversationKey,
    /// The turn whose reply it is.
    pub turn: TurnId,
    /// What the platform showed at the last message it accepted (parts and their ids).
    #[serde(default)]
    pub shown: Option<ShownReply>,
    /// The reply's whole text, once its turn finished; `None` while the turn runs (its text
    /// so far is then in the turn's record).
    #[serde(default)]
    pub final_text: Option<String>,
    /// The inbound message the reply answers.
    #[serde(default)]
    pub reply_to: Option<MessageRef>,
}

impl DeliveryRecord {
    /// A turn's record with nothing shown yet.
    fn new(conversation: &ConversationKey, turn: &TurnId) -> Self {
        Self {
            conversation: conversation.clone(),
            turn: turn.clone(),
            shown: None,
            final_text: None,
            reply_to: None,
        }
    }
}

/// The key of one turn's delivery record: the conversation's prefix, then the turn id.
pub(super) fn delivery_key(conversation: &ConversationKey, turn: &TurnId) -> Vec<u8> {
    let mut key = conversation_prefix(conversation);
    key.extend_from_slice(turn.as_str().as_bytes());
    key
}

impl Store {
    /// Records what the platform shows of a turn's reply now, without the flush: for a
    /// commit, whose caller sends the next message only once it is durable, so no accepted
    /// message is forgotten.
    pub fn save_delivery_unflushed(
        &self,
        conversation: &ConversationKey,
        turn: &TurnId,
        shown: &ReplyState,
    ) -> Result<(), StoreError> {
        let key = delivery_key(conversation, turn);
        let snapshot = ShownReply::from(shown);
        self.update(
            &self.db()?.deliveries,
            TREE,
            &key,
            |record: Option<DeliveryRecord>| DeliveryRecord {
                shown: Some(snapshot.clone()),
                reply_to: shown.reply_to.clone(),
                ..record.unwrap_or_else(|| DeliveryRecord::new(conversation, turn))
            },
        )?;
        Ok(())
    }

    /// The delivery record of one turn, if any.
    pub fn delivery(
        &self,
        conversation: &ConversationKey,
        turn: &TurnId,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let key = delivery_key(conversation, turn);
        match self
            .db()?
            .deliveries
            .get(&key)
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode(TREE, &key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every finished turn whose reply is not yet fully shown, to deliver at startup. A
    /// record that cannot be read fails the scan: a pending reply must not vanish unseen.
    pub fn pending_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.db()?.deliveries.iter() {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let record: DeliveryRecord = self.decode(TREE, &key, &bytes)?;
            if record.final_text.is_some() {
                pending.push(record);
            }
        }
        Ok(pending)
    }

    /// The reply is fully shown: forget its delivery record. Without the flush, for a
    /// commit.
    pub fn delivered_unflushed(
        &self,
        conversation: &ConversationKey,
        turn: &TurnId,
    ) -> Result<(), StoreError> {
        self.db()?
            .deliveries
            .remove(delivery_key(conversation, turn))
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Inside a transaction: the record under `key`, or a new one.
    pub(super) fn delivery_in(
        &self,
        tree: &TransactionalTree,
        conversation: &ConversationKey,
        turn: &TurnId,
        key: &[u8],
    ) -> Result<DeliveryRecord, ConflictableTransactionError<StoreError>> {
        Ok(match tree.get(key)? {
            Some(bytes) => self
                .decode(TREE, key, &bytes)
                .map_err(ConflictableTransactionError::Abort)?,
            None => DeliveryRecord::new(conversation, turn),
        })
    }
}

/// A store error that aborts the transaction it happened in.
pub(super) fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;
    use crate::store::TurnRecord;

    fn shown(text: &str, message: &str) -> ReplyState {
        let mut state = ReplyState::new(Some(MessageRef("10".into())));
        state.text = text.to_string();
        state.parts.push(clawpen_adapters::reply::Part {
            message: Some(MessageRef(message.into())),
            shown: text.to_string(),
            text: text.to_string(),
            ..Default::default()
        });
        state
    }

    /// A store whose turn `t1` in telegram:1 has shown "Hel" in message m1.
    fn store_with_a_snapshot() -> (tempfile::TempDir, Store, ConversationKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        store
            .save_delivery_unflushed(&chat, &TurnId::from("t1"), &shown("Hel", "m1"))
            .unwrap();
        (dir, store, chat)
    }

    #[test]
    fn the_snapshot_and_the_final_text_are_kept_whoever_writes_last() {
        let (_dir, store, chat) = store_with_a_snapshot();
        let mut record = TurnRecord::new(
            chat.clone(),
            "t1".into(),
            "c".into(),
            3,
            Some(MessageRef("10".into())),
            1,
        );
        record.text = "Hello, world".into();
        store.put_turn(&record).unwrap();
        store.complete_turn(&record).unwrap();
        // A send that was under way when the turn ended records its message afterwards.
        store
            .save_delivery_unflushed(&chat, &TurnId::from("t1"), &shown("Hello", "m1"))
            .unwrap();

        let pending = store.pending_deliveries().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].final_text.as_deref(), Some("Hello, world"));
        assert_eq!(
            pending[0].shown,
            Some(ShownReply::from(&shown("Hello", "m1")))
        );
        assert_eq!(store.turn(&chat).unwrap(), None, "the turn itself is over");

        store
            .delivered_unflushed(&chat, &TurnId::from("t1"))
            .unwrap();
        assert!(store.pending_deliveries().unwrap().is_empty());
        assert_eq!(store.delivery(&chat, &TurnId::from("t1")).unwrap(), None);
    }

    #[test]
    fn a_running_turns_snapshot_is_not_a_pending_delivery() {
        let (_dir, store, chat) = store_with_a_snapshot();
        assert!(store.pending_deliveries().unwrap().is_empty());
        let record = store.delivery(&chat, &TurnId::from("t1")).unwrap().unwrap();
        assert_eq!(record.shown.map(ReplyState::from), Some(shown("Hel", "m1")));
    }
}
