//! Retrying a platform operation: the [`Backoff`] policy, which decides from the error and
//! the attempts so far whether and when to try again, and the loop that follows it.

use std::future::Future;
use std::time::Duration;

use tokio::time::sleep;

use crate::{AdapterError, ConversationKey};

/// How often and how patiently a failed operation is retried.
///
/// A transport error backs off exponentially, so an outage is not hammered, and counts
/// toward `max_attempts`, so that an operation gives up (and says so) rather than hanging on
/// a platform that never recovers. A rate limit is not a failure: the platform works and
/// says when to come back, so it is waited out however often it comes, never counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first transport error.
    pub base: Duration,
    /// What each further wait is multiplied by.
    pub factor: u32,
    /// The longest wait, and how long a stream holds back after giving up on an operation.
    pub cap: Duration,
    /// How many attempts an operation gets in all, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 0.5 s, 1 s, 2 s, 4 s, 8 s: six attempts over about 15 s, never more than 30 s apart.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            factor: 2,
            cap: Duration::from_secs(30),
            max_attempts: 6,
        }
    }
}

impl Backoff {
    /// The wait after the `failures`th failed attempt (counting from 1) ended in a transport
    /// error, or `None` when no attempt is left.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures >= self.max_attempts {
            return None;
        }
        let growth = self
            .factor
            .checked_pow(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(growth).min(self.cap))
    }

    /// The wait before retrying after the `failures`th failed attempt ended in `error`, or
    /// `None` if the error is to be returned: it is final, or no attempt is left.
    pub fn retry_after(&self, failures: u32, error: &AdapterError) -> Option<Duration> {
        match error {
            AdapterError::RateLimited { retry_after } => Some(*retry_after),
            AdapterError::Transport(_) => self.delay(failures),
            AdapterError::Rejected(_)
            | AdapterError::NotFound(_)
            | AdapterError::Unsupported(_) => None,
        }
    }
}

/// Runs `attempt` until it succeeds or `backoff` says to give up; the retries are logged
/// here, the final error by the caller. Only transport errors count as failures.
pub(super) async fn retry<T, F, Fut>(
    backoff: &Backoff,
    conversation: &ConversationKey,
    mut attempt: F,
) -> Result<T, AdapterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AdapterError>>,
{
    let mut failures = 0;
    loop {
        let error = match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        if !matches!(error, AdapterError::RateLimited { .. }) {
            failures += 1;
        }
        let Some(wait) = backoff.retry_after(failures, &error) else {
            return Err(error);
        };
        tracing::debug!(%conversation, %error, ?wait, failures, "retrying a platform operation");
        sleep(wait).await;
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The backoff policy's tests, and the platform errors that the stream's tests share.

    use super::*;

    pub(in crate::stream) fn rate_limited(seconds: u64) -> AdapterError {
        AdapterError::RateLimited {
            retry_after: Duration::from_secs(seconds),
        }
    }

    pub(in crate::stream) fn transport() -> AdapterError {
        AdapterError::Transport("502 Bad Gateway".into())
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let secs = Duration::from_secs_f64;
        let backoff = Backoff::default();
        let waits: Vec<_> = (1..=6).map(|n| backoff.delay(n)).collect();
        assert_eq!(
            waits,
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
            max_attempts: 100,
            ..backoff
        };
        assert_eq!(patient.delay(8), Some(secs(30.0)));
        assert_eq!(
            patient.delay(99),
            Some(secs(30.0)),
            "overflow must saturate"
        );
    }

    #[test]
    fn only_rate_limits_and_transport_errors_are_retried() {
        let backoff = Backoff::default();
        assert_eq!(
            backoff.retry_after(1, &rate_limited(7)),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            backoff.retry_after(60, &rate_limited(7)),
            Some(Duration::from_secs(7)),
            "rate limits are waited out, never counted"
        );
        assert_eq!(
            backoff.retry_after(2, &transport()),
            Some(Duration::from_secs(1))
        );
        for error in [
            AdapterError::Rejected("bad markup".into()),
            AdapterError::NotFound("m0".into()),
            AdapterError::Unsupported("edit"),
        ] {
            assert_eq!(backoff.retry_after(1, &error), None, "{error}");
        }
    }
}
