//! The reply text of running turns, stored as it grows.
//!
//! A reply streams in many small steps, and each must be durable before the box's event is
//! acknowledged. Rewriting the whole text at every step costs writes that grow with the
//! square of the reply's length; instead each step adds a chunk: `at`, the length of the
//! text where the chunk begins (below the previous end when text was withdrawn), and the
//! text that follows. Reading folds the chunks in order. A chunk is keyed by the sequence
//! number of the box event that made it, so the last one also says how far the bridge had
//! acknowledged. The chunks go when the turn ends ([`Store::complete_turn_unflushed`]).

use clawpen_domain::{ConversationKey, TurnId};
use serde::{Deserialize, Serialize};

use super::{conversation_prefix, encode, Store, StoreError};

/// Tree name, for error messages.
const TREE: &str = "turn_text";

/// One step of a reply's text.
#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    /// The text's length (in bytes) where this chunk begins.
    at: u64,
    /// What follows there.
    text: String,
}

/// The keys of one turn's chunks begin with this: the conversation's prefix, then the
/// turn id with its length (a turn id comes from the box and may contain anything).
fn text_prefix(conversation: &ConversationKey, turn: &TurnId) -> Vec<u8> {
    let mut key = conversation_prefix(conversation);
    let turn = turn.as_str();
    let len = u32::try_from(turn.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(turn.as_bytes());
    key
}

/// Applies one chunk to `text`: keep its first `at` bytes (never splitting a char), then
/// append.
fn apply(text: &mut String, at: u64, chunk: &str) {
    let mut keep = usize::try_from(at).unwrap_or(usize::MAX).min(text.len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    text.truncate(keep);
    text.push_str(chunk);
}

impl Store {
    /// Adds one step of a running turn's reply: its text becomes its first `at` bytes
    /// followed by `text`, as of the box event `seq`. Not flushed: meant for a commit
    /// ([`Store::submit`]), whose flush makes it durable.
    pub fn append_text(
        &self,
        conversation: &ConversationKey,
        turn: &TurnId,
        seq: u64,
        at: usize,
        text: &str,
    ) -> Result<(), StoreError> {
        let mut key = text_prefix(conversation, turn);
        key.extend_from_slice(&seq.to_be_bytes());
        let chunk = Chunk {
            at: u64::try_from(at).unwrap_or(u64::MAX),
            text: text.to_string(),
        };
        self.db()?
            .turn_text
            .insert(key, encode(&chunk)?)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// A turn's reply text: `base` with its stored chunks applied, and the seq of the last
    /// chunk, if there is one. A chunk that cannot be read fails it: resuming from a text
    /// with a hole would garble the reply.
    pub(super) fn stored_text(
        &self,
        conversation: &ConversationKey,
        turn: &TurnId,
        base: String,
    ) -> Result<(String, Option<u64>), StoreError> {
        let mut text = base;
        let mut last = None;
        for entry in self
            .db()?
            .turn_text
            .scan_prefix(text_prefix(conversation, turn))
        {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let chunk: Chunk = self.decode(TREE, &key, &bytes)?;
            apply(&mut text, chunk.at, &chunk.text);
            last = key
                .len()
                .checked_sub(8)
                .and_then(|at| key.get(at..))
                .and_then(|seq| <[u8; 8]>::try_from(seq).ok())
                .map(u64::from_be_bytes);
        }
        Ok((text, last))
    }

    /// The keys of a turn's chunks, to remove them with the turn.
    pub(super) fn text_keys(
        &self,
        conversation: &ConversationKey,
        turn: &TurnId,
    ) -> Result<Vec<sled::IVec>, StoreError> {
        self.db()?
            .turn_text
            .scan_prefix(text_prefix(conversation, turn))
            .keys()
            .map(|key| key.map_err(|e| self.sled_err(e)))
            .collect()
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
    fn chunks_fold_into_the_text_with_withdrawals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "1");
        let other = ConversationKey::new("telegram", "12");
        store
            .append_text(&chat, &TurnId::from("t1"), 3, 0, "Hello")
            .unwrap();
        store
            .append_text(&chat, &TurnId::from("t1"), 4, 5, ", wor")
            .unwrap();
        // The answer broke off: back to "Hello", then on.
        store
            .append_text(&chat, &TurnId::from("t1"), 7, 5, ", world")
            .unwrap();
        // Other turns and conversations whose keys share a beginning are not mixed in.
        store
            .append_text(&chat, &TurnId::from("t11"), 1, 0, "x")
            .unwrap();
        store
            .append_text(&other, &TurnId::from("t1"), 9, 0, "y")
            .unwrap();
        let (text, last) = store
            .stored_text(&chat, &TurnId::from("t1"), String::new())
            .unwrap();
        assert_eq!((text.as_str(), last), ("Hello, world", Some(7)));
        let (text, last) = store
            .stored_text(&chat, &TurnId::from("t2"), "base".into())
            .unwrap();
        assert_eq!((text.as_str(), last), ("base", None));
        assert_eq!(
            store.text_keys(&chat, &TurnId::from("t1")).unwrap().len(),
            3
        );
    }

    #[test]
    fn a_cut_never_splits_a_char() {
        let mut text = "déjà".to_string();
        apply(&mut text, 2, "!");
        assert_eq!(text, "d!");
        apply(&mut text, 99, "?");
        assert_eq!(text, "d!?");
    }
}
