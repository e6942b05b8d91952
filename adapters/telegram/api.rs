//! What the adapter needs of the Bot API beyond teloxide's methods, and where teloxide's
//! errors become [`AdapterError`]s.
//!
//! Two payloads are our own: `sendMessageDraft`, which teloxide does not have yet, and a
//! `getUpdates` that returns raw JSON values, so that one update the bridge cannot parse is
//! skipped alone instead of failing the whole batch (and blocking the offset forever); it
//! is also sent outside teloxide's request path, which pauses 10 s after every 5xx.

use std::time::Duration;

use serde::Serialize;
use teloxide::requests::{JsonRequest, Payload};
use teloxide::types::{ParseMode, Seconds, True};
use teloxide::{ApiError, Bot, RequestError};

use super::config::TelegramConfig;
use super::{format, PLATFORM};
use crate::egress::Egress;
use crate::stream::Backoff;
use crate::{AdapterError, ConversationKey};

/// Added to the long-poll timeout for the HTTP client's: the server answers an empty poll
/// only once the poll timeout is up, and the network needs its share on top.
const POLL_SLACK: Duration = Duration::from_secs(15);

/// The connect timeout of every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which updates the bot asks for: messages only (edits, channel posts, callbacks and the
/// rest are not conversations the bridge takes part in).
pub const ALLOWED_UPDATES: &[&str] = &["message"];

/// A teloxide bot for `config`, whose HTTP client outwaits a long poll.
pub fn bot(config: &TelegramConfig, egress: &Egress) -> Result<Bot, AdapterError> {
    let token = config.token.clone().ok_or(AdapterError::Rejected(
        "no Telegram bot token configured".into(),
    ))?;
    let url = config
        .api_url()
        .map_err(|e| AdapterError::Rejected(e.to_string()))?;
    // The operator's proxy and extra CA certificates, as every outbound client.
    let client = egress
        .apply(teloxide::net::default_reqwest_settings())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(config.poll_timeout() + POLL_SLACK)
        .build()
        .map_err(|e| AdapterError::Transport(format!("building the HTTP client: {e}")))?;
    Ok(Bot::with_client(token, client).set_api_url(url))
}

/// `getUpdates`, answered as raw JSON values.
#[derive(Clone, Debug, Serialize)]
pub struct GetUpdatesRaw {
    /// The first update wanted; every earlier one is confirmed and forgotten by the server.
    pub offset: i64,
    /// How long the server holds the request open when there is nothing, in seconds.
    pub timeout: u32,
    /// The kinds of update wanted.
    pub allowed_updates: &'static [&'static str],
}

impl Payload for GetUpdatesRaw {
    type Output = Vec<serde_json::Value>;
    const NAME: &'static str = "getUpdates";
}

/// `getUpdates`, sent with the bot's client, token and server but not through teloxide's
/// request path: teloxide sleeps 10 s after every 5xx answer before returning it, which on
/// top of the poll's own backoff kept a bot deaf for most of a minute after a short outage.
/// The poll loop is the one place that decides how long to wait.
pub async fn get_updates(
    bot: &Bot,
    payload: &GetUpdatesRaw,
) -> Result<Vec<serde_json::Value>, RequestError> {
    let mut url = bot.api_url();
    url.path_segments_mut()
        .map_err(|()| RequestError::Api(ApiError::Unknown("the Bot API URL has no path".into())))?
        .push(&format!("bot{}", bot.token()))
        .push(GetUpdatesRaw::NAME);
    let body = serde_json::to_vec(payload).map_err(|e| RequestError::InvalidJson {
        raw: e.to_string().into(),
        source: std::sync::Arc::new(e),
    })?;
    // `RequestError::from` drops the URL, and with it the token, from network errors.
    let response = bot
        .client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(RequestError::from)?;
    let text = response.text().await.map_err(RequestError::from)?;
    parse_answer(&text)
}

/// A Bot API answer, as the documentation describes it.
#[derive(serde::Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<AnswerParameters>,
}

#[derive(serde::Deserialize)]
struct AnswerParameters {
    #[serde(default)]
    retry_after: Option<u32>,
}

/// Reads a `getUpdates` answer into teloxide's error types, so that it is judged like
/// every other call: a 429 keeps its `retry_after`, a bad token is `InvalidToken`.
fn parse_answer(text: &str) -> Result<Vec<serde_json::Value>, RequestError> {
    let answer: Answer =
        serde_json::from_str(text).map_err(|source| RequestError::InvalidJson {
            source: std::sync::Arc::new(source),
            raw: text.into(),
        })?;
    if answer.ok {
        return Ok(answer.result.unwrap_or_default());
    }
    if let Some(seconds) = answer.parameters.and_then(|p| p.retry_after) {
        return Err(RequestError::RetryAfter(Seconds::from_seconds(seconds)));
    }
    let description = answer.description.unwrap_or_default();
    // teloxide's own reading of the description; unknown ones become `ApiError::Unknown`.
    let error = serde_json::from_value(serde_json::Value::String(description.clone()))
        .unwrap_or(ApiError::Unknown(description));
    Err(RequestError::Api(error))
}

/// `sendMessageDraft` (Bot API 9.3): streams a partial message to a private chat.
#[derive(Clone, Debug, Serialize)]
pub struct SendMessageDraft {
    /// The private chat.
    pub chat_id: i64,
    /// A forum topic of the chat, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_thread_id: Option<i32>,
    /// Non-zero; changes to a draft of one id are animated.
    pub draft_id: u64,
    /// The text so far.
    pub text: String,
    /// How `text` is formatted; `None`: plain text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<ParseMode>,
}

impl Payload for SendMessageDraft {
    type Output = True;
    const NAME: &'static str = "sendMessageDraft";
}

/// Sends one of our own payloads with the bot's client, token and server.
pub async fn call<P>(bot: &Bot, payload: P) -> Result<P::Output, RequestError>
where
    P: Payload + Serialize + Send + 'static,
    P::Output: serde::de::DeserializeOwned + Send + 'static,
{
    JsonRequest::new(bot.clone(), payload).await
}

/// Whether Telegram refused the HTML of a message (an entity it could not parse).
pub fn is_parse_error(error: &RequestError) -> bool {
    match error {
        RequestError::Api(ApiError::CantParseEntities(_)) => true,
        RequestError::Api(ApiError::Unknown(text)) => text.contains("can't parse entities"),
        _ => false,
    }
}

/// Whether an edit changed nothing, which for a reply means it already shows the text.
pub fn is_not_modified(error: &RequestError) -> bool {
    match error {
        RequestError::Api(ApiError::MessageNotModified) => true,
        RequestError::Api(ApiError::Unknown(text)) => text.contains("message is not modified"),
        _ => false,
    }
}

/// Converts a teloxide error at the border, and so declares which of Telegram's errors are
/// retryable (the shared [`Backoff`] decides how): rate limits keep their delay, so the
/// retry waits exactly as long as Telegram asked; network trouble and server errors may be
/// retried; anything Telegram refused is final.
pub fn adapter_error(error: RequestError) -> AdapterError {
    match error {
        RequestError::RetryAfter(seconds) => AdapterError::RateLimited {
            retry_after: seconds.duration(),
        },
        RequestError::Network(e) => AdapterError::Transport(e.to_string()),
        RequestError::Io(e) => AdapterError::Transport(e.to_string()),
        RequestError::InvalidJson { source, .. } => {
            AdapterError::Transport(format!("unreadable answer from the Bot API: {source}"))
        }
        RequestError::MigrateToChatId(to) => {
            AdapterError::NotFound(format!("the group became supergroup {to}"))
        }
        RequestError::Api(api) => match api {
            ApiError::MessageToEditNotFound
            | ApiError::ChatNotFound
            | ApiError::BotBlocked
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup
            | ApiError::UserDeactivated => AdapterError::NotFound(api.to_string()),
            ApiError::Unknown(text) if text.contains("Not Found") || text.contains("not found") => {
                AdapterError::NotFound(text)
            }
            ApiError::Unknown(text) if is_server_error(&text) => AdapterError::Transport(text),
            other => AdapterError::Rejected(other.to_string()),
        },
    }
}

/// Why `getUpdates` was refused with 409 Conflict, in words for the operator: another
/// deployment set a webhook for the bot, or another program polls it. Neither goes away by
/// retrying, and clawpen does not fight over the bot (removing the other's webhook would
/// only take the bot from it), so it says what to do and keeps polling.
pub fn conflict(error: &RequestError) -> Option<&'static str> {
    let text = match error {
        RequestError::Api(ApiError::CantGetUpdates) => return Some(WEBHOOK_CONFLICT),
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => return Some(POLL_CONFLICT),
        RequestError::Api(ApiError::Unknown(text)) => text,
        _ => return None,
    };
    if text.contains("webhook is active") {
        Some(WEBHOOK_CONFLICT)
    } else if text.contains("other getUpdates") {
        Some(POLL_CONFLICT)
    } else {
        None
    }
}

/// See [`conflict`].
const WEBHOOK_CONFLICT: &str = "a webhook is set for this bot (by another deployment?), so \
    Telegram refuses long polling (409 Conflict); stop the other deployment or remove its \
    webhook (deleteWebhook), or give clawpen the webhook with telegram.webhook_url";

/// See [`conflict`].
const POLL_CONFLICT: &str = "another program polls this bot's updates, so Telegram ends \
    clawpen's polls (409 Conflict); only one may: stop the other instance";

/// Whether a [`AdapterError::NotFound`] text is the server's answer to a method it does not
/// have (`404 Not Found`, or `Not Found: method not found`), rather than a missing chat or
/// message or a user who blocked the bot.
pub fn is_unknown_method(text: &str) -> bool {
    text.starts_with("Not Found")
}

/// Bot API answers that mean the server, not the request, had a problem.
fn is_server_error(text: &str) -> bool {
    [
        "Internal Server Error",
        "Bad Gateway",
        "Gateway Timeout",
        "Service Unavailable",
    ]
    .iter()
    .any(|s| text.contains(s))
}

/// How the adapter's own operations are retried (notices, uploads, downloads, setting the
/// webhook): a few attempts within seconds, and rate limits of up to a minute waited out;
/// past that they fail, since nothing waits on them as a reply does.
pub const OWN_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    factor: 2,
    cap: Duration::from_secs(8),
    max_attempts: 4,
    max_rate_wait: Duration::from_secs(60),
};

/// Runs a formatted call, and once more as plain text if Telegram could not parse the HTML:
/// the user then sees the Markdown as written, which loses nothing. Markdown that would
/// show nothing once formatted (an empty quote, a lone heading marker) goes as plain text
/// from the start, since Telegram refuses an empty message.
pub async fn html_or_plain<T, F, Fut>(
    conversation: &ConversationKey,
    markdown: &str,
    call: F,
) -> Result<T, AdapterError>
where
    F: Fn(String, Option<ParseMode>) -> Fut,
    Fut: std::future::Future<Output = Result<T, RequestError>>,
{
    let html = format::to_html(markdown);
    if !shows_text(&html) && !markdown.trim().is_empty() {
        return call(markdown.to_string(), None)
            .await
            .map_err(adapter_error);
    }
    match call(html, Some(ParseMode::Html)).await {
        Err(e) if is_parse_error(&e) => {
            tracing::warn!(adapter = PLATFORM, %conversation, error = %e, "Telegram refused the formatting; sending plain text");
            call(markdown.to_string(), None).await
        }
        other => other,
    }
    .map_err(adapter_error)
}

/// Whether our own HTML (tags from `format`, text escaped) shows anything outside its tags.
fn shows_text(html: &str) -> bool {
    let mut in_tag = false;
    html.chars().any(|c| {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag && !c.is_whitespace() => return true,
            _ => {}
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_that_shows_nothing_is_noticed() {
        for empty in ["", "<blockquote></blockquote>", "<b> </b>\n"] {
            assert!(!shows_text(empty), "{empty:?}");
        }
        for shown in ["x", "<b>&lt;</b>", "<pre>(empty)</pre>"] {
            assert!(shows_text(shown), "{shown:?}");
        }
        assert!(!shows_text(&format::to_html("> ")));
    }

    #[test]
    fn errors_map_to_what_the_driver_retries() {
        assert_eq!(
            adapter_error(RequestError::RetryAfter(Seconds::from_seconds(7))),
            AdapterError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        assert!(matches!(
            adapter_error(RequestError::Api(ApiError::MessageToEditNotFound)),
            AdapterError::NotFound(_)
        ));
        assert!(matches!(
            adapter_error(RequestError::Api(ApiError::Unknown(
                "Internal Server Error".into()
            ))),
            AdapterError::Transport(_)
        ));
        assert!(matches!(
            adapter_error(RequestError::Api(ApiError::MessageIsTooLong)),
            AdapterError::Rejected(_)
        ));
        let parse = RequestError::Api(ApiError::CantParseEntities(
            "Bad Request: can't parse entities: unclosed tag".into(),
        ));
        assert!(is_parse_error(&parse));
        assert!(is_not_modified(&RequestError::Api(
            ApiError::MessageNotModified
        )));
    }

    #[test]
    fn get_updates_answers_read_as_teloxide_would() {
        let updates = parse_answer(r#"{"ok":true,"result":[{"update_id":5}]}"#);
        assert_eq!(
            updates.unwrap_or_default(),
            [serde_json::json!({"update_id": 5})]
        );
        let limited = parse_answer(
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#,
        );
        assert!(
            matches!(&limited, Err(RequestError::RetryAfter(s)) if s.seconds() == 3),
            "{limited:?}"
        );
        let token = parse_answer(r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#);
        assert!(
            matches!(token, Err(RequestError::Api(ApiError::InvalidToken))),
            "{token:?}"
        );
        let gateway = parse_answer(r#"{"ok":false,"error_code":502,"description":"Bad Gateway"}"#);
        assert!(
            matches!(
                gateway.map_err(adapter_error),
                Err(AdapterError::Transport(_))
            ),
            "a 502 is retried"
        );
        // A proxy's HTML error page is unreadable, not a crash.
        assert!(matches!(
            parse_answer("<html>502</html>"),
            Err(RequestError::InvalidJson { .. })
        ));
    }

    #[test]
    fn the_draft_payload_has_the_documented_shape() {
        let payload = SendMessageDraft {
            chat_id: 42,
            message_thread_id: None,
            draft_id: 7,
            text: "<b>hi</b>".into(),
            parse_mode: Some(ParseMode::Html),
        };
        assert_eq!(
            serde_json::to_value(&payload).unwrap_or_default(),
            serde_json::json!({"chat_id": 42, "draft_id": 7, "text": "<b>hi</b>", "parse_mode": "HTML"})
        );
    }
}
