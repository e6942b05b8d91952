//! Components: the parts of the daemon that have a lifetime (the router, adapters, the
//! control socket, periodic jobs), started in the order they were registered and stopped in
//! reverse, as atuin's daemon does.
//!
//! Stopping is two passes, both in reverse order: every component is first asked to stop
//! (adapters stop receiving, the control socket stops taking lines, the router stops
//! accepting and lets running turns finish), then each is waited for, all within one
//! deadline. Asking all first lets running turns finish while the parts that stream their
//! replies stay up; whatever has not stopped at the deadline is named in the log.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a component could not start; its own error, boxed, since every component has one.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ComponentError(#[from] pub Box<dyn std::error::Error + Send + Sync>);

impl ComponentError {
    /// Wraps any error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

/// A component did not start; those started before it were stopped again.
#[derive(Debug, thiserror::Error)]
#[error("{component}: {source}")]
pub struct StartError {
    /// The component's name.
    pub component: String,
    /// Why.
    #[source]
    pub source: ComponentError,
}

/// A part of the daemon with a lifetime.
#[async_trait]
pub trait Component: Send + Sync {
    /// Its name in logs: `router`, `adapter telegram`, `control socket`.
    fn name(&self) -> String;

    /// Starts it; returns once it runs. An error fails the start of the daemon.
    async fn start(&self) -> Result<(), ComponentError>;

    /// Asks it to stop, without waiting.
    fn stop(&self);

    /// Waits until it has stopped; the caller bounds the wait.
    async fn stopped(&self);
}

/// The registered components, in order.
#[derive(Default)]
pub struct Components {
    list: Vec<Arc<dyn Component>>,
    /// How many of `list`, from the front, have started.
    started: usize,
}

impl Components {
    /// No components yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a component; it starts with the next [`Components::start`], after those
    /// registered before it, and stops before them.
    pub fn register(&mut self, component: Arc<dyn Component>) {
        self.list.push(component);
    }

    /// Starts the components not started yet, in registration order. If one fails, those
    /// started are stopped again (in reverse) and the error names the one that failed.
    pub async fn start(&mut self) -> Result<(), StartError> {
        while let Some(component) = self.list.get(self.started).cloned() {
            tracing::debug!(component = %component.name(), "starting");
            if let Err(source) = component.start().await {
                let component = component.name();
                // Nothing of a failed start is left running, so a quick stop is enough.
                self.stop(Duration::from_secs(5)).await;
                return Err(StartError { component, source });
            }
            self.started += 1;
        }
        Ok(())
    }

    /// Stops every started component in reverse order within `deadline`; returns (and
    /// logs) the names of those that had not stopped by then.
    pub async fn stop(&mut self, deadline: Duration) -> Vec<String> {
        let started: Vec<_> = self.list.drain(..self.started).rev().collect();
        self.started = 0;
        for component in &started {
            component.stop();
        }
        let until = tokio::time::Instant::now() + deadline;
        let mut left = Vec::new();
        for component in &started {
            if tokio::time::timeout_at(until, component.stopped())
                .await
                .is_err()
            {
                left.push(component.name());
            }
        }
        if !left.is_empty() {
            tracing::warn!(components = ?left, ?deadline, "components did not stop in time");
        }
        left
    }
}

/// The work of a [`Job`]: runs until its token fires; may spawn more on the tracker.
pub type Work = Box<
    dyn FnOnce(CancellationToken, TaskTracker) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send,
>;

/// A component that is background tasks: started by spawning its work, stopped by a token,
/// stopped when all its tasks have ended.
pub struct Job {
    name: String,
    /// Taken by `start`: a job runs once.
    work: Mutex<Option<Work>>,
    /// Fired by `stop`; the work must end soon after.
    stop: CancellationToken,
    /// The work and whatever it spawned, waited for by `stopped`.
    tasks: TaskTracker,
}

impl Job {
    /// A job called `name` that runs `work`.
    pub fn new<F, Fut>(name: impl Into<String>, work: F) -> Arc<Self>
    where
        F: FnOnce(CancellationToken, TaskTracker) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let work: Work = Box::new(move |stop, tasks| Box::pin(work(stop, tasks)));
        Arc::new(Self {
            name: name.into(),
            work: Mutex::new(Some(work)),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }
}

#[async_trait]
impl Component for Job {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn start(&self) -> Result<(), ComponentError> {
        let work = self
            .work
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(work) = work {
            self.tasks
                .spawn(work(self.stop.clone(), self.tasks.clone()));
        }
        Ok(())
    }

    fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
    }

    async fn stopped(&self) {
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records its start and stop events in a shared log.
    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail: bool,
        hang: bool,
    }

    impl Probe {
        fn new(name: &'static str, log: &Arc<Mutex<Vec<String>>>) -> Self {
            Self {
                name,
                log: log.clone(),
                fail: false,
                hang: false,
            }
        }

        fn note(&self, what: &str) {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push(format!("{what} {}", self.name));
        }
    }

    #[async_trait]
    impl Component for Probe {
        fn name(&self) -> String {
            self.name.into()
        }

        async fn start(&self) -> Result<(), ComponentError> {
            if self.fail {
                return Err(ComponentError::new(std::io::Error::other("no port")));
            }
            self.note("start");
            Ok(())
        }

        fn stop(&self) {
            self.note("stop");
        }

        async fn stopped(&self) {
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.note("stopped");
        }
    }

    fn log_of(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    #[tokio::test]
    async fn started_in_order_stopped_in_reverse_and_stragglers_named() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut components = Components::new();
        components.register(Arc::new(Probe::new("router", &log)));
        components.register(Arc::new(Probe {
            hang: true,
            ..Probe::new("socket", &log)
        }));
        components.register(Arc::new(Probe::new("telegram", &log)));
        assert!(components.start().await.is_ok());
        // A short deadline: the hanging one never stops, the others at once.
        let left = components.stop(Duration::from_millis(200)).await;
        assert_eq!(left, ["socket"]);
        assert_eq!(
            log_of(&log),
            [
                "start router",
                "start socket",
                "start telegram",
                "stop telegram",
                "stop socket",
                "stop router",
                "stopped telegram",
                "stopped router",
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_start_stops_what_was_started_and_names_the_culprit() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut components = Components::new();
        components.register(Arc::new(Probe::new("router", &log)));
        components.register(Arc::new(Probe {
            fail: true,
            ..Probe::new("socket", &log)
        }));
        components.register(Arc::new(Probe::new("telegram", &log)));
        let err = components.start().await.err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("socket: no port"));
        assert_eq!(
            log_of(&log),
            ["start router", "stop router", "stopped router"]
        );
    }

    #[tokio::test]
    async fn a_job_ends_when_asked() {
        let job = Job::new("prune", |stop: CancellationToken, _| async move {
            stop.cancelled().await;
        });
        let mut components = Components::new();
        components.register(job);
        assert!(components.start().await.is_ok());
        assert!(components.stop(Duration::from_secs(1)).await.is_empty());
    }
}
