//! When the disk fails (full, read-only, gone): the store stops trusting its open database,
//! says so, and opens it again by itself once it can.
//!
//! sled keeps writes in memory and reports a failed flush as an error, but the write stays
//! visible in memory: retrying an insert would then find it "already stored" although it
//! never reached the disk, and the caller would acknowledge a message that a restart
//! loses. After an I/O error sled may also refuse every later operation. So on the first
//! I/O error the open database is dropped; the next operation opens it again from what is
//! on disk, at most once per backoff step (1 s doubling to 30 s), and fails with
//! [`StoreError::Unavailable`] meanwhile. The episode is logged once when it starts and once
//! when it ends, with the count of failed operations, never once per failure.

use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{open_trees, Store, StoreError, Trees};

/// The wait before the first attempt to open the store again.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The store's health, shared by every handle.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// The failing episode, if one is under way.
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    /// When the first operation failed (wall clock, for operators).
    since: SystemTime,
    /// What the last failure said.
    error: String,
    /// Operations failed in this episode.
    failures: u64,
    /// Attempts to open the store again so far.
    attempts: u32,
    /// No attempt before this.
    next_attempt: Instant,
}

/// The wait after the `attempts`th failed attempt to open again.
fn retry_after(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(MAX_RETRY)
}

impl Store {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The open database, opening it again if a failure closed it and its next attempt is
    /// due.
    pub(super) fn db(&self) -> Result<Arc<Trees>, StoreError> {
        if let Some(trees) = self
            .inner
            .trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(trees.clone());
        }
        let mut health = self.health();
        let now = Instant::now();
        let failing = health.failing.get_or_insert_with(|| Failing {
            since: SystemTime::now(),
            error: "closed".into(),
            failures: 0,
            attempts: 0,
            next_attempt: now,
        });
        if now < failing.next_attempt {
            failing.failures += 1;
            return Err(self.unavailable(failing));
        }
        let mut slot = self
            .inner
            .trees
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(trees) = slot.as_ref() {
            // Another handle opened it meanwhile.
            return Ok(trees.clone());
        }
        match open_trees(&self.inner.path, None) {
            Ok((trees, _)) => {
                let trees = Arc::new(trees);
                *slot = Some(trees.clone());
                if let Some(episode) = health.failing.take() {
                    tracing::info!(store = %self.inner.path.display(), failures = episode.failures, "the store writes again");
                }
                Ok(trees)
            }
            Err(error) => {
                failing.attempts += 1;
                failing.failures += 1;
                failing.error = error.to_string();
                failing.next_attempt = now + retry_after(failing.attempts);
                tracing::debug!(store = %self.inner.path.display(), %error, attempts = failing.attempts, "the store cannot be opened again yet");
                Err(self.unavailable(failing))
            }
        }
    }

    fn unavailable(&self, failing: &Failing) -> StoreError {
        StoreError::Unavailable {
            path: self.inner.path.clone(),
            reason: failing.error.clone(),
        }
    }

    /// Notes a failed operation: an I/O error closes the database (see the module comment).
    pub(super) fn failed(&self, error: StoreError) -> StoreError {
        if !matches!(error, StoreError::Io { .. }) {
            return error;
        }
        let closed = self
            .inner
            .trees
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut health = self.health();
        match health.failing.as_mut() {
            Some(failing) => {
                failing.failures += 1;
                failing.error = error.to_string();
            }
            None => {
                tracing::error!(store = %self.inner.path.display(), %error, "the store cannot write; messages are refused until it can (retrying by itself)");
                health.failing = Some(Failing {
                    since: SystemTime::now(),
                    error: error.to_string(),
                    failures: 1,
                    attempts: 0,
                    next_attempt: Instant::now() + FIRST_RETRY,
                });
            }
        }
        drop(health);
        // Dropped outside the locks: sled flushes (and may block) as its last handle goes.
        drop(closed);
        error
    }

    /// `None` while the store works; otherwise what fails and since when, in words for
    /// `clawpen status` and `clawpen doctor`.
    pub fn trouble(&self) -> Option<String> {
        let health = self.health();
        let failing = health.failing.as_ref()?;
        let secs = SystemTime::now()
            .duration_since(failing.since)
            .unwrap_or_default()
            .as_secs();
        Some(format!(
            "the store at {} has failed for {secs} s ({} operations refused): {}",
            self.inner.path.display(),
            failing.failures,
            failing.error
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_to_open_again_back_off_to_a_cap() {
        let waits: Vec<u64> = (1..=7).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }
}
