//! The gateway's payloads as our own types, read from the raw JSON of a dispatch.
//!
//! A dispatch is untrusted input: it is read field by field into these lenient types
//! (unknown fields ignored, odd ones failing only the one event), never into serenity's
//! full models, so that nothing Discord adds or a broken frame holds can stop the adapter
//! or reach a panic. Ids are snowflakes, which Discord sends as strings.

use serde::Deserialize;
use serde_json::Value;

/// Channel types that are threads (announcement, public and private threads).
pub const THREAD_TYPES: &[u8] = &[10, 11, 12];

/// One gateway frame: `{op, d, s, t}`.
#[derive(Debug, Deserialize)]
pub struct Frame {
    /// The opcode.
    pub op: u8,
    /// The payload.
    #[serde(default)]
    pub d: Value,
    /// The sequence number of a dispatch.
    #[serde(default)]
    pub s: Option<u64>,
    /// The event name of a dispatch.
    #[serde(default)]
    pub t: Option<String>,
}

/// The opcodes the adapter sends and receives.
pub(crate) mod op {
    /// An event (receive).
    pub const DISPATCH: u8 = 0;
    /// Keep-alive (send; may be requested by the gateway).
    pub const HEARTBEAT: u8 = 1;
    /// Start a session (send).
    pub const IDENTIFY: u8 = 2;
    /// Resume a session (send).
    pub const RESUME: u8 = 6;
    /// The gateway asks us to reconnect and resume (receive).
    pub const RECONNECT: u8 = 7;
    /// The session is invalid; `d` says whether it may be resumed (receive).
    pub const INVALID_SESSION: u8 = 9;
    /// The first frame, with the heartbeat interval (receive).
    pub const HELLO: u8 = 10;
    /// A heartbeat was received (receive).
    pub const HEARTBEAT_ACK: u8 = 11;
}

/// A user.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct User {
    pub id: String,
    pub username: String,
    pub global_name: Option<String>,
    pub bot: bool,
}

impl User {
    /// The name people see: the display name, else the username.
    pub fn display_name(&self) -> String {
        match &self.global_name {
            Some(name) if !name.is_empty() => name.clone(),
            _ if !self.username.is_empty() => self.username.clone(),
            _ => self.id.clone(),
        }
    }
}

/// A guild member, as attached to messages and interactions.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Member {
    pub roles: Vec<String>,
    pub user: Option<User>,
    pub nick: Option<String>,
}

/// A file attached to a message.
#[derive(Clone, Debug, Deserialize)]
pub struct Attachment {
    pub filename: String,
    #[serde(default)]
    pub size: Option<u64>,
    pub url: String,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// A message the bot replied to, or was replied to with (only its author matters).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Referenced {
    pub id: String,
    pub author: Option<User>,
}

/// A reference to another message.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reference {
    pub message_id: Option<String>,
}

/// A message (MESSAGE_CREATE).
#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    pub id: String,
    pub channel_id: String,
    #[serde(default)]
    pub guild_id: Option<String>,
    pub author: User,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub mentions: Vec<User>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub message_reference: Option<Reference>,
    #[serde(default)]
    pub referenced_message: Option<Box<Referenced>>,
    /// 0 default, 19 reply; others are system messages (joins, pins, thread starts).
    #[serde(rename = "type", default)]
    pub kind: u8,
    /// ISO 8601; only the date is read, for the seconds since the epoch.
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub webhook_id: Option<String>,
}

/// A channel (a thread, in THREAD_CREATE; any channel, in GUILD_CREATE).
#[derive(Clone, Debug, Deserialize)]
pub struct Channel {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: u8,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub owner_id: Option<String>,
}

impl Channel {
    /// Whether the channel is a thread (or a forum post, which is one).
    pub fn is_thread(&self) -> bool {
        THREAD_TYPES.contains(&self.kind)
    }
}

/// The parts of GUILD_CREATE the adapter keeps: which channels are threads of which.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Guild {
    pub id: String,
    pub threads: Vec<Channel>,
}

/// THREAD_LIST_SYNC: the active threads of some channels.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ThreadList {
    pub guild_id: String,
    pub threads: Vec<Channel>,
}

/// READY: who the bot is and how to resume.
#[derive(Debug, Deserialize)]
pub struct Ready {
    pub user: User,
    pub session_id: String,
    #[serde(default)]
    pub resume_gateway_url: Option<String>,
    #[serde(default)]
    pub application: Option<Application>,
}

/// The bot's application (its id names its slash commands and interaction webhooks).
#[derive(Debug, Deserialize)]
pub struct Application {
    pub id: String,
}

/// An option of a slash command (`/ask prompt:…`).
#[derive(Clone, Debug, Deserialize)]
pub struct CommandOption {
    pub name: String,
    #[serde(default)]
    pub value: Value,
}

/// What an application-command interaction holds.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CommandData {
    pub name: String,
    pub options: Vec<CommandOption>,
}

/// INTERACTION_CREATE (only application commands, type 2, are used).
#[derive(Clone, Debug, Deserialize)]
pub struct Interaction {
    pub id: String,
    pub application_id: String,
    #[serde(rename = "type")]
    pub kind: u8,
    pub token: String,
    #[serde(default)]
    pub data: Option<CommandData>,
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    /// The channel, with its type and parent (newer API versions send it).
    #[serde(default)]
    pub channel: Option<Channel>,
    /// The invoking member, in a guild.
    #[serde(default)]
    pub member: Option<Member>,
    /// The invoking user, in a DM.
    #[serde(default)]
    pub user: Option<User>,
}

impl Interaction {
    /// Who invoked it: the member's user in a guild, the user in a DM.
    pub fn invoker(&self) -> Option<&User> {
        self.member
            .as_ref()
            .and_then(|m| m.user.as_ref())
            .or(self.user.as_ref())
    }

    /// The string option `name`, if given.
    pub fn option(&self, name: &str) -> Option<&str> {
        let data = self.data.as_ref()?;
        let option = data.options.iter().find(|o| o.name == name)?;
        option.value.as_str()
    }
}

/// A dispatch the adapter acts on, read from its raw payload.
#[derive(Debug)]
pub enum Event {
    Ready(Box<Ready>),
    Resumed,
    Message(Box<Message>),
    Interaction(Box<Interaction>),
    /// THREAD_CREATE / THREAD_UPDATE, and channels created or updated.
    Channel(Channel),
    Guild(Guild),
    Threads(ThreadList),
    /// An event the adapter has no use for (typing, presence, reactions …).
    Ignored,
    /// An event name this code does not know (Discord adds them over time).
    Unknown,
}

/// Reads dispatch `t` with payload `d`; an error names what was wrong with it.
pub fn read(t: &str, d: Value) -> Result<Event, serde_json::Error> {
    Ok(match t {
        "READY" => Event::Ready(serde_json::from_value(d)?),
        "RESUMED" => Event::Resumed,
        "MESSAGE_CREATE" => Event::Message(serde_json::from_value(d)?),
        "INTERACTION_CREATE" => Event::Interaction(serde_json::from_value(d)?),
        "THREAD_CREATE" | "THREAD_UPDATE" | "CHANNEL_CREATE" | "CHANNEL_UPDATE" => {
            Event::Channel(serde_json::from_value(d)?)
        }
        "GUILD_CREATE" => Event::Guild(serde_json::from_value(d)?),
        "THREAD_LIST_SYNC" => Event::Threads(serde_json::from_value(d)?),
        name if KNOWN.contains(&name) => Event::Ignored,
        _ => Event::Unknown,
    })
}

/// Events the intents bring that the adapter does not act on.
const KNOWN: &[&str] = &[
    "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
    "CHANNEL_DELETE",
    "CHANNEL_PINS_UPDATE",
    "GUILD_UPDATE",
    "GUILD_DELETE",
    "GUILD_ROLE_CREATE",
    "GUILD_ROLE_UPDATE",
    "GUILD_ROLE_DELETE",
    "MESSAGE_UPDATE",
    "MESSAGE_DELETE",
    "MESSAGE_DELETE_BULK",
    "STAGE_INSTANCE_CREATE",
    "STAGE_INSTANCE_UPDATE",
    "STAGE_INSTANCE_DELETE",
    "THREAD_DELETE",
    "THREAD_MEMBER_UPDATE",
    "THREAD_MEMBERS_UPDATE",
    "TYPING_START",
    "PRESENCE_UPDATE",
    "MESSAGE_REACTION_ADD",
    "MESSAGE_REACTION_REMOVE",
];

/// Seconds since the epoch of an ISO 8601 timestamp (`2024-05-01T12:00:00.000000+00:00`);
/// 0 when it does not read (only ordering context by it).
pub fn epoch_seconds(timestamp: &str) -> u64 {
    let date = timestamp.get(..19).unwrap_or_default();
    let num = |range: std::ops::Range<usize>| date.get(range)?.parse::<i64>().ok();
    let (Some(y), Some(m), Some(d), Some(h), Some(min), Some(s)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return 0;
    };
    // Days from the civil date (Howard Hinnant's algorithm), then seconds.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + s).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_payloads_fail_one_event_and_unknown_names_are_told_apart() {
        assert!(read("MESSAGE_CREATE", json!({"id": 5})).is_err());
        assert!(read("MESSAGE_CREATE", json!("nonsense")).is_err());
        assert!(matches!(
            read("TYPING_START", json!({})),
            Ok(Event::Ignored)
        ));
        assert!(matches!(
            read("SOMETHING_NEW", json!(1)),
            Ok(Event::Unknown)
        ));
        let message = json!({"id": "1", "channel_id": "2", "content": "hi", "extra": [1],
            "author": {"id": "3", "username": "ann", "future": {"x": 1}}});
        assert!(matches!(
            read("MESSAGE_CREATE", message),
            Ok(Event::Message(_))
        ));
    }

    #[test]
    fn timestamps_read_as_epoch_seconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00+00:00"), 0);
        assert_eq!(
            epoch_seconds("2023-11-14T22:13:20.000000+00:00"),
            1_700_000_000
        );
        assert_eq!(epoch_seconds("garbage"), 0);
    }
}
