//! Reading updates: the shapes that crash teloxide, new entity types, and a property test
//! that feeds the whole reading path (wire types, then the translation to an inbound
//! message) arbitrary JSON built around real updates. It must never panic.
//!
//! The suite runs [`DEFAULT_CASES`] cases; a long run is
//! `CLAWPEN_FUZZ_CASES=1000000 cargo test -p clawpen-adapters fuzz -- --nocapture`, and
//! `CLAWPEN_FUZZ_SEED` repeats one.

use serde_json::{json, Map, Value};

use super::super::inbound::{self, Identity, Translated};
use super::*;

/// Cases of the property test in an ordinary test run.
const DEFAULT_CASES: u64 = 3_000;

fn me() -> Identity {
    Identity {
        id: 999,
        username: "ClawBot".into(),
    }
}

fn user(id: i64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": "Ann"})
}

/// Real updates of every shape the bridge meets, to mutate.
fn templates() -> Vec<Value> {
    let private = json!({"id": 5, "type": "private", "first_name": "Ann"});
    let group = json!({"id": -100_123, "type": "supergroup", "title": "Team", "is_forum": true});
    let base = |chat: &Value, extra: Value| {
        let mut m = json!({"message_id": 10, "date": 1_700_000_000, "chat": chat, "from": user(5)});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        json!({"update_id": 1, "message": m})
    };
    vec![
        base(&private, json!({"text": "hello"})),
        base(
            &group,
            json!({"text": "@ClawBot at 10:00", "message_thread_id": 7, "is_topic_message": true,
                "entities": [{"type": "mention", "offset": 0, "length": 8},
                    {"type": "date_time", "offset": 12, "length": 5, "unix_time": 1},
                    {"type": "text_mention", "offset": 0, "length": 3, "user": user(999)}]}),
        ),
        base(
            &private,
            json!({"caption": "look", "photo": [
                {"file_id": "a", "file_unique_id": "ua", "width": 90, "height": 90, "file_size": 9},
                {"file_id": "b", "file_unique_id": "ub", "width": 800, "height": 600}]}),
        ),
        base(
            &private,
            json!({"document": {"file_id": "d", "file_unique_id": "ud", "file_name": "a.pdf"}}),
        ),
        base(
            &private,
            json!({"sticker": {"file_id": "s", "file_unique_id": "us", "type": "regular",
                "width": 1, "height": 1, "is_animated": true, "is_video": true}}),
        ),
        base(
            &group,
            json!({"text": "sure", "reply_to_message": {"message_id": 3, "date": 1,
                "chat": group, "from": {"id": 999, "is_bot": true, "first_name": "Claw"}}}),
        ),
        base(&group, json!({"migrate_to_chat_id": -100_456})),
        base(
            &group,
            json!({"text": "anon", "sender_chat": {"id": -100_123, "type": "supergroup"}}),
        ),
        json!({"update_id": 2, "message_reaction": {"chat": group, "message_id": 3, "date": 1,
            "old_reaction": [], "new_reaction": [{"type": "emoji", "emoji": "👍"}]}}),
        json!({"update_id": 3, "edited_message": {"message_id": 1}}),
        json!({"update_id": 4, "something_new": {"x": 1}}),
    ]
}

/// The whole reading path of an update, as `handle_update` runs it before any I/O.
fn read_all(value: &Value) -> &'static str {
    match read(value) {
        Update::Message(message) => {
            let _ = inbound::is_service(&value["message"]);
            match inbound::translate(&message, &me(), Some("claw")) {
                Translated::Message(..) => "message",
                Translated::Skip(_) => "skip",
                Translated::Unusable(_) => "unusable",
            }
        }
        Update::Ignored(_) => "ignored",
        Update::Unknown(_) => "unknown",
        Update::Malformed(_) => "malformed",
    }
}

#[test]
fn shapes_that_crash_teloxide_are_read_or_refused() {
    let kinds: Vec<&str> = templates().iter().map(read_all).collect();
    assert_eq!(
        kinds,
        [
            "message", "message", "message", "message", "unusable", "message", "unusable",
            "message", "ignored", "ignored", "unknown"
        ]
    );
    let malformed = [
        json!(null),
        json!([1, 2]),
        json!({"update_id": 1, "message": {"message_id": "ten", "chat": {"id": 5}}}),
        json!({"update_id": 1, "message": {"message_id": 1}}),
        json!({"update_id": 1, "message": 17}),
    ];
    for value in malformed {
        assert_eq!(read_all(&value), "malformed", "{value}");
    }
}

#[test]
fn odd_optional_fields_read_as_absent() {
    let value = json!({"update_id": 1, "message": {"message_id": 1, "chat": {"id": 5},
        "from": "nobody", "date": "today", "text": "still read", "entities": {"x": 1},
        "photo": [{"file_id": 3}, {"file_id": "p", "width": 2, "height": 2}],
        "document": {"file_size": -1, "file_id": "d"}}});
    let Update::Message(message) = read(&value) else {
        panic!("not read: {value}");
    };
    assert_eq!(message.text.as_deref(), Some("still read"));
    assert!(message.from.is_none() && message.date == 0);
    assert_eq!(message.photo.iter().filter(|p| p.0.is_some()).count(), 1);
    let document = message
        .document
        .as_ref()
        .map(|d| (d.file_id.as_str(), d.file_size));
    assert_eq!(document, Some(("d", None)));
}

/// splitmix64: a small, seedable generator, enough to drive the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Field names the reading path looks at, so mutations hit them often.
const FIELDS: &[&str] = &[
    "update_id",
    "message",
    "message_id",
    "date",
    "chat",
    "id",
    "type",
    "from",
    "sender_chat",
    "text",
    "caption",
    "entities",
    "caption_entities",
    "offset",
    "length",
    "user",
    "photo",
    "document",
    "voice",
    "audio",
    "video",
    "file_id",
    "file_unique_id",
    "file_size",
    "file_name",
    "mime_type",
    "width",
    "height",
    "reply_to_message",
    "message_thread_id",
    "is_topic_message",
    "migrate_to_chat_id",
    "is_bot",
    "first_name",
    "username",
    "new_chat_members",
    "sticker",
    "is_animated",
    "is_video",
    "message_reaction",
    "actor_chat",
];

fn any_string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "",
        "@ClawBot",
        "@clawbot,",
        "/stop",
        "/reset@ClawBot x",
        "claw",
        " ",
        "\n",
        "😀",
        "é",
        "\u{200b}",
        "\u{0}",
        "```",
        "<b>",
        "&",
        "private",
        "supergroup",
        "text_mention",
        "date_time",
        "-100",
        "99999999999999999999",
    ];
    (0..rng.below(4))
        .map(|_| PIECES[rng.below(PIECES.len())])
        .collect()
}

fn any_value(rng: &mut Rng, depth: u32) -> Value {
    let leaf = depth == 0;
    match rng.below(if leaf { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.chance(2)),
        2 => {
            const INTS: &[i64] = &[
                0,
                1,
                -1,
                5,
                999,
                -100_123,
                i64::MAX,
                i64::MIN,
                4_294_967_295,
            ];
            json!(INTS[rng.below(INTS.len())])
        }
        3 => json!(u64::MAX - rng.below(3) as u64),
        4 => json!((rng.next() as f64) / 7.0 - 1e18),
        5 => json!(any_string(rng)),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| any_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut object = Map::new();
            for _ in 0..rng.below(5) {
                let key = FIELDS[rng.below(FIELDS.len())].to_string();
                object.insert(key, any_value(rng, depth - 1));
            }
            Value::Object(object)
        }
    }
}

/// Changes `value` in place at random: replaced, emptied, keys dropped or added, deeper.
fn mutate(rng: &mut Rng, value: &mut Value, depth: u32) {
    if rng.chance(12) {
        *value = any_value(rng, 3);
        return;
    }
    match value {
        Value::Object(object) => {
            let keys: Vec<String> = object.keys().cloned().collect();
            for key in keys {
                if rng.chance(10) {
                    object.remove(&key);
                } else if let Some(inner) = object.get_mut(&key) {
                    if depth < 8 {
                        mutate(rng, inner, depth + 1);
                    }
                }
            }
            if rng.chance(4) {
                let key = FIELDS[rng.below(FIELDS.len())].to_string();
                object.insert(key, any_value(rng, 3));
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                if depth < 8 {
                    mutate(rng, item, depth + 1);
                }
            }
            if rng.chance(4) {
                items.push(any_value(rng, 2));
            }
        }
        _ => {}
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Arbitrary updates, mostly near real ones, never panic the reading path.
#[test]
fn fuzz_arbitrary_updates_never_panic() {
    let cases = env_number("CLAWPEN_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let seed = env_number("CLAWPEN_FUZZ_SEED").unwrap_or_else(crate::access::random_u64);
    let templates = templates();
    let mut rng = Rng(seed);
    let mut seen = std::collections::BTreeMap::<&str, u64>::new();
    for case in 0..cases {
        let mut value = if rng.chance(10) {
            any_value(&mut rng, 5)
        } else {
            templates[rng.below(templates.len())].clone()
        };
        mutate(&mut rng, &mut value, 0);
        // Through text, as the poll and the webhook receive it.
        let text = value.to_string();
        let Ok(parsed) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let outcome = std::panic::catch_unwind(|| read_all(&parsed));
        match outcome {
            Ok(kind) => *seen.entry(kind).or_default() += 1,
            Err(_) => panic!("case {case} of seed {seed} panicked on {text}"),
        }
    }
    eprintln!("fuzz: {cases} cases, seed {seed}: {seen:?}");
    if cases >= 1_000 {
        // The mutations must reach every outcome, or the test proves little.
        for kind in ["message", "unusable", "malformed", "ignored", "unknown"] {
            assert!(
                seen.contains_key(kind),
                "no {kind} in {seen:?} (seed {seed})"
            );
        }
    }
}
