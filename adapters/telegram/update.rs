//! One update from Telegram, however it arrived (long poll or webhook): parsed, checked
//! against access, answered by the adapter (commands, refusals) or handed to the sink.

use serde_json::Value;
use teloxide::types::{Update, UpdateKind};
use tokio::time::Instant;

use super::access::{Verdict, OWNER_KEY};
use super::adapter::TelegramAdapter;
use super::inbound::{self, Command, Translated};
use super::PLATFORM;
use crate::{Inbound, InboundSink, MessageRef, SinkError};

/// Said to a stranger (at most once an hour each).
const REFUSAL: &str = "Sorry, this bot only talks to people its owner has allowed.";

/// Said to a stranger while the bot waits for its owner to pair.
const UNPAIRED: &str = "This bot is not set up yet. Its owner pairs with it by sending the \
                        code that `clawpen run` printed.";

/// Said to the new owner.
const PAIRED: &str = "Paired: you are this bot's owner now. Write anything to start; /help \
                      lists the commands.";

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
        let (command, inbound) =
            match inbound::translate(&message, me, self.config.trigger.as_deref()) {
                Translated::Skip(why) => {
                    tracing::debug!(adapter = PLATFORM, ?update_id, why, "skipping a message");
                    return Ok(());
                }
                Translated::Inbound(inbound) => (None, inbound),
                Translated::Command(command, inbound) => (Some(command), inbound),
            };
        let (user, chat) = (
            message.from.as_ref().map_or(0, |u| u.id.0 as i64),
            message.chat.id.0,
        );
        let private = message.chat.is_private();
        let verdict = self.access().check(
            user,
            chat,
            private,
            inbound.addressed,
            &inbound.text,
            Instant::now(),
        );
        let reply_to = Some(MessageRef(inbound.id.clone()));
        let conversation = &inbound.conversation;
        match verdict {
            Verdict::Allowed => {}
            Verdict::Paired => {
                tracing::info!(
                    adapter = PLATFORM,
                    user,
                    "paired: this user is the bot's owner now"
                );
                if let Err(e) = sink.save_value(OWNER_KEY, &user.to_string()).await {
                    tracing::error!(adapter = PLATFORM, user, error = %e, "could not store the owner; pair again after a restart");
                }
                self.notice(conversation, PAIRED, reply_to.as_ref()).await;
                return Ok(());
            }
            Verdict::Refuse => {
                tracing::info!(
                    adapter = PLATFORM,
                    user,
                    chat,
                    "refusing a user who is not allowed"
                );
                let text = match self.pairing_code() {
                    Some(_) => UNPAIRED,
                    None => REFUSAL,
                };
                self.notice(conversation, text, reply_to.as_ref()).await;
                return Ok(());
            }
            Verdict::Ignore => {
                tracing::debug!(
                    adapter = PLATFORM,
                    user,
                    chat,
                    "dropping a message from a user who is not allowed"
                );
                return Ok(());
            }
        }
        match command {
            None => sink.accept(inbound).await.map(|_| ()),
            Some(command) => {
                self.command(sink, command, &inbound, private).await;
                Ok(())
            }
        }
    }

    /// Answers a command the adapter handles itself.
    async fn command(
        &self,
        sink: &dyn InboundSink,
        command: Command,
        inbound: &Inbound,
        private: bool,
    ) {
        let conversation = &inbound.conversation;
        let reply_to = Some(MessageRef(inbound.id.clone()));
        let text = match command {
            Command::Start | Command::Help => self.help(private),
            Command::Status => sink.status(conversation).await,
            Command::Stop => {
                sink.cancel(conversation).await;
                "⏹ Stop requested.".to_string()
            }
        };
        self.notice(conversation, &text, reply_to.as_ref()).await;
    }

    fn help(&self, private: bool) -> String {
        let how = if private {
            "Write to me here.".to_string()
        } else {
            let username = self.me.get().map(|m| m.username.as_str()).unwrap_or("me");
            let trigger = match &self.config.trigger {
                Some(word) => format!(", or say “{word}”"),
                None => String::new(),
            };
            format!("Mention @{username} or reply to me{trigger}.")
        };
        format!(
            "I am an AI agent with a sandbox of my own for this chat. {how}\n\n\
             /status — what this conversation's box is doing\n\
             /stop — stop the current answer\n\
             /reset — ask me to start afresh\n\
             /help — this message"
        )
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
