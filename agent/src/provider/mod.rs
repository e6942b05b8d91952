//! Who answers a turn.
//!
//! A [`Provider`] is chosen once, from the environment, when the agent starts. For every
//! turn it makes a [`Run`]: a small state machine the endpoint asks for the next [`Step`]
//! and hands follow-up messages to. Providers never touch stdin or stdout; the session
//! turns their steps into sequenced events. That keeps each provider to "what to say
//! next", and lets a model provider (whose requests will travel over the same protocol
//! stream) be added as one more variant beside `echo`.
//!
//! Dispatch is an enum rather than a trait object: the set is closed and known at build
//! time, and `async fn` on an enum needs no boxing or extra crates.

mod echo;

use std::time::Duration;

use clawpen_protocol::{TurnMessage, ENV_ECHO_DELAY_MS, ENV_PROVIDER};

pub use echo::Echo;

/// The provider used when [`ENV_PROVIDER`] is unset or empty.
pub const DEFAULT_PROVIDER: &str = "echo";

/// The echo provider's pause between chunks when [`ENV_ECHO_DELAY_MS`] is unset: long
/// enough that a reply visibly streams, short enough that tests stay quick.
const DEFAULT_ECHO_DELAY: Duration = Duration::from_millis(20);

/// The configured way of answering turns.
#[derive(Clone, Debug)]
pub enum Provider {
    /// Streams the user's messages back; for tests and for trying the plumbing.
    Echo(Echo),
    /// A name the agent does not know. The agent still starts, so the bridge sees the
    /// problem as an error in the chat rather than as a box that dies at once.
    Unknown {
        /// The name that was asked for.
        name: String,
    },
}

impl Provider {
    /// The provider named by the environment.
    pub fn from_env() -> Self {
        let name = std::env::var(ENV_PROVIDER).unwrap_or_default();
        let delay = match std::env::var(ENV_ECHO_DELAY_MS) {
            Err(_) => DEFAULT_ECHO_DELAY,
            Ok(ms) => match ms.trim().parse() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    eprintln!("clawpen-agent: {ENV_ECHO_DELAY_MS}={ms:?} is not a number of ms; using the default");
                    DEFAULT_ECHO_DELAY
                }
            },
        };
        Provider::named(&name, delay)
    }

    /// The provider called `name` (empty means [`DEFAULT_PROVIDER`]).
    pub fn named(name: &str, echo_delay: Duration) -> Self {
        match name.trim() {
            "" | DEFAULT_PROVIDER => Provider::Echo(Echo::new(echo_delay)),
            other => Provider::Unknown {
                name: other.to_owned(),
            },
        }
    }

    /// The name reported in `Ready`.
    pub fn name(&self) -> &str {
        match self {
            Provider::Echo(_) => DEFAULT_PROVIDER,
            Provider::Unknown { name } => name,
        }
    }

    /// Begin answering a turn.
    pub fn start(&self, messages: Vec<TurnMessage>) -> Run {
        match self {
            Provider::Echo(echo) => Run::Echo(echo.start(messages)),
            Provider::Unknown { name } => Run::Unknown {
                name: Some(name.clone()),
            },
        }
    }
}

/// What a run does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// More reply text.
    Text(String),
    /// The turn failed with this message for the user; the run is over.
    Failed(String),
    /// The reply is complete; the run is over.
    Done,
}

/// One turn being answered.
#[derive(Debug)]
pub enum Run {
    /// An echo run.
    Echo(echo::EchoRun),
    /// A turn for an unknown provider: one error, then done. `name` is taken when the
    /// error is reported.
    Unknown {
        /// The provider name to report, until it has been.
        name: Option<String>,
    },
}

impl Run {
    /// Messages that arrived while the run was going, for it to answer too.
    pub fn follow_up(&mut self, messages: Vec<TurnMessage>) {
        match self {
            Run::Echo(run) => run.follow_up(messages),
            // Nothing here can answer them; the error already covers the turn.
            Run::Unknown { .. } => {}
        }
    }

    /// The next step. Cancel-safe: if the future is dropped before it completes, no step
    /// is lost and the next call carries on where this one was, because the endpoint
    /// polls it in a `select!` beside stdin and the writer.
    pub async fn next(&mut self) -> Step {
        match self {
            Run::Echo(run) => run.next().await,
            Run::Unknown { name } => match name.take() {
                Some(name) => Step::Failed(format!(
                    "unknown provider `{name}` (set {ENV_PROVIDER} to `{DEFAULT_PROVIDER}` or leave it unset)"
                )),
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
        let mut run = provider.start(Vec::new());
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
}
