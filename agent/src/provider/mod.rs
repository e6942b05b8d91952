//! Who answers a turn, and how model providers are spoken to.
//!
//! A [`Provider`] is chosen once, from the configuration, when the agent starts: `echo`,
//! the built-in agent on a model (`anthropic`, `openai`), or an external harness when
//! `CLAWPEN_HARNESS` is set (whatever the provider). For every turn it makes a [`Run`]
//! the endpoint asks for the next [`Step`] and hands follow-up messages to. Providers never
//! touch stdin or stdout; the session turns their steps into sequenced events.
//!
//! Dispatch is an enum rather than a trait object: the set is closed and known at build
//! time, and `async fn` on an enum needs no boxing or extra crates.
//!
//! # Layout
//!
//! - `echo`: the echo provider. `run`: turns that run as tasks (agent, harness).
//! - `wire`: the conversation in provider-neutral types; `anthropic`, `openai`: the two
//!   wire formats; `sse`: server-sent events; `call`: one model call through the tunnel,
//!   with `retry` deciding what failures mean.

pub mod anthropic;
pub mod call;
mod echo;
pub mod openai;
pub mod retry;
pub mod run;
pub mod sse;
pub mod wire;

use std::time::Duration;

use clawpen_protocol::{TurnMessage, TurnOptions, ENV_PROVIDER};

use crate::agent::Agent;
use crate::config::Config;
use crate::harness::Harness;
use crate::tunnel::Tunnel;
pub use echo::Echo;
pub use run::Step;
use run::TaskRun;
use wire::Format;

/// The provider used when [`ENV_PROVIDER`] is unset or empty.
pub const DEFAULT_PROVIDER: &str = "echo";

/// The name reported in `Ready` when a harness answers.
pub const HARNESS: &str = "harness";

/// The configured way of answering turns.
#[derive(Clone, Debug)]
pub enum Provider {
    /// Streams the user's messages back; for tests and for trying the plumbing.
    Echo(Echo),
    /// The built-in agent loop on a model.
    Agent(Agent),
    /// An external agent program.
    Harness(Harness),
    /// A provider that cannot work (an unknown name, an unusable workspace). The agent
    /// still starts, so the bridge sees the problem as an error in the chat rather than as
    /// a box that dies at once.
    Broken {
        /// The provider name that was asked for.
        name: String,
        /// Why it cannot answer.
        message: String,
    },
}

impl Provider {
    /// The provider `config` asks for. `tunnel` carries its model calls; `port` is the
    /// in-box endpoint's, for a harness.
    pub fn new(config: &Config, tunnel: &Tunnel, port: u16) -> Self {
        if let Some(command) = &config.harness {
            return Provider::Harness(Harness::new(
                command.clone(),
                config.workspace.clone(),
                port,
                config.limits.clone(),
            ));
        }
        let name = config.provider.as_str();
        match Format::named(name) {
            Some(format) => match Agent::new(format, config, tunnel.clone()) {
                Ok(agent) => Provider::Agent(agent),
                Err(err) => Provider::Broken {
                    name: name.to_owned(),
                    message: format!(
                        "the workspace {} is not usable: {err}",
                        config.workspace.display()
                    ),
                },
            },
            None => Provider::named(name, config.echo_delay),
        }
    }

    /// The echo provider, or a broken one for an unknown `name` (empty means echo).
    pub fn named(name: &str, echo_delay: Duration) -> Self {
        match name.trim() {
            "" | DEFAULT_PROVIDER => Provider::Echo(Echo::new(echo_delay)),
            other => Provider::Broken {
                name: other.to_owned(),
                message: format!(
                    "unknown provider `{other}` (set {ENV_PROVIDER} to `{DEFAULT_PROVIDER}`, `anthropic` or `openai`)"
                ),
            },
        }
    }

    /// The name reported in `Ready`.
    pub fn name(&self) -> &str {
        match self {
            Provider::Echo(_) => DEFAULT_PROVIDER,
            Provider::Agent(agent) => agent.name(),
            Provider::Harness(_) => HARNESS,
            Provider::Broken { name, .. } => name,
        }
    }

    /// Begin answering a turn.
    pub fn start(&self, messages: Vec<TurnMessage>, options: TurnOptions) -> Run {
        match self {
            Provider::Echo(echo) => Run::Echo(echo.start(messages)),
            Provider::Agent(agent) => Run::Task(agent.start(messages, options)),
            Provider::Harness(harness) => Run::Task(harness.start(messages, options)),
            Provider::Broken { message, .. } => Run::Broken {
                message: Some(message.clone()),
            },
        }
    }
}

/// One turn being answered.
#[derive(Debug)]
pub enum Run {
    /// An echo run.
    Echo(echo::EchoRun),
    /// A turn running as a task (the agent or the harness).
    Task(TaskRun),
    /// A turn for a broken provider: one error, then done. `message` is taken when the
    /// error is reported.
    Broken {
        /// The error to report, until it has been.
        message: Option<String>,
    },
}

impl Run {
    /// Messages that arrived while the run was going, for it to answer too.
    pub fn follow_up(&mut self, messages: Vec<TurnMessage>) {
        match self {
            Run::Echo(run) => run.follow_up(messages),
            Run::Task(run) => run.follow_up(messages),
            // Nothing here can answer them; the error already covers the turn.
            Run::Broken { .. } => {}
        }
    }

    /// Follow-ups the run never took; after it is done they deserve a turn of their own.
    pub fn unanswered(&mut self) -> Vec<TurnMessage> {
        match self {
            Run::Task(run) => run.unanswered(),
            Run::Echo(_) | Run::Broken { .. } => Vec::new(),
        }
    }

    /// The next step. Cancel-safe: if the future is dropped before it completes, no step
    /// is lost and the next call carries on where this one was, because the endpoint
    /// polls it in a `select!` beside stdin and the writer.
    pub async fn next(&mut self) -> Step {
        match self {
            Run::Echo(run) => run.next().await,
            Run::Task(run) => run.next().await,
            Run::Broken { message } => match message.take() {
                Some(message) => Step::Failed(message),
                None => Step::Done,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_provider_answers_with_one_error_naming_it() {
        let provider = Provider::named("gpt-99", Duration::ZERO);
        assert_eq!(provider.name(), "gpt-99");
        let mut run = provider.start(Vec::new(), TurnOptions::default());
        let Step::Failed(message) = run.next().await else {
            panic!("expected a failure")
        };
        assert!(message.contains("gpt-99"), "{message}");
        assert_eq!(run.next().await, Step::Done);
    }

    #[test]
    fn an_empty_name_means_echo() {
        assert_eq!(Provider::named("", Duration::ZERO).name(), "echo");
        assert_eq!(Provider::named(" echo ", Duration::ZERO).name(), "echo");
    }

    #[test]
    fn the_configuration_picks_the_provider() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (tunnel, _requests) = Tunnel::new(crate::tunnel::NO_PROGRESS);
        let workspace = dir.path().to_string_lossy().into_owned();
        let config = |vars: &[(&str, &str)]| {
            let mut vars = vars.to_vec();
            vars.push(("CLAWPEN_WORKSPACE", &workspace));
            Config::from_lookup(move |name| {
                vars.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        };
        let named =
            |vars: &[(&str, &str)]| Provider::new(&config(vars), &tunnel, 1).name().to_owned();
        assert_eq!(named(&[]), "echo");
        assert_eq!(named(&[(ENV_PROVIDER, "anthropic")]), "anthropic");
        assert_eq!(named(&[(ENV_PROVIDER, "openai")]), "openai");
        assert_eq!(
            named(&[(ENV_PROVIDER, "openai"), ("CLAWPEN_HARNESS", "my-agent")]),
            "harness"
        );
        assert_eq!(named(&[(ENV_PROVIDER, "oracle")]), "oracle");
        Ok(())
    }
}
