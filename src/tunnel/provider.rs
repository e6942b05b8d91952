//! The model providers the tunnel can reach, and what a box's request to one must look like.
//!
//! The box names only a method and a path. The bridge alone picks the host (its configured
//! base URL), accepts only the provider's documented endpoints, keeps a short list of
//! harmless headers and adds the key. Nothing the box sends can change the destination or
//! see the key. Pure checks, no I/O: the forwarding is in `model`.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde_json::Value;

use crate::config::{Config, Secret};

/// The API version sent to Anthropic when the box does not name one.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Endpoints (all POST) a box may reach at Anthropic, under the base URL.
const ANTHROPIC_PATHS: &[&str] = &["/v1/messages", "/v1/messages/count_tokens"];

/// Endpoints (all POST) a box may reach at an OpenAI-compatible provider, under its base
/// URL (which ends in `/v1`).
const OPENAI_PATHS: &[&str] = &["/chat/completions"];

/// Request headers passed on from the box to any provider; all others are dropped, so no
/// credential, cookie or host override the box sends can reach the provider.
const COMMON_HEADERS: &[&str] = &["content-type", "accept"];

/// Request headers passed on to Anthropic in addition to [`COMMON_HEADERS`].
const ANTHROPIC_HEADERS: &[&str] = &["anthropic-version", "anthropic-beta"];

/// The longest header value passed on; real values are short.
const MAX_HEADER_VALUE: usize = 1024;

/// The provider the operator configured.
#[derive(Clone, Debug)]
pub enum Provider {
    /// Anthropic's Messages API.
    Anthropic {
        /// Base URL without `/v1` (e.g. `https://api.anthropic.com`).
        base: Url,
        /// The key, added as `x-api-key`.
        key: Option<Secret>,
    },
    /// An OpenAI-compatible Chat Completions API.
    OpenAi {
        /// Base URL ending in `/v1` (e.g. `https://api.openai.com/v1`).
        base: Url,
        /// The key, added as `Authorization: Bearer`.
        key: Option<Secret>,
    },
    /// No model provider (`echo`, or a name the bridge does not tunnel for).
    None {
        /// The configured provider name.
        name: String,
    },
}

/// A checked model request, ready to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub url: Url,
    pub headers: HeaderMap,
    pub body: String,
}

impl Provider {
    /// The provider of `config` (base URLs are validated when the config loads; an
    /// invalid one here means no provider).
    pub fn from_config(config: &Config) -> Self {
        let base = |url: &str| Url::parse(url.trim_end_matches('/')).ok();
        match config.provider.as_str() {
            "anthropic" => match base(&config.anthropic_base_url) {
                Some(base) => Self::Anthropic {
                    base,
                    key: config.anthropic_api_key.clone(),
                },
                None => Self::None {
                    name: config.provider.clone(),
                },
            },
            "openai" => match base(&config.openai_base_url) {
                Some(base) => Self::OpenAi {
                    base,
                    key: config.openai_api_key.clone(),
                },
                None => Self::None {
                    name: config.provider.clone(),
                },
            },
            other => Self::None { name: other.into() },
        }
    }

    /// Its name in messages.
    pub fn name(&self) -> &str {
        match self {
            Self::Anthropic { .. } => "anthropic",
            Self::OpenAi { .. } => "openai",
            Self::None { name } => name,
        }
    }

    /// The base URL requests go to, if any.
    pub fn base(&self) -> Option<&Url> {
        match self {
            Self::Anthropic { base, .. } | Self::OpenAi { base, .. } => Some(base),
            Self::None { .. } => None,
        }
    }

    /// Check a box's request and build what the bridge sends; the error says what was
    /// refused, for the agent.
    pub(crate) fn prepare(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: String,
    ) -> Result<Outgoing, String> {
        let (base, key, paths, extra_headers) = match self {
            Self::Anthropic { base, key } => (base, key, ANTHROPIC_PATHS, ANTHROPIC_HEADERS),
            Self::OpenAi { base, key } => (base, key, OPENAI_PATHS, &[][..]),
            Self::None { name } => {
                return Err(format!(
                    "refused: this bridge has no model provider to tunnel to (provider is `{name}`)"
                ))
            }
        };
        if !method.eq_ignore_ascii_case("POST") || !paths.contains(&path) {
            let allowed: Vec<String> = paths.iter().map(|p| format!("POST {p}")).collect();
            return Err(format!(
                "refused: `{} {}` is not an endpoint of the {} provider; allowed: {}",
                shorten(method),
                shorten(path),
                self.name(),
                allowed.join(", ")
            ));
        }
        let Some(key) = key else {
            let var = match self {
                Self::Anthropic { .. } => "ANTHROPIC_API_KEY",
                _ => "OPENAI_API_KEY",
            };
            return Err(format!(
                "refused: the bridge has no API key for the {} provider (the operator sets {var})",
                self.name()
            ));
        };
        let url = Url::parse(&format!("{}{path}", base.as_str().trim_end_matches('/')))
            .map_err(|e| format!("the bridge could not build the provider URL: {e}"))?;
        let mut out = HeaderMap::new();
        for (name, value) in headers {
            let name = name.trim().to_ascii_lowercase();
            if !COMMON_HEADERS.contains(&name.as_str()) && !extra_headers.contains(&name.as_str()) {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) else {
                continue;
            };
            if value.len() <= MAX_HEADER_VALUE {
                out.append(name, value);
            }
        }
        if !out.contains_key(CONTENT_TYPE) {
            out.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let key_value = |prefix: &str| {
            let mut value = HeaderValue::from_str(&format!("{prefix}{}", key.expose()))
                .map_err(|_| "the configured API key is not a valid header value".to_string())?;
            value.set_sensitive(true);
            Ok::<_, String>(value)
        };
        let body = match self {
            Self::Anthropic { .. } => {
                out.insert("x-api-key", key_value("")?);
                if !out.contains_key("anthropic-version") {
                    out.insert(
                        "anthropic-version",
                        HeaderValue::from_static(ANTHROPIC_VERSION),
                    );
                }
                body
            }
            _ => {
                out.insert(AUTHORIZATION, key_value("Bearer ")?);
                with_stream_usage(body)
            }
        };
        Ok(Outgoing {
            url,
            headers: out,
            body,
        })
    }
}

/// Ask an OpenAI-compatible stream to end with a usage chunk
/// (`stream_options.include_usage`), without which a streamed answer reports no tokens and
/// would escape the daily limit. Anything that is not a streaming JSON request is unchanged.
fn with_stream_usage(body: String) -> String {
    let Ok(Value::Object(mut request)) = serde_json::from_str::<Value>(&body) else {
        return body;
    };
    if request.get("stream") != Some(&Value::Bool(true)) {
        return body;
    }
    let options = request
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    let Value::Object(options) = options else {
        return body;
    };
    if options.get("include_usage") == Some(&Value::Bool(true)) {
        return body;
    }
    options.insert("include_usage".into(), Value::Bool(true));
    serde_json::to_string(&request).unwrap_or(body)
}

/// A box-supplied string, cut for a message.
fn shorten(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        return s.escape_debug().to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{}…", cut.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anthropic() -> Provider {
        Provider::Anthropic {
            base: Url::parse("https://api.anthropic.com").unwrap_or_else(|e| panic!("{e}")),
            key: Some(Secret::new("sk-ant-real")),
        }
    }

    fn openai() -> Provider {
        Provider::OpenAi {
            base: Url::parse("https://api.openai.com/v1").unwrap_or_else(|e| panic!("{e}")),
            key: Some(Secret::new("sk-real")),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_providers_endpoints_are_reached() {
        let p = anthropic();
        let ok = p.prepare("POST", "/v1/messages", &[], "{}".into());
        assert_eq!(
            ok.map(|o| o.url.to_string()).ok().as_deref(),
            Some("https://api.anthropic.com/v1/messages")
        );
        assert!(p
            .prepare("POST", "/v1/messages/count_tokens", &[], "{}".into())
            .is_ok());
        for (method, path) in [
            ("GET", "/v1/messages"),
            ("POST", "/v1/models"),
            ("POST", "/v1/messages?beta=true"),
            ("POST", "/v1/messages#x"),
            ("POST", "/v1/messages/../files"),
            ("POST", "/v1/../v1/messages"),
            ("POST", "//evil.example/v1/messages"),
            ("POST", "https://evil.example/v1/messages"),
            ("POST", "@evil.example/v1/messages"),
            ("POST", "v1/messages"),
            ("POST", "/v1/messages/"),
            ("POST", "/v1/messages%2f..%2ffiles"),
            ("POST", "/v1/messages\r\nHost: evil.example"),
            ("POST", "/chat/completions"),
            ("POST", ""),
        ] {
            let err = p.prepare(method, path, &[], "{}".into()).err();
            let err = err.unwrap_or_else(|| panic!("{method} {path:?} must be refused"));
            assert!(err.starts_with("refused:"), "{err}");
            assert!(err.contains("POST /v1/messages"), "{err}");
        }
        let o = openai();
        let ok = o.prepare("post", "/chat/completions", &[], "{}".into());
        assert_eq!(
            ok.map(|o| o.url.to_string()).ok().as_deref(),
            Some("https://api.openai.com/v1/chat/completions")
        );
        assert!(o
            .prepare("POST", "/v1/chat/completions", &[], "{}".into())
            .is_err());
        assert!(o.prepare("POST", "/v1/messages", &[], "{}".into()).is_err());
    }

    #[test]
    fn no_provider_and_no_key_are_refused_clearly() {
        let none = Provider::None {
            name: "echo".into(),
        };
        let err = none
            .prepare("POST", "/v1/messages", &[], "{}".into())
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("no model provider") && err.contains("echo"),
            "{err}"
        );
        let keyless = Provider::Anthropic {
            base: Url::parse("https://api.anthropic.com").unwrap_or_else(|e| panic!("{e}")),
            key: None,
        };
        let err = keyless
            .prepare("POST", "/v1/messages", &[], "{}".into())
            .err()
            .unwrap_or_default();
        assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
    }

    #[test]
    fn box_headers_are_filtered_and_the_key_added() {
        let sent = headers(&[
            ("X-Api-Key", "placeholder"),
            ("Authorization", "Bearer placeholder"),
            ("Content-Type", "application/json"),
            ("anthropic-beta", "tools-2024-05-16"),
            ("anthropic-version", "2023-06-01"),
            ("Host", "evil.example"),
            ("Cookie", "session=1"),
            ("x-forwarded-host", "evil.example"),
            ("accept", "text/event-stream"),
            ("accept", "bad\r\nx-injected: 1"),
            ("openai-organization", "org-1"),
        ]);
        let out = anthropic()
            .prepare("POST", "/v1/messages", &sent, "{}".into())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut names: Vec<&str> = out.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "anthropic-beta",
                "anthropic-version",
                "content-type",
                "x-api-key"
            ]
        );
        assert_eq!(out.headers.get_all("x-api-key").iter().count(), 1);
        assert_eq!(
            out.headers.get("x-api-key").and_then(|v| v.to_str().ok()),
            Some("sk-ant-real")
        );
        assert_eq!(out.headers.get_all("accept").iter().count(), 1);

        let out = openai()
            .prepare("POST", "/chat/completions", &sent, "{}".into())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut names: Vec<&str> = out.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "content-type"]);
        assert_eq!(
            out.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()),
            Some("Bearer sk-real")
        );
    }

    #[test]
    fn anthropic_version_is_added_when_missing() {
        let out = anthropic()
            .prepare("POST", "/v1/messages", &[], "{}".into())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.headers
                .get("anthropic-version")
                .and_then(|v| v.to_str().ok()),
            Some(ANTHROPIC_VERSION)
        );
        assert_eq!(
            out.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }

    #[test]
    fn openai_streams_are_asked_for_usage() {
        let body = with_stream_usage(r#"{"model":"m","stream":true,"messages":[]}"#.into());
        let value: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(value["stream_options"]["include_usage"], Value::Bool(true));
        assert_eq!(value["model"], "m");
        let unchanged = r#"{"model":"m","messages":[]}"#;
        assert_eq!(with_stream_usage(unchanged.into()), unchanged);
        assert_eq!(with_stream_usage("not json".into()), "not json");
    }

    #[test]
    fn long_paths_are_shortened_in_messages() {
        let path = format!("/{}", "a".repeat(500));
        let err = anthropic()
            .prepare("POST", &path, &[], "{}".into())
            .err()
            .unwrap_or_default();
        assert!(err.len() < 400 && err.contains('…'), "{err}");
    }
}
