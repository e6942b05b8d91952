//! [`EditThrottle`]: when the next edit of a reply may go, so that a platform's limit on
//! edits is kept without the reply state holding a clock (time is always passed in).

use std::time::Duration;

use tokio::time::Instant;

/// Spaces out edits by a platform's `min_edit_interval`.
///
/// Every write (send or edit) starts a new interval, because platforms count all writes to a
/// chat; but only edits wait for it: a send carries text the user has not seen at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EditThrottle {
    interval: Duration,
    last_write: Option<Instant>,
}

impl EditThrottle {
    /// A throttle that has seen no write yet.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_write: None,
        }
    }

    /// Records a write (send or edit) done at `at`.
    pub fn wrote(&mut self, at: Instant) {
        self.last_write = Some(at);
    }

    /// When the next edit may go; `None` if it may go at any time.
    pub fn due(&self) -> Option<Instant> {
        self.last_write.map(|last| last + self.interval)
    }

    /// Whether an edit may go at `now`.
    pub fn may_edit(&self, now: Instant) -> bool {
        self.due().is_none_or(|due| now >= due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_wait_for_the_interval_after_any_write() {
        let t0 = Instant::now();
        let mut throttle = EditThrottle::new(Duration::from_secs(1));
        assert!(throttle.may_edit(t0) && throttle.due().is_none());
        throttle.wrote(t0);
        assert!(!throttle.may_edit(t0 + Duration::from_millis(999)));
        assert_eq!(throttle.due(), Some(t0 + Duration::from_secs(1)));
        assert!(throttle.may_edit(t0 + Duration::from_secs(1)));
    }
}
