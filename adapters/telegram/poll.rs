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

/// The longest pause between failing polls.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The pause after the first failed poll; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

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
    let mut failures = 0;
    loop {
        let poll = api::call(
            &adapter.bot,
            GetUpdatesRaw {
                offset,
                timeout: adapter.config.poll_timeout_secs,
                allowed_updates: ALLOWED_UPDATES,
            },
        );
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = poll => result,
        };
        let updates = match result {
            Ok(updates) => {
                failures = 0;
                updates
            }
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                return Err(AdapterError::Rejected(
                    "Telegram refused the bot token".into(),
                ));
            }
            Err(e) => {
                failures += 1;
                let error = api::adapter_error(e);
                let pause = pause_after(&error, failures);
                tracing::warn!(adapter = PLATFORM, %error, ?pause, "getUpdates failed; polling again later");
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
                    offset = id + 1;
                    if let Err(e) = sink.save_value(OFFSET_KEY, &offset.to_string()).await {
                        // Telegram still moves on; a restart re-fetches what it holds, and
                        // the sink drops those it stored already.
                        tracing::warn!(adapter = PLATFORM, error = %e, "could not save the update offset");
                    }
                }
                Err(SinkError::ShuttingDown) => return Ok(()),
                Err(e) => {
                    failures += 1;
                    let pause = backoff(failures);
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

/// How long to pause after the `failures`th failed poll: what a rate limit asked for, else
/// an exponential backoff.
fn pause_after(error: &AdapterError, failures: u32) -> Duration {
    match error {
        AdapterError::RateLimited { retry_after } => *retry_after,
        _ => backoff(failures),
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
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
    fn failed_polls_back_off_to_a_cap_and_rate_limits_wait_as_asked() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        let limited = AdapterError::RateLimited {
            retry_after: Duration::from_secs(9),
        };
        assert_eq!(pause_after(&limited, 5), Duration::from_secs(9));
    }
}
