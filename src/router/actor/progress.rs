//! How much of a running turn's reply is stored, and what goes to the store next.
//!
//! Hot path: every text event of every streaming reply passes here; nothing in it may do
//! I/O or copy more than the new text. The reply is shown as the box sends it, but the
//! box's events are acknowledged only once their text is stored, in chunks: while one
//! chunk is being stored, the events after it gather into the next, so a fast stream costs
//! one write per disk flush rather than one per event (see `store::commit`).
//!
//! A plain policy with no I/O, so every rule is tested directly below.

/// One chunk of reply text on its way to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    /// The box event whose text it ends with.
    pub seq: u64,
    /// The text's length where it begins.
    pub at: usize,
    /// What follows there.
    pub text: String,
}

/// The reply text of a running turn, as shown and as stored.
#[derive(Debug)]
pub(super) struct Progress {
    /// The reply as the box sent it so far (shown at once, stored soon).
    text: String,
    /// The reply as stored: what a restart resumes from.
    stored: String,
    /// The last box event whose effect is stored, with everything before it.
    stored_seq: u64,
    /// Where the next chunk begins: the shortest `text` was since the last chunk was cut
    /// (below its end after a withdrawal).
    low: usize,
    /// The last event that changed the text and is in no chunk yet.
    dirty: Option<u64>,
    /// The chunk being stored.
    in_flight: Option<Chunk>,
    /// Side effects (status lines, messages, files) of events up to this seq were performed
    /// already; when a failed store makes the box replay them, they are not repeated.
    sides_done: u64,
}

impl Progress {
    /// A reply whose text `stored` is stored as of box event `stored_seq`.
    pub(super) fn new(stored: String, stored_seq: u64) -> Self {
        Self {
            low: stored.len(),
            text: stored.clone(),
            stored,
            stored_seq,
            dirty: None,
            in_flight: None,
            sides_done: 0,
        }
    }

    /// The reply text so far.
    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// The last box event whose effect is stored.
    pub(super) fn stored_seq(&self) -> u64 {
        self.stored_seq
    }

    /// Whether the side effects of event `seq` were performed already.
    pub(super) fn side_done(&self, seq: u64) -> bool {
        seq <= self.sides_done
    }

    /// Whether a chunk is being stored.
    pub(super) fn storing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether text changed since the last chunk was cut.
    pub(super) fn dirty(&self) -> bool {
        self.dirty.is_some()
    }

    /// Event `seq` added `text`.
    pub(super) fn push(&mut self, seq: u64, text: &str) {
        self.text.push_str(text);
        self.dirty = Some(seq);
    }

    /// Event `seq` withdrew the last `bytes` bytes (never splitting a char); returns them.
    pub(super) fn retract(&mut self, seq: u64, bytes: u64) -> String {
        let mut keep = self
            .text
            .len()
            .saturating_sub(usize::try_from(bytes).unwrap_or(usize::MAX));
        while !self.text.is_char_boundary(keep) {
            keep -= 1;
        }
        let removed = self.text.split_off(keep);
        self.low = self.low.min(keep);
        self.dirty = Some(seq);
        removed
    }

    /// Text the bridge adds of its own (an error note), stored with the next chunk or the
    /// turn's end.
    pub(super) fn note(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// The answer starts over (the turn is sent to the box again): its text so far goes.
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.low = 0;
    }

    /// The box's agent is a new process and the store dropped the turn's text (see
    /// `Store::restart_turn`): nothing is stored, as of the new agent's event `seq`.
    pub(super) fn restarted(&mut self, seq: u64) {
        self.stored.clear();
        self.stored_seq = seq;
        self.low = 0;
        self.in_flight = None;
    }

    /// The next chunk to store, if text changed and no chunk is being stored.
    pub(super) fn cut(&mut self) -> Option<Chunk> {
        if self.in_flight.is_some() {
            return None;
        }
        let seq = self.dirty.take()?;
        let at = self.low.min(self.text.len());
        let chunk = Chunk {
            seq,
            at,
            text: self.text.get(at..).unwrap_or_default().to_string(),
        };
        self.low = self.text.len();
        self.in_flight = Some(chunk.clone());
        Some(chunk)
    }

    /// The chunk being stored is durable.
    pub(super) fn stored_ok(&mut self) {
        if let Some(chunk) = self.in_flight.take() {
            self.stored.truncate(chunk.at.min(self.stored.len()));
            self.stored.push_str(&chunk.text);
            self.stored_seq = chunk.seq;
        }
    }

    /// Storing failed: back to the stored text (returned, to show it again), with the events
    /// after `stored_seq` to be replayed by the box. Their side effects, up to `processed`,
    /// were performed and are not repeated.
    pub(super) fn stored_failed(&mut self, processed: u64) -> &str {
        self.text.clone_from(&self.stored);
        self.low = self.text.len();
        self.dirty = None;
        self.in_flight = None;
        self.sides_done = self.sides_done.max(processed);
        &self.text
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;

    /// Folds chunks as the store does.
    fn fold(chunks: &[Chunk]) -> String {
        let mut text = String::new();
        for chunk in chunks {
            text.truncate(chunk.at);
            text.push_str(&chunk.text);
        }
        text
    }

    #[test]
    fn events_during_a_store_gather_into_the_next_chunk() {
        let mut progress = Progress::new(String::new(), 0);
        progress.push(1, "Hel");
        let first = progress.cut().unwrap();
        assert_eq!(
            first,
            Chunk {
                seq: 1,
                at: 0,
                text: "Hel".into()
            }
        );
        progress.push(2, "lo");
        progress.push(3, ", world");
        // One chunk at a time.
        assert_eq!(progress.cut(), None);
        progress.stored_ok();
        assert_eq!(progress.stored_seq(), 1);
        let second = progress.cut().unwrap();
        assert_eq!(
            second,
            Chunk {
                seq: 3,
                at: 3,
                text: "lo, world".into()
            }
        );
        progress.stored_ok();
        assert_eq!(fold(&[first, second]), "Hello, world");
        assert!(!progress.dirty() && !progress.storing());
        assert_eq!(progress.cut(), None);
    }

    #[test]
    fn a_withdrawal_moves_the_next_chunk_back() {
        let mut progress = Progress::new("The answer is".into(), 4);
        progress.push(5, " forty");
        let a = progress.cut().unwrap();
        // Withdrawn while that chunk is stored: reaching into it, and into the stored text.
        assert_eq!(progress.retract(6, 8), "is forty");
        progress.push(7, "is 42");
        progress.stored_ok();
        let b = progress.cut().unwrap();
        assert_eq!(b.at, "The answer ".len());
        let mut text = "The answer is".to_string();
        for chunk in [a, b] {
            text.truncate(chunk.at);
            text.push_str(&chunk.text);
        }
        assert_eq!(text, "The answer is 42");
        assert_eq!(progress.text(), "The answer is 42");
    }

    #[test]
    fn a_failed_store_goes_back_to_the_stored_text_and_keeps_side_effects_done() {
        let mut progress = Progress::new("kept".into(), 2);
        progress.push(3, " lost");
        progress.cut().unwrap();
        progress.push(4, " too");
        assert_eq!(progress.stored_failed(5), "kept");
        assert_eq!(progress.stored_seq(), 2);
        assert!(!progress.dirty() && !progress.storing());
        assert!(progress.side_done(5) && !progress.side_done(6));
        // The replay brings the same events again.
        progress.push(3, " lost");
        let chunk = progress.cut().unwrap();
        assert_eq!(
            chunk,
            Chunk {
                seq: 3,
                at: 4,
                text: " lost".into()
            }
        );
    }

    #[test]
    fn a_cleared_answer_is_stored_from_the_start() {
        let mut progress = Progress::new("old".into(), 9);
        progress.clear();
        progress.push(10, "new");
        assert_eq!(
            progress.cut().unwrap(),
            Chunk {
                seq: 10,
                at: 0,
                text: "new".into()
            }
        );
        // A new agent process: nothing stored, numbering from its seq.
        progress.stored_ok();
        progress.restarted(1);
        assert_eq!(progress.stored_seq(), 1);
        progress.push(2, "!");
        assert_eq!(progress.cut().unwrap().at, 0);
    }

    #[test]
    fn withdrawals_never_split_a_char() {
        let mut progress = Progress::new(String::new(), 0);
        progress.push(1, "déjà");
        assert_eq!(progress.retract(2, 1), "à");
        assert_eq!(progress.retract(3, 1), "j");
        assert_eq!(progress.retract(4, 100), "dé");
        assert_eq!(progress.text(), "");
    }
}
