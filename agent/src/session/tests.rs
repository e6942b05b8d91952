//! Tests of the protocol state: sequence numbers, acknowledgements, resume replay,
//! turns, follow-ups and cancels.

use super::*;

fn message(text: &str) -> TurnMessage {
    TurnMessage {
        id: format!("m-{text}"),
        sender: "ann".into(),
        at: 0,
        text: text.into(),
        addressed: true,
        attachments: Vec::new(),
    }
}

fn turn(id: &str, texts: &[&str]) -> ToAgent {
    ToAgent::Turn {
        turn: id.into(),
        messages: texts.iter().map(|text| message(text)).collect(),
        options: Default::default(),
    }
}

fn delta(text: &str) -> EventBody {
    EventBody::TextDelta { text: text.into() }
}

/// Everything the session would write now.
fn drain(session: &mut Session) -> Vec<FromAgent> {
    std::iter::from_fn(|| session.next_output()).collect()
}

/// A session past its `Ready` line.
fn started() -> Session {
    let mut session = Session::new("echo");
    assert_eq!(
        drain(&mut session),
        vec![FromAgent::Ready {
            version: VERSION,
            provider: "echo".into()
        }]
    );
    session
}

fn seqs(lines: &[FromAgent]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|line| match line {
            FromAgent::Event(event) => Some(event.seq),
            _ => None,
        })
        .collect()
}

/// Run a whole turn `id` whose reply is `text`, returning what was written.
fn answer(session: &mut Session, id: &str, text: &str) -> Vec<FromAgent> {
    assert_eq!(
        session.handle(turn(id, &["q"])),
        Some(Action::Start(vec![message("q")], TurnOptions::default()))
    );
    session.emit(delta(text));
    session.emit(EventBody::Final);
    drain(session)
}

#[test]
fn events_are_numbered_from_one_and_written_once() {
    let mut session = started();
    let lines = answer(&mut session, "t1", "hi");
    assert_eq!(seqs(&lines), vec![1, 2]);
    assert!(
        matches!(&lines[0], FromAgent::Event(Event { turn, body, .. }) if turn == "t1" && *body == delta("hi"))
    );
    assert!(!session.has_output());
    assert_eq!(session.running(), None);
}

#[test]
fn ack_forgets_events_up_to_seq_and_resume_replays_the_rest_then_state() {
    let mut session = started();
    answer(&mut session, "t1", "a");
    answer(&mut session, "t2", "b");
    session.handle(ToAgent::Ack { seq: 2 });

    session.handle(ToAgent::Resume {
        version: VERSION,
        after: 0,
    });
    let lines = drain(&mut session);
    assert_eq!(seqs(&lines), vec![3, 4], "acked events are gone");
    assert_eq!(
        lines.last(),
        Some(&FromAgent::State {
            running: None,
            finished: vec!["t1".into(), "t2".into()],
            last_seq: 4,
            acked: Some(2),
            version: Some(VERSION)
        })
    );

    // Resume after 3: only 4 again.
    session.handle(ToAgent::Resume {
        version: VERSION,
        after: 3,
    });
    assert_eq!(seqs(&drain(&mut session)), vec![4]);
}

#[test]
fn state_waits_for_the_replay_but_not_for_later_events() {
    let mut session = started();
    session.handle(turn("t1", &["q"]));
    session.emit(delta("a"));
    session.emit(delta("b"));
    drain(&mut session);

    session.handle(ToAgent::Resume {
        version: VERSION,
        after: 1,
    });
    session.emit(delta("c"));
    let lines = drain(&mut session);
    assert!(matches!(&lines[0], FromAgent::Event(Event { seq: 2, .. })));
    assert_eq!(
        lines[1],
        FromAgent::State {
            running: Some("t1".into()),
            finished: vec![],
            last_seq: 2,
            acked: Some(0),
            version: Some(VERSION)
        }
    );
    assert!(matches!(&lines[2], FromAgent::Event(Event { seq: 3, .. })));
}

#[test]
fn requests_go_out_in_order_and_answers_are_routed() {
    let mut session = started();
    session.handle(turn("t1", &["q"]));
    session.emit(delta("a"));
    session.request(
        7,
        Request::WebFetch {
            url: "https://example.com".into(),
        },
        Some(64),
    );
    let lines = drain(&mut session);
    assert!(
        matches!(
            &lines[..],
            [FromAgent::Event(_), FromAgent::Request { id: 7, .. }]
        ),
        "{lines:?}"
    );
    let answer = session.receive(Line::Complete(
        br#"{"type":"response","id":7,"part":{"kind":"end"}}"#.to_vec(),
    ));
    assert_eq!(
        answer,
        Some(Action::Response {
            id: 7,
            part: ResponsePart::End
        })
    );
    let resumed = session.handle(ToAgent::Resume {
        version: VERSION,
        after: 0,
    });
    assert_eq!(resumed, Some(Action::Resumed(VERSION)));
}

#[test]
fn credits_waiting_together_for_one_request_are_one_line() {
    let mut session = started();
    session.credit(7, 32);
    session.credit(8, 32);
    session.credit(7, 32);
    assert_eq!(
        drain(&mut session),
        vec![
            FromAgent::Credit { id: 7, parts: 64 },
            FromAgent::Credit { id: 8, parts: 32 }
        ]
    );
    session.credit(7, 32);
    assert_eq!(
        drain(&mut session),
        vec![FromAgent::Credit { id: 7, parts: 32 }]
    );
}

#[test]
fn a_bridge_is_answered_in_the_lower_version_and_a_version_before_the_first_is_rejected() {
    let mut session = started();
    // A bridge of version 1 gets the same answer as ever, plus the agent's version,
    // which it does not read.
    let resumed = session.handle(ToAgent::Resume {
        version: 1,
        after: 0,
    });
    assert_eq!(resumed, Some(Action::Resumed(1)));
    let newer = session.handle(ToAgent::Resume {
        version: VERSION + 1,
        after: 0,
    });
    assert_eq!(newer, Some(Action::Resumed(VERSION)));
    assert!(matches!(
        &drain(&mut session)[..],
        [
            FromAgent::State {
                version: Some(VERSION),
                ..
            },
            FromAgent::State { .. }
        ]
    ));
    let refused = session.handle(ToAgent::Resume {
        version: 0,
        after: 0,
    });
    assert_eq!(refused, None);
    let lines = drain(&mut session);
    let [FromAgent::Rejected { reason }] = &lines[..] else {
        panic!("not rejected: {lines:?}")
    };
    assert_eq!(clawpen_protocol::spoken_version(reason), Some(VERSION));
}

#[test]
fn resent_turns_are_ignored_while_running_and_after_finishing() {
    let mut session = started();
    assert!(matches!(
        session.handle(turn("t1", &["q"])),
        Some(Action::Start(..))
    ));
    assert_eq!(session.handle(turn("t1", &["q"])), None);
    session.emit(EventBody::Final);
    assert_eq!(session.handle(turn("t1", &["q"])), None);
    assert!(matches!(
        session.handle(turn("t2", &["q"])),
        Some(Action::Start(..))
    ));
}

#[test]
fn finished_list_keeps_the_most_recent_turns() {
    let mut session = started();
    for n in 0..FINISHED_KEPT + 3 {
        answer(&mut session, &format!("t{n}"), "x");
    }
    session.handle(ToAgent::Resume {
        version: VERSION,
        after: session.last_seq(),
    });
    let Some(FromAgent::State { finished, .. }) = drain(&mut session).pop() else {
        panic!("no state")
    };
    assert_eq!(finished.len(), FINISHED_KEPT);
    assert_eq!(finished.first().map(String::as_str), Some("t3"));
    assert_eq!(
        finished.last().map(String::as_str),
        Some(format!("t{}", FINISHED_KEPT + 2).as_str())
    );
}

#[test]
fn a_turn_arriving_while_another_runs_is_a_follow_up_and_finishes_with_it() {
    let mut session = started();
    session.handle(turn("t1", &["a"]));
    assert_eq!(
        session.handle(turn("t2", &["b", "c"])),
        Some(Action::FollowUp(vec![message("b"), message("c")]))
    );
    assert_eq!(
        session.handle(turn("t2", &["b"])),
        None,
        "a resend of the merged turn"
    );
    session.emit(EventBody::Final);
    assert_eq!(session.handle(turn("t2", &["b"])), None);
    session.handle(ToAgent::Resume {
        version: VERSION,
        after: 0,
    });
    let Some(FromAgent::State { finished, .. }) = drain(&mut session).pop() else {
        panic!("no state")
    };
    assert_eq!(finished, vec!["t2".to_owned(), "t1".to_owned()]);
}

#[test]
fn follow_ups_are_never_dropped() {
    let mut session = started();
    // Nothing running: the follow-up starts its turn.
    assert_eq!(
        session.handle(ToAgent::FollowUp {
            turn: "t1".into(),
            messages: vec![message("a")]
        }),
        Some(Action::Start(vec![message("a")], TurnOptions::default()))
    );
    assert_eq!(session.running(), Some("t1"));
    // Another id while t1 runs: joins t1.
    assert_eq!(
        session.handle(ToAgent::FollowUp {
            turn: "t0".into(),
            messages: vec![message("b")]
        }),
        Some(Action::FollowUp(vec![message("b")]))
    );
    session.emit(EventBody::Final);
    // A follow-up for the finished t1 starts a turn with a fresh id.
    assert_eq!(
        session.handle(ToAgent::FollowUp {
            turn: "t1".into(),
            messages: vec![message("c")]
        }),
        Some(Action::Start(vec![message("c")], TurnOptions::default()))
    );
    assert_eq!(session.running(), Some("t1+2"));
    assert_eq!(
        session.handle(ToAgent::Cancel { turn: "t1".into() }),
        Some(Action::Stop)
    );
    session.handle(ToAgent::Resume {
        version: VERSION,
        after: 0,
    });
    let Some(FromAgent::State { finished, .. }) = drain(&mut session).pop() else {
        panic!("no state")
    };
    assert_eq!(finished, vec!["t1".to_owned(), "t1+2".to_owned()]);
}

#[test]
fn cancel_ends_the_running_turn_with_a_note() {
    let mut session = started();
    session.handle(turn("t1", &["q"]));
    session.emit(delta("par"));
    assert_eq!(
        session.handle(ToAgent::Cancel {
            turn: "other".into()
        }),
        None
    );
    assert_eq!(
        session.handle(ToAgent::Cancel { turn: "t1".into() }),
        Some(Action::Stop)
    );
    let bodies: Vec<EventBody> = drain(&mut session)
        .into_iter()
        .filter_map(|line| match line {
            FromAgent::Event(event) => Some(event.body),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![delta("par"), delta(STOPPED), EventBody::Final]);
    assert_eq!(session.running(), None);
    assert_eq!(session.handle(ToAgent::Cancel { turn: "t1".into() }), None);
}

#[test]
fn malformed_and_too_long_lines_are_rejected_and_ignored() {
    let mut session = started();
    assert_eq!(session.receive(Line::Complete(b"not json".to_vec())), None);
    assert_eq!(
        session.receive(Line::Complete(br#"{"type":"launch_missiles"}"#.to_vec())),
        None
    );
    assert_eq!(session.receive(Line::TooLong), None);
    assert_eq!(session.receive(Line::Complete(b"  \r".to_vec())), None);
    let huge = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
    assert_eq!(session.receive(Line::Complete(huge.into_bytes())), None);
    let lines = drain(&mut session);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in &lines {
        let FromAgent::Rejected { reason } = line else {
            panic!("{line:?}")
        };
        assert!(reason.chars().count() <= MAX_REASON + 1, "{reason}");
    }
    // And the session still works.
    let start = session.receive(Line::Complete(
        br#"{"type":"turn","turn":"t1","messages":[]}"#.to_vec(),
    ));
    assert_eq!(start, Some(Action::Start(vec![], TurnOptions::default())));
}

#[test]
fn the_unacked_buffer_is_bounded() {
    let mut session = started();
    session.handle(turn("t1", &["q"]));
    for _ in 0..MAX_UNACKED + 5 {
        session.emit(delta("x"));
    }
    assert_eq!(session.unacked.len(), MAX_UNACKED);
    // Never-written events that were forgotten are skipped, not waited for.
    assert!(matches!(
        session.next_output(),
        Some(FromAgent::Event(Event { seq: 6, .. }))
    ));
}

#[test]
fn heartbeats_do_not_pile_up_behind_blocked_output() {
    let mut session = started();
    session.heartbeat();
    session.heartbeat();
    assert_eq!(drain(&mut session), vec![FromAgent::Heartbeat]);
    session.heartbeat();
    assert_eq!(drain(&mut session), vec![FromAgent::Heartbeat]);
}

#[test]
fn events_without_a_running_turn_are_ignored() {
    let mut session = started();
    session.emit(delta("stray"));
    assert_eq!(session.last_seq(), 0);
    assert!(!session.has_output());
}

#[test]
fn truncate_cuts_on_char_boundaries() {
    assert_eq!(truncate("héllo", 2), "hé…");
    assert_eq!(truncate("hé", 2), "hé");
}
