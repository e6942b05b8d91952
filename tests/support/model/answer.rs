//! How the fake model answers a request: the vendor its path names, the key check, then the
//! next scripted [`Reply`] rendered in that vendor's wire format, streamed or whole.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Method, Request, Response};
use serde_json::{json, Value};

use super::server::{json_response, respond, stream_response, Body};
use super::{lock, Hold, Kind, ModelState, Recorded, Reply, DEFAULT_TEXT};

/// Which wire format a request speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Anthropic,
    OpenAi,
}

pub(super) async fn model_answer(
    state: Arc<ModelState>,
    request: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        headers,
        body: body.clone(),
    };
    lock(&state.requests).push(recorded.clone());
    let n = state.served.fetch_add(1, Ordering::SeqCst) + 1;

    let wire = match (&parts.method, recorded.path.as_str()) {
        (&Method::POST, "/v1/messages" | "/v1/messages/count_tokens") => Wire::Anthropic,
        (&Method::POST, "/v1/chat/completions") => Wire::OpenAi,
        _ => return not_found(&recorded),
    };
    let authorized = match wire {
        Wire::Anthropic => recorded.header("x-api-key").is_some_and(|k| !k.is_empty()),
        Wire::OpenAi => recorded
            .header("authorization")
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7),
    };
    if !authorized {
        return error_response(wire, 401, None);
    }
    if recorded.path == "/v1/messages/count_tokens" {
        return json_response(200, &json!({"input_tokens": bytes.len() as u64 / 4 + 1}));
    }
    let reply = lock(&state.replies)
        .pop_front()
        .unwrap_or_else(|| Reply::text(DEFAULT_TEXT));
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    let stream = body["stream"] == Value::Bool(true);
    let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
    let mut response = match &reply.kind {
        Kind::Unauthorized => error_response(wire, 401, None),
        Kind::RateLimited { retry_after_secs } => {
            error_response(wire, 429, Some(*retry_after_secs))
        }
        Kind::ServerError => error_response(wire, 500, None),
        Kind::Stall => std::future::pending().await,
        Kind::Redirect(to) => {
            let mut response = respond(307, "text/plain", b"moved".to_vec());
            if let Ok(to) = HeaderValue::from_str(to) {
                response.headers_mut().insert(LOCATION, to);
            }
            response
        }
        Kind::Garbage => stream_response(
            "text/event-stream",
            vec![
                b"\x00\xff\xfe this is not an event stream\r\n".to_vec(),
                b"<html><body>502 Bad Gateway</body></html>\n\xc3".to_vec(),
            ],
            false,
            None,
        ),
        Kind::Text(_) | Kind::Tools(_) | Kind::BrokenStream => {
            let answer = Answer {
                n,
                model,
                reply: &reply,
                include_usage,
            };
            if let (false, Some((_, hold))) = (stream, &reply.hold) {
                // Whole answers have no first part: all of it waits.
                if !hold.hold(std::future::pending()).await {
                    return error_response(wire, 500, None);
                }
            }
            match (wire, stream) {
                (Wire::Anthropic, true) => answer.anthropic_stream(),
                (Wire::Anthropic, false) => json_response(200, &answer.anthropic_message()),
                (Wire::OpenAi, true) => answer.openai_stream(),
                (Wire::OpenAi, false) => json_response(200, &answer.openai_completion()),
            }
        }
    };
    let (name, id) = match wire {
        Wire::Anthropic => ("request-id", format!("req_fake_{n}")),
        Wire::OpenAi => ("x-request-id", format!("req-fake-{n}")),
    };
    if let Ok(id) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(name, id);
    }
    response
}

fn not_found(recorded: &Recorded) -> Response<Body> {
    let message = format!("{} {} not found", recorded.method, recorded.path);
    if recorded.path.starts_with("/v1/chat") {
        json_response(
            404,
            &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "unknown_url"}}),
        )
    } else {
        json_response(
            404,
            &json!({"type": "error", "error": {"type": "not_found_error", "message": message}}),
        )
    }
}

/// The vendor's error response for `status`.
fn error_response(wire: Wire, status: u16, retry_after: Option<u64>) -> Response<Body> {
    let body = match (wire, status) {
        (Wire::Anthropic, 401) => {
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        }
        (Wire::Anthropic, 429) => {
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}})
        }
        (Wire::Anthropic, _) => {
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})
        }
        (Wire::OpenAi, 401) => {
            json!({"error": {"message": "Incorrect API key provided: sk-****. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        }
        (Wire::OpenAi, 429) => {
            json!({"error": {"message": "Rate limit reached for requests. Please try again later.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        }
        (Wire::OpenAi, _) => {
            json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}})
        }
    };
    let mut response = json_response(status, &body);
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

/// Split `text` into chunks on character boundaries, as a model streams it: of at most
/// `piece` characters, or four of them.
fn chunks_of(text: &str, piece: Option<usize>) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = piece.unwrap_or_else(|| chars.len().div_ceil(4)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// A reply's text in chunks, and for a held reply the chunk its hold stops before: the
/// first part and the rest are chunked apart, so the first part streams whole.
fn text_chunks(text: &str, reply: &Reply) -> (Vec<String>, Option<(usize, Hold)>) {
    let Some((first, hold)) = &reply.hold else {
        return (chunks_of(text, reply.piece), None);
    };
    let split = text
        .char_indices()
        .nth(*first)
        .map_or(text.len(), |(i, _)| i);
    let mut chunks = chunks_of(&text[..split], reply.piece);
    let at = chunks.len();
    chunks.extend(chunks_of(&text[split..], reply.piece));
    (chunks, Some((at, hold.clone())))
}

/// One scripted answer rendered in a wire format.
struct Answer<'a> {
    n: usize,
    model: String,
    reply: &'a Reply,
    include_usage: bool,
}

/// An Anthropic event: `event:` and `data:` lines and a blank line.
fn sse_event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// An OpenAI chunk: a `data:` line and a blank line.
fn sse_data(data: &str) -> Vec<u8> {
    format!("data: {data}\n\n").into_bytes()
}

impl Answer<'_> {
    fn anthropic_stream(&self) -> Response<Body> {
        let (n, reply) = (self.n, self.reply);
        let mut events = vec![sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": format!("msg_fake_{n}"), "type": "message", "role": "assistant",
                "content": [], "model": self.model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1}}}),
        )];
        let mut stop_reason = "end_turn";
        let mut hold = None;
        match &reply.kind {
            Kind::Text(text) => {
                let (chunks, held) = text_chunks(text, reply);
                // The block's start and a ping come before its first delta.
                hold = held.map(|(at, h)| (events.len() + 2 + at, h));
                events.extend(anthropic_text_block(0, &chunks));
            }
            Kind::BrokenStream => {
                let mut block = anthropic_text_block(0, &chunks_of("This answer never ends", None));
                block.truncate(3);
                events.extend(block);
                return stream_response("text/event-stream; charset=utf-8", events, true, None);
            }
            Kind::Tools(calls) => {
                stop_reason = "tool_use";
                for (index, (name, input)) in calls.iter().enumerate() {
                    events.push(sse_event(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index, "content_block": {
                            "type": "tool_use", "id": format!("toolu_fake_{n}_{index}"),
                            "name": name, "input": {}}}),
                    ));
                    for piece in chunks_of(&input.to_string(), None) {
                        events.push(sse_event(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": piece}}),
                        ));
                    }
                    events.push(sse_event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": index}),
                    ));
                }
            }
            _ => {}
        }
        events.push(sse_event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": reply.output_tokens}}),
        ));
        events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        stream_response("text/event-stream; charset=utf-8", events, false, hold)
    }

    fn anthropic_message(&self) -> Value {
        let (content, stop_reason) = match &self.reply.kind {
            Kind::Tools(calls) => (
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, input))| {
                        json!({"type": "tool_use", "id": format!("toolu_fake_{}_{i}", self.n),
                            "name": name, "input": input})
                    })
                    .collect(),
                "tool_use",
            ),
            Kind::Text(text) => (vec![json!({"type": "text", "text": text})], "end_turn"),
            _ => (
                vec![json!({"type": "text", "text": "This answer"})],
                "max_tokens",
            ),
        };
        json!({"id": format!("msg_fake_{}", self.n), "type": "message", "role": "assistant",
            "model": self.model, "content": content, "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {"input_tokens": self.reply.input_tokens,
                "output_tokens": self.reply.output_tokens}})
    }

    fn openai_chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        json!({"id": format!("chatcmpl-fake-{}", self.n), "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null,
                "finish_reason": finish_reason}]})
        .to_string()
    }

    fn openai_stream(&self) -> Response<Body> {
        let mut events = Vec::new();
        let mut hold = None;
        let finish = match &self.reply.kind {
            Kind::Tools(calls) => {
                for (index, (name, input)) in calls.iter().enumerate() {
                    let mut delta = json!({"tool_calls": [{"index": index,
                        "id": format!("call_fake_{}_{index}", self.n), "type": "function",
                        "function": {"name": name, "arguments": ""}}]});
                    if index == 0 {
                        delta["role"] = json!("assistant");
                        delta["content"] = Value::Null;
                    }
                    events.push(sse_data(&self.openai_chunk(delta, None)));
                    for piece in chunks_of(&input.to_string(), None) {
                        let delta = json!({"tool_calls": [{"index": index,
                            "function": {"arguments": piece}}]});
                        events.push(sse_data(&self.openai_chunk(delta, None)));
                    }
                }
                "tool_calls"
            }
            Kind::Text(text) => {
                let first = json!({"role": "assistant", "content": ""});
                events.push(sse_data(&self.openai_chunk(first, None)));
                let (chunks, held) = text_chunks(text, self.reply);
                hold = held.map(|(at, h)| (events.len() + at, h));
                for piece in chunks {
                    events.push(sse_data(
                        &self.openai_chunk(json!({"content": piece}), None),
                    ));
                }
                "stop"
            }
            _ => {
                let first = json!({"role": "assistant", "content": "This answer"});
                events.push(sse_data(&self.openai_chunk(first, None)));
                return stream_response("text/event-stream", events, true, None);
            }
        };
        events.push(sse_data(&self.openai_chunk(json!({}), Some(finish))));
        if self.include_usage {
            let usage = json!({"id": format!("chatcmpl-fake-{}", self.n),
                "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": self.model, "choices": [],
                "usage": {"prompt_tokens": self.reply.input_tokens,
                    "completion_tokens": self.reply.output_tokens,
                    "total_tokens": self.reply.input_tokens + self.reply.output_tokens}});
            events.push(sse_data(&usage.to_string()));
        }
        events.push(sse_data("[DONE]"));
        stream_response("text/event-stream", events, false, hold)
    }

    fn openai_completion(&self) -> Value {
        let message = match &self.reply.kind {
            Kind::Tools(calls) => json!({"role": "assistant", "content": null,
                "tool_calls": calls.iter().enumerate().map(|(i, (name, input))| json!({
                    "id": format!("call_fake_{}_{i}", self.n), "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}))
                    .collect::<Vec<_>>()}),
            Kind::Text(text) => json!({"role": "assistant", "content": text}),
            _ => json!({"role": "assistant", "content": "This answer"}),
        };
        let finish = if matches!(self.reply.kind, Kind::Tools(_)) {
            "tool_calls"
        } else {
            "stop"
        };
        json!({"id": format!("chatcmpl-fake-{}", self.n), "object": "chat.completion",
            "created": 1_700_000_000, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null,
                "finish_reason": finish}],
            "usage": {"prompt_tokens": self.reply.input_tokens,
                "completion_tokens": self.reply.output_tokens,
                "total_tokens": self.reply.input_tokens + self.reply.output_tokens}})
    }
}

/// A text content block: start, one delta per chunk, stop.
fn anthropic_text_block(index: usize, chunks: &[String]) -> Vec<Vec<u8>> {
    let mut events = vec![sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
    )];
    events.push(sse_event("ping", &json!({"type": "ping"})));
    for chunk in chunks {
        events.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": chunk}}),
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    ));
    events
}
