//! The checks a loaded configuration must pass, each failure naming its setting, so that a
//! bad value stops clawpen at start rather than surfacing in a conversation.

use super::{Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.max_boxes == Some(0) {
            return invalid("max_boxes", "must be at least 1");
        }
        if self.idle_timeout_secs == 0 {
            return invalid("idle_timeout_secs", "must be at least 1");
        }
        if self.max_turn_secs == 0 {
            return invalid("max_turn_secs", "must be at least 1");
        }
        if self.max_reply_kb == 0 {
            return invalid("max_reply_kb", "must be at least 1");
        }
        if !(self.limits.cpus > 0.0 && self.limits.cpus <= 1024.0) {
            return invalid("box.cpus", "must be above 0");
        }
        if self.limits.memory_mb < 16 {
            return invalid("box.memory_mb", "must be at least 16");
        }
        if self.limits.pids < 8 {
            return invalid("box.pids", "must be at least 8");
        }
        if self.limits.workspace_check_secs == 0 {
            return invalid("box.workspace_check_secs", "must be at least 1");
        }
        if self.provider.is_empty() {
            return invalid("provider", "must not be empty");
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return invalid("model", "must not be empty");
        }
        check_base_url("anthropic_base_url", &self.anthropic_base_url)?;
        check_base_url("openai_base_url", &self.openai_base_url)?;
        for entry in &self.web_fetch_allow {
            if let Err(message) = crate::tunnel::AllowRule::parse(entry) {
                return Err(ConfigError::Invalid {
                    key: "web_fetch_allow",
                    message,
                });
            }
        }
        if self.web_fetch_max_kb == 0 {
            return invalid("web_fetch_max_kb", "must be at least 1");
        }
        if self.web_fetch_timeout_secs == 0 {
            return invalid("web_fetch_timeout_secs", "must be at least 1");
        }
        if let Some(zone) = &self.timezone {
            if let Err(message) = crate::schedule::spec::zone(zone) {
                return Err(ConfigError::Invalid {
                    key: "timezone",
                    message,
                });
            }
        }
        if self.max_tasks_per_conversation == 0 {
            return invalid("max_tasks_per_conversation", "must be at least 1");
        }
        if self.min_task_interval_secs == 0 {
            return invalid("min_task_interval_secs", "must be at least 1");
        }
        if let Some(bad) = self.task_owners.iter().find(|o| !o.contains(':')) {
            return Err(ConfigError::Invalid {
                key: "task_owners",
                message: format!("`{bad}` is not `platform:user` (such as telegram:12345)"),
            });
        }
        Ok(())
    }
}

/// A provider base URL must be an absolute http(s) URL without credentials, query or
/// fragment: the tunnel appends the endpoint path to it.
fn check_base_url(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| Err(ConfigError::Invalid { key, message });
    let url = match reqwest::Url::parse(value.trim()) {
        Ok(url) => url,
        Err(e) => return invalid(format!("`{value}` is not a URL ({e})")),
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return invalid(format!("`{value}` must be an http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid(
            "must not contain a user name or password; keys have their own settings".into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return invalid(format!("`{value}` must not have a query or fragment"));
    }
    Ok(())
}
