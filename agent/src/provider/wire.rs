//! The conversation in a form both wire formats can express, and the choice between them.
//!
//! The agent loop and the history speak only these types; [`Format`] turns them into an
//! HTTP request for one provider and makes the [`Assembler`] that rebuilds the provider's
//! streamed answer into a [`Reply`]. [`normalize`] makes any history acceptable to both
//! APIs, which are strict about message order: roles alternate, the first message is the
//! user's, and every tool call is answered by exactly one tool result right after it (a
//! turn stopped mid-tool leaves a call without a result behind).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sse::SseEvent;
use super::{anthropic, openai};

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The people in the chat, and tool results.
    User,
    /// The model.
    Assistant,
}

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What it holds, in order.
    pub content: Vec<Block>,
}

impl Message {
    /// A user message with one text block.
    pub fn user(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: vec![Block::Text(text.into())],
        }
    }
}

/// A piece of a message.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// Text.
    Text(String),
    /// The model asks for a tool (assistant messages only).
    ToolUse(ToolCall),
    /// What a tool said (user messages only).
    ToolResult(ToolResult),
}

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call, echoed in its result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments; `Null` when the model's JSON did not parse.
    pub input: Value,
}

/// The answer to a [`ToolCall`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The call's id.
    pub id: String,
    /// The output, as text.
    pub content: String,
    /// Whether the tool failed (the model sees it as an error).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// A tool as offered to the model.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    /// Its name.
    pub name: &'static str,
    /// What it does and when to use it, for the model.
    pub description: &'static str,
    /// Its arguments as a JSON schema.
    pub parameters: Value,
}

/// One model call, independent of the wire format.
#[derive(Clone, Copy, Debug)]
pub struct ModelRequest<'a> {
    /// The model name.
    pub model: &'a str,
    /// The system prompt.
    pub system: &'a str,
    /// The conversation, already [`normalize`]d.
    pub messages: &'a [Message],
    /// The tools offered (none for a summary).
    pub tools: &'a [ToolSpec],
    /// The most tokens the answer may have.
    pub max_tokens: u32,
}

/// An HTTP request for the bridge to forward; it never carries a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The path under the provider's base URL.
    pub path: &'static str,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: String,
}

/// A model's complete answer to one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reply {
    /// All its text.
    pub text: String,
    /// The tools it wants run, in order.
    pub calls: Vec<ToolCall>,
    /// Why it stopped (`end_turn`, `tool_use`, `max_tokens`, `stop`, ...).
    pub stop_reason: Option<String>,
    /// Tokens used, when the provider said.
    pub usage: Usage,
}

/// Token counts of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Answer tokens.
    pub output: u64,
}

/// Why a streamed answer could not be assembled; all of these are worth one retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The provider sent an error event in the middle of the stream (e.g. overloaded).
    #[error("the provider reported an error mid-answer: {0}")]
    Provider(String),
    /// The body ended before the provider's end marker.
    #[error("the answer stream ended before it was complete")]
    Incomplete,
    /// The stream was not what the format promises.
    #[error("the answer stream was malformed: {0}")]
    Malformed(String),
}

/// A provider's wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's Chat Completions API (and the many servers that copy it).
    OpenAi,
}

impl Format {
    /// The format a `CLAWPEN_PROVIDER` value names.
    pub fn named(name: &str) -> Option<Format> {
        match name {
            "anthropic" => Some(Format::Anthropic),
            "openai" => Some(Format::OpenAi),
            _ => None,
        }
    }

    /// The provider name, as reported in `Ready`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Anthropic => "anthropic",
            Format::OpenAi => "openai",
        }
    }

    /// The model used when neither `CLAWPEN_MODEL` nor the turn names one.
    pub fn default_model(self) -> &'static str {
        match self {
            Format::Anthropic => "claude-sonnet-4-5",
            Format::OpenAi => "gpt-4.1",
        }
    }

    /// The HTTP request for one call.
    pub fn request(self, request: &ModelRequest<'_>) -> HttpRequest {
        match self {
            Format::Anthropic => anthropic::request(request),
            Format::OpenAi => openai::request(request),
        }
    }

    /// A fresh assembler for one streamed answer.
    pub fn assembler(self) -> Assembler {
        match self {
            Format::Anthropic => Assembler::Anthropic(anthropic::Stream::default()),
            Format::OpenAi => Assembler::OpenAi(openai::Stream::default()),
        }
    }
}

/// Rebuilds a [`Reply`] from a provider's server-sent events.
#[derive(Debug)]
pub enum Assembler {
    /// For [`Format::Anthropic`].
    Anthropic(anthropic::Stream),
    /// For [`Format::OpenAi`].
    OpenAi(openai::Stream),
}

impl Assembler {
    /// Take one event; returns the text deltas it carries, to stream on at once.
    pub fn feed(&mut self, event: &SseEvent) -> Result<Vec<String>, StreamError> {
        match self {
            Assembler::Anthropic(stream) => stream.feed(event),
            Assembler::OpenAi(stream) => stream.feed(event),
        }
    }

    /// The body ended: the answer, or why it is not whole.
    pub fn finish(self) -> Result<Reply, StreamError> {
        match self {
            Assembler::Anthropic(stream) => stream.finish(),
            Assembler::OpenAi(stream) => stream.finish(),
        }
    }
}

/// Parse `chunks` of a response body as `format`'s events: the text deltas streamed, and
/// the assembled reply or why it is not whole. For the formats' tests.
#[cfg(test)]
pub fn assemble(format: Format, chunks: &[&str]) -> (Vec<String>, Result<Reply, StreamError>) {
    let mut parser = super::sse::SseParser::default();
    let mut stream = format.assembler();
    let mut deltas = Vec::new();
    for chunk in chunks {
        for event in parser.push(chunk).unwrap_or_default() {
            match stream.feed(&event) {
                Ok(more) => deltas.extend(more),
                Err(err) => return (deltas, Err(err)),
            }
        }
    }
    (deltas, stream.finish())
}

/// The result given for a call whose tool never ran (its turn was stopped).
pub const NO_RESULT: &str = "(no result: the turn ended before this tool finished)";

/// Make a history acceptable to both APIs (see the module comment): blank text dropped,
/// same-role neighbours merged (tool results first in a user message), leading assistant
/// messages dropped, every call answered right after it and stray results dropped.
pub fn normalize(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    // Call ids of the last assistant message that still need a result.
    let mut pending: Vec<String> = Vec::new();
    for message in merge(messages) {
        match message.role {
            Role::Assistant => {
                if !pending.is_empty() {
                    out.push(missing_results(&mut pending, Vec::new()));
                }
                pending = message
                    .content
                    .iter()
                    .filter_map(|block| match block {
                        Block::ToolUse(call) => Some(call.id.clone()),
                        _ => None,
                    })
                    .collect();
                out.push(message);
            }
            Role::User => {
                let mut results = Vec::new();
                let mut rest = Vec::new();
                for block in message.content {
                    match block {
                        Block::ToolResult(result) => {
                            if let Some(at) = pending.iter().position(|id| *id == result.id) {
                                pending.remove(at);
                                results.push(Block::ToolResult(result));
                            }
                        }
                        other => rest.push(other),
                    }
                }
                let mut message = missing_results(&mut pending, results);
                message.content.extend(rest);
                if !message.content.is_empty() {
                    out.push(message);
                }
            }
        }
    }
    if !pending.is_empty() {
        out.push(missing_results(&mut pending, Vec::new()));
    }
    // Dropping stray results can leave two assistant messages side by side.
    merge(out)
}

/// A user message holding `results` and a [`NO_RESULT`] for every id left in `pending`.
fn missing_results(pending: &mut Vec<String>, mut results: Vec<Block>) -> Message {
    for id in pending.drain(..) {
        results.push(Block::ToolResult(ToolResult {
            id,
            content: NO_RESULT.to_owned(),
            is_error: true,
        }));
    }
    Message {
        role: Role::User,
        content: results,
    }
}

/// Drop blank text and empty messages, merge same-role neighbours, start with the user.
fn merge(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for mut message in messages {
        message
            .content
            .retain(|block| !matches!(block, Block::Text(text) if text.trim().is_empty()));
        if message.content.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == message.role => {
                last.content.extend(message.content);
                // Anthropic wants a user message's tool results before its text.
                last.content
                    .sort_by_key(|block| !matches!(block, Block::ToolResult(_)));
            }
            None if message.role == Role::Assistant => {}
            _ => out.push(message),
        }
    }
    out
}

/// The most chars of an error body quoted to the user.
const MAX_ERROR_QUOTE: usize = 300;

/// The human part of a provider's error body: `error.message` (both APIs), else the body.
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|value| {
        value
            .pointer("/error/message")
            .or_else(|| value.get("message"))
            .or_else(|| value.get("error"))
            .and_then(Value::as_str)
    });
    let text = message.unwrap_or(body).trim();
    match text.char_indices().nth(MAX_ERROR_QUOTE) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None if text.is_empty() => "(no details)".to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Block {
        Block::ToolUse(ToolCall {
            id: id.into(),
            name: "shell".into(),
            input: serde_json::json!({}),
        })
    }

    fn result(id: &str) -> Block {
        Block::ToolResult(ToolResult {
            id: id.into(),
            content: "ok".into(),
            is_error: false,
        })
    }

    fn message(role: Role, content: Vec<Block>) -> Message {
        Message { role, content }
    }

    #[test]
    fn roles_alternate_and_start_with_the_user() {
        let messages = vec![
            message(Role::Assistant, vec![Block::Text("orphan".into())]),
            Message::user("a"),
            Message::user("b"),
            message(Role::Assistant, vec![Block::Text("  ".into())]),
            message(Role::Assistant, vec![Block::Text("c".into())]),
        ];
        assert_eq!(
            normalize(messages),
            vec![
                message(
                    Role::User,
                    vec![Block::Text("a".into()), Block::Text("b".into())]
                ),
                message(Role::Assistant, vec![Block::Text("c".into())]),
            ]
        );
    }

    #[test]
    fn calls_without_results_get_one_and_stray_results_go() {
        let messages = vec![
            Message::user("go"),
            message(Role::Assistant, vec![call("1"), call("2")]),
            message(Role::User, vec![result("2"), result("9")]),
            Message::user("next"),
        ];
        let normal = normalize(messages);
        assert_eq!(normal.len(), 3, "{normal:#?}");
        let Block::ToolResult(first) = &normal[2].content[0] else {
            panic!("{normal:#?}")
        };
        assert_eq!(first.id, "2");
        let Block::ToolResult(second) = &normal[2].content[1] else {
            panic!("{normal:#?}")
        };
        assert_eq!((second.id.as_str(), second.is_error), ("1", true));
        assert_eq!(normal[2].content[2], Block::Text("next".into()));
        assert_eq!(normal[2].content.len(), 3);
    }

    #[test]
    fn a_trailing_call_is_answered() {
        let normal = normalize(vec![
            Message::user("go"),
            message(Role::Assistant, vec![call("1")]),
        ]);
        assert_eq!(normal.len(), 3);
        assert_eq!(normal[2].role, Role::User);
    }

    #[test]
    fn error_messages_come_from_either_api_or_the_body() {
        assert_eq!(
            error_message(r#"{"type":"error","error":{"type":"x","message":"bad key"}}"#),
            "bad key"
        );
        assert_eq!(error_message(r#"{"error":{"message":"quota"}}"#), "quota");
        assert_eq!(error_message("  plain  "), "plain");
        assert_eq!(error_message(""), "(no details)");
        assert!(error_message(&"x".repeat(1000)).chars().count() <= MAX_ERROR_QUOTE + 1);
    }
}
