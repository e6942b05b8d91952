//! `clawpen status`: what the daemon is doing, or which boxes exist when none runs.

use std::process::ExitCode;

use crate::config::Config;
use crate::control;
use crate::sandbox::Sandbox;
use crate::store::Store;

pub(super) async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    if let Some(status) = control::query_status(&config.control_socket()).await {
        println!(
            "daemon: running; live boxes {}/{} ({} of them warm, ready for new conversations; pool {})",
            status.live_boxes, status.max_boxes, status.warm_boxes, status.warm_pool
        );
        // The queue for a box, first come first served: a slot under the cap, then the
        // engine's start.
        println!(
            "waiting for a box: {} for a slot, {} for the engine to start it",
            status.waiting_for_slot, status.starts_waiting
        );
        if let Some(degraded) = &status.degraded {
            println!("degraded: {degraded}");
        }
        for trouble in &status.adapters {
            println!("adapter {trouble}");
        }
        if status.conversations.is_empty() {
            println!("no live conversations");
        }
        for c in status.conversations {
            let container = c
                .container
                .as_deref()
                .map(|c| &c[..c.len().min(12)])
                .unwrap_or("-");
            println!(
                "{:<40} {:<14} {:<22} queued {:<3} model requests/min {:<3} tokens today {}",
                c.conversation,
                container,
                c.state,
                c.queued,
                c.requests_last_minute,
                c.tokens_today
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("daemon: not running");
    let store = Store::open(&config.store_dir())?;
    let sandbox = Sandbox::connect(config, &store.instance_id()).await?;
    let (mut boxes, mut volumes) = (sandbox.list().await?, sandbox.volumes().await?);
    crate::sandbox::attribute(&mut boxes, &mut volumes, &store.claimed_workspaces()?);
    let conversations = store.conversations()?;
    println!(
        "{} conversations, {} boxes",
        conversations.len(),
        boxes.len()
    );
    for b in boxes {
        let key = match (b.conversation, b.pool) {
            (Some(key), _) => key.to_string(),
            // Left by a daemon that stopped without removing its pool; its next start does.
            (None, true) => "(warm pool, unclaimed)".into(),
            (None, false) => "?".into(),
        };
        println!(
            "{:<40} {:<14} {}",
            key,
            b.id.as_str().get(..12).unwrap_or(b.id.as_str()),
            if b.running { "running" } else { "stopped" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
