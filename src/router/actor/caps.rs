//! How much of a turn's output reaches the chat: the reply's caps on size and on separate
//! messages, the little a stopped turn may still add, and when a box that keeps writing
//! past all that is stopped. Plain policy, no I/O.
//!
//! The size cap is kept by the reply's own text: once it holds the cap (and the note that
//! says so), nothing more is taken, which holds after a restart too.

use std::time::Duration;

use crate::router::ReplyLimits;

/// What a turn that was stopped (`/stop`) may still add to its reply: what was already on
/// its way when the agent got the word, and its word that it stopped; not the rest of a
/// long answer.
pub(super) const STOP_ALLOWANCE: usize = 16 * 1024;

/// How long a stopped turn's box has to end it before the box is stopped.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(15);

/// A box that goes on writing this many times its caps after reaching them is stopped.
const FLOOD_FACTOR: usize = 4;

/// How much of a text delta to take.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// All of it.
    All,
    /// Its first `keep` bytes, then the note that the reply reached its cap.
    Cut { keep: usize },
    /// None of it.
    Nothing,
}

/// What a turn's output has cost past its caps.
#[derive(Debug, Default)]
pub(super) struct Overflow {
    /// Text bytes taken since the turn was stopped.
    after_stop: usize,
    /// Separate messages the turn sent.
    messages: u32,
    /// Bytes and messages (each counted as `max_len` bytes) dropped past the caps.
    dropped: usize,
}

impl Overflow {
    /// How much of `delta` to take into a reply holding `len` bytes.
    pub(super) fn text(
        &mut self,
        limits: &ReplyLimits,
        len: usize,
        delta: &str,
        stopped: bool,
    ) -> Take {
        let room = if stopped {
            STOP_ALLOWANCE.saturating_sub(self.after_stop)
        } else {
            limits.bytes.saturating_sub(len)
        };
        let take = if delta.len() <= room {
            Take::All
        } else if stopped || len >= limits.bytes {
            Take::Nothing
        } else {
            Take::Cut {
                keep: floor_char_boundary(delta, room),
            }
        };
        let kept = match take {
            Take::All => delta.len(),
            Take::Cut { keep } => keep,
            Take::Nothing => 0,
        };
        if stopped {
            self.after_stop += kept;
        }
        self.dropped += delta.len() - kept;
        take
    }

    /// Whether to send one more separate message; the first one past the cap is
    /// `Some(false)`: its place goes to the note that says so.
    pub(super) fn message(&mut self, limits: &ReplyLimits, len: usize, stopped: bool) -> Send {
        if stopped {
            self.dropped += len;
            return Send::No;
        }
        self.messages = self.messages.saturating_add(1);
        match self.messages.cmp(&limits.messages) {
            std::cmp::Ordering::Less | std::cmp::Ordering::Equal => Send::Yes,
            std::cmp::Ordering::Greater => {
                self.dropped += len.max(1);
                if self.messages == limits.messages + 1 {
                    Send::Note
                } else {
                    Send::No
                }
            }
        }
    }

    /// Whether the box has written so far past its caps that it is to be stopped.
    pub(super) fn flooding(&self, limits: &ReplyLimits) -> bool {
        self.dropped > limits.bytes.saturating_mul(FLOOD_FACTOR)
    }
}

/// Whether a separate message goes out.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Send {
    /// Yes.
    Yes,
    /// No: the cap was reached just now, and the note saying so goes in its place.
    Note,
    /// No.
    No,
}

/// Said in the reply when it reaches its cap on size.
pub(super) fn size_note(limits: &ReplyLimits) -> String {
    format!(
        "\n\n✂️ This reply reached its limit of {} KB; the rest is not shown.",
        limits.bytes / 1024
    )
}

/// Said once when a turn reaches its cap on separate messages.
pub(super) fn messages_note(limits: &ReplyLimits) -> String {
    format!(
        "✂️ This answer sent {} separate messages, the most one answer may; the rest are not \
         shown.",
        limits.messages
    )
}

/// The largest index `<= at` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReplyLimits = ReplyLimits {
        bytes: 10,
        messages: 2,
    };

    #[test]
    fn text_is_taken_up_to_the_cap_on_a_char_boundary_then_not_at_all() {
        let mut overflow = Overflow::default();
        assert_eq!(overflow.text(&LIMITS, 0, "hello", false), Take::All);
        // 5 bytes of room; "wörld!" has ö at bytes 1..3: "wörl" is 5 bytes.
        assert_eq!(
            overflow.text(&LIMITS, 5, "wörld!", false),
            Take::Cut { keep: 5 }
        );
        assert_eq!(overflow.text(&LIMITS, 5, "wö", false), Take::All);
        // Once the reply holds its cap (the note puts it past), nothing more is taken.
        let full = 10 + size_note(&LIMITS).len();
        assert_eq!(overflow.text(&LIMITS, full, "x", false), Take::Nothing);
        assert!(!overflow.flooding(&LIMITS));
        for _ in 0..40 {
            overflow.text(&LIMITS, full, "x", false);
        }
        assert!(overflow.flooding(&LIMITS), "{overflow:?}");
    }

    #[test]
    fn a_stopped_turn_adds_only_a_word() {
        let mut overflow = Overflow::default();
        assert_eq!(overflow.text(&LIMITS, 0, "\n\n(stopped)", true), Take::All);
        let rest = "y".repeat(STOP_ALLOWANCE);
        assert_eq!(overflow.text(&LIMITS, 0, &rest, true), Take::Nothing);
        assert_eq!(overflow.message(&LIMITS, 3, true), Send::No);
    }

    #[test]
    fn separate_messages_stop_at_the_cap_with_one_note() {
        let mut overflow = Overflow::default();
        assert_eq!(overflow.message(&LIMITS, 3, false), Send::Yes);
        assert_eq!(overflow.message(&LIMITS, 3, false), Send::Yes);
        assert_eq!(overflow.message(&LIMITS, 3, false), Send::Note);
        assert_eq!(overflow.message(&LIMITS, 3, false), Send::No);
        assert!(messages_note(&LIMITS).contains("2 separate messages"));
    }
}
