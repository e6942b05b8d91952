//! The adapters the daemon can run, each declared once, by a `registration` file in its
//! folder, and listed in [`ALL`]. The daemon reads every adapter's settings, checks and
//! starts it through this, so a new adapter is its folder plus one line in [`ALL`]: the
//! daemon's config, CLI and start-up code do not name adapters.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::{Adapter, AdapterError};

/// Every adapter clawpen knows, in the order they start. The terminal is not here: it has
/// no settings and is always part of the bridge.
pub const ALL: &[&dyn Registration] = &[
    &crate::telegram::registration::Telegram,
    &crate::discord::registration::Discord,
];

/// An adapter's settings are wrong; worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// An environment variable has a value of the wrong form.
    #[error("environment variable {name}={value:?} is invalid: {expected}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The setting, as written in the config file (`telegram.api_url`).
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The adapter's part of the config file does not parse (an unknown key is named).
    #[error("{message}")]
    File {
        /// The parser's message.
        message: String,
    },
}

/// One line of `clawpen doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Whether all is well; a failed check fails `doctor`.
    pub ok: bool,
    /// What was checked (`telegram`).
    pub what: String,
    /// What was found, and what to do when it is wrong.
    pub detail: String,
}

/// What the daemon needs to know about one kind of adapter.
pub trait Registration: Send + Sync {
    /// The platform name (`telegram`), as in conversation keys.
    fn platform(&self) -> &'static str;

    /// The top-level keys of the config file this adapter owns: its table and any other
    /// names (`telegram`, `telegram_bot_token`).
    fn config_keys(&self) -> &'static [&'static str];

    /// The environment variables it reads (`clawpen doctor` names other `CLAWPEN_*` ones).
    fn env_vars(&self) -> &'static [&'static str];

    /// Reads its settings: `file` holds its keys of the config file that are present (as
    /// JSON values), `env` the process environment, which wins. Checks them, too.
    fn configure(
        &self,
        file: &BTreeMap<String, serde_json::Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn Settings>, SettingsError>;
}

/// One adapter's loaded settings.
#[async_trait::async_trait]
pub trait Settings: Send + Sync + fmt::Debug {
    /// Whether the adapter is to run: its credentials are configured.
    fn enabled(&self) -> bool;

    /// The secrets it holds (tokens), which must never reach a box.
    fn secrets(&self) -> Vec<String>;

    /// Builds the adapter; only called when [`Settings::enabled`].
    fn build(&self) -> Result<Arc<dyn Adapter>, AdapterError>;

    /// What `clawpen doctor` reports about it (without talking to the platform).
    fn doctor(&self) -> Vec<Check>;

    /// What `clawpen doctor` finds by asking the platform (the token accepted, a switch
    /// in its settings); only called when [`Settings::enabled`]. None by default.
    async fn probe(&self) -> Vec<Check> {
        Vec::new()
    }

    /// For tests and tools that know the concrete type.
    fn as_any(&self) -> &dyn Any;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_adapters_claim_the_same_name_key_or_variable() {
        let mut seen = Vec::new();
        for registration in ALL {
            seen.push(format!("platform {}", registration.platform()));
            let keys = registration
                .config_keys()
                .iter()
                .map(|k| format!("key {k}"));
            let vars = registration
                .env_vars()
                .iter()
                .map(|v| format!("variable {v}"));
            seen.extend(keys.chain(vars));
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{seen:?}");
    }

    #[test]
    fn every_adapter_with_a_token_is_built_so_telegram_and_discord_run_together() {
        let env = BTreeMap::from([
            ("TELEGRAM_BOT_TOKEN".to_string(), "1:tg".to_string()),
            ("DISCORD_BOT_TOKEN".to_string(), "dc".to_string()),
        ]);
        let built: Vec<String> = ALL
            .iter()
            .map(|r| r.configure(&BTreeMap::new(), &env))
            .map(|settings| settings.unwrap_or_else(|e| panic!("{e}")))
            .filter(|settings| settings.enabled())
            .map(|settings| settings.build().unwrap_or_else(|e| panic!("{e}")))
            .map(|adapter| adapter.platform().to_string())
            .collect();
        assert_eq!(built, ["telegram", "discord"]);
    }

    #[test]
    fn telegram_runs_only_with_a_token_and_the_variable_wins() {
        let telegram = &crate::telegram::registration::Telegram;
        let file: BTreeMap<String, serde_json::Value> = [
            ("telegram_bot_token".to_string(), serde_json::json!("1:top")),
            (
                "telegram".to_string(),
                serde_json::json!({"allowed_users": [5]}),
            ),
        ]
        .into();
        let env = BTreeMap::from([("TELEGRAM_BOT_TOKEN".to_string(), "2:env".to_string())]);
        let settings = telegram.configure(&file, &env);
        let settings = settings.unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.enabled());
        assert_eq!(settings.secrets(), ["2:env"]);
        assert!(
            !format!("{settings:?}").contains("2:env"),
            "a token was printed"
        );
        let unset = telegram.configure(&BTreeMap::new(), &BTreeMap::new());
        let unset = unset.unwrap_or_else(|e| panic!("{e}"));
        assert!(!unset.enabled());
        assert!(unset.doctor()[0].detail.contains("TELEGRAM_BOT_TOKEN"));
        let typo: BTreeMap<String, serde_json::Value> =
            [("telegram".to_string(), serde_json::json!({"tokn": "x"}))].into();
        let err = telegram.configure(&typo, &BTreeMap::new()).err();
        assert!(err.is_some_and(|e| e.to_string().contains("tokn")));
    }
}
