//! The one retry policy of every platform operation: [`Backoff`], which decides from the
//! error and the failures so far whether and when to try again; [`Attempts`], which counts
//! the failures of one operation or loop; and [`retry`], the loop that follows them.
//!
//! An adapter declares only which of its errors are retryable, by converting them into
//! [`AdapterError::RateLimited`] (the platform said when to come back) or
//! [`AdapterError::Transport`] (it could not be reached or failed on its side); every other
//! error is final. How long to wait is decided here, for every adapter and every loop.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::sleep;

use crate::AdapterError;

/// How often and how patiently a failed operation is retried.
///
/// A transport error backs off exponentially with full jitter (a uniform wait between zero
/// and the step), so an outage is not hammered and bridges failing together do not retry
/// in step; it counts toward `max_attempts`, so an operation gives up (and says so) rather
/// than hanging on a platform that never recovers. A rate limit is not a failure: the
/// platform works and says when to come back, so it is waited out exactly as asked however
/// often it comes, never counted; only a wait longer than `max_rate_wait` is given up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The longest wait after the first transport error.
    pub base: Duration,
    /// What each further step is multiplied by.
    pub factor: u32,
    /// The longest step, and how long a reply stream holds back after giving up.
    pub cap: Duration,
    /// How many attempts an operation gets in all, the first included; [`u32::MAX`] for a
    /// loop that never gives up (receiving updates).
    pub max_attempts: u32,
    /// The longest `retry_after` waited out; a platform asking for more gets the error
    /// back, so that the caller can decide (end the reply, tell the user later).
    pub max_rate_wait: Duration,
}

impl Default for Backoff {
    /// Steps of 0.5 s, 1 s, 2 s, 4 s, 8 s: six attempts within about 15 s; rate limits
    /// waited out however long.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            factor: 2,
            cap: Duration::from_secs(30),
            max_attempts: 6,
            max_rate_wait: Duration::MAX,
        }
    }
}

impl Backoff {
    /// The longest wait after the `failures`th transport failure in a row (counting from
    /// 1), or `None` when no attempt is left.
    pub fn step(&self, failures: u32) -> Option<Duration> {
        if failures >= self.max_attempts {
            return None;
        }
        let growth = self
            .factor
            .checked_pow(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(growth).min(self.cap))
    }

    /// The wait after the `failures`th transport failure: `jitter` (in `[0, 1)`) of the
    /// step, or `None` when no attempt is left.
    pub fn delay(&self, failures: u32, jitter: f64) -> Option<Duration> {
        Some(self.step(failures)?.mul_f64(jitter.clamp(0.0, 1.0)))
    }

    /// The wait before retrying after the `failures`th counted failure ended in `error`, or
    /// `None` if the error is to be returned: it is final, no attempt is left, or the
    /// platform asks for a longer wait than `max_rate_wait`.
    pub fn retry_after(
        &self,
        failures: u32,
        error: &AdapterError,
        jitter: f64,
    ) -> Option<Duration> {
        match error {
            AdapterError::RateLimited { retry_after } => {
                (*retry_after <= self.max_rate_wait).then_some(*retry_after)
            }
            AdapterError::Transport(_) => self.delay(failures, jitter),
            AdapterError::Rejected(_)
            | AdapterError::NotFound(_)
            | AdapterError::Unsupported(_) => None,
        }
    }
}

/// The failures in a row of one operation, or of a loop that keeps trying (a poll), under
/// one [`Backoff`]. Rate limits are not counted.
#[derive(Clone, Debug)]
pub struct Attempts {
    backoff: Backoff,
    failures: u32,
}

impl Attempts {
    /// No failure yet.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failures: 0,
        }
    }

    /// Records that an attempt ended in `error`; returns how long to wait before the next,
    /// or `None` to give up on it.
    pub fn failed(&mut self, error: &AdapterError) -> Option<Duration> {
        if !matches!(error, AdapterError::RateLimited { .. }) {
            self.failures = self.failures.saturating_add(1);
        }
        self.backoff.retry_after(self.failures, error, jitter())
    }

    /// Records a success; returns how many failures in a row it ended (0: none).
    pub fn succeeded(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }

    /// The counted failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Runs `attempt` until it succeeds or `backoff` says to give up; the retries are logged
/// here at debug level (`what` names the operation), the final error by the caller.
pub async fn retry<T, F, Fut>(
    backoff: &Backoff,
    what: &(dyn Display + Sync),
    mut attempt: F,
) -> Result<T, AdapterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AdapterError>>,
{
    let mut attempts = Attempts::new(*backoff);
    loop {
        let error = match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        let Some(wait) = attempts.failed(&error) else {
            return Err(error);
        };
        let failures = attempts.failures();
        tracing::debug!(operation = %what, %error, ?wait, failures, "retrying a platform operation");
        sleep(wait).await;
    }
}

/// A uniform random number in `[0, 1)`, for the jitter.
fn jitter() -> f64 {
    // The top 53 bits fill an f64's mantissa exactly.
    (crate::access::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
pub(crate) mod tests {
    //! The policy's tests, and the platform errors that other tests share.

    use super::*;

    pub(crate) fn rate_limited(seconds: u64) -> AdapterError {
        AdapterError::RateLimited {
            retry_after: Duration::from_secs(seconds),
        }
    }

    pub(crate) fn transport() -> AdapterError {
        AdapterError::Transport("502 Bad Gateway".into())
    }

    #[test]
    fn steps_double_up_to_the_cap_then_give_up() {
        let secs = Duration::from_secs_f64;
        let backoff = Backoff::default();
        let steps: Vec<_> = (1..=6).map(|n| backoff.step(n)).collect();
        assert_eq!(
            steps,
            [
                Some(secs(0.5)),
                Some(secs(1.0)),
                Some(secs(2.0)),
                Some(secs(4.0)),
                Some(secs(8.0)),
                None
            ]
        );
        let patient = Backoff {
            max_attempts: u32::MAX,
            ..backoff
        };
        assert_eq!(patient.step(8), Some(secs(30.0)));
        assert_eq!(patient.step(u32::MAX - 1), Some(secs(30.0)), "saturates");
    }

    #[test]
    fn transport_waits_have_full_jitter_within_the_step() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(3, 0.0), Some(Duration::ZERO));
        assert_eq!(backoff.delay(3, 0.5), Some(Duration::from_secs(1)));
        assert_eq!(
            backoff.delay(3, 7.0),
            Some(Duration::from_secs(2)),
            "clamped"
        );
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn only_rate_limits_and_transport_errors_are_retried() {
        let backoff = Backoff::default();
        assert_eq!(
            backoff.retry_after(1, &rate_limited(7), 0.3),
            Some(Duration::from_secs(7)),
            "the platform's retry-after exactly, without jitter"
        );
        assert_eq!(
            backoff.retry_after(60, &rate_limited(7), 0.3),
            Some(Duration::from_secs(7)),
            "rate limits are waited out, never counted"
        );
        assert_eq!(
            backoff.retry_after(2, &transport(), 1.0),
            Some(Duration::from_secs(1))
        );
        for error in [
            AdapterError::Rejected("bad markup".into()),
            AdapterError::NotFound("m0".into()),
            AdapterError::Unsupported("edit"),
        ] {
            assert_eq!(backoff.retry_after(1, &error, 0.5), None, "{error}");
        }
    }

    #[test]
    fn a_rate_limit_past_the_longest_wait_is_given_back() {
        let backoff = Backoff {
            max_rate_wait: Duration::from_secs(60),
            ..Backoff::default()
        };
        assert_eq!(
            backoff.retry_after(1, &rate_limited(60), 0.0),
            Some(Duration::from_secs(60))
        );
        assert_eq!(backoff.retry_after(1, &rate_limited(61), 0.0), None);
    }

    #[test]
    fn attempts_count_failures_in_a_row_but_not_rate_limits() {
        let mut attempts = Attempts::new(Backoff {
            max_attempts: 3,
            ..Backoff::default()
        });
        assert!(attempts.failed(&transport()).is_some());
        assert!(attempts.failed(&rate_limited(1)).is_some());
        assert!(attempts.failed(&transport()).is_some());
        assert_eq!(attempts.failures(), 2);
        assert_eq!(attempts.failed(&transport()), None, "the third failure");
        assert_eq!(attempts.succeeded(), 3);
        assert!(attempts.failed(&transport()).is_some(), "a success resets");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_after_the_attempts_and_returns_the_error() {
        let mut calls = 0;
        let backoff = Backoff {
            max_attempts: 4,
            ..Backoff::default()
        };
        let result: Result<(), _> = retry(&backoff, &"test", || {
            calls += 1;
            async { Err(transport()) }
        })
        .await;
        assert_eq!((result, calls), (Err(transport()), 4));
    }
}
