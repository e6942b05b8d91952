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
//! - `getFile` and `GET /file/bot<token>/<path>` serve files registered by the test, with
//!   or without `file_size`.
//! - `setWebhook` and `deleteWebhook` keep the bot's webhook; while one is set (here, or by
//!   "another deployment"), `getUpdates` is refused with 409 Conflict.
//! - A test can delete one of the bot's messages (edits of it are then refused as "message
//!   to edit not found"); every call the fake refuses as Telegram would is recorded.
//! - Any method can be made to fail on demand: 429 with `parameters.retry_after`, or any
//!   error code and description.
//!
//! The HTTP side (connections, routing, bodies, injected failures) is in `server`, what each
//! method does in `api`, and the check of Telegram's HTML in `html`.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod api;
pub mod bridge;
mod html;
mod server;

pub use api::chat_json;
#[allow(
    unused_imports,
    reason = "the fake's own HTML check, offered to tests; none calls it directly yet"
)]
pub use html::visible_html;

/// The bot token the fake accepts.
pub const TOKEN: &str = "123456:TEST-token_for-the-fake";

/// The bot's user id and username.
pub const BOT_ID: i64 = 4_242_000;
pub const BOT_USERNAME: &str = "ClawBot";

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
    /// Formatting Telegram would not show: entities past the 100th, code inside a link.
    pub ignored_entities: usize,
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
    /// file_id → (file_path, contents, whether getFile gives its size).
    files: HashMap<String, (String, Vec<u8>, bool)>,
    /// Groups upgraded to supergroups: old id → new id. Writes to an old id are refused
    /// with `parameters.migrate_to_chat_id`.
    migrated: HashMap<i64, i64>,
    /// The webhook URL set for the bot, if any: getUpdates is then refused with 409.
    webhook: Option<String>,
    /// Every call the fake itself refused (not injected failures): (method, description).
    refused: Vec<(String, String)>,
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
        let server = server::spawn(listener, state.clone());
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
            .insert(file_id.into(), (path.into(), data.to_vec(), true));
    }

    /// Registers a file whose getFile answer has no `file_size` (optional in the Bot API).
    pub fn add_unsized_file(&self, file_id: &str, path: &str, data: &[u8]) {
        self.state
            .lock()
            .files
            .insert(file_id.into(), (path.into(), data.to_vec(), false));
    }

    /// A user deletes one of the bot's messages: later edits of it are refused with
    /// "message to edit not found", as Telegram does.
    pub fn delete_message(&self, chat: i64, id: i64) {
        self.state
            .lock()
            .sent
            .retain(|m| (m.chat, m.id) != (chat, id));
    }

    /// Upgrades group `old` to supergroup `new`, as Telegram does: a service message to each
    /// (`migrate_to_chat_id` in the old, `migrate_from_chat_id` in the new), and every later
    /// write to the old id is refused with 400 and `parameters.migrate_to_chat_id`.
    pub fn migrate(&self, old: i64, new: i64) {
        self.state.lock().migrated.insert(old, new);
        let service = |chat: i64, field: &str, id: i64| {
            json!({"message_id": self.next_message_id(), "date": 1_700_000_000,
                "chat": chat_json(chat), "from": {"id": 7, "is_bot": false, "first_name": "Admin"},
                field: id})
        };
        self.send(service(old, "migrate_to_chat_id", new));
        self.send(service(new, "migrate_from_chat_id", old));
    }

    /// Another deployment of the bot sets (`Some`) or removes its webhook: while one is
    /// set, getUpdates is refused with 409 Conflict, as Telegram does.
    pub fn set_webhook_elsewhere(&self, url: Option<&str>) {
        self.state.lock().webhook = url.map(str::to_string);
    }

    /// The calls the fake refused as Telegram would (bad HTML, empty text, unknown
    /// message …), as (lower-case method, description); injected failures are not in it.
    pub fn refused(&self) -> Vec<(String, String)> {
        self.state.lock().refused.clone()
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
