//! Configuration: a TOML file, then `CLAWPEN_*` (and vendor) environment variables, which win.
//!
//! Unknown keys in the file are refused with their names, so a typo never silently falls
//! back to a default. Tokens and keys are [`Secret`]s: their `Debug` output is redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Which agent provider the boxes use (`echo` answers without a model).
    pub provider: String,
    /// Delay between the echo provider's chunks, in ms.
    pub echo_delay_ms: u64,
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
            echo_delay_ms: 20,
            agent_binary: None,
            busybox: None,
            anthropic_api_key: None,
            openai_api_key: None,
            telegram_bot_token: None,
        }
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
    "CLAWPEN_ECHO_DELAY_MS",
    "CLAWPEN_AGENT_BINARY",
    "CLAWPEN_BUSYBOX",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "TELEGRAM_BOT_TOKEN",
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
        if let Some(v) = get("ANTHROPIC_API_KEY") {
            self.anthropic_api_key = Some(Secret::new(v));
        }
        if let Some(v) = get("OPENAI_API_KEY") {
            self.openai_api_key = Some(Secret::new(v));
        }
        if let Some(v) = get("TELEGRAM_BOT_TOKEN") {
            self.telegram_bot_token = Some(Secret::new(v));
        }
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
        Ok(())
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
}
