//! A Telegram message as the router sees it: its conversation, whether the bot was
//! addressed, its text and files, and the command it holds (parsed by the shared
//! [`crate::command`], with Telegram's `/name@bot` rule). No I/O here.
//!
//! The message is our own [`wire::Message`], read from the raw update, so whatever the
//! Bot API adds (a new entity type, a new media kind) never hides its text or files.

use super::wire::{self, Message, User};
use super::PLATFORM;
use crate::command::{self, Command, Parsed};
use crate::{Attachment, ConversationKey, Inbound, MessageRef};

/// Who the bot is (from `getMe`): needed to tell mentions of it and replies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The bot's user id.
    pub id: i64,
    /// Its @username, without the @.
    pub username: String,
}

/// What became of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Translated {
    /// For the bridge (addressed or not), with the command it holds, if any.
    Message(Box<Inbound>, Option<Command>),
    /// Nothing the bridge reads and nothing the sender expects an answer to (a service
    /// message, the bot's own).
    Skip(&'static str),
    /// A message someone sent with nothing the bridge can use (a sticker, a poll, a kind
    /// of content newer than this code): skipped, but the operator should hear of it.
    Unusable(&'static str),
}

/// Fields of a message that make it a service message (someone joined, a title changed, a
/// message was pinned …) rather than something a person said.
const SERVICE_FIELDS: &[&str] = &[
    "new_chat_members",
    "left_chat_member",
    "new_chat_title",
    "new_chat_photo",
    "delete_chat_photo",
    "group_chat_created",
    "supergroup_chat_created",
    "channel_chat_created",
    "message_auto_delete_timer_changed",
    "migrate_to_chat_id",
    "migrate_from_chat_id",
    "pinned_message",
    "forum_topic_created",
    "forum_topic_edited",
    "forum_topic_closed",
    "forum_topic_reopened",
    "general_forum_topic_hidden",
    "general_forum_topic_unhidden",
    "video_chat_scheduled",
    "video_chat_started",
    "video_chat_ended",
    "video_chat_participants_invited",
    "boost_added",
    "chat_background_set",
    "users_shared",
    "chat_shared",
    "write_access_allowed",
    "proximity_alert_triggered",
];

/// Whether the raw message is a service message (see [`SERVICE_FIELDS`]).
pub fn is_service(raw: &serde_json::Value) -> bool {
    SERVICE_FIELDS.iter().any(|f| raw.get(f).is_some())
}

/// Translates one message. `trigger` is the configured trigger word, if any.
pub fn translate(message: &Message, me: &Identity, trigger: Option<&str>) -> Translated {
    if message.from.as_ref().is_some_and(|from| from.id == me.id) {
        return Translated::Skip("the bot's own message");
    }
    // An anonymous group admin (or a channel) writes as a chat: `from` is then only a
    // placeholder bot, and the chat's id is the sender that allowlists name.
    let (sender_id, sender_name) = match (&message.sender_chat, &message.from) {
        (Some(chat), _) => (
            chat.id.to_string(),
            chat.title
                .clone()
                .unwrap_or_else(|| "anonymous admin".into()),
        ),
        (None, Some(from)) => (from.id.to_string(), display_name(from)),
        (None, None) => return Translated::Skip("no sender"),
    };
    let mut text = message
        .text
        .as_deref()
        .or(message.caption.as_deref())
        .unwrap_or_default()
        .to_string();
    let attachments = attachments(message);
    if text.trim().is_empty() && attachments.is_empty() {
        return Translated::Unusable("no text and no file the bridge can read");
    }
    let mut conversation = ConversationKey::new(PLATFORM, message.chat.id.to_string());
    if let (true, Some(thread)) = (message.is_topic_message, message.message_thread_id) {
        conversation = conversation.with_thread(thread.to_string());
    }
    let private = message.chat.is_private();
    let (command, for_us) = match command::parse(&text, Some(&me.username)) {
        Parsed::Command {
            text: bare,
            command,
        } => {
            text = bare;
            (command, true)
        }
        Parsed::Text => (None, false),
    };
    let replied_to_bot = message
        .reply_to_message
        .as_ref()
        .and_then(|m| m.from.as_ref())
        .is_some_and(|u| u.id == me.id);
    let addressed = private
        || for_us
        || replied_to_bot
        || mentions(message, &text, me)
        || trigger.is_some_and(|t| contains_word(&text.to_lowercase(), &t.to_lowercase()));
    let inbound = Inbound {
        id: message.message_id.to_string(),
        conversation,
        sender_id,
        sender_name,
        text: strip_leading_mention(&text, &me.username).to_string(),
        attachments,
        reply_to: message
            .reply_to_message
            .as_ref()
            .map(|m| MessageRef(m.message_id.to_string())),
        addressed,
        at: u64::try_from(message.date).unwrap_or(0),
    };
    Translated::Message(Box::new(inbound), command)
}

/// Whether the message mentions the bot: `@username` in its text, or a mention entity
/// pointing at the bot's user (a mention of a bot without a username).
fn mentions(message: &Message, text: &str, me: &Identity) -> bool {
    let handle = format!("@{}", me.username.to_lowercase());
    let text_mention = message
        .entities()
        .any(|e| e.kind == "text_mention" && e.user.as_ref().is_some_and(|user| user.id == me.id));
    text_mention || (!me.username.is_empty() && contains_word(&text.to_lowercase(), &handle))
}

/// Whether `needle` occurs in `haystack` with no word character on either side.
pub fn contains_word(haystack: &str, needle: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    !needle.is_empty()
        && haystack.match_indices(needle).any(|(at, _)| {
            !word(haystack[..at].chars().next_back())
                && !word(haystack[at + needle.len()..].chars().next())
        })
}

/// `@bot, what is up` → `what is up`: the agent needs no reminder it was called.
fn strip_leading_mention<'a>(text: &'a str, username: &str) -> &'a str {
    let handle_len = username.len() + 1;
    let starts = text.len() > handle_len
        && text.is_char_boundary(handle_len)
        && text[..handle_len].eq_ignore_ascii_case(&format!("@{username}"))
        && !text[handle_len..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
    if !starts || username.is_empty() {
        return text;
    }
    let rest = text[handle_len..].trim_start_matches([',', ':', ' ', '\n']);
    if rest.is_empty() {
        text
    } else {
        rest
    }
}

fn display_name(user: &User) -> String {
    match (&user.last_name, &user.username) {
        (Some(last), _) => format!("{} {last}", user.first_name),
        (None, _) if !user.first_name.is_empty() => user.first_name.clone(),
        (None, Some(username)) => username.clone(),
        (None, None) => user.id.to_string(),
    }
}

/// The files of a message: the largest size of a photo, a document, a voice note, audio
/// or video. Names are made up where Telegram has none; a size Telegram does not give is
/// unknown, and the limit is then kept while downloading.
fn attachments(message: &Message) -> Vec<Attachment> {
    let file = |name: String, mime: Option<String>, file: &wire::File| Attachment {
        name,
        mime,
        size: file.file_size,
        platform_ref: file.file_id.clone(),
    };
    let mut found = Vec::new();
    let photo = message
        .photo
        .iter()
        .filter_map(|p| p.0.as_ref())
        .max_by_key(|p| p.width.saturating_mul(p.height));
    if let Some(photo) = photo {
        found.push(Attachment {
            name: format!("photo-{}.jpg", photo.file_unique_id),
            mime: Some("image/jpeg".into()),
            size: photo.file_size,
            platform_ref: photo.file_id.clone(),
        });
    }
    if let Some(doc) = &message.document {
        let name = doc
            .file_name
            .clone()
            .unwrap_or_else(|| format!("document-{}", doc.file_unique_id));
        found.push(file(name, doc.mime_type.clone(), doc));
    }
    if let Some(voice) = &message.voice {
        let name = format!("voice-{}.ogg", voice.file_unique_id);
        let mime = voice
            .mime_type
            .clone()
            .unwrap_or_else(|| "audio/ogg".into());
        found.push(file(name, Some(mime), voice));
    }
    if let Some(audio) = &message.audio {
        let name = audio
            .file_name
            .clone()
            .unwrap_or_else(|| format!("audio-{}", audio.file_unique_id));
        found.push(file(name, audio.mime_type.clone(), audio));
    }
    if let Some(video) = &message.video {
        let name = video
            .file_name
            .clone()
            .unwrap_or_else(|| format!("video-{}.mp4", video.file_unique_id));
        found.push(file(name, video.mime_type.clone(), video));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Identity {
        Identity {
            id: 999,
            username: "ClawBot".into(),
        }
    }

    fn message(chat: serde_json::Value, extra: serde_json::Value) -> Message {
        let mut value = json!({
            "message_id": 10,
            "date": 1_700_000_000,
            "chat": chat,
            "from": {"id": 5, "is_bot": false, "first_name": "Ann", "last_name": "Lee"},
        });
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn private() -> serde_json::Value {
        json!({"id": 5, "type": "private", "first_name": "Ann"})
    }

    fn group() -> serde_json::Value {
        json!({"id": -100_123, "type": "supergroup", "title": "Team", "is_forum": true})
    }

    fn inbound(t: Translated) -> Inbound {
        match t {
            Translated::Message(i, None) => *i,
            other => panic!("expected a message without a command, got {other:?}"),
        }
    }

    #[test]
    fn a_private_message_is_addressed_in_its_own_conversation() {
        let m = message(private(), json!({"text": "hello"}));
        let i = inbound(translate(&m, &me(), None));
        assert_eq!(i.conversation, ConversationKey::new("telegram", "5"));
        assert!(i.addressed);
        assert_eq!(
            (i.id.as_str(), i.sender_name.as_str(), i.at),
            ("10", "Ann Lee", 1_700_000_000)
        );
    }

    #[test]
    fn in_groups_mentions_replies_and_the_trigger_address_the_bot() {
        let cases = [
            (
                json!({"text": "@clawbot, what is up?"}),
                true,
                "what is up?",
            ),
            (json!({"text": "hey @ClawBot"}), true, "hey @ClawBot"),
            (json!({"text": "@clawbotty hi"}), false, "@clawbotty hi"),
            (json!({"text": "Claw, help"}), true, "Claw, help"),
            (json!({"text": "clawing around"}), false, "clawing around"),
            (json!({"text": "just chatting"}), false, "just chatting"),
            (
                json!({"text": "sure", "reply_to_message": {
                    "message_id": 3, "date": 1, "chat": group(),
                    "from": {"id": 999, "is_bot": true, "first_name": "Claw"}, "text": "?"}}),
                true,
                "sure",
            ),
        ];
        for (extra, addressed, text) in cases {
            let i = inbound(translate(
                &message(group(), extra.clone()),
                &me(),
                Some("claw"),
            ));
            assert_eq!((i.addressed, i.text.as_str()), (addressed, text), "{extra}");
        }
    }

    #[test]
    fn forum_topics_are_conversations_of_their_own() {
        let extra =
            json!({"text": "hi @clawbot", "message_thread_id": 77, "is_topic_message": true});
        let i = inbound(translate(&message(group(), extra), &me(), None));
        assert_eq!(
            i.conversation,
            ConversationKey::new("telegram", "-100123").with_thread("77")
        );
        // A reply thread outside a forum topic stays in the chat's conversation.
        let extra = json!({"text": "hi @clawbot", "message_thread_id": 78});
        let i = inbound(translate(&message(group(), extra), &me(), None));
        assert_eq!(i.conversation.thread, None);
    }

    #[test]
    fn commands_lose_their_bot_suffix_and_others_bots_commands_are_chatter() {
        let t = translate(
            &message(group(), json!({"text": "/status@ClawBot"})),
            &me(),
            None,
        );
        assert!(
            matches!(t, Translated::Message(_, Some(Command::Status(_)))),
            "{t:?}"
        );
        let t = translate(
            &message(group(), json!({"text": "/reset@clawbot now"})),
            &me(),
            None,
        );
        let Translated::Message(i, Some(Command::Reset(_))) = t else {
            panic!("{t:?}");
        };
        assert_eq!((i.text.as_str(), i.addressed), ("/reset now", true));
        let i = inbound(translate(
            &message(group(), json!({"text": "/stop@OtherBot"})),
            &me(),
            None,
        ));
        assert_eq!((i.text.as_str(), i.addressed), ("/stop@OtherBot", false));
        let t = translate(&message(private(), json!({"text": "/stop"})), &me(), None);
        assert!(matches!(t, Translated::Message(_, Some(Command::Stop(_)))));
    }

    #[test]
    fn files_become_attachments_and_empty_messages_are_skipped() {
        let photo = |id: &str, w: u32, size: u32| json!({"file_id": id, "file_unique_id": format!("u{id}"), "width": w, "height": w, "file_size": size});
        let extra = json!({"caption": "look", "photo": [photo("s", 90, 10), photo("l", 800, 900), photo("m", 320, 100)]});
        let i = inbound(translate(&message(private(), extra), &me(), None));
        assert_eq!(i.text, "look");
        assert_eq!(
            i.attachments,
            [Attachment {
                name: "photo-ul.jpg".into(),
                mime: Some("image/jpeg".into()),
                size: Some(900),
                platform_ref: "l".into(),
            }]
        );
        let extra = json!({"document": {"file_id": "d", "file_unique_id": "ud", "file_name": "report.pdf",
            "mime_type": "application/pdf", "file_size": 3}});
        let i = inbound(translate(&message(private(), extra), &me(), None));
        assert_eq!(i.attachments[0].name, "report.pdf");
        assert_eq!(i.attachments[0].mime.as_deref(), Some("application/pdf"));
        let extra = json!({"voice": {"file_id": "v", "file_unique_id": "uv", "duration": 2,
            "mime_type": "audio/ogg", "file_size": 5}});
        let i = inbound(translate(&message(private(), extra), &me(), None));
        assert_eq!(i.attachments[0].name, "voice-uv.ogg");
        let extra = json!({"sticker": {"file_id": "s", "file_unique_id": "us", "type": "regular",
            "width": 1, "height": 1, "is_animated": false, "is_video": false, "file_size": 1}});
        assert!(matches!(
            translate(&message(private(), extra), &me(), None),
            Translated::Unusable(_)
        ));
    }

    #[test]
    fn an_anonymous_admin_speaks_as_the_group() {
        let extra = json!({"text": "@ClawBot status?",
            "from": {"id": 1_087_968_824, "is_bot": true, "first_name": "Group",
                "username": "GroupAnonymousBot"},
            "sender_chat": {"id": -100_123, "type": "supergroup", "title": "Team"}});
        let i = inbound(translate(&message(group(), extra), &me(), None));
        assert_eq!(
            (i.sender_id.as_str(), i.sender_name.as_str()),
            ("-100123", "Team")
        );
    }

    #[test]
    fn new_entity_types_and_missing_sizes_hide_nothing() {
        // Bot API 9.5's `date_time`, unknown to teloxide 0.17, and an entity of a shape
        // nobody documented: the text and the mention still count.
        let extra = json!({"text": "@ClawBot meet at 10:00?", "entities": [
            {"type": "mention", "offset": 0, "length": 8},
            {"type": "date_time", "offset": 17, "length": 5, "unix_time": 1_700_000_000},
            {"type": 7}]});
        let i = inbound(translate(&message(group(), extra), &me(), None));
        assert_eq!((i.text.as_str(), i.addressed), ("meet at 10:00?", true));
        let extra = json!({"document": {"file_id": "d", "file_unique_id": "ud"}});
        let i = inbound(translate(&message(private(), extra), &me(), None));
        assert_eq!(i.attachments[0].size, None, "unknown, not u32::MAX");
        assert_eq!(i.attachments[0].name, "document-ud");
    }
}
