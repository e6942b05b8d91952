//! The Discord adapter's registration: its `[discord]` table, its environment variables,
//! its `doctor` checks, and building it.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{DiscordConfig, ENV_VARS};
use super::{DiscordAdapter, PLATFORM};
use crate::egress::Egress;
use serenity::http::{LightMethod, Request, Route};

use crate::registry::{Check, Registration, Settings, SettingsError};
use crate::{Adapter, AdapterError};

/// The variable holding the bot token.
const TOKEN_VAR: &str = "DISCORD_BOT_TOKEN";

/// The Discord adapter, as [`crate::registry::ALL`] lists it.
#[derive(Debug)]
pub struct Discord;

impl Registration for Discord {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn config_keys(&self) -> &'static [&'static str] {
        &["discord"]
    }

    fn env_vars(&self) -> &'static [&'static str] {
        ENV_VARS
    }

    fn configure(
        &self,
        file: &BTreeMap<String, serde_json::Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn Settings>, SettingsError> {
        let mut config: DiscordConfig = match file.get("discord") {
            Some(table) => {
                serde_json::from_value(table.clone()).map_err(|e| SettingsError::File {
                    message: format!("[discord]: {e}"),
                })?
            }
            None => DiscordConfig::default(),
        };
        let from_env = env
            .get(TOKEN_VAR)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        if let Some(token) = from_env {
            config.token = Some(token.to_string());
        }
        config.apply_env(env)?;
        config.validate()?;
        Ok(Arc::new(config))
    }
}

#[async_trait::async_trait]
impl Settings for DiscordConfig {
    fn enabled(&self) -> bool {
        self.token.is_some()
    }

    fn secrets(&self) -> Vec<String> {
        self.token.iter().cloned().collect()
    }

    fn build(&self) -> Result<Arc<dyn Adapter>, AdapterError> {
        let adapter: Arc<dyn Adapter> = DiscordAdapter::new(self.clone())?;
        Ok(adapter)
    }

    fn doctor(&self) -> Vec<Check> {
        let check = |detail: String| Check {
            ok: true,
            what: PLATFORM.into(),
            detail,
        };
        if !self.enabled() {
            return vec![check(format!(
                "not configured — set {TOKEN_VAR} to run a Discord bot"
            ))];
        }
        let access = if self.is_open_for_pairing() {
            "no allowlist: the owner pairs with the code `clawpen run` prints".to_string()
        } else {
            format!(
                "{} users, {} roles and {} channels allowed",
                self.allowed_users.len(),
                self.allowed_roles.len(),
                self.allowed_channels.len()
            )
        };
        vec![check(format!("token set, {access}"))]
    }

    async fn probe(&self) -> Vec<Check> {
        let egress = Egress::from_env();
        let rest = match super::api::Rest::new(self, &egress) {
            Ok(rest) => rest,
            Err(e) => return vec![failed(e.to_string())],
        };
        let me = Request::new(Route::UserMe, LightMethod::Get);
        let user = match rest.json::<serde_json::Value>(me, None).await {
            Ok(user) => user,
            Err(AdapterError::Rejected(why)) => {
                return vec![failed(format!("{why} — check {TOKEN_VAR}"))]
            }
            Err(e) => return vec![failed(format!("cannot reach Discord: {e}"))],
        };
        let name = user["username"].as_str().unwrap_or("?").to_string();
        let app = Request::new(Route::Oauth2ApplicationCurrent, LightMethod::Get);
        let flags = match rest.json::<serde_json::Value>(app, None).await {
            Ok(app) => app["flags"].as_u64().unwrap_or(0),
            Err(e) => {
                return vec![failed(format!(
                    "bot {name}: cannot read the application: {e}"
                ))]
            }
        };
        if flags & (MESSAGE_CONTENT | MESSAGE_CONTENT_LIMITED) == 0 {
            return vec![failed(format!("bot {name}: {INTENT_OFF}"))];
        }
        // The gateway is a websocket of its own: reachable through the same proxy and CAs?
        let gateway = Request::new(Route::GatewayBot, LightMethod::Get);
        let reached = match rest.json::<serde_json::Value>(gateway, None).await {
            Ok(answer) => match answer["url"].as_str().map(url::Url::parse) {
                Some(Ok(url)) => egress.connect(&url).await.map(|_| url.to_string()),
                _ => Err("GET /gateway/bot named no gateway URL".to_string()),
            },
            Err(e) => Err(format!("GET /gateway/bot: {e}")),
        };
        match reached {
            Ok(url) => vec![Check {
                ok: true,
                what: PLATFORM.into(),
                detail: format!(
                    "token accepted (bot {name}), message content intent on, gateway {url} reachable"
                ),
            }],
            Err(why) => vec![failed(format!("bot {name}: cannot reach the gateway: {why}"))],
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Application flags: the message content intent, granted (verified bots) or on (others).
const MESSAGE_CONTENT: u64 = 1 << 18;
const MESSAGE_CONTENT_LIMITED: u64 = 1 << 19;

/// Said when the application has no message content intent.
const INTENT_OFF: &str = "the Message Content intent is off, so the bot would see no text —     turn on \"Message Content Intent\" under Bot → Privileged Gateway Intents at     https://discord.com/developers/applications";

fn failed(detail: String) -> Check {
    Check {
        ok: false,
        what: PLATFORM.into(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discord_runs_only_with_a_token_and_the_variables_win() {
        let file: BTreeMap<String, serde_json::Value> = [(
            "discord".to_string(),
            serde_json::json!({"token": "file-token", "allowed_roles": ["7"]}),
        )]
        .into();
        let env = BTreeMap::from([
            (TOKEN_VAR.to_string(), "env-token".to_string()),
            ("CLAWPEN_DISCORD_ALLOWED_USERS".to_string(), "5".to_string()),
        ]);
        let settings = Discord
            .configure(&file, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.enabled());
        assert_eq!(settings.secrets(), ["env-token"]);
        assert!(
            !format!("{settings:?}").contains("env-token"),
            "a token was printed"
        );
        assert!(settings.doctor()[0].detail.contains("1 users, 1 roles"));
        let unset = Discord.configure(&BTreeMap::new(), &BTreeMap::new());
        let unset = unset.unwrap_or_else(|e| panic!("{e}"));
        assert!(!unset.enabled());
        assert!(unset.doctor()[0].detail.contains(TOKEN_VAR));
        let typo: BTreeMap<String, serde_json::Value> =
            [("discord".to_string(), serde_json::json!({"tokn": "x"}))].into();
        let err = Discord.configure(&typo, &BTreeMap::new()).err();
        assert!(err.is_some_and(|e| e.to_string().contains("tokn")));
    }
}
