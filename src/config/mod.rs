//! Configuration: a TOML file, then `CLAWPEN_*` (and vendor) environment variables, which win.
//!
//! Unknown keys in the file are refused with their names, so a typo never silently falls
//! back to a default. Tokens and keys are [`Secret`]s: their `Debug` output is redacted.
//!
//! The settings and their loading are here; the environment variables are read in `env`, the
//! loaded values are checked in `validate`, and [`Secret`] is in `secret`. Adapters read
//! their own keys and variables (`adapters`), so this module names none of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawpen_adapters::registry::SettingsError;
use serde::Deserialize;

mod adapters;
mod env;
mod secret;
mod validate;

pub use adapters::AdapterSettings;
pub use env::unknown_env_vars;
pub use secret::Secret;

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

fn settings_error(error: SettingsError) -> ConfigError {
    match error {
        SettingsError::Env {
            name,
            value,
            expected,
        } => ConfigError::Env {
            name: name.into(),
            value,
            expected,
        },
        SettingsError::Invalid { key, message } => ConfigError::Invalid { key, message },
        SettingsError::File { message } => ConfigError::Invalid {
            key: "adapter settings",
            message,
        },
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
    /// The most the box's workspace may hold, in MiB; a box found over it is stopped and
    /// its chat told. 0 for no limit.
    pub workspace_mb: u64,
    /// How often every running box's workspace is measured against `workspace_mb`, in
    /// seconds.
    pub workspace_check_secs: u64,
    /// Which seccomp profile boxes run under.
    pub seccomp: SeccompChoice,
}

/// The seccomp profile of every box (`[box] seccomp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompChoice {
    /// clawpen's own allowlist (see `sandbox::seccomp`), without io_uring.
    #[default]
    Clawpen,
    /// The engine's default profile: only for engines that cannot apply a profile of
    /// their own.
    Engine,
}

impl Default for BoxLimits {
    fn default() -> Self {
        Self {
            memory_mb: 512,
            cpus: 1.0,
            pids: 256,
            tmp_mb: 64,
            log_kb: 1024,
            workspace_mb: 2048,
            workspace_check_secs: 30,
            seccomp: SeccompChoice::Clawpen,
        }
    }
}

/// A host path mounted into every box (at `/mnt/<name>`), if the allowlist permits it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRule {
    /// The host path (resolved through symlinks before it is checked).
    pub path: PathBuf,
    /// Whether boxes may write to it; read-only when false (the default).
    #[serde(default)]
    pub writable: bool,
}

/// The metrics endpoint (`[metrics]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Where `clawpen run` serves `/metrics`, `/healthz` and `/readyz`; off when unset.
    /// Keep it on loopback or a private network: it has no authentication.
    pub listen: Option<std::net::SocketAddr>,
}

/// Everything clawpen reads from its config file and environment.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store and the control socket live.
    pub data_dir: PathBuf,
    /// The box image; by default `clawpen-box:<version>`, built locally when missing.
    pub image: String,
    /// The most boxes alive at once; further conversations wait in a fair queue. Unset:
    /// what the engine's machine can hold (`sandbox::capacity`), found at start.
    pub max_boxes: Option<usize>,
    /// Boxes kept started and attached ahead of need, each on a fresh workspace, for new
    /// conversations to claim; they count against `max_boxes`. 0 turns the pool off.
    pub warm_pool: usize,
    /// Seconds without activity after which a box is stopped (its workspace is kept).
    pub idle_timeout_secs: u64,
    /// Seconds running turns get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds a turn may go without any sign of life from its box before the box is
    /// considered hung and is killed.
    pub turn_stall_secs: u64,
    /// Seconds a turn may run in all, however lively its box: past it the box is stopped
    /// and the user told, so a box that never ends its turn cannot keep its slot.
    pub max_turn_secs: u64,
    /// The most text one turn's reply may carry, in KiB; past it the rest is dropped and
    /// the user told.
    pub max_reply_kb: u64,
    /// The most separate messages (the agent's `send_message`) one turn may send.
    pub max_reply_messages: u32,
    /// The longest rate-limit wait (a platform's `retry_after`) a reply sits out; past it
    /// the reply ends there, the log says so, and the user is told once the platform lets
    /// the bot write again.
    pub max_rate_wait_secs: u64,
    /// Limits of every box.
    #[serde(rename = "box")]
    pub limits: BoxLimits,
    /// The metrics endpoint.
    pub metrics: MetricsSettings,
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
    /// Requests (model calls and web fetches together) one conversation may have under way
    /// at once; further ones are refused. 0 for no limit.
    pub max_requests_in_flight: u32,
    /// Web fetches one conversation may make in any 60 s; 0 for no limit.
    pub web_fetches_per_minute: u32,
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
    /// The time zone of conversations that set none with `/tz` (an IANA name such as
    /// `Europe/Berlin`); UTC when unset.
    pub timezone: Option<String>,
    /// The most scheduled tasks one conversation may have.
    pub max_tasks_per_conversation: usize,
    /// The shortest interval, in seconds, at which a recurring task may run.
    pub min_task_interval_secs: u64,
    /// Users who may manage every conversation's tasks from any chat, as `platform:user`
    /// (`telegram:12345`), besides the terminal's operator and each adapter's paired owner.
    pub task_owners: Vec<String>,
    /// The adapters' settings (`[telegram]`, `telegram_bot_token`), read by each adapter
    /// from the keys it owns, which are set aside before the rest is parsed.
    #[serde(skip)]
    pub adapters: AdapterSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            image: default_image(),
            max_boxes: None,
            warm_pool: 2,
            idle_timeout_secs: 15 * 60,
            shutdown_grace_secs: 30,
            turn_stall_secs: 120,
            max_turn_secs: 30 * 60,
            max_reply_kb: 512,
            max_reply_messages: 50,
            max_rate_wait_secs: 600,
            limits: BoxLimits::default(),
            metrics: MetricsSettings::default(),
            mount_allowlist: Vec::new(),
            mounts: Vec::new(),
            provider: "echo".into(),
            model: None,
            anthropic_base_url: DEFAULT_ANTHROPIC_BASE_URL.into(),
            openai_base_url: DEFAULT_OPENAI_BASE_URL.into(),
            requests_per_minute: 30,
            tokens_per_day: 2_000_000,
            max_requests_in_flight: 4,
            web_fetches_per_minute: 20,
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
            timezone: None,
            max_tasks_per_conversation: 50,
            min_task_interval_secs: 60,
            task_owners: Vec::new(),
            adapters: AdapterSettings::default(),
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

/// The box image tag of this clawpen version, unless `CLAWPEN_IMAGE` names another (so a
/// checkout with a changed agent can test against its own image beside the usual one).
pub fn default_image() -> String {
    match std::env::var("CLAWPEN_IMAGE") {
        Ok(image) if !image.trim().is_empty() => image.trim().to_string(),
        _ => format!("clawpen-box:{}", env!("CARGO_PKG_VERSION")),
    }
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

    /// Parse TOML text; unknown keys are an error naming them. The adapters' keys are set
    /// aside for them and read as well (without the environment).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut theirs = BTreeMap::new();
        for key in AdapterSettings::owned_keys() {
            if let Some(value) = table.remove(key) {
                let value = serde_json::to_value(value).map_err(|e| format!("{key}: {e}"))?;
                theirs.insert(key.to_string(), value);
            }
        }
        let mut config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| e.to_string())?;
        config.adapters = match AdapterSettings::load(theirs.clone(), &BTreeMap::new()) {
            Ok(adapters) => adapters,
            Err(SettingsError::File { message }) => return Err(message),
            // A value the environment may still correct: judged once it is applied.
            Err(_) => AdapterSettings::unread(theirs),
        };
        Ok(config)
    }

    /// The model the boxes ask for: `model`, or the provider's default.
    pub fn box_model(&self) -> Option<String> {
        self.model
            .clone()
            .or_else(|| default_model(&self.provider).map(str::to_owned))
    }

    /// Every secret the bridge holds (adapters' tokens included), to check that none
    /// reaches a box.
    pub fn secrets(&self) -> Vec<Secret> {
        let keys = [&self.anthropic_api_key, &self.openai_api_key];
        let adapters = self.adapters.secrets().into_iter().map(Secret::new);
        keys.into_iter()
            .flatten()
            .cloned()
            .chain(adapters)
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

#[cfg(test)]
mod tests;
