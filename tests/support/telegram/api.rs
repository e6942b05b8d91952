//! The Bot API methods the fake implements, and the objects and errors it answers with, as
//! the public Bot API documentation describes them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::html::{ignored_entities as ignored_html_entities, visible_html};
use super::{Document, Draft, Failure, Sent, State, BOT_ID, BOT_USERNAME};

/// Telegram's message limit, in UTF-16 units of the visible text.
const MAX_LEN: usize = 4096;

/// A chat object: positive ids are private chats, negative ones forum supergroups.
pub fn chat_json(chat: i64) -> Value {
    if chat > 0 {
        json!({"id": chat, "type": "private", "first_name": format!("User{chat}")})
    } else {
        json!({"id": chat, "type": "supergroup", "title": "Group", "is_forum": true})
    }
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Claw", "username": BOT_USERNAME})
}

fn ok(result: Value) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, json!({"ok": true, "result": result}))
}

pub(super) fn error(code: u16, description: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    reply(
        status,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

/// The answer to a call that was made to fail.
pub(super) fn failed(failure: Failure) -> Response<Full<Bytes>> {
    match failure {
        Failure::RetryAfter(secs) => reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {secs}"),
                "parameters": {"retry_after": secs}}),
        ),
        Failure::Error(code, description) => error(code, &description),
    }
}

/// Carries out `method` (in lower case) with its parameters and uploaded files.
pub(super) async fn call(
    state: &State,
    method: &str,
    params: Value,
    files: Vec<(String, String, Vec<u8>)>,
) -> Response<Full<Bytes>> {
    let writes = [
        "sendmessage",
        "editmessagetext",
        "sendchataction",
        "senddocument",
    ];
    let migrated = state.lock().migrated.get(&int(&params, "chat_id")).copied();
    if let (true, Some(to)) = (writes.contains(&method), migrated) {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"ok": false, "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": to}}),
        );
    }
    match method {
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Claw", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "setmycommands" => ok(json!(true)),
        "setwebhook" => {
            state.lock().webhook = params["url"].as_str().map(str::to_string);
            ok(json!(true))
        }
        "deletewebhook" => {
            state.lock().webhook = None;
            ok(json!(true))
        }
        "getupdates" if state.lock().webhook.is_some() => error(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook \
             to delete the webhook first",
        ),
        "getupdates" => get_updates(state, &params).await,
        "sendmessage" => send_message(state, &params),
        "editmessagetext" => edit_message(state, &params),
        "sendmessagedraft" => send_draft(state, &params),
        "sendchataction" => {
            let (chat, thread) = (
                int(&params, "chat_id"),
                opt_int(&params, "message_thread_id"),
            );
            let action = params["action"].as_str().unwrap_or_default().to_string();
            state.lock().actions.push((chat, thread, action));
            ok(json!(true))
        }
        "senddocument" => send_document(state, &params, files),
        "getfile" => {
            let id = params["file_id"].as_str().unwrap_or_default();
            match state.lock().files.get(id) {
                Some((path, data, sized)) => {
                    let mut file = json!({"file_id": id, "file_unique_id": format!("u-{id}"),
                        "file_path": path});
                    if *sized {
                        file["file_size"] = json!(data.len());
                    }
                    ok(file)
                }
                None => error(400, "Bad Request: invalid file_id"),
            }
        }
        _ => error(404, "Not Found"),
    }
}

/// A file registered with [`super::FakeTelegram::add_file`], found by its `file_path`.
pub(super) fn file(state: &State, path: &str) -> Response<Full<Bytes>> {
    let inner = state.lock();
    match inner.files.values().find(|(p, _, _)| *p == path) {
        Some((_, data, _)) => {
            let mut response = Response::new(Full::new(Bytes::from(data.clone())));
            *response.status_mut() = StatusCode::OK;
            response
        }
        None => error(404, "Not Found"),
    }
}

async fn get_updates(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let offset = opt_int(params, "offset").unwrap_or(0);
    let timeout = Duration::from_secs(opt_int(params, "timeout").unwrap_or(0).max(0) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut queued = state.queued.subscribe();
    loop {
        {
            let mut inner = state.lock();
            inner.offset = inner.offset.max(offset);
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().is_none_or(|id| id >= offset));
            if !inner.updates.is_empty() {
                let batch: Vec<Value> = inner.updates.iter().take(100).cloned().collect();
                return ok(Value::Array(batch));
            }
        }
        tokio::select! {
            changed = queued.changed() => if changed.is_err() { return ok(json!([])) },
            _ = tokio::time::sleep_until(deadline) => return ok(json!([])),
        }
    }
}

/// Checks a text as Telegram would for its parse mode; returns (raw, visible, mode), or the
/// description of a 400 Bad Request.
fn check_text(params: &Value) -> Result<(String, String, Option<String>), String> {
    let raw = params["text"].as_str().unwrap_or_default().to_string();
    let mode = params["parse_mode"].as_str().map(str::to_string);
    let visible = match mode.as_deref() {
        Some("HTML") => {
            visible_html(&raw).map_err(|why| format!("Bad Request: can't parse entities: {why}"))?
        }
        Some(other) => return Err(format!("Bad Request: unsupported parse_mode {other}")),
        None => raw.clone(),
    };
    if visible.trim().is_empty() {
        return Err("Bad Request: message text is empty".into());
    }
    if visible.encode_utf16().count() > MAX_LEN {
        return Err("Bad Request: message is too long".into());
    }
    Ok((raw, visible, mode))
}

/// Refuses a call as Telegram would, and records it for [`super::FakeTelegram::refused`].
fn refuse(state: &State, method: &str, description: &str) -> Response<Full<Bytes>> {
    let refusal = (method.to_string(), description.to_string());
    state.lock().refused.push(refusal);
    error(400, description)
}

fn send_message(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let (raw, text, parse_mode) = match check_text(params) {
        Ok(checked) => checked,
        Err(description) => return refuse(state, "sendmessage", &description),
    };
    let chat = int(params, "chat_id");
    let thread = opt_int(params, "message_thread_id");
    let reply_to = params["reply_parameters"]["message_id"].as_i64();
    let ignored_entities = ignored_entities(&raw, parse_mode.as_deref());
    let mut inner = state.lock();
    inner.next_message += 1;
    let sent = Sent {
        chat,
        thread,
        id: inner.next_message,
        text,
        raw,
        parse_mode,
        reply_to,
        edits: 0,
        ignored_entities,
    };
    inner.sent.push(sent.clone());
    ok(message_json(&sent))
}

fn edit_message(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let (raw, text, parse_mode) = match check_text(params) {
        Ok(checked) => checked,
        Err(description) => return refuse(state, "editmessagetext", &description),
    };
    let (chat, id) = (int(params, "chat_id"), int(params, "message_id"));
    let mut inner = state.lock();
    let Some(sent) = inner.sent.iter_mut().find(|m| m.chat == chat && m.id == id) else {
        drop(inner);
        return refuse(
            state,
            "editmessagetext",
            "Bad Request: message to edit not found",
        );
    };
    if sent.raw == raw && sent.parse_mode == parse_mode {
        return error(
            400,
            "Bad Request: message is not modified: specified new message content and reply \
             markup are exactly the same as a current content and reply markup of the message",
        );
    }
    sent.ignored_entities = ignored_entities(&raw, parse_mode.as_deref());
    sent.raw = raw;
    sent.text = text;
    sent.parse_mode = parse_mode;
    sent.edits += 1;
    ok(message_json(sent))
}

fn send_draft(state: &State, params: &Value) -> Response<Full<Bytes>> {
    let (_, text, _) = match check_text(params) {
        Ok(checked) => checked,
        Err(description) => return refuse(state, "sendmessagedraft", &description),
    };
    let chat = int(params, "chat_id");
    let draft_id = int(params, "draft_id");
    if chat <= 0 {
        return error(400, "Bad Request: drafts are for private chats");
    }
    if draft_id == 0 {
        return error(400, "Bad Request: draft_id must be non-zero");
    }
    state.lock().drafts.push(Draft {
        chat,
        draft_id,
        text,
    });
    ok(json!(true))
}

fn send_document(
    state: &State,
    params: &Value,
    files: Vec<(String, String, Vec<u8>)>,
) -> Response<Full<Bytes>> {
    // The file is in the part named `document`, or in the part that `attach://<name>` names.
    let part = params["document"]
        .as_str()
        .and_then(|v| v.strip_prefix("attach://"))
        .unwrap_or("document")
        .to_string();
    let Some((_, name, data)) = files.into_iter().find(|(field, _, _)| *field == part) else {
        return error(400, "Bad Request: there is no document in the request");
    };
    let chat = int(params, "chat_id");
    let thread = opt_int(params, "message_thread_id");
    let mut inner = state.lock();
    inner.next_message += 1;
    let id = inner.next_message;
    inner.documents.push(Document {
        chat,
        thread,
        name: name.clone(),
        data: data.clone(),
    });
    ok(json!({
        "message_id": id, "date": 1_700_000_000, "chat": chat_json(chat), "from": bot_user(),
        "document": {"file_id": format!("doc-{id}"), "file_unique_id": format!("udoc-{id}"),
            "file_name": name, "file_size": data.len()},
    }))
}

fn message_json(sent: &Sent) -> Value {
    let mut message = json!({
        "message_id": sent.id, "date": 1_700_000_000, "chat": chat_json(sent.chat),
        "from": bot_user(), "text": sent.text,
    });
    if let (Some(thread), Some(object)) = (sent.thread, message.as_object_mut()) {
        object.insert("message_thread_id".into(), json!(thread));
        object.insert("is_topic_message".into(), json!(true));
    }
    message
}

/// An integer parameter, sent as a JSON number or (multipart) as text.
fn opt_int(params: &Value, key: &str) -> Option<i64> {
    match &params[key] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim_matches('"').parse().ok(),
        _ => None,
    }
}

fn int(params: &Value, key: &str) -> i64 {
    opt_int(params, key).unwrap_or_default()
}

/// The formatting of a text that Telegram would not show (see [`super::Sent`]).
fn ignored_entities(raw: &str, parse_mode: Option<&str>) -> usize {
    match parse_mode {
        Some("HTML") => ignored_html_entities(raw),
        _ => 0,
    }
}
