//! Discord's REST API through serenity's routes and builders, on our own HTTP client.
//!
//! Requests are serenity's (`Request` with a `Route`, bodies from its builders, answers
//! read as its models), built by `Request::build`, which puts a configured API URL in place
//! of `https://discord.com` as `HttpBuilder::proxy` does. They are sent here rather than
//! through serenity's `Http`, because `Http` drops the status line's headers of a failed
//! request and, with a custom URL, must run without its rate limiter (which would bypass
//! the URL). So this module reads every answer's status, `Retry-After`, `X-RateLimit-*`
//! headers and 429 body itself, and turns them into [`AdapterError`]s the shared
//! [`crate::stream::Backoff`] understands: 429 → `RateLimited`, 5xx and network trouble →
//! `Transport`, 404 → `NotFound`, 401/403 and other refusals → `Rejected` (never retried).
//! A bucket Discord reports exhausted (`X-RateLimit-Remaining: 0`) or a 429 holds later
//! writes to the same channel (all writes, for a global limit) until it resets.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serenity::http::Request;
use tokio::time::Instant;

use super::config::{DiscordConfig, DEFAULT_API_URL};
use crate::egress::Egress;
use crate::AdapterError;

/// How long one request may take before it counts as a transport error (and is retried:
/// sends carry a nonce Discord enforces, so a retry never shows twice).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait assumed when a 429 names none.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);

/// The REST side of the adapter. Cheap to share behind the adapter's `Arc`.
pub struct Rest {
    client: reqwest::Client,
    /// `Bot <token>`, as the Authorization header wants it. Never printed.
    authorization: String,
    /// The configured base URL replacing `https://discord.com`, if it is not that.
    proxy: Option<String>,
    /// Instants before which writes to a channel (key: its id; `""`: every channel, after
    /// a global limit) wait. A std mutex: held only to read or update the map.
    holds: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl Rest {
    /// A client for `config`, which needs a token.
    pub fn new(config: &DiscordConfig, egress: &Egress) -> Result<Self, AdapterError> {
        let token = config.token.as_deref().ok_or(AdapterError::Rejected(
            "no Discord bot token configured".into(),
        ))?;
        let url = config
            .api_url()
            .map_err(|e| AdapterError::Rejected(e.to_string()))?;
        let base = url.as_str().trim_end_matches('/').to_string();
        // The operator's proxy and extra CA certificates, as every outbound client.
        let client = egress
            .apply(reqwest::Client::builder())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| AdapterError::Transport(format!("building the HTTP client: {e}")))?;
        let token = token.trim();
        let token = token.strip_prefix("Bot ").unwrap_or(token);
        Ok(Self {
            client,
            authorization: format!("Bot {token}"),
            proxy: (base != DEFAULT_API_URL).then_some(base),
            holds: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client, for downloads of attachments.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` (its JSON body, if any, already set) and reads the answer as `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        request: Request<'_>,
        channel: Option<&str>,
    ) -> Result<T, AdapterError> {
        let body = self.call(request, channel).await?;
        serde_json::from_slice(&body)
            .map_err(|e| AdapterError::Transport(format!("Discord's answer did not read: {e}")))
    }

    /// Sends `request`, writing to `channel` if it names one; returns the answer's body on
    /// success.
    pub async fn call(
        &self,
        request: Request<'_>,
        channel: Option<&str>,
    ) -> Result<bytes::Bytes, AdapterError> {
        self.wait(channel).await;
        let builder = request
            .build(&self.client, &self.authorization, self.proxy.as_deref())
            .map_err(|e| AdapterError::Rejected(format!("building the request: {e}")))?;
        let response = builder
            .send()
            .await
            .map_err(|e| AdapterError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| AdapterError::Transport(e.without_url().to_string()))?;
        if status.is_success() {
            if let (Some(reset), Some(channel)) = (exhausted(&headers), channel) {
                self.hold(channel, reset);
            }
            return Ok(body);
        }
        let error = error_of(status, &headers, &body);
        if let AdapterError::RateLimited { retry_after } = &error {
            let global = header(&headers, "x-ratelimit-global").is_some_and(|v| v == "true")
                || body_field(&body, "global").is_some_and(|v| v.as_bool() == Some(true));
            // A route's own limit (not a channel's) is waited out by the retry alone.
            let scope = if global { Some("") } else { channel };
            if let Some(scope) = scope {
                self.hold(scope, *retry_after);
            }
        }
        Err(error)
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self, scope: &str, wait: Duration) {
        let until = Instant::now() + wait;
        let mut holds = self.holds();
        let held = holds.entry(scope.to_string()).or_insert(until);
        *held = (*held).max(until);
    }

    /// Waits out a hold on `channel` and a global one.
    async fn wait(&self, channel: Option<&str>) {
        let until = {
            let mut holds = self.holds();
            let now = Instant::now();
            holds.retain(|_, until| *until > now);
            let global = holds.get("").copied();
            let own = channel.and_then(|c| holds.get(c).copied());
            global.max(own)
        };
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// A failed answer as an [`AdapterError`].
pub fn error_of(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> AdapterError {
    let message = body_field(body, "message")
        .and_then(|m| m.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    match status.as_u16() {
        429 => AdapterError::RateLimited {
            retry_after: retry_after(headers, body),
        },
        404 => AdapterError::NotFound(format!("404 {message}")),
        401 => AdapterError::Rejected(format!("401: Discord refused the bot token ({message})")),
        403 => AdapterError::Rejected(format!("403 missing permission or closed DMs: {message}")),
        code if status.is_server_error() => AdapterError::Transport(format!("{code} {message}")),
        code => AdapterError::Rejected(format!("{code} {message}")),
    }
}

/// How long a 429 asks to wait: the body's `retry_after` (seconds, fractional), else the
/// `Retry-After` header, else `X-RateLimit-Reset-After`, else a second.
fn retry_after(headers: &HeaderMap, body: &[u8]) -> Duration {
    let from_body = body_field(body, "retry_after").and_then(|v| v.as_f64());
    let from_header = || {
        ["retry-after", "x-ratelimit-reset-after"]
            .iter()
            .find_map(|name| header(headers, name)?.parse::<f64>().ok())
    };
    from_body
        .or_else(from_header)
        .filter(|s| s.is_finite() && *s >= 0.0)
        // Discord never asks for more than hours; a silly value is capped at a day.
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
        .unwrap_or(DEFAULT_RETRY)
}

/// When a successful answer says its bucket is used up: how long until it resets.
fn exhausted(headers: &HeaderMap) -> Option<Duration> {
    if header(headers, "x-ratelimit-remaining")? != "0" {
        return None;
    }
    let seconds = header(headers, "x-ratelimit-reset-after")?
        .parse::<f64>()
        .ok()?;
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(60.0)))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn body_field(body: &[u8], name: &str) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_429_waits_as_the_body_or_the_headers_say() {
        let status = StatusCode::TOO_MANY_REQUESTS;
        let body =
            br#"{"message": "You are being rate limited.", "retry_after": 0.25, "global": false}"#;
        let err = error_of(status, &headers(&[("retry-after", "9")]), body);
        assert_eq!(
            err,
            AdapterError::RateLimited {
                retry_after: Duration::from_millis(250)
            }
        );
        let err = error_of(status, &headers(&[("retry-after", "2")]), b"<html>");
        assert_eq!(
            err,
            AdapterError::RateLimited {
                retry_after: Duration::from_secs(2)
            }
        );
        let reset = headers(&[("x-ratelimit-reset-after", "1.5")]);
        let err = error_of(status, &reset, b"");
        assert_eq!(
            err,
            AdapterError::RateLimited {
                retry_after: Duration::from_millis(1500)
            }
        );
    }

    #[test]
    fn refusals_end_and_outages_retry() {
        let body = br#"{"message": "Missing Permissions", "code": 50013}"#;
        let none = HeaderMap::new();
        let forbidden = error_of(StatusCode::FORBIDDEN, &none, body);
        assert!(
            matches!(&forbidden, AdapterError::Rejected(m) if m.contains("Missing Permissions"))
        );
        assert!(!forbidden.is_retryable());
        let gone = error_of(StatusCode::NOT_FOUND, &none, b"{}");
        assert!(matches!(gone, AdapterError::NotFound(_)));
        assert!(error_of(StatusCode::BAD_GATEWAY, &none, b"").is_retryable());
        let spent = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "0.5"),
        ]);
        assert_eq!(exhausted(&spent), Some(Duration::from_millis(500)));
    }
}
