//! clawpen-agent: the program inside every clawpen box.
//!
//! It is the box's entrypoint and its only voice. The bridge reaches it through the
//! container's attached stdin/stdout and nothing else (the box has no network), speaking
//! the line-delimited JSON protocol of `clawpen-protocol`: turns, follow-ups, cancels and
//! acknowledgements come in; sequenced reply events go out and are kept until the bridge
//! acknowledges them, so a bridge restart mid-turn loses and repeats nothing.
//!
//! It must stay tiny (a few MB of memory per idle box), so it runs on a single-threaded
//! runtime and depends on little more than the protocol crate. stdout carries protocol
//! lines only; stderr carries a few human-readable log lines.
//!
//! # Layout
//!
//! - `endpoint`: the loop joining stdin, the stdout writer task, the session and the
//!   provider's running turn.
//! - `session`: the protocol state with no I/O: sequence numbers, the unacknowledged
//!   events, resume replay, and what each turn, follow-up and cancel means.
//! - `provider`: who answers a turn (`echo` for now), chosen by `CLAWPEN_PROVIDER`.

mod endpoint;
mod provider;
mod session;

use std::process::ExitCode;
use std::time::Duration;

use provider::Provider;

/// How long to wait, at exit, for blocking stdio threads; a write to a stdout nobody reads
/// never returns, and must not keep the box alive.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let provider = Provider::from_env();
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
    eprintln!(
        "clawpen-agent {}: protocol {}, provider {}",
        env!("CARGO_PKG_VERSION"),
        clawpen_protocol::VERSION,
        provider.name()
    );
    let result = runtime.block_on(endpoint::run(provider));
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clawpen-agent: stopping: {err}");
            ExitCode::FAILURE
        }
    }
}
