//! The time the conversation actors' timers run on: idle stops, stall detection, typing
//! renewal, and the waits before a store write or an unreachable engine is tried again.
//!
//! The daemon uses tokio's clock. Tests give the router a [`ManualClock`] instead and move it
//! by hand, so a test of "the box stops after its idle timeout" neither sleeps nor depends
//! on how busy the machine is. tokio's paused time cannot do this for the router: the actors
//! talk to a real Docker engine, and a paused runtime jumps to the next timer whenever every
//! task waits on I/O, which fires idle and stall timers in the middle of an engine call.
//!
//! The scheduler reads its wall time from it too ([`Clock::unix_now`]): a manual clock's
//! wall time starts where the test says and moves with it.
//!
//! Only the actors and the scheduler read this clock; delivery (edit throttling, retry-after) keeps tokio's,
//! and the tunnel's limits their own wall clock ([`crate::tunnel::Clock`]: they count UTC
//! days and never wait).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the actors read the time and wait for deadlines; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: tokio's clock. `Some`: a manual clock's time; sleepers watch it move.
    manual: Option<Arc<watch::Sender<Instant>>>,
    /// A manual clock's wall time: the Unix time at a given instant of it.
    wall: Option<(Instant, i64)>,
}

impl Clock {
    /// Now, on this clock.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(now) => *now.borrow(),
        }
    }

    /// The wall time on this clock, in seconds since the Unix epoch.
    pub fn unix_now(&self) -> i64 {
        match (&self.manual, self.wall) {
            (Some(now), Some((base, unix))) => {
                let passed = now.borrow().saturating_duration_since(base).as_secs();
                unix.saturating_add(i64::try_from(passed).unwrap_or(i64::MAX))
            }
            _ => i64::try_from(super::now_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The instant of this clock at which its wall time is `unix` (in the past if that
    /// has passed). A manual clock's is exact whenever it is read; tokio's is counted
    /// from now.
    pub fn at_unix(&self, unix: i64) -> Instant {
        let (base, base_unix) = match (&self.manual, self.wall) {
            (Some(_), Some(wall)) => wall,
            _ => (Instant::now(), self.unix_now()),
        };
        let ahead = u64::try_from(unix.saturating_sub(base_unix)).unwrap_or(0);
        base.checked_add(Duration::from_secs(ahead))
            .unwrap_or(base + Duration::from_secs(86_400 * 365))
    }

    /// Wait until this clock reaches `deadline` (at once if it has).
    pub async fn sleep_until(&self, deadline: Instant) {
        match &self.manual {
            None => tokio::time::sleep_until(deadline).await,
            Some(now) => {
                let mut moves = now.subscribe();
                // The sender lives as long as this clock, so the wait ends only by the deadline.
                let _ = moves.wait_for(|now| *now >= deadline).await;
            }
        }
    }
}

/// A clock that stands still until the test moves it; hand [`ManualClock::clock`] to the
/// router (`Bridge::start_on`).
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<Instant>>,
    /// The Unix time at the clock's start.
    unix: i64,
    /// The clock's start.
    start: Instant,
}

impl ManualClock {
    /// A clock at tokio's now, standing still; its wall time starts at the system's.
    pub fn new() -> Self {
        Self::at_unix(i64::try_from(super::now_secs()).unwrap_or(0))
    }

    /// A clock at tokio's now whose wall time starts at `unix` (seconds since the epoch).
    pub fn at_unix(unix: i64) -> Self {
        let start = Instant::now();
        let (now, _) = watch::channel(start);
        Self {
            now: Arc::new(now),
            unix,
            start,
        }
    }

    /// The router's view of this clock.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.now.clone()),
            wall: Some((self.start, self.unix)),
        }
    }

    /// The wall time now, in seconds since the Unix epoch.
    pub fn unix_now(&self) -> i64 {
        self.clock().unix_now()
    }

    /// Move the clock forward by `by`; every deadline it passes fires.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_manual_clock_fires_a_deadline_only_once_moved_past_it() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let deadline = clock.now() + Duration::from_secs(60);
        manual.advance(Duration::from_secs(59));
        assert_eq!(
            clock.sleep_until(deadline).now_or_never(),
            None,
            "a second early"
        );
        manual.advance(Duration::from_secs(1));
        assert_eq!(clock.sleep_until(deadline).now_or_never(), Some(()));
        assert_eq!(clock.now(), deadline);
    }

    #[test]
    fn a_manual_clock_moves_its_wall_time_too() {
        let manual = ManualClock::at_unix(1_000);
        let clock = manual.clock();
        assert_eq!(clock.unix_now(), 1_000);
        let at = clock.at_unix(1_100);
        manual.advance(Duration::from_secs(90));
        assert_eq!(clock.unix_now(), 1_090);
        assert_eq!(
            clock.at_unix(1_100),
            at,
            "the same instant, whenever it is asked"
        );
        manual.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), at);
        assert!(Clock::default().unix_now() > 1_700_000_000);
    }

    #[tokio::test]
    async fn moving_the_clock_wakes_a_waiting_sleeper() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let deadline = clock.now() + Duration::from_secs(600);
        let sleeper = tokio::spawn(async move { clock.sleep_until(deadline).await });
        manual.advance(Duration::from_secs(600));
        // No real time passes: the move itself wakes it.
        sleeper
            .await
            .unwrap_or_else(|e| panic!("the sleeper failed: {e}"));
    }
}
