//! Settings, read once from the environment the bridge gives the box.
//!
//! Every setting has a default that works in the box, so an agent started with no
//! environment at all still speaks the protocol (as the echo provider). A value that does
//! not parse is reported on stderr and replaced by its default rather than stopping the
//! agent: a box that dies at start shows the user nothing, a warning in the log does.

use std::path::PathBuf;
use std::time::Duration;

use clawpen_protocol::{
    ENV_ECHO_DELAY_MS, ENV_HARNESS, ENV_MODEL, ENV_PROVIDER, INSTRUCTIONS_PATH,
};

/// The workspace root inside the box; tests point it at a temporary directory.
pub const ENV_WORKSPACE: &str = "CLAWPEN_WORKSPACE";
/// The loopback port of the in-box HTTP endpoint (0: any free port, logged on stderr).
pub const ENV_TUNNEL_PORT: &str = "CLAWPEN_TUNNEL_PORT";
/// Most model calls in one turn.
pub const ENV_MAX_STEPS: &str = "CLAWPEN_MAX_STEPS";
/// Most wall-clock seconds one turn may take.
pub const ENV_TURN_SECS: &str = "CLAWPEN_TURN_SECS";
/// Most KB of reply text one turn may stream.
pub const ENV_MAX_OUTPUT_KB: &str = "CLAWPEN_MAX_OUTPUT_KB";
/// The estimated history size (tokens) above which older history is summarized.
pub const ENV_HISTORY_TOKENS: &str = "CLAWPEN_HISTORY_TOKENS";
/// The `max_tokens` of one model call.
pub const ENV_MAX_TOKENS: &str = "CLAWPEN_MAX_TOKENS";

/// Where the workspace volume is mounted in the box.
pub const DEFAULT_WORKSPACE: &str = "/workspace";
/// The in-box endpoint's port when [`ENV_TUNNEL_PORT`] is unset.
pub const DEFAULT_TUNNEL_PORT: u16 = 8089;
/// The echo provider's pause between chunks when [`ENV_ECHO_DELAY_MS`] is unset: long
/// enough that a reply visibly streams, short enough that tests stay quick.
pub const DEFAULT_ECHO_DELAY: Duration = Duration::from_millis(20);

/// Everything the agent reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `CLAWPEN_PROVIDER`: `echo` (default), `anthropic` or `openai`.
    pub provider: String,
    /// `CLAWPEN_MODEL`: the default model; a turn's `options.model` wins.
    pub model: Option<String>,
    /// `CLAWPEN_HARNESS`: a shell command run per turn instead of the built-in loop.
    pub harness: Option<String>,
    /// `CLAWPEN_WORKSPACE`: the directory the tools are confined to.
    pub workspace: PathBuf,
    /// The operator's instructions file (read-only mount; may be absent).
    pub instructions: PathBuf,
    /// `CLAWPEN_TUNNEL_PORT`.
    pub tunnel_port: u16,
    /// `CLAWPEN_ECHO_DELAY_MS`.
    pub echo_delay: Duration,
    /// Per-turn limits.
    pub limits: Limits,
}

/// What one turn may use; each ends the turn with a clear message when reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Model calls per turn (`CLAWPEN_MAX_STEPS`, default 30).
    pub max_steps: u32,
    /// Wall time per turn (`CLAWPEN_TURN_SECS`, default 600).
    pub turn_time: Duration,
    /// Reply text per turn, in bytes (`CLAWPEN_MAX_OUTPUT_KB`, default 64).
    pub max_output: usize,
    /// History budget in estimated tokens (`CLAWPEN_HISTORY_TOKENS`, default 60000).
    pub history_tokens: usize,
    /// `max_tokens` per model call (`CLAWPEN_MAX_TOKENS`, default 8192).
    pub max_tokens: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 30,
            turn_time: Duration::from_secs(600),
            max_output: 64 * 1024,
            history_tokens: 60_000,
            max_tokens: 8192,
        }
    }
}

impl Config {
    /// The configuration in this process's environment.
    pub fn from_env() -> Self {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration `lookup` describes (a variable name to its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let text = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let defaults = Limits::default();
        let number = |name: &str, default: u64| -> u64 {
            match text(name) {
                None => default,
                Some(value) => value.parse().unwrap_or_else(|_| {
                    eprintln!("clawpen-agent: {name}={value:?} is not a number; using {default}");
                    default
                }),
            }
        };
        let limits = Limits {
            max_steps: clamp_u32(number(ENV_MAX_STEPS, u64::from(defaults.max_steps))).max(1),
            turn_time: Duration::from_secs(
                number(ENV_TURN_SECS, defaults.turn_time.as_secs()).max(1),
            ),
            max_output: usize::try_from(number(ENV_MAX_OUTPUT_KB, 64).max(1))
                .unwrap_or(usize::MAX / 1024)
                .saturating_mul(1024),
            history_tokens: usize::try_from(number(
                ENV_HISTORY_TOKENS,
                defaults.history_tokens as u64,
            ))
            .unwrap_or(usize::MAX)
            .max(1000),
            max_tokens: clamp_u32(number(ENV_MAX_TOKENS, u64::from(defaults.max_tokens))).max(1),
        };
        let port = number(ENV_TUNNEL_PORT, u64::from(DEFAULT_TUNNEL_PORT));
        Config {
            provider: text(ENV_PROVIDER).unwrap_or_default(),
            model: text(ENV_MODEL),
            harness: text(ENV_HARNESS),
            workspace: text(ENV_WORKSPACE)
                .unwrap_or_else(|| DEFAULT_WORKSPACE.to_owned())
                .into(),
            instructions: INSTRUCTIONS_PATH.into(),
            tunnel_port: u16::try_from(port).unwrap_or_else(|_| {
                eprintln!("clawpen-agent: {ENV_TUNNEL_PORT}={port} is not a port; using {DEFAULT_TUNNEL_PORT}");
                DEFAULT_TUNNEL_PORT
            }),
            echo_delay: Duration::from_millis(number(
                ENV_ECHO_DELAY_MS,
                DEFAULT_ECHO_DELAY.as_millis() as u64,
            )),
            limits,
        }
    }
}

fn clamp_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_fit_the_box() {
        let config = config(&[]);
        assert_eq!(config.provider, "");
        assert_eq!(config.workspace, PathBuf::from("/workspace"));
        assert_eq!(config.tunnel_port, 8089);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.max_output, 65536);
        assert!(config.harness.is_none());
    }

    #[test]
    fn values_are_read_and_bad_ones_fall_back() {
        let config = config(&[
            (ENV_PROVIDER, " anthropic "),
            (ENV_MAX_STEPS, "5"),
            (ENV_TURN_SECS, "soon"),
            (ENV_MAX_OUTPUT_KB, "2"),
            (ENV_TUNNEL_PORT, "70000"),
            (ENV_HARNESS, "  "),
        ]);
        assert_eq!(config.provider, "anthropic");
        assert_eq!(config.limits.max_steps, 5);
        assert_eq!(config.limits.turn_time, Duration::from_secs(600));
        assert_eq!(config.limits.max_output, 2048);
        assert_eq!(config.tunnel_port, 8089);
        assert!(config.harness.is_none(), "a blank harness is no harness");
    }
}
