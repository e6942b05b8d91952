//! Receiving by long polling (`getUpdates`).
//!
//! Telegram forgets an update once a later `getUpdates` asks for an offset past it, so the
//! offset moves past an update only after the sink has stored it (or it was answered or
//! skipped for good), and is saved with the sink as well: a crash at any point re-fetches
//! at most the updates not yet confirmed, which the sink recognises as duplicates.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teloxide::prelude::Requester;
use teloxide::{ApiError, RequestError};
use tokio_util::sync::CancellationToken;

use super::adapter::TelegramAdapter;
use super::api::{self, GetUpdatesRaw, ALLOWED_UPDATES};
use super::PLATFORM;
use crate::{AdapterError, InboundSink, SinkError};

/// The store key of the next update id wanted.
pub const OFFSET_KEY: &str = "telegram.offset";

/// The longest pause between failing polls. Short on purpose: every message to the bot
/// waits out this pause once Telegram is back, Bot API outages are mostly brief 5xx bursts,
/// and one poll every few seconds is no load on Telegram.
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// The pause after the first failed poll; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// While polls keep failing, one warning for the first failure and then one for every this
/// many; the others are debug lines, so an hour's outage is a few lines, not thousands.
const WARN_EVERY: u32 = 20;

/// Polls until `shutdown`, handing every update to the adapter in order.
pub(super) async fn run(
    adapter: Arc<TelegramAdapter>,
    sink: Arc<dyn InboundSink>,
    shutdown: CancellationToken,
) -> Result<(), AdapterError> {
    // A webhook left by an earlier configuration would make every getUpdates fail.
    if let Err(e) = adapter.bot.delete_webhook().await {
        tracing::warn!(adapter = PLATFORM, error = %e, "could not remove a webhook");
    }
    let mut offset = match sink.load_value(OFFSET_KEY).await {
        Ok(value) => value.and_then(|v| v.parse().ok()).unwrap_or(0),
        Err(e) => {
            tracing::error!(adapter = PLATFORM, error = %e, "cannot read the update offset; starting from what Telegram holds");
            0
        }
    };
    tracing::info!(adapter = PLATFORM, offset, "polling Telegram for updates");
    let mut failures = Failures::default();
    // Failed attempts to store an update, for that path's own backoff.
    let mut store_failures = 0;
    loop {
        let request = GetUpdatesRaw {
            offset,
            timeout: adapter.config.poll_timeout_secs,
            allowed_updates: ALLOWED_UPDATES,
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = api::get_updates(&adapter.bot, &request) => result,
        };
        let updates = match result {
            Ok(updates) => {
                let before = failures.recovered();
                if before > 0 {
                    tracing::info!(
                        adapter = PLATFORM,
                        failures = before,
                        "polling recovered after {before} failures"
                    );
                }
                updates
            }
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                return Err(AdapterError::Rejected(
                    "Telegram refused the bot token".into(),
                ));
            }
            Err(e) => {
                let count = failures.failed();
                let error = api::adapter_error(e);
                let pause = pause_after(&error, count, jitter());
                if Failures::worth_a_warning(count) {
                    tracing::warn!(adapter = PLATFORM, %error, failures = count, ?pause, "getUpdates failing; polling again shortly");
                } else {
                    tracing::debug!(adapter = PLATFORM, %error, failures = count, ?pause, "getUpdates failed again");
                }
                if sleep_or_stop(pause, &shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        for value in updates {
            let Some(id) = value.get("update_id").and_then(Value::as_i64) else {
                tracing::warn!(adapter = PLATFORM, "skipping an update without an id");
                continue;
            };
            if id < offset {
                continue; // confirmed before; a server may send it once more
            }
            let handled = tokio::select! {
                // Unconfirmed, it comes again on the next start.
                _ = shutdown.cancelled() => return Ok(()),
                handled = adapter.handle_update(&*sink, value) => handled,
            };
            match handled {
                Ok(()) => {
                    store_failures = 0;
                    offset = id + 1;
                    if let Err(e) = sink.save_value(OFFSET_KEY, &offset.to_string()).await {
                        // Telegram still moves on; a restart re-fetches what it holds, and
                        // the sink drops those it stored already.
                        tracing::warn!(adapter = PLATFORM, error = %e, "could not save the update offset");
                    }
                }
                Err(SinkError::ShuttingDown) => return Ok(()),
                Err(e) => {
                    store_failures += 1;
                    let pause = backoff(store_failures, jitter());
                    tracing::error!(adapter = PLATFORM, update_id = id, error = %e, ?pause, "could not store an update; fetching it again");
                    if sleep_or_stop(pause, &shutdown).await {
                        return Ok(());
                    }
                    break;
                }
            }
        }
    }
}

/// Consecutive failed polls, and which of them are worth a warning.
#[derive(Debug, Default)]
struct Failures {
    count: u32,
}

impl Failures {
    /// Records one more failure; returns how many in a row there have been.
    fn failed(&mut self) -> u32 {
        self.count = self.count.saturating_add(1);
        self.count
    }

    /// Records a successful poll; returns how many failures it ended (0: none).
    fn recovered(&mut self) -> u32 {
        std::mem::take(&mut self.count)
    }

    /// Whether the `count`th failure in a row is logged as a warning: the first, which
    /// says the outage began, and every [`WARN_EVERY`]th, which says it goes on.
    fn worth_a_warning(count: u32) -> bool {
        count == 1 || count % WARN_EVERY == 0
    }
}

/// How long to pause after the `failures`th failed poll: what a rate limit asked for,
/// exactly, else the capped backoff.
fn pause_after(error: &AdapterError, failures: u32, jitter: f64) -> Duration {
    match error {
        AdapterError::RateLimited { retry_after } => *retry_after,
        _ => backoff(failures, jitter),
    }
}

/// Exponential backoff from [`FIRST_BACKOFF`] capped at [`MAX_BACKOFF`], with "equal
/// jitter": half of each step is fixed and half scaled by `jitter` (in `[0, 1)`), so that
/// bridges failing together do not retry in step, yet none retries in a tight loop.
fn backoff(failures: u32, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    let step = FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF);
    step / 2 + (step / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

/// A uniform random number in `[0, 1)`, for the backoff's jitter.
fn jitter() -> f64 {
    // The top 53 bits fill an f64's mantissa exactly.
    (super::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Sleeps for `pause`; true if `shutdown` fired first.
async fn sleep_or_stop(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_polls_back_off_to_a_low_cap_with_jitter() {
        let steps: Vec<u128> = (1..=6).map(|n| backoff(n, 1.0).as_millis()).collect();
        assert_eq!(steps, [250, 500, 1000, 2000, 3000, 3000]);
        let floors: Vec<u128> = (1..=6).map(|n| backoff(n, 0.0).as_millis()).collect();
        assert_eq!(floors, [125, 250, 500, 1000, 1500, 1500]);
        assert_eq!(backoff(u32::MAX, 1.0), MAX_BACKOFF);
        // Four failures in a row cost at most a few seconds in all.
        let worst: Duration = (1..=4).map(|n| backoff(n, 1.0)).sum();
        assert!(worst <= Duration::from_secs(4), "{worst:?}");
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn a_rate_limit_is_waited_out_exactly_as_asked() {
        let limited = AdapterError::RateLimited {
            retry_after: Duration::from_secs(9),
        };
        assert_eq!(pause_after(&limited, 5, 0.5), Duration::from_secs(9));
        let down = AdapterError::Transport("Bad Gateway".into());
        assert_eq!(pause_after(&down, 1, 1.0), FIRST_BACKOFF);
    }

    #[test]
    fn an_outage_is_logged_as_a_count_not_a_line_per_failure() {
        let mut failures = Failures::default();
        let warned: Vec<u32> = (0..45)
            .map(|_| failures.failed())
            .filter(|&n| Failures::worth_a_warning(n))
            .collect();
        assert_eq!(warned, [1, 20, 40]);
        assert_eq!(failures.recovered(), 45);
        assert_eq!(failures.recovered(), 0, "a success resets the count");
    }
}
