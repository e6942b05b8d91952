//! clawpen-agent: the program inside every clawpen box.
//!
//! It is the box's entrypoint and its only voice. The bridge reaches it through the
//! container's attached stdin/stdout and nothing else (the box has no network), speaking
//! the line-delimited JSON protocol of `clawpen-protocol`: turns, follow-ups, cancels and
//! acknowledgements come in; sequenced reply events go out and are kept until the bridge
//! acknowledges them, so a bridge restart mid-turn loses and repeats nothing.
//!
//! It must stay tiny (a few MB of memory per idle box), so it runs on a single-threaded
//! runtime and depends on little more than the protocol crate and tokio: the model
//! providers' wire formats, server-sent events and the small HTTP server are hand-written.
//! It holds no key: every model call and web fetch is a request the bridge performs.
//! stdout carries protocol lines only; stderr carries a few human-readable log lines.
//!
//! # Layout
//!
//! - `config`: the settings, read from the environment.
//! - `endpoint`: the loop joining stdin, the stdout writer task, the session, the
//!   provider's running turn and the tunnel.
//! - `session`: the protocol state with no I/O: sequence numbers, the unacknowledged
//!   events, resume replay, and what each turn, follow-up and cancel means.
//! - `tunnel`: requests to the bridge (model calls, web fetches) and their answers, paced
//!   by the credit their readers grant.
//! - `http`: the in-box HTTP endpoint, the tunnel for external harnesses.
//! - `provider`: who answers a turn (`echo`, a model through the built-in `agent`, or a
//!   `harness`), and the model wire formats.
//! - `agent`: the built-in agent loop, its tools and its memory.
//! - `harness`: an external agent program run per turn.
//! - `process`: process groups, for the shell tool and the harness.
//! - `init`: the box's PID 1, which starts the agent and reaps every orphan in the box.

mod agent;
mod config;
mod endpoint;
mod harness;
mod http;
mod init;
mod process;
mod provider;
mod session;
mod tunnel;

use std::process::ExitCode;
use std::time::Duration;

use config::Config;

/// How long to wait, at exit, for blocking stdio threads; a write to a stdout nobody reads
/// never returns, and must not keep the box alive.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    if init::is_init() {
        return init::run();
    }
    let config = Config::from_env();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("clawpen-agent: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(endpoint::run(config));
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clawpen-agent: stopping: {err}");
            ExitCode::FAILURE
        }
    }
}
