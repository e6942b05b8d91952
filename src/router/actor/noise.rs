//! Warnings a box can cause at will (malformed protocol lines), condensed: the first of
//! each minute is logged as it is, the rest only counted, and the count logged once the
//! minute is over (or the box goes), so a box writing garbage fills no disk with log.

use std::time::Duration;

use tokio::time::Instant;

/// The window in which one warning is logged and the rest counted.
const WINDOW: Duration = Duration::from_secs(60);

/// What to log for one more occurrence.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Log {
    /// Log this occurrence, after saying how many the last window held unlogged.
    This {
        /// Occurrences of the window before that were counted, not logged.
        suppressed: u64,
    },
    /// Count it only.
    Quiet,
}

/// The counter of one kind of warning of one box.
#[derive(Debug, Default)]
pub(super) struct Noise {
    /// When the window of the last logged occurrence began.
    since: Option<Instant>,
    /// Occurrences in that window after the logged one.
    suppressed: u64,
}

impl Noise {
    /// One more occurrence at `now`.
    pub(super) fn occurred(&mut self, now: Instant) -> Log {
        match self.since {
            Some(since) if now.saturating_duration_since(since) < WINDOW => {
                self.suppressed += 1;
                Log::Quiet
            }
            _ => {
                self.since = Some(now);
                Log::This {
                    suppressed: std::mem::take(&mut self.suppressed),
                }
            }
        }
    }

    /// Occurrences counted and not yet logged (when the box goes).
    pub(super) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_a_minute_and_a_count_of_the_rest() {
        let t0 = Instant::now();
        let mut noise = Noise::default();
        assert_eq!(noise.occurred(t0), Log::This { suppressed: 0 });
        for s in 0..200 {
            let at = t0 + Duration::from_millis(s * 250);
            assert_eq!(noise.occurred(at), Log::Quiet);
        }
        let next_minute = t0 + Duration::from_secs(61);
        assert_eq!(noise.occurred(next_minute), Log::This { suppressed: 200 });
        assert_eq!(noise.occurred(next_minute), Log::Quiet);
        assert_eq!(noise.take_suppressed(), 1);
        assert_eq!(noise.take_suppressed(), 0);
    }
}
