//! A fake Discord, as faithful to the public API documentation as the tests need: the REST
//! API under `/api/v10` (reached through `DISCORD_API_URL`, answering with complete objects,
//! since serenity reads them whole) and a gateway on plain `ws://` with JSON text frames.
//! Both listen on 127.0.0.1:0 and stop when dropped.
//!
//! - REST: `GET /gateway/bot`, `/users/@me`, `/applications/@me`, `/channels/{id}`;
//!   `POST /channels/{id}/messages` (JSON or multipart with `payload_json`; the 2,000
//!   character limit; `nonce` with `enforce_nonce` answered with the earlier message, as
//!   Discord does), `PATCH …/messages/{id}` (404 10008 for a message that is gone),
//!   `POST …/typing`, `POST …/messages/{id}/threads` (which also dispatches THREAD_CREATE),
//!   interaction callbacks (refused after Discord's 3 s deadline, as Discord does), the
//!   original response's edit, `PUT /applications/{id}/commands`, and `GET /files/{name}`
//!   for attachments. A wrong token gets 401.
//! - Gateway: HELLO, IDENTIFY → READY, RESUME → the missed dispatches and RESUMED (or op 9
//!   for an unknown session), heartbeats ACKed. Every dispatch of a session is kept, so a
//!   resume replays from the client's sequence number (with `replay_overlap`, from before
//!   it: the client sees a message twice).
//! - Misbehaving on demand: any route fails next with a 429 (`retry_after` in the body, or
//!   only the `Retry-After`/`X-RateLimit-*` headers, optionally global), any status, or a
//!   5xx after the message was made; the gateway closes with any code (4014 when the
//!   message-content intent is refused), and sends raw frames (malformed dispatches,
//!   unknown event types).
//!
//! The HTTP side is in `rest`, the websocket side in `gateway`; `bridge.rs` beside them (a
//! module of the test binary, not of the fake, which the benchmark uses too) runs the real
//! adapter against it.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod gateway;
mod rest;

/// The bot token the fake accepts.
pub const TOKEN: &str = "MTIz.fake-discord.token_for-tests";
/// The bot's user id, username, and application id.
pub const BOT_ID: &str = "900000000000000001";
pub const BOT_NAME: &str = "claw";
pub const APP_ID: &str = "900000000000000002";
/// The guild every guild channel of the fake belongs to.
pub const GUILD: &str = "700000000000000001";

/// A failure to serve instead of the next call of a route.
#[derive(Clone, Debug)]
pub enum Failure {
    /// 429 with `retry_after` (seconds) in the JSON body and the headers.
    RateLimited { retry_after: f64, global: bool },
    /// 429 whose only hint is the `Retry-After` header (a proxy's answer, say).
    RateLimitedHeadersOnly { retry_after_secs: u32 },
    /// Any status and message.
    Status(u16, String),
    /// The call takes effect, then the answer is a 502: a response lost on the way.
    AppliedThen502,
}

/// A message the bot sent, as the channel shows it now.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub channel: String,
    pub id: String,
    pub content: String,
    pub nonce: Option<String>,
    pub reply_to: Option<String>,
    /// `allowed_mentions` of the send and of every edit.
    pub allowed_mentions: Vec<Value>,
    pub edits: usize,
    /// Files attached: (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Sent {
    /// Whether this message would ping @everyone/@here (Discord's rule: the text says so
    /// and `allowed_mentions` does not forbid it).
    pub fn pings_everyone(&self) -> bool {
        let says = self.content.contains("@everyone") || self.content.contains("@here");
        let allowed = self.allowed_mentions.iter().any(|a| {
            a.is_null()
                || a["parse"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == "everyone"))
        });
        says && (self.allowed_mentions.is_empty() || allowed)
    }
}

/// A slash command's acknowledgement and answer.
#[derive(Clone, Debug, Default)]
pub struct Answered {
    /// The callback's type (5: deferred), if acknowledged in time.
    pub acked: Option<u64>,
    /// The original response's content, once edited.
    pub content: Option<String>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sent: Vec<Sent>,
    /// (channel, when) of every typing call.
    typing: Vec<String>,
    /// Channel id → (type, parent): threads and guild channels the fake knows.
    channels: HashMap<String, (u8, Option<String>)>,
    /// Threads the bot opened: (parent, thread id, name).
    threads: Vec<(String, String, String)>,
    /// Interaction id → (token, when dispatched, what became of it).
    interactions: HashMap<String, (String, Instant, Answered)>,
    /// Registered slash commands.
    commands: Vec<Value>,
    /// Every call: (method, normalized path, body).
    calls: Vec<(String, String, Value)>,
    /// Failures to serve, per "METHOD /normalized/path".
    failures: HashMap<String, VecDeque<Failure>>,
    /// Attachments served at `/files/{name}`.
    files: HashMap<String, Vec<u8>>,
    /// Application flags (`GET /applications/@me`): message content intent bits.
    app_flags: u64,
    /// The gateway: the session, its dispatches as (seq, frame), and what to do.
    session: Option<String>,
    log: Vec<(u64, String)>,
    /// Raw frames to send once, outside any sequence.
    raw: VecDeque<String>,
    /// Close the live connection with this code.
    kick: Option<u16>,
    /// Close every IDENTIFY with this code (4014: intents refused).
    refuse_identify: Option<u16>,
    /// How many dispatches before the client's sequence a resume replays.
    replay_overlap: u64,
    identifies: usize,
    resumes: usize,
    heartbeats: usize,
    /// The intents of the last IDENTIFY.
    intents: Option<u64>,
}

pub(crate) struct State {
    inner: Mutex<Inner>,
    /// Bumped on every change the gateway connection must act on.
    bump: watch::Sender<u64>,
    /// The number of messages the bot created, bumped by each (the benchmark waits on it).
    created: watch::Sender<usize>,
    rest_url: String,
    /// Where the gateway is said to be (`GET /gateway/bot`, READY's resume URL).
    ws_url: Mutex<String>,
    rest_addr: std::net::SocketAddr,
    ws_addr: std::net::SocketAddr,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ws_url(&self) -> String {
        self.ws_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn wake(&self) {
        self.bump.send_modify(|n| *n += 1);
    }

    /// A fresh snowflake.
    fn id(&self) -> String {
        let mut inner = self.lock();
        inner.next_id += 1;
        (800_000_000_000_000_000 + inner.next_id).to_string()
    }

    /// Adds a dispatch to the session's log (sent at once to a live connection).
    fn dispatch(&self, name: &str, data: Value) -> u64 {
        let seq = {
            let mut inner = self.lock();
            let seq = inner.log.last().map_or(0, |(s, _)| *s) + 1;
            let frame = json!({"op": 0, "s": seq, "t": name, "d": data}).to_string();
            inner.log.push((seq, frame));
            seq
        };
        self.wake();
        seq
    }
}

/// The bot's user object.
pub fn bot_user() -> Value {
    json!({"id": BOT_ID, "username": BOT_NAME, "discriminator": "0", "global_name": null,
        "avatar": null, "bot": true})
}

/// A user object.
pub fn user(id: &str) -> Value {
    json!({"id": id, "username": format!("user{id}"), "discriminator": "0",
        "global_name": format!("User {id}"), "avatar": null})
}

/// The fake.
pub struct FakeDiscord {
    state: Arc<State>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

impl FakeDiscord {
    /// Starts the REST and gateway servers on free loopback ports.
    pub async fn start() -> Self {
        let bind = || async {
            TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("bind: {e}"))
        };
        let (http, ws) = (bind().await, bind().await);
        let addr = |l: &TcpListener| {
            l.local_addr()
                .unwrap_or_else(|e| panic!("local address: {e}"))
        };
        let (rest_addr, ws_addr) = (addr(&http), addr(&ws));
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                app_flags: 1 << 19,
                ..Inner::default()
            }),
            bump: watch::channel(0).0,
            created: watch::channel(0).0,
            rest_url: format!("http://{rest_addr}"),
            ws_url: Mutex::new(format!("ws://{ws_addr}")),
            rest_addr,
            ws_addr,
        });
        let servers = vec![
            rest::spawn(http, state.clone()),
            gateway::spawn(ws, state.clone()),
        ];
        Self { state, servers }
    }

    /// Where the REST and gateway servers listen (for a front put before them).
    pub fn addrs(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        (self.state.rest_addr, self.state.ws_addr)
    }

    /// Names another gateway URL from now on (a front that forwards to [`Self::addrs`]).
    pub fn set_gateway_url(&self, url: &str) {
        *self
            .state
            .ws_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = url.to_string();
    }

    /// The base URL, for `DISCORD_API_URL`.
    pub fn url(&self) -> &str {
        &self.state.rest_url
    }

    /// A fresh snowflake (for channels, users, messages of the test).
    pub fn id(&self) -> String {
        self.state.id()
    }

    /// A user's message in `channel` (a guild channel when `guild`), as MESSAGE_CREATE's
    /// payload; see [`FakeDiscord::post`].
    pub fn message(&self, channel: &str, guild: bool, author: &str, content: &str) -> Value {
        let mut message = json!({"id": self.id(), "channel_id": channel, "author": user(author),
            "content": content, "timestamp": "2026-01-01T00:00:00.000000+00:00",
            "edited_timestamp": null, "tts": false, "mention_everyone": false, "mentions": [],
            "mention_roles": [], "attachments": [], "embeds": [], "pinned": false, "type": 0,
            "flags": 0});
        if guild {
            message["guild_id"] = json!(GUILD);
            message["member"] = json!({"roles": [], "joined_at": "2025-01-01T00:00:00+00:00",
                "deaf": false, "mute": false, "flags": 0});
            self.state
                .lock()
                .channels
                .entry(channel.to_string())
                .or_insert((0, None));
        }
        message
    }

    /// Dispatches MESSAGE_CREATE; returns the message id.
    pub fn post(&self, message: Value) -> String {
        let id = message["id"].as_str().unwrap_or_default().to_string();
        self.state.dispatch("MESSAGE_CREATE", message);
        id
    }

    /// A DM from `author` in DM channel `channel`; returns the message id.
    pub fn dm(&self, channel: &str, author: &str, text: &str) -> String {
        self.post(self.message(channel, false, author, text))
    }

    /// A guild message mentioning the bot; returns the message id.
    pub fn mention(&self, channel: &str, author: &str, text: &str) -> String {
        let mut message = self.message(channel, true, author, &format!("<@{BOT_ID}> {text}"));
        message["mentions"] = json!([bot_user()]);
        self.post(message)
    }

    /// A guild message not for the bot; returns the message id.
    pub fn chatter(&self, channel: &str, author: &str, text: &str) -> String {
        self.post(self.message(channel, true, author, text))
    }

    /// A thread in `parent` opened by someone, announced with THREAD_CREATE; returns its id.
    pub fn open_thread(&self, parent: &str) -> String {
        let id = self.id();
        self.state
            .lock()
            .channels
            .insert(id.clone(), (11, Some(parent.to_string())));
        self.state.dispatch(
            "THREAD_CREATE",
            json!({"id": id, "type": 11, "guild_id": GUILD, "parent_id": parent,
                "owner_id": "1", "name": "a thread", "newly_created": true}),
        );
        id
    }

    /// A slash command from `author` in `channel`; returns the interaction id.
    pub fn slash(
        &self,
        channel: &str,
        guild: bool,
        author: &str,
        name: &str,
        prompt: Option<&str>,
    ) -> String {
        let id = self.id();
        let token = format!("itoken-{id}");
        let options: Vec<Value> = prompt
            .map(|p| json!({"name": "prompt", "type": 3, "value": p}))
            .into_iter()
            .collect();
        let mut interaction = json!({"id": id, "application_id": APP_ID, "type": 2,
            "token": token, "version": 1, "channel_id": channel,
            "channel": {"id": channel, "type": if guild { 0 } else { 1 }},
            "data": {"id": "1", "name": name, "type": 1, "options": options},
            "app_permissions": "0", "locale": "en-US"});
        if guild {
            interaction["guild_id"] = json!(GUILD);
            interaction["member"] = json!({"user": user(author), "roles": [],
                "joined_at": "2025-01-01T00:00:00+00:00", "deaf": false, "mute": false});
        } else {
            interaction["user"] = user(author);
        }
        self.state
            .lock()
            .interactions
            .insert(id.clone(), (token, Instant::now(), Answered::default()));
        self.state.dispatch("INTERACTION_CREATE", interaction);
        id
    }

    /// Sends a raw text frame on the live gateway connection (malformed on purpose).
    pub fn raw_frame(&self, text: &str) {
        self.state.lock().raw.push_back(text.to_string());
        self.state.wake();
    }

    /// Dispatches any event, in sequence (an unknown type, a malformed payload).
    pub fn raw_dispatch(&self, name: &str, data: Value) -> u64 {
        self.state.dispatch(name, data)
    }

    /// Closes the live gateway connection with `code` (the client should resume).
    pub fn disconnect(&self, code: u16) {
        self.state.lock().kick = Some(code);
        self.state.wake();
    }

    /// Closes every IDENTIFY with `code` (4014: the message-content intent is refused).
    pub fn refuse_identify(&self, code: Option<u16>) {
        self.state.lock().refuse_identify = code;
        self.state.wake();
    }

    /// A resume replays this many dispatches the client had already seen.
    pub fn replay_overlap(&self, overlap: u64) {
        self.state.lock().replay_overlap = overlap;
    }

    /// Makes the next calls of a route fail, in order. `route` is "METHOD /path" with ids
    /// as `{}`: `POST /channels/{}/messages`, `PATCH /channels/{}/messages/{}`.
    pub fn fail(&self, route: &str, failures: impl IntoIterator<Item = Failure>) {
        self.state
            .lock()
            .failures
            .entry(route.to_string())
            .or_default()
            .extend(failures);
    }

    /// The application's flags (`1 << 19`: message content intent on; 0: off).
    pub fn set_app_flags(&self, flags: u64) {
        self.state.lock().app_flags = flags;
    }

    /// Serves `data` as an attachment; returns its URL.
    pub fn add_file(&self, name: &str, data: &[u8]) -> String {
        self.state.lock().files.insert(name.into(), data.to_vec());
        format!("{}/files/{name}", self.state.rest_url)
    }

    /// The bot's messages in a channel, in the order sent.
    pub fn messages(&self, channel: &str) -> Vec<Sent> {
        let inner = self.state.lock();
        inner
            .sent
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Bumped each time the bot creates a message (its value: how many so far).
    pub fn created(&self) -> watch::Receiver<usize> {
        self.state.created.subscribe()
    }

    /// Every message the bot sent anywhere.
    pub fn all_messages(&self) -> Vec<Sent> {
        self.state.lock().sent.clone()
    }

    /// How many typing indicators a channel got.
    pub fn typing(&self, channel: &str) -> usize {
        self.state
            .lock()
            .typing
            .iter()
            .filter(|c| *c == channel)
            .count()
    }

    /// The threads the bot opened: (parent, thread id, name).
    pub fn threads(&self) -> Vec<(String, String, String)> {
        self.state.lock().threads.clone()
    }

    /// What became of a slash command.
    pub fn answered(&self, interaction: &str) -> Answered {
        let inner = self.state.lock();
        inner
            .interactions
            .get(interaction)
            .map(|(_, _, a)| a.clone())
            .unwrap_or_default()
    }

    /// The registered slash commands.
    pub fn commands(&self) -> Vec<Value> {
        self.state.lock().commands.clone()
    }

    /// The calls of a route ("METHOD /path" as in [`FakeDiscord::fail`]), with bodies.
    pub fn calls(&self, route: &str) -> Vec<Value> {
        let inner = self.state.lock();
        inner
            .calls
            .iter()
            .filter(|(m, p, _)| format!("{m} {p}") == route)
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    /// (IDENTIFYs, RESUMEs, heartbeats) received.
    pub fn gateway_counts(&self) -> (usize, usize, usize) {
        let inner = self.state.lock();
        (inner.identifies, inner.resumes, inner.heartbeats)
    }

    /// The intents of the last IDENTIFY.
    pub fn intents(&self) -> Option<u64> {
        self.state.lock().intents
    }
}
