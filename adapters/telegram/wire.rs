//! The Bot API objects the bridge reads from an update, as our own types.
//!
//! Updates are untrusted input, so they are not read with teloxide's types: its
//! deserializer panics on some shapes (a `message_reaction` with neither `user` nor
//! `actor_chat`, a sticker flagged both animated and video), and the release profile aborts
//! on a panic, so one such update would crash the daemon again after every restart. These
//! types are plain serde derives with nothing that can panic, and they read only what the
//! bridge uses. Only the fields a message cannot do without (`message_id`, `chat.id`) are
//! strict; any other field of an unexpected shape reads as absent ([`lenient`]), so a new
//! entity type or a changed optional object never hides a message's text or files.

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// The update kinds the Bot API documents besides `message`: the bridge takes no part in
/// them, so they are skipped quietly. Any other kind is new and is skipped with a warning.
const KNOWN_KINDS: &[&str] = &[
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
];

/// What one update is to the bridge.
#[derive(Debug)]
pub enum Update {
    /// A message, read.
    Message(Box<Message>),
    /// A kind the Bot API documents that the bridge takes no part in.
    Ignored(String),
    /// A kind the Bot API did not document when this was written.
    Unknown(Vec<String>),
    /// A message that cannot be read, and why.
    Malformed(String),
}

/// Reads an update (its `update_id` is read by the caller). Never panics, whatever `value`.
pub fn read(value: &Value) -> Update {
    let Some(object) = value.as_object() else {
        return Update::Malformed("the update is not a JSON object".into());
    };
    if let Some(message) = object.get("message") {
        return match Message::deserialize(message) {
            Ok(message) => Update::Message(Box::new(message)),
            Err(error) => Update::Malformed(error.to_string()),
        };
    }
    let kinds: Vec<String> = object
        .keys()
        .filter(|k| *k != "update_id")
        .cloned()
        .collect();
    match kinds.iter().find(|k| KNOWN_KINDS.contains(&k.as_str())) {
        Some(kind) => Update::Ignored(kind.clone()),
        None => Update::Unknown(kinds),
    }
}

/// A field read as its default when it is absent, null or of an unexpected shape.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = Value::deserialize(deserializer)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

/// A message (only what the bridge reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Message {
    /// Unique within its chat.
    pub message_id: i64,
    /// When it was sent, in seconds since the Unix epoch.
    #[serde(default, deserialize_with = "lenient")]
    pub date: i64,
    /// The chat it belongs to.
    pub chat: Chat,
    /// Its sender; absent in channels, and a placeholder user for anonymous admins.
    #[serde(default, deserialize_with = "lenient")]
    pub from: Option<User>,
    /// The chat it was sent on behalf of: the group itself for an anonymous admin, or a
    /// channel (whose `from` is then a placeholder bot).
    #[serde(default, deserialize_with = "lenient")]
    pub sender_chat: Option<Chat>,
    /// The forum topic or reply thread it belongs to.
    #[serde(default, deserialize_with = "lenient")]
    pub message_thread_id: Option<i64>,
    /// Whether it was sent in a forum topic.
    #[serde(default, deserialize_with = "lenient")]
    pub is_topic_message: bool,
    /// The message it replies to.
    #[serde(default, deserialize_with = "lenient")]
    pub reply_to_message: Option<Box<Message>>,
    /// Its text, for a text message.
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<String>,
    /// The caption of a photo, document, audio or video.
    #[serde(default, deserialize_with = "lenient")]
    pub caption: Option<String>,
    /// Mentions, links and formatting in `text`; each read on its own.
    #[serde(default, deserialize_with = "lenient")]
    pub entities: Vec<Lenient<Entity>>,
    /// The same for `caption`.
    #[serde(default, deserialize_with = "lenient")]
    pub caption_entities: Vec<Lenient<Entity>>,
    /// A photo in several sizes.
    #[serde(default, deserialize_with = "lenient")]
    pub photo: Vec<Lenient<PhotoSize>>,
    /// A general file.
    #[serde(default, deserialize_with = "lenient")]
    pub document: Option<File>,
    /// A voice note.
    #[serde(default, deserialize_with = "lenient")]
    pub voice: Option<File>,
    /// The group became this supergroup (a service message in the old group).
    #[serde(default, deserialize_with = "lenient")]
    pub migrate_to_chat_id: Option<i64>,
    /// The supergroup was this group (a service message in the new supergroup).
    #[serde(default, deserialize_with = "lenient")]
    pub migrate_from_chat_id: Option<i64>,
    /// A music file.
    #[serde(default, deserialize_with = "lenient")]
    pub audio: Option<File>,
    /// A video.
    #[serde(default, deserialize_with = "lenient")]
    pub video: Option<File>,
}

impl Message {
    /// The entities of its text, or of its caption: those that could be read.
    pub fn entities(&self) -> impl Iterator<Item = &Entity> {
        let entities = if self.text.is_some() {
            &self.entities
        } else {
            &self.caption_entities
        };
        entities.iter().filter_map(|e| e.0.as_ref())
    }
}

/// An item of a list read on its own: `None` if it has an unexpected shape, so that one odd
/// item does not cost the others.
#[derive(Clone, Debug, Default)]
pub struct Lenient<T>(pub Option<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Self(T::deserialize(value).ok()))
    }
}

/// A chat.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Chat {
    /// Positive for users, negative for groups and channels.
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: String,
    /// The title of a group or channel.
    #[serde(default, deserialize_with = "lenient")]
    pub title: Option<String>,
}

impl Chat {
    /// Whether it is a private chat with a user.
    pub fn is_private(&self) -> bool {
        self.kind == "private" || (self.kind.is_empty() && self.id > 0)
    }
}

/// A user or bot.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct User {
    /// The user id.
    pub id: i64,
    /// First name (may be empty for deleted accounts).
    #[serde(default, deserialize_with = "lenient")]
    pub first_name: String,
    /// Last name.
    #[serde(default, deserialize_with = "lenient")]
    pub last_name: Option<String>,
    /// @username without the @.
    #[serde(default, deserialize_with = "lenient")]
    pub username: Option<String>,
}

/// A special part of a text: a mention, a link, formatting. Its type is a plain string, so
/// types added to the Bot API later (`date_time` in 9.5) read like any other.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Entity {
    /// `mention`, `text_mention`, `bold`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The user a `text_mention` points at.
    #[serde(default, deserialize_with = "lenient")]
    pub user: Option<User>,
}

/// One size of a photo.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PhotoSize {
    /// For downloading it.
    pub file_id: String,
    /// The same for every bot; used in file names.
    #[serde(default, deserialize_with = "lenient")]
    pub file_unique_id: String,
    /// Width in pixels.
    #[serde(default, deserialize_with = "lenient")]
    pub width: u64,
    /// Height in pixels.
    #[serde(default, deserialize_with = "lenient")]
    pub height: u64,
    /// Size in bytes; optional in the API.
    #[serde(default, deserialize_with = "lenient")]
    pub file_size: Option<u64>,
}

/// A document, voice note, audio or video file.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct File {
    /// For downloading it.
    pub file_id: String,
    /// The same for every bot; used in file names.
    #[serde(default, deserialize_with = "lenient")]
    pub file_unique_id: String,
    /// Its name as the sender had it.
    #[serde(default, deserialize_with = "lenient")]
    pub file_name: Option<String>,
    /// Its MIME type as the sender's client said.
    #[serde(default, deserialize_with = "lenient")]
    pub mime_type: Option<String>,
    /// Size in bytes; optional in the API (unknown: the limit is kept while downloading).
    #[serde(default, deserialize_with = "lenient")]
    pub file_size: Option<u64>,
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
