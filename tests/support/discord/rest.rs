//! The fake's REST side: routing `/api/v10/...`, the token check, JSON and multipart
//! bodies, injected failures, and what each route does.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::{bot_user, Answered, Failure, Sent, State, APP_ID, BOT_ID, GUILD, TOKEN};

/// Discord's limit on a message's content.
const MAX_CONTENT: usize = 2000;

/// How long Discord waits for an interaction's acknowledgement.
const INTERACTION_DEADLINE: Duration = Duration::from_secs(3);

pub(super) fn spawn(listener: TcpListener, shared: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut open = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let state = shared.clone();
            open.spawn(async move {
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(serve(&state, request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, body: &Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        CONTENT_TYPE,
        "application/json"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    );
    response
}

fn error(status: u16, code: u64, message: &str) -> Answer {
    answer(status, &json!({"message": message, "code": code}))
}

fn no_content() -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
    response
}

/// `/channels/123/messages/456` → `/channels/{}/messages/{}`.
fn normalize(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) || s.starts_with("itoken-")
            {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn serve(state: &State, request: Request<Incoming>) -> Answer {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    if let Some(name) = path.strip_prefix("/files/") {
        let file = state.lock().files.get(name).cloned();
        return match file {
            Some(data) => Response::new(Full::new(Bytes::from(data))),
            None => error(404, 0, "404: Not Found"),
        };
    }
    let Some(route) = path.strip_prefix("/api/v10") else {
        return error(404, 0, "404: Not Found");
    };
    let route = route.to_string();
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bot {TOKEN}"));
    // Interaction callbacks and their webhooks are authorized by their token instead.
    let by_token = route.starts_with("/interactions/") || route.starts_with("/webhooks/");
    if !authorized && !by_token {
        return error(401, 0, "401: Unauthorized");
    }
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return error(400, 50109, "The request body contains invalid JSON.");
    };
    let (params, files) = match content_type.split("boundary=").nth(1) {
        Some(boundary) if content_type.starts_with("multipart/form-data") => {
            multipart(&body, boundary.trim_matches('"'))
        }
        _ if body.is_empty() => (Value::Null, Vec::new()),
        _ => match serde_json::from_slice(&body) {
            Ok(v) => (v, Vec::new()),
            Err(_) => return error(400, 50109, "The request body contains invalid JSON."),
        },
    };
    let key = format!("{method} {}", normalize(&route));
    let failure = {
        let mut inner = state.lock();
        inner
            .calls
            .push((method.clone(), normalize(&route), params.clone()));
        inner.failures.get_mut(&key).and_then(VecDeque::pop_front)
    };
    match failure {
        Some(Failure::RateLimited {
            retry_after,
            global,
        }) => {
            let mut response = answer(
                429,
                &json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": global}),
            );
            let headers = response.headers_mut();
            let secs = retry_after.ceil().to_string();
            for (name, value) in [
                ("retry-after", secs),
                ("x-ratelimit-reset-after", retry_after.to_string()),
                (
                    "x-ratelimit-scope",
                    if global { "global" } else { "user" }.to_string(),
                ),
            ] {
                if let Ok(value) = value.parse() {
                    headers.insert(name, value);
                }
            }
            if global {
                headers.insert(
                    "x-ratelimit-global",
                    "true".parse().unwrap_or_else(|_| unreachable!()),
                );
            }
            return response;
        }
        Some(Failure::RateLimitedHeadersOnly { retry_after_secs }) => {
            let mut response = Response::new(Full::new(Bytes::from("Too Many Requests")));
            *response.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
            if let Ok(value) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
            return response;
        }
        Some(Failure::Status(status, message)) => return error(status, 0, &message),
        Some(Failure::AppliedThen502) => {
            let _ = route_call(state, &method, &route, params, files);
            return error(502, 0, "502: Bad Gateway");
        }
        None => {}
    }
    route_call(state, &method, &route, params, files)
}

fn route_call(
    state: &State,
    method: &str,
    route: &str,
    params: Value,
    files: Vec<(String, Vec<u8>)>,
) -> Answer {
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["gateway"] | ["gateway", "bot"]) => answer(
            200,
            &json!({"url": state.ws_url(), "shards": 1, "session_start_limit":
                {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}),
        ),
        ("GET", ["users", "@me"]) => answer(200, &bot_user()),
        ("GET", ["applications", "@me"] | ["oauth2", "applications", "@me"]) => {
            let flags = state.lock().app_flags;
            answer(
                200,
                &json!({"id": APP_ID, "name": "claw", "flags": flags, "bot": bot_user()}),
            )
        }
        ("GET", ["channels", id]) => {
            let known = state.lock().channels.get(*id).cloned();
            match known {
                Some((kind, parent)) => answer(
                    200,
                    &json!({"id": id, "type": kind, "guild_id": GUILD, "parent_id": parent}),
                ),
                None => error(404, 10003, "Unknown Channel"),
            }
        }
        ("POST", ["channels", channel, "messages"]) => create(state, channel, params, files),
        ("PATCH", ["channels", channel, "messages", id]) => edit(state, channel, id, &params),
        ("POST", ["channels", channel, "typing"]) => {
            state.lock().typing.push(channel.to_string());
            no_content()
        }
        ("POST", ["channels", channel, "messages", _, "threads"]) => {
            let name = params["name"].as_str().unwrap_or_default().to_string();
            if name.is_empty() || name.chars().count() > 100 {
                return error(400, 50035, "Invalid Form Body: name");
            }
            let id = state.id();
            {
                let mut inner = state.lock();
                inner
                    .channels
                    .insert(id.clone(), (11, Some(channel.to_string())));
                inner
                    .threads
                    .push((channel.to_string(), id.clone(), name.clone()));
            }
            let thread = json!({"id": id, "type": 11, "guild_id": GUILD, "parent_id": channel,
                "owner_id": BOT_ID, "name": name, "newly_created": true});
            state.dispatch("THREAD_CREATE", thread.clone());
            answer(201, &thread)
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let mut inner = state.lock();
            match inner.interactions.get_mut(*id) {
                Some((t, at, answered)) if t == token && at.elapsed() < INTERACTION_DEADLINE => {
                    answered.acked = params["type"].as_u64();
                    no_content()
                }
                _ => error(404, 10062, "Unknown interaction"),
            }
        }
        ("PATCH", ["webhooks", _, token, "messages", "@original"]) => {
            let mut inner = state.lock();
            let found = inner.interactions.values_mut().find(|(t, _, _)| t == token);
            match found {
                Some((
                    _,
                    _,
                    Answered {
                        acked: Some(_),
                        content,
                    },
                )) => {
                    *content = params["content"].as_str().map(str::to_string);
                    drop(inner);
                    let sent = Sent {
                        channel: String::new(),
                        id: state.id(),
                        content: params["content"].as_str().unwrap_or_default().into(),
                        nonce: None,
                        reply_to: None,
                        allowed_mentions: vec![params["allowed_mentions"].clone()],
                        edits: 0,
                        files: Vec::new(),
                    };
                    answer(200, &message_json(&sent))
                }
                _ => error(404, 10015, "Unknown Webhook"),
            }
        }
        ("PUT", ["applications", _, "commands"]) => {
            let commands = params.as_array().cloned().unwrap_or_default();
            state.lock().commands = commands.clone();
            answer(200, &Value::Array(commands))
        }
        _ => error(404, 0, "404: Not Found"),
    }
}

/// A complete message object, as serenity reads it.
fn message_json(sent: &Sent) -> Value {
    let attachments: Vec<Value> = sent
        .files
        .iter()
        .enumerate()
        .map(|(i, (name, data))| {
            json!({"id": format!("{}{i}", sent.id), "filename": name,
            "size": data.len(), "url": format!("https://cdn.example/{name}"),
            "proxy_url": format!("https://cdn.example/{name}")})
        })
        .collect();
    json!({"id": sent.id, "channel_id": sent.channel, "author": bot_user(),
        "content": sent.content, "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "edited_timestamp": if sent.edits > 0 { json!("2026-01-01T00:00:01.000000+00:00") } else { Value::Null },
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": attachments, "embeds": [], "pinned": false, "type": if sent.reply_to.is_some() { 19 } else { 0 },
        "flags": 0, "nonce": sent.nonce})
}

fn create(state: &State, channel: &str, params: Value, files: Vec<(String, Vec<u8>)>) -> Answer {
    // Multipart bodies carry the JSON as `payload_json`.
    let params = match params.get("payload_json").and_then(Value::as_str) {
        Some(json) => serde_json::from_str(json).unwrap_or(Value::Null),
        None => params,
    };
    let content = params["content"].as_str().unwrap_or_default().to_string();
    if content.chars().count() > MAX_CONTENT {
        return error(
            400,
            50035,
            "Invalid Form Body: content: Must be 2000 or fewer in length.",
        );
    }
    if content.trim().is_empty() && files.is_empty() {
        return error(400, 50006, "Cannot send an empty message");
    }
    let nonce = match &params["nonce"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let enforce = params["enforce_nonce"].as_bool() == Some(true);
    let mut inner = state.lock();
    if let (true, Some(nonce)) = (enforce, &nonce) {
        let earlier = inner
            .sent
            .iter()
            .find(|m| m.channel == channel && m.nonce.as_ref() == Some(nonce));
        if let Some(earlier) = earlier {
            return answer(200, &message_json(earlier));
        }
    }
    inner.next_id += 1;
    let id = (800_000_000_000_000_000 + inner.next_id).to_string();
    let sent = Sent {
        channel: channel.to_string(),
        id,
        content,
        nonce,
        reply_to: params["message_reference"]["message_id"]
            .as_str()
            .map(str::to_string),
        allowed_mentions: vec![params["allowed_mentions"].clone()],
        edits: 0,
        files,
    };
    let body = message_json(&sent);
    inner.sent.push(sent);
    let count = inner.sent.len();
    drop(inner);
    state.created.send_replace(count);
    answer(200, &body)
}

fn edit(state: &State, channel: &str, id: &str, params: &Value) -> Answer {
    let content = params["content"].as_str().unwrap_or_default().to_string();
    if content.chars().count() > MAX_CONTENT {
        return error(
            400,
            50035,
            "Invalid Form Body: content: Must be 2000 or fewer in length.",
        );
    }
    let mut inner = state.lock();
    let Some(sent) = inner
        .sent
        .iter_mut()
        .find(|m| m.channel == channel && m.id == id)
    else {
        return error(404, 10008, "Unknown Message");
    };
    sent.content = content;
    sent.edits += 1;
    sent.allowed_mentions
        .push(params["allowed_mentions"].clone());
    answer(200, &message_json(sent))
}

/// Parses a multipart/form-data body: text fields as an object, files as (name, data).
fn multipart(body: &[u8], boundary: &str) -> (Value, Vec<(String, Vec<u8>)>) {
    let delimiter = format!("--{boundary}");
    let mut params = serde_json::Map::new();
    let mut files = Vec::new();
    let text = body;
    let mut rest = text;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        let part = &rest[..at];
        rest = &rest[at + delimiter.len()..];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(split) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]).to_string();
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let attr = |name: &str| {
            headers
                .split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| {
                    v.trim_matches('"')
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string()
                })
        };
        match (attr("name"), attr("filename")) {
            (_, Some(file)) => files.push((file, content.to_vec())),
            (Some(name), None) => {
                params.insert(name, Value::String(String::from_utf8_lossy(content).into()));
            }
            _ => {}
        }
    }
    (Value::Object(params), files)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
