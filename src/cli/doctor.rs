//! `clawpen doctor`: is everything in place? Each check says what to do when it fails.

use std::process::ExitCode;

use clawpen_adapters::egress::Egress;

use crate::config::{Config, ConfigError, SeccompChoice};
use crate::control;
use crate::sandbox::seccomp::Seccomp;
use crate::sandbox::{self, image, Sandbox};
use crate::store::Store;

fn report(ok: bool, what: &str, detail: &str) -> bool {
    println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
    ok
}

/// A missing piece that only matters for building the image: a warning while the image is
/// there.
fn report_piece(ok: bool, needed: bool, what: &str, detail: &str) -> bool {
    if ok || needed {
        report(ok, what, detail)
    } else {
        println!("warn {what}: {detail} (needed only to build the image again)");
        false
    }
}

/// The static agent and busybox the box image is made of, reported as failures when the
/// image must be built (`needed`); false if one is missing.
fn pieces(config: &Config, needed: bool) -> bool {
    let checkout = image::in_checkout();
    let agent = match image::find_agent(config) {
        Ok(path) => report(true, "static agent", &path.display().to_string()),
        Err(_) => report_piece(
            false,
            needed,
            "static agent",
            &if checkout {
                "missing — run `cargo xtask agent`".to_string()
            } else {
                "missing — run `cargo xtask agent` in a clawpen checkout, or set \
                 CLAWPEN_AGENT_BINARY to a static clawpen-agent"
                    .to_string()
            },
        ),
    };
    let busybox = match image::find_busybox(config) {
        Ok(path) => report(true, "busybox", &path.display().to_string()),
        Err(_) => report_piece(
            false,
            needed,
            "busybox",
            if checkout {
                "no static busybox — run `cargo xtask busybox`"
            } else {
                "no static busybox — run `apt-get install busybox-static`"
            },
        ),
    };
    agent && busybox
}

/// The proxy variables, in the order the HTTP clients prefer them for https.
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// How outbound traffic leaves: directly, or through a forward proxy (as in a Docker
/// Sandboxes micro-VM) that must accept connections; and the extra CA certificates, which
/// must all load. False if something is wrong.
async fn network() -> bool {
    let mut healthy = true;
    let proxy = PROXY_VARS.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*name, v))
    });
    match proxy {
        None => {
            report(true, "network", "direct (no HTTPS_PROXY)");
        }
        Some((name, value)) => match reqwest::Url::parse(&value) {
            Ok(mut url) => {
                // Credentials in the URL stay out of the report.
                let _ = url.set_password(None);
                let _ = url.set_username("");
                let (host, port) = (
                    url.host_str().unwrap_or_default().to_string(),
                    url.port_or_known_default().unwrap_or(80),
                );
                let connect = tokio::net::TcpStream::connect((host.as_str(), port));
                let reached = tokio::time::timeout(std::time::Duration::from_secs(3), connect)
                    .await
                    .map_err(|_| "no answer within 3 s".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                healthy &= report(
                    reached.is_ok(),
                    "network",
                    &match reached {
                        Ok(_) => format!(
                            "through the proxy {url} ({name}; a sandbox's forward proxy, \
                             NO_PROXY honoured)"
                        ),
                        Err(e) => format!(
                            "the proxy {url} ({name}) does not accept connections: {e} — \
                             fix {name} or start the proxy"
                        ),
                    },
                );
            }
            Err(e) => {
                healthy &= report(
                    false,
                    "network",
                    &format!("{name} is not a URL ({e}) — set it to http://host:port"),
                );
            }
        },
    }
    let egress = Egress::from_env();
    let (count, _) = egress.extra_roots();
    if egress.problems().is_empty() {
        report(
            true,
            "certificates",
            &if count == 0 {
                "the built-in web PKI roots".to_string()
            } else {
                format!("the built-in web PKI roots and {count} from SSL_CERT_FILE/SSL_CERT_DIR")
            },
        );
    } else {
        healthy &= report(
            false,
            "certificates",
            &format!(
                "{} — fix or unset SSL_CERT_FILE/SSL_CERT_DIR",
                egress.problems().join("; ")
            ),
        );
    }
    healthy
}

/// The seccomp profile boxes run under, and whether the engine can apply it. False if the
/// profile is unusable or the engine has no seccomp support.
async fn seccomp(config: &Config, docker: &bollard::Docker) -> bool {
    let profile = match config.limits.seccomp {
        SeccompChoice::Engine => {
            println!(
                "warn seccomp: the engine's default profile ([box] seccomp = \"engine\"); \
                 it may allow io_uring — use \"clawpen\" where the engine supports it"
            );
            return true;
        }
        SeccompChoice::Clawpen => match Seccomp::clawpen() {
            Ok(profile) => profile,
            Err(e) => return report(false, "seccomp", &format!("{e} — rebuild clawpen")),
        },
    };
    // The engine lists `name=seccomp,profile=…` among its security options when it can
    // apply a profile; an engine that does not say refuses to create boxes with one.
    let engine = docker
        .info()
        .await
        .ok()
        .and_then(|info| info.security_options)
        .unwrap_or_default();
    if engine.iter().any(|option| option.contains("seccomp")) {
        report(true, "seccomp", &profile.describe())
    } else {
        report(
            false,
            "seccomp",
            &format!(
                "{} cannot be applied: the engine reports no seccomp support — enable it, or \
                 set [box] seccomp = \"engine\"",
                profile.describe()
            ),
        )
    }
}

/// The one command that builds every piece of the box image.
fn setup_command() -> String {
    if image::in_checkout() {
        "cargo xtask setup".into()
    } else {
        "apt-get install busybox-static, then cargo xtask agent in a clawpen checkout".into()
    }
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
    for check in config.adapters.probe().await {
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
                        "{trouble} — free space on its disk (or fix the disk); the daemon \
                         resumes by itself"
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
    healthy &= network().await;
    let engine = sandbox::connect_engine().await;
    let present = match &engine {
        Ok((docker, _)) => docker.inspect_image(&config.image).await.is_ok(),
        Err(_) => false,
    };
    let pieces = pieces(&config, !present);
    healthy &= pieces || present;
    match engine {
        Ok((docker, host)) => {
            let version = docker
                .version()
                .await
                .ok()
                .and_then(|v| v.version)
                .unwrap_or_default();
            report(true, "engine", &format!("Docker {version} at {host}"));
            healthy &= seccomp(&config, &docker).await;
            // Building the image needs the two pieces above; when one is missing, the
            // command that makes everything fixes the image too.
            let fix = if pieces {
                "clawpen image build".to_string()
            } else {
                setup_command()
            };
            healthy &= report(
                present,
                "image",
                &if present {
                    format!("{} present", config.image)
                } else {
                    format!("{} missing — run `{fix}`", config.image)
                },
            );
        }
        Err(e) => {
            let fix = match std::env::var("DOCKER_HOST") {
                Ok(host) if !host.is_empty() => {
                    format!("start the engine at DOCKER_HOST={host}, or unset DOCKER_HOST")
                }
                _ => "run `sudo systemctl start docker` (or set DOCKER_HOST to an engine)"
                    .to_string(),
            };
            healthy &= report(false, "engine", &format!("{e} — {fix}"));
        }
    }
    if let Some(instance) = instance {
        match Sandbox::connect(&config, &instance).await {
            Ok(sandbox) => {
                report(true, "mounts", &format!("{} allowed", config.mounts.len()));
                let boxes = match config.max_boxes {
                    Some(n) => format!("max_boxes {n} (set)"),
                    None => format!("max_boxes unset: {}", sandbox.capacity().await.why),
                };
                report(true, "boxes", &boxes);
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
