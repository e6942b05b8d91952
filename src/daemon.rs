//! Starting and stopping the whole bridge: store, sandbox, router, adapters, control socket.

use std::sync::Arc;
use std::time::Duration;

use clawpen_adapters::terminal::TerminalAdapter;
use clawpen_adapters::{Adapter, InboundSink};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::router::{RecoverError, Router, RouterConfig};
use crate::sandbox::{Sandbox, SandboxError};
use crate::store::{Store, StoreError};
use crate::tunnel::Tunnel;

/// Handled inbound messages are kept this long for deduplication (platforms redeliver
/// within hours, not days), then pruned so the log stays bounded.
const INBOUND_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often the inbound log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sandbox is unusable.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// What the last run left could not be recovered.
    #[error(transparent)]
    Recover(#[from] RecoverError),
    /// The control socket could not be served.
    #[error("control socket {path}: {source}")]
    Control {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The running bridge.
pub struct Bridge {
    /// The router every adapter feeds.
    pub router: Router,
    /// The terminal channel (always present).
    pub terminal: Arc<TerminalAdapter>,
    /// Adapter and control-socket tasks, stopped on shutdown.
    tasks: TaskTracker,
    /// Fired to stop adapters and the control socket.
    stop: CancellationToken,
    grace: Duration,
}

impl Bridge {
    /// Open the store, reach the engine, make sure the box image exists, recover what the
    /// last run left, and start `adapters` (the terminal adapter is added).
    pub async fn start(
        config: &Config,
        adapters: Vec<Arc<dyn Adapter>>,
    ) -> Result<Self, DaemonError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::Control {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::open(&config.store_dir())?;
        let sandbox = Sandbox::connect(config, &store.instance_id()).await?;
        sandbox.ensure_image(config).await?;
        let terminal = TerminalAdapter::new();
        let mut all: Vec<Arc<dyn Adapter>> = vec![terminal.clone()];
        all.extend(adapters.iter().cloned());
        let router_config = RouterConfig {
            max_boxes: config.max_boxes,
            idle_timeout: config.idle_timeout(),
            turn_stall: Duration::from_secs(config.turn_stall_secs),
        };
        let tunnel = Tunnel::new(config);
        let router = Router::new(
            store,
            sandbox,
            tunnel,
            all,
            router_config,
            CancellationToken::new(),
        );
        router.recover().await?;
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        for adapter in adapters {
            let sink: Arc<dyn InboundSink> = Arc::new(router.clone());
            let (stop, name) = (stop.clone(), adapter.platform().to_string());
            tasks.spawn(async move {
                if let Err(e) = adapter.run(sink, stop).await {
                    tracing::error!(adapter = %name, error = %e, "adapter stopped");
                }
            });
        }
        tasks.spawn(prune_inbound(router.store().clone(), stop.clone()));
        Ok(Self {
            router,
            terminal,
            tasks,
            stop,
            grace: Duration::from_secs(config.shutdown_grace_secs),
        })
    }

    /// Serve the control socket (for `clawpen chat` and `clawpen status`) in the background.
    pub fn serve_control(&self, config: &Config) {
        let path = config.control_socket();
        let (router, terminal, stop) = (
            self.router.clone(),
            self.terminal.clone(),
            self.stop.clone(),
        );
        let (tasks, max_boxes) = (self.tasks.clone(), config.max_boxes);
        self.tasks.spawn(async move {
            if let Err(e) =
                crate::control::serve(&path, router, terminal, max_boxes, stop, tasks).await
            {
                tracing::error!(path = %path.display(), error = %e, "control socket failed");
            }
        });
    }

    /// Stop accepting, let running turns finish up to the grace deadline, persist, and
    /// leave boxes running for the next start to re-adopt.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: no new messages, finishing running turns");
        self.stop.cancel();
        self.router.begin_shutdown();
        let left = self.router.wait_stopped(self.grace).await;
        if !left.is_empty() {
            tracing::warn!(conversations = ?left, "turns still running at the deadline; they resume on the next start");
        }
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("adapter tasks did not stop within 5 s");
        }
        if let Err(e) = self.router.store().flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// Prune handled inbound messages past their retention, hourly, until `stop`.
async fn prune_inbound(store: Store, stop: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = crate::router::now_secs();
        match store.prune_inbound(now, INBOUND_RETENTION.as_secs()) {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned handled inbound messages"),
            Err(e) => tracing::warn!(error = %e, "pruning the inbound log failed"),
        }
    }
}

/// `clawpen run`: the daemon, until SIGINT or SIGTERM.
pub async fn run(config: Config, adapters: Vec<Arc<dyn Adapter>>) -> Result<(), DaemonError> {
    let bridge = Bridge::start(&config, adapters).await?;
    bridge.serve_control(&config);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        image = %config.image,
        max_boxes = config.max_boxes,
        "clawpen is running"
    );
    wait_for_signal().await;
    bridge.shutdown().await;
    Ok(())
}

/// Wait for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with ctrl-c");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
