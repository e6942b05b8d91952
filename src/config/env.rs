//! The environment's part of the configuration: which variables clawpen reads, and how they
//! override the file (a variable set but empty counts as unset).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{settings_error, AdapterSettings, Config, ConfigError, Secret};

/// The environment variables the bridge reads itself (each adapter declares its own in its
/// registration).
pub const ENV_VARS: &[&str] = &[
    "CLAWPEN_CONFIG",
    "CLAWPEN_DATA_DIR",
    "CLAWPEN_IMAGE",
    "CLAWPEN_MAX_BOXES",
    "CLAWPEN_WARM_POOL",
    "CLAWPEN_IDLE_TIMEOUT_SECS",
    "CLAWPEN_SHUTDOWN_GRACE_SECS",
    "CLAWPEN_TURN_STALL_SECS",
    "CLAWPEN_MAX_TURN_SECS",
    "CLAWPEN_MAX_REPLY_KB",
    "CLAWPEN_MAX_REPLY_MESSAGES",
    "CLAWPEN_MAX_RATE_WAIT_SECS",
    "CLAWPEN_PROVIDER",
    "CLAWPEN_MODEL",
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
    "CLAWPEN_REQUESTS_PER_MINUTE",
    "CLAWPEN_TOKENS_PER_DAY",
    "CLAWPEN_MAX_REQUESTS_IN_FLIGHT",
    "CLAWPEN_WEB_FETCHES_PER_MINUTE",
    "CLAWPEN_WEB_FETCH_ALLOW",
    "CLAWPEN_WEB_FETCH_MAX_KB",
    "CLAWPEN_WEB_FETCH_TIMEOUT_SECS",
    "CLAWPEN_ECHO_DELAY_MS",
    "CLAWPEN_INSTRUCTIONS",
    "CLAWPEN_HARNESS",
    "CLAWPEN_AGENT_BINARY",
    "CLAWPEN_BUSYBOX",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "CLAWPEN_METRICS_LISTEN",
    // Read by `main` for the log filter and the log format.
    "CLAWPEN_LOG",
    "CLAWPEN_LOG_FORMAT",
];

/// `CLAWPEN_*` variables set in `env` that clawpen does not read (typos, or settings of
/// the box that belong in the config file), for `doctor` to point out.
pub fn unknown_env_vars(env: &BTreeMap<String, String>) -> Vec<String> {
    let adapters: Vec<&str> = AdapterSettings::env_vars().collect();
    env.keys()
        .filter(|name| name.starts_with("CLAWPEN_"))
        .filter(|name| !ENV_VARS.contains(&name.as_str()) && !adapters.contains(&name.as_str()))
        .cloned()
        .collect()
}

impl Config {
    pub(super) fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let get = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        if let Some(v) = get("CLAWPEN_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("CLAWPEN_IMAGE") {
            self.image = v;
        }
        if let Some(v) = get("CLAWPEN_PROVIDER") {
            self.provider = v;
        }
        if let Some(v) = get("CLAWPEN_MODEL") {
            self.model = Some(v);
        }
        if let Some(v) = get("ANTHROPIC_BASE_URL") {
            self.anthropic_base_url = v;
        }
        if let Some(v) = get("OPENAI_BASE_URL") {
            self.openai_base_url = v;
        }
        if let Some(v) = get("CLAWPEN_WEB_FETCH_ALLOW") {
            // Comma- or space-separated, as one variable holds the whole list.
            self.web_fetch_allow = v
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|entry| !entry.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = get("CLAWPEN_AGENT_BINARY") {
            self.agent_binary = Some(PathBuf::from(v));
        }
        if let Some(v) = get("CLAWPEN_BUSYBOX") {
            self.busybox = Some(PathBuf::from(v));
        }
        if let Some(v) = get("CLAWPEN_METRICS_LISTEN") {
            let listen = v.trim().parse().map_err(|_| ConfigError::Env {
                name: "CLAWPEN_METRICS_LISTEN".into(),
                value: v.clone(),
                expected: "an address and port, such as 127.0.0.1:9464",
            })?;
            self.metrics.listen = Some(listen);
        }
        if env.get("CLAWPEN_MAX_BOXES").is_some_and(|v| !v.is_empty()) {
            let mut max_boxes = 0;
            number(env, "CLAWPEN_MAX_BOXES", &mut max_boxes)?;
            self.max_boxes = Some(max_boxes);
        }
        number(env, "CLAWPEN_WARM_POOL", &mut self.warm_pool)?;
        number(
            env,
            "CLAWPEN_IDLE_TIMEOUT_SECS",
            &mut self.idle_timeout_secs,
        )?;
        number(
            env,
            "CLAWPEN_SHUTDOWN_GRACE_SECS",
            &mut self.shutdown_grace_secs,
        )?;
        number(env, "CLAWPEN_TURN_STALL_SECS", &mut self.turn_stall_secs)?;
        number(env, "CLAWPEN_MAX_TURN_SECS", &mut self.max_turn_secs)?;
        number(env, "CLAWPEN_MAX_REPLY_KB", &mut self.max_reply_kb)?;
        number(
            env,
            "CLAWPEN_MAX_REPLY_MESSAGES",
            &mut self.max_reply_messages,
        )?;
        number(
            env,
            "CLAWPEN_MAX_RATE_WAIT_SECS",
            &mut self.max_rate_wait_secs,
        )?;
        number(env, "CLAWPEN_ECHO_DELAY_MS", &mut self.echo_delay_ms)?;
        if let Some(v) = get("CLAWPEN_INSTRUCTIONS") {
            self.instructions_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("CLAWPEN_HARNESS") {
            self.harness = Some(v);
        }
        number(
            env,
            "CLAWPEN_REQUESTS_PER_MINUTE",
            &mut self.requests_per_minute,
        )?;
        number(env, "CLAWPEN_TOKENS_PER_DAY", &mut self.tokens_per_day)?;
        number(
            env,
            "CLAWPEN_MAX_REQUESTS_IN_FLIGHT",
            &mut self.max_requests_in_flight,
        )?;
        number(
            env,
            "CLAWPEN_WEB_FETCHES_PER_MINUTE",
            &mut self.web_fetches_per_minute,
        )?;
        number(env, "CLAWPEN_WEB_FETCH_MAX_KB", &mut self.web_fetch_max_kb)?;
        number(
            env,
            "CLAWPEN_WEB_FETCH_TIMEOUT_SECS",
            &mut self.web_fetch_timeout_secs,
        )?;
        if let Some(v) = get("ANTHROPIC_API_KEY") {
            self.anthropic_api_key = Some(Secret::new(v));
        }
        if let Some(v) = get("OPENAI_API_KEY") {
            self.openai_api_key = Some(Secret::new(v));
        }
        // Each adapter reads its own variables (and checks its settings).
        self.adapters.reload(env).map_err(settings_error)?;
        Ok(())
    }
}

fn number<T: std::str::FromStr>(
    env: &BTreeMap<String, String>,
    name: &str,
    slot: &mut T,
) -> Result<(), ConfigError> {
    if let Some(value) = env.get(name).filter(|v| !v.is_empty()) {
        *slot = value.trim().parse().map_err(|_| ConfigError::Env {
            name: name.into(),
            value: value.clone(),
            expected: "a whole number",
        })?;
    }
    Ok(())
}
