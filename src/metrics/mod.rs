//! Metrics, health and readiness: what an operator watches.
//!
//! [`Metrics`] is a cheap-to-clone handle that the router, the sandbox, the tunnel and the
//! adapters' outbound calls report to, each with a one-line call where the thing happens.
//! When `[metrics] listen` is set, the daemon serves them (`server`) as `/metrics` in the
//! OpenMetrics text format that Prometheus scrapes, beside `/healthz` and `/readyz`
//! (`ready`). Unset, the handle is [`Metrics::off`] and every call returns at once.
//!
//! No label value names a user or a chat: platforms, methods, reasons, providers and kinds
//! are small fixed sets, so the series stay few however many people talk to the bot.
//!
//! # Layout
//! - `mod.rs`: [`Metrics`], the metric families and the calls that feed them.
//! - `adapter`: [`Metered`], an adapter wrapper counting platform errors and 429s by method.
//! - `ready`: the `/readyz` checks (store, engine, adapters).
//! - `server`: the HTTP endpoint, a daemon component.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use clawpen_adapters::{AdapterError, ConversationKey};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

mod adapter;
mod ready;
mod server;

pub use adapter::Metered;
pub use ready::{AdapterLiveness, Readiness, Report};
pub use server::{component, Server};

/// The most conversations whose timing is tracked at once (first reply, turn duration).
/// Past it, new ones are not timed (their counts still are): the maps stay bounded even if
/// turns were never seen to end.
const TIMED_MAX: usize = 10_000;

/// Why a turn failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TurnFailure {
    /// The box went away mid-turn (killed, out of memory, removed, engine gone).
    BoxGone,
    /// The box stayed silent past `turn_stall_secs` and was killed.
    Stalled,
    /// The turn ran past `max_turn_secs` and its box was stopped.
    TooLong,
    /// The box kept writing far past its reply's limits and was stopped.
    Flooding,
    /// The agent ended the turn with an error (provider failure, a limit, a tool).
    AgentError,
    /// The box does not know the turn (lost across a restart).
    Lost,
    /// No box could be started for the messages, so no turn ran.
    NoBox,
}

impl TurnFailure {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BoxGone => "box_gone",
            Self::Stalled => "stalled",
            Self::TooLong => "too_long",
            Self::Flooding => "flooding",
            Self::AgentError => "agent_error",
            Self::Lost => "lost",
            Self::NoBox => "no_box",
        }
    }
}

/// How a box came to run.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum BoxStart {
    /// A new container (and volume, the first time) was created.
    Cold,
    /// A stopped container was started again (its workspace kept).
    Resumed,
    /// The box was running already (left by the previous bridge run).
    Adopted,
    /// A new conversation claimed a box of the warm pool.
    Warm,
    /// A box was created and started for the warm pool.
    Pooled,
}

impl BoxStart {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Resumed => "resumed",
            Self::Adopted => "adopted",
            Self::Warm => "warm",
            Self::Pooled => "pooled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BoxLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformErrorLabels {
    platform: String,
    method: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    write: &'static str,
}

/// Latency buckets from 1 ms to about 2 min (doubling): store writes at the low end, cold
/// starts and long turns at the high end.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

/// The metric families, registered once.
struct Inner {
    registry: Registry,
    inbound: Family<PlatformLabels, Counter>,
    turns_started: Family<PlatformLabels, Counter>,
    turns_finished: Family<PlatformLabels, Counter>,
    turns_failed: Family<FailureLabels, Counter>,
    first_reply: Histogram,
    turn_duration: Histogram,
    live_boxes: Gauge,
    queued: Gauge,
    /// Warm pool boxes ready to be claimed.
    warm_boxes: Gauge,
    /// Box starts waiting for the engine (beyond those under way).
    starts_waiting: Gauge,
    box_starts: Family<BoxLabels, Counter>,
    model_requests: Family<ModelLabels, Counter>,
    model_tokens: Family<ProviderLabels, Counter>,
    platform_errors: Family<PlatformErrorLabels, Counter>,
    store_writes: Family<WriteLabels, Histogram, fn() -> Histogram>,
    /// When each conversation's oldest unanswered addressed message was accepted; taken by
    /// the first message of its reply the platform accepts. A std mutex, held for one map
    /// operation.
    awaiting: Mutex<HashMap<ConversationKey, Instant>>,
    /// When each conversation's running turn started. A std mutex, as `awaiting`.
    turns: Mutex<HashMap<ConversationKey, Instant>>,
}

/// The bridge's metrics; cheap to clone. [`Metrics::off`] records nothing.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("on", &self.inner.is_some())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one map operation, so a panicked holder left it consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// Metrics that record nothing (no `[metrics] listen`, the CLI's own commands, tests).
    pub fn off() -> Self {
        Self::default()
    }

    /// Metrics that record, for the `/metrics` endpoint.
    pub fn on() -> Self {
        let mut registry = Registry::with_prefix("clawpen");
        let inner = Inner {
            inbound: Family::default(),
            turns_started: Family::default(),
            turns_finished: Family::default(),
            turns_failed: Family::default(),
            first_reply: latency(),
            turn_duration: latency(),
            live_boxes: Gauge::default(),
            queued: Gauge::default(),
            warm_boxes: Gauge::default(),
            starts_waiting: Gauge::default(),
            box_starts: Family::default(),
            model_requests: Family::default(),
            model_tokens: Family::default(),
            platform_errors: Family::default(),
            store_writes: Family::new_with_constructor(latency),
            awaiting: Mutex::default(),
            turns: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "inbound_messages",
            "Inbound messages stored (duplicates not counted), by platform",
            inner.inbound.clone(),
        );
        registry.register(
            "turns_started",
            "Agent turns started, by platform",
            inner.turns_started.clone(),
        );
        registry.register(
            "turns_finished",
            "Agent turns finished (failed ones included), by platform",
            inner.turns_finished.clone(),
        );
        registry.register(
            "turns_failed",
            "Agent turns that ended in an error, and messages no box could take, by reason",
            inner.turns_failed.clone(),
        );
        registry.register_with_unit(
            "first_reply",
            "From a message stored to the first message of its reply the platform accepted",
            Unit::Seconds,
            inner.first_reply.clone(),
        );
        registry.register_with_unit(
            "turn_duration",
            "From a turn's start to its end",
            Unit::Seconds,
            inner.turn_duration.clone(),
        );
        registry.register(
            "live_boxes",
            "Boxes alive now (live-box slots in use)",
            inner.live_boxes.clone(),
        );
        registry.register(
            "queued_conversations",
            "Conversations waiting for a live-box slot",
            inner.queued.clone(),
        );
        registry.register(
            "warm_boxes",
            "Warm pool boxes started ahead of need, ready for new conversations",
            inner.warm_boxes.clone(),
        );
        registry.register(
            "box_starts_waiting",
            "Conversations waiting for the engine to create or start their box",
            inner.starts_waiting.clone(),
        );
        registry.register(
            "box_starts",
            "Boxes started, by kind: cold (created), resumed (stopped box started), adopted, \
             warm (claimed from the pool), pooled (created for the pool)",
            inner.box_starts.clone(),
        );
        registry.register(
            "model_requests",
            "Model requests from boxes, by provider and outcome",
            inner.model_requests.clone(),
        );
        registry.register(
            "model_tokens",
            "Model tokens (input, cache and output) reported by the provider, by provider",
            inner.model_tokens.clone(),
        );
        registry.register(
            "platform_errors",
            "Failed outbound platform calls, by platform, method and kind (rate_limited: 429)",
            inner.platform_errors.clone(),
        );
        registry.register_with_unit(
            "store_write",
            "Flushed store writes on the message path, by write",
            Unit::Seconds,
            inner.store_writes.clone(),
        );
        Self {
            inner: Some(Arc::new(Inner { registry, ..inner })),
        }
    }

    /// The exposition of every metric, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(inner) = &self.inner {
            if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &inner.registry) {
                tracing::warn!(error = %e, "encoding the metrics failed");
            }
        }
        out
    }

    /// An inbound message was stored; an addressed one starts the first-reply clock of its
    /// conversation unless an earlier message already did.
    pub fn accepted(&self, conversation: &ConversationKey, addressed: bool) {
        let Some(inner) = &self.inner else { return };
        inner
            .inbound
            .get_or_create(&PlatformLabels {
                platform: conversation.platform.clone(),
            })
            .inc();
        if addressed {
            let mut awaiting = lock(&inner.awaiting);
            if awaiting.len() < TIMED_MAX {
                awaiting
                    .entry(conversation.clone())
                    .or_insert_with(Instant::now);
            }
        }
    }

    /// The platform accepted a message of a reply (sent, or shown as a draft): the first
    /// one after a stored message stops its first-reply clock.
    pub fn reply_shown(&self, conversation: &ConversationKey) {
        let Some(inner) = &self.inner else { return };
        let since = lock(&inner.awaiting).remove(conversation);
        if let Some(since) = since {
            inner.first_reply.observe(since.elapsed().as_secs_f64());
        }
    }

    /// A turn started in `conversation`.
    pub fn turn_started(&self, conversation: &ConversationKey) {
        let Some(inner) = &self.inner else { return };
        inner
            .turns_started
            .get_or_create(&PlatformLabels {
                platform: conversation.platform.clone(),
            })
            .inc();
        let mut turns = lock(&inner.turns);
        if turns.len() < TIMED_MAX {
            turns.insert(conversation.clone(), Instant::now());
        }
    }

    /// The running turn of `conversation` ended (well or not).
    pub fn turn_finished(&self, conversation: &ConversationKey) {
        let Some(inner) = &self.inner else { return };
        inner
            .turns_finished
            .get_or_create(&PlatformLabels {
                platform: conversation.platform.clone(),
            })
            .inc();
        let started = lock(&inner.turns).remove(conversation);
        if let Some(started) = started {
            inner.turn_duration.observe(started.elapsed().as_secs_f64());
        }
    }

    /// A turn failed (it is counted as finished too, where it finishes).
    pub fn turn_failed(&self, reason: TurnFailure) {
        let Some(inner) = &self.inner else { return };
        inner
            .turns_failed
            .get_or_create(&FailureLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A box started (or was found running).
    pub fn box_started(&self, kind: BoxStart) {
        let Some(inner) = &self.inner else { return };
        inner
            .box_starts
            .get_or_create(&BoxLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// A model request of a box ended: `outcome` is `ok`, `refused`, `limit`,
    /// `unreachable` or `broken`.
    pub fn model_request(&self, provider: &str, outcome: &'static str) {
        let Some(inner) = &self.inner else { return };
        inner
            .model_requests
            .get_or_create(&ModelLabels {
                provider: provider.to_string(),
                outcome,
            })
            .inc();
    }

    /// The provider reported `tokens` more tokens used.
    pub fn model_tokens(&self, provider: &str, tokens: u64) {
        let Some(inner) = &self.inner else { return };
        inner
            .model_tokens
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
            })
            .inc_by(tokens);
    }

    /// An outbound platform call failed.
    pub fn platform_error(&self, platform: &str, method: &'static str, error: &AdapterError) {
        let Some(inner) = &self.inner else { return };
        let kind = match error {
            AdapterError::RateLimited { .. } => "rate_limited",
            AdapterError::Rejected(_) => "rejected",
            AdapterError::NotFound(_) => "not_found",
            AdapterError::Unsupported(_) => "unsupported",
            AdapterError::Transport(_) => "transport",
        };
        inner
            .platform_errors
            .get_or_create(&PlatformErrorLabels {
                platform: platform.to_string(),
                method,
                kind,
            })
            .inc();
    }

    /// A flushed store write took `took`; `write` names which (`inbound`, `delivery`).
    pub fn store_write(&self, write: &'static str, took: Duration) {
        let Some(inner) = &self.inner else { return };
        inner
            .store_writes
            .get_or_create(&WriteLabels { write })
            .observe(took.as_secs_f64());
    }

    /// Sets the gauges read from the router at each scrape.
    pub fn set_boxes(&self, live: usize, queued: usize) {
        let Some(inner) = &self.inner else { return };
        inner
            .live_boxes
            .set(i64::try_from(live).unwrap_or(i64::MAX));
        inner.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
    }

    /// Sets the warm pool's gauges, read from the router at each scrape.
    pub fn set_pool(&self, warm: usize, starts_waiting: usize) {
        let Some(inner) = &self.inner else { return };
        inner
            .warm_boxes
            .set(i64::try_from(warm).unwrap_or(i64::MAX));
        inner
            .starts_waiting
            .set(i64::try_from(starts_waiting).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_records_nothing_and_encodes_nothing() {
        let metrics = Metrics::off();
        metrics.accepted(&ConversationKey::new("terminal", "a"), true);
        assert_eq!(metrics.encode(), "");
    }

    #[test]
    fn the_exposition_names_platforms_and_reasons_never_chats() {
        let metrics = Metrics::on();
        let key = ConversationKey::new("telegram", "-100777");
        metrics.accepted(&key, true);
        metrics.turn_started(&key);
        metrics.reply_shown(&key);
        metrics.turn_failed(TurnFailure::BoxGone);
        metrics.turn_finished(&key);
        metrics.box_started(BoxStart::Cold);
        metrics.platform_error(
            "telegram",
            "edit",
            &AdapterError::RateLimited {
                retry_after: Duration::from_secs(3),
            },
        );
        metrics.store_write("inbound", Duration::from_millis(2));
        let text = metrics.encode();
        for line in [
            "clawpen_inbound_messages_total{platform=\"telegram\"} 1",
            "clawpen_turns_started_total{platform=\"telegram\"} 1",
            "clawpen_turns_failed_total{reason=\"box_gone\"} 1",
            "clawpen_first_reply_seconds_count 1",
            "clawpen_turn_duration_seconds_count 1",
            "clawpen_box_starts_total{kind=\"cold\"} 1",
            "clawpen_platform_errors_total{platform=\"telegram\",method=\"edit\",kind=\"rate_limited\"} 1",
            "clawpen_store_write_seconds_count{write=\"inbound\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("-100777"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn only_the_first_reply_after_a_message_is_timed() {
        let metrics = Metrics::on();
        let key = ConversationKey::new("terminal", "a");
        metrics.reply_shown(&key);
        metrics.accepted(&key, false);
        metrics.reply_shown(&key);
        metrics.accepted(&key, true);
        metrics.accepted(&key, true);
        metrics.reply_shown(&key);
        metrics.reply_shown(&key);
        assert!(metrics
            .encode()
            .contains("clawpen_first_reply_seconds_count 1"));
    }
}
