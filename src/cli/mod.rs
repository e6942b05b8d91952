//! The subcommands of `clawpen`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::{Config, ConfigError};
use crate::sandbox::Sandbox;
use crate::store::Store;

mod chat;
mod doctor;
mod gc;
mod status;

/// What `clawpen` can do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: every adapter whose credentials are configured, until SIGINT/SIGTERM.
    Run,
    /// Talk to a conversation from the terminal (through the daemon when one runs).
    Chat {
        /// The conversation's name.
        #[arg(long, short, default_value = "local")]
        conversation: String,
    },
    /// Manage the box image.
    Image {
        #[command(subcommand)]
        action: ImageAction,
    },
    /// Check that everything clawpen needs is in place, and say what to do when not.
    Doctor,
    /// Show live conversations, their boxes and the queue.
    Status,
    /// List the boxes and workspace volumes whose conversation the store does not know
    /// (a dry run); with `--yes`, remove them. Refuses to run while the daemon runs: stop
    /// it first (the store has one owner).
    Gc {
        /// Remove the orphans listed, with the files in their volumes.
        #[arg(long)]
        yes: bool,
    },
}

/// `clawpen image ...`
#[derive(Debug, Subcommand)]
pub enum ImageAction {
    /// Build the box image locally, without any registry.
    Build,
}

/// Run one command.
pub async fn run(
    command: Command,
    config: Result<Config, ConfigError>,
) -> anyhow::Result<ExitCode> {
    if let Command::Doctor = command {
        return Ok(doctor::run(config).await);
    }
    let config = config.context("configuration")?;
    match command {
        Command::Run => {
            let adapters = config
                .adapters
                .build()
                .map_err(|(platform, e)| anyhow::anyhow!("the {platform} adapter: {e}"))?;
            crate::daemon::run(config, adapters)
                .await
                .context("clawpen run")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat { conversation } => chat::run(&config, &conversation).await,
        Command::Image {
            action: ImageAction::Build,
        } => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            let instance = instance_id(&config).await?;
            let sandbox = Sandbox::connect(&config, &instance).await?;
            sandbox.build_image(&config).await?;
            println!("built {}", config.image);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => status::run(&config).await,
        Command::Gc { yes } => gc::run(&config, yes).await,
        Command::Doctor => Ok(ExitCode::SUCCESS),
    }
}

/// The instance id, from the daemon-owned store when free, else any placeholder (image
/// building does not need it).
async fn instance_id(config: &Config) -> anyhow::Result<String> {
    match Store::open(&config.store_dir()) {
        Ok(store) => Ok(store.instance_id()),
        Err(_) => Ok("image-build".into()),
    }
}
