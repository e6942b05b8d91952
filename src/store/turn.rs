//! In-flight turns and the delivery state of their replies: what a restart resumes.

use clawpen_adapters::reply::ReplyState;

use super::shown::ShownReply;
use clawpen_domain::{ContainerId, ConversationKey, MessageRef, TurnId};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::delivery::{abort, delivery_key};
use super::inbound::{id_key, InboundState};
use super::{conversation_prefix, encode, Store, StoreError};

/// Tree name, for error messages.
const TREE: &str = "turns";

/// The running turn of one conversation, so that after a crash the daemon reattaches to
/// the box, replays the events after `last_acked`, and continues the reply from exactly the
/// acknowledged text. The record itself changes only when the turn does (it begins, gains
/// a follow-up); its reply text grows in chunks of its own (`text`), and which platform
/// messages show it is the delivery record's business ([`super::DeliveryRecord`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// Which conversation the turn answers.
    pub conversation: ConversationKey,
    /// The turn's id, shared with the agent and marked on its inbound messages.
    pub turn: TurnId,
    /// The box (container) running it.
    pub container: ContainerId,
    /// The sequence number of the last protocol event the bridge acknowledged. Read back,
    /// it is the later of this and the last stored text chunk's.
    pub last_acked: u64,
    /// Platform ids of the inbound messages it answers; done when it finishes.
    pub inbound: Vec<String>,
    /// The inbound message the reply answers.
    #[serde(default)]
    pub reply_to: Option<MessageRef>,
    /// The reply's text as acknowledged. Not part of the stored record: it is stored as
    /// chunks, and filled in when the record is read.
    #[serde(skip)]
    pub text: String,
    /// What the reply shows before the agent's text: the line that marks a scheduled
    /// run, with the blank line after it. Stored with the turn, so the reply a restart
    /// resumes or finishes still carries it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub heading: String,
    /// The reply as records written before chunked text kept it: its text and the parts
    /// shown. Read as the beginning of the text; never written by this version.
    #[serde(default, rename = "reply", skip_serializing_if = "Option::is_none")]
    pub legacy: Option<ShownReply>,
    /// When it started, in seconds since the Unix epoch.
    pub started_at: u64,
}

impl TurnRecord {
    /// A new turn's record, with no reply text yet.
    pub fn new(
        conversation: ConversationKey,
        turn: TurnId,
        container: ContainerId,
        last_acked: u64,
        reply_to: Option<MessageRef>,
        started_at: u64,
    ) -> Self {
        Self {
            conversation,
            turn,
            container,
            last_acked,
            inbound: Vec::new(),
            reply_to,
            text: String::new(),
            heading: String::new(),
            legacy: None,
            started_at,
        }
    }

    /// The last message that joined the turn while it ran (a follow-up), if any: the
    /// inbound messages after the one the reply answers. When the agent had finished the
    /// turn before a follow-up reached it, it answers that follow-up (and any after it) in
    /// a turn of its own, `<id>+<n>`, which is then a reply to this message.
    pub fn last_follow_up(&self) -> Option<&str> {
        let first = match &self.reply_to {
            Some(MessageRef(answered)) => self.inbound.iter().position(|id| id == answered)? + 1,
            None => 0,
        };
        self.inbound.get(first..)?.last().map(String::as_str)
    }

    /// The reply as the chat shows it: the heading, then the agent's text.
    pub fn reply_text(&self) -> String {
        format!("{}{}", self.heading, self.text)
    }

    /// What the platform showed of the reply, for a record written before delivery records
    /// existed: those kept the parts here. A newer record holds no parts, so this is then a
    /// reply with nothing shown yet (answering the same message).
    pub fn shown_before_delivery_records(&self) -> ReplyState {
        match &self.legacy {
            Some(reply) if !reply.parts.is_empty() => ReplyState::from(reply.clone()),
            _ => ReplyState::new(self.reply_to.clone()),
        }
    }
}

impl Store {
    /// Stores a turn's record, replacing the conversation's previous one. Flushed.
    #[cfg(test)]
    pub fn put_turn(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        self.put_turn_unflushed(turn)?;
        self.flush()
    }

    /// Stores a turn's record, replacing the conversation's previous one; without the
    /// flush, for a commit.
    pub fn put_turn_unflushed(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        let key = turn.conversation.to_string();
        self.db()?
            .turns
            .insert(key.as_bytes(), encode(turn)?)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// The turn starts over (its box's agent is a new process, so its event numbering
    /// restarts): stores `record` and drops the reply text stored so far, in one
    /// transaction. Not flushed: for a commit.
    pub fn restart_turn(&self, record: &TurnRecord) -> Result<(), StoreError> {
        let key = record.conversation.to_string();
        let chunks = self.text_keys(&record.conversation, &record.turn)?;
        let value = encode(record)?;
        let inner = self.db()?;
        (&inner.turns, &inner.turn_text)
            .transaction(|(turns, text)| {
                for chunk in &chunks {
                    text.remove(chunk)?;
                }
                turns.insert(key.as_bytes(), value.as_slice())?;
                Ok(())
            })
            .map_err(|e| self.tx_err(e))
    }

    /// [`Store::begin_turn_unflushed`], flushed.
    #[cfg(test)]
    pub fn begin_turn(&self, record: &TurnRecord, ids: &[String]) -> Result<(), StoreError> {
        self.begin_turn_unflushed(record, ids)?;
        self.flush()
    }

    /// Starts (or extends) a turn: stores its record and marks the messages `ids` as in it,
    /// in one transaction, so that after a crash a message is either still pending (and
    /// starts a turn again) or belongs to the stored turn (and is resumed with it), never
    /// both nor neither. Without the flush, for a commit.
    pub fn begin_turn_unflushed(
        &self,
        record: &TurnRecord,
        ids: &[String],
    ) -> Result<(), StoreError> {
        let key = record.conversation.to_string();
        let prefix = conversation_prefix(&record.conversation);
        let state = InboundState::InTurn {
            turn: record.turn.clone(),
        };
        let value = encode(record)?;
        let inner = self.db()?;
        (&inner.turns, &inner.inbound_ids, &inner.inbound)
            .transaction(|(turns, ids_tree, log)| {
                for id in ids {
                    self.update_state(ids_tree, log, &prefix, &id_key(&prefix, id), &state)?;
                }
                turns.insert(key.as_bytes(), value.as_slice())?;
                Ok(())
            })
            .map_err(|e| self.tx_err(e))
    }

    /// The conversation's running turn, if any, with its reply text.
    pub fn turn(&self, conversation: &ConversationKey) -> Result<Option<TurnRecord>, StoreError> {
        let key = conversation.to_string();
        match self
            .db()?
            .turns
            .get(key.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => {
                let record = self.decode(TREE, key.as_bytes(), &bytes)?;
                self.with_text(record).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Every running turn, with its reply text, to resume at startup. Unreadable records
    /// are logged and skipped.
    pub fn turns(&self) -> Result<Vec<TurnRecord>, StoreError> {
        let mut turns = Vec::new();
        for entry in self.db()?.turns.iter() {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let Some(record) = self.decode_or_skip(TREE, &key, &bytes) else {
                continue;
            };
            match self.with_text(record) {
                Ok(record) => turns.push(record),
                Err(StoreError::Corrupt { detail, .. }) => {
                    tracing::warn!(store = %self.path().display(), detail, "skipping a turn whose reply text is unreadable");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(turns)
    }

    /// Fills in a stored record's reply text (and how far it was acknowledged) from its
    /// chunks, on top of what an older record kept itself.
    fn with_text(&self, mut record: TurnRecord) -> Result<TurnRecord, StoreError> {
        let base = match &record.legacy {
            Some(reply) => {
                if record.reply_to.is_none() {
                    record.reply_to = reply.reply_to.clone();
                }
                reply.text.clone()
            }
            None => String::new(),
        };
        let (text, last) = self.stored_text(&record.conversation, &record.turn, base)?;
        record.text = text;
        record.last_acked = record.last_acked.max(last.unwrap_or(0));
        Ok(record)
    }

    /// Ends the conversation's stored turn, as `complete_turn` does with the record as
    /// stored. Returns the removed record, or `None` if there was no turn.
    #[cfg(test)]
    pub fn finish_turn(
        &self,
        conversation: &ConversationKey,
    ) -> Result<Option<TurnRecord>, StoreError> {
        let Some(record) = self.turn(conversation)? else {
            return Ok(None);
        };
        self.complete_turn(&record)?;
        Ok(Some(record))
    }

    /// [`Store::complete_turn_unflushed`], flushed.
    #[cfg(test)]
    pub fn complete_turn(&self, record: &TurnRecord) -> Result<(), StoreError> {
        self.complete_turn_unflushed(record)?;
        self.flush()
    }

    /// Ends a turn whose final state is `record`: marks its inbound messages done, removes
    /// the conversation's turn record (if it is this turn's) and its text chunks, and keeps
    /// the reply's final text with its delivery record, all in one transaction, so a crash
    /// leaves either a turn to resume or answered messages with a reply still to show, never
    /// answered messages that get answered again, nor a finished reply that is never shown.
    /// Without the flush, for a commit.
    pub fn complete_turn_unflushed(&self, record: &TurnRecord) -> Result<(), StoreError> {
        let key = record.conversation.to_string();
        let prefix = conversation_prefix(&record.conversation);
        let delivery = delivery_key(&record.conversation, &record.turn);
        let chunks = self.text_keys(&record.conversation, &record.turn)?;
        let inner = self.db()?;
        (
            &inner.turns,
            &inner.inbound_ids,
            &inner.inbound,
            &inner.deliveries,
            &inner.turn_text,
        )
            .transaction(|(turns, ids, log, deliveries, text)| {
                for id in &record.inbound {
                    // A message missing from the log (pruned) has nothing left to mark.
                    let id_key = id_key(&prefix, id);
                    self.update_state(ids, log, &prefix, &id_key, &InboundState::Done)?;
                }
                if let Some(bytes) = turns.get(key.as_bytes())? {
                    let stored: TurnRecord = self
                        .decode(TREE, key.as_bytes(), &bytes)
                        .map_err(ConflictableTransactionError::Abort)?;
                    if stored.turn == record.turn {
                        turns.remove(key.as_bytes())?;
                    }
                }
                for chunk in &chunks {
                    text.remove(chunk)?;
                }
                let mut pending =
                    self.delivery_in(deliveries, &record.conversation, &record.turn, &delivery)?;
                pending.final_text = Some(record.reply_text());
                pending.reply_to = record.reply_to.clone();
                deliveries.insert(delivery.as_slice(), encode(&pending).map_err(abort)?)?;
                Ok(())
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

    #[test]
    fn the_last_follow_up_is_the_last_message_after_the_one_answered() {
        let chat = ConversationKey::new("telegram", "1");
        let answered = Some(MessageRef("2".into()));
        let mut record = TurnRecord::new(chat, "t".into(), "c".into(), 0, answered, 1);
        record.inbound = vec!["1".into(), "2".into()];
        assert_eq!(
            record.last_follow_up(),
            None,
            "context and the message answered"
        );
        record.inbound.extend(["3".into(), "4".into()]);
        assert_eq!(record.last_follow_up(), Some("4"));
        record.reply_to = None;
        assert_eq!(record.last_follow_up(), Some("4"), "a turn the agent began");
        record.inbound.clear();
        assert_eq!(record.last_follow_up(), None);
    }
    use crate::store::tests::message;
    use crate::store::InsertOutcome;

    /// Overwrites the `n`th entry of the inbound log with bytes that are no record.
    fn damage_inbound(store: &Store, n: usize) {
        let db = store.db().unwrap();
        let key = db.inbound.iter().nth(n).unwrap().unwrap().0;
        db.inbound.insert(key, &b"garbage"[..]).unwrap();
    }

    fn record(conversation: &ConversationKey, turn: &str, inbound: &[&str]) -> TurnRecord {
        let mut record = TurnRecord::new(
            conversation.clone(),
            TurnId::from(turn),
            ContainerId(format!("clawpen-{turn}")),
            0,
            Some(MessageRef(inbound.first().unwrap_or(&"").to_string())),
            50,
        );
        record.inbound = inbound.iter().map(|s| s.to_string()).collect();
        record
    }

    /// A turn record as the release before delivery records wrote it, mid-reply: its text
    /// and the message showing it.
    const RELEASED_RECORD: &str = r#"{"conversation":{"platform":"telegram","chat":"-500","thread":null},"turn":"t18c3-0","container":"4f2a","last_acked":12,"inbound":["1001"],"reply":{"text":"one two three","parts":[{"message":"2001","shown":"one two","text":"one two three","sealed":false}],"reply_to":"1001","consumed":0,"fence":null},"started_at":1764400000}"#;

    #[test]
    fn a_turn_written_by_the_last_release_resumes_in_the_message_it_showed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "-500");
        store
            .db()
            .unwrap()
            .turns
            .insert(chat.to_string().as_bytes(), RELEASED_RECORD.as_bytes())
            .unwrap();
        let record = store.turn(&chat).unwrap().unwrap();
        assert_eq!(record.last_acked, 12);
        assert_eq!(record.text, "one two three");
        assert_eq!(record.reply_to, Some(MessageRef("1001".into())));
        // No delivery record yet: the parts it kept are what the platform shows.
        assert_eq!(store.delivery(&chat, &record.turn).unwrap(), None);
        let shown = record.shown_before_delivery_records();
        assert_eq!(shown.parts.len(), 1);
        assert_eq!(shown.parts[0].message, Some(MessageRef("2001".into())));
        assert_eq!(shown.parts[0].shown, "one two");
        assert_eq!(shown.reply_to, Some(MessageRef("1001".into())));
        // Its text goes on in chunks after what it kept, and comes back whole.
        store
            .append_text(&chat, &record.turn, 13, record.text.len(), " four")
            .unwrap();
        let record = store.turn(&chat).unwrap().unwrap();
        assert_eq!(record.text, "one two three four");
        assert_eq!(record.last_acked, 13);
        // A record of this release keeps no parts: nothing shown, same message answered.
        let mut current = record.clone();
        current.legacy = None;
        let fresh = current.shown_before_delivery_records();
        assert!(fresh.parts.is_empty() && fresh.text.is_empty());
        assert_eq!(fresh.reply_to, Some(MessageRef("1001".into())));
    }

    #[test]
    fn a_turn_and_its_messages_begin_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        for id in ["1", "2"] {
            store.insert_inbound(&message(&chat, id, 1)).unwrap();
        }
        store
            .begin_turn(&record(&chat, "t1", &["1"]), &["1".into()])
            .unwrap();
        let states: Vec<_> = store
            .pending_inbound(&chat)
            .unwrap()
            .into_iter()
            .map(|e| (e.inbound.id, e.state))
            .collect();
        let in_t1 = InboundState::InTurn { turn: "t1".into() };
        assert_eq!(
            states,
            vec![("1".into(), in_t1), ("2".into(), InboundState::Pending)]
        );
        assert_eq!(store.turn(&chat).unwrap().unwrap().turn, *"t1");

        // A damaged entry aborts the whole step: no new record, no message moved.
        damage_inbound(&store, 1);
        let error = store
            .begin_turn(&record(&chat, "t2", &["1", "2"]), &["1".into(), "2".into()])
            .unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert_eq!(store.turn(&chat).unwrap().unwrap().turn, *"t1");
    }

    #[test]
    fn a_turn_is_replaced_at_each_step_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ConversationKey::new("telegram", "1");
        let b = ConversationKey::new("discord", "2");
        assert_eq!(store.turn(&a).unwrap(), None);

        let mut turn = record(&a, "t1", &["10"]);
        store.put_turn(&turn).unwrap();
        store
            .append_text(&a, &TurnId::from("t1"), 7, 0, "Hello")
            .unwrap();
        turn.last_acked = 7;
        turn.text = "Hello".to_string();
        store.put_turn(&record(&b, "t2", &[])).unwrap();

        assert_eq!(store.turn(&a).unwrap().as_ref(), Some(&turn));
        let names: Vec<_> = store.turns().unwrap().into_iter().map(|t| t.turn).collect();
        assert_eq!(names, vec![TurnId::from("t2"), TurnId::from("t1")]);
    }

    #[test]
    fn finishing_a_turn_marks_its_messages_done_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        for id in ["1", "2", "3"] {
            store.insert_inbound(&message(&chat, id, 1)).unwrap();
        }
        let in_turn = InboundState::InTurn { turn: "t1".into() };
        store
            .set_inbound_state(&chat, "1", in_turn.clone())
            .unwrap();
        store.set_inbound_state(&chat, "2", in_turn).unwrap();
        // "gone" was pruned meanwhile; finishing must not trip over it.
        store
            .put_turn(&record(&chat, "t1", &["1", "2", "gone"]))
            .unwrap();

        store
            .append_text(&chat, &TurnId::from("t1"), 2, 0, "the answer")
            .unwrap();

        let finished = store.finish_turn(&chat).unwrap().unwrap();
        assert_eq!(finished.turn, *"t1");
        assert_eq!(store.turn(&chat).unwrap(), None);
        // Its text moved to the delivery, and its chunks went with the turn.
        let delivery = store.delivery(&chat, &TurnId::from("t1")).unwrap().unwrap();
        assert_eq!(delivery.final_text.as_deref(), Some("the answer"));
        assert!(store
            .text_keys(&chat, &TurnId::from("t1"))
            .unwrap()
            .is_empty());
        let left: Vec<_> = store
            .pending_inbound(&chat)
            .unwrap()
            .into_iter()
            .map(|e| e.inbound.id)
            .collect();
        assert_eq!(left, vec!["3"]);
        // Finishing again is harmless.
        assert_eq!(store.finish_turn(&chat).unwrap(), None);
    }

    #[test]
    fn a_restarted_turn_forgets_its_text_and_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        let mut turn = record(&chat, "t1", &["1"]);
        store.put_turn(&turn).unwrap();
        store
            .append_text(&chat, &TurnId::from("t1"), 40, 0, "from the old agent")
            .unwrap();
        // A new agent numbers from 1 again: its text must not be folded under the old.
        turn.last_acked = 2;
        store.restart_turn(&turn).unwrap();
        store
            .append_text(&chat, &TurnId::from("t1"), 3, 0, "anew")
            .unwrap();
        let stored = store.turn(&chat).unwrap().unwrap();
        assert_eq!((stored.text.as_str(), stored.last_acked), ("anew", 3));
    }

    #[test]
    fn a_failed_finish_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        store.insert_inbound(&message(&chat, "1", 1)).unwrap();
        store.insert_inbound(&message(&chat, "2", 1)).unwrap();
        store.put_turn(&record(&chat, "t1", &["1", "2"])).unwrap();
        // Damage the second message's entry: the transaction aborts after marking the first.
        damage_inbound(&store, 1);

        let error = store.finish_turn(&chat).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert!(store.turn(&chat).unwrap().is_some(), "the turn must remain");
        let first = store.pending_inbound(&chat).unwrap();
        assert_eq!(
            first.len(),
            1,
            "the damaged entry is skipped, the first is not done"
        );
        assert_eq!(first[0].state, InboundState::Pending);
    }

    #[test]
    fn everything_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let chat = ConversationKey::new("telegram", "1");
        let mut turn = record(&chat, "t1", &["1"]);
        turn.text = "partial answer".to_string();
        turn.last_acked = 5;
        let (instance, conversation) = {
            let store = Store::open(dir.path()).unwrap();
            let conversation = store.touch_conversation(&chat, 40).unwrap();
            store.insert_inbound(&message(&chat, "1", 1)).unwrap();
            store.insert_inbound(&message(&chat, "2", 2)).unwrap();
            let in_turn = InboundState::InTurn { turn: "t1".into() };
            store.set_inbound_state(&chat, "1", in_turn).unwrap();
            store.put_turn(&turn).unwrap();
            store
                .append_text(&chat, &TurnId::from("t1"), 4, 0, "partial")
                .unwrap();
            store
                .append_text(&chat, &TurnId::from("t1"), 5, 7, " answer")
                .unwrap();
            store.set_cursor("telegram", "77").unwrap();
            (store.instance_id(), conversation)
        };

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.instance_id(), instance);
        assert_eq!(store.conversations().unwrap(), vec![conversation]);
        assert_eq!(store.turns().unwrap(), vec![turn]);
        assert_eq!(store.cursor("telegram").unwrap().as_deref(), Some("77"));
        assert_eq!(store.pending_inbound(&chat).unwrap().len(), 2);
        assert_eq!(
            store.insert_inbound(&message(&chat, "2", 2)).unwrap(),
            InsertOutcome::Duplicate
        );

        // And the turn's end, after the restart, is as durable.
        store.finish_turn(&chat).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.turns().unwrap(), vec![]);
        let left: Vec<_> = store
            .pending_inbound(&chat)
            .unwrap()
            .into_iter()
            .map(|e| e.inbound.id)
            .collect();
        assert_eq!(left, vec!["2"]);
    }
}
