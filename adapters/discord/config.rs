//! The Discord adapter's settings: the `[discord]` table of the config file and the
//! environment variables that override it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use url::Url;

use crate::registry::SettingsError;

/// The public API host. Paths (`/api/v10/...`) are serenity's; a configured URL replaces
/// only this base, as serenity's `HttpBuilder::proxy` does.
pub const DEFAULT_API_URL: &str = "https://discord.com";

/// The environment variables read for Discord: the token's, read by the registration,
/// and the ones [`DiscordConfig::apply_env`] reads.
pub const ENV_VARS: &[&str] = &[
    "DISCORD_BOT_TOKEN",
    "DISCORD_API_URL",
    "CLAWPEN_DISCORD_ALLOWED_USERS",
];

/// How the bot talks to Discord and who may talk to it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// The bot token from the developer portal. Never printed.
    pub token: Option<String>,
    /// The API base URL: the public one, a proxy, or a test server. Its `GET
    /// /api/v10/gateway/bot` names the gateway (which may then be plain `ws://`).
    pub api_url: String,
    /// User ids (snowflakes) allowed to talk to the bot anywhere.
    pub allowed_users: Vec<String>,
    /// Role ids whose holders may talk to the bot in their server.
    pub allowed_roles: Vec<String>,
    /// Channel ids where everyone may talk to the bot (a channel admits its threads).
    pub allowed_channels: Vec<String>,
    /// A mention in a channel opens a thread for its answer, which is the conversation from
    /// then on.
    pub thread_per_mention: bool,
    /// Whether agent output may ping users it mentions (`<@id>`); @everyone, @here and
    /// roles never ping.
    pub allow_user_mentions: bool,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            token: None,
            api_url: DEFAULT_API_URL.into(),
            allowed_users: Vec::new(),
            allowed_roles: Vec::new(),
            allowed_channels: Vec::new(),
            thread_per_mention: false,
            allow_user_mentions: false,
        }
    }
}

impl fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("api_url", &self.api_url)
            .field("allowed_users", &self.allowed_users)
            .field("allowed_roles", &self.allowed_roles)
            .field("allowed_channels", &self.allowed_channels)
            .field("thread_per_mention", &self.thread_per_mention)
            .field("allow_user_mentions", &self.allow_user_mentions)
            .finish()
    }
}

impl DiscordConfig {
    /// Applies the environment over the file's settings; allowed users from the
    /// environment are added to the file's.
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), SettingsError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        if let Some(v) = get("DISCORD_API_URL") {
            self.api_url = v.to_string();
        }
        let name = "CLAWPEN_DISCORD_ALLOWED_USERS";
        if let Some(v) = get(name) {
            let ids = parse_ids(v).ok_or_else(|| SettingsError::Env {
                name,
                value: v.to_string(),
                expected: "comma-separated numeric ids",
            })?;
            self.allowed_users.extend(ids);
        }
        Ok(())
    }

    /// Checks what can be checked before talking to Discord.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, message: &str| {
            Err(SettingsError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.api_url().is_err() {
            return invalid("discord.api_url", "must be an http(s) URL");
        }
        for (key, list) in [
            ("discord.allowed_users", &self.allowed_users),
            ("discord.allowed_roles", &self.allowed_roles),
            ("discord.allowed_channels", &self.allowed_channels),
        ] {
            if !list.iter().all(|id| is_snowflake(id)) {
                return invalid(key, "must be numeric ids (snowflakes) as strings");
            }
        }
        Ok(())
    }

    /// The API base URL, without a trailing slash.
    pub fn api_url(&self) -> Result<Url, SettingsError> {
        let url = Url::parse(self.api_url.trim_end_matches('/')).ok();
        url.filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| SettingsError::Invalid {
                key: "discord.api_url",
                message: "must be an http(s) URL".into(),
            })
    }

    /// Whether no allowlist is configured (the owner then pairs by code).
    pub fn is_open_for_pairing(&self) -> bool {
        self.allowed_users.is_empty()
            && self.allowed_roles.is_empty()
            && self.allowed_channels.is_empty()
    }
}

/// Whether `id` is a Discord snowflake: a decimal `u64`.
fn is_snowflake(id: &str) -> bool {
    !id.is_empty() && id.parse::<u64>().is_ok()
}

/// Parses `1, 2,3`; `None` if any item is not a snowflake.
fn parse_ids(text: &str) -> Option<Vec<String>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| is_snowflake(s).then(|| s.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_adds_users_and_replaces_the_url() {
        let mut config: DiscordConfig =
            serde_json::from_str(r#"{"allowed_users": ["1"], "allowed_roles": ["9"]}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let env = BTreeMap::from([
            ("CLAWPEN_DISCORD_ALLOWED_USERS".into(), "2, 3".into()),
            ("DISCORD_API_URL".into(), "http://127.0.0.1:9/".into()),
        ]);
        config.apply_env(&env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.allowed_users, ["1", "2", "3"]);
        assert_eq!(config.api_url, "http://127.0.0.1:9/");
        assert_eq!(config.validate(), Ok(()));
        let bad = BTreeMap::from([("CLAWPEN_DISCORD_ALLOWED_USERS".into(), "bob".into())]);
        assert!(config.apply_env(&bad).is_err());
        let roles = DiscordConfig {
            allowed_roles: vec!["admins".into()],
            ..DiscordConfig::default()
        };
        assert!(matches!(
            roles.validate(),
            Err(SettingsError::Invalid {
                key: "discord.allowed_roles",
                ..
            })
        ));
    }

    #[test]
    fn unknown_keys_are_refused_and_the_token_never_printed() {
        let err = serde_json::from_str::<DiscordConfig>(r#"{"tokn": "x"}"#).err();
        assert!(err.is_some_and(|e| e.to_string().contains("tokn")));
        let config = DiscordConfig {
            token: Some("very-secret".into()),
            ..DiscordConfig::default()
        };
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
