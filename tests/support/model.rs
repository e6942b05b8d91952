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
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// A response body: whole, or streamed frame by frame (and possibly broken off).
type Body = BoxBody<Bytes, std::io::Error>;

/// The text answered when no reply is scripted.
pub const DEFAULT_TEXT: &str = "Hello from the fake model.";

/// The pause between two streamed events, so that they arrive as separate chunks.
const EVENT_GAP: Duration = Duration::from_millis(5);

/// Streamed events waiting to be written to a connection.
const EVENT_BUFFER: usize = 16;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    kind: Kind,
    input_tokens: u64,
    output_tokens: u64,
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
        }
    }

    /// Text, streamed in several chunks.
    pub fn text(text: &str) -> Self {
        Self::of(Kind::Text(text.into()))
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

/// What the page server answers at a path.
#[derive(Clone, Debug)]
pub enum Page {
    /// 200 `text/html; charset=utf-8`.
    Html(String),
    /// 200 with this content type.
    Typed { content_type: String, body: Vec<u8> },
    /// 302 to this URL.
    Redirect(String),
    /// Never answer.
    Stall,
}

/// A static page server.
pub struct PageServer {
    server: Server,
    hits: Arc<Mutex<Vec<String>>>,
}

impl PageServer {
    /// Serve `pages` (path → page); other paths are 404.
    pub async fn start(pages: Vec<(&str, Page)>) -> Self {
        let pages: Arc<Vec<(String, Page)>> =
            Arc::new(pages.into_iter().map(|(p, v)| (p.to_string(), v)).collect());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        let server = Server::start(move |request: Request<Incoming>| {
            let (pages, seen) = (pages.clone(), seen.clone());
            async move {
                let path = request.uri().path().to_string();
                lock(&seen).push(path.clone());
                match pages.iter().find(|(p, _)| *p == path).map(|(_, page)| page) {
                    Some(Page::Html(html)) => {
                        respond(200, "text/html; charset=utf-8", html.clone().into_bytes())
                    }
                    Some(Page::Typed { content_type, body }) => {
                        respond(200, content_type, body.clone())
                    }
                    Some(Page::Redirect(to)) => {
                        let mut response = respond(302, "text/plain", b"moved".to_vec());
                        if let Ok(to) = HeaderValue::from_str(to) {
                            response.headers_mut().insert(LOCATION, to);
                        }
                        response
                    }
                    Some(Page::Stall) => std::future::pending().await,
                    None => respond(404, "text/plain", b"not found".to_vec()),
                }
            }
        })
        .await;
        Self { server, hits }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    /// `127.0.0.1:PORT`, as an allowlist entry.
    pub fn host_port(&self) -> String {
        self.server.addr.to_string()
    }

    /// The paths requested so far.
    pub fn hits(&self) -> Vec<String> {
        lock(&self.hits).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections.load(Ordering::SeqCst)
    }
}

/// An HTTP/1 server on a loopback port, stopped (with all its connections) on drop.
struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start<F, Fut>(answer: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local address: {e}"));
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection (stalled ones too).
            let mut open = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                open.spawn(async move {
                    let service = service_fn(move |request| {
                        let answer = answer.clone();
                        async move { Ok::<_, Infallible>(answer(request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while open.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {});
    let mut response = Response::new(BodyExt::boxed(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    respond(status, "application/json", body.to_string().into_bytes())
}

/// A streamed response: `frames` are written with a short pause between them; `broken`
/// ends the body with an error, which makes hyper drop the connection mid-stream.
fn stream_response(content_type: &str, frames: Vec<Vec<u8>>, broken: bool) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(EVENT_BUFFER);
    tokio::spawn(async move {
        for frame in frames {
            if tx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                return;
            }
            tokio::time::sleep(EVENT_GAP).await;
        }
        if broken {
            let _ = tx
                .send(Err(std::io::Error::other("the fake drops the stream")))
                .await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// Which wire format a request speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Anthropic,
    OpenAi,
}

async fn model_answer(state: Arc<ModelState>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        headers,
        body: body.clone(),
    };
    lock(&state.requests).push(recorded.clone());
    let n = state.served.fetch_add(1, Ordering::SeqCst) + 1;

    let wire = match (&parts.method, recorded.path.as_str()) {
        (&Method::POST, "/v1/messages" | "/v1/messages/count_tokens") => Wire::Anthropic,
        (&Method::POST, "/v1/chat/completions") => Wire::OpenAi,
        _ => return not_found(&recorded),
    };
    let authorized = match wire {
        Wire::Anthropic => recorded.header("x-api-key").is_some_and(|k| !k.is_empty()),
        Wire::OpenAi => recorded
            .header("authorization")
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7),
    };
    if !authorized {
        return error_response(wire, 401, None);
    }
    if recorded.path == "/v1/messages/count_tokens" {
        return json_response(200, &json!({"input_tokens": bytes.len() as u64 / 4 + 1}));
    }
    let reply = lock(&state.replies)
        .pop_front()
        .unwrap_or_else(|| Reply::text(DEFAULT_TEXT));
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    let stream = body["stream"] == Value::Bool(true);
    let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
    let mut response = match &reply.kind {
        Kind::Unauthorized => error_response(wire, 401, None),
        Kind::RateLimited { retry_after_secs } => {
            error_response(wire, 429, Some(*retry_after_secs))
        }
        Kind::ServerError => error_response(wire, 500, None),
        Kind::Stall => std::future::pending().await,
        Kind::Redirect(to) => {
            let mut response = respond(307, "text/plain", b"moved".to_vec());
            if let Ok(to) = HeaderValue::from_str(to) {
                response.headers_mut().insert(LOCATION, to);
            }
            response
        }
        Kind::Garbage => stream_response(
            "text/event-stream",
            vec![
                b"\x00\xff\xfe this is not an event stream\r\n".to_vec(),
                b"<html><body>502 Bad Gateway</body></html>\n\xc3".to_vec(),
            ],
            false,
        ),
        Kind::Text(_) | Kind::Tools(_) | Kind::BrokenStream => {
            let answer = Answer {
                n,
                model,
                reply: &reply,
                include_usage,
            };
            match (wire, stream) {
                (Wire::Anthropic, true) => answer.anthropic_stream(),
                (Wire::Anthropic, false) => json_response(200, &answer.anthropic_message()),
                (Wire::OpenAi, true) => answer.openai_stream(),
                (Wire::OpenAi, false) => json_response(200, &answer.openai_completion()),
            }
        }
    };
    let (name, id) = match wire {
        Wire::Anthropic => ("request-id", format!("req_fake_{n}")),
        Wire::OpenAi => ("x-request-id", format!("req-fake-{n}")),
    };
    if let Ok(id) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(name, id);
    }
    response
}

fn not_found(recorded: &Recorded) -> Response<Body> {
    let message = format!("{} {} not found", recorded.method, recorded.path);
    if recorded.path.starts_with("/v1/chat") {
        json_response(
            404,
            &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "unknown_url"}}),
        )
    } else {
        json_response(
            404,
            &json!({"type": "error", "error": {"type": "not_found_error", "message": message}}),
        )
    }
}

/// The vendor's error response for `status`.
fn error_response(wire: Wire, status: u16, retry_after: Option<u64>) -> Response<Body> {
    let body = match (wire, status) {
        (Wire::Anthropic, 401) => {
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        }
        (Wire::Anthropic, 429) => {
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}})
        }
        (Wire::Anthropic, _) => {
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})
        }
        (Wire::OpenAi, 401) => {
            json!({"error": {"message": "Incorrect API key provided: sk-****. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        }
        (Wire::OpenAi, 429) => {
            json!({"error": {"message": "Rate limit reached for requests. Please try again later.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        }
        (Wire::OpenAi, _) => {
            json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}})
        }
    };
    let mut response = json_response(status, &body);
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

/// Split `text` into a few chunks on character boundaries, as a model streams it.
fn chunks_of(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(4).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// One scripted answer rendered in a wire format.
struct Answer<'a> {
    n: usize,
    model: String,
    reply: &'a Reply,
    include_usage: bool,
}

/// An Anthropic event: `event:` and `data:` lines and a blank line.
fn sse_event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// An OpenAI chunk: a `data:` line and a blank line.
fn sse_data(data: &str) -> Vec<u8> {
    format!("data: {data}\n\n").into_bytes()
}

impl Answer<'_> {
    fn anthropic_stream(&self) -> Response<Body> {
        let (n, reply) = (self.n, self.reply);
        let mut events = vec![sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": format!("msg_fake_{n}"), "type": "message", "role": "assistant",
                "content": [], "model": self.model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1}}}),
        )];
        let mut stop_reason = "end_turn";
        match &reply.kind {
            Kind::Text(text) => {
                events.extend(anthropic_text_block(0, &chunks_of(text)));
            }
            Kind::BrokenStream => {
                let mut block = anthropic_text_block(0, &chunks_of("This answer never ends"));
                block.truncate(3);
                events.extend(block);
                return stream_response("text/event-stream; charset=utf-8", events, true);
            }
            Kind::Tools(calls) => {
                stop_reason = "tool_use";
                for (index, (name, input)) in calls.iter().enumerate() {
                    events.push(sse_event(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index, "content_block": {
                            "type": "tool_use", "id": format!("toolu_fake_{n}_{index}"),
                            "name": name, "input": {}}}),
                    ));
                    for piece in chunks_of(&input.to_string()) {
                        events.push(sse_event(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": piece}}),
                        ));
                    }
                    events.push(sse_event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": index}),
                    ));
                }
            }
            _ => {}
        }
        events.push(sse_event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": reply.output_tokens}}),
        ));
        events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        stream_response("text/event-stream; charset=utf-8", events, false)
    }

    fn anthropic_message(&self) -> Value {
        let (content, stop_reason) = match &self.reply.kind {
            Kind::Tools(calls) => (
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, input))| {
                        json!({"type": "tool_use", "id": format!("toolu_fake_{}_{i}", self.n),
                            "name": name, "input": input})
                    })
                    .collect(),
                "tool_use",
            ),
            Kind::Text(text) => (vec![json!({"type": "text", "text": text})], "end_turn"),
            _ => (
                vec![json!({"type": "text", "text": "This answer"})],
                "max_tokens",
            ),
        };
        json!({"id": format!("msg_fake_{}", self.n), "type": "message", "role": "assistant",
            "model": self.model, "content": content, "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {"input_tokens": self.reply.input_tokens,
                "output_tokens": self.reply.output_tokens}})
    }

    fn openai_chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        json!({"id": format!("chatcmpl-fake-{}", self.n), "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null,
                "finish_reason": finish_reason}]})
        .to_string()
    }

    fn openai_stream(&self) -> Response<Body> {
        let mut events = Vec::new();
        let finish = match &self.reply.kind {
            Kind::Tools(calls) => {
                for (index, (name, input)) in calls.iter().enumerate() {
                    let mut delta = json!({"tool_calls": [{"index": index,
                        "id": format!("call_fake_{}_{index}", self.n), "type": "function",
                        "function": {"name": name, "arguments": ""}}]});
                    if index == 0 {
                        delta["role"] = json!("assistant");
                        delta["content"] = Value::Null;
                    }
                    events.push(sse_data(&self.openai_chunk(delta, None)));
                    for piece in chunks_of(&input.to_string()) {
                        let delta = json!({"tool_calls": [{"index": index,
                            "function": {"arguments": piece}}]});
                        events.push(sse_data(&self.openai_chunk(delta, None)));
                    }
                }
                "tool_calls"
            }
            Kind::Text(text) => {
                let first = json!({"role": "assistant", "content": ""});
                events.push(sse_data(&self.openai_chunk(first, None)));
                for piece in chunks_of(text) {
                    events.push(sse_data(
                        &self.openai_chunk(json!({"content": piece}), None),
                    ));
                }
                "stop"
            }
            _ => {
                let first = json!({"role": "assistant", "content": "This answer"});
                events.push(sse_data(&self.openai_chunk(first, None)));
                return stream_response("text/event-stream", events, true);
            }
        };
        events.push(sse_data(&self.openai_chunk(json!({}), Some(finish))));
        if self.include_usage {
            let usage = json!({"id": format!("chatcmpl-fake-{}", self.n),
                "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": self.model, "choices": [],
                "usage": {"prompt_tokens": self.reply.input_tokens,
                    "completion_tokens": self.reply.output_tokens,
                    "total_tokens": self.reply.input_tokens + self.reply.output_tokens}});
            events.push(sse_data(&usage.to_string()));
        }
        events.push(sse_data("[DONE]"));
        stream_response("text/event-stream", events, false)
    }

    fn openai_completion(&self) -> Value {
        let message = match &self.reply.kind {
            Kind::Tools(calls) => json!({"role": "assistant", "content": null,
                "tool_calls": calls.iter().enumerate().map(|(i, (name, input))| json!({
                    "id": format!("call_fake_{}_{i}", self.n), "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}))
                    .collect::<Vec<_>>()}),
            Kind::Text(text) => json!({"role": "assistant", "content": text}),
            _ => json!({"role": "assistant", "content": "This answer"}),
        };
        let finish = if matches!(self.reply.kind, Kind::Tools(_)) {
            "tool_calls"
        } else {
            "stop"
        };
        json!({"id": format!("chatcmpl-fake-{}", self.n), "object": "chat.completion",
            "created": 1_700_000_000, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null,
                "finish_reason": finish}],
            "usage": {"prompt_tokens": self.reply.input_tokens,
                "completion_tokens": self.reply.output_tokens,
                "total_tokens": self.reply.input_tokens + self.reply.output_tokens}})
    }
}

/// A text content block: start, one delta per chunk, stop.
fn anthropic_text_block(index: usize, chunks: &[String]) -> Vec<Vec<u8>> {
    let mut events = vec![sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
    )];
    events.push(sse_event("ping", &json!({"type": "ping"})));
    for chunk in chunks {
        events.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": chunk}}),
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    ));
    events
}
