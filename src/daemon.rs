//! Starting and stopping the whole bridge: store, sandbox, router, adapters, control socket.
//!
//! The store and the sandbox are opened first; the rest are [`Component`]s, started in this
//! order and stopped in reverse: the router (recovering what the last run left), the
//! scheduler, the inbound-log pruning, the workspace quota's watchdog, the metrics endpoint
//! (when `[metrics] listen` is set), the adapters, and in `clawpen run` the control socket.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawpen_adapters::terminal::TerminalAdapter;
use clawpen_adapters::{Adapter, InboundSink};
use tokio_util::sync::CancellationToken;

use crate::component::{Component, ComponentError, Components, Job, StartError};
use crate::config::Config;
use crate::metrics::{self, AdapterLiveness, Metered, Metrics, Readiness};
use crate::router::{Clock, RecoverError, ReplyLimits, Router, RouterConfig};
use crate::sandbox::{Sandbox, SandboxError};
use crate::schedule::{self, Scheduler};
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
    /// A component could not start (the router: what the last run left could not be
    /// recovered).
    #[error(transparent)]
    Start(#[from] StartError),
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
    /// The scheduler of tasks.
    scheduler: Scheduler,
    /// The router, adapters, control socket and periodic jobs, stopped in reverse.
    components: Components,
    /// How long running turns get on shutdown.
    grace: Duration,
    /// The metrics endpoint, when one is configured.
    metrics: Option<Arc<metrics::Server>>,
}

/// Margin past the grace period for the components that stream the last replies out.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// The router as a component: starting recovers the last run; stopping lets running turns
/// finish up to the grace period.
struct RouterPart {
    router: Router,
    grace: Duration,
}

#[async_trait]
impl Component for RouterPart {
    fn name(&self) -> String {
        "router".into()
    }

    async fn start(&self) -> Result<(), ComponentError> {
        self.router
            .recover()
            .await
            .map_err(|e: RecoverError| ComponentError::new(e))?;
        self.router.start_pool();
        Ok(())
    }

    fn stop(&self) {
        self.router.begin_shutdown();
    }

    async fn stopped(&self) {
        let left = self.router.wait_stopped(self.grace).await;
        if !left.is_empty() {
            tracing::warn!(conversations = ?left, "turns still running at the deadline; they resume on the next start");
        }
    }
}

/// An adapter as a component: it receives until stopped. If it stops on its own, `/readyz`
/// says so through `liveness`.
fn adapter_component(
    adapter: Arc<dyn Adapter>,
    sink: Arc<dyn InboundSink>,
    liveness: Arc<AdapterLiveness>,
) -> Arc<Job> {
    let name = adapter.platform().to_string();
    Job::new(format!("adapter {name}"), move |stop, _| async move {
        let ended = adapter.run(sink, stop.clone()).await;
        if let Err(e) = &ended {
            tracing::error!(adapter = %name, error = %e, "adapter stopped");
        }
        if !stop.is_cancelled() {
            liveness.ended(match ended {
                Ok(()) => "it returned".into(),
                Err(e) => e.to_string(),
            });
        }
    })
}

impl Bridge {
    /// Open the store, reach the engine, make sure the box image exists, recover what the
    /// last run left, and start `adapters` (the terminal adapter is added).
    pub async fn start(
        config: &Config,
        adapters: Vec<Arc<dyn Adapter>>,
    ) -> Result<Self, DaemonError> {
        Self::start_on(config, adapters, Clock::default()).await
    }

    /// [`Bridge::start`], with the conversations' timers on `clock` (tests move a manual one).
    pub async fn start_on(
        config: &Config,
        adapters: Vec<Arc<dyn Adapter>>,
        clock: Clock,
    ) -> Result<Self, DaemonError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::Control {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::open(&config.store_dir())?;
        let metrics = match config.metrics.listen {
            Some(_) => Metrics::on(),
            None => Metrics::off(),
        };
        let sandbox = Sandbox::connect(config, &store.instance_id())
            .await?
            .with_metrics(metrics.clone());
        sandbox.ensure_image(config).await?;
        let max_boxes = match config.max_boxes {
            Some(max_boxes) => max_boxes,
            None => {
                let capacity = sandbox.capacity().await;
                tracing::info!(max_boxes = capacity.boxes, why = %capacity.why, "max_boxes is not set: as many as the engine's machine holds");
                capacity.boxes
            }
        };
        let terminal = TerminalAdapter::new();
        // The router sees every adapter through `Metered`, which counts its platform's
        // errors; the receiving side runs the adapter itself.
        let metered: Vec<Arc<Metered>> = adapters
            .iter()
            .map(|a| Metered::new(a.clone(), metrics.clone()))
            .collect();
        let mut all: Vec<Arc<dyn Adapter>> = vec![Metered::new(terminal.clone(), metrics.clone())];
        all.extend(metered.iter().map(|m| m.clone() as Arc<dyn Adapter>));
        let router_config = RouterConfig {
            max_boxes,
            warm_pool: config.warm_pool,
            idle_timeout: config.idle_timeout(),
            turn_stall: Duration::from_secs(config.turn_stall_secs),
            max_turn: Duration::from_secs(config.max_turn_secs),
            reply_limits: ReplyLimits {
                bytes: usize::try_from(config.max_reply_kb.saturating_mul(1024))
                    .unwrap_or(usize::MAX),
                messages: config.max_reply_messages,
            },
            max_rate_wait: Duration::from_secs(config.max_rate_wait_secs),
            models: config
                .conversations
                .iter()
                .filter_map(|(key, own)| Some((key.clone(), own.model.clone()?)))
                .collect(),
            clock: clock.clone(),
        };
        let tunnel = Tunnel::new(config).with_metrics(metrics.clone());
        let router = Router::new(
            store,
            sandbox,
            tunnel,
            all,
            router_config,
            CancellationToken::new(),
            metrics.clone(),
        );
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let scheduler = Scheduler::new(
            router.store().clone(),
            router.downgrade(),
            schedule_settings(config),
            clock,
        );
        router.set_scheduler(scheduler.clone());
        let mut components = Components::new();
        components.register(Arc::new(RouterPart {
            router: router.clone(),
            grace,
        }));
        // After the router, which recovers the last run's messages first; stopped before it.
        components.register(Arc::new(scheduler.clone()));
        let store = router.store().clone();
        components.register(Job::new("inbound pruning", move |stop, _| {
            prune_inbound(store, stop)
        }));
        // Every running box's workspace against `[box] workspace_mb`; after the router,
        // whose recovery adopts the boxes the last run left.
        let sandbox = router.sandbox().clone();
        components.register(Job::new("workspace quota", move |stop, _| {
            crate::sandbox::quota::watch(sandbox, stop)
        }));
        let liveness: Vec<Arc<AdapterLiveness>> =
            metered.into_iter().map(AdapterLiveness::new).collect();
        let server = config.metrics.listen.map(|listen| {
            let readiness = Readiness {
                store: router.store().clone(),
                sandbox: router.sandbox().clone(),
                adapters: adapters
                    .iter()
                    .zip(&liveness)
                    .map(|(a, l)| (a.platform().to_string(), l.clone()))
                    .collect(),
            };
            metrics::component(listen, metrics.clone(), router.clone(), readiness)
        });
        if let Some(server) = &server {
            components.register(server.clone());
        }
        for (adapter, liveness) in adapters.into_iter().zip(liveness) {
            let sink: Arc<dyn InboundSink> = Arc::new(router.clone());
            components.register(adapter_component(adapter, sink, liveness));
        }
        components.start().await?;
        Ok(Self {
            router,
            terminal,
            scheduler,
            components,
            grace,
            metrics: server,
        })
    }

    /// The scheduler of tasks (tests tick it and read its tasks).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Where the metrics endpoint listens, when one is configured.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|server| server.local_addr())
    }

    /// Serve the control socket (for `clawpen chat` and `clawpen status`) in the background;
    /// it is the last component, so the first to stop.
    pub async fn serve_control(&mut self, config: &Config) -> Result<(), DaemonError> {
        let control = crate::control::component(config, self.router.clone(), self.terminal.clone());
        self.components.register(control);
        self.components.start().await?;
        Ok(())
    }

    /// Stop accepting, let running turns finish up to the grace deadline, persist, and
    /// leave boxes running for the next start to re-adopt.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down: no new messages, finishing running turns");
        self.components.stop(self.grace + STOP_MARGIN).await;
        if let Err(e) = self.router.store().flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// The scheduler's settings from the operator's configuration.
pub fn schedule_settings(config: &Config) -> schedule::Settings {
    schedule::Settings {
        default_zone: config.timezone.clone().unwrap_or_else(|| "UTC".into()),
        max_tasks: config.max_tasks_per_conversation,
        min_interval_secs: config.min_task_interval_secs,
        owners: config.task_owners.clone(),
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
    // Listening before anything starts: a stop asked for while the bridge starts (a
    // service manager's, an operator's) is carried out once it has, instead of the
    // signal's default action killing it half way.
    let stop = StopSignals::listen();
    let mut bridge = Bridge::start(&config, adapters).await?;
    if let Err(e) = bridge.serve_control(&config).await {
        bridge.shutdown().await;
        return Err(e);
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        image = %config.image,
        max_boxes = bridge.router.max_boxes(),
        "clawpen is running"
    );
    stop.wait().await;
    bridge.shutdown().await;
    Ok(())
}

/// SIGINT and SIGTERM, listened for from when this is made: one that arrives before
/// [`StopSignals::wait`] is kept for it.
struct StopSignals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Waits for SIGINT or SIGTERM.
    async fn wait(self) {
        match (self.int, self.term) {
            (Some(mut int), Some(mut term)) => {
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
}
