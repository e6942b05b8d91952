//! The store reads what the last release wrote.
//!
//! `fixtures/last-release.jsonl` is every sled entry of a store written by the release
//! before chunked reply text and the store's own reply records, caught mid-work: a group
//! thread with a running turn (its text kept whole in the turn record, two messages shown),
//! chatter kept as context, a message that arrived during the turn, a direct chat whose
//! finished reply was not fully shown yet, and the Telegram offset. Each line is one entry:
//! its tree, its key in hex, and its value as text (or in hex when it is not text).
//!
//! Records only ever gain optional fields, so the format version stays; when a change
//! cannot be read this way, the format version goes up and a migration joins this test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first unexpected error"
)]

use clawpen_adapters::reply::ReplyState;
use clawpen_domain::{ConversationKey, MessageRef, TurnId};

use super::{InboundState, Store, FORMAT_VERSION};

const FIXTURE: &str = include_str!("fixtures/last-release.jsonl");

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A sled database in `dir` holding exactly the fixture's entries.
fn restore(dir: &std::path::Path) {
    let db = sled::open(dir).unwrap();
    for line in FIXTURE.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let tree = db.open_tree(entry["tree"].as_str().unwrap()).unwrap();
        let value = match entry.get("value").and_then(|v| v.as_str()) {
            Some(text) => text.as_bytes().to_vec(),
            None => unhex(entry["value_hex"].as_str().unwrap()),
        };
        tree.insert(unhex(entry["key"].as_str().unwrap()), value)
            .unwrap();
    }
    db.flush().unwrap();
}

#[test]
fn a_store_written_by_the_last_release_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    restore(dir.path());
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(FORMAT_VERSION, 1);
    assert_eq!(store.instance_id(), "060f7c81d42a0015");
    assert_eq!(store.cursor("telegram").unwrap().as_deref(), Some("77"));
    assert_eq!(store.conversations().unwrap().len(), 2);

    // The group's running turn: its text, how far it was acknowledged, what it answers.
    let group = ConversationKey::new("telegram", "-500").with_thread("9");
    let t1 = TurnId::from("t1");
    let turns = store.turns().unwrap();
    assert_eq!(turns.len(), 1);
    let turn = &turns[0];
    assert_eq!((turn.turn.clone(), turn.last_acked), (t1.clone(), 12));
    assert_eq!(turn.text, "one two three four five");
    assert_eq!(turn.reply_to, Some(MessageRef("1001".into())));
    assert_eq!(turn.inbound, vec!["1002".to_string(), "1001".to_string()]);

    // What the platform shows of it: two messages, the first sealed.
    let shown = store.delivery(&group, &t1).unwrap().unwrap().shown.unwrap();
    let shown = ReplyState::from(shown);
    let ids: Vec<_> = shown.parts.iter().map(|p| p.message.clone()).collect();
    assert_eq!(
        ids,
        vec![
            Some(MessageRef("2001".into())),
            Some(MessageRef("2002".into()))
        ]
    );
    assert_eq!(shown.text, "one two three four");
    assert!(shown.parts[0].sealed && !shown.parts[1].sealed);

    // The inbound log: in the turn, kept as context, arrived meanwhile.
    let states: Vec<_> = store
        .pending_inbound(&group)
        .unwrap()
        .into_iter()
        .map(|e| (e.inbound.id, e.state))
        .collect();
    let in_t1 = InboundState::InTurn { turn: t1.clone() };
    assert_eq!(
        states,
        vec![
            ("1001".to_string(), in_t1.clone()),
            ("1002".to_string(), in_t1),
            ("1003".to_string(), InboundState::Pending),
        ]
    );

    // The direct chat's finished reply, still to be shown in full.
    let pending = store.pending_deliveries().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].turn, TurnId::from("t0"));
    assert_eq!(pending[0].final_text.as_deref(), Some("the whole answer"));

    // And the running turn goes on in this release's format, then ends.
    store
        .append_text(&group, &t1, 13, turn.text.len(), " six")
        .unwrap();
    let mut record = store.turn(&group).unwrap().unwrap();
    assert_eq!(record.text, "one two three four five six");
    assert_eq!(record.last_acked, 13);
    record.text.push_str(" seven");
    store.complete_turn(&record).unwrap();
    assert!(store.turns().unwrap().is_empty());
    let done = store.delivery(&group, &t1).unwrap().unwrap();
    assert_eq!(
        done.final_text.as_deref(),
        Some("one two three four five six seven")
    );
    assert!(
        done.shown.is_some(),
        "the messages shown are kept for the edits"
    );
}
