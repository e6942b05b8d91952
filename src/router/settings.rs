//! What the router is told to do: its limits and timers, read from the operator's
//! configuration by the daemon.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Clock;

/// Timing knobs of the router.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The most boxes alive at once.
    pub max_boxes: usize,
    /// Boxes kept started ahead of need for new conversations (0: none); they count
    /// against `max_boxes`.
    pub warm_pool: usize,
    /// How long an idle box lives.
    pub idle_timeout: Duration,
    /// How long a turn may go without any sign of life from its box.
    pub turn_stall: Duration,
    /// How long a turn may run in all.
    pub max_turn: Duration,
    /// How much one turn's reply may carry.
    pub reply_limits: ReplyLimits,
    /// The longest rate-limit wait a reply's delivery sits out (see `delivery`).
    pub max_rate_wait: Duration,
    /// Conversations' own models (`[conversations."KEY"] model`), by conversation key text,
    /// given to the agent with every turn; others use the box's default model.
    pub models: BTreeMap<String, String>,
    /// What the actors' timers (idle, stall, typing, retries) run on: tokio's clock, or in
    /// tests a [`ManualClock`](super::ManualClock).
    pub clock: Clock,
}

/// Caps on one turn's reply, so a box cannot flood its chat: past either, the rest is
/// dropped and the user told; a box that keeps writing far past them is stopped.
#[derive(Clone, Copy, Debug)]
pub struct ReplyLimits {
    /// Bytes of reply text.
    pub bytes: usize,
    /// Separate messages (the agent's `send_message`).
    pub messages: u32,
}
