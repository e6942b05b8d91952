//! The inbound log: every message received, stored before anything acts on it.
//!
//! It serves two purposes. Durability: a message is on disk before the adapter moves its
//! platform cursor and before a box sees it, so a crash loses nothing; after a restart,
//! [`Store::conversations_with_pending`] and [`Store::pending_inbound`] say what is left to
//! do. Dedupe: a platform that redelivers a message (a Telegram offset not yet confirmed, a
//! Discord gateway replay) finds it already logged and it is handled once.
//!
//! Two trees: `inbound` holds the entries keyed by (conversation, arrival sequence), so a
//! prefix scan reads one conversation in arrival order; `inbound_ids` maps (conversation,
//! platform id) to the sequence, for dedupe and for changing an entry's state by its id.
//! Both change together, in one transaction.

use clawpen_domain::{ConversationKey, Inbound, TurnId};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::{conversation_prefix, encode, Store, StoreError};

/// Tree name, for error messages.
const TREE: &str = "inbound";

/// What [`Store::insert_inbound`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// First time seen: it is logged as pending and must be handled.
    New,
    /// Already logged (a redelivery): nothing was done, and nothing should be.
    Duplicate,
}

/// Where a logged message is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundState {
    /// Waiting for a turn.
    Pending,
    /// Handed to the agent in this turn, which has not finished. After a crash the turn is
    /// resumed or retried from its [`TurnRecord`](super::TurnRecord), not started afresh.
    InTurn {
        /// The turn's id.
        turn: TurnId,
    },
    /// Chatter the bot was not addressed in, kept (bounded) as context for the
    /// conversation's next turn.
    Context,
    /// Answered. Kept (until pruned) only so that a redelivery is recognised.
    Done,
}

/// One entry of the inbound log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInbound {
    /// The message as the adapter handed it in.
    pub inbound: Inbound,
    /// What has been done with it.
    pub state: InboundState,
}

/// Key of an entry in `inbound`: conversation prefix, then the big-endian sequence, so that
/// byte order is arrival order.
pub(super) fn log_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Key of an entry in `inbound_ids`: conversation prefix, then the platform id.
pub(super) fn id_key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// A message on its way into the log (see [`Store::new_entry`]).
pub(super) struct NewEntry {
    id_key: Vec<u8>,
    seq: u64,
    log_key: Vec<u8>,
    value: Vec<u8>,
}

impl NewEntry {
    /// Inside a transaction: logs the message, unless a concurrent redelivery logged it
    /// first (checked again here); says which.
    pub(super) fn insert(
        &self,
        ids: &TransactionalTree,
        log: &TransactionalTree,
    ) -> Result<InsertOutcome, ConflictableTransactionError<StoreError>> {
        if ids.get(&self.id_key)?.is_some() {
            return Ok(InsertOutcome::Duplicate);
        }
        ids.insert(self.id_key.as_slice(), &self.seq.to_be_bytes())?;
        log.insert(self.log_key.as_slice(), self.value.as_slice())?;
        Ok(InsertOutcome::New)
    }
}

impl Store {
    /// Logs a message as pending unless the same (conversation, platform id) is already
    /// logged. Returns only once the log is on disk, so the caller may then acknowledge the
    /// message to its platform.
    pub fn insert_inbound(&self, message: &Inbound) -> Result<InsertOutcome, StoreError> {
        let outcome = self.insert_inbound_unflushed(message)?;
        // Flushed for a duplicate too: the first copy may come from a concurrent call that
        // has not flushed yet, and the caller acknowledges either way.
        self.flush()?;
        Ok(outcome)
    }

    /// [`Store::insert_inbound`] without the flush, for a commit (whose flush then makes a
    /// duplicate's first copy durable too).
    pub fn insert_inbound_unflushed(&self, message: &Inbound) -> Result<InsertOutcome, StoreError> {
        // Most redeliveries end here, without spending a sequence number.
        let Some(entry) = self.new_entry(message, InboundState::Pending)? else {
            return Ok(InsertOutcome::Duplicate);
        };
        let inner = self.db()?;
        (&inner.inbound_ids, &inner.inbound)
            .transaction(|(ids, log)| entry.insert(ids, log))
            .map_err(|e| self.tx_err(e))
    }

    /// A message not logged yet, ready to be logged in `state` by a transaction; `None`
    /// if it is logged already.
    pub(super) fn new_entry(
        &self,
        message: &Inbound,
        state: InboundState,
    ) -> Result<Option<NewEntry>, StoreError> {
        let prefix = conversation_prefix(&message.conversation);
        let id_key = id_key(&prefix, &message.id);
        let inner = self.db()?;
        if inner
            .inbound_ids
            .contains_key(&id_key)
            .map_err(|e| self.sled_err(e))?
        {
            return Ok(None);
        }
        // sled's ids increase across restarts too, so they give arrival order.
        let seq = inner.db.generate_id().map_err(|e| self.sled_err(e))?;
        let value = encode(&StoredInbound {
            inbound: message.clone(),
            state,
        })?;
        Ok(Some(NewEntry {
            log_key: log_key(&prefix, seq),
            id_key,
            seq,
            value,
        }))
    }

    /// Logs a message the platform delivered, without the flush (for a commit): inserts it
    /// once (a redelivery is a `Duplicate` and changes nothing), notes the conversation's
    /// activity, and marks a message the bot was not addressed in as context for its next
    /// turn, never a turn of its own.
    pub fn log_inbound_unflushed(&self, message: &Inbound) -> Result<InsertOutcome, StoreError> {
        let outcome = self.insert_inbound_unflushed(message)?;
        if outcome == InsertOutcome::Duplicate {
            return Ok(outcome);
        }
        if let Err(e) = self.touch_conversation(&message.conversation, message.at) {
            tracing::warn!(conversation = %message.conversation, error = %e, "could not record the conversation");
        }
        if !message.addressed {
            let context = InboundState::Context;
            if let Err(e) =
                self.set_inbound_state_unflushed(&message.conversation, &message.id, context)
            {
                tracing::warn!(conversation = %message.conversation, error = %e, "could not mark a message as context");
            }
        }
        Ok(outcome)
    }

    /// The state of one logged message, if it is in the log.
    pub fn inbound_state(
        &self,
        conversation: &ConversationKey,
        id: &str,
    ) -> Result<Option<InboundState>, StoreError> {
        let prefix = conversation_prefix(conversation);
        let inner = self.db()?;
        let Some(seq) = inner
            .inbound_ids
            .get(id_key(&prefix, id))
            .map_err(|e| self.sled_err(e))?
        else {
            return Ok(None);
        };
        let Ok(seq) = <[u8; 8]>::try_from(seq.as_ref()) else {
            return Ok(None);
        };
        let key = log_key(&prefix, u64::from_be_bytes(seq));
        match inner.inbound.get(&key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => {
                let stored: StoredInbound = self.decode(TREE, &key, &bytes)?;
                Ok(Some(stored.state))
            }
            None => Ok(None),
        }
    }

    /// Changes the state of one logged message. Returns whether it was found (it may have
    /// been pruned). Flushed: recovery reads these states.
    pub fn set_inbound_state(
        &self,
        conversation: &ConversationKey,
        id: &str,
        state: InboundState,
    ) -> Result<bool, StoreError> {
        let found = self.set_inbound_state_unflushed(conversation, id, state)?;
        self.flush()?;
        Ok(found)
    }

    /// [`Store::set_inbound_state`] without the flush, for a commit.
    pub fn set_inbound_state_unflushed(
        &self,
        conversation: &ConversationKey,
        id: &str,
        state: InboundState,
    ) -> Result<bool, StoreError> {
        let prefix = conversation_prefix(conversation);
        let id_key = id_key(&prefix, id);
        let inner = self.db()?;
        (&inner.inbound_ids, &inner.inbound)
            .transaction(|(ids, log)| self.update_state(ids, log, &prefix, &id_key, &state))
            .map_err(|e| self.tx_err(e))
    }

    /// Within a transaction, sets the state of the entry `id_key` points to, if any.
    pub(super) fn update_state(
        &self,
        ids: &TransactionalTree,
        log: &TransactionalTree,
        prefix: &[u8],
        id_key: &[u8],
        state: &InboundState,
    ) -> Result<bool, ConflictableTransactionError<StoreError>> {
        let Some(seq) = ids.get(id_key)? else {
            return Ok(false);
        };
        let seq = self
            .decode_seq(id_key, &seq)
            .map_err(ConflictableTransactionError::Abort)?;
        let log_key = log_key(prefix, seq);
        let Some(bytes) = log.get(&log_key)? else {
            return Ok(false);
        };
        let mut entry: StoredInbound = self
            .decode(TREE, &log_key, &bytes)
            .map_err(ConflictableTransactionError::Abort)?;
        if entry.state != *state {
            entry.state = state.clone();
            let value = encode(&entry).map_err(ConflictableTransactionError::Abort)?;
            log.insert(log_key, value)?;
        }
        Ok(true)
    }

    /// Reads a sequence number stored in `inbound_ids`.
    fn decode_seq(&self, id_key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
            let key = String::from_utf8_lossy(id_key);
            StoreError::corrupt(
                self.path(),
                format!("bad sequence for {key:?} in `inbound_ids`"),
            )
        })?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// The messages of one conversation not yet answered (pending, in a turn, or kept as
    /// context), in arrival order: what its actor must still handle after a restart.
    /// Unreadable entries are logged and skipped.
    pub fn pending_inbound(
        &self,
        conversation: &ConversationKey,
    ) -> Result<Vec<StoredInbound>, StoreError> {
        let mut pending = Vec::new();
        for entry in self
            .db()?
            .inbound
            .scan_prefix(conversation_prefix(conversation))
        {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let Some(stored) = self.decode_or_skip::<StoredInbound>(TREE, &key, &bytes) else {
                continue;
            };
            if stored.state != InboundState::Done {
                pending.push(stored);
            }
        }
        Ok(pending)
    }

    /// The conversations with at least one message not yet answered (or kept as context),
    /// so that the daemon can restart their actors after a crash.
    pub fn conversations_with_pending(&self) -> Result<Vec<ConversationKey>, StoreError> {
        let mut keys: Vec<ConversationKey> = Vec::new();
        for entry in self.db()?.inbound.iter() {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let Some(stored) = self.decode_or_skip::<StoredInbound>(TREE, &key, &bytes) else {
                continue;
            };
            // Entries are grouped by conversation, so comparing with the last one suffices.
            if stored.state != InboundState::Done
                && keys.last() != Some(&stored.inbound.conversation)
            {
                keys.push(stored.inbound.conversation);
            }
        }
        Ok(keys)
    }

    /// Removes answered messages sent more than `older_than_secs` before `now` (both in
    /// seconds since the Unix epoch), so the log stays bounded; returns how many. A message
    /// redelivered after its entry is pruned is taken as new, so the window must be longer
    /// than any platform's redelivery (days, not minutes). Pending and in-turn entries are
    /// never pruned.
    pub fn prune_inbound(&self, now: u64, older_than_secs: u64) -> Result<usize, StoreError> {
        let cutoff = now.saturating_sub(older_than_secs);
        let mut doomed = Vec::new();
        for entry in self.db()?.inbound.iter() {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let Some(stored) = self.decode_or_skip::<StoredInbound>(TREE, &key, &bytes) else {
                continue;
            };
            if stored.state == InboundState::Done && stored.inbound.at < cutoff {
                let prefix = conversation_prefix(&stored.inbound.conversation);
                doomed.push((key.to_vec(), id_key(&prefix, &stored.inbound.id)));
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let inner = self.db()?;
        (&inner.inbound_ids, &inner.inbound)
            .transaction(|(ids, log)| {
                let mut removed = 0;
                for (log_key, id_key) in &doomed {
                    // Re-read inside the transaction: the state may have changed since.
                    let Some(bytes) = log.get(log_key)? else {
                        continue;
                    };
                    let stored: StoredInbound = self
                        .decode(TREE, log_key, &bytes)
                        .map_err(ConflictableTransactionError::Abort)?;
                    if stored.state == InboundState::Done {
                        log.remove(log_key.as_slice())?;
                        ids.remove(id_key.as_slice())?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .map_err(|e| self.tx_err(e))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;
    use crate::store::tests::message;

    fn texts(entries: &[StoredInbound]) -> Vec<&str> {
        entries.iter().map(|e| e.inbound.text.as_str()).collect()
    }

    #[test]
    fn a_redelivered_message_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        let other = ConversationKey::new("telegram", "2");

        assert_eq!(
            store.insert_inbound(&message(&chat, "10", 5)).unwrap(),
            InsertOutcome::New
        );
        let mut again = message(&chat, "10", 5);
        again.text = "edited on redelivery".to_string();
        assert_eq!(
            store.insert_inbound(&again).unwrap(),
            InsertOutcome::Duplicate
        );
        // The same platform id in another conversation is another message.
        assert_eq!(
            store.insert_inbound(&message(&other, "10", 5)).unwrap(),
            InsertOutcome::New
        );

        // The first copy is what is kept.
        assert_eq!(
            texts(&store.pending_inbound(&chat).unwrap()),
            vec!["message 10"]
        );
        // Still a duplicate once answered.
        store
            .set_inbound_state(&chat, "10", InboundState::Done)
            .unwrap();
        assert_eq!(
            store.insert_inbound(&again).unwrap(),
            InsertOutcome::Duplicate
        );
        assert!(store.pending_inbound(&chat).unwrap().is_empty());
    }

    #[test]
    fn messages_keep_arrival_order_per_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Prefixes of each other as text, to check that conversations do not bleed.
        let a = ConversationKey::new("telegram", "1");
        let b = ConversationKey::new("telegram", "11");
        // Platform ids out of lexical order: arrival order is what counts.
        for (conversation, id) in [(&a, "9"), (&b, "x"), (&a, "10"), (&a, "8"), (&b, "y")] {
            store.insert_inbound(&message(conversation, id, 1)).unwrap();
        }
        assert_eq!(
            texts(&store.pending_inbound(&a).unwrap()),
            vec!["message 9", "message 10", "message 8"]
        );
        assert_eq!(
            texts(&store.pending_inbound(&b).unwrap()),
            vec!["message x", "message y"]
        );
        drop(store);

        // Order survives a restart, and later arrivals still come after.
        let store = Store::open(dir.path()).unwrap();
        store.insert_inbound(&message(&a, "1", 2)).unwrap();
        assert_eq!(
            texts(&store.pending_inbound(&a).unwrap()),
            vec!["message 9", "message 10", "message 8", "message 1"]
        );
    }

    #[test]
    fn states_change_and_select_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ConversationKey::new("discord", "5").with_thread("6");
        let b = ConversationKey::new("telegram", "1");
        let c = ConversationKey::new("terminal", "local");
        for id in ["1", "2", "3"] {
            store.insert_inbound(&message(&a, id, 1)).unwrap();
        }
        store.insert_inbound(&message(&b, "1", 1)).unwrap();
        store.insert_inbound(&message(&c, "1", 1)).unwrap();

        let in_turn = InboundState::InTurn { turn: "t1".into() };
        assert!(store
            .set_inbound_state(&a, "1", InboundState::Done)
            .unwrap());
        assert!(store.set_inbound_state(&a, "2", in_turn.clone()).unwrap());
        assert!(store
            .set_inbound_state(&b, "1", InboundState::Done)
            .unwrap());
        assert!(!store
            .set_inbound_state(&a, "404", InboundState::Done)
            .unwrap());

        let pending = store.pending_inbound(&a).unwrap();
        let states: Vec<_> = pending
            .iter()
            .map(|e| (e.inbound.id.as_str(), &e.state))
            .collect();
        assert_eq!(states, vec![("2", &in_turn), ("3", &InboundState::Pending)]);
        assert_eq!(
            store.conversations_with_pending().unwrap(),
            vec![a.clone(), c.clone()]
        );
    }

    #[test]
    fn pruning_removes_only_old_answered_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        store
            .insert_inbound(&message(&chat, "old-done", 100))
            .unwrap();
        store
            .insert_inbound(&message(&chat, "old-pending", 100))
            .unwrap();
        store
            .insert_inbound(&message(&chat, "new-done", 900))
            .unwrap();
        store
            .set_inbound_state(&chat, "old-done", InboundState::Done)
            .unwrap();
        store
            .set_inbound_state(&chat, "new-done", InboundState::Done)
            .unwrap();

        assert_eq!(store.prune_inbound(1_000, 500).unwrap(), 1);
        assert_eq!(store.prune_inbound(1_000, 500).unwrap(), 0);
        // The pruned one is forgotten entirely (so it would be new again); the rest remain.
        assert_eq!(
            store
                .insert_inbound(&message(&chat, "old-done", 100))
                .unwrap(),
            InsertOutcome::New
        );
        assert_eq!(
            store
                .insert_inbound(&message(&chat, "new-done", 900))
                .unwrap(),
            InsertOutcome::Duplicate
        );
        let ids: Vec<_> = store
            .pending_inbound(&chat)
            .unwrap()
            .into_iter()
            .map(|e| e.inbound.id)
            .collect();
        assert_eq!(ids, vec!["old-pending", "old-done"]);
    }

    #[test]
    fn the_log_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let chat = ConversationKey::new("telegram", "1");
        let in_turn = InboundState::InTurn { turn: "t7".into() };
        {
            let store = Store::open(dir.path()).unwrap();
            for id in ["1", "2", "3"] {
                store.insert_inbound(&message(&chat, id, 1)).unwrap();
            }
            store
                .set_inbound_state(&chat, "1", InboundState::Done)
                .unwrap();
            store
                .set_inbound_state(&chat, "2", in_turn.clone())
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.insert_inbound(&message(&chat, "1", 1)).unwrap(),
            InsertOutcome::Duplicate
        );
        let pending = store.pending_inbound(&chat).unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].inbound, message(&chat, "2", 1));
        assert_eq!(pending[0].state, in_turn);
        assert_eq!(pending[1].state, InboundState::Pending);
        assert_eq!(store.conversations_with_pending().unwrap(), vec![chat]);
    }
}
