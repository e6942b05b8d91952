//! Conversations the daemon has seen, with their settings and last activity.

use std::collections::{BTreeSet, HashMap};

use clawpen_domain::ConversationKey;
use serde::{Deserialize, Serialize};

use super::{encode, Store, StoreError};

/// Tree name, for error messages.
const TREE: &str = "conversations";

/// What the daemon keeps about one conversation beyond its messages: when it was last
/// active (to stop idle boxes and list conversations). (Records of earlier releases also
/// carry a `model` that nothing ever set; it is ignored. A conversation's own model is
/// operator configuration, `[conversations."KEY"] model`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// Which conversation this is.
    pub key: ConversationKey,
    /// When it was first seen, in seconds since the Unix epoch.
    pub created_at: u64,
    /// When a message last arrived or a turn last ran, in seconds since the Unix epoch.
    pub last_active: u64,
    /// The workspace volume the conversation claimed from the warm pool, which it keeps for
    /// good. `None` (every record written before the pool existed, and conversations that
    /// started in a cold box): its workspace is the volume named after the conversation
    /// (`sandbox::spec::volume_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

impl ConversationRecord {
    /// A conversation first seen at `now`, with default settings.
    pub fn new(key: ConversationKey, now: u64) -> Self {
        Self {
            key,
            created_at: now,
            last_active: now,
            workspace: None,
        }
    }
}

impl Store {
    /// Stores a conversation's record, replacing the previous one. Flushed, because it
    /// carries settings the user chose.
    #[cfg(test)]
    pub fn upsert_conversation(&self, record: &ConversationRecord) -> Result<(), StoreError> {
        let key = record.key.to_string();
        self.db()?
            .conversations
            .insert(key.as_bytes(), encode(record)?)
            .map_err(|e| self.sled_err(e))?;
        self.flush()
    }

    /// One conversation's record, if it was ever stored.
    pub fn conversation(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let id = key.to_string();
        match self
            .db()?
            .conversations
            .get(id.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode(TREE, id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every conversation, ordered by key text. Unreadable records are logged and skipped.
    pub fn conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in self.db()?.conversations.iter() {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            records.extend(self.decode_or_skip(TREE, &key, &bytes));
        }
        Ok(records)
    }

    /// Every conversation the store holds any trace of: a conversation record, a turn or an
    /// inbound message, read from the keys alone. A record whose value is damaged still
    /// names its conversation here, so that the conversation is never taken for a stranger
    /// and its workspace for an orphan.
    pub fn known_conversations(&self) -> Result<BTreeSet<ConversationKey>, StoreError> {
        let mut known = BTreeSet::new();
        let mut add = |tree: &str, text: &[u8]| match std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<ConversationKey>().ok())
        {
            Some(key) => {
                known.insert(key);
            }
            None => {
                let text = String::from_utf8_lossy(text);
                tracing::warn!(store = %self.inner.path.display(), tree, key = %text, "a store key names no conversation");
            }
        };
        for (name, tree) in [
            (TREE, &self.db()?.conversations),
            ("turns", &self.db()?.turns),
        ] {
            for key in tree.iter().keys() {
                let key = key.map_err(|e| self.sled_err(e))?;
                add(name, &key);
            }
        }
        // Inbound keys start with the conversation's length-prefixed text (see
        // `conversation_prefix`); consecutive entries share it, so each is parsed once.
        let mut last: Option<Vec<u8>> = None;
        for key in self.db()?.inbound.iter().keys() {
            let key = key.map_err(|e| self.sled_err(e))?;
            let Some(text) = prefixed_text(&key) else {
                add("inbound", &key);
                continue;
            };
            if last.as_deref() != Some(text) {
                add("inbound", text);
                last = Some(text.to_vec());
            }
        }
        Ok(known)
    }

    /// Records that `conversation` claimed the warm pool volume `volume` as its workspace,
    /// creating its record if it is new. Flushed (off the async workers), and done before
    /// the box is given anything: a workspace the store does not know would be taken for
    /// an unclaimed pool volume and removed at the next start.
    pub async fn claim_workspace(
        &self,
        conversation: &ConversationKey,
        volume: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let (key, volume) = (conversation.clone(), volume.to_string());
        self.blocking(move |store| {
            let id = key.to_string();
            store
                .db()?
                .conversations
                .transaction(|tree| {
                    let mut record = match tree.get(id.as_bytes())? {
                        Some(bytes) => store
                            .decode(TREE, id.as_bytes(), &bytes)
                            .map_err(sled::transaction::ConflictableTransactionError::Abort)?,
                        None => ConversationRecord::new(key.clone(), now),
                    };
                    record.workspace = Some(volume.clone());
                    let value = encode(&record)
                        .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                    tree.insert(id.as_bytes(), value)?;
                    Ok(())
                })
                .map_err(|e| store.tx_err(e))?;
            store.flush()
        })
        .await
    }

    /// The workspace volume `conversation` claimed from the warm pool, if it did.
    pub async fn claimed_workspace(
        &self,
        conversation: &ConversationKey,
    ) -> Result<Option<String>, StoreError> {
        let key = conversation.clone();
        self.blocking(move |store| Ok(store.conversation(&key)?.and_then(|r| r.workspace)))
            .await
    }

    /// Every workspace volume claimed from the warm pool, with the conversation that owns
    /// it: how claimed pool boxes and volumes, which carry no conversation label, are told
    /// from unclaimed leftovers (`sandbox::attribute`). Unreadable records are skipped.
    pub fn claimed_workspaces(&self) -> Result<HashMap<String, ConversationKey>, StoreError> {
        Ok(self
            .conversations()?
            .into_iter()
            .filter_map(|r| Some((r.workspace?, r.key)))
            .collect())
    }

    /// Records activity in a conversation at `now`, creating its record if it is new, and
    /// returns the record. Not flushed: losing the last few seconds of activity times in a
    /// crash costs nothing, and this runs for every message.
    pub fn touch_conversation(
        &self,
        key: &ConversationKey,
        now: u64,
    ) -> Result<ConversationRecord, StoreError> {
        let id = key.to_string();
        self.update(
            &self.db()?.conversations,
            TREE,
            id.as_bytes(),
            |record: Option<ConversationRecord>| {
                let mut record =
                    record.unwrap_or_else(|| ConversationRecord::new(key.clone(), now));
                // Times from different sources may arrive out of order; never go backwards.
                record.last_active = record.last_active.max(now);
                record
            },
        )
    }
}

/// The conversation text at the start of an inbound key: a big-endian u32 length, then
/// that many bytes.
pub(super) fn prefixed_text(key: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    key.get(4..4 + usize::try_from(len).ok()?)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;

    #[test]
    fn conversations_are_created_updated_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chat = ConversationKey::new("telegram", "-100");
        let thread = ConversationKey::new("discord", "7").with_thread("9");
        assert_eq!(store.conversation(&chat).unwrap(), None);

        let created = store.touch_conversation(&chat, 100).unwrap();
        assert_eq!(created, ConversationRecord::new(chat.clone(), 100));
        let touched = store.touch_conversation(&chat, 150).unwrap();
        assert_eq!((touched.created_at, touched.last_active), (100, 150));
        // An older time does not move last_active back.
        assert_eq!(
            store.touch_conversation(&chat, 120).unwrap().last_active,
            150
        );

        let chosen = ConversationRecord::new(thread.clone(), 200);
        store.upsert_conversation(&chosen).unwrap();
        // Touching keeps when it was first seen.
        assert_eq!(
            store.touch_conversation(&thread, 300).unwrap().created_at,
            200
        );

        let listed = store.conversations().unwrap();
        let keys: Vec<_> = listed.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, vec![thread.clone(), chat.clone()]);
        assert_eq!(
            store.conversation(&thread).unwrap().unwrap().last_active,
            300
        );
    }

    #[tokio::test]
    async fn a_claimed_workspace_is_kept_with_the_record_and_old_records_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = ConversationKey::new("telegram", "1");
        let new = ConversationKey::new("telegram", "2");
        // A record as earlier releases wrote it, without the field (the store's fixture of
        // the last release has such records too: see `upgrade`).
        let written = serde_json::json!({"key": old, "created_at": 5, "last_active": 6});
        store
            .db()
            .unwrap()
            .conversations
            .insert(old.to_string().as_bytes(), written.to_string().as_bytes())
            .unwrap();
        assert_eq!(store.conversation(&old).unwrap().unwrap().workspace, None);
        assert_eq!(store.claimed_workspace(&old).await.unwrap(), None);

        store.claim_workspace(&new, "pool-7-ws", 10).await.unwrap();
        // Touching the record later keeps the claim.
        store.touch_conversation(&new, 20).unwrap();
        let record = store.conversation(&new).unwrap().unwrap();
        assert_eq!(record.workspace.as_deref(), Some("pool-7-ws"));
        assert_eq!((record.created_at, record.last_active), (10, 20));
        let claims = store.claimed_workspaces().unwrap();
        assert_eq!(claims, HashMap::from([("pool-7-ws".to_string(), new)]));
        // A record without a claim is written as before.
        store.touch_conversation(&old, 30).unwrap();
        let bytes = store
            .db()
            .unwrap()
            .conversations
            .get(old.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("workspace"));
    }

    #[test]
    fn an_unreadable_record_is_an_error_alone_and_skipped_in_lists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = ConversationKey::new("telegram", "1");
        let bad = ConversationKey::new("telegram", "2");
        store.touch_conversation(&good, 1).unwrap();
        store
            .db()
            .unwrap()
            .conversations
            .insert(bad.to_string().as_bytes(), &b"{"[..])
            .unwrap();

        let error = store.conversation(&bad).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert!(error.to_string().contains("telegram:2"), "{error}");
        assert!(store.touch_conversation(&bad, 2).is_err());
        let keys: Vec<_> = store
            .conversations()
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, vec![good]);
    }

    #[test]
    fn every_trace_of_a_conversation_makes_it_known_even_a_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let keys: Vec<ConversationKey> = (1..=4)
            .map(|n| ConversationKey::new("telegram", n.to_string()))
            .collect();
        store.touch_conversation(&keys[0], 1).unwrap();
        // A record that no longer decodes, and a turn that does not either.
        store
            .db()
            .unwrap()
            .conversations
            .insert(keys[1].to_string().as_bytes(), &b"{"[..])
            .unwrap();
        store
            .db()
            .unwrap()
            .turns
            .insert(keys[2].to_string().as_bytes(), &b"garbage"[..])
            .unwrap();
        // Only a stored message, no record (touching it failed, say).
        store
            .insert_inbound(&super::super::tests::message(&keys[3], "m1", 5))
            .unwrap();
        store
            .insert_inbound(&super::super::tests::message(&keys[3], "m2", 6))
            .unwrap();

        let known: Vec<ConversationKey> =
            store.known_conversations().unwrap().into_iter().collect();
        assert_eq!(known, keys);
    }
}
