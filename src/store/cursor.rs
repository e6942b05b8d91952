//! Each adapter's position in its platform's update stream (e.g. the Telegram offset).

use super::{encode, Store, StoreError};

/// Tree name, for error messages.
const TREE: &str = "cursors";

impl Store {
    /// Records how far `adapter` has consumed its platform's updates. Flushed before it
    /// returns, because the adapter then tells the platform to forget what came before; the
    /// messages themselves were stored (and flushed) earlier by [`Store::insert_inbound`].
    pub fn set_cursor(&self, adapter: &str, value: &str) -> Result<(), StoreError> {
        self.put_cursor_unflushed(adapter, value)?;
        self.flush()
    }

    /// [`Store::set_cursor`] without the flush, for a write whose flush comes after (a
    /// commit, see `commit`).
    pub fn put_cursor_unflushed(&self, adapter: &str, value: &str) -> Result<(), StoreError> {
        self.db()?
            .cursors
            .insert(adapter.as_bytes(), encode(&value)?)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Where `adapter` left off, so that it resumes there after a restart; `None` at first.
    pub fn cursor(&self, adapter: &str) -> Result<Option<String>, StoreError> {
        match self
            .db()?
            .cursors
            .get(adapter.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode(TREE, adapter.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
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
    fn cursors_are_kept_per_adapter_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.cursor("telegram").unwrap(), None);
            store.set_cursor("telegram", "1001").unwrap();
            store.set_cursor("telegram", "1002").unwrap();
            store.set_cursor("discord", "abc").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursor("telegram").unwrap().as_deref(), Some("1002"));
        assert_eq!(store.cursor("discord").unwrap().as_deref(), Some("abc"));
        assert_eq!(store.cursor("terminal").unwrap(), None);
    }
}
