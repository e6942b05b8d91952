//! What the bridge writes to disk for a turn grows linearly with the reply: the store keeps
//! a reply's progress as appended chunks and offsets, never the whole text again per event
//! (which once wrote hundreds of MiB for a reply of a few hundred KB). Its own test binary,
//! so the process's I/O counters count these turns alone.
//!
//! The cost per stored step is about a page of the store's log, so a reply streamed in
//! small pieces costs a few KiB per piece; that constant is the benchmark's business
//! (fewer flushes), the shape is this test's.

mod support;

use support::model::{FakeModel, Reply};
use support::TestBridge;

/// Bytes this process caused to be written to storage (`write_bytes` of /proc/self/io).
fn written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The bytes written for one reply of `text` streamed in 100-character pieces.
async fn cost(t: &TestBridge, model: &FakeModel, text: &str) -> u64 {
    model.push_reply(Reply::text(text).in_pieces_of(100));
    let before = written();
    let shown = t.ask("long", "write it all").await;
    let after = written();
    // Split into messages at spaces, which the split drops; the words are all there.
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(words(&shown), words(text), "the reply did not arrive whole");
    after - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_written_for_a_reply_grow_linearly_with_it() {
    let model = FakeModel::start().await;
    let t = TestBridge::start(|c| model.serve(c)).await;
    model.push_reply(Reply::text("warm"));
    assert_eq!(t.ask("long", "hello").await, "warm");
    let line = "All work and no play makes a long reply. ";
    // 30 and 60 KB (the agent's own cap on a turn's text is 64 KB).
    let short = line.repeat(750);
    let long = line.repeat(1_500);
    let short_cost = cost(&t, &model, &short).await;
    let long_cost = cost(&t, &model, &long).await;
    let pieces = long.len() as u64 / 100;
    eprintln!(
        "{} KB: {} KB written; {} KB: {} KB written ({} B per piece)",
        short.len() / 1024,
        short_cost / 1024,
        long.len() / 1024,
        long_cost / 1024,
        long_cost / pieces
    );
    // Rewriting the text per event would make twice the reply cost four times as much.
    assert!(
        long_cost < short_cost * 3,
        "twice the reply wrote {long_cost} bytes against {short_cost}"
    );
    assert!(
        long_cost < pieces * 8 * 1024,
        "{long_cost} bytes for {pieces} pieces"
    );
    t.stop().await;
}
