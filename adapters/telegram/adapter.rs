//! The Telegram [`Adapter`]: outbound operations as Bot API calls, paced per chat and
//! formatted as HTML; receiving is in [`super::poll`] and [`super::webhook`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use teloxide::net::Download;
use teloxide::payloads::{
    EditMessageTextSetters, SendChatActionSetters, SendDocumentSetters, SendMessageSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{
    ChatAction, ChatId, FileId, InputFile, Message, MessageId, ParseMode, ReplyParameters, ThreadId,
};
use teloxide::{ApiError, Bot, RequestError};
use tokio_util::sync::CancellationToken;

use super::api::{self, SendMessageDraft};
use super::config::TelegramConfig;
use super::inbound::Identity;
use super::migrate::{self, Migrations};
use super::pace::{self, Pacer};
use super::PLATFORM;
use crate::access::{Gate, Rules};
use crate::egress::Egress;
use crate::stream::{retry, Attempts, Backoff};
use crate::{
    Adapter, AdapterError, Attachment, Capabilities, ConversationKey, InboundSink, LengthUnit,
    MessageRef, Upload,
};

/// Telegram's limit on a message, in UTF-16 units of its visible text.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Telegram shows "typing…" for about five seconds; renewing a little sooner keeps it on.
const TYPING_INTERVAL: Duration = Duration::from_secs(4);

/// How getMe is retried while Telegram cannot be reached at start: for ever (until
/// shutdown), at most a minute apart.
const START_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    factor: 2,
    cap: Duration::from_secs(60),
    max_attempts: u32::MAX,
    max_rate_wait: Duration::MAX,
};

/// A Telegram bot as a clawpen adapter. Cheap to share: hold it in an `Arc`.
pub struct TelegramAdapter {
    pub(super) bot: Bot,
    pub(super) config: TelegramConfig,
    /// Keeps writes under Telegram's per-chat and global limits.
    pacer: Pacer,
    /// Who the bot is; set once by `run` (from getMe) before any update is handled.
    pub(super) me: OnceLock<Identity>,
    /// Allowlists, owner and pairing (shared code; user and chat ids as text).
    pub(super) gate: Gate,
    /// Groups upgraded to supergroups: sends follow them (see [`super::migrate`]).
    pub(super) migrations: Migrations,
    /// Why receiving does not work now (a webhook conflict), for `clawpen status`; set and
    /// cleared by the poll loop. A std mutex: held only to read or replace the text.
    trouble: Mutex<Option<&'static str>>,
    /// Set when the server has no `sendMessageDraft` (a 404): replies then stream by edits
    /// in every chat. Refusals of one chat's draft never set it.
    drafts_refused: AtomicBool,
}

impl std::fmt::Debug for TelegramAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramAdapter")
            .field("config", &self.config)
            .field("me", &self.me.get())
            .finish_non_exhaustive()
    }
}

/// Where a conversation's messages go: its chat, and its forum topic if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub chat: i64,
    pub thread: Option<i32>,
}

impl Target {
    pub fn of(conversation: &ConversationKey) -> Result<Self, AdapterError> {
        let bad = || AdapterError::NotFound(format!("{conversation} is not a Telegram chat"));
        let chat = conversation.chat.parse().map_err(|_| bad())?;
        let thread = match &conversation.thread {
            Some(thread) => Some(thread.parse().map_err(|_| bad())?),
            None => None,
        };
        Ok(Self { chat, thread })
    }

    /// Users have positive ids; groups and channels negative ones.
    pub fn is_private(self) -> bool {
        self.chat > 0
    }

    fn thread_id(self) -> Option<ThreadId> {
        self.thread.map(|t| ThreadId(MessageId(t)))
    }
}

impl TelegramAdapter {
    /// An adapter for `config`, which needs a token, reaching Telegram as the environment
    /// says (`HTTPS_PROXY`, `SSL_CERT_FILE`, ...). Nothing is sent until `run`.
    pub fn new(config: TelegramConfig) -> Result<Arc<Self>, AdapterError> {
        Self::with_egress(config, &Egress::from_env())
    }

    /// The same, reaching Telegram through `egress`.
    pub fn with_egress(config: TelegramConfig, egress: &Egress) -> Result<Arc<Self>, AdapterError> {
        config
            .validate()
            .map_err(|e| AdapterError::Rejected(e.to_string()))?;
        let bot = api::bot(&config, egress)?;
        let ids = |list: &[i64]| list.iter().map(ToString::to_string).collect();
        let rules = Rules {
            users: ids(&config.allowed_users),
            chats: ids(&config.allowed_chats),
            roles: Vec::new(),
        };
        Ok(Arc::new(Self {
            bot,
            config,
            pacer: Pacer::default(),
            me: OnceLock::new(),
            gate: Gate::new(PLATFORM, &rules),
            drafts_refused: AtomicBool::new(false),
            trouble: Mutex::new(None),
            migrations: Migrations::default(),
        }))
    }

    /// The one-time code that makes its first sender the owner, while pairing is open (no
    /// allowlist configured and no owner yet); `None` before `run` has started or after.
    pub fn pairing_code(&self) -> Option<String> {
        self.gate.pairing_code()
    }

    /// Records why receiving does not work now (`None`: it works again).
    pub(super) fn set_trouble(&self, trouble: Option<&'static str>) {
        *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = trouble;
    }

    /// Notes a failed write to `chat`: after a 429, every write to the chat waits as long
    /// as Telegram asked, not only the retry of the one that met it.
    fn noted<T>(&self, chat: i64, result: Result<T, AdapterError>) -> Result<T, AdapterError> {
        if let Err(AdapterError::RateLimited { retry_after }) = &result {
            let until = tokio::time::Instant::now() + *retry_after;
            self.pacer.hold(chat, until);
        }
        result
    }

    /// Learns who the bot is, waiting out network trouble; `None` if shut down first.
    async fn identify(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Identity>, AdapterError> {
        let mut attempts = Attempts::new(START_BACKOFF);
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                result = self.bot.get_me() => result,
            };
            let error = match result {
                Ok(me) => {
                    return Ok(Some(Identity {
                        // User ids fit in 52 bits (Bot API); a bigger one matches nobody.
                        id: i64::try_from(me.user.id.0).unwrap_or(-1),
                        username: me.user.username.clone().unwrap_or_default(),
                    }));
                }
                Err(RequestError::Api(ApiError::InvalidToken)) => {
                    return Err(AdapterError::Rejected(
                        "Telegram refused the bot token".into(),
                    ))
                }
                Err(e) => api::adapter_error(e),
            };
            let Some(pause) = attempts.failed(&error) else {
                return Err(error);
            };
            tracing::warn!(adapter = PLATFORM, %error, ?pause, "cannot reach Telegram yet");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Restores the paired owner, or opens pairing and shows the operator its code.
    async fn restore_access(&self, sink: &dyn InboundSink) {
        let bot = self
            .me
            .get()
            .map(|m| format!("@{}", m.username))
            .unwrap_or_else(|| "the bot".into());
        let reach = format!("{bot} in a private chat");
        self.gate.restore(sink, "Telegram", &reach).await;
    }

    /// Registers the commands, so Telegram clients suggest them; failure only costs that.
    async fn register_commands(&self) {
        let commands = crate::command::menu()
            .map(|(command, description)| teloxide::types::BotCommand::new(command, description));
        if let Err(e) = self.bot.set_my_commands(commands).await {
            tracing::warn!(adapter = PLATFORM, error = %e, "could not register the bot's commands");
        }
    }

    /// Sends the adapter's own short answer (help, status, a refusal), retried as
    /// [`api::OWN_BACKOFF`] says; it is dropped, with a log line, if Telegram keeps refusing.
    pub(super) async fn notice(
        &self,
        conversation: &ConversationKey,
        text: &str,
        reply_to: Option<&MessageRef>,
    ) {
        let send = || self.send(conversation, text, reply_to);
        if let Err(error) = retry(&api::OWN_BACKOFF, conversation, send).await {
            tracing::warn!(adapter = PLATFORM, %conversation, %error, "could not send a notice");
        }
    }

    async fn send_message(
        &self,
        target: Target,
        text: String,
        mode: Option<ParseMode>,
        reply_to: Option<&MessageRef>,
    ) -> Result<Message, RequestError> {
        let mut chat = self.migrations.route(target.chat);
        loop {
            let mut request = self.bot.send_message(ChatId(chat), text.clone());
            if let Some(mode) = mode {
                request = request.parse_mode(mode);
            }
            if let Some(thread) = target.thread_id() {
                request = request.message_thread_id(thread);
            }
            if let Some(id) = reply_to.and_then(|r| r.0.parse().ok()) {
                let reply = ReplyParameters::new(MessageId(id)).allow_sending_without_reply();
                request = request.reply_parameters(reply);
            }
            match request.await {
                // The group became a supergroup: the message goes there, once.
                Err(RequestError::MigrateToChatId(to)) if to.0 != chat && chat == target.chat => {
                    self.migrated(chat, to.0);
                    chat = to.0;
                }
                other => return other,
            }
        }
    }

    /// Follows a group's upgrade to a supergroup from now on (not yet stored: the service
    /// message Telegram sends to the group stores it when it arrives).
    pub(super) fn migrated(&self, old: i64, new: i64) -> bool {
        let news = self.migrations.learn(old, new);
        if news {
            let allowed = self.config.allowed_chats.contains(&old);
            tracing::warn!(adapter = PLATFORM, old, new, allowed, "a group became a supergroup with a new id; its messages and replies follow it (add the new id to telegram.allowed_chats; the old one is honoured meanwhile)");
        }
        news
    }

    async fn edit_message(
        &self,
        target: Target,
        id: MessageId,
        text: String,
        mode: Option<ParseMode>,
    ) -> Result<(), RequestError> {
        // Sent where the conversation's chat is now (a message sent before an upgrade is not
        // found there, and the reply goes on in a new message).
        let chat = ChatId(self.migrations.route(target.chat));
        let mut request = self.bot.edit_message_text(chat, id, text);
        if let Some(mode) = mode {
            request = request.parse_mode(mode);
        }
        match request.await {
            Err(e) if api::is_not_modified(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn send_draft(
        &self,
        target: Target,
        id: u64,
        text: String,
        mode: Option<ParseMode>,
    ) -> Result<(), RequestError> {
        let payload = SendMessageDraft {
            chat_id: self.migrations.route(target.chat),
            message_thread_id: target.thread,
            draft_id: id,
            text,
            parse_mode: mode,
        };
        match api::call(&self.bot, payload).await {
            // teloxide reads a 404 "Not Found" as a bad token; the token worked for getMe,
            // so here it means the server has no drafts.
            Err(RequestError::Api(ApiError::InvalidToken)) => Err(RequestError::Api(
                ApiError::Unknown("Not Found: method not found".into()),
            )),
            other => other.map(|_| ()),
        }
    }
}

#[async_trait]
impl Adapter for TelegramAdapter {
    fn platform(&self) -> &str {
        PLATFORM
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_len: MAX_MESSAGE_LEN,
            length_unit: LengthUnit::Utf16,
            can_edit: true,
            has_drafts: false,
            has_threads: true,
            min_edit_interval: pace::GROUP_RATE.interval(),
            typing_interval: Some(TYPING_INTERVAL),
            status_in_reply: true,
        }
    }

    fn capabilities_for(&self, conversation: &ConversationKey) -> Capabilities {
        let private = Target::of(conversation).is_ok_and(Target::is_private);
        let base = self.capabilities();
        if !private {
            return base;
        }
        Capabilities {
            has_drafts: self.config.drafts && !self.drafts_refused.load(Ordering::Relaxed),
            min_edit_interval: pace::PRIVATE_RATE.interval(),
            ..base
        }
    }

    async fn run(
        self: Arc<Self>,
        sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let Some(me) = self.identify(&shutdown).await? else {
            return Ok(());
        };
        tracing::info!(adapter = PLATFORM, bot = %me.username, "connected to Telegram");
        // Only `run` sets it, and only once per adapter.
        let _ = self.me.set(me);
        self.restore_access(&*sink).await;
        if let Ok(Some(stored)) = sink.load_value(migrate::KEY).await {
            self.migrations.restore(&stored);
        }
        self.register_commands().await;
        if self.config.webhook_url.is_some() {
            super::webhook::serve(self, sink, shutdown).await
        } else {
            super::poll::run(self, sink, shutdown).await
        }
    }

    async fn send(
        &self,
        conversation: &ConversationKey,
        text: &str,
        reply_to: Option<&MessageRef>,
    ) -> Result<MessageRef, AdapterError> {
        let target = Target::of(conversation)?;
        // Quoting the question helps in a busy group; in a private chat it is clutter.
        let reply_to = reply_to.filter(|_| !target.is_private());
        self.pacer.wait(Some(target.chat)).await;
        let send = |body, mode| self.send_message(target, body, mode, reply_to);
        let sent = self.noted(
            target.chat,
            api::html_or_plain(conversation, text, send).await,
        )?;
        Ok(MessageRef(sent.id.0.to_string()))
    }

    async fn edit(
        &self,
        conversation: &ConversationKey,
        message: &MessageRef,
        text: &str,
    ) -> Result<(), AdapterError> {
        let target = Target::of(conversation)?;
        let id = message
            .0
            .parse()
            .map(MessageId)
            .map_err(|_| AdapterError::NotFound(format!("message {message}")))?;
        self.pacer.wait(Some(target.chat)).await;
        let edit = |body, mode| self.edit_message(target, id, body, mode);
        self.noted(
            target.chat,
            api::html_or_plain(conversation, text, edit).await,
        )
    }

    async fn typing(&self, conversation: &ConversationKey) -> Result<(), AdapterError> {
        let target = Target::of(conversation)?;
        // An indicator sent late is worse than none: while Telegram holds the chat, skip it.
        let now = tokio::time::Instant::now();
        if self.pacer.held_until(target.chat, now).is_some() {
            return Ok(());
        }
        self.pacer.wait(None).await;
        let mut request = self.bot.send_chat_action(
            ChatId(self.migrations.route(target.chat)),
            ChatAction::Typing,
        );
        if let Some(thread) = target.thread_id() {
            request = request.message_thread_id(thread);
        }
        let result = request.await.map(|_| ()).map_err(api::adapter_error);
        self.noted(target.chat, result)
    }

    async fn draft(
        &self,
        conversation: &ConversationKey,
        draft_id: u64,
        text: &str,
    ) -> Result<(), AdapterError> {
        let target = Target::of(conversation)?;
        if !target.is_private() {
            return Err(AdapterError::Unsupported("drafts outside private chats"));
        }
        self.pacer.wait(Some(target.chat)).await;
        let draft = |body, mode| self.send_draft(target, draft_id, body, mode);
        let result = api::html_or_plain(conversation, text, draft).await;
        if matches!(&result, Err(AdapterError::NotFound(why)) if api::is_unknown_method(why)) {
            // The server has no drafts at all: stop offering them, so later replies stream
            // by edits from the start instead of failing a draft first. Any other refusal
            // (a user who blocked the bot, a text refused) concerns this chat or this text
            // only: that reply falls back to edits, and other chats keep their drafts.
            self.drafts_refused.store(true, Ordering::Relaxed);
        }
        self.noted(target.chat, result)
    }

    fn trouble(&self) -> Option<String> {
        let trouble = *self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        trouble.map(str::to_string)
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
        let get_file = || async {
            self.pacer.wait(None).await;
            let id = FileId(attachment.platform_ref.clone());
            self.bot.get_file(id).await.map_err(api::adapter_error)
        };
        let file = retry(&api::OWN_BACKOFF, &"getFile", get_file).await?;
        // teloxide fills a size Telegram left out with u32::MAX: that means unknown, and
        // the limit is then kept while downloading.
        let size = Some(u64::from(file.meta.size)).filter(|s| *s != u64::from(u32::MAX));
        if let Some(size) = size.filter(|s| *s > max_bytes) {
            return Err(too_large(size));
        }
        let mut data = Vec::new();
        let mut stream = self.bot.download_file_stream(&file.path);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match e.status() {
                // The file is gone (Telegram keeps downloads for an hour); retrying is no use.
                Some(status) if status.is_client_error() => AdapterError::NotFound(e.to_string()),
                _ => AdapterError::Transport(e.to_string()),
            })?;
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
        let target = Target::of(conversation)?;
        let send_document = || async {
            self.pacer.wait(Some(target.chat)).await;
            let document = InputFile::memory(file.data.clone()).file_name(file.name.clone());
            let mut request = self
                .bot
                .send_document(ChatId(self.migrations.route(target.chat)), document);
            if let Some(thread) = target.thread_id() {
                request = request.message_thread_id(thread);
            }
            let result = request.await.map_err(api::adapter_error);
            self.noted(target.chat, result)
        };
        let sent = retry(&api::OWN_BACKOFF, &"sendDocument", send_document).await?;
        Ok(MessageRef(sent.id.0.to_string()))
    }
}
