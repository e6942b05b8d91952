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
    clawpen::log::init(default_filter);
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
