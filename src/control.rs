//! The daemon's local control socket: `clawpen chat` and `clawpen status` go through the
//! running daemon, because the store has one owner.
//!
//! Line-delimited JSON over a Unix socket in the data directory (mode 0600). A connection
//! starts with one [`Request`]; a `chat` connection is then the terminal adapter's
//! ([`clawpen_adapters::terminal::session`]): [`ChatLine`]s from the client and
//! [`TerminalEvent`]s back.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use clawpen_adapters::terminal::{self, TerminalAdapter, PLATFORM};
use clawpen_adapters::ConversationKey;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::component::Job;
use crate::config::Config;
use crate::router::{ConversationStatus, Router};

/// The first line of a control connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// What the daemon is doing.
    Status,
    /// Talk to a terminal conversation.
    Chat {
        /// The conversation's name (the chat id of `terminal:<name>`).
        conversation: String,
    },
}

/// Answer to [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Live conversations.
    pub conversations: Vec<ConversationStatus>,
    /// Boxes alive now.
    pub live_boxes: usize,
    /// The cap on live boxes.
    pub max_boxes: usize,
    /// What keeps the daemon from working fully (the store cannot write); `None` when
    /// nothing does.
    #[serde(default)]
    pub degraded: Option<String>,
    /// What keeps an adapter from working fully (`telegram: a webhook is set …`).
    #[serde(default)]
    pub adapters: Vec<String>,
    /// Warm pool boxes ready for new conversations (they count among `live_boxes`).
    #[serde(default)]
    pub warm_boxes: usize,
    /// How many warm boxes the pool keeps ready when it can (`warm_pool`).
    #[serde(default)]
    pub warm_pool: usize,
    /// Conversations waiting for a live-box slot (the fair queue of the cap).
    #[serde(default)]
    pub waiting_for_slot: usize,
    /// Box starts queued for the engine, beyond those under way.
    #[serde(default)]
    pub starts_waiting: usize,
}

// The chat side of the socket is the terminal adapter's; these names stay here for the
// clients that know them from here.
pub use clawpen_adapters::terminal::inbound::message as terminal_inbound;
pub use clawpen_adapters::terminal::{ChatLine, TerminalEvent};

/// The control socket as a daemon component: it serves until stopped; its chat sessions
/// end once the reply under way is complete.
pub fn component(config: &Config, router: Router, terminal: Arc<TerminalAdapter>) -> Arc<Job> {
    let (path, max_boxes) = (config.control_socket(), router.max_boxes());
    Job::new("control socket", move |stop, tasks| async move {
        if let Err(e) = serve(&path, router, terminal, max_boxes, stop, tasks).await {
            tracing::error!(path = %path.display(), error = %e, "control socket failed");
        }
    })
}

/// Serve the control socket until `shutdown`.
pub async fn serve(
    path: &Path,
    router: Router,
    terminal: Arc<TerminalAdapter>,
    max_boxes: usize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> std::io::Result<()> {
    // A socket left by a killed daemon: nobody answers on it, so it can go.
    if path.exists() && UnixStream::connect(path).await.is_err() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let (router, terminal, shutdown) = (router.clone(), terminal.clone(), shutdown.clone());
        tracker.spawn(async move {
            if let Err(e) = handle(stream, router, terminal, max_boxes, shutdown).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

async fn handle(
    stream: UnixStream,
    router: Router,
    terminal: Arc<TerminalAdapter>,
    max_boxes: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(first) = lines.next_line().await? else {
        return Ok(());
    };
    let request: Request = match serde_json::from_str(&first) {
        Ok(request) => request,
        Err(e) => {
            write
                .write_all(format!("{{\"error\":{:?}}}\n", e.to_string()).as_bytes())
                .await?;
            return Ok(());
        }
    };
    match request {
        Request::Status => {
            let reply = StatusReply {
                conversations: router.status(),
                live_boxes: router.live_boxes(),
                max_boxes,
                degraded: router.store().trouble(),
                adapters: router.adapter_troubles(),
                warm_boxes: router.warm_boxes(),
                warm_pool: router.warm_pool(),
                waiting_for_slot: router.conversations_waiting(),
                starts_waiting: router.sandbox().starts_waiting(),
            };
            let mut line = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
            line.push(b'\n');
            write.write_all(&line).await
        }
        Request::Chat { conversation } => {
            let key = ConversationKey::new(PLATFORM, conversation);
            terminal::session::serve(&terminal, &router, &key, lines, write, shutdown).await
        }
    }
}

/// Ask a running daemon for its status; `None` when no daemon answers.
pub async fn query_status(path: &Path) -> Option<StatusReply> {
    let stream = UnixStream::connect(path).await.ok()?;
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_vec(&Request::Status).ok()?;
    request.push(b'\n');
    write.write_all(&request).await.ok()?;
    let line = BufReader::new(read).lines().next_line().await.ok()??;
    serde_json::from_str(&line).ok()
}
