//! A message that starts a turn at once (the idle box's fast path, see
//! `router::actor::begin`): logged and made part of its turn in one transaction, where
//! logging it and beginning the turn apart would cost two, each sealing sled's log buffer
//! twice (see `store::update`).

use clawpen_domain::Inbound;
use sled::Transactional;

use super::inbound::{id_key, InboundState, InsertOutcome};
use super::turn::TurnRecord;
use super::{conversation_prefix, encode, Store, StoreError};

impl Store {
    /// Logs `message` as part of the new turn `record`, stores the turn and marks the turn's
    /// other messages (its context, logged before) as in it, all in one transaction, and
    /// notes the conversation's activity: what [`Store::log_inbound_unflushed`] then
    /// [`Store::begin_turn_unflushed`] do, for an addressed message. A message logged
    /// already is a `Duplicate`, and nothing changes. Without the flush, for a commit.
    pub fn accept_into_turn_unflushed(
        &self,
        message: &Inbound,
        record: &TurnRecord,
    ) -> Result<InsertOutcome, StoreError> {
        let state = InboundState::InTurn {
            turn: record.turn.clone(),
        };
        let Some(entry) = self.new_entry(message, state.clone())? else {
            return Ok(InsertOutcome::Duplicate);
        };
        let prefix = conversation_prefix(&message.conversation);
        let turn_key = record.conversation.to_string();
        let turn = encode(record)?;
        let inner = self.db()?;
        let outcome = (&inner.turns, &inner.inbound_ids, &inner.inbound)
            .transaction(|(turns, ids, log)| {
                if entry.insert(ids, log)? == InsertOutcome::Duplicate {
                    return Ok(InsertOutcome::Duplicate);
                }
                for id in record.inbound.iter().filter(|id| **id != message.id) {
                    self.update_state(ids, log, &prefix, &id_key(&prefix, id), &state)?;
                }
                turns.insert(turn_key.as_bytes(), turn.as_slice())?;
                Ok(InsertOutcome::New)
            })
            .map_err(|e| self.tx_err(e))?;
        if outcome == InsertOutcome::New {
            if let Err(e) = self.touch_conversation(&message.conversation, message.at) {
                tracing::warn!(conversation = %message.conversation, error = %e, "could not record the conversation");
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use clawpen_domain::{ContainerId, ConversationKey, MessageRef, TurnId};

    use super::*;
    use crate::store::tests::message;

    #[test]
    fn the_message_its_context_and_the_turn_are_stored_together_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("terminal", "c");
        let mut context = message(&chat, "c1", 10);
        context.addressed = false;
        store.log_inbound_unflushed(&context).unwrap();
        let asked = message(&chat, "m1", 11);
        let mut record = TurnRecord::new(
            chat.clone(),
            TurnId::from("t1"),
            ContainerId("box".into()),
            0,
            Some(MessageRef("m1".into())),
            11,
        );
        record.inbound = vec!["c1".into(), "m1".into()];
        let outcome = store.accept_into_turn_unflushed(&asked, &record).unwrap();
        assert_eq!(outcome, InsertOutcome::New);
        let in_turn = Some(InboundState::InTurn {
            turn: TurnId::from("t1"),
        });
        assert_eq!(store.inbound_state(&chat, "m1").unwrap(), in_turn);
        assert_eq!(store.inbound_state(&chat, "c1").unwrap(), in_turn);
        assert_eq!(
            store.turn(&chat).unwrap().map(|t| t.turn),
            Some(record.turn.clone())
        );
        assert_eq!(
            store.conversation(&chat).unwrap().map(|c| c.last_active),
            Some(11)
        );
        // Sent again, it changes nothing: not the turn, not the message's state.
        let mut other = record.clone();
        other.turn = TurnId::from("t2");
        let again = store.accept_into_turn_unflushed(&asked, &other).unwrap();
        assert_eq!(again, InsertOutcome::Duplicate);
        assert_eq!(
            store.turn(&chat).unwrap().map(|t| t.turn),
            Some(record.turn)
        );
        assert_eq!(store.inbound_state(&chat, "m1").unwrap(), in_turn);
    }
}
