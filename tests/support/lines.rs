//! Arbitrary protocol lines from a box, mostly near real ones, for the fuzz tests: real
//! lines of every kind, mutated at the byte and at the value level.

use clawpen::protocol::{self, Event, EventBody, FromAgent, Request};
use serde_json::Value;

/// A small deterministic generator (xorshift64*), so a failing seed can be repeated.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True one time in `n`.
    pub fn chance(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// A number from the environment (`CLAWPEN_FUZZ_CASES`, `CLAWPEN_FUZZ_SEED`).
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// A seed: `CLAWPEN_FUZZ_SEED`, or one from the clock.
pub fn seed() -> u64 {
    env_number("CLAWPEN_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64)
    })
}

/// Real lines of every kind a box sends, for `turn`. Versions stay within what the bridge
/// speaks when `known_versions` (a line announcing another version rightly removes the box).
pub fn templates(turn: &str, known_versions: bool) -> Vec<Value> {
    let event = |seq, body| {
        FromAgent::Event(Event {
            seq,
            turn: turn.to_string(),
            body,
        })
    };
    let version = if known_versions {
        protocol::VERSION
    } else {
        999
    };
    let messages = vec![
        FromAgent::Ready {
            version,
            provider: "echo".into(),
        },
        FromAgent::State {
            running: Some(turn.into()),
            finished: vec!["t0".into()],
            last_seq: 5,
            acked: Some(3),
            version: Some(version),
        },
        event(
            1,
            EventBody::TextDelta {
                text: "hello".into(),
            },
        ),
        event(
            2,
            EventBody::Status {
                text: "running: ls".into(),
            },
        ),
        event(
            3,
            EventBody::Message {
                text: "a note".into(),
            },
        ),
        event(
            4,
            EventBody::File {
                path: "out.txt".into(),
            },
        ),
        event(5, EventBody::Retract { bytes: 3 }),
        event(
            6,
            EventBody::Error {
                message: "boom".into(),
            },
        ),
        event(7, EventBody::Final),
        FromAgent::Heartbeat,
        FromAgent::Request {
            id: 1,
            request: Request::WebFetch {
                url: "http://203.0.113.9/".into(),
            },
            window: Some(4),
        },
        FromAgent::Request {
            id: 2,
            request: Request::Model {
                method: "POST".into(),
                path: "/v1/messages".into(),
                headers: vec![("anthropic-version".into(), "2023-06-01".into())],
                body: "{}".into(),
            },
            window: None,
        },
        FromAgent::Request {
            id: 3,
            request: Request::ListTasks,
            window: None,
        },
        FromAgent::Credit { id: 1, parts: 8 },
        FromAgent::Abort { id: 2 },
        FromAgent::Rejected {
            reason: "what?".into(),
        },
    ];
    messages
        .iter()
        .filter_map(|m| serde_json::to_value(m).ok())
        .collect()
}

/// One arbitrary line (without its newline): a template mutated at the value level, then
/// perhaps at the byte level; now and then plain garbage.
pub fn arbitrary_line(rng: &mut Rng, templates: &[Value], keep_versions: bool) -> Vec<u8> {
    if rng.chance(20) {
        let len = rng.below(200);
        return (0..len)
            .map(|_| rng.next() as u8)
            .filter(|b| *b != b'\n')
            .collect();
    }
    let mut value = templates[rng.below(templates.len())].clone();
    mutate(rng, &mut value, keep_versions);
    let mut bytes = value.to_string().into_bytes();
    if rng.chance(4) {
        for _ in 0..=rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes.truncate(at),
                2 => {
                    let odd = b"{}[]\":,\\\x00\xff";
                    bytes.insert(at, odd[rng.below(odd.len())]);
                }
                _ => {
                    let cut: Vec<u8> = bytes[at..].to_vec();
                    bytes.extend_from_slice(&cut);
                }
            }
        }
    }
    // A newline inside would make two lines of it; the caller decides where lines end.
    bytes.retain(|b| *b != b'\n');
    bytes
}

/// Changes values in place: numbers to edge values, strings to odd ones, fields dropped or
/// added, types swapped.
fn mutate(rng: &mut Rng, value: &mut Value, keep_versions: bool) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if keep_versions && (key == "version" || key == "type") {
                    continue;
                }
                if rng.chance(12) {
                    map.remove(&key);
                } else if let Some(v) = map.get_mut(&key) {
                    mutate(rng, v, keep_versions);
                }
            }
            if rng.chance(10) {
                map.insert("from_a_newer_agent".into(), any_value(rng, 2));
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                mutate(rng, item, keep_versions);
            }
            if rng.chance(8) {
                items.push(any_value(rng, 2));
            }
        }
        _ if rng.chance(6) => *value = any_value(rng, 2),
        _ => {}
    }
}

fn any_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => [0, 1, u64::MAX, i64::MAX as u64]
            .get(rng.below(4))
            .map_or(Value::Null, |n| Value::from(*n)),
        3 => Value::from(-(rng.below(1000) as i64)),
        4 => Value::from(1.5e300),
        5 => Value::from(
            [
                "",
                "é",
                "\u{1F600}",
                "t1",
                "\u{202e}",
                "x".repeat(300).as_str(),
            ][rng.below(6)],
        ),
        6 => Value::Array(
            (0..rng.below(3))
                .map(|_| any_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.below(3) {
                map.insert(format!("k{}", rng.below(5)), any_value(rng, depth - 1));
            }
            Value::Object(map)
        }
    }
}
