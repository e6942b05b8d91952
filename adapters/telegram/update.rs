//! One update from Telegram, however it arrived (long poll or webhook): parsed, checked
//! against access, then a command carried out or the message handed to the sink. Access
//! and commands are the shared [`crate::access`] and [`crate::command`]; what is Telegram's
//! here is reading the update and saying how to address the bot.

use serde_json::Value;
use teloxide::types::{Update, UpdateKind};

use super::adapter::TelegramAdapter;
use super::inbound::{self, Translated};
use super::PLATFORM;
use crate::access::{Admission, Sender};
use crate::command::{self, Handled};
use crate::{InboundSink, MessageRef, SinkError};

impl TelegramAdapter {
    /// Handles one update. `Ok` means it may be confirmed to Telegram: it was stored by the
    /// sink, answered by the adapter, or skipped for good. An error means it must be fetched
    /// again (the sink could not store it).
    pub(super) async fn handle_update(
        &self,
        sink: &dyn InboundSink,
        value: Value,
    ) -> Result<(), SinkError> {
        let update_id = value.get("update_id").and_then(Value::as_i64);
        let kinds: Vec<String> = value
            .as_object()
            .map(|o| o.keys().filter(|k| *k != "update_id").cloned().collect())
            .unwrap_or_default();
        // From text, not from the `Value`: teloxide reads an update's kind as a borrowed
        // key, which a `Value` cannot lend, and would take every update for unknown.
        let update: Update = match serde_json::from_str(&value.to_string()) {
            Ok(update) => update,
            Err(error) => {
                tracing::warn!(adapter = PLATFORM, ?update_id, ?kinds, %error, "skipping a malformed update");
                return Ok(());
            }
        };
        let message = match update.kind {
            UpdateKind::Message(message) => message,
            UpdateKind::Error(_) => {
                tracing::warn!(
                    adapter = PLATFORM,
                    ?update_id,
                    ?kinds,
                    "skipping an update of an unknown kind or shape"
                );
                return Ok(());
            }
            _ => {
                tracing::debug!(
                    adapter = PLATFORM,
                    ?update_id,
                    ?kinds,
                    "ignoring an update that is not a message"
                );
                return Ok(());
            }
        };
        let Some(me) = self.me.get() else {
            return Ok(());
        };
        let (inbound, command) =
            match inbound::translate(&message, me, self.config.trigger.as_deref()) {
                Translated::Skip(why) => {
                    tracing::debug!(adapter = PLATFORM, ?update_id, why, "skipping a message");
                    return Ok(());
                }
                Translated::Message(inbound, command) => (*inbound, command),
            };
        let private = message.chat.is_private();
        let chat = message.chat.id.0.to_string();
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use teloxide::types::{Update, UpdateKind};

    /// Why `handle_update` parses from text: teloxide's update kinds cannot be read from a
    /// `serde_json::Value`, which would make every update look unknown.
    #[test]
    fn updates_parse_from_text_but_not_from_a_value() {
        let value = json!({"update_id": 1, "message": {
            "message_id": 2, "date": 0, "text": "hi",
            "chat": {"id": 5, "type": "private", "first_name": "Ann"},
            "from": {"id": 5, "is_bot": false, "first_name": "Ann"}}});
        let from_text: Result<Update, _> = serde_json::from_str(&value.to_string());
        assert!(matches!(
            from_text.map(|u| u.kind),
            Ok(UpdateKind::Message(_))
        ));
        let from_value: Result<Update, _> = serde_json::from_value(value);
        assert!(!matches!(
            from_value.map(|u| u.kind),
            Ok(UpdateKind::Message(_))
        ));
    }
}
