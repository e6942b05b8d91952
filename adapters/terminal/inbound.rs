//! A line typed into a terminal conversation, as the bridge sees it: a command carried out
//! by the shared [`crate::command`] (its answer shown to the conversation's watchers), or a
//! message for the agent. The terminal is the operator's own (the control socket is mode
//! 0600), so there is no access control here.

use super::{TerminalAdapter, TerminalEvent};
use crate::command::{self, Handled, Parsed};
use crate::{ConversationKey, Inbound, InboundSink, SinkError};

/// How to address the bot in a terminal, for `/help`.
const ADDRESSING: &str = "Write to me here.";

/// A new inbound message of a terminal conversation, from the local user.
pub fn message(conversation: &ConversationKey, text: &str) -> Inbound {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Inbound {
        id: format!("{:x}-{:x}", now.as_nanos(), std::process::id()),
        conversation: conversation.clone(),
        sender_id: "local".into(),
        sender_name: std::env::var("USER").unwrap_or_else(|_| "you".into()),
        text: text.to_string(),
        attachments: Vec::new(),
        reply_to: None,
        addressed: true,
        at: now.as_secs(),
    }
}

impl TerminalAdapter {
    /// Takes a line typed into `conversation`: a command the bridge answers is carried out
    /// and its answer goes to every watcher as a [`TerminalEvent::Notice`]; anything else
    /// (including `/reset`) is handed to `sink` for the agent.
    pub async fn say(
        &self,
        sink: &dyn InboundSink,
        conversation: &ConversationKey,
        text: &str,
    ) -> Result<Handled, SinkError> {
        let (text, parsed) = match command::parse(text, None) {
            Parsed::Command { text, command } => (text, command),
            Parsed::Text => (text.to_string(), None),
        };
        let handled = command::handle(
            sink,
            message(conversation, &text),
            parsed.as_ref(),
            ADDRESSING,
        )
        .await?;
        if let Handled::Answer(answer) = &handled {
            let notice = TerminalEvent::Notice {
                text: answer.clone(),
            };
            self.emit(conversation, notice).await;
        }
        Ok(handled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sink::{lock, FakeSink};

    #[tokio::test]
    async fn commands_are_answered_to_watchers_and_the_rest_reaches_the_sink() {
        let terminal = TerminalAdapter::new();
        let sink = FakeSink::default();
        let key = ConversationKey::new("terminal", "local");
        let mut watcher = terminal.watch(&key);
        let said = terminal.say(&sink, &key, "/stop").await;
        assert!(matches!(said, Ok(Handled::Answer(_))), "{said:?}");
        assert_eq!(
            watcher.recv().await,
            Some(TerminalEvent::Notice {
                text: "⏹ Stop requested.".into()
            })
        );
        assert_eq!(*lock(&sink.cancelled), std::slice::from_ref(&key));
        for text in ["hello", "/reset"] {
            let said = terminal.say(&sink, &key, text).await;
            assert!(matches!(said, Ok(Handled::Accepted(_))), "{said:?}");
        }
        let texts: Vec<String> = lock(&sink.accepted)
            .iter()
            .map(|m| m.text.clone())
            .collect();
        assert_eq!(texts, ["hello", "/reset"]);
    }
}
