//! What each conversation is doing, as `clawpen status` shows it and the control socket
//! carries it.

use serde::{Deserialize, Serialize};

/// What one conversation is doing, for `clawpen status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationStatus {
    /// The conversation key.
    pub conversation: String,
    /// Its container id, while it has a live box.
    pub container: Option<String>,
    /// What it is doing.
    pub state: ConversationState,
    /// Messages stored but not yet given to its agent.
    pub queued: usize,
    /// Model requests in the last minute.
    #[serde(default)]
    pub requests_last_minute: u32,
    /// Model tokens used today (UTC).
    #[serde(default)]
    pub tokens_today: u64,
    /// The box's requests (model calls, web fetches) being performed now.
    #[serde(default)]
    pub requests_in_flight: usize,
}

/// What a conversation is doing. Its text (shown by `clawpen status`, sent over the control
/// socket) is the plain words of each variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationState {
    /// Its actor is starting (after a restart, with stored work).
    #[serde(rename = "starting")]
    Starting,
    /// Waiting for one of the live-box slots.
    #[serde(rename = "waiting for a box slot")]
    WaitingForSlot,
    /// Holding a slot, its box being created or started (or queued for the engine: see
    /// `Sandbox::starts_waiting`).
    #[serde(rename = "starting its box")]
    StartingBox,
    /// Messages wait, but no box is attached (the engine is away, or a store write failed).
    #[serde(rename = "waiting for a box")]
    WaitingForBox,
    /// Its box is answering.
    #[serde(rename = "running a turn")]
    RunningTurn,
    /// Its box is up with nothing to do.
    #[serde(rename = "idle")]
    Idle,
    /// No box and nothing to do.
    #[serde(rename = "stopped")]
    Stopped,
}

impl std::fmt::Display for ConversationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Self::Starting => "starting",
            Self::WaitingForSlot => "waiting for a box slot",
            Self::StartingBox => "starting its box",
            Self::WaitingForBox => "waiting for a box",
            Self::RunningTurn => "running a turn",
            Self::Idle => "idle",
            Self::Stopped => "stopped",
        })
    }
}
