//! Anthropic's Messages API: the request body and the streamed answer.
//!
//! The stream is a sequence of named events: `message_start`, then per content block a
//! `content_block_start` (text, or tool_use with id and name), `content_block_delta`s
//! (`text_delta` or `input_json_delta` pieces of the tool's JSON input) and a
//! `content_block_stop`; then `message_delta` (stop reason, usage) and `message_stop`.
//! `ping` may come anywhere; an `error` event ends the answer early.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::sse::SseEvent;
use super::wire::{Block, HttpRequest, ModelRequest, Reply, Role, StreamError, ToolCall};

/// Where the Messages API lives, under the provider's base URL.
pub const PATH: &str = "/v1/messages";

/// The API version this agent speaks.
pub const VERSION: &str = "2023-06-01";

/// The request for one call. No credential: the bridge adds the key.
pub fn request(request: &ModelRequest<'_>) -> HttpRequest {
    let messages: Vec<Value> = request.messages.iter().map(message).collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "stream": true,
        "system": request.system,
        "messages": messages,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                })
            })
            .collect();
    }
    HttpRequest {
        path: PATH,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("anthropic-version".into(), VERSION.into()),
        ],
        body: body.to_string(),
    }
}

fn message(message: &super::wire::Message) -> Value {
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let content: Vec<Value> = message
        .content
        .iter()
        .map(|block| match block {
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::ToolUse(call) => json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                // The API insists on an object, even for a call whose JSON was broken.
                "input": if call.input.is_object() { call.input.clone() } else { json!({}) },
            }),
            Block::ToolResult(result) => {
                let mut value = json!({
                    "type": "tool_result",
                    "tool_use_id": result.id,
                    "content": result.content,
                });
                if result.is_error {
                    value["is_error"] = Value::Bool(true);
                }
                value
            }
        })
        .collect();
    json!({"role": role, "content": content})
}

/// A content block being streamed.
#[derive(Debug)]
enum Part {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
    },
    /// Thinking and other blocks the agent does not use.
    Other,
}

/// The answer so far.
#[derive(Debug, Default)]
pub struct Stream {
    /// Blocks by their index in the message.
    parts: BTreeMap<u64, Part>,
    stop_reason: Option<String>,
    usage: super::wire::Usage,
    /// `message_stop` arrived.
    done: bool,
}

impl Stream {
    /// Take one event; returns the text deltas it carries.
    pub fn feed(&mut self, event: &SseEvent) -> Result<Vec<String>, StreamError> {
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|err| StreamError::Malformed(format!("{} event: {err}", event.event)))?;
        // The data's own `type` is authoritative; the event name is only a fallback.
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.event);
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        let mut deltas = Vec::new();
        match kind {
            "message_start" => {
                if let Some(tokens) = data
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                {
                    self.usage.input = tokens;
                }
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let part = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = str_at(block, "text").to_owned();
                        if !text.is_empty() {
                            deltas.push(text.clone());
                        }
                        Part::Text(text)
                    }
                    Some("tool_use") => Part::Tool {
                        id: str_at(block, "id").to_owned(),
                        name: str_at(block, "name").to_owned(),
                        json: String::new(),
                    },
                    _ => Part::Other,
                };
                self.parts.insert(index, part);
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match (
                    delta.get("type").and_then(Value::as_str),
                    self.parts.get_mut(&index),
                ) {
                    (Some("text_delta"), Some(Part::Text(text))) => {
                        let piece = str_at(delta, "text");
                        text.push_str(piece);
                        if !piece.is_empty() {
                            deltas.push(piece.to_owned());
                        }
                    }
                    (Some("input_json_delta"), Some(Part::Tool { json, .. })) => {
                        json.push_str(str_at(delta, "partial_json"));
                    }
                    // Thinking, signatures, citations: not part of the reply.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(tokens) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output = tokens;
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                let kind = data
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                return Err(StreamError::Provider(format!("{kind}: {message}")));
            }
            // `content_block_stop` needs nothing (inputs are parsed at the end); `ping`
            // and event types added later are ignored, as the API asks.
            _ => {}
        }
        Ok(deltas)
    }

    /// The answer, if the stream reached its end. A stream cut after the stop reason
    /// arrived has lost nothing but the end marker, so it counts as whole.
    pub fn finish(self) -> Result<Reply, StreamError> {
        if !self.done && self.stop_reason.is_none() {
            return Err(StreamError::Incomplete);
        }
        let mut reply = Reply {
            stop_reason: self.stop_reason,
            usage: self.usage,
            ..Reply::default()
        };
        for part in self.parts.into_values() {
            match part {
                Part::Text(text) => reply.text.push_str(&text),
                Part::Tool { id, name, json } => reply.calls.push(ToolCall {
                    id,
                    name,
                    input: parse_input(&json),
                }),
                Part::Other => {}
            }
        }
        Ok(reply)
    }
}

/// A tool's streamed JSON input: empty means no arguments; unparsable becomes `Null`,
/// which the tool reports back to the model as an error it can correct.
pub fn parse_input(json: &str) -> Value {
    if json.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(json).unwrap_or(Value::Null)
}

fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Message, ToolResult, ToolSpec};
    use super::*;

    /// A recorded-style stream: text, then a tool call whose input comes in pieces.
    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"look.\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"read_file\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"pa\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"th\\\": \\\"a.md\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":40}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn run(chunks: &[&str]) -> (Vec<String>, Result<Reply, StreamError>) {
        crate::provider::wire::assemble(crate::provider::wire::Format::Anthropic, chunks)
    }

    #[test]
    fn text_and_a_tool_call_are_assembled_from_split_chunks() {
        for size in [1, 7, 50, STREAM.len()] {
            let chunks: Vec<&str> = STREAM
                .as_bytes()
                .chunks(size)
                .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
                .collect();
            let (deltas, reply) = run(&chunks);
            assert_eq!(deltas.concat(), "Let me look.");
            let reply = reply.unwrap_or_default();
            assert_eq!(reply.text, "Let me look.");
            assert_eq!(
                reply.calls,
                vec![ToolCall {
                    id: "toolu_1".into(),
                    name: "read_file".into(),
                    input: json!({"path": "a.md"}),
                }]
            );
            assert_eq!(reply.stop_reason.as_deref(), Some("tool_use"));
            assert_eq!(reply.usage.input, 25);
            assert_eq!(reply.usage.output, 40);
        }
    }

    #[test]
    fn a_cut_stream_and_an_error_event_are_errors() {
        let cut = &STREAM[..STREAM.find("event: message_delta").unwrap_or(0)];
        assert_eq!(run(&[cut]).1, Err(StreamError::Incomplete));
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (_, result) = run(&[error]);
        assert_eq!(
            result,
            Err(StreamError::Provider("overloaded_error: Overloaded".into()))
        );
    }

    #[test]
    fn the_request_has_the_api_shape_and_no_credential() -> Result<(), serde_json::Error> {
        let messages = vec![
            Message::user("hi"),
            Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse(ToolCall {
                    id: "t1".into(),
                    name: "shell".into(),
                    input: Value::Null,
                })],
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult(ToolResult {
                    id: "t1".into(),
                    content: "no".into(),
                    is_error: true,
                })],
            },
        ];
        let tools = [ToolSpec {
            name: "shell",
            description: "run",
            parameters: json!({"type": "object"}),
        }];
        let http = request(&ModelRequest {
            model: "m",
            system: "be brief",
            messages: &messages,
            tools: &tools,
            max_tokens: 100,
        });
        assert_eq!(http.path, "/v1/messages");
        assert!(http
            .headers
            .iter()
            .all(|(name, _)| !name.eq_ignore_ascii_case("authorization")
                && !name.eq_ignore_ascii_case("x-api-key")));
        let body: Value = serde_json::from_str(&http.body)?;
        assert_eq!(body["stream"], true);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(body["messages"][1]["content"][0]["input"], json!({}));
        assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(body["messages"][2]["content"][0]["is_error"], true);
        Ok(())
    }
}
