//! The few types every part of clawpen shares, and that the store keeps: which conversation
//! something belongs to, a message from a platform, a platform's message id, and the ids of
//! turns and boxes. Adapters and the core both depend on this crate; neither owns these.
//!
//! Ids are newtypes, so that a turn id, a box's container id and a platform message id never
//! pass for each other. Their serialized form is the bare string, as before they were types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which conversation something belongs to: (platform, chat, optional thread).
///
/// It is the key of everything clawpen keeps: the box, the inbound log, delivery state.
/// Its text form is `platform:chat` or `platform:chat:thread`, with `%` and `:` inside a
/// part escaped as `%25` and `%3A`, so that any platform id round-trips.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey {
    /// The adapter's platform name, e.g. `telegram`, `discord`, `terminal`.
    pub platform: String,
    /// The platform's chat (or channel) id.
    pub chat: String,
    /// A thread or forum topic inside the chat, which is a conversation of its own.
    pub thread: Option<String>,
}

impl ConversationKey {
    /// A conversation without a thread.
    pub fn new(platform: impl Into<String>, chat: impl Into<String>) -> Self {
        Self {
            platform: platform.into(),
            chat: chat.into(),
            thread: None,
        }
    }

    /// The same chat, narrowed to a thread.
    pub fn with_thread(mut self, thread: impl Into<String>) -> Self {
        self.thread = Some(thread.into());
        self
    }
}

fn escape_part(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

fn unescape_part(part: &str) -> String {
    part.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%25", "%")
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            escape_part(&self.platform),
            escape_part(&self.chat)
        )?;
        if let Some(thread) = &self.thread {
            write!(f, ":{}", escape_part(thread))?;
        }
        Ok(())
    }
}

/// A conversation key's text form did not parse.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a conversation key (expected platform:chat or platform:chat:thread)")]
pub struct BadConversationKey(pub String);

impl FromStr for ConversationKey {
    type Err = BadConversationKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || BadConversationKey(s.to_string());
        match parts.as_slice() {
            [p, c] if !p.is_empty() && !c.is_empty() => {
                Ok(Self::new(unescape_part(p), unescape_part(c)))
            }
            [p, c, t] if !p.is_empty() && !c.is_empty() && !t.is_empty() => {
                Ok(Self::new(unescape_part(p), unescape_part(c)).with_thread(unescape_part(t)))
            }
            _ => Err(bad()),
        }
    }
}

/// A platform's id of one message it holds (sent by us or by a user).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRef(pub String);

impl fmt::Display for MessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file that came with an inbound message; the adapter can fetch its bytes on demand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name to give it in the workspace.
    pub name: String,
    /// The MIME type, when the platform says.
    pub mime: Option<String>,
    /// Size in bytes, when the platform says (used to refuse oversized files early).
    pub size: Option<u64>,
    /// The platform's handle for fetching it (a Telegram file_id, a Discord URL).
    pub platform_ref: String,
}

/// One message from a platform, as the router sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// The platform's id of this message, unique within its conversation: the dedupe key.
    pub id: String,
    /// Which conversation it belongs to.
    pub conversation: ConversationKey,
    /// The sender's platform id.
    pub sender_id: String,
    /// The sender's display name, given to the agent.
    pub sender_name: String,
    /// The message text.
    pub text: String,
    /// Files that came with it.
    pub attachments: Vec<Attachment>,
    /// The message it replies to, if any.
    pub reply_to: Option<MessageRef>,
    /// Whether the bot was addressed (mention, reply, trigger word, DM); others are context.
    pub addressed: bool,
    /// When it was sent, in seconds since the Unix epoch.
    pub at: u64,
}

/// Declares a string id newtype: serialized as the bare string, shown as it is.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_string())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

string_id!(
    /// One turn of a conversation: the bridge's request to its box and the reply to it,
    /// shared with the agent (which names the turns it begins itself).
    TurnId
);

string_id!(
    /// A box: the Docker engine's id (or name) of a conversation's container.
    ContainerId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_key_round_trips_through_text() {
        let plain = ConversationKey::new("telegram", "-100123");
        assert_eq!(plain.to_string(), "telegram:-100123");
        assert_eq!(
            plain.to_string().parse::<ConversationKey>().ok(),
            Some(plain)
        );

        let odd = ConversationKey::new("terminal", "a:b%c").with_thread("t:1");
        let text = odd.to_string();
        assert_eq!(text, "terminal:a%3Ab%25c:t%3A1");
        assert_eq!(text.parse::<ConversationKey>().ok(), Some(odd));
    }

    #[test]
    fn malformed_conversation_keys_are_refused() {
        for bad in ["", "telegram", "telegram:", ":1", "a:b:c:d", "a:b:"] {
            assert!(bad.parse::<ConversationKey>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ids_are_stored_as_bare_strings() {
        let turn = TurnId::from("t1");
        assert_eq!(serde_json::to_string(&turn).ok().as_deref(), Some("\"t1\""));
        assert_eq!(turn.to_string(), "t1");
        assert!(turn == *"t1");
    }
}
