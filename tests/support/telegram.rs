//! A fake Telegram Bot API server, as faithful to the public Bot API documentation as the
//! tests need. It listens on 127.0.0.1:0 and stops when dropped.
//!
//! - `POST /bot<token>/<method>`, method names matched case-insensitively (teloxide sends
//!   them PascalCase), with JSON or multipart bodies; a wrong token gets 401.
//! - `getUpdates` is a real long poll: queued updates at once, otherwise held open up to its
//!   `timeout`; an `offset` confirms and forgets every earlier update.
//! - `sendMessage`, `editMessageText`, `sendMessageDraft` check `parse_mode=HTML` as Telegram
//!   does (known tags, balanced, `<` and `&` escaped; else "can't parse entities"), the
//!   4096-unit limit on the visible text, and answer an unchanged edit with "message is not
//!   modified". Every message, edit, draft, chat action and document is recorded with its
//!   chat and thread.
//! - `getFile` and `GET /file/bot<token>/<path>` serve files registered by the test.
//! - Any method can be made to fail on demand: 429 with `parameters.retry_after`, or any
//!   error code and description.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The bot token the fake accepts.
pub const TOKEN: &str = "123456:TEST-token_for-the-fake";

/// The bot's user id and username.
pub const BOT_ID: i64 = 4_242_000;
pub const BOT_USERNAME: &str = "ClawBot";

/// Telegram's message limit, in UTF-16 units of the visible text.
const MAX_LEN: usize = 4096;

/// The tags Telegram's HTML parse mode knows.
const TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
];

/// A failure to serve instead of the next call of a method.
#[derive(Clone, Debug)]
pub enum Failure {
    /// 429 Too Many Requests with `parameters.retry_after`.
    RetryAfter(u32),
    /// Any error code and description.
    Error(u16, String),
}

/// A message the bot sent, as the chat shows it now.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub chat: i64,
    pub thread: Option<i64>,
    pub id: i64,
    /// What the user sees: tags dropped, entities decoded.
    pub text: String,
    /// The text as sent (HTML when `parse_mode` is HTML).
    pub raw: String,
    pub parse_mode: Option<String>,
    pub reply_to: Option<i64>,
    /// How many times it was edited.
    pub edits: usize,
}

/// A draft shown in a private chat.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    pub chat: i64,
    pub draft_id: i64,
    pub text: String,
}

/// A document the bot sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub chat: i64,
    pub thread: Option<i64>,
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    /// Updates not yet confirmed by an offset.
    updates: VecDeque<Value>,
    next_update: i64,
    /// The highest offset any getUpdates asked for.
    offset: i64,
    next_message: i64,
    sent: Vec<Sent>,
    drafts: Vec<Draft>,
    /// (chat, thread, action).
    actions: Vec<(i64, Option<i64>, String)>,
    documents: Vec<Document>,
    /// Every call: lower-case method and its parameters.
    calls: Vec<(String, Value)>,
    /// Failures to serve, per lower-case method.
    failures: HashMap<String, VecDeque<Failure>>,
    /// Failures served so far, per lower-case method.
    failed: HashMap<String, usize>,
    /// file_id → (file_path, contents).
    files: HashMap<String, (String, Vec<u8>)>,
}

struct State {
    inner: Mutex<Inner>,
    /// Bumped whenever an update is queued, to wake held getUpdates calls.
    queued: watch::Sender<u64>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running fake.
pub struct FakeTelegram {
    url: String,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        // Aborting the accept loop drops the JoinSet of connections, aborting them too.
        self.server.abort();
    }
}

impl FakeTelegram {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                next_update: 1,
                next_message: 1000,
                ..Inner::default()
            }),
            queued: watch::channel(0).0,
        });
        let shared = state.clone();
        let server = tokio::spawn(async move {
            let mut open = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                open.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(&state, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
            server,
        }
    }

    /// The server's base URL, for `TELEGRAM_API_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues an update (given without its `update_id`); returns its id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut inner = self.state.lock();
            let id = inner.next_update;
            inner.next_update += 1;
            if let Some(object) = update.as_object_mut() {
                object.insert("update_id".into(), json!(id));
            }
            inner.updates.push_back(update);
            id
        };
        self.state.queued.send_modify(|n| *n += 1);
        id
    }

    /// Queues an update whose JSON is given whole (for malformed ones); returns its id.
    pub fn push_raw_update(&self, make: impl FnOnce(i64) -> Value) -> i64 {
        let id = {
            let mut inner = self.state.lock();
            let id = inner.next_update;
            inner.next_update += 1;
            inner.updates.push_back(make(id));
            id
        };
        self.state.queued.send_modify(|n| *n += 1);
        id
    }

    /// A new message id, unique across chats.
    pub fn next_message_id(&self) -> i64 {
        let mut inner = self.state.lock();
        inner.next_message += 1;
        inner.next_message
    }

    /// A user's text message in a chat (positive chat: private; negative: a forum
    /// supergroup), as a `message` object; see [`FakeTelegram::send`].
    pub fn message(&self, chat: i64, user: i64, text: &str) -> Value {
        json!({
            "message_id": self.next_message_id(),
            "date": 1_700_000_000,
            "chat": chat_json(chat),
            "from": {"id": user, "is_bot": false, "first_name": format!("User{user}")},
            "text": text,
        })
    }

    /// Queues a message as an update; returns (update id, message id).
    pub fn send(&self, message: Value) -> (i64, i64) {
        let id = message["message_id"].as_i64().unwrap_or_default();
        (self.push_update(json!({ "message": message })), id)
    }

    /// A user's private message; returns (update id, message id).
    pub fn dm(&self, user: i64, text: &str) -> (i64, i64) {
        self.send(self.message(user, user, text))
    }

    /// Makes the next calls of `method` fail, in order.
    pub fn fail(&self, method: &str, failures: impl IntoIterator<Item = Failure>) {
        self.state
            .lock()
            .failures
            .entry(method.to_ascii_lowercase())
            .or_default()
            .extend(failures);
    }

    /// How many injected failures of `method` were served.
    pub fn failed(&self, method: &str) -> usize {
        let inner = self.state.lock();
        inner
            .failed
            .get(&method.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Registers a file for getFile and the download endpoint.
    pub fn add_file(&self, file_id: &str, path: &str, data: &[u8]) {
        self.state
            .lock()
            .files
            .insert(file_id.into(), (path.into(), data.to_vec()));
    }

    /// The bot's messages in a chat, in the order sent.
    pub fn messages(&self, chat: i64) -> Vec<Sent> {
        let inner = self.state.lock();
        inner
            .sent
            .iter()
            .filter(|m| m.chat == chat)
            .cloned()
            .collect()
    }

    /// The drafts shown in a chat.
    pub fn drafts(&self, chat: i64) -> Vec<Draft> {
        let inner = self.state.lock();
        inner
            .drafts
            .iter()
            .filter(|d| d.chat == chat)
            .cloned()
            .collect()
    }

    /// The chat actions sent to a chat: (thread, action).
    pub fn actions(&self, chat: i64) -> Vec<(Option<i64>, String)> {
        let inner = self.state.lock();
        inner
            .actions
            .iter()
            .filter(|a| a.0 == chat)
            .map(|a| (a.1, a.2.clone()))
            .collect()
    }

    /// The documents sent to a chat.
    pub fn documents(&self, chat: i64) -> Vec<Document> {
        let inner = self.state.lock();
        inner
            .documents
            .iter()
            .filter(|d| d.chat == chat)
            .cloned()
            .collect()
    }

    /// The parameters of every call of `method`, failed ones included.
    pub fn calls(&self, method: &str) -> Vec<Value> {
        let method = method.to_ascii_lowercase();
        let inner = self.state.lock();
        inner
            .calls
            .iter()
            .filter(|(m, _)| *m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Whether every update up to `update_id` was confirmed by a later offset.
    pub fn confirmed(&self, update_id: i64) -> bool {
        self.state.lock().offset > update_id
    }
}

/// A chat object: positive ids are private chats, negative ones forum supergroups.
pub fn chat_json(chat: i64) -> Value {
    if chat > 0 {
        json!({"id": chat, "type": "private", "first_name": format!("User{chat}")})
    } else {
        json!({"id": chat, "type": "supergroup", "title": "Group", "is_forum": true})
    }
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Claw", "username": BOT_USERNAME})
}

fn ok(result: Value) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, json!({"ok": true, "result": result}))
}

fn error(code: u16, description: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    reply(
        status,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

async fn serve(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/file/bot") {
        return download(state, rest);
    }
    let Some((token, method)) = path
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error(404, "Not Found");
    };
    if token != TOKEN {
        return error(401, "Unauthorized");
    }
    let method = method.to_ascii_lowercase();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(400, "Bad Request: unreadable body"),
    };
    let (params, files) = if let Some(boundary) = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split("boundary=").nth(1))
    {
        multipart(&body, boundary.trim_matches('"'))
    } else if body.is_empty() {
        (json!({}), Vec::new())
    } else {
        match serde_json::from_slice(&body) {
            Ok(params) => (params, Vec::new()),
            Err(_) => return error(400, "Bad Request: invalid JSON"),
        }
    };
    let failure = {
        let mut inner = state.lock();
        inner.calls.push((method.clone(), params.clone()));
        let failure = inner
            .failures
            .get_mut(&method)
            .and_then(VecDeque::pop_front);
        if failure.is_some() {
            *inner.failed.entry(method.clone()).or_default() += 1;
        }
        failure
    };
    match failure {
        Some(Failure::RetryAfter(secs)) => {
            return reply(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {secs}"),
                    "parameters": {"retry_after": secs}}),
            )
        }
        Some(Failure::Error(code, description)) => return error(code, &description),
        None => {}
    }
    match method.as_str() {
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Claw", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "setmycommands" | "deletewebhook" | "setwebhook" => ok(json!(true)),
        "getupdates" => get_updates(state, &params).await,
        "sendmessage" => send_message(state, &params),
        "editmessagetext" => edit_message(state, &params),
        "sendmessagedraft" => send_draft(state, &params),
        "sendchataction" => {
            let (chat, thread) = (
                int(&params, "chat_id"),
                opt_int(&params, "message_thread_id"),
            );
            let action = params["action"].as_str().unwrap_or_default().to_string();
            state.lock().actions.push((chat, thread, action));
            ok(json!(true))
        }
        "senddocument" => send_document(state, &params, files),
        "getfile" => {
            let id = params["file_id"].as_str().unwrap_or_default();
            match state.lock().files.get(id) {
                Some((path, data)) => ok(json!({
                    "file_id": id, "file_unique_id": format!("u-{id}"),
                    "file_size": data.len(), "file_path": path,
                })),
                None => error(400, "Bad Request: invalid file_id"),
            }
        }
        _ => error(404, "Not Found"),
    }
}

async fn get_updates(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let offset = opt_int(params, "offset").unwrap_or(0);
    let timeout = Duration::from_secs(opt_int(params, "timeout").unwrap_or(0).max(0) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut queued = state.queued.subscribe();
    loop {
        {
            let mut inner = state.lock();
            inner.offset = inner.offset.max(offset);
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().is_none_or(|id| id >= offset));
            if !inner.updates.is_empty() {
                let batch: Vec<Value> = inner.updates.iter().take(100).cloned().collect();
                return ok(Value::Array(batch));
            }
        }
        tokio::select! {
            changed = queued.changed() => if changed.is_err() { return ok(json!([])) },
            _ = tokio::time::sleep_until(deadline) => return ok(json!([])),
        }
    }
}

/// Checks a text as Telegram would for its parse mode; returns (raw, visible, mode), or the
/// description of a 400 Bad Request.
fn check_text(params: &Value) -> Result<(String, String, Option<String>), String> {
    let raw = params["text"].as_str().unwrap_or_default().to_string();
    let mode = params["parse_mode"].as_str().map(str::to_string);
    let visible = match mode.as_deref() {
        Some("HTML") => {
            visible_html(&raw).map_err(|why| format!("Bad Request: can't parse entities: {why}"))?
        }
        Some(other) => return Err(format!("Bad Request: unsupported parse_mode {other}")),
        None => raw.clone(),
    };
    if visible.trim().is_empty() {
        return Err("Bad Request: message text is empty".into());
    }
    if visible.encode_utf16().count() > MAX_LEN {
        return Err("Bad Request: message is too long".into());
    }
    Ok((raw, visible, mode))
}

fn send_message(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let (raw, text, parse_mode) = match check_text(params) {
        Ok(checked) => checked,
        Err(description) => return error(400, &description),
    };
    let chat = int(params, "chat_id");
    let thread = opt_int(params, "message_thread_id");
    let reply_to = params["reply_parameters"]["message_id"].as_i64();
    let mut inner = state.lock();
    inner.next_message += 1;
    let sent = Sent {
        chat,
        thread,
        id: inner.next_message,
        text,
        raw,
        parse_mode,
        reply_to,
        edits: 0,
    };
    inner.sent.push(sent.clone());
    ok(message_json(&sent))
}

fn edit_message(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let (raw, text, parse_mode) = match check_text(params) {
        Ok(checked) => checked,
        Err(description) => return error(400, &description),
    };
    let (chat, id) = (int(params, "chat_id"), int(params, "message_id"));
    let mut inner = state.lock();
    let Some(sent) = inner.sent.iter_mut().find(|m| m.chat == chat && m.id == id) else {
        return error(400, "Bad Request: message to edit not found");
    };
    if sent.raw == raw && sent.parse_mode == parse_mode {
        return error(
            400,
            "Bad Request: message is not modified: specified new message content and reply \
             markup are exactly the same as a current content and reply markup of the message",
        );
    }
    sent.raw = raw;
    sent.text = text;
    sent.parse_mode = parse_mode;
    sent.edits += 1;
    ok(message_json(sent))
}

fn send_draft(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let (_, text, _) = match check_text(params) {
        Ok(checked) => checked,
        Err(description) => return error(400, &description),
    };
    let chat = int(params, "chat_id");
    let draft_id = int(params, "draft_id");
    if chat <= 0 {
        return error(400, "Bad Request: drafts are for private chats");
    }
    if draft_id == 0 {
        return error(400, "Bad Request: draft_id must be non-zero");
    }
    state.lock().drafts.push(Draft {
        chat,
        draft_id,
        text,
    });
    ok(json!(true))
}

fn send_document(
    state: &State,
    params: &Value,
    files: Vec<(String, String, Vec<u8>)>,
) -> Response<Full<Bytes>> {
    // The file is in the part named `document`, or in the part that `attach://<name>` names.
    let part = params["document"]
        .as_str()
        .and_then(|v| v.strip_prefix("attach://"))
        .unwrap_or("document")
        .to_string();
    let Some((_, name, data)) = files.into_iter().find(|(field, _, _)| *field == part) else {
        return error(400, "Bad Request: there is no document in the request");
    };
    let chat = int(params, "chat_id");
    let thread = opt_int(params, "message_thread_id");
    let mut inner = state.lock();
    inner.next_message += 1;
    let id = inner.next_message;
    inner.documents.push(Document {
        chat,
        thread,
        name: name.clone(),
        data: data.clone(),
    });
    ok(json!({
        "message_id": id, "date": 1_700_000_000, "chat": chat_json(chat), "from": bot_user(),
        "document": {"file_id": format!("doc-{id}"), "file_unique_id": format!("udoc-{id}"),
            "file_name": name, "file_size": data.len()},
    }))
}

fn download(state: &State, rest: &str) -> Response<Full<Bytes>> {
    let Some((token, path)) = rest.split_once('/') else {
        return error(404, "Not Found");
    };
    if token != TOKEN {
        return error(401, "Unauthorized");
    }
    // Clients percent-encode the file path as one URL segment (`photos%2Ffile_1.jpg`).
    let path = percent_decode(path);
    let inner = state.lock();
    match inner.files.values().find(|(p, _)| *p == path) {
        Some((_, data)) => {
            let mut response = Response::new(Full::new(Bytes::from(data.clone())));
            *response.status_mut() = StatusCode::OK;
            response
        }
        None => error(404, "Not Found"),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn message_json(sent: &Sent) -> Value {
    let mut message = json!({
        "message_id": sent.id, "date": 1_700_000_000, "chat": chat_json(sent.chat),
        "from": bot_user(), "text": sent.text,
    });
    if let (Some(thread), Some(object)) = (sent.thread, message.as_object_mut()) {
        object.insert("message_thread_id".into(), json!(thread));
        object.insert("is_topic_message".into(), json!(true));
    }
    message
}

/// An integer parameter, sent as a JSON number or (multipart) as text.
fn opt_int(params: &Value, key: &str) -> Option<i64> {
    match &params[key] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim_matches('"').parse().ok(),
        _ => None,
    }
}

fn int(params: &Value, key: &str) -> i64 {
    opt_int(params, key).unwrap_or_default()
}

/// Parses a multipart/form-data body: text fields as parameters, files as
/// (field, file name, contents).
fn multipart(body: &[u8], boundary: &str) -> (Value, Vec<(String, String, Vec<u8>)>) {
    let delimiter = format!("--{boundary}");
    let mut params = Map::new();
    let mut files = Vec::new();
    for part in split_bytes(body, delimiter.as_bytes()) {
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        if part.starts_with(b"--") || part.is_empty() {
            continue;
        }
        let Some(split) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]).to_string();
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or_default();
        let attr = |name: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('"').to_string())
        };
        let Some(field) = attr("name") else { continue };
        match attr("filename") {
            Some(file_name) => files.push((field, file_name, content.to_vec())),
            None => {
                params.insert(
                    field,
                    Value::String(String::from_utf8_lossy(content).into()),
                );
            }
        }
    }
    (Value::Object(params), files)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(body, delimiter) {
        parts.push(&body[..at]);
        body = &body[at + delimiter.len()..];
    }
    parts.push(body);
    parts
}

/// What Telegram shows of an HTML text, or why it cannot parse it.
pub fn visible_html(html: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                let end = rest.find('>').ok_or("unclosed start tag")?;
                let tag = &rest[1..end];
                if let Some(name) = tag.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    if open.pop().as_deref() != Some(name.as_str()) {
                        return Err(format!("unmatched end tag {name}"));
                    }
                } else {
                    let name = tag
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if !TAGS.contains(&name.as_str()) {
                        return Err(format!("unsupported start tag \"{name}\""));
                    }
                    open.push(name);
                }
                rest = &rest[end + 1..];
            }
            '&' => {
                let end = rest.find(';').ok_or("unescaped &")?;
                let entity = &rest[1..end];
                let decoded = match entity {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    _ => entity
                        .strip_prefix('#')
                        .and_then(|n| n.parse::<u32>().ok())
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("unknown entity &{entity};"))?,
                };
                out.push(decoded);
                rest = &rest[end + 1..];
            }
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    match open.pop() {
        Some(tag) => Err(format!(
            "can't find end tag corresponding to start tag \"{tag}\""
        )),
        None => Ok(out),
    }
}
