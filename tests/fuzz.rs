//! The box protocol's line parser against arbitrary bytes: a stream of lines, mostly near
//! real ones, cut into arbitrary chunks as the attach stream delivers them, through the
//! bridge's line splitter and decoder. It must never panic, never hold more than one
//! line's worth, and give back every well-formed line as it was.
//!
//! The suite runs [`DEFAULT_CASES`] lines; a long run is
//! `CLAWPEN_FUZZ_CASES=1000000 cargo test --release --test fuzz -- --nocapture`, and
//! `CLAWPEN_FUZZ_SEED` repeats one.

mod support;

use clawpen::protocol::{self, FromAgent, Line, LineBuffer, ToAgent, MAX_LINE};
use support::lines::{arbitrary_line, env_number, seed, templates, Rng};

/// Lines in an ordinary test run.
const DEFAULT_CASES: u64 = 20_000;

#[test]
fn fuzz_arbitrary_lines_never_panic_the_line_parser() {
    let cases = env_number("CLAWPEN_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let seed = seed();
    let mut rng = Rng(seed);
    let templates = templates("t1", false);
    let mut buffer = LineBuffer::default();
    let (mut decoded, mut refused, mut too_long, mut intact) = (0u64, 0u64, 0u64, 0u64);
    let mut stream: Vec<u8> = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for case in 0..cases {
        let mut line = arbitrary_line(&mut rng, &templates, false);
        if rng.chance(2_000) {
            // Now and then a line past the protocol's limit.
            line = vec![b'x'; MAX_LINE + 1 + rng.below(1000)];
        }
        stream.extend_from_slice(&line);
        stream.push(b'\n');
        sent.push(line);
        // Deliver in arbitrary chunks, as the engine's attach frames cut the stream.
        if rng.chance(4) || case + 1 == cases {
            let mut rest = &stream[..];
            let mut got = Vec::new();
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(4096));
                let (chunk, after) = rest.split_at(n);
                got.extend(buffer.push(chunk));
                rest = after;
            }
            assert_eq!(got.len(), sent.len(), "seed {seed}: lines lost or made up");
            for (line, original) in got.iter().zip(&sent) {
                let result = std::panic::catch_unwind(|| match line {
                    Line::Complete(bytes) => {
                        let from = protocol::decode::<FromAgent>(bytes).map(|m| {
                            // A line that decodes encodes back to one that decodes the same.
                            let again = protocol::encode(&m).unwrap_or_default();
                            assert_eq!(
                                protocol::decode::<FromAgent>(&again).ok().as_ref(),
                                Some(&m)
                            );
                        });
                        // The agent's side reads the other direction; garbage there too.
                        let _ = protocol::decode::<ToAgent>(bytes);
                        (from.is_ok(), bytes == original)
                    }
                    Line::TooLong => (false, false),
                });
                match (result, line) {
                    (Err(_), _) => panic!(
                        "seed {seed}: the parser panicked on {}",
                        String::from_utf8_lossy(original)
                    ),
                    (Ok(_), Line::TooLong) => too_long += 1,
                    (Ok((ok, same)), Line::Complete(_)) => {
                        if ok {
                            decoded += 1;
                        } else {
                            refused += 1;
                        }
                        intact += u64::from(same);
                    }
                }
            }
            stream.clear();
            sent.clear();
        }
    }
    eprintln!(
        "fuzz: {cases} lines, seed {seed}: {decoded} decoded, {refused} refused, {too_long} too long, {intact} intact"
    );
    assert_eq!(
        decoded + refused,
        intact,
        "seed {seed}: a line came back changed"
    );
    if cases >= 10_000 {
        // The mutations must reach every outcome, or the test proves little.
        assert!(decoded > cases / 10, "seed {seed}: too few lines decoded");
        assert!(refused > cases / 10, "seed {seed}: too few lines refused");
    }
}
