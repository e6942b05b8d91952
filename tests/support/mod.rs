//! Shared test support: a bridge on a temporary data directory against the real Docker
//! engine, with helpers to talk to conversations and look inside their boxes.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod daemon;
pub mod lines;
pub mod logs;
pub mod model;

use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use clawpen::adapters::terminal::{TerminalEvent, PLATFORM};
use clawpen::adapters::{ConversationKey, InboundSink};
use clawpen::config::Config;
use clawpen::control::terminal_inbound;
use clawpen::daemon::Bridge;
use clawpen::router::{Clock, ConversationState};
use clawpen::sandbox::spec;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// How long a test waits for a reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A bridge running in-process on its own data directory (its own instance id, so its
/// boxes are its own).
pub struct TestBridge {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub bridge: Bridge,
    /// Removes the boxes even when a test panics before [`TestBridge::stop`].
    pub cleanup: Cleanup,
}

/// Removes an instance's boxes and volumes when dropped, with the docker CLI (a panicking
/// test has no runtime left to do it through the API). After a clean stop it finds none.
pub struct Cleanup {
    pub instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={}={}", spec::LABEL_INSTANCE, self.instance);
        let script = format!(
            "docker ps -aq --filter {filter} | xargs -r docker rm -f >/dev/null 2>&1; \
             docker volume ls -q --filter {filter} | xargs -r docker volume rm -f >/dev/null 2>&1"
        );
        let _ = std::process::Command::new("sh")
            .args(["-c", &script])
            .status();
    }
}

/// A config on a fresh temporary directory, for the tests' bridges.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        echo_delay_ms: 5,
        // Most tests count boxes, containers and slots of their conversations; the warm
        // pool's own boxes would be in those counts. tests/pool.rs runs with it on.
        warm_pool: 0,
        ..Config::default()
    }
}

impl TestBridge {
    /// Start a bridge; `tweak` adjusts its config first.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(Clock::default(), tweak).await
    }

    /// Start a bridge whose conversations' timers (idle stop, stall, typing, retries) run
    /// on `clock`, usually a [`clawpen::router::ManualClock`] the test moves.
    pub async fn start_on(clock: Clock, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let bridge = Bridge::start_on(&config, Vec::new(), clock)
            .await
            .unwrap_or_else(|e| panic!("bridge start: {e}"));
        let instance = bridge.router.sandbox().instance().to_string();
        Self {
            dir,
            config,
            bridge,
            cleanup: Cleanup { instance },
        }
    }

    /// The key of a terminal conversation.
    pub fn key(name: &str) -> ConversationKey {
        ConversationKey::new(PLATFORM, name)
    }

    /// Watch a conversation's replies.
    pub fn watch(&self, name: &str) -> mpsc::Receiver<TerminalEvent> {
        self.bridge.terminal.watch(&Self::key(name))
    }

    /// Type a line into a conversation, as `clawpen chat` does (commands included).
    pub async fn say(&self, name: &str, text: &str) {
        self.bridge
            .terminal
            .say(&self.bridge.router, &Self::key(name), text)
            .await
            .unwrap_or_else(|e| panic!("accept: {e}"));
    }

    /// Hand a conversation chatter that does not address the bot.
    pub async fn chatter(&self, name: &str, text: &str) {
        let mut message = terminal_inbound(&Self::key(name), text);
        message.addressed = false;
        self.bridge
            .router
            .accept(message)
            .await
            .unwrap_or_else(|e| panic!("accept: {e}"));
    }

    /// Send and wait for the complete reply.
    pub async fn ask(&self, name: &str, text: &str) -> String {
        let mut events = self.watch(name);
        self.say(name, text).await;
        next_reply(&mut events).await
    }

    /// The requests (model calls, web fetches) of a conversation's box being performed now.
    pub fn requests_in_flight(&self, name: &str) -> usize {
        let key = Self::key(name).to_string();
        self.bridge
            .router
            .status()
            .into_iter()
            .find(|s| s.conversation == key)
            .map_or(0, |s| s.requests_in_flight)
    }

    /// What a conversation is doing now (`None`: it has no live actor).
    pub fn state(&self, name: &str) -> Option<ConversationState> {
        let key = Self::key(name).to_string();
        let status = self.bridge.router.status();
        status
            .into_iter()
            .find(|s| s.conversation == key)
            .map(|s| s.state)
    }

    /// Whether a conversation's box runs now (`None`: it has no box), asked of the engine
    /// about that one container, whose state it reads as `docker stop` left it.
    pub async fn box_running(&self, name: &str) -> Option<bool> {
        let sandbox = self.bridge.router.sandbox();
        let wanted = spec::container_name(sandbox.instance(), &Self::key(name));
        let id = clawpen_domain::ContainerId::from(wanted.as_str());
        match sandbox.inspect(&id).await {
            Ok(exit) => exit.map(|e| e.running),
            Err(e) => panic!("inspect the box of {name}: {e}"),
        }
    }

    /// The container id of a conversation's box.
    pub async fn container(&self, name: &str) -> clawpen_domain::ContainerId {
        let wanted =
            spec::container_name(self.bridge.router.sandbox().instance(), &Self::key(name));
        let boxes = self
            .bridge
            .router
            .sandbox()
            .list()
            .await
            .unwrap_or_default();
        boxes
            .into_iter()
            .find(|b| b.name == wanted)
            .map(|b| b.id)
            .unwrap_or_else(|| panic!("no box for {name}"))
    }

    /// Run a command in a conversation's box (as the box user); returns (exit code, output).
    pub async fn exec(&self, name: &str, cmd: &[&str]) -> (i64, String) {
        let container = self.container(name).await;
        exec_in(
            self.bridge.router.sandbox().docker(),
            container.as_str(),
            cmd,
        )
        .await
    }

    /// How many zombie processes a conversation's box holds now (ended, never reaped).
    pub async fn zombies(&self, name: &str) -> usize {
        let count = "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l";
        let (_, out) = self.exec(name, &["sh", "-c", count]).await;
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("zombie count: {out:?}"))
    }

    /// What a conversation's box wrote to stderr (its log lines), as the engine kept it.
    pub async fn box_stderr(&self, name: &str) -> String {
        let container = self.container(name).await;
        let options = bollard::query_parameters::LogsOptions {
            stderr: true,
            ..Default::default()
        };
        let mut logs = self
            .bridge
            .router
            .sandbox()
            .docker()
            .logs(container.as_str(), Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&chunk.to_string());
        }
        text
    }

    /// Stop the bridge as a restart does, leaving its boxes running, and start it again on
    /// the same data directory.
    pub async fn restart(self) -> Self {
        let Self {
            dir,
            config,
            bridge,
            cleanup,
        } = self;
        let store = bridge.router.store().downgrade();
        bridge.shutdown().await;
        // In one process the old store closes as its last handle drops, which a loaded disk
        // can take seconds to finish (a real restart is a new process: the lock goes with
        // the old one). Opening waits a few seconds by itself; this waits longer, and says
        // who still holds it if that is not enough.
        let began = std::time::Instant::now();
        let bridge = loop {
            match Bridge::start(&config, Vec::new()).await {
                Ok(bridge) => break bridge,
                Err(clawpen::daemon::DaemonError::Store(clawpen::store::StoreError::Locked {
                    ..
                })) if began.elapsed() < RESTART_WAIT => {}
                Err(e) => panic!(
                    "restart after {:?}: {e}; {} handles of the old store alive; threads: {}",
                    began.elapsed(),
                    store.handles(),
                    thread_names()
                ),
            }
        };
        Self {
            dir,
            config,
            bridge,
            cleanup,
        }
    }

    /// Stop the bridge and remove its boxes and volumes.
    pub async fn stop(self) {
        let sandbox = self.bridge.router.sandbox().clone();
        self.bridge.shutdown().await;
        if let Err(e) = sandbox.remove_all().await {
            eprintln!("cleanup failed: {e}");
        }
    }
}

/// How long an in-process restart waits for the old store to close.
const RESTART_WAIT: Duration = Duration::from_secs(120);

/// This process's threads by name, with how many of each: who may still hold a store.
fn thread_names() -> String {
    let mut names = std::collections::BTreeMap::<String, usize>::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            *names.entry(comm.trim().to_string()).or_default() += 1;
        }
    }
    names
        .iter()
        .map(|(name, n)| format!("{name}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run a command in a container; returns (exit code, stdout and stderr).
pub async fn exec_in(docker: &bollard::Docker, container: &str, cmd: &[&str]) -> (i64, String) {
    let config = ExecConfig {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, config)
        .await
        .unwrap_or_else(|e| panic!("create exec: {e}"));
    let started = docker
        .start_exec(&exec.id, None::<StartExecOptions>)
        .await
        .unwrap_or_else(|e| panic!("start exec: {e}"));
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } = started {
        while let Some(Ok(chunk)) = output.next().await {
            text.push_str(&chunk.to_string());
        }
    }
    let code = docker
        .inspect_exec(&exec.id)
        .await
        .ok()
        .and_then(|i| i.exit_code)
        .unwrap_or(-1);
    (code, text)
}

/// Collect events until a reply is finished; returns the reply's messages joined.
pub async fn next_reply(events: &mut mpsc::Receiver<TerminalEvent>) -> String {
    let parts = next_reply_events(events).await;
    final_text(&parts)
}

/// Collect events until a reply is finished; returns them all.
pub async fn next_reply_events(events: &mut mpsc::Receiver<TerminalEvent>) -> Vec<TerminalEvent> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(REPLY_TIMEOUT, events.recv()).await {
            Ok(Some(TerminalEvent::Finished)) => return seen,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("reply stream closed after {seen:?}"),
            Err(_) => panic!("no complete reply within {REPLY_TIMEOUT:?}; saw {seen:?}"),
        }
    }
}

/// What the user sees after these events: each message's latest text, in order.
/// Edits carry a message's full text, so the last edit of each message is what shows.
pub fn final_text(events: &[TerminalEvent]) -> String {
    let mut messages: Vec<(String, String)> = Vec::new();
    for event in events {
        match event {
            TerminalEvent::Send { id, text } => messages.push((id.clone(), text.clone())),
            // An edit of a message sent before the events were collected counts as it.
            TerminalEvent::Edit { id, text } => match messages.iter_mut().find(|(m, _)| m == id) {
                Some(m) => m.1 = text.clone(),
                None => messages.push((id.clone(), text.clone())),
            },
            _ => {}
        }
    }
    messages
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Poll `check` every 200 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
