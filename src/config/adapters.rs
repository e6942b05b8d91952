//! The adapters' part of the configuration. Each adapter owns some top-level keys of the
//! file (its table, such as `[telegram]`) and some environment variables, and reads them
//! itself through its registration ([`clawpen_adapters::registry`]); the daemon's config
//! only sets those keys aside and keeps what each adapter made of them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use clawpen_adapters::registry::{Check, Settings, SettingsError, ALL};
use clawpen_adapters::{Adapter, AdapterError};

use super::ConfigError;

/// Every adapter's settings, read from its keys of the file and its variables.
#[derive(Clone)]
pub struct AdapterSettings {
    /// The adapters' keys of the config file, as JSON values.
    file: BTreeMap<String, serde_json::Value>,
    /// The adapters' environment variables that are set.
    env: BTreeMap<String, String>,
    /// What each registration read, in registry order; empty until read without error.
    loaded: Vec<(&'static str, Arc<dyn Settings>)>,
}

impl AdapterSettings {
    /// The top-level keys of the config file that belong to adapters.
    pub fn owned_keys() -> impl Iterator<Item = &'static str> {
        ALL.iter().flat_map(|r| r.config_keys().iter().copied())
    }

    /// The environment variables adapters read.
    pub fn env_vars() -> impl Iterator<Item = &'static str> {
        ALL.iter().flat_map(|r| r.env_vars().iter().copied())
    }

    /// Reads every adapter's settings from its keys of `file` and from `env`.
    pub(super) fn load(
        file: BTreeMap<String, serde_json::Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let ours: Vec<&str> = Self::env_vars().collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .filter(|(name, _)| ours.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let mut loaded = Vec::with_capacity(ALL.len());
        for registration in ALL {
            let mine = registration
                .config_keys()
                .iter()
                .filter_map(|key| Some((key.to_string(), file.get(*key)?.clone())))
                .collect();
            loaded.push((
                registration.platform(),
                registration.configure(&mine, &env)?,
            ));
        }
        Ok(Self { file, env, loaded })
    }

    /// The same file with only `file` read so far; [`AdapterSettings::reload`] reads the
    /// rest (used while the environment, which may correct a value, is not applied yet).
    pub(super) fn unread(file: BTreeMap<String, serde_json::Value>) -> Self {
        Self {
            file,
            env: BTreeMap::new(),
            loaded: Vec::new(),
        }
    }

    /// Reads again with the environment `env`.
    pub(super) fn reload(&mut self, env: &BTreeMap<String, String>) -> Result<(), SettingsError> {
        *self = Self::load(std::mem::take(&mut self.file), env)?;
        Ok(())
    }

    /// Sets one of the adapters' environment variables as if it had been in the
    /// environment (for tests and tools that build a config in code).
    pub fn set_env(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let mut env = self.env.clone();
        env.insert(name.to_string(), value.to_string());
        self.reload(&env).map_err(super::settings_error)
    }

    /// The settings of the adapter of `platform`.
    pub fn get(&self, platform: &str) -> Option<&dyn Settings> {
        self.loaded
            .iter()
            .find(|(p, _)| *p == platform)
            .map(|(_, s)| &**s)
    }

    /// Builds every adapter whose credentials are configured, in registry order.
    pub fn build(&self) -> Result<Vec<Arc<dyn Adapter>>, (&'static str, AdapterError)> {
        self.loaded
            .iter()
            .filter(|(_, settings)| settings.enabled())
            .map(|(platform, settings)| settings.build().map_err(|e| (*platform, e)))
            .collect()
    }

    /// The secrets adapters hold.
    pub fn secrets(&self) -> Vec<String> {
        self.loaded.iter().flat_map(|(_, s)| s.secrets()).collect()
    }

    /// What `clawpen doctor` reports about the adapters.
    pub fn doctor(&self) -> Vec<Check> {
        self.loaded.iter().flat_map(|(_, s)| s.doctor()).collect()
    }

    /// What `clawpen doctor` finds by asking each configured adapter's platform.
    pub async fn probe(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for (_, settings) in self.loaded.iter().filter(|(_, s)| s.enabled()) {
            checks.extend(settings.probe().await);
        }
        checks
    }
}

impl Default for AdapterSettings {
    fn default() -> Self {
        // Defaults of every adapter; reading nothing cannot fail, and if an adapter's
        // defaults were wrong it would show as absent rather than stop clawpen.
        Self::load(BTreeMap::new(), &BTreeMap::new())
            .unwrap_or_else(|_| Self::unread(BTreeMap::new()))
    }
}

impl PartialEq for AdapterSettings {
    /// Equal inputs give equal settings.
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.env == other.env
    }
}

impl fmt::Debug for AdapterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each adapter's settings redact their own secrets; the raw inputs may hold them.
        let mut map = f.debug_map();
        for (platform, settings) in &self.loaded {
            map.entry(platform, settings);
        }
        map.finish()
    }
}
