//! Groups that Telegram upgraded to supergroups: a group's chat id changes for good when
//! it is upgraded, and Telegram says so in a service message to each (`migrate_to_chat_id`
//! in the old group, `migrate_from_chat_id` in the new supergroup) and in the error of any
//! later send to the old id. The adapter follows: sends to a conversation of the old id go
//! to the new one, and an allowlist entry naming the old id admits the new one. Kept in the
//! sink under [`KEY`], so that it survives restarts.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The sink key of the known migrations (a JSON object: old id → new id).
pub const KEY: &str = "telegram.migrations";

/// Upgrades followed so far, old chat id → new chat id.
#[derive(Debug, Default)]
pub struct Migrations {
    /// A std mutex held only to look up or insert.
    map: Mutex<HashMap<i64, i64>>,
}

impl Migrations {
    fn map(&self) -> MutexGuard<'_, HashMap<i64, i64>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where messages for `chat` go now: the chat it became, or itself.
    pub fn route(&self, chat: i64) -> i64 {
        let map = self.map();
        let mut now = chat;
        // A chain is one upgrade long in practice; the bound keeps a bad record finite.
        for _ in 0..4 {
            match map.get(&now) {
                Some(&next) if next != now => now = next,
                _ => break,
            }
        }
        now
    }

    /// The chat that `chat` was before an upgrade, if it was one.
    pub fn origin(&self, chat: i64) -> Option<i64> {
        let map = self.map();
        map.iter()
            .find_map(|(&old, &new)| (new == chat).then_some(old))
    }

    /// Records that `old` became `new`; returns whether that is news.
    pub fn learn(&self, old: i64, new: i64) -> bool {
        old != new && self.map().insert(old, new) != Some(new)
    }

    /// The migrations as stored in the sink.
    pub fn to_text(&self) -> String {
        let map: HashMap<String, i64> = self
            .map()
            .iter()
            .map(|(old, new)| (old.to_string(), *new))
            .collect();
        serde_json::to_string(&map).unwrap_or_default()
    }

    /// Adds the migrations stored in the sink; an unreadable record adds nothing.
    pub fn restore(&self, text: &str) {
        let stored: HashMap<String, i64> = serde_json::from_str(text).unwrap_or_default();
        let mut map = self.map();
        for (old, new) in stored {
            if let Ok(old) = old.parse() {
                map.insert(old, new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgraded_group_routes_to_its_supergroup_and_round_trips() {
        let migrations = Migrations::default();
        assert_eq!(migrations.route(-5), -5);
        assert!(migrations.learn(-5, -1005));
        assert!(!migrations.learn(-5, -1005), "already known");
        assert_eq!(migrations.route(-5), -1005);
        assert_eq!(migrations.origin(-1005), Some(-5));
        assert_eq!(migrations.origin(-5), None);
        let restored = Migrations::default();
        restored.restore(&migrations.to_text());
        assert_eq!(restored.route(-5), -1005);
        restored.restore("not json");
        assert!(!restored.learn(-7, -7), "a chat is not its own upgrade");
        assert_eq!(restored.route(-7), -7);
    }
}
