//! What to do when a model call fails: retry after a while, or give up with a message.
//!
//! Plain state, no I/O, so every rule is tested below. The rules:
//! - 401/403: the key is refused; retrying cannot help.
//! - 429: wait as long as the provider's `retry-after` says (or a growing default), at
//!   most [`RATE_LIMIT_RETRIES`] times; a wait longer than [`MAX_WAIT`] is not waited.
//! - 5xx (and Anthropic's 529 "overloaded"): back off 1 s, 2 s, 4 s, at most
//!   [`SERVER_RETRIES`] times.
//! - A broken stream (cut off, the provider's `error` event, garbage): once.
//! - A provider that sends nothing for the tunnel's no-progress limit: not again (it would
//!   double a long wait); the user is told the provider went quiet.
//! - The bridge re-attached mid-answer (it restarted): again at once, not counted as the
//!   provider's failure, up to [`REATTACH_RETRIES`] times.
//! - Other 4xx and refusals by the bridge (`Failed`): give up at once with their message.

use std::time::Duration;

/// Retries after 429 before giving up.
pub const RATE_LIMIT_RETRIES: u32 = 3;
/// Retries after a 5xx before giving up.
pub const SERVER_RETRIES: u32 = 3;
/// Retries after a broken stream before giving up.
pub const BROKEN_RETRIES: u32 = 1;
/// Bridge re-attachments sat out in one call; only a bridge restarting in a loop gets there.
pub const REATTACH_RETRIES: u32 = 20;
/// The longest wait the agent sits out; a provider asking for more is reported instead.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// How one attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The provider answered with a non-success status.
    Status {
        /// The HTTP status.
        status: u16,
        /// Its `retry-after`, when given in seconds.
        retry_after: Option<Duration>,
        /// The provider's error message.
        message: String,
    },
    /// The bridge refused or could not perform the request.
    Bridge(String),
    /// The answer broke off or could not be read.
    Broken(String),
    /// The bridge re-attached to the box while the answer was on its way.
    Reattached,
    /// Nothing arrived for this long: the provider went quiet (the bridge passes on
    /// whatever it sends).
    Stalled(Duration),
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    Retry(Duration),
    /// Stop; this message is for the user.
    GiveUp(String),
}

/// Counts retries of one model call.
#[derive(Clone, Debug, Default)]
pub struct RetryPolicy {
    rate_limited: u32,
    server: u32,
    broken: u32,
    reattached: u32,
}

impl RetryPolicy {
    /// Decide about one failure (and count it).
    pub fn decide(&mut self, failure: &Failure) -> Decision {
        match failure {
            Failure::Status {
                status: status @ (401 | 403),
                message,
                ..
            } => Decision::GiveUp(format!(
                "the model provider refused the key ({status}): {message} (the bridge's \
                 operator needs to check the API key)"
            )),
            Failure::Status {
                status: 429,
                retry_after,
                message,
            } => {
                self.rate_limited += 1;
                let wait =
                    retry_after.unwrap_or(Duration::from_secs(5 * u64::from(self.rate_limited)));
                if self.rate_limited > RATE_LIMIT_RETRIES {
                    Decision::GiveUp(format!(
                        "the model provider is rate limiting requests (429) and still was \
                         after {RATE_LIMIT_RETRIES} retries: {message}. Please try again later."
                    ))
                } else if wait > MAX_WAIT {
                    Decision::GiveUp(format!(
                        "the model provider is rate limiting requests (429) and asks to wait \
                         {} s: {message}. Please try again later.",
                        wait.as_secs()
                    ))
                } else {
                    Decision::Retry(wait)
                }
            }
            Failure::Status {
                status: status @ (500..=599),
                message,
                ..
            } => {
                self.server += 1;
                if self.server > SERVER_RETRIES {
                    Decision::GiveUp(format!(
                        "the model provider had an error ({status}) {} times in a row: \
                         {message}. Please try again later.",
                        SERVER_RETRIES + 1
                    ))
                } else {
                    Decision::Retry(Duration::from_secs(1 << (self.server - 1)))
                }
            }
            Failure::Status {
                status, message, ..
            } => Decision::GiveUp(format!(
                "the model provider rejected the request ({status}): {message}"
            )),
            Failure::Bridge(message) => {
                Decision::GiveUp(format!("the model call was not made: {message}"))
            }
            Failure::Stalled(after) => Decision::GiveUp(format!(
                "the model provider sent nothing for {} s. Please try again.",
                after.as_secs()
            )),
            Failure::Reattached => {
                self.reattached += 1;
                if self.reattached > REATTACH_RETRIES {
                    Decision::GiveUp(format!(
                        "the bridge restarted {REATTACH_RETRIES} times during one model call. \
                         Please try again."
                    ))
                } else {
                    Decision::Retry(Duration::ZERO)
                }
            }
            Failure::Broken(detail) => {
                self.broken += 1;
                if self.broken > BROKEN_RETRIES {
                    Decision::GiveUp(format!(
                        "the model's answer broke off twice in a row ({detail}). Please try again."
                    ))
                } else {
                    Decision::Retry(Duration::from_secs(1))
                }
            }
        }
    }
}

/// How long the provider asks to wait: `retry-after-ms` if present, else `retry-after` in
/// seconds (an HTTP date is ignored in favour of the default wait).
pub fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let number = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .and_then(|(_, value)| value.trim().parse::<f64>().ok())
            .filter(|number| number.is_finite() && *number >= 0.0)
            .map(|number| number.min(86_400_000.0))
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(|secs| Duration::from_secs_f64(secs.min(86_400.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> Failure {
        Failure::Status {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            message: "msg".into(),
        }
    }

    fn gives_up(decision: &Decision, needle: &str) -> bool {
        matches!(decision, Decision::GiveUp(message) if message.contains(needle))
    }

    #[test]
    fn a_refused_key_is_final_and_says_so() {
        let decision = RetryPolicy::default().decide(&status(401, None));
        assert!(gives_up(&decision, "refused the key (401)"), "{decision:?}");
        assert!(gives_up(
            &RetryPolicy::default().decide(&status(403, None)),
            "(403)"
        ));
    }

    #[test]
    fn rate_limits_wait_as_told_three_times() {
        let mut policy = RetryPolicy::default();
        for _ in 0..RATE_LIMIT_RETRIES {
            assert_eq!(
                policy.decide(&status(429, Some(7))),
                Decision::Retry(Duration::from_secs(7))
            );
        }
        assert!(gives_up(&policy.decide(&status(429, Some(7))), "(429)"));
        let mut policy = RetryPolicy::default();
        assert_eq!(
            policy.decide(&status(429, None)),
            Decision::Retry(Duration::from_secs(5))
        );
        assert!(gives_up(
            &RetryPolicy::default().decide(&status(429, Some(3600))),
            "3600 s"
        ));
    }

    #[test]
    fn server_errors_back_off_then_give_up() {
        let mut policy = RetryPolicy::default();
        let waits: Vec<Decision> = (0..SERVER_RETRIES)
            .map(|_| policy.decide(&status(503, None)))
            .collect();
        assert_eq!(
            waits,
            [1, 2, 4].map(|secs| Decision::Retry(Duration::from_secs(secs)))
        );
        assert!(gives_up(&policy.decide(&status(529, None)), "(529)"));
    }

    #[test]
    fn broken_streams_are_retried_once_and_other_failures_not_at_all() {
        let mut policy = RetryPolicy::default();
        let broken = Failure::Broken("cut".into());
        assert!(matches!(policy.decide(&broken), Decision::Retry(_)));
        assert!(gives_up(&policy.decide(&broken), "broke off"));
        assert!(gives_up(
            &RetryPolicy::default().decide(&Failure::Bridge("request limit reached".into())),
            "request limit reached"
        ));
        assert!(gives_up(
            &RetryPolicy::default().decide(&status(400, None)),
            "rejected the request (400)"
        ));
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let headers = |value: &str| vec![("Retry-After".to_owned(), value.to_owned())];
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(&headers("0.5")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&[]), None);
        let both = vec![
            ("retry-after".to_owned(), "2".to_owned()),
            ("retry-after-ms".to_owned(), "1500".to_owned()),
        ];
        assert_eq!(retry_after(&both), Some(Duration::from_millis(1500)));
    }
}
