//! Read-modify-write of one record without a sled transaction.
//!
//! sled makes every transaction (and batch) atomic by sealing its log buffer before and
//! after it: two buffer writes handed to its I/O threads, each waking all of them. For a
//! change to a single key that costs more than the change itself, and it comes with every
//! message. [`Store::update`] reads the record, lets the caller change it and swaps it in
//! only if nobody changed the key meanwhile (sled's compare-and-swap), else starts over:
//! as isolated as a transaction for that one key, without the seals.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{encode, Store, StoreError};

/// How often a swap may lose a race before the update gives up (it never should: writers
/// of one key are few).
const MAX_TRIES: u32 = 64;

impl Store {
    /// Replaces the record of `key` in `tree` (named `tree_name` in errors) with what
    /// `change` makes of it (`None`: there is none), and returns the new record. `change`
    /// may run more than once, if the key changes under it. Not flushed.
    pub(super) fn update<T, F>(
        &self,
        tree: &sled::Tree,
        tree_name: &str,
        key: &[u8],
        mut change: F,
    ) -> Result<T, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        for _ in 0..MAX_TRIES {
            let old = tree.get(key).map_err(|e| self.sled_err(e))?;
            let record = match &old {
                Some(bytes) => Some(self.decode(tree_name, key, bytes)?),
                None => None,
            };
            let new = change(record);
            let value = encode(&new)?;
            match tree
                .compare_and_swap(key, old, Some(value))
                .map_err(|e| self.sled_err(e))?
            {
                Ok(()) => return Ok(new),
                Err(_) => continue,
            }
        }
        Err(StoreError::Db(format!(
            "a record in `{tree_name}` kept changing under an update"
        )))
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
    fn updates_from_many_threads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.db().unwrap().cursors.clone();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, tree) = (store.clone(), tree.clone());
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        store
                            .update(&tree, "cursors", b"count", |n: Option<u64>| {
                                n.unwrap_or(0) + 1
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let last = store
            .update(&tree, "cursors", b"count", |n: Option<u64>| n.unwrap_or(0))
            .unwrap();
        assert_eq!(last, 1000);
    }
}
