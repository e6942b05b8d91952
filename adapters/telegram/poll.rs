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
use crate::stream::{Attempts, Backoff};
use crate::{AdapterError, InboundSink, SinkError};

/// The store key of the next update id wanted.
pub const OFFSET_KEY: &str = "telegram.offset";

/// How failed polls (and failed attempts to store an update) are retried: for ever, with
/// steps from 250 ms up to 3 s. A low cap on purpose: every message to the bot waits out
/// this pause once Telegram is back, Bot API outages are mostly brief 5xx bursts, and one
/// poll every few seconds is no load on Telegram.
const POLL_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    factor: 2,
    cap: Duration::from_secs(3),
    max_attempts: u32::MAX,
    max_rate_wait: Duration::MAX,
};

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
    let mut polls = Attempts::new(POLL_BACKOFF);
    // Failed attempts to store an update, under the same policy.
    let mut stores = Attempts::new(POLL_BACKOFF);
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
                let before = polls.succeeded();
                adapter.set_trouble(None);
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
                let conflict = api::conflict(&e);
                adapter.set_trouble(conflict);
                let error = api::adapter_error(e);
                let pause = polls.failed(&error).unwrap_or(POLL_BACKOFF.cap);
                let count = polls.failures();
                if let (Some(why), true) = (conflict, worth_a_warning(count)) {
                    tracing::warn!(
                        adapter = PLATFORM,
                        failures = count,
                        "cannot receive updates: {why}"
                    );
                } else if worth_a_warning(count) {
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
                    stores.succeeded();
                    offset = id + 1;
                    if let Err(e) = sink.save_value(OFFSET_KEY, &offset.to_string()).await {
                        // Telegram still moves on; a restart re-fetches what it holds, and
                        // the sink drops those it stored already.
                        tracing::warn!(adapter = PLATFORM, error = %e, "could not save the update offset");
                    }
                }
                Err(SinkError::ShuttingDown) => return Ok(()),
                Err(e) => {
                    let error = AdapterError::Transport(e.to_string());
                    let pause = stores.failed(&error).unwrap_or(POLL_BACKOFF.cap);
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

/// Whether the `count`th failure in a row is logged as a warning: the first, which says
/// the outage began, and every [`WARN_EVERY`]th, which says it goes on. (A rate limit is
/// not counted, so it logs as the failure before it did.)
fn worth_a_warning(count: u32) -> bool {
    count <= 1 || count % WARN_EVERY == 0
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
    fn four_failed_polls_cost_seconds_not_a_minute() {
        let worst: Duration = (1..=4).filter_map(|n| POLL_BACKOFF.step(n)).sum();
        assert!(worst <= Duration::from_secs(4), "{worst:?}");
        assert_eq!(POLL_BACKOFF.step(u32::MAX - 1), Some(POLL_BACKOFF.cap));
        let mut polls = Attempts::new(POLL_BACKOFF);
        let limited = AdapterError::RateLimited {
            retry_after: Duration::from_secs(9),
        };
        assert_eq!(polls.failed(&limited), Some(Duration::from_secs(9)));
    }

    #[test]
    fn an_outage_is_logged_as_a_count_not_a_line_per_failure() {
        let warned: Vec<u32> = (1..=45).filter(|&n| worth_a_warning(n)).collect();
        assert_eq!(warned, [1, 20, 40]);
    }
}
