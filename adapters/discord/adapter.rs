//! The Discord [`Adapter`]: outbound operations as REST calls through [`super::api`];
//! receiving is [`super::gateway`] feeding [`super::receive`].

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serenity::builder::{CreateAllowedMentions, CreateAttachment, CreateMessage, EditMessage};
use serenity::http::{LightMethod, Multipart, MultipartUpload, Request, Route};
use serenity::model::channel::{MessageReference, Nonce};
use serenity::model::id::{ChannelId, MessageId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::Rest;
use super::config::DiscordConfig;
use super::inbound::{target, Identity};
use super::{format, PLATFORM};
use crate::access::{Gate, Rules};
use crate::egress::Egress;
use crate::stream::Backoff;
use crate::{
    Adapter, AdapterError, Attachment, Capabilities, ConversationKey, InboundSink, LengthUnit,
    MessageRef, Upload,
};

/// Discord's limit on a message's content, in characters.
pub const MAX_MESSAGE_LEN: usize = 2000;

/// Discord shows "typing…" for about 10 s; renewing sooner keeps it on.
const TYPING_INTERVAL: Duration = Duration::from_secs(8);

/// The gap between two edits of one reply: Discord allows about five writes per 5 s per
/// channel, and a streaming reply leaves room for others.
pub const EDIT_INTERVAL: Duration = Duration::from_millis(1200);

/// Gateway events read but not yet handled. When full, the gateway stops reading its
/// socket (heartbeats go on) until the handler catches up: nothing is dropped.
const EVENT_QUEUE: usize = 256;

/// Channels remembered as threads or not; past this the memory is cleared (and channels
/// are looked up again as they speak).
const CHANNELS_KEPT: usize = 50_000;

/// Nonces of failed sends kept for their retries; past this (sends that failed and were
/// never retried, as when a reply gave up) the oldest are all forgotten at once.
const NONCES_KEPT: usize = 10_000;

/// How the adapter's own short answers (help, status, refusals) are retried.
pub(super) const OWN_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    factor: 2,
    cap: Duration::from_secs(8),
    max_attempts: 4,
    max_rate_wait: Duration::from_secs(60),
};

/// What the adapter knows of a guild channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ChannelInfo {
    /// The parent channel, for a thread.
    pub parent: Option<String>,
    /// A thread the bot opened: every message in it is for the bot.
    pub ours: bool,
}

/// A Discord bot as a clawpen adapter. Cheap to share: hold it in an `Arc`.
pub struct DiscordAdapter {
    pub(super) config: DiscordConfig,
    pub(super) rest: Rest,
    /// How REST and the gateway reach Discord (the operator's proxy and extra CAs).
    pub(super) egress: Egress,
    /// Allowlists, owner and pairing (shared code; snowflakes as text).
    pub(super) gate: Gate,
    /// Who the bot is; set by the first READY, before any message is handled.
    pub(super) me: OnceLock<Identity>,
    /// The application id (from READY), which names slash commands and interaction hooks.
    pub(super) application: OnceLock<String>,
    /// Guild channels seen: which are threads of which. A std mutex: held only to read or
    /// update the map.
    channels: Mutex<HashMap<String, ChannelInfo>>,
    /// Why receiving does not work now, for `clawpen status` and `doctor`.
    trouble: Mutex<Option<String>>,
    /// Whether the current gateway connection reached READY or RESUMED (reconnect pacing).
    connected: AtomicBool,
    /// The nonce of each send that failed in a way worth retrying, keyed by what it sends:
    /// the retry reuses it, so Discord (`enforce_nonce`) shows the message once even if
    /// the first attempt reached it. Removed once the send is settled.
    nonces: Mutex<HashMap<u64, String>>,
    /// The adapter's own answers and slash-command acknowledgements, sent beside the event
    /// handler so it never waits on them; awaited (with the adapter's run) at shutdown.
    pub(super) tasks: TaskTracker,
}

impl std::fmt::Debug for DiscordAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordAdapter")
            .field("config", &self.config)
            .field("me", &self.me.get())
            .finish_non_exhaustive()
    }
}

/// A snowflake id as serenity's type; `NotFound` when it is not one.
pub(super) fn snowflake(text: &str) -> Result<NonZeroU64, AdapterError> {
    text.parse()
        .map_err(|_| AdapterError::NotFound(format!("{text:?} is not a Discord id")))
}

impl DiscordAdapter {
    /// An adapter for `config`, which needs a token, reaching Discord as the environment
    /// says (`HTTPS_PROXY`, `SSL_CERT_FILE`, ...). Nothing is sent until `run`.
    pub fn new(config: DiscordConfig) -> Result<Arc<Self>, AdapterError> {
        Self::with_egress(config, Egress::from_env())
    }

    /// The same, reaching Discord through `egress`.
    pub fn with_egress(config: DiscordConfig, egress: Egress) -> Result<Arc<Self>, AdapterError> {
        config
            .validate()
            .map_err(|e| AdapterError::Rejected(e.to_string()))?;
        let rest = Rest::new(&config, &egress)?;
        let rules = Rules {
            users: config.allowed_users.clone(),
            chats: config.allowed_channels.clone(),
            roles: config.allowed_roles.clone(),
        };
        Ok(Arc::new(Self {
            rest,
            egress,
            gate: Gate::new(PLATFORM, &rules),
            config,
            me: OnceLock::new(),
            application: OnceLock::new(),
            channels: Mutex::new(HashMap::new()),
            trouble: Mutex::new(None),
            connected: AtomicBool::new(false),
            nonces: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        }))
    }

    /// The one-time pairing code while pairing is open; `None` before `run` or after.
    pub fn pairing_code(&self) -> Option<String> {
        self.gate.pairing_code()
    }

    /// The bot token as the gateway wants it (without `Bot `).
    pub(super) fn token(&self) -> &str {
        let token = self.config.token.as_deref().unwrap_or_default().trim();
        token.strip_prefix("Bot ").unwrap_or(token)
    }

    /// Records why receiving does not work now (`None`: it works again).
    pub(super) fn set_trouble(&self, trouble: Option<String>) {
        *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = trouble;
    }

    /// Notes whether the current connection reached READY or RESUMED.
    pub(super) fn mark_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if connected {
            self.set_trouble(None);
        }
    }

    /// Whether the connection that just ended had reached READY or RESUMED.
    pub(super) fn connected_once(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, ChannelInfo>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is known of guild channel `id`.
    pub(super) fn channel_info(&self, id: &str) -> Option<ChannelInfo> {
        self.channels().get(id).cloned()
    }

    /// Remembers what guild channel `id` is.
    pub(super) fn learn_channel(&self, id: &str, info: ChannelInfo) {
        let mut channels = self.channels();
        if channels.len() >= CHANNELS_KEPT {
            channels.clear();
        }
        channels.insert(id.to_string(), info);
    }

    /// What agent output may ping: nobody, or the users it names when allowed. Never
    /// @everyone, @here or roles.
    pub(super) fn allowed_mentions(&self) -> CreateAllowedMentions {
        let users = self.config.allow_user_mentions;
        CreateAllowedMentions::new()
            .everyone(false)
            .all_roles(false)
            .all_users(users)
            .replied_user(users)
    }

    fn nonces(&self) -> MutexGuard<'_, HashMap<u64, String>> {
        self.nonces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The nonce of a send: the one a failed attempt of the same send used, else new.
    fn nonce(&self, key: u64) -> String {
        let fresh = || crate::access::random_u64().to_string();
        let mut nonces = self.nonces();
        if nonces.len() >= NONCES_KEPT {
            nonces.clear();
        }
        nonces.entry(key).or_insert_with(fresh).clone()
    }

    /// Forgets a send's nonce unless it failed in a way that will be retried.
    fn settled<T>(&self, key: u64, result: &Result<T, AdapterError>) {
        if !result.as_ref().is_err_and(AdapterError::is_retryable) {
            self.nonces().remove(&key);
        }
    }

    /// Posts a message to `channel`, with a nonce Discord enforces.
    pub(super) async fn post(
        &self,
        channel: &str,
        builder: CreateMessage,
        files: Vec<CreateAttachment>,
        key: u64,
    ) -> Result<MessageRef, AdapterError> {
        let channel_id = ChannelId::from(snowflake(channel)?);
        let builder = builder
            .allowed_mentions(self.allowed_mentions())
            .nonce(Nonce::String(self.nonce(key)))
            .enforce_nonce(true);
        let route = Route::ChannelMessages { channel_id };
        let request = Request::new(route, LightMethod::Post);
        let request = if files.is_empty() {
            request.body(Some(json_body(&builder)?))
        } else {
            let builder = builder.files(files.clone());
            request.multipart(Some(Multipart {
                upload: MultipartUpload::Attachments(files),
                fields: Vec::new(),
                payload_json: Some(String::from_utf8_lossy(&json_body(&builder)?).into_owned()),
            }))
        };
        let result = self
            .rest
            .json::<serenity::model::channel::Message>(request, Some(channel))
            .await;
        self.settled(key, &result);
        Ok(MessageRef(result?.id.to_string()))
    }

    /// Runs the gateway and the event handler until `shutdown`.
    async fn receive(
        self: &Arc<Self>,
        sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let (events, mut queue) = mpsc::channel(EVENT_QUEUE);
        let handler = async {
            while let Some(event) = queue.recv().await {
                if let Err(e) = self.handle(&*sink, event).await {
                    // The sink is shutting down or cannot store: Discord will not send the
                    // event again, so the operator hears of it.
                    tracing::error!(adapter = PLATFORM, error = %e, "could not take a Discord message");
                }
            }
        };
        let (result, ()) = tokio::join!(self.gateway(events, shutdown), handler);
        self.tasks.close();
        self.tasks.wait().await;
        result
    }
}

/// A builder's JSON, as a request body.
fn json_body(builder: &impl serde::Serialize) -> Result<Vec<u8>, AdapterError> {
    serde_json::to_vec(builder).map_err(|e| AdapterError::Rejected(format!("encoding: {e}")))
}

/// What identifies one send for its nonce: where, what, answering what.
fn send_key(conversation: &ConversationKey, text: &str, reply_to: Option<&MessageRef>) -> u64 {
    let mut hasher = DefaultHasher::new();
    (conversation, text, reply_to).hash(&mut hasher);
    hasher.finish()
}

#[async_trait]
impl Adapter for DiscordAdapter {
    fn platform(&self) -> &str {
        PLATFORM
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_len: MAX_MESSAGE_LEN,
            length_unit: LengthUnit::Chars,
            can_edit: true,
            has_drafts: false,
            has_threads: true,
            min_edit_interval: EDIT_INTERVAL,
            typing_interval: Some(TYPING_INTERVAL),
            status_in_reply: true,
        }
    }

    async fn run(
        self: Arc<Self>,
        sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        self.gate
            .restore(&*sink, "Discord", "the bot in a direct message")
            .await;
        self.receive(sink, shutdown).await
    }

    async fn send(
        &self,
        conversation: &ConversationKey,
        text: &str,
        reply_to: Option<&MessageRef>,
    ) -> Result<MessageRef, AdapterError> {
        let channel = target(conversation);
        let mut builder = CreateMessage::new().content(format::render(text));
        if let Some(reply_to) = reply_to {
            let channel_id = ChannelId::from(snowflake(channel)?);
            if let Ok(message) = snowflake(&reply_to.0) {
                let mut reference = MessageReference::from((channel_id, MessageId::from(message)));
                // A question deleted meanwhile (or not a message: a slash command) is no
                // reason to lose the answer.
                reference.fail_if_not_exists = Some(false);
                builder = builder.reference_message(reference);
            }
        }
        let key = send_key(conversation, text, reply_to);
        self.post(channel, builder, Vec::new(), key).await
    }

    async fn edit(
        &self,
        conversation: &ConversationKey,
        message: &MessageRef,
        text: &str,
    ) -> Result<(), AdapterError> {
        let channel = target(conversation);
        let channel_id = ChannelId::from(snowflake(channel)?);
        let message_id = MessageId::from(snowflake(&message.0)?);
        let builder = EditMessage::new()
            .content(format::render(text))
            .allowed_mentions(self.allowed_mentions());
        let route = Route::ChannelMessage {
            channel_id,
            message_id,
        };
        let request = Request::new(route, LightMethod::Patch).body(Some(json_body(&builder)?));
        self.rest.call(request, Some(channel)).await.map(|_| ())
    }

    async fn typing(&self, conversation: &ConversationKey) -> Result<(), AdapterError> {
        let channel = target(conversation);
        let channel_id = ChannelId::from(snowflake(channel)?);
        let request = Request::new(Route::ChannelTyping { channel_id }, LightMethod::Post);
        self.rest.call(request, Some(channel)).await.map(|_| ())
    }

    fn trouble(&self) -> Option<String> {
        self.trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
        max_bytes: u64,
    ) -> Result<Vec<u8>, AdapterError> {
        let too_large = |size: u64| {
            AdapterError::Rejected(format!(
                "{} is {size} bytes, more than the {max_bytes} allowed",
                attachment.name
            ))
        };
        if let Some(size) = attachment.size.filter(|s| *s > max_bytes) {
            return Err(too_large(size));
        }
        let transport = |e: reqwest::Error| AdapterError::Transport(e.without_url().to_string());
        let mut response = self
            .rest
            .client()
            .get(&attachment.platform_ref)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(super::api::error_of(status, response.headers(), b""));
        }
        let mut data = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            data.extend_from_slice(&chunk);
            if data.len() as u64 > max_bytes {
                return Err(too_large(data.len() as u64));
            }
        }
        Ok(data)
    }

    async fn upload(
        &self,
        conversation: &ConversationKey,
        file: &Upload,
    ) -> Result<MessageRef, AdapterError> {
        let channel = target(conversation);
        let attachment = CreateAttachment::bytes(file.data.clone(), file.name.clone());
        let key = send_key(conversation, &file.name, None) ^ file.data.len() as u64;
        let post = || self.post(channel, CreateMessage::new(), vec![attachment.clone()], key);
        crate::stream::retry(&OWN_BACKOFF, conversation, post).await
    }
}
