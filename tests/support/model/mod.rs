//! A fake model provider speaking both vendors' wire formats, and a tiny page server for
//! `web_fetch` tests. Both listen on 127.0.0.1:0 and stop when dropped.
//!
//! [`FakeModel`] answers, as their public API references describe:
//! - Anthropic `POST /v1/messages` (needs `x-api-key`): a server-sent-event stream of
//!   `message_start` (with usage), `content_block_start`/`_delta`/`_stop` for text
//!   (`text_delta`) and tool use (`input_json_delta`), `message_delta` (stop reason and
//!   output usage) and `message_stop`, each as `event:` + `data:` lines; or one JSON
//!   message when the request does not ask to stream. `POST /v1/messages/count_tokens`
//!   answers `{"input_tokens": n}`.
//! - OpenAI `POST /v1/chat/completions` (needs `Authorization: Bearer`): `data:` chunks with
//!   `delta.content` or `delta.tool_calls`, a final usage chunk when
//!   `stream_options.include_usage` is set, then `data: [DONE]`; or one JSON completion.
//!
//! Replies are scripted in a queue ([`FakeModel::push_reply`]); each is text (streamed in
//! several chunks), tool calls, or a misbehaviour: 401, 429 with `retry-after`, 500 (each
//! with the vendor's JSON error body), a stream that breaks off, a stall, or garbage. With
//! the queue empty the fake answers a short text. Every request is recorded.
//!
//! A [`Reply::held`] answer streams its first part, then waits until the test calls
//! [`Hold::release`]; [`Hold::arrived`] tells the test that the first part went out. A test
//! that needs a turn "still running" holds it instead of sleeping or slowing the echo.
//!
//! The HTTP plumbing both servers share is in `server`, the page server in `page`, and how the
//! fake model answers a request, in each vendor's wire format, in `answer`.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::watch;

mod answer;
mod page;
mod server;

#[allow(
    unused_imports,
    reason = "only the test binaries with web_fetch tests use the page server"
)]
pub use page::{Page, PageServer};

use answer::model_answer;
use server::Server;

/// The text answered when no reply is scripted.
pub const DEFAULT_TEXT: &str = "Hello from the fake model.";

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    kind: Kind,
    input_tokens: u64,
    output_tokens: u64,
    /// The most characters of text in one streamed delta; `None`: four deltas.
    piece: Option<usize>,
    /// Text only: after this many characters the answer waits for its hold's release.
    hold: Option<(usize, Hold)>,
}

/// The test's side of a [`Reply::held`] answer.
#[derive(Clone, Debug)]
pub struct Hold {
    state: Arc<HoldState>,
}

#[derive(Debug)]
struct HoldState {
    /// Set by the fake once the first part is out and the rest waits.
    holding: watch::Sender<bool>,
    /// Set by the test: the rest may go.
    released: watch::Sender<bool>,
    /// Set by the fake when the client went away while the rest waited.
    abandoned: watch::Sender<bool>,
}

/// How long [`Hold::arrived`] and [`Hold::abandoned`] wait before failing the test.
const HOLD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Hold {
    fn new() -> Self {
        Self {
            state: Arc::new(HoldState {
                holding: watch::channel(false).0,
                released: watch::channel(false).0,
                abandoned: watch::channel(false).0,
            }),
        }
    }

    /// Wait until the request came and its first part was streamed (the rest now waits).
    pub async fn arrived(&self) {
        Self::wait_set(&self.state.holding, "the held answer was never asked for").await;
    }

    /// Let the rest of the answer stream.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    /// Wait until the client gave the held answer up (closed the connection unreleased).
    pub async fn abandoned(&self) {
        Self::wait_set(&self.state.abandoned, "the held answer was never given up").await;
    }

    async fn wait_set(flag: &watch::Sender<bool>, failure: &str) {
        let mut flag = flag.subscribe();
        let set = tokio::time::timeout(HOLD_TIMEOUT, flag.wait_for(|set| *set))
            .await
            .is_ok_and(|seen| seen.is_ok());
        assert!(set, "{failure} within {HOLD_TIMEOUT:?}");
    }

    /// The fake's side: the first part is out; wait for the release. False when `gone`
    /// (the client went away) came first.
    async fn hold(&self, gone: impl std::future::Future<Output = ()>) -> bool {
        self.state.holding.send_replace(true);
        let mut released = self.state.released.subscribe();
        tokio::select! {
            _ = released.wait_for(|set| *set) => true,
            () = gone => {
                self.state.abandoned.send_replace(true);
                false
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Text(String),
    Tools(Vec<(String, Value)>),
    Unauthorized,
    RateLimited { retry_after_secs: u64 },
    ServerError,
    BrokenStream,
    Stall,
    Garbage,
    Redirect(String),
}

impl Reply {
    fn of(kind: Kind) -> Self {
        Self {
            kind,
            input_tokens: 10,
            output_tokens: 5,
            piece: None,
            hold: None,
        }
    }

    /// Text, streamed in several chunks.
    pub fn text(text: &str) -> Self {
        Self::of(Kind::Text(text.into()))
    }

    /// Text whose `first` part streams at once and whose `rest` waits for the returned
    /// hold's [`Hold::release`]: a model call that is under way for as long as the test likes.
    pub fn held(first: &str, rest: &str) -> (Self, Hold) {
        let hold = Hold::new();
        let mut reply = Self::text(&format!("{first}{rest}"));
        reply.hold = Some((first.chars().count(), hold.clone()));
        (reply, hold)
    }

    /// One tool call.
    pub fn tool_call(name: &str, input: Value) -> Self {
        Self::tool_calls(vec![(name, input)])
    }

    /// Several tool calls in one answer.
    pub fn tool_calls(calls: Vec<(&str, Value)>) -> Self {
        Self::of(Kind::Tools(
            calls.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        ))
    }

    /// 401 with the vendor's authentication error.
    pub fn unauthorized() -> Self {
        Self::of(Kind::Unauthorized)
    }

    /// 429 with `retry-after` and the vendor's rate-limit error.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::of(Kind::RateLimited { retry_after_secs })
    }

    /// 500 with the vendor's server error.
    pub fn server_error() -> Self {
        Self::of(Kind::ServerError)
    }

    /// A 200 stream that sends its start and some text, then drops the connection.
    pub fn broken_stream() -> Self {
        Self::of(Kind::BrokenStream)
    }

    /// Never answer (not even the status line).
    pub fn stall() -> Self {
        Self::of(Kind::Stall)
    }

    /// A 200 "event stream" of bytes that are not server-sent events (nor UTF-8).
    pub fn garbage() -> Self {
        Self::of(Kind::Garbage)
    }

    /// 307 to `location` (a misbehaving provider or proxy).
    pub fn redirect(location: &str) -> Self {
        Self::of(Kind::Redirect(location.into()))
    }

    /// Stream the text in deltas of at most `chars` characters each, as many as it takes
    /// (by default a text comes in four), with the usual short pause between two.
    pub fn in_pieces_of(mut self, chars: usize) -> Self {
        self.piece = Some(chars.max(1));
        self
    }

    /// The usage this answer reports (default: 10 input, 5 output tokens).
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.input_tokens = input_tokens;
        self.output_tokens = output_tokens;
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` if it was not JSON).
    pub body: Value,
}

impl Recorded {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct ModelState {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    /// Numbers message ids.
    served: AtomicUsize,
}

/// The fake provider. Anthropic's base URL is [`FakeModel::url`], OpenAI's
/// [`FakeModel::openai_url`].
pub struct FakeModel {
    server: Server,
    state: Arc<ModelState>,
}

impl FakeModel {
    /// Listen on a loopback port.
    pub async fn start() -> Self {
        let state = Arc::new(ModelState::default());
        let handler = state.clone();
        let server = Server::start(move |request| model_answer(handler.clone(), request)).await;
        Self { server, state }
    }

    /// `http://127.0.0.1:PORT`: Anthropic's base URL (without `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: an OpenAI base URL.
    pub fn openai_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Point a bridge's boxes at this fake, in Anthropic's wire format, with a key.
    pub fn serve(&self, config: &mut clawpen::config::Config) {
        config.provider = "anthropic".into();
        config.model = Some("claude-test".into());
        config.anthropic_base_url = self.url();
        config.anthropic_api_key = Some(clawpen::config::Secret::new("sk-ant-test-key"));
    }

    /// Queue the answer to a coming request.
    pub fn push_reply(&self, reply: Reply) {
        lock(&self.state.replies).push_back(reply);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
