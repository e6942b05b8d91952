//! The Telegram adapter's registration: its keys of the config file (`[telegram]` and the
//! top-level `telegram_bot_token`), its environment variables, its `doctor` checks, and
//! building it.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{TelegramConfig, ENV_VARS};
use super::{TelegramAdapter, PLATFORM};
use crate::registry::{Check, Registration, Settings, SettingsError};
use crate::{Adapter, AdapterError};

/// The variable holding the bot token.
const TOKEN_VAR: &str = "TELEGRAM_BOT_TOKEN";

/// The Telegram adapter, as [`crate::registry::ALL`] lists it.
#[derive(Debug)]
pub struct Telegram;

impl Registration for Telegram {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn config_keys(&self) -> &'static [&'static str] {
        &["telegram", "telegram_bot_token"]
    }

    fn env_vars(&self) -> &'static [&'static str] {
        ENV_VARS
    }

    fn configure(
        &self,
        file: &BTreeMap<String, serde_json::Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn Settings>, SettingsError> {
        let mut config: TelegramConfig = match file.get("telegram") {
            Some(table) => {
                serde_json::from_value(table.clone()).map_err(|e| SettingsError::File {
                    message: format!("[telegram]: {e}"),
                })?
            }
            None => TelegramConfig::default(),
        };
        let top = match file.get("telegram_bot_token") {
            Some(serde_json::Value::String(token)) => Some(token.clone()),
            Some(_) => {
                return Err(SettingsError::File {
                    message: "telegram_bot_token: expected a string".into(),
                })
            }
            None => None,
        };
        // The table's `token` is another name for the top-level key; the variable wins.
        let from_env = env.get(TOKEN_VAR).filter(|v| !v.is_empty()).cloned();
        config.token = from_env.or(config.token.take()).or(top);
        config.apply_env(env)?;
        config.validate()?;
        Ok(Arc::new(config))
    }
}

impl Settings for TelegramConfig {
    fn enabled(&self) -> bool {
        self.token.is_some()
    }

    fn secrets(&self) -> Vec<String> {
        self.token
            .iter()
            .chain(&self.webhook_secret)
            .cloned()
            .collect()
    }

    fn build(&self) -> Result<Arc<dyn Adapter>, AdapterError> {
        let adapter: Arc<dyn Adapter> = TelegramAdapter::new(self.clone())?;
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
                "not configured — set {TOKEN_VAR} to run a Telegram bot"
            ))];
        }
        let receiving = match &self.webhook_url {
            Some(url) => format!("webhook at {url}"),
            None => "long polling".into(),
        };
        let access = if self.allowed_users.is_empty() && self.allowed_chats.is_empty() {
            "no allowlist: the owner pairs with the code `clawpen run` prints".to_string()
        } else {
            format!(
                "{} users and {} chats allowed",
                self.allowed_users.len(),
                self.allowed_chats.len()
            )
        };
        vec![check(format!("token set, {receiving}, {access}"))]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
