//! Configuration: a TOML file, then `CLAWPEN_*` (and vendor) environment variables, which win.
//!
//! Unknown keys in the file are refused with their names, so a typo never silently falls
//! back to a default. Tokens and keys are [`Secret`]s: their `Debug` output is redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawpen_adapters::telegram::{TelegramConfig, TelegramConfigError};
use serde::Deserialize;

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for clawpen (unknown keys are named here).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// An environment variable has a value of the wrong form.
    #[error("environment variable {name}={value:?} is invalid: {expected}")]
    Env {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A token or key: usable by the bridge, never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Resource limits of every box.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoxLimits {
    /// Memory limit in MiB (swap is not allowed beyond it).
    pub memory_mb: u64,
    /// CPU limit in cores (fractions allowed).
    pub cpus: f64,
    /// Maximum number of processes and threads in the box.
    pub pids: i64,
    /// Size of the writable /tmp, in MiB.
    pub tmp_mb: u64,
    /// Size cap of the engine's stored logs of one box, in KiB.
    pub log_kb: u64,
}

impl Default for BoxLimits {
    fn default() -> Self {
        Self {
            memory_mb: 512,
            cpus: 1.0,
            pids: 256,
            tmp_mb: 64,
            log_kb: 1024,
        }
    }
}

/// A host path mounted into every box (at /mnt/<name>), if the allowlist permits it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRule {
    /// The host path (resolved through symlinks before it is checked).
    pub path: PathBuf,
    /// Whether boxes may write to it; read-only when false (the default).
    #[serde(default)]
    pub writable: bool,
}

/// Everything clawpen reads from its config file and environment.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store and the control socket live.
    pub data_dir: PathBuf,
    /// The box image; by default `clawpen-box:<version>`, built locally when missing.
    pub image: String,
    /// The most boxes alive at once; further conversations wait in a fair queue.
    pub max_boxes: usize,
    /// Seconds without activity after which a box is stopped (its workspace is kept).
    pub idle_timeout_secs: u64,
    /// Seconds running turns get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds a turn may go without any sign of life from its box before the box is
    /// considered hung and is killed.
    pub turn_stall_secs: u64,
    /// Limits of every box.
    #[serde(rename = "box")]
    pub limits: BoxLimits,
    /// Host directories under which mounts are allowed at all.
    pub mount_allowlist: Vec<PathBuf>,
    /// Host paths every box sees, each inside the allowlist and not credential-looking.
    pub mounts: Vec<MountRule>,
    /// Which agent provider the boxes use: `anthropic`, `openai` (any OpenAI-compatible
    /// Chat Completions API), or `echo`, which answers without a model.
    pub provider: String,
    /// The model the boxes ask for; by default [`default_model`] of the provider.
    pub model: Option<String>,
    /// Anthropic's API base URL, without `/v1` (the tunnel adds `/v1/messages`).
    pub anthropic_base_url: String,
    /// The OpenAI-compatible API base URL, with `/v1` (the tunnel adds `/chat/completions`).
    pub openai_base_url: String,
    /// Model requests one conversation may make in any 60 s; 0 for no limit.
    pub requests_per_minute: u32,
    /// Tokens (input, cache and output) one conversation may use per UTC day; 0 for no limit.
    pub tokens_per_day: u64,
    /// Hosts `web_fetch` may reach: `example.com`, `*.example.org` (subdomains), `*` (any
    /// public host), or `host:port`. Empty means any public host. A host named exactly
    /// (not through `*`) may be fetched even if it is private or loopback.
    pub web_fetch_allow: Vec<String>,
    /// The most of a fetched page that is read, in KiB; the text of a longer page is cut.
    pub web_fetch_max_kb: u64,
    /// Seconds a whole fetch (redirects included) may take.
    pub web_fetch_timeout_secs: u64,
    /// Delay between the echo provider's chunks, in ms.
    pub echo_delay_ms: u64,
    /// The operator's instructions for every agent, mounted read-only into every box.
    pub instructions_file: Option<PathBuf>,
    /// An external agent harness command run in the box instead of the built-in loop
    /// (e.g. one that wants ANTHROPIC_BASE_URL); it talks to the box's local tunnel.
    pub harness: Option<String>,
    /// Settings of single conversations, keyed by conversation key
    /// (`[conversations."telegram:123"]`).
    pub conversations: BTreeMap<String, ConversationSettings>,
    /// The static clawpen-agent binary put into the box image.
    pub agent_binary: Option<PathBuf>,
    /// The static busybox put into the box image for a shell.
    pub busybox: Option<PathBuf>,
    /// Anthropic API key; stays in the bridge.
    pub anthropic_api_key: Option<Secret>,
    /// OpenAI-compatible API key; stays in the bridge.
    pub openai_api_key: Option<Secret>,
    /// Telegram bot token; stays in the bridge.
    pub telegram_bot_token: Option<Secret>,
    /// The Telegram adapter (`[telegram]`). Its `token` is another name for
    /// `telegram_bot_token`, folded into it on load.
    pub telegram: TelegramConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            image: default_image(),
            max_boxes: 32,
            idle_timeout_secs: 15 * 60,
            shutdown_grace_secs: 30,
            turn_stall_secs: 120,
            limits: BoxLimits::default(),
            mount_allowlist: Vec::new(),
            mounts: Vec::new(),
            provider: "echo".into(),
            model: None,
            anthropic_base_url: DEFAULT_ANTHROPIC_BASE_URL.into(),
            openai_base_url: DEFAULT_OPENAI_BASE_URL.into(),
            requests_per_minute: 30,
            tokens_per_day: 2_000_000,
            web_fetch_allow: Vec::new(),
            web_fetch_max_kb: 2048,
            web_fetch_timeout_secs: 20,
            echo_delay_ms: 20,
            instructions_file: None,
            harness: None,
            conversations: BTreeMap::new(),
            agent_binary: None,
            busybox: None,
            anthropic_api_key: None,
            openai_api_key: None,
            telegram_bot_token: None,
            telegram: TelegramConfig::default(),
        }
    }
}

/// What one conversation does differently from the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationSettings {
    /// The model for this conversation.
    pub model: Option<String>,
    /// An external harness command for this conversation's box.
    pub harness: Option<String>,
}

/// Anthropic's API, where the `anthropic` provider goes unless configured otherwise.
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// OpenAI's API, where the `openai` provider goes unless configured otherwise.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// The model a provider uses when `model` is not set (`None` for providers without one).
pub fn default_model(provider: &str) -> Option<&'static str> {
    match provider {
        "anthropic" => Some("claude-sonnet-4-5"),
        "openai" => Some("gpt-4o-mini"),
        _ => None,
    }
}

/// The box image tag of this clawpen version.
pub fn default_image() -> String {
    format!("clawpen-box:{}", env!("CARGO_PKG_VERSION"))
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("clawpen");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/clawpen"),
        None => PathBuf::from("/var/lib/clawpen"),
    }
}

/// The environment variables clawpen reads, for `doctor` and the README.
pub const ENV_VARS: &[&str] = &[
    "CLAWPEN_CONFIG",
    "CLAWPEN_DATA_DIR",
    "CLAWPEN_IMAGE",
    "CLAWPEN_MAX_BOXES",
    "CLAWPEN_IDLE_TIMEOUT_SECS",
    "CLAWPEN_SHUTDOWN_GRACE_SECS",
    "CLAWPEN_TURN_STALL_SECS",
    "CLAWPEN_PROVIDER",
    "CLAWPEN_MODEL",
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
    "CLAWPEN_REQUESTS_PER_MINUTE",
    "CLAWPEN_TOKENS_PER_DAY",
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
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "CLAWPEN_TELEGRAM_ALLOWED_USERS",
    "CLAWPEN_TELEGRAM_ALLOWED_CHATS",
    "CLAWPEN_TELEGRAM_TRIGGER",
    "CLAWPEN_TELEGRAM_WEBHOOK_URL",
    "CLAWPEN_TELEGRAM_WEBHOOK_SECRET",
    "CLAWPEN_TELEGRAM_WEBHOOK_LISTEN",
];

impl Config {
    /// Load from `file` (if given and present) and then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_from(file, &vars)
    }

    /// Load from `file` and the given environment (the testable core of [`Config::load`]).
    pub fn load_from(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get("CLAWPEN_CONFIG").map(PathBuf::from));
        let mut config = match file {
            Some(path) => Self::parse_file(&path)?,
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn parse_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse TOML text; unknown keys are an error naming them.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
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
        number(env, "CLAWPEN_MAX_BOXES", &mut self.max_boxes)?;
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
        if let Some(token) = self.telegram.token.take() {
            self.telegram_bot_token = Some(Secret::new(token));
        }
        if let Some(v) = get("TELEGRAM_BOT_TOKEN") {
            self.telegram_bot_token = Some(Secret::new(v));
        }
        self.telegram.apply_env(env).map_err(telegram_error)?;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.max_boxes == 0 {
            return invalid("max_boxes", "must be at least 1");
        }
        if self.idle_timeout_secs == 0 {
            return invalid("idle_timeout_secs", "must be at least 1");
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
        self.telegram.validate().map_err(telegram_error)?;
        Ok(())
    }

    /// The Telegram adapter's settings with the token, when a token is configured.
    pub fn telegram(&self) -> Option<TelegramConfig> {
        let token = self
            .telegram_bot_token
            .as_ref()
            .map(Secret::expose)
            .or(self.telegram.token.as_deref())?;
        Some(TelegramConfig {
            token: Some(token.to_string()),
            ..self.telegram.clone()
        })
    }

    /// The model the boxes ask for: `model`, or the provider's default.
    pub fn box_model(&self) -> Option<String> {
        self.model
            .clone()
            .or_else(|| default_model(&self.provider).map(str::to_owned))
    }

    /// Every secret the bridge holds, to check that none reaches a box.
    pub fn secrets(&self) -> Vec<&Secret> {
        [
            &self.anthropic_api_key,
            &self.openai_api_key,
            &self.telegram_bot_token,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// How long an idle box lives.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The path of the daemon's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    /// The path of the store.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
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

fn telegram_error(error: TelegramConfigError) -> ConfigError {
    match error {
        TelegramConfigError::Env {
            name,
            value,
            expected,
        } => ConfigError::Env {
            name: name.into(),
            value,
            expected,
        },
        TelegramConfigError::Invalid { key, message } => ConfigError::Invalid { key, message },
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
    fn unknown_keys_are_refused_by_name() {
        let err = Config::parse("max_boxes = 3\nmax_boxen = 4\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("max_boxen"), "{err}");
        let err = Config::parse("[box]\nmemroy_mb = 1\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("memroy_mb"), "{err}");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("clawpen.toml");
        std::fs::write(
            &file,
            "max_boxes = 3\nprovider = \"echo\"\n[box]\npids = 64\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load_from(Some(&file), &env(&[("CLAWPEN_MAX_BOXES", "7")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.max_boxes, 7);
        assert_eq!(config.limits.pids, 64);
        assert_eq!(config.idle_timeout_secs, 900);
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::load_from(None, &env(&[("CLAWPEN_MAX_BOXES", "lots")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("CLAWPEN_MAX_BOXES"), "{err}");
        let err = Config::load_from(None, &env(&[("CLAWPEN_MAX_BOXES", "0")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("max_boxes"), "{err}");
    }

    #[test]
    fn tunnel_settings_have_defaults_and_env_overrides() {
        let config = Config::load_from(None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.anthropic_base_url, "https://api.anthropic.com");
        assert_eq!(config.openai_base_url, "https://api.openai.com/v1");
        assert_eq!(config.requests_per_minute, 30);
        assert_eq!(config.tokens_per_day, 2_000_000);
        assert_eq!(config.web_fetch_max_kb, 2048);
        assert_eq!(config.web_fetch_timeout_secs, 20);
        assert!(config.web_fetch_allow.is_empty());
        assert_eq!(config.box_model(), None);

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("clawpen.toml");
        std::fs::write(
            &file,
            "provider = \"anthropic\"\nrequests_per_minute = 5\n\
             web_fetch_allow = [\"example.com\", \"*.example.org\", \"127.0.0.1:8080\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load_from(Some(&file), &env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.requests_per_minute, 5);
        assert_eq!(config.web_fetch_allow.len(), 3);
        assert_eq!(config.box_model().as_deref(), Some("claude-sonnet-4-5"));

        let config = Config::load_from(
            Some(&file),
            &env(&[
                ("CLAWPEN_PROVIDER", "openai"),
                ("CLAWPEN_MODEL", "gpt-4.1"),
                ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9000"),
                ("OPENAI_BASE_URL", "https://llm.example/v1"),
                ("CLAWPEN_REQUESTS_PER_MINUTE", "7"),
                ("CLAWPEN_TOKENS_PER_DAY", "0"),
                ("CLAWPEN_WEB_FETCH_ALLOW", "a.example, *.b.example"),
                ("CLAWPEN_WEB_FETCH_MAX_KB", "64"),
                ("CLAWPEN_WEB_FETCH_TIMEOUT_SECS", "5"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.box_model().as_deref(), Some("gpt-4.1"));
        assert_eq!(config.anthropic_base_url, "http://127.0.0.1:9000");
        assert_eq!(config.openai_base_url, "https://llm.example/v1");
        assert_eq!((config.requests_per_minute, config.tokens_per_day), (7, 0));
        assert_eq!(config.web_fetch_allow, ["a.example", "*.b.example"]);
        assert_eq!(
            (config.web_fetch_max_kb, config.web_fetch_timeout_secs),
            (64, 5)
        );
    }

    #[test]
    fn bad_tunnel_settings_are_named() {
        let error = |pairs: &[(&str, &str)]| {
            Config::load_from(None, &env(pairs))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        for (var, value, key) in [
            (
                "ANTHROPIC_BASE_URL",
                "api.anthropic.com",
                "anthropic_base_url",
            ),
            (
                "ANTHROPIC_BASE_URL",
                "ftp://x.example",
                "anthropic_base_url",
            ),
            (
                "OPENAI_BASE_URL",
                "https://u:p@x.example/v1",
                "openai_base_url",
            ),
            (
                "OPENAI_BASE_URL",
                "https://x.example/v1?k=1",
                "openai_base_url",
            ),
            (
                "CLAWPEN_WEB_FETCH_ALLOW",
                "http://x.example/",
                "web_fetch_allow",
            ),
            ("CLAWPEN_WEB_FETCH_MAX_KB", "0", "web_fetch_max_kb"),
            ("CLAWPEN_TOKENS_PER_DAY", "-1", "CLAWPEN_TOKENS_PER_DAY"),
        ] {
            let err = error(&[(var, value)]);
            assert!(err.contains(key), "{var}={value}: {err}");
        }
        let err = Config::parse("web_fetch_alow = []")
            .err()
            .unwrap_or_default();
        assert!(err.contains("web_fetch_alow"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = Config::load_from(
            None,
            &env(&[
                ("ANTHROPIC_API_KEY", "sk-ant-very-secret"),
                ("TELEGRAM_BOT_TOKEN", "123:abc"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("123:abc"),
            "{shown}"
        );
        assert_eq!(config.secrets().len(), 2);
    }

    #[test]
    fn telegram_settings_come_from_their_table_and_the_environment() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("clawpen.toml");
        std::fs::write(
            &file,
            "[telegram]\ntoken = \"1:file\"\nallowed_users = [1]\ntrigger = \"claw\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load_from(
            Some(&file),
            &env(&[
                ("CLAWPEN_TELEGRAM_ALLOWED_USERS", "2"),
                ("TELEGRAM_API_URL", "http://127.0.0.1:9"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let telegram = config.telegram().unwrap_or_else(|| panic!("no telegram"));
        assert_eq!(telegram.token.as_deref(), Some("1:file"));
        assert_eq!(telegram.allowed_users, [1, 2]);
        assert_eq!(telegram.api_url, "http://127.0.0.1:9");
        assert_eq!(
            config.secrets().len(),
            1,
            "the table's token is a secret too"
        );
        assert!(!format!("{config:?}").contains("1:file"));

        // The top-level key and its variable keep working; without a token, no adapter.
        let legacy =
            Config::parse("telegram_bot_token = \"2:top\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            legacy.telegram().and_then(|t| t.token).as_deref(),
            Some("2:top")
        );
        let none = Config::load_from(None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert!(none.telegram().is_none());
        let err = Config::parse("[telegram]\ntokn = \"x\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("tokn"), "{err}");
        let err = Config::load_from(None, &env(&[("CLAWPEN_TELEGRAM_ALLOWED_CHATS", "x")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("CLAWPEN_TELEGRAM_ALLOWED_CHATS"), "{err}");
    }
}
