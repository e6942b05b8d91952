//! `/readyz`: can the bridge do its work now? The store takes a flushed write, the engine
//! answers, and every adapter still receives and reached its platform on its last call.
//!
//! Each check is bounded by [`CHECK_TIMEOUT`], so a hung engine or disk makes the probe
//! fail rather than hang; the answer names the failing part in words.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::Metered;
use crate::sandbox::Sandbox;
use crate::store::Store;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The store key the probe writes (a cursor nothing reads).
const PROBE_KEY: &str = "metrics.ready-probe";

/// One adapter as `/readyz` sees it: its outbound side (through [`Metered`]) and whether
/// its receiving task still runs.
pub struct AdapterLiveness {
    metered: Arc<Metered>,
    /// Why its receiving task ended, once it has. A std mutex, held to set or copy it.
    ended: Mutex<Option<String>>,
}

impl AdapterLiveness {
    /// An adapter whose receiving task runs.
    pub fn new(metered: Arc<Metered>) -> Arc<Self> {
        Arc::new(Self {
            metered,
            ended: Mutex::new(None),
        })
    }

    /// Its receiving task ended (an adapter receives until shutdown, so this is a fault).
    pub fn ended(&self, why: String) {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    fn check(&self) -> Result<(), String> {
        use clawpen_adapters::Adapter;
        if let Some(why) = self
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Err(format!("stopped receiving: {why}"));
        }
        match self.metered.unreachable() {
            Some(why) => Err(format!(
                "the last call to {} failed: {why}",
                self.metered.platform()
            )),
            None => Ok(()),
        }
    }
}

/// What `/readyz` checks.
#[derive(Clone)]
pub struct Readiness {
    /// The store, written to once per probe.
    pub store: Store,
    /// The engine, pinged once per probe.
    pub sandbox: Sandbox,
    /// Every adapter with a receiving task (the terminal has none and is always ready).
    pub adapters: Vec<(String, Arc<AdapterLiveness>)>,
}

/// The answer of `/readyz`: `ready`, and each part as `ok` or what is wrong.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether every part is ok.
    pub ready: bool,
    /// The store: `ok`, or why it does not take writes.
    pub store: String,
    /// The engine: `ok`, or why it does not answer.
    pub engine: String,
    /// Each adapter by platform: `ok`, or what is wrong.
    pub adapters: std::collections::BTreeMap<String, String>,
}

fn verdict(result: Result<(), String>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(why) => why,
    }
}

impl Readiness {
    /// Runs every check.
    pub async fn check(&self) -> Report {
        let (store, engine) = tokio::join!(self.store(), self.engine());
        let adapters: std::collections::BTreeMap<String, String> = self
            .adapters
            .iter()
            .map(|(name, adapter)| (name.clone(), verdict(adapter.check())))
            .collect();
        let ready = store.is_ok() && engine.is_ok() && adapters.values().all(|v| v == "ok");
        Report {
            ready,
            store: verdict(store),
            engine: verdict(engine),
            adapters,
        }
    }

    async fn store(&self) -> Result<(), String> {
        if let Some(trouble) = self.store.trouble() {
            return Err(trouble);
        }
        let now = crate::router::now_secs().to_string();
        let write = self.store.blocking(move |s| s.set_cursor(PROBE_KEY, &now));
        match tokio::time::timeout(CHECK_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("a write failed: {e}")),
            Err(_) => Err(format!(
                "a write took longer than {} s",
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }

    async fn engine(&self) -> Result<(), String> {
        let ping = self.sandbox.docker().ping();
        match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{} does not answer: {e}", self.sandbox.host())),
            Err(_) => Err(format!(
                "{} did not answer within {} s",
                self.sandbox.host(),
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }
}
