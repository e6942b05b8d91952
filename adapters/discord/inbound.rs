//! A Discord message or slash command as the router sees it: its conversation, whether the
//! bot was addressed, its text and files, and the command it holds (parsed by the shared
//! [`crate::command`]). No I/O here.

use super::wire::{self, Interaction, Message};
use super::PLATFORM;
use crate::command::{self, Command, Parsed};
use crate::{Attachment, ConversationKey, Inbound, MessageRef};

/// Who the bot is (from READY): needed to tell mentions of it and replies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The bot's user id.
    pub id: String,
    /// Its username.
    pub username: String,
}

/// Where a message was written, as far as conversations go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The channel id (of the thread, for a thread).
    pub channel: String,
    /// The thread's parent channel, when the channel is a thread.
    pub parent: Option<String>,
    /// Whether it is a DM.
    pub private: bool,
    /// A thread the bot opened for an answer: every message in it is for the bot.
    pub ours: bool,
}

impl Place {
    /// The conversation of this place: a DM or a channel is one; a thread is its own, keyed
    /// by its parent and itself.
    pub fn conversation(&self) -> ConversationKey {
        match &self.parent {
            Some(parent) => ConversationKey::new(PLATFORM, parent).with_thread(&self.channel),
            None => ConversationKey::new(PLATFORM, &self.channel),
        }
    }

    /// The channel whose allowlist entry admits this place (a thread's parent).
    pub fn allowlist_channel(&self) -> &str {
        self.parent.as_deref().unwrap_or(&self.channel)
    }
}

/// Where a conversation's messages go: the thread if it has one, else its channel.
pub fn target(conversation: &ConversationKey) -> &str {
    conversation.thread.as_deref().unwrap_or(&conversation.chat)
}

/// What became of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Translated {
    /// For the bridge (addressed or not), with the command it holds, if any.
    Message(Box<Inbound>, Option<Command>),
    /// Nothing the bridge reads (the bot's own message, a system message, no content).
    Skip(&'static str),
}

/// Translates one message written at `place`.
pub fn translate(message: &Message, me: &Identity, place: &Place) -> Translated {
    if message.author.id == me.id {
        return Translated::Skip("the bot's own message");
    }
    // 0: a message; 19: a reply. Joins, pins, thread starts … are not said by anyone.
    if !matches!(message.kind, 0 | 19) {
        return Translated::Skip("a system message");
    }
    let attachments = attachments(message);
    if message.content.trim().is_empty() && attachments.is_empty() {
        // Also what a message looks like when the message-content intent is off.
        return Translated::Skip("no text and no file");
    }
    let from_bot = message.author.bot || message.webhook_id.is_some();
    let mentioned = message.mentions.iter().any(|u| u.id == me.id)
        || message.content.contains(&format!("<@{}>", me.id))
        || message.content.contains(&format!("<@!{}>", me.id));
    let replied_to_bot = message
        .referenced_message
        .as_ref()
        .and_then(|m| m.author.as_ref())
        .is_some_and(|u| u.id == me.id);
    // Bots (others, and webhooks) never start a turn; what they say is context.
    let addressed = !from_bot && (place.private || place.ours || mentioned || replied_to_bot);
    let mut text = strip_mentions(&message.content, me);
    let mut command = None;
    if addressed {
        if let Parsed::Command {
            text: bare,
            command: known,
        } = command::parse(&text, None)
        {
            text = bare;
            command = known;
        }
    }
    let sender_name = message
        .member
        .as_ref()
        .and_then(|m| m.nick.clone())
        .unwrap_or_else(|| message.author.display_name());
    let reply_to = message
        .message_reference
        .as_ref()
        .and_then(|r| r.message_id.clone())
        .or_else(|| message.referenced_message.as_ref().map(|m| m.id.clone()))
        .map(MessageRef);
    let inbound = Inbound {
        id: message.id.clone(),
        conversation: place.conversation(),
        sender_id: message.author.id.clone(),
        sender_name,
        text,
        attachments,
        reply_to,
        addressed,
        at: wire::epoch_seconds(&message.timestamp),
    };
    Translated::Message(Box::new(inbound), command)
}

/// The option that carries a shared command's argument (`/pause args:3`).
pub const ARGUMENT: &str = "args";

/// A slash command as a message: `/ask` carries its prompt to the agent; the others are
/// the shared chat commands. `None`: a command the bridge does not offer.
pub fn interaction(
    interaction: &Interaction,
    place: &Place,
    at: u64,
) -> Option<(Inbound, Option<Command>)> {
    let data = interaction.data.as_ref()?;
    let invoker = interaction.invoker()?;
    let (text, command) = match data.name.as_str() {
        "ask" => (interaction.option("prompt")?.trim().to_string(), None),
        name => match command::parse(
            &match interaction.option(ARGUMENT) {
                Some(argument) => format!("/{name} {}", argument.trim()),
                None => format!("/{name}"),
            },
            None,
        ) {
            Parsed::Command {
                text,
                command: Some(command),
            } => (text, Some(command)),
            _ => return None,
        },
    };
    if text.is_empty() {
        return None;
    }
    let sender_name = interaction
        .member
        .as_ref()
        .and_then(|m| m.nick.clone())
        .unwrap_or_else(|| invoker.display_name());
    let inbound = Inbound {
        // Interaction ids are snowflakes too, never a message's id.
        id: interaction.id.clone(),
        conversation: place.conversation(),
        sender_id: invoker.id.clone(),
        sender_name,
        text,
        attachments: Vec::new(),
        reply_to: None,
        addressed: true,
        at,
    };
    Some((inbound, command))
}

/// `<@bot> what is up` → `what is up`; a mention of the bot further in reads `@name`.
fn strip_mentions(content: &str, me: &Identity) -> String {
    let forms = [format!("<@{}>", me.id), format!("<@!{}>", me.id)];
    let mut text = content.trim_start();
    for form in &forms {
        if let Some(rest) = text.strip_prefix(form.as_str()) {
            let rest = rest.trim_start_matches([',', ':', ' ', '\n']);
            if !rest.is_empty() {
                text = rest;
            }
        }
    }
    let handle = format!("@{}", me.username);
    forms.iter().fold(text.to_string(), |text, form| {
        text.replace(form.as_str(), &handle)
    })
}

/// The files of a message; the limit is kept again while downloading.
fn attachments(message: &Message) -> Vec<Attachment> {
    message
        .attachments
        .iter()
        .map(|a| Attachment {
            name: a.filename.clone(),
            mime: a.content_type.clone(),
            size: a.size,
            platform_ref: a.url.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Identity {
        Identity {
            id: "900".into(),
            username: "claw".into(),
        }
    }

    fn channel() -> Place {
        Place {
            channel: "50".into(),
            parent: None,
            private: false,
            ours: false,
        }
    }

    fn message(extra: serde_json::Value) -> Message {
        let mut value = json!({"id": "7", "channel_id": "50", "guild_id": "1", "type": 0,
            "timestamp": "2023-11-14T22:13:20.000000+00:00",
            "author": {"id": "5", "username": "ann", "global_name": "Ann"}});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn inbound(t: Translated) -> (Inbound, Option<Command>) {
        match t {
            Translated::Message(i, c) => (*i, c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mentions_and_replies_address_the_bot_and_chatter_does_not() {
        let cases = [
            (
                json!({"content": "<@900> what is up?", "mentions": [{"id": "900"}]}),
                true,
                "what is up?",
            ),
            (json!({"content": "hey <@!900>"}), true, "hey @claw"),
            (json!({"content": "just chatting"}), false, "just chatting"),
            (
                json!({"content": "sure", "type": 19, "message_reference": {"message_id": "3"},
                "referenced_message": {"id": "3", "author": {"id": "900"}}}),
                true,
                "sure",
            ),
        ];
        for (extra, addressed, text) in cases {
            let (i, _) = inbound(translate(&message(extra.clone()), &me(), &channel()));
            assert_eq!((i.addressed, i.text.as_str()), (addressed, text), "{extra}");
            assert_eq!(i.conversation, ConversationKey::new("discord", "50"));
            assert_eq!((i.sender_name.as_str(), i.at), ("Ann", 1_700_000_000));
        }
    }

    #[test]
    fn bots_never_start_a_turn_and_the_own_messages_are_skipped() {
        let bot =
            json!({"content": "<@900> do it", "author": {"id": "6", "username": "b", "bot": true}});
        let (i, _) = inbound(translate(&message(bot), &me(), &channel()));
        assert!(!i.addressed);
        let own =
            json!({"content": "hi", "author": {"id": "900", "username": "claw", "bot": true}});
        assert!(matches!(
            translate(&message(own), &me(), &channel()),
            Translated::Skip(_)
        ));
        let joined = json!({"content": "", "type": 7});
        assert!(matches!(
            translate(&message(joined), &me(), &channel()),
            Translated::Skip(_)
        ));
    }

    #[test]
    fn threads_and_dms_are_conversations_of_their_own() {
        let thread = Place {
            channel: "77".into(),
            parent: Some("50".into()),
            private: false,
            ours: false,
        };
        let (i, _) = inbound(translate(&message(json!({"content": "x"})), &me(), &thread));
        assert_eq!(
            i.conversation,
            ConversationKey::new("discord", "50").with_thread("77")
        );
        assert_eq!(target(&i.conversation), "77");
        assert_eq!(thread.allowlist_channel(), "50");
        let dm = Place {
            channel: "60".into(),
            parent: None,
            private: true,
            ours: false,
        };
        let (i, c) = inbound(translate(
            &message(json!({"content": "/status"})),
            &me(),
            &dm,
        ));
        assert!(i.addressed);
        assert!(matches!(c, Some(Command::Status(_))));
    }

    #[test]
    fn slash_commands_become_messages() {
        let ask: Interaction = serde_json::from_value(json!({"id": "11", "application_id": "2",
            "type": 2, "token": "t", "channel_id": "50",
            "data": {"name": "ask", "options": [{"name": "prompt", "type": 3, "value": "why?"}]},
            "member": {"roles": ["8"], "user": {"id": "5", "username": "ann"}}}))
        .unwrap_or_else(|e| panic!("{e}"));
        let (i, c) = interaction(&ask, &channel(), 0).unwrap_or_else(|| panic!("no message"));
        assert_eq!(
            (i.text.as_str(), i.sender_id.as_str(), c),
            ("why?", "5", None)
        );
        let mut stop = ask.clone();
        stop.data = Some(wire::CommandData {
            name: "stop".into(),
            options: Vec::new(),
        });
        let (_, c) = interaction(&stop, &channel(), 0).unwrap_or_else(|| panic!("no message"));
        assert!(matches!(c, Some(Command::Stop(_))));
        // A shared command's argument comes as its `args` option.
        let mut pause = ask.clone();
        pause.data = Some(wire::CommandData {
            name: "pause".into(),
            options: vec![wire::CommandOption {
                name: ARGUMENT.into(),
                value: json!(" 3 "),
            }],
        });
        let (_, c) = interaction(&pause, &channel(), 0).unwrap_or_else(|| panic!("no message"));
        match c {
            Some(Command::Pause(p)) => assert_eq!(p.args, "3"),
            other => panic!("{other:?}"),
        }
    }
}
