//! One update from Telegram, however it arrived (long poll or webhook): parsed, checked
//! against access, then a command carried out or the message handed to the sink. Access
//! and commands are the shared [`crate::access`] and [`crate::command`]; what is Telegram's
//! here is reading the update and saying how to address the bot.

use serde_json::Value;

use super::adapter::TelegramAdapter;
use super::inbound::{self, Translated};
use super::migrate;
use super::wire::{self, Message, Update};
use super::PLATFORM;
use crate::access::{Admission, Sender};
use crate::command::{self, Handled};
use crate::{InboundSink, MessageRef, SinkError};

impl TelegramAdapter {
    /// Handles one update. `Ok` means it may be confirmed to Telegram: it was stored by the
    /// sink, answered by the adapter, or skipped for good (logged). An error means it must
    /// be fetched again (the sink could not store it). Whatever `value` holds, nothing here
    /// can panic: it is read into the bridge's own [`wire`] types.
    pub(super) async fn handle_update(
        &self,
        sink: &dyn InboundSink,
        value: Value,
    ) -> Result<(), SinkError> {
        let update_id = value.get("update_id").and_then(Value::as_i64);
        let message = match wire::read(&value) {
            Update::Message(message) => message,
            Update::Ignored(kind) => {
                tracing::debug!(
                    adapter = PLATFORM,
                    ?update_id,
                    kind,
                    "ignoring an update that is not a message"
                );
                return Ok(());
            }
            Update::Unknown(kinds) => {
                tracing::warn!(
                    adapter = PLATFORM,
                    ?update_id,
                    ?kinds,
                    "skipping an update of an unknown kind"
                );
                return Ok(());
            }
            Update::Malformed(error) => {
                tracing::warn!(adapter = PLATFORM, ?update_id, %error, "skipping a malformed update");
                return Ok(());
            }
        };
        if let Some((old, new)) = upgrade(&message) {
            // Followed from now on, and stored so a restart still follows it.
            if self.migrated(old, new) {
                let stored = self.migrations.to_text();
                if let Err(e) = sink.save_value(migrate::KEY, &stored).await {
                    tracing::warn!(adapter = PLATFORM, error = %e, "could not store a group's upgrade");
                }
            }
            return Ok(());
        }
        let Some(me) = self.me.get() else {
            return Ok(());
        };
        let (inbound, command) =
            match inbound::translate(&message, me, self.config.trigger.as_deref()) {
                Translated::Skip(why) => {
                    tracing::debug!(adapter = PLATFORM, ?update_id, why, "skipping a message");
                    return Ok(());
                }
                Translated::Unusable(_) if inbound::is_service(&value["message"]) => {
                    tracing::debug!(adapter = PLATFORM, ?update_id, "skipping a service message");
                    return Ok(());
                }
                Translated::Unusable(why) => {
                    // Someone said something the bridge cannot read: the operator hears of
                    // it, with what the message held.
                    let fields = content_fields(&value["message"]);
                    tracing::warn!(
                        adapter = PLATFORM,
                        ?update_id,
                        why,
                        ?fields,
                        "skipping a message the bridge cannot use"
                    );
                    return Ok(());
                }
                Translated::Message(inbound, command) => (*inbound, command),
            };
        let mut inbound = inbound;
        let private = message.chat.is_private();
        let id = message.chat.id;
        let origin = self.migrations.origin(id);
        if let Some(old) = origin {
            // A supergroup that was a group goes on as the group's conversation (box,
            // workspace, history, tasks): its key keeps the id it was born with, and what is
            // sent to that id goes to the new one.
            inbound.conversation.chat = old.to_string();
        }
        // An allowlist entry naming a group before its upgrade admits the supergroup.
        let chat = match origin {
            Some(old) if !self.config.allowed_chats.contains(&id) => old,
            _ => id,
        };
        let chat = chat.to_string();
        let sender = Sender {
            user: &inbound.sender_id,
            chat: &chat,
            roles: &[],
            private,
            addressed: inbound.addressed,
        };
        let reply_to = Some(MessageRef(inbound.id.clone()));
        let conversation = inbound.conversation.clone();
        let answer = match self.gate.admit(sink, &sender, &inbound.text).await {
            Admission::Allowed => {
                let addressing = self.addressing(private);
                match command::handle(sink, inbound, command.as_ref(), &addressing).await? {
                    Handled::Accepted(_) => return Ok(()),
                    Handled::Answer(text) => text,
                }
            }
            Admission::Answer(text) => text.to_string(),
            Admission::Drop => return Ok(()),
        };
        self.notice(&conversation, &answer, reply_to.as_ref()).await;
        Ok(())
    }

    /// How to address the bot in this chat, for `/help`.
    fn addressing(&self, private: bool) -> String {
        if private {
            return "Write to me here.".to_string();
        }
        let username = self.me.get().map(|m| m.username.as_str()).unwrap_or("me");
        let trigger = match &self.config.trigger {
            Some(word) => format!(", or say “{word}”"),
            None => String::new(),
        };
        format!("Mention @{username} or reply to me{trigger}.")
    }
}

/// The upgrade of a group to a supergroup that a service message announces, as (old, new).
fn upgrade(message: &Message) -> Option<(i64, i64)> {
    match (message.migrate_to_chat_id, message.migrate_from_chat_id) {
        (Some(new), _) => Some((message.chat.id, new)),
        (None, Some(old)) => Some((old, message.chat.id)),
        (None, None) => None,
    }
}

/// The fields of a raw message beyond its envelope (ids, sender, chat, date), to name
/// in a log line what a skipped message held.
fn content_fields(raw: &Value) -> Vec<String> {
    const ENVELOPE: &[&str] = &[
        "message_id",
        "date",
        "chat",
        "from",
        "sender_chat",
        "message_thread_id",
        "is_topic_message",
        "reply_to_message",
        "entities",
        "caption_entities",
    ];
    raw.as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !ENVELOPE.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}
