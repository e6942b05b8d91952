//! The tunnel: everything a box needs from outside, performed by the bridge, which alone
//! holds the keys.
//!
//! A box has no network. Its agent sends [`Request`]s over the protocol stream; the router
//! hands each to [`Tunnel::perform`] in a task of its own, and the [`ResponsePart`]s go
//! back to the box in order: `Head`, `Body`*, `End`, or one `Failed` whose message says in
//! words what was refused or what went wrong.
//!
//! - Model requests go only to the configured provider's endpoints, with a safe subset of
//!   the box's headers and the key added here; the answer streams back as it arrives, and
//!   its token usage is counted on the way.
//! - Each conversation is held to model requests per minute, tokens per day, web fetches
//!   per minute, and a few requests in flight at once, so that one box can neither use the
//!   bridge as an HTTP client for unlimited parallel requests nor fill its memory. Fetches
//!   of all conversations together are further held to [`FETCHES_IN_FLIGHT`] at once.
//! - Web fetches reach public http(s) hosts only: every resolved address and every
//!   redirect is checked before connecting, and pages come back as text.
//!
//! # Layout
//! - `mod.rs`: [`Tunnel`], its [`Settings`] and [`TunnelError`].
//! - `provider.rs`: endpoint, header and key rules of each provider (no I/O).
//! - `model.rs`: forwarding a model request and streaming the answer back.
//! - `meter.rs`: token usage read from an answer as it streams.
//! - `limits.rs`: clock, limits and per-conversation accounting (no I/O).
//! - `address.rs`: address classes and the fetch allowlist (no I/O).
//! - `fetch.rs`: `web_fetch`: resolution, pinning, redirects, caps.
//! - `text.rs`: HTML to text. `chunk.rs`: UTF-8 `Body` pieces.

mod address;
mod chunk;
mod fetch;
mod limits;
mod meter;
mod model;
mod provider;
mod text;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clawpen_adapters::egress::Egress;
use clawpen_adapters::ConversationKey;
use clawpen_protocol::{Request, ResponsePart};
use tokio::sync::{mpsc, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;

pub use address::AllowRule;
pub use limits::{Clock, LimitReached, Limits, ManualClock, SystemClock, Usage};
pub use provider::Provider;

/// How long connecting to the model provider may take.
const MODEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the model provider may stay silent: before its response head, and between two
/// chunks of its body. Generous, because a non-streamed answer arrives only when complete
/// (the vendors' own SDKs wait up to 10 minutes); streams send pings far more often.
const MODEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Web fetches performed at once, over all conversations. A fetch holds up to
/// `web_fetch_max_kb` of its page (and its text) in the bridge's memory, so this bounds
/// what fetches can take together; more wait their turn, within their own timeout.
pub const FETCHES_IN_FLIGHT: usize = 16;

/// Why a box's request got a `Failed` answer; its `Display` is the message the box gets.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The request is not allowed: a path outside the provider's endpoints, no provider or
    /// key, a private address, a scheme or content type the tunnel does not handle.
    #[error("{0}")]
    Refused(String),
    /// A per-conversation limit is reached.
    #[error(transparent)]
    Limit(#[from] LimitReached),
    /// The destination could not be reached, or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The response began but broke off (its earlier `Body` parts were already sent).
    #[error("{0}")]
    Broken(String),
}

/// What `web_fetch` may reach and how much it reads.
#[derive(Clone, Debug)]
pub struct FetchSettings {
    /// The operator's allowlist; empty means any public host.
    pub allow: Vec<AllowRule>,
    /// The most bytes of a page that are read; the text of a longer one is cut.
    pub max_bytes: usize,
    /// The whole fetch, redirects included, must finish within this.
    pub timeout: Duration,
    /// The extra CA certificates fetches trust, and the operator's proxy: without one a
    /// fetch connects directly, to the addresses it checked; through one, the proxy
    /// resolves and connects (see `fetch::destination`).
    pub egress: Egress,
}

/// What the tunnel is configured to do; [`Settings::from_config`] reads it from the
/// operator's configuration, and tests adjust the timeouts.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where model requests go, with its key.
    pub provider: Provider,
    /// Per-conversation limits.
    pub limits: Limits,
    /// `web_fetch` rules.
    pub fetch: FetchSettings,
    /// How long connecting to the provider may take.
    pub model_connect_timeout: Duration,
    /// How long the provider may stay silent before its head and between body chunks.
    pub model_idle_timeout: Duration,
    /// How model requests reach the provider: the operator's proxy, extra CA certificates.
    pub egress: Egress,
}

impl Settings {
    /// The tunnel settings of `config` (which has been validated when it loaded), and the
    /// process environment's proxy and extra CA certificates.
    pub fn from_config(config: &Config) -> Self {
        let egress = Egress::from_env();
        for problem in egress.problems() {
            tracing::warn!(%problem, "an extra CA certificate could not be loaded");
        }
        Self {
            provider: Provider::from_config(config),
            limits: Limits {
                requests_per_minute: config.requests_per_minute,
                tokens_per_day: config.tokens_per_day,
                fetches_per_minute: config.web_fetches_per_minute,
                requests_in_flight: config.max_requests_in_flight,
            },
            fetch: FetchSettings {
                allow: config
                    .web_fetch_allow
                    .iter()
                    .filter_map(|entry| AllowRule::parse(entry).ok())
                    .collect(),
                max_bytes: usize::try_from(config.web_fetch_max_kb.saturating_mul(1024))
                    .unwrap_or(usize::MAX),
                timeout: Duration::from_secs(config.web_fetch_timeout_secs),
                egress: egress.clone(),
            },
            model_connect_timeout: MODEL_CONNECT_TIMEOUT,
            model_idle_timeout: MODEL_IDLE_TIMEOUT,
            egress,
        }
    }
}

/// A duration for messages: `20 s`, or `0.5 s` when not whole.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A request's outcome as a metrics label.
fn outcome(result: &Result<(), TunnelError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(TunnelError::Refused(_)) => "refused",
        Err(TunnelError::Limit(_)) => "limit",
        Err(TunnelError::Unreachable(_)) => "unreachable",
        Err(TunnelError::Broken(_)) => "broken",
    }
}

/// Performs boxes' requests; a cheap-to-clone handle shared by every conversation.
#[derive(Clone, Debug)]
pub struct Tunnel {
    inner: Arc<Inner>,
    /// Where model requests and tokens are counted ([`Metrics::off`] unless the daemon
    /// serves metrics).
    metrics: Metrics,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    /// One client for every model request, so connections and TLS sessions to the
    /// provider are reused. Building it fails only if TLS cannot be set up; then every
    /// model request fails with this message rather than the daemon refusing to start.
    client: Result<reqwest::Client, String>,
    /// Where the limits get the time from.
    clock: Arc<dyn Clock>,
    /// Every conversation's counters. A std mutex: held for a few map operations, never
    /// across an `.await`.
    ledger: Mutex<limits::Ledger>,
    /// Requests being performed now, per conversation (for its limit, for `status`, and to
    /// see that an aborted request really stopped). A std mutex, held for one map operation.
    in_flight: Mutex<HashMap<ConversationKey, usize>>,
    /// Permits for web fetches of all conversations together ([`FETCHES_IN_FLIGHT`]).
    fetches: Arc<Semaphore>,
}

/// Counts one request as in flight for as long as it lives (dropped when the request ends
/// or its task is aborted).
struct InFlight<'a> {
    tunnel: &'a Tunnel,
    conversation: &'a ConversationKey,
}

impl<'a> InFlight<'a> {
    /// Counts one more request of `conversation`, unless it has `limit` under way already
    /// (0: no limit).
    fn enter(
        tunnel: &'a Tunnel,
        conversation: &'a ConversationKey,
        limit: u32,
    ) -> Result<Self, LimitReached> {
        let mut map = tunnel.in_flight_map();
        let count = map.entry(conversation.clone()).or_default();
        if limit > 0 && *count >= limit as usize {
            return Err(LimitReached::InFlight { limit });
        }
        *count += 1;
        Ok(Self {
            tunnel,
            conversation,
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.tunnel.in_flight_map();
        if let Some(count) = map.get_mut(self.conversation) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(self.conversation);
            }
        }
    }
}

impl Tunnel {
    /// The tunnel of the operator's configuration, on the system clock.
    pub fn new(config: &Config) -> Self {
        Self::with_settings(Settings::from_config(config), Arc::new(SystemClock))
    }

    /// A tunnel with explicit settings and clock (tests use a [`ManualClock`]).
    pub fn with_settings(settings: Settings, clock: Arc<dyn Clock>) -> Self {
        let client = settings
            .egress
            .apply(reqwest::Client::builder())
            // A redirect goes back to the box as it is: following it would send the key
            // (`x-api-key` is not among the headers reqwest strips) to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.model_connect_timeout)
            .user_agent(concat!("clawpen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the bridge could not set up its HTTP client: {e}"));
        if let Err(e) = &client {
            tracing::error!(error = %e, "model requests will fail");
        }
        Self {
            inner: Arc::new(Inner {
                settings,
                client,
                clock,
                ledger: Mutex::default(),
                in_flight: Mutex::default(),
                fetches: Arc::new(Semaphore::new(FETCHES_IN_FLIGHT)),
            }),
            metrics: Metrics::off(),
        }
    }

    /// The same tunnel, counting model requests and tokens in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Perform one request of a box, sending the response parts to `out` in order.
    /// Never fails: refusals and errors become [`ResponsePart::Failed`]. If the box goes
    /// away (`out` closes), the request is dropped, which cancels it upstream.
    pub async fn perform(
        &self,
        conversation: &ConversationKey,
        request: Request,
        out: mpsc::Sender<ResponsePart>,
    ) {
        let limit = self.inner.settings.limits.requests_in_flight;
        let (what, result) = match InFlight::enter(self, conversation, limit) {
            Ok(in_flight) => {
                let result = self.perform_admitted(conversation, request, &out).await;
                drop(in_flight);
                result
            }
            Err(limit) => ("request", Err(TunnelError::Limit(limit))),
        };
        let Err(error) = result else {
            return;
        };
        match &error {
            TunnelError::Refused(_) | TunnelError::Limit(_) => {
                tracing::info!(conversation = %conversation, what, %error, "box request refused");
            }
            TunnelError::Unreachable(_) | TunnelError::Broken(_) => {
                tracing::warn!(conversation = %conversation, what, %error, "box request failed");
            }
        }
        let message = error.to_string();
        let _ = out.send(ResponsePart::Failed { message }).await;
    }

    /// Performs a request counted as in flight: what it was, and how it went.
    async fn perform_admitted(
        &self,
        conversation: &ConversationKey,
        request: Request,
        out: &mpsc::Sender<ResponsePart>,
    ) -> (&'static str, Result<(), TunnelError>) {
        match request {
            Request::Model {
                method,
                path,
                headers,
                body,
            } => {
                let call = model::Call {
                    method: &method,
                    path: &path,
                    headers: &headers,
                    body,
                };
                let result = self.model(conversation, call, out).await;
                let provider = self.inner.settings.provider.name();
                self.metrics.model_request(provider, outcome(&result));
                ("model request", result)
            }
            Request::WebFetch { url } => ("web fetch", self.fetch(conversation, &url, out).await),
            // The router hands these to the scheduler; they never come here.
            Request::ScheduleTask { .. }
            | Request::ListTasks
            | Request::PauseTask { .. }
            | Request::ResumeTask { .. }
            | Request::CancelTask { .. } => (
                "task request",
                Err(TunnelError::Refused(
                    "task requests are performed by the scheduler".into(),
                )),
            ),
        }
    }

    /// A web fetch: counted against the conversation's fetches per minute, then performed
    /// once one of the bridge's [`FETCHES_IN_FLIGHT`] permits is free.
    async fn fetch(
        &self,
        conversation: &ConversationKey,
        url: &str,
        out: &mpsc::Sender<ResponsePart>,
    ) -> Result<(), TunnelError> {
        let settings = &self.inner.settings;
        self.ledger()
            .admit_fetch(conversation, self.inner.clock.now(), settings.limits)?;
        // The semaphore is never closed, so acquiring fails only in theory.
        let _permit = self.inner.fetches.acquire().await.map_err(|_| {
            TunnelError::Unreachable("the bridge is shutting down its web fetches".into())
        })?;
        fetch::perform(&settings.fetch, url, out).await
    }

    async fn model(
        &self,
        conversation: &ConversationKey,
        call: model::Call<'_>,
        out: &mpsc::Sender<ResponsePart>,
    ) -> Result<(), TunnelError> {
        let settings = &self.inner.settings;
        let outgoing = settings
            .provider
            .prepare(call.method, call.path, call.headers, call.body)
            .map_err(TunnelError::Refused)?;
        let client = self
            .inner
            .client
            .as_ref()
            .map_err(|e| TunnelError::Unreachable(e.clone()))?;
        self.ledger()
            .admit(conversation, self.inner.clock.now(), settings.limits)?;
        let count = |tokens: u64| {
            if tokens > 0 {
                self.metrics.model_tokens(settings.provider.name(), tokens);
                self.ledger()
                    .add_tokens(conversation, self.inner.clock.now(), tokens);
            }
        };
        model::forward(client, settings, outgoing, count, out).await
    }

    /// What `conversation` has used, for `status`.
    pub fn usage(&self, conversation: &ConversationKey) -> Usage {
        self.ledger().usage(conversation, self.inner.clock.now())
    }

    /// Requests of a conversation being performed now.
    pub fn in_flight(&self, conversation: &ConversationKey) -> usize {
        self.in_flight_map().get(conversation).copied().unwrap_or(0)
    }

    fn in_flight_map(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, usize>> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, limits::Ledger> {
        // The ledger stays consistent even if a holder panicked: every update is one step.
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
