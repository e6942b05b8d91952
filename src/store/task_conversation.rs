//! Tasks by conversation: the `task_conv` index (a conversation's tasks, their count, the
//! tasks of platforms no longer configured) and each conversation's time zone
//! (`task_zones`). The records themselves and the due index are in `task`.

use clawpen_domain::ConversationKey;

use super::conversation::prefixed_text;
use super::{conversation_prefix, encode, Store, StoreError, TaskRecord};

/// The task id at the end of a `task_conv` key.
fn id_of(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(8)?;
    key[at..].try_into().ok().map(u64::from_be_bytes)
}

impl Store {
    /// A conversation's tasks, by id.
    pub fn tasks_of(&self, conversation: &ConversationKey) -> Result<Vec<TaskRecord>, StoreError> {
        let inner = self.db()?;
        let mut found = Vec::new();
        for entry in inner
            .task_conv
            .scan_prefix(conversation_prefix(conversation))
        {
            let (key, _) = entry.map_err(|e| self.sled_err(e))?;
            let Some(id) = id_of(&key) else {
                continue;
            };
            if let Some(task) = self.task(id)? {
                found.push(task);
            }
        }
        Ok(found)
    }

    /// How many tasks a conversation has, read from the index alone.
    pub fn count_tasks(&self, conversation: &ConversationKey) -> Result<usize, StoreError> {
        Ok(self
            .db()?
            .task_conv
            .scan_prefix(conversation_prefix(conversation))
            .count())
    }

    /// The active tasks of conversations whose platform `configured` says no to (the
    /// scheduler's check at start). Found from the index's keys, which name each task's
    /// conversation: no other task's record is read. A key whose conversation cannot be
    /// read is decided by its record.
    pub fn active_tasks_off(
        &self,
        configured: impl Fn(&str) -> bool,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let inner = self.db()?;
        let mut found = Vec::new();
        for key in inner.task_conv.iter().keys() {
            let key = key.map_err(|e| self.sled_err(e))?;
            let platform = prefixed_text(&key)
                .and_then(|text| std::str::from_utf8(text).ok())
                .and_then(|text| text.parse::<ConversationKey>().ok())
                .map(|conversation| conversation.platform);
            if platform.is_some_and(|p| configured(&p)) {
                continue;
            }
            let Some(task) = id_of(&key).map(|id| self.task(id)).transpose()?.flatten() else {
                continue;
            };
            if task.is_active() && !configured(&task.conversation.platform) {
                found.push(task);
            }
        }
        Ok(found)
    }

    /// A conversation's time zone, if one was set with `/tz`.
    pub fn zone(&self, conversation: &ConversationKey) -> Result<Option<String>, StoreError> {
        let key = conversation.to_string();
        match self
            .db()?
            .task_zones
            .get(key.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode("task_zones", key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Sets a conversation's time zone. Flushed.
    pub fn set_zone(&self, conversation: &ConversationKey, zone: &str) -> Result<(), StoreError> {
        let key = conversation.to_string();
        self.db()?
            .task_zones
            .insert(key.as_bytes(), encode(&zone)?)
            .map_err(|e| self.sled_err(e))?;
        self.flush()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;
    use crate::store::task::tests::reminder;
    use crate::store::TaskState;

    #[test]
    fn the_active_tasks_of_platforms_not_configured_are_found_by_their_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let terminal = ConversationKey::new("terminal", "a");
        let group = ConversationKey::new("telegram", "-100").with_thread("7");
        let discord = ConversationKey::new("discord", "9");
        store.create_task(&reminder(&terminal, 100)).unwrap();
        store.create_task(&reminder(&group, 100)).unwrap();
        let mut paused = reminder(&group, 100);
        paused.state = TaskState::Paused { reason: None };
        store.create_task(&paused).unwrap();
        store.create_task(&reminder(&discord, 100)).unwrap();

        let only_terminal = store.active_tasks_off(|p| p == "terminal").unwrap();
        let ids: Vec<u64> = only_terminal.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), 2, "{only_terminal:?}");
        assert!(ids.contains(&2) && ids.contains(&4), "{ids:?}");
        let with_telegram = store
            .active_tasks_off(|p| p == "terminal" || p == "telegram")
            .unwrap();
        assert_eq!(with_telegram.len(), 1);
        assert_eq!(with_telegram[0].conversation, discord);
        assert!(store.active_tasks_off(|_| true).unwrap().is_empty());
    }

    #[test]
    fn zones_are_kept_per_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = ConversationKey::new("telegram", "1");
        assert_eq!(store.zone(&key).unwrap(), None);
        store.set_zone(&key, "Europe/Berlin").unwrap();
        assert_eq!(store.zone(&key).unwrap().as_deref(), Some("Europe/Berlin"));
    }
}
