//! OpenAI's Chat Completions API: the request body and the streamed answer.
//!
//! The stream is unnamed `data:` events, each a `chat.completion.chunk` whose
//! `choices[0].delta` carries a piece of `content` and/or pieces of `tool_calls`, keyed by
//! `index`: the first piece of a call has its `id` and `function.name`, the rest append to
//! `function.arguments`. `finish_reason` says why it stopped, a last chunk with empty
//! `choices` carries the usage (asked for with `stream_options`), and `data: [DONE]` ends it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::anthropic::parse_input;
use super::sse::SseEvent;
use super::wire::{Block, HttpRequest, Message, ModelRequest, Reply, Role, StreamError, ToolCall};

/// Where Chat Completions lives, under the provider's base URL (which includes `/v1`).
pub const PATH: &str = "/chat/completions";

/// The request for one call. No credential: the bridge adds the key.
pub fn request(request: &ModelRequest<'_>) -> HttpRequest {
    let mut messages = vec![json!({"role": "system", "content": request.system})];
    for message in request.messages {
        push_message(&mut messages, message);
    }
    let mut body = json!({
        "model": request.model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": messages,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                })
            })
            .collect();
    }
    HttpRequest {
        path: PATH,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string(),
    }
}

/// One of our messages as Chat Completions messages: tool results become `tool` messages
/// (first, right after the assistant message that called them), text the user message.
fn push_message(out: &mut Vec<Value>, message: &Message) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in &message.content {
        match block {
            Block::Text(piece) => {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(piece);
            }
            Block::ToolUse(call) => calls.push(json!({
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": if call.input.is_object() { call.input.to_string() } else { "{}".to_owned() },
                },
            })),
            Block::ToolResult(result) => {
                let content = if result.is_error {
                    format!("Error: {}", result.content)
                } else {
                    result.content.clone()
                };
                out.push(json!({"role": "tool", "tool_call_id": result.id, "content": content}));
            }
        }
    }
    match message.role {
        Role::User if !text.is_empty() => out.push(json!({"role": "user", "content": text})),
        Role::User => {}
        Role::Assistant => {
            // `null` rather than "" beside tool calls: some compatible servers insist.
            let content = if text.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            };
            let mut value = json!({"role": "assistant", "content": content});
            if !calls.is_empty() {
                value["tool_calls"] = Value::Array(calls);
            }
            out.push(value);
        }
    }
}

/// A tool call being streamed.
#[derive(Debug, Default)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// The answer so far.
#[derive(Debug, Default)]
pub struct Stream {
    text: String,
    /// Calls by their `index`.
    calls: BTreeMap<u64, Call>,
    finish_reason: Option<String>,
    usage: super::wire::Usage,
    /// `[DONE]` arrived.
    done: bool,
}

impl Stream {
    /// Take one event; returns the text deltas it carries.
    pub fn feed(&mut self, event: &SseEvent) -> Result<Vec<String>, StreamError> {
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|err| StreamError::Malformed(format!("chunk: {err}")))?;
        if let Some(error) = data.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(StreamError::Provider(message));
        }
        if let Some(usage) = data.get("usage").filter(|usage| usage.is_object()) {
            let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
            self.usage.input = count("prompt_tokens");
            self.usage.output = count("completion_tokens");
        }
        let mut deltas = Vec::new();
        let Some(choice) = data.pointer("/choices/0") else {
            return Ok(deltas);
        };
        if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str) {
            if !piece.is_empty() {
                self.text.push_str(piece);
                deltas.push(piece.to_owned());
            }
        }
        if let Some(pieces) = choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
        {
            for (position, piece) in pieces.iter().enumerate() {
                let index = piece
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let call = self.calls.entry(index).or_default();
                if let Some(id) = piece.get("id").and_then(Value::as_str) {
                    if call.id.is_empty() {
                        id.clone_into(&mut call.id);
                    }
                }
                let function = piece.get("function").unwrap_or(&Value::Null);
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    // The name comes whole in the first piece; some servers repeat it.
                    if call.name.is_empty() {
                        name.clone_into(&mut call.name);
                    }
                }
                if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                    call.arguments.push_str(arguments);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(deltas)
    }

    /// The answer, if the stream reached its end. A stream cut after `finish_reason`
    /// arrived has lost at most the usage chunk, so it counts as whole.
    pub fn finish(self) -> Result<Reply, StreamError> {
        if !self.done && self.finish_reason.is_none() {
            return Err(StreamError::Incomplete);
        }
        let calls = self
            .calls
            .into_iter()
            .map(|(index, call)| ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                },
                name: call.name,
                input: parse_input(&call.arguments),
            })
            .collect();
        Ok(Reply {
            text: self.text,
            calls,
            stop_reason: self.finish_reason,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{ToolResult, ToolSpec};
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Writing \"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"it. ✓\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"write_file\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\\\":\\\"x\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"list_files\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\",\\\"content\\\":\\\"hi\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(chunks: &[&str]) -> (Vec<String>, Result<Reply, StreamError>) {
        crate::provider::wire::assemble(crate::provider::wire::Format::OpenAi, chunks)
    }

    /// `text` in pieces of about `size` bytes, cut on char boundaries.
    fn pieces(text: &str, size: usize) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let mut end = (start + size).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.push(&text[start..end]);
            start = end;
        }
        out
    }

    #[test]
    fn text_and_interleaved_tool_calls_are_assembled_by_index() {
        for size in [1, 5, 64, STREAM.len()] {
            let (deltas, reply) = run(&pieces(STREAM, size));
            assert_eq!(deltas.concat(), "Writing it. ✓");
            let reply = reply.unwrap_or_default();
            assert_eq!(reply.text, "Writing it. ✓");
            assert_eq!(
                reply.calls,
                vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "write_file".into(),
                        input: json!({"path": "x", "content": "hi"}),
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "list_files".into(),
                        input: json!({}),
                    },
                ]
            );
            assert_eq!(reply.stop_reason.as_deref(), Some("tool_calls"));
            assert_eq!((reply.usage.input, reply.usage.output), (12, 34));
        }
    }

    #[test]
    fn a_cut_stream_and_an_error_chunk_are_errors() {
        let cut = &STREAM[..STREAM.find("{\"index\":0,\"delta\":{},").unwrap_or(0)];
        let cut = &cut[..cut.rfind("\n\n").unwrap_or(0) + 2];
        assert_eq!(run(&[cut]).1, Err(StreamError::Incomplete));
        let error = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        assert_eq!(
            run(&[error]).1,
            Err(StreamError::Provider("overloaded".into()))
        );
    }

    #[test]
    fn the_request_has_the_api_shape() -> Result<(), serde_json::Error> {
        let messages = vec![
            Message::user("hi"),
            Message {
                role: Role::Assistant,
                content: vec![
                    Block::Text("ok".into()),
                    Block::ToolUse(ToolCall {
                        id: "c1".into(),
                        name: "shell".into(),
                        input: json!({"command": "ls"}),
                    }),
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    Block::ToolResult(ToolResult {
                        id: "c1".into(),
                        content: "a b".into(),
                        is_error: false,
                    }),
                    Block::Text("and then?".into()),
                ],
            },
        ];
        let tools = [ToolSpec {
            name: "shell",
            description: "run",
            parameters: json!({"type": "object"}),
        }];
        let http = request(&ModelRequest {
            model: "gpt",
            system: "sys",
            messages: &messages,
            tools: &tools,
            max_tokens: 100,
        });
        assert_eq!(http.path, "/chat/completions");
        assert_eq!(
            http.headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
        let body: Value = serde_json::from_str(&http.body)?;
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "shell");
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .map(|all| all.iter().filter_map(|m| m["role"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"ls\"}"
        );
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
        Ok(())
    }
}
