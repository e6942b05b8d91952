//! The `clawpen` command: parses arguments, sets up logging, loads config, runs one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clawpen::cli::{self, Command};
use clawpen::config::Config;

/// clawpen: chat with an AI agent that lives in its own hardened box.
#[derive(Debug, Parser)]
#[command(name = "clawpen", version, about)]
struct Args {
    /// Config file (TOML); environment variables override it.
    #[arg(long, global = true, env = "CLAWPEN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The daemon reports what it does; interactive commands only what goes wrong.
    let default_filter = match args.command {
        Command::Run | Command::Image { .. } => "clawpen=info,warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWPEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("CLAWPEN_LOG_FORMAT").as_deref() {
        // One JSON object per line for log collectors: the event's fields at the top level,
        // the spans it runs in (conversation, platform) listed under `spans`.
        Ok("json") => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
        Ok("" | "text") | Err(_) => logs.init(),
        Ok(other) => {
            logs.init();
            tracing::warn!(
                value = other,
                "CLAWPEN_LOG_FORMAT is neither `text` nor `json`; logging text"
            );
        }
    }
    // `doctor` reports a bad config itself instead of failing here.
    let config = Config::load(args.config.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("clawpen: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clawpen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
