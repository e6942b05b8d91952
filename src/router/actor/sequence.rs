//! Which of a box's events the bridge takes: exactly the agent's events, in order, once each.
//!
//! After every attach the bridge sends `Resume { after }` and the agent replays what it
//! holds after `after`, then answers `State`. But the agent keeps streaming while that
//! `Resume` travels, so the first events on a new attach can be *later* events, written
//! before the agent moved its cursor back; the replay follows them. Taking such an event
//! would skip the text between the last acknowledged event and it, and then drop the replay
//! as "already seen": the reply would be garbled. So an event is taken only when its
//! sequence number is the next one; anything further ahead is a gap, left unacknowledged
//! for the replay to bring again in order.
//!
//! The base (the last acknowledged seq) is known when the bridge resumes a turn it
//! recorded. When it adopts a box without a record it is not: events are then ignored until
//! the agent's `State` says which seq it had acknowledged, and the bridge resumes from there.
//!
//! A plain policy with no I/O, so every rule is tested directly below.

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next event in order: process it, then acknowledge it.
    Take,
    /// Already processed (a replay): ignore it.
    Seen,
    /// Ahead of the next expected one, or the base is not known yet: ignore it without
    /// acknowledging; it comes again in order after the `Resume` in flight.
    Gap,
}

/// What the agent's `State` (its answer to a `Resume`) asks of the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterState {
    /// In step: nothing to do.
    InStep,
    /// Events the bridge has not processed are still held by the agent: send
    /// `Resume { after }` so they are replayed in order.
    Replay {
        /// The last seq the bridge processed.
        after: u64,
    },
    /// The agent's numbering restarted (a new process in the box): it never received the
    /// running turn, whose events are gone with the old process.
    AgentRestarted,
    /// Events the bridge never processed are gone from the agent (it forgot them, or it
    /// is an agent too old to say): acknowledge up to `seq` and go on from there.
    Skip {
        /// The seq to acknowledge.
        seq: u64,
        /// How many events were lost.
        lost: u64,
    },
}

/// The sequencing state of one attached box.
#[derive(Debug)]
pub(crate) struct Sequencer {
    /// The highest seq processed and acknowledged; `None` until known (an adopted box).
    acked: Option<u64>,
}

impl Sequencer {
    /// After attaching with `Resume { after: base }`, for a turn whose progress was
    /// recorded up to `base` (0 for a box just started).
    pub(crate) fn known(base: u64) -> Self {
        Self { acked: Some(base) }
    }

    /// After attaching to a box left by an earlier bridge without a record of its events.
    pub(crate) fn unknown() -> Self {
        Self { acked: None }
    }

    /// The highest seq processed, if known.
    pub(crate) fn acked(&self) -> Option<u64> {
        self.acked
    }

    /// Whether to take the event numbered `seq`.
    pub(crate) fn check(&self, seq: u64) -> Verdict {
        match self.acked {
            None => Verdict::Gap,
            Some(acked) if seq <= acked => Verdict::Seen,
            Some(acked) if seq == acked + 1 => Verdict::Take,
            Some(_) => Verdict::Gap,
        }
    }

    /// Records that the event numbered `seq` (which [`Sequencer::check`] said to take) was
    /// processed.
    pub(crate) fn took(&mut self, seq: u64) {
        self.acked = Some(seq);
    }

    /// Forgets that events after `seq` were processed (they could not be stored); they are
    /// taken again when the box replays them.
    pub(crate) fn rewind(&mut self, seq: u64) {
        if let Some(acked) = self.acked.as_mut() {
            *acked = (*acked).min(seq);
        }
    }

    /// The agent answered a `Resume`: everything it replayed came before this line.
    /// `last_seq` is its highest seq; `agent_acked` what it had acknowledged (absent from
    /// older agents).
    pub(crate) fn on_state(&mut self, last_seq: u64, agent_acked: Option<u64>) -> AfterState {
        let acked = match (self.acked, agent_acked) {
            (Some(acked), _) if last_seq < acked => {
                // Seqs start at 1 in every agent process: this one is new.
                self.acked = Some(last_seq);
                return AfterState::AgentRestarted;
            }
            // Never below what the agent already forgot: those cannot come again.
            (Some(acked), Some(agent)) => acked.max(agent),
            (Some(acked), None) => acked,
            (None, Some(agent)) => agent,
            (None, None) => last_seq,
        };
        self.acked = Some(acked);
        if acked >= last_seq {
            return AfterState::InStep;
        }
        if agent_acked.is_some() {
            // The agent holds every event after what it had acknowledged, and that is at
            // most `acked`: whatever the bridge has not processed can come again.
            return AfterState::Replay { after: acked };
        }
        self.acked = Some(last_seq);
        AfterState::Skip {
            seq: last_seq,
            lost: last_seq - acked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds events in arrival order; returns the seqs taken.
    fn feed(seq: &mut Sequencer, arrivals: &[u64]) -> Vec<u64> {
        let mut taken = Vec::new();
        for &n in arrivals {
            if seq.check(n) == Verdict::Take {
                seq.took(n);
                taken.push(n);
            }
        }
        taken
    }

    #[test]
    fn events_are_taken_in_order_once() {
        let mut seq = Sequencer::known(0);
        assert_eq!(feed(&mut seq, &[1, 2, 2, 3, 1]), vec![1, 2, 3]);
        assert_eq!(seq.acked(), Some(3));
    }

    #[test]
    fn later_events_before_the_replay_wait_for_it() {
        // Recorded up to 38; the agent had written up to 45 into the dead attach and keeps
        // going: 46 and 47 arrive before it handles the Resume, then the replay 39..=47.
        let mut seq = Sequencer::known(38);
        let mut arrivals = vec![46, 47];
        arrivals.extend(39..=48);
        assert_eq!(feed(&mut seq, &arrivals), (39..=48).collect::<Vec<_>>());
        assert_eq!(seq.on_state(48, Some(38)), AfterState::InStep);
    }

    #[test]
    fn an_adopted_box_resumes_from_what_the_agent_had_acknowledged() {
        let mut seq = Sequencer::unknown();
        // Nothing is taken before the agent says where it stands.
        assert_eq!(feed(&mut seq, &[12, 13, 10, 11, 12, 13]), Vec::<u64>::new());
        assert_eq!(seq.on_state(13, Some(9)), AfterState::Replay { after: 9 });
        assert_eq!(
            feed(&mut seq, &[14, 10, 11, 12, 13, 14]),
            vec![10, 11, 12, 13, 14]
        );
        assert_eq!(seq.on_state(14, Some(9)), AfterState::InStep);
    }

    #[test]
    fn an_adopted_box_with_nothing_unacknowledged_is_in_step() {
        let mut seq = Sequencer::unknown();
        assert_eq!(seq.on_state(7, Some(7)), AfterState::InStep);
        assert_eq!(seq.check(8), Verdict::Take);
    }

    #[test]
    fn a_new_agent_process_restarts_the_numbering() {
        let mut seq = Sequencer::known(38);
        assert_eq!(seq.on_state(0, Some(0)), AfterState::AgentRestarted);
        assert_eq!(feed(&mut seq, &[1, 2]), vec![1, 2]);
    }

    #[test]
    fn events_the_agent_still_holds_are_asked_for_again_however_often() {
        // Processed up to 5, then storing 6 failed: the agent holds 6..=9 until they are.
        let mut seq = Sequencer::known(6);
        seq.rewind(5);
        for _ in 0..10 {
            assert_eq!(seq.on_state(9, Some(5)), AfterState::Replay { after: 5 });
        }
        assert_eq!(feed(&mut seq, &[6, 7, 8, 9]), vec![6, 7, 8, 9]);
        assert_eq!(seq.on_state(9, Some(5)), AfterState::InStep);
    }

    #[test]
    fn events_the_agent_forgot_are_skipped_not_awaited() {
        // The agent acknowledged up to 20 to someone else (or dropped them): never wait.
        let mut seq = Sequencer::known(5);
        assert_eq!(seq.on_state(25, Some(20)), AfterState::Replay { after: 20 });
        let mut old = Sequencer::known(5);
        assert_eq!(old.on_state(9, None), AfterState::Skip { seq: 9, lost: 4 });
        let mut adopted_old = Sequencer::unknown();
        assert_eq!(adopted_old.on_state(9, None), AfterState::InStep);
        assert_eq!(adopted_old.acked(), Some(9));
    }
}
