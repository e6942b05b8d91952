//! `clawpen doctor`: is everything in place? Each check says what to do when it fails.

use std::process::ExitCode;

use crate::config::{Config, ConfigError};
use crate::control;
use crate::sandbox::{self, Sandbox};
use crate::store::Store;

fn report(ok: bool, what: &str, detail: &str) -> bool {
    println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
    ok
}

pub(super) async fn run(config: Result<Config, ConfigError>) -> ExitCode {
    let config = match config {
        Ok(config) => {
            report(true, "config", "valid");
            config
        }
        Err(e) => {
            report(
                false,
                "config",
                &format!("{e} — fix the file or the environment variable named"),
            );
            return ExitCode::FAILURE;
        }
    };
    let vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    for name in crate::config::unknown_env_vars(&vars) {
        println!(
            "warn environment: {name} is not a clawpen setting and is ignored — check its spelling"
        );
    }
    let mut healthy = true;
    for check in config.adapters.doctor() {
        healthy &= report(check.ok, &check.what, &check.detail);
    }
    let daemon = control::query_status(&config.control_socket()).await;
    for trouble in daemon.iter().flat_map(|status| &status.adapters) {
        healthy &= report(false, "adapter", trouble);
    }
    let instance = if let Some(status) = &daemon {
        match &status.degraded {
            None => {
                report(true, "store", "owned by the running daemon");
            }
            Some(trouble) => {
                healthy &= report(
                    false,
                    "store",
                    &format!(
                        "{trouble} — free space on its disk (or fix the disk); the daemon                          resumes by itself"
                    ),
                )
            }
        };
        None
    } else {
        match Store::open(&config.store_dir()) {
            Ok(store) => {
                report(
                    true,
                    "store",
                    &format!("opens at {}", config.store_dir().display()),
                );
                Some(store.instance_id())
            }
            Err(e) => {
                healthy &= report(
                    false,
                    "store",
                    &format!("{e} — move the directory aside to start afresh"),
                );
                None
            }
        }
    };
    match sandbox::connect_engine().await {
        Ok((docker, host)) => {
            let version = docker
                .version()
                .await
                .ok()
                .and_then(|v| v.version)
                .unwrap_or_default();
            report(true, "engine", &format!("Docker {version} at {host}"));
            let present = docker.inspect_image(&config.image).await.is_ok();
            healthy &= report(
                present,
                "image",
                &if present {
                    format!("{} present", config.image)
                } else {
                    format!(
                        "{} missing — run `clawpen image build` (clawpen run builds it too)",
                        config.image
                    )
                },
            );
        }
        Err(e) => {
            healthy &= report(
                false,
                "engine",
                &format!("{e} — start dockerd or set DOCKER_HOST"),
            );
        }
    }
    if let Some(instance) = instance {
        match Sandbox::connect(&config, &instance).await {
            Ok(_) => {
                report(true, "mounts", &format!("{} allowed", config.mounts.len()));
            }
            Err(sandbox::SandboxError::Mount(e)) => {
                healthy &= report(
                    false,
                    "mounts",
                    &format!("{e} — fix `mounts`/`mount_allowlist`"),
                );
            }
            Err(_) => {}
        }
    }
    report(
        true,
        "daemon",
        if daemon.is_some() {
            "running"
        } else {
            "not running"
        },
    );
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
