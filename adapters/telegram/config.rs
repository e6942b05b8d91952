//! The Telegram adapter's settings: the `[telegram]` table of the config file and the
//! environment variables that override it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// The public Bot API server.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// Where the webhook server listens when `webhook_listen` is not set: a port Telegram
/// delivers webhooks to.
pub const DEFAULT_WEBHOOK_LISTEN: &str = "0.0.0.0:8443";

/// The environment variables read for Telegram: the token's, read by the registration
/// (`TELEGRAM_BOT_TOKEN`), and the ones [`TelegramConfig::apply_env`] reads.
pub const ENV_VARS: &[&str] = &[
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "CLAWPEN_TELEGRAM_ALLOWED_USERS",
    "CLAWPEN_TELEGRAM_ALLOWED_CHATS",
    "CLAWPEN_TELEGRAM_TRIGGER",
    "CLAWPEN_TELEGRAM_WEBHOOK_URL",
    "CLAWPEN_TELEGRAM_WEBHOOK_SECRET",
    "CLAWPEN_TELEGRAM_WEBHOOK_LISTEN",
];

/// How the bot talks to Telegram and who may talk to it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot token from @BotFather. Never printed.
    pub token: Option<String>,
    /// The Bot API server: the public one, a local `telegram-bot-api`, or a test server.
    pub api_url: String,
    /// User ids allowed to talk to the bot anywhere. A message sent on behalf of a chat (an
    /// anonymous group admin, whose sender is the group; a channel) counts as that chat's
    /// id, so a group's own id here admits its anonymous admins.
    pub allowed_users: Vec<i64>,
    /// Chat ids (groups) whose members may all talk to the bot there.
    pub allowed_chats: Vec<i64>,
    /// A word that addresses the bot in groups, besides an @mention or a reply to it.
    pub trigger: Option<String>,
    /// The public HTTPS URL Telegram posts updates to; unset: long polling.
    pub webhook_url: Option<String>,
    /// Checked on every webhook request (Telegram sends it back in a header). Generated at
    /// start when unset. Never printed.
    pub webhook_secret: Option<String>,
    /// The local address the webhook server listens on (behind whatever serves the URL).
    pub webhook_listen: Option<String>,
    /// Whether replies in private chats stream as drafts (`sendMessageDraft`) rather than
    /// an edited message. A server without drafts is detected and edits are used instead.
    pub drafts: bool,
    /// How long one long poll (`getUpdates`) waits for updates, in seconds.
    pub poll_timeout_secs: u32,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            token: None,
            api_url: DEFAULT_API_URL.into(),
            allowed_users: Vec::new(),
            allowed_chats: Vec::new(),
            trigger: None,
            webhook_url: None,
            webhook_secret: None,
            webhook_listen: None,
            drafts: true,
            poll_timeout_secs: 30,
        }
    }
}

impl fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("TelegramConfig")
            .field("token", &redact(&self.token))
            .field("api_url", &self.api_url)
            .field("allowed_users", &self.allowed_users)
            .field("allowed_chats", &self.allowed_chats)
            .field("trigger", &self.trigger)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &redact(&self.webhook_secret))
            .field("webhook_listen", &self.webhook_listen)
            .field("drafts", &self.drafts)
            .field("poll_timeout_secs", &self.poll_timeout_secs)
            .finish()
    }
}

/// A Telegram setting is wrong: the shared adapter settings error, worded for the operator.
pub type TelegramConfigError = crate::registry::SettingsError;

impl TelegramConfig {
    /// Applies the environment over the file's settings. Allowlists from the environment
    /// are added to the file's, so an operator can grant access without editing it.
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), TelegramConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        if let Some(v) = get("TELEGRAM_API_URL") {
            self.api_url = v.to_string();
        }
        for (name, list) in [
            ("CLAWPEN_TELEGRAM_ALLOWED_USERS", &mut self.allowed_users),
            ("CLAWPEN_TELEGRAM_ALLOWED_CHATS", &mut self.allowed_chats),
        ] {
            if let Some(v) = get(name) {
                list.extend(parse_ids(v).ok_or_else(|| TelegramConfigError::Env {
                    name,
                    value: v.to_string(),
                    expected: "comma-separated numeric ids",
                })?);
            }
        }
        let strings = [
            ("CLAWPEN_TELEGRAM_TRIGGER", &mut self.trigger),
            ("CLAWPEN_TELEGRAM_WEBHOOK_URL", &mut self.webhook_url),
            ("CLAWPEN_TELEGRAM_WEBHOOK_SECRET", &mut self.webhook_secret),
            ("CLAWPEN_TELEGRAM_WEBHOOK_LISTEN", &mut self.webhook_listen),
        ];
        for (name, slot) in strings {
            if let Some(v) = get(name) {
                *slot = Some(v.to_string());
            }
        }
        Ok(())
    }

    /// Checks what can be checked before talking to Telegram.
    pub fn validate(&self) -> Result<(), TelegramConfigError> {
        let invalid = |key, message: &str| {
            Err(TelegramConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if http_url(&self.api_url).is_none() {
            return invalid("telegram.api_url", "must be an http(s) URL");
        }
        if let Some(url) = &self.webhook_url {
            if http_url(url).is_none_or(|u| u.scheme() != "https") {
                return invalid("telegram.webhook_url", "must be an https URL");
            }
        }
        if let Some(secret) = &self.webhook_secret {
            if !is_secret_token(secret) {
                return invalid(
                    "telegram.webhook_secret",
                    "must be 1-256 characters of A-Z, a-z, 0-9, _ and -",
                );
            }
        }
        if self.listen_addr().is_err() {
            return invalid(
                "telegram.webhook_listen",
                "must be an address like 0.0.0.0:8443",
            );
        }
        if self.trigger.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return invalid("telegram.trigger", "must not be blank");
        }
        if self.poll_timeout_secs > 50 {
            return invalid("telegram.poll_timeout_secs", "must be at most 50");
        }
        Ok(())
    }

    /// The Bot API server's URL.
    pub fn api_url(&self) -> Result<Url, TelegramConfigError> {
        http_url(&self.api_url).ok_or_else(|| TelegramConfigError::Invalid {
            key: "telegram.api_url",
            message: "must be an http(s) URL".into(),
        })
    }

    /// The webhook server's local address.
    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.webhook_listen
            .as_deref()
            .unwrap_or(DEFAULT_WEBHOOK_LISTEN)
            .parse()
    }

    /// How long one long poll waits.
    pub fn poll_timeout(&self) -> Duration {
        Duration::from_secs(self.poll_timeout_secs.into())
    }
}

/// Parses `1, 2,3`; `None` if any item is not an integer.
fn parse_ids(text: &str) -> Option<Vec<i64>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
}

/// An http(s) URL with a host (anything else would make request URLs meaningless).
fn http_url(text: &str) -> Option<Url> {
    let url = Url::parse(text.trim_end_matches('/')).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.has_host()).then_some(url)
}

/// Whether `secret` is a valid `secret_token` for `setWebhook`.
pub fn is_secret_token(secret: &str) -> bool {
    (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_environment_adds_to_allowlists_and_overrides_the_rest() {
        let mut config: TelegramConfig =
            toml_like(r#"{"allowed_users": [1], "api_url": "https://a.example"}"#);
        config
            .apply_env(&env(&[
                ("CLAWPEN_TELEGRAM_ALLOWED_USERS", "2, 3"),
                ("CLAWPEN_TELEGRAM_ALLOWED_CHATS", "-1001"),
                ("TELEGRAM_API_URL", "http://127.0.0.1:8081"),
                ("CLAWPEN_TELEGRAM_TRIGGER", "claw"),
            ]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.allowed_users, [1, 2, 3]);
        assert_eq!(config.allowed_chats, [-1001]);
        assert_eq!(config.api_url, "http://127.0.0.1:8081");
        assert_eq!(config.trigger.as_deref(), Some("claw"));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let mut config = TelegramConfig::default();
        let err = config.apply_env(&env(&[("CLAWPEN_TELEGRAM_ALLOWED_USERS", "1,bob")]));
        assert!(matches!(
            err,
            Err(TelegramConfigError::Env {
                name: "CLAWPEN_TELEGRAM_ALLOWED_USERS",
                ..
            })
        ));
        for (key, bad) in [
            (
                "telegram.api_url",
                TelegramConfig {
                    api_url: "ftp://x".into(),
                    ..TelegramConfig::default()
                },
            ),
            (
                "telegram.webhook_url",
                TelegramConfig {
                    webhook_url: Some("http://insecure.example/hook".into()),
                    ..TelegramConfig::default()
                },
            ),
            (
                "telegram.webhook_secret",
                TelegramConfig {
                    webhook_secret: Some("has spaces".into()),
                    ..TelegramConfig::default()
                },
            ),
            (
                "telegram.webhook_listen",
                TelegramConfig {
                    webhook_listen: Some("everywhere".into()),
                    ..TelegramConfig::default()
                },
            ),
        ] {
            match bad.validate() {
                Err(TelegramConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused_and_secrets_never_printed() {
        let err = serde_json::from_str::<TelegramConfig>(r#"{"tokn": "x"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("tokn"), "{err}");
        let config = TelegramConfig {
            token: Some("123:very-secret".into()),
            webhook_secret: Some("also-secret".into()),
            ..TelegramConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("also-secret"),
            "{shown}"
        );
    }

    fn toml_like(json: &str) -> TelegramConfig {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }
}
