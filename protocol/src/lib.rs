//! The box protocol: what the clawpen bridge and clawpen-agent say to each other.
//!
//! The box's only channel is its attached stdin/stdout, reached through the Docker API.
//! Both directions carry line-delimited JSON, one message per line, each with a `type`.
//!
//! - The bridge writes [`ToAgent`] lines to the box's stdin: turns, follow-ups, cancels,
//!   acknowledgements, and a [`ToAgent::Resume`] after every (re-)attach.
//! - clawpen-agent writes [`FromAgent`] lines to stdout. Everything that is part of a reply
//!   is an [`Event`] with a sequence number; the agent keeps every event until the bridge
//!   acknowledges it, and replays the unacknowledged ones on `Resume`. That is how a bridge
//!   restart mid-turn neither loses nor repeats any part of a reply.
//!
//! Sequence numbers start at 1 in every agent process and grow by one per event.
//! A line that does not parse is answered with [`FromAgent::Rejected`] /
//! [`ToAgent::Rejected`] and otherwise ignored; it never ends the session.
//!
//! # Versions
//!
//! Each side names its [`VERSION`]: the bridge in every [`ToAgent::Resume`], the agent in
//! [`FromAgent::Ready`] and [`FromAgent::State`]. They speak the lower of the two; a side
//! refuses only a peer older than its [`MIN_VERSION`]. Both directions ignore fields they
//! do not know, which is how later versions add to a message without breaking earlier
//! peers; a message type a peer does not know is only sent once it has said it knows it.
//!
//! - 1: the first protocol. Its agents refuse a `Resume` of any other version with
//!   `Rejected { reason: "protocol version N is not supported; this agent speaks 1" }`,
//!   so a later bridge resumes such an agent again at version 1 ([`spoken_version`]).
//! - 2 ([`WINDOW_VERSION`]): flow control of answers. An agent that knows its bridge
//!   speaks 2 gives every [`FromAgent::Request`] a `window`: how many [`ResponsePart`]s the
//!   bridge may send before the agent grants more with [`FromAgent::Credit`] as its reader
//!   takes them. A request without a window (from an agent of version 1, or one that has
//!   not heard the bridge's version yet) is answered without flow control, as in version 1.
//!   `State` names the agent's version.
//! - 3 ([`TASKS_VERSION`]): scheduled tasks. The box may send the requests
//!   [`Request::ScheduleTask`], [`Request::ListTasks`], [`Request::PauseTask`],
//!   [`Request::ResumeTask`] and [`Request::CancelTask`], answered like a fetch (`Head`,
//!   one `Body` of text for the model, `End`) or with `Failed` and the reason. An agent
//!   sends them only to a bridge that resumed it at version 3 or later (a bridge of
//!   version 2 could not read them); earlier agents never send them and work as before.
//!   A scheduled run reaches the agent as a [`TurnMessage`] whose id is
//!   `task:<id>:<due unix time>` ([`scheduled_task`]), which no platform's ids look like.

use serde::{Deserialize, Serialize};

mod task;

pub use task::{scheduled_task, TaskSpec};

/// The protocol version this side speaks; see the crate docs for what each one added.
pub const VERSION: u32 = 3;

/// The oldest version of the other side that this side still speaks with.
pub const MIN_VERSION: u32 = 1;

/// The first version with flow control of answers ([`FromAgent::Credit`]).
pub const WINDOW_VERSION: u32 = 2;

/// The first version whose bridge performs the scheduled-task requests.
pub const TASKS_VERSION: u32 = 3;

/// The version a peer refused ours in favour of, read from its `Rejected` reason (the only
/// way an agent of version 1 says which version it speaks): `Some(1)` for
/// "protocol version 2 is not supported; this agent speaks 1".
pub fn spoken_version(reason: &str) -> Option<u32> {
    let rest = reason.strip_prefix("protocol version ")?;
    let (_, spoken) = rest.split_once("; this agent speaks ")?;
    spoken.trim().parse().ok()
}

/// The longest line either side accepts. A longer line is discarded and rejected, so a box
/// cannot make the bridge buffer without bound.
pub const MAX_LINE: usize = 1 << 20;

/// The environment variable naming the agent's provider inside the box (`echo`, ...).
pub const ENV_PROVIDER: &str = "CLAWPEN_PROVIDER";

/// The environment variable naming the default model inside the box.
pub const ENV_MODEL: &str = "CLAWPEN_MODEL";

/// The environment variable holding an external harness command, run instead of the
/// built-in agent loop.
pub const ENV_HARNESS: &str = "CLAWPEN_HARNESS";

/// Where the operator's global instructions file appears in every box (read-only).
pub const INSTRUCTIONS_PATH: &str = "/etc/clawpen/instructions.md";

/// The environment variable naming the echo provider's delay between chunks, in ms.
pub const ENV_ECHO_DELAY_MS: &str = "CLAWPEN_ECHO_DELAY_MS";

/// One user message inside a turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnMessage {
    /// The platform message id (for logs and dedupe inside the box).
    pub id: String,
    /// Who sent it, as shown to the agent.
    pub sender: String,
    /// When it was sent, seconds since the Unix epoch.
    pub at: u64,
    /// The text.
    pub text: String,
    /// False for chatter the bot was not addressed in, given only as context.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub addressed: bool,
    /// Files that came with the message, saved in the workspace (paths relative to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// Per-turn choices the bridge makes for a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnOptions {
    /// The model to use instead of the box's default (`CLAWPEN_MODEL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Something the box asks the bridge to do for it: the box has no network and no keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// An HTTP request to the configured model provider. Only a path is given: the bridge
    /// alone decides the host, checks the path against the provider's endpoints, adds
    /// the key and streams the response back.
    Model {
        /// The HTTP method (`POST`).
        method: String,
        /// The path under the provider's base URL (`/v1/messages`, `/chat/completions`).
        path: String,
        /// Request headers; the bridge keeps only a safe subset and drops any credential.
        headers: Vec<(String, String)>,
        /// The request body (JSON).
        body: String,
    },
    /// Fetch a web page as readable text; the bridge refuses private destinations.
    WebFetch {
        /// An http or https URL.
        url: String,
    },
    /// Schedule a task for this conversation (version 3). The bridge checks and stores it
    /// and answers with its description and next runs.
    ScheduleTask {
        /// What the model asked for (boxed: it is far larger than the other requests).
        task: Box<TaskSpec>,
    },
    /// This conversation's tasks, in words (version 3).
    ListTasks,
    /// Pause one of this conversation's tasks (version 3).
    PauseTask {
        /// The task's id.
        id: u64,
    },
    /// Resume one of this conversation's paused tasks (version 3).
    ResumeTask {
        /// The task's id.
        id: u64,
    },
    /// Delete one of this conversation's tasks (version 3).
    CancelTask {
        /// The task's id.
        id: u64,
    },
}

/// Response headers of a model request that reach the box (and, through the box's local
/// endpoint, a harness): what a client needs to parse the body and to back off, and the
/// provider's request id for support questions. Both sides keep to this one list.
pub const MODEL_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "request-id",
    "x-request-id",
];

/// One piece of the answer to a [`Request`]; a response is `Head`, `Body`*, `End`, or a
/// single `Failed`. Every piece counts as one part of a request's window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResponsePart {
    /// Status and headers.
    Head {
        /// The HTTP status.
        status: u16,
        /// Response headers worth passing on (content type, retry-after, ...).
        headers: Vec<(String, String)>,
    },
    /// A chunk of the body, as it streams.
    Body {
        /// The text (UTF-8; chunks end on character boundaries).
        data: String,
    },
    /// The response is complete.
    End,
    /// The bridge refused or could not perform the request.
    Failed {
        /// Why, in words for the agent (and, through it, the user).
        message: String,
    },
}

/// A line from the bridge to the box.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// Sent first after every attach: replay every event after `after`, then report state.
    Resume {
        /// The bridge's protocol version.
        version: u32,
        /// The last sequence number the bridge has processed durably.
        after: u64,
    },
    /// Start a turn answering these messages. A turn id the agent has already seen is
    /// ignored, so the bridge may resend a turn it is unsure the agent received.
    Turn {
        /// Unique id of the turn.
        turn: String,
        /// The messages it answers, in order.
        messages: Vec<TurnMessage>,
        /// Per-conversation choices.
        #[serde(default)]
        options: TurnOptions,
    },
    /// More messages for the running turn, given to the agent at its next step.
    FollowUp {
        /// The turn they belong to.
        turn: String,
        /// The messages, in order.
        messages: Vec<TurnMessage>,
    },
    /// End the running turn now (`/stop`).
    Cancel {
        /// The turn to end.
        turn: String,
    },
    /// Every event up to and including `seq` is processed; the agent may forget them.
    Ack {
        /// The highest processed sequence number.
        seq: u64,
    },
    /// Part of the answer to a box's [`Request`].
    Response {
        /// The request's id.
        id: u64,
        /// This piece.
        part: ResponsePart,
    },
    /// The bridge could not parse a line the box sent.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// What a reply event says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// More reply text, appended to what came before.
    TextDelta {
        /// The new text.
        text: String,
    },
    /// A short status line ("running: cargo test"); not part of the reply text.
    Status {
        /// The line.
        text: String,
    },
    /// A separate chat message sent while the agent works (its `send_message` tool).
    Message {
        /// The message text.
        text: String,
    },
    /// A file from the workspace to upload into the chat.
    File {
        /// Its path relative to the workspace.
        path: String,
    },
    /// The last `bytes` bytes of the reply text are withdrawn: an answer that broke off
    /// starts over, and what comes next replaces them in place.
    Retract {
        /// How many bytes, counted back from the end of the reply text so far.
        bytes: u64,
    },
    /// The turn failed; the message is shown to the user.
    Error {
        /// What went wrong, in words for the user.
        message: String,
    },
    /// The turn is over; nothing more comes for it.
    Final,
}

/// A sequenced reply event, kept by the agent until acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, from 1 in each agent process.
    pub seq: u64,
    /// The turn it belongs to.
    pub turn: String,
    /// What it says.
    #[serde(flatten)]
    pub body: EventBody,
}

/// A line from the box to the bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    /// The agent is up (first line of a new process).
    Ready {
        /// The agent's protocol version.
        version: u32,
        /// Which provider answers (`echo`, ...).
        provider: String,
    },
    /// Answer to `Resume`, sent after the replayed events.
    State {
        /// The turn running now, if any.
        running: Option<String>,
        /// The turns this process has finished, most recent last (bounded).
        finished: Vec<String>,
        /// The highest sequence number issued so far.
        last_seq: u64,
        /// The highest sequence number this process has had acknowledged: the events after
        /// it are the ones it still holds. A bridge that re-attaches without a record of
        /// its own (an adopted box) resumes from here. Absent from agents before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acked: Option<u64>,
        /// The agent's protocol version, so that a bridge re-attaching to a running box
        /// (which never sees its `Ready`) knows it. Absent from agents of version 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
    /// A reply event.
    Event(Event),
    /// The agent is alive and working on a turn.
    Heartbeat,
    /// Ask the bridge to do something for the box; answered by `Response` lines.
    Request {
        /// Chosen by the agent, unique within its process.
        id: u64,
        /// What to do.
        request: Request,
        /// How many parts of the answer the bridge may send before the agent grants more
        /// with `Credit`. Absent: no flow control (agents of version 1, or an agent that
        /// has not heard the bridge's version yet).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<u32>,
    },
    /// The agent's reader took `parts` more parts of the answer to request `id`: the
    /// bridge may send that many more. Only for requests that came with a `window`, to a
    /// bridge of version 2 or later.
    Credit {
        /// The request's id.
        id: u64,
        /// How many more parts the bridge may send.
        parts: u32,
    },
    /// The box no longer wants the answer to a request (a cancelled turn, a closed
    /// connection): the bridge stops performing it, so a model stops generating.
    Abort {
        /// The request's id.
        id: u64,
    },
    /// The agent could not parse a line the bridge sent.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Encode a message as one protocol line, newline included.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

/// Decode one protocol line (with or without its newline).
pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, serde_json::Error> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    serde_json::from_slice(line)
}

/// Splits a byte stream into protocol lines, bounded by [`MAX_LINE`].
///
/// Docker delivers attach output in frames that need not align with lines; this buffers
/// the partial line between frames.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Set while discarding the rest of an over-long line.
    overflowed: bool,
}

/// One item out of a [`LineBuffer`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its newline.
    Complete(Vec<u8>),
    /// A line longer than [`MAX_LINE`] was discarded.
    TooLong,
}

impl LineBuffer {
    /// Feed bytes; returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        while let Some(pos) = bytes.iter().position(|b| *b == b'\n') {
            let (head, rest) = bytes.split_at(pos);
            bytes = &rest[1..];
            if self.overflowed || self.buf.len() + head.len() > MAX_LINE {
                self.buf.clear();
                self.overflowed = false;
                out.push(Line::TooLong);
                continue;
            }
            self.buf.extend_from_slice(head);
            out.push(Line::Complete(std::mem::take(&mut self.buf)));
        }
        if self.overflowed || self.buf.len() + bytes.len() > MAX_LINE {
            self.buf.clear();
            self.overflowed = true;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_flat_json_lines() {
        let event = FromAgent::Event(Event {
            seq: 7,
            turn: "t1".into(),
            body: EventBody::TextDelta {
                text: "hi\nthere".into(),
            },
        });
        let line = encode(&event).unwrap_or_default();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let text = String::from_utf8_lossy(&line);
        assert!(text.contains(r#""type":"event""#), "{text}");
        assert!(text.contains(r#""kind":"text_delta""#), "{text}");
        assert_eq!(decode::<FromAgent>(&line).ok(), Some(event));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode::<FromAgent>(b"not json").is_err());
        assert!(decode::<ToAgent>(br#"{"type":"launch_missiles"}"#).is_err());
    }

    /// The messages of version 1 that version 2 changed, as version 1 declared them: what
    /// a peer of version 1 decodes.
    mod v1 {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum FromAgent {
            State {
                running: Option<String>,
                finished: Vec<String>,
                last_seq: u64,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                acked: Option<u64>,
            },
            Request {
                id: u64,
                request: super::Request,
            },
            Abort {
                id: u64,
            },
        }
    }

    fn fetch() -> Request {
        Request::WebFetch {
            url: "https://example.com/".into(),
        }
    }

    #[test]
    fn version_two_lines_stay_readable_by_version_one_peers() -> Result<(), serde_json::Error> {
        // A bridge of version 1 reads a windowed request, and a state naming a version, as
        // it always did (and never gets a `Credit`, which it could not read).
        let request = FromAgent::Request {
            id: 3,
            request: fetch(),
            window: Some(64),
        };
        let old = decode::<v1::FromAgent>(&encode(&request)?)?;
        assert_eq!(
            old,
            v1::FromAgent::Request {
                id: 3,
                request: fetch()
            }
        );
        let state = FromAgent::State {
            running: None,
            finished: vec!["t1".into()],
            last_seq: 9,
            acked: Some(9),
            version: Some(VERSION),
        };
        assert!(matches!(
            decode::<v1::FromAgent>(&encode(&state)?)?,
            v1::FromAgent::State { last_seq: 9, .. }
        ));
        let credit = FromAgent::Credit { id: 3, parts: 32 };
        assert!(decode::<v1::FromAgent>(&encode(&credit)?).is_err());

        // And lines of version 1 read as version 2 without a window or a version.
        let old = v1::FromAgent::Request {
            id: 4,
            request: fetch(),
        };
        assert_eq!(
            decode::<FromAgent>(&encode(&old)?)?,
            FromAgent::Request {
                id: 4,
                request: fetch(),
                window: None
            }
        );
        let text = String::from_utf8_lossy(&encode(&old)?).into_owned();
        assert!(!text.contains("window"), "{text}");
        Ok(())
    }

    #[test]
    fn the_version_a_first_agent_speaks_is_read_from_its_refusal() {
        let refusal = "protocol version 2 is not supported; this agent speaks 1";
        assert_eq!(spoken_version(refusal), Some(1));
        assert_eq!(spoken_version("malformed line: expected value"), None);
        assert_eq!(
            spoken_version("protocol version 2 is not supported; this agent speaks many"),
            None
        );
    }

    #[test]
    fn line_buffer_joins_frames_and_bounds_lines() {
        let mut lines = LineBuffer::default();
        assert!(lines.push(b"ab").is_empty());
        assert_eq!(
            lines.push(b"c\nde\n"),
            vec![
                Line::Complete(b"abc".to_vec()),
                Line::Complete(b"de".to_vec())
            ]
        );
        let huge = vec![b'x'; MAX_LINE + 1];
        assert!(lines.push(&huge).is_empty());
        assert_eq!(
            lines.push(b"tail\nok\n"),
            vec![Line::TooLong, Line::Complete(b"ok".to_vec())]
        );
    }
}
