//! The echo provider: answers a turn by streaming its messages back.
//!
//! It exists to exercise everything around a model without one: streaming in several
//! deltas (so edit throttling and splitting on the bridge get work), follow-ups picked up
//! mid-turn, failures on demand (a message that is exactly [`FAIL`]), and cancellation
//! (a delay between chunks leaves time to cancel).

use std::collections::VecDeque;
use std::time::Duration;

use clawpen_protocol::TurnMessage;
use tokio::time::Instant;

use super::Step;

/// A message with exactly this text makes the turn fail, so tests can see error handling.
pub const FAIL: &str = "/fail";

/// What a requested failure says.
pub const FAIL_MESSAGE: &str = "echo: failure requested";

/// Roughly how many deltas one message becomes.
const CHUNKS_PER_MESSAGE: usize = 4;

/// The most chars in one delta, so long messages stream in many small steps.
const MAX_CHUNK_CHARS: usize = 16;

/// Between two messages' echoes.
const SEPARATOR: &str = "\n\n";

/// The echo provider's settings.
#[derive(Clone, Debug)]
pub struct Echo {
    /// Pause between two chunks.
    delay: Duration,
}

impl Echo {
    /// An echo provider pausing `delay` between chunks.
    pub fn new(delay: Duration) -> Self {
        Echo { delay }
    }

    /// Begin echoing a turn's messages.
    pub fn start(&self, messages: Vec<TurnMessage>) -> EchoRun {
        EchoRun {
            delay: self.delay,
            queue: messages.into(),
            chunks: VecDeque::new(),
            echoed: false,
            due: None,
        }
    }
}

/// One echo turn in progress. All progress lives in the fields, none in the future
/// returned by [`EchoRun::next`], which is what makes that future cancel-safe.
#[derive(Debug)]
pub struct EchoRun {
    delay: Duration,
    /// Messages not yet started, follow-ups appended.
    queue: VecDeque<TurnMessage>,
    /// The rest of the message being echoed.
    chunks: VecDeque<String>,
    /// Whether some message was echoed already (so the next needs a separator).
    echoed: bool,
    /// When the next chunk may go out; `None` until the first chunk, which goes at once.
    due: Option<Instant>,
}

impl EchoRun {
    /// Queue messages that arrived while the turn runs; they are echoed before it ends.
    pub fn follow_up(&mut self, messages: Vec<TurnMessage>) {
        self.queue.extend(messages);
    }

    /// The next chunk after the delay, a failure, or `Done` when every message is echoed.
    pub async fn next(&mut self) -> Step {
        while self.chunks.is_empty() {
            let Some(message) = self.queue.pop_front() else {
                return Step::Done;
            };
            if message.text == FAIL {
                return Step::Failed(FAIL_MESSAGE.to_owned());
            }
            if message.text.is_empty() {
                continue;
            }
            self.chunks = split(&message.text, CHUNKS_PER_MESSAGE, MAX_CHUNK_CHARS).into();
            if self.echoed {
                if let Some(first) = self.chunks.front_mut() {
                    first.insert_str(0, SEPARATOR);
                }
            }
            self.echoed = true;
        }
        match self.due {
            Some(due) if due > Instant::now() => tokio::time::sleep_until(due).await,
            // No wait left (or a zero delay): still yield, so a fast run cannot starve the
            // rest of the agent (stdin, the writer, timers) on the single-threaded runtime.
            _ => tokio::task::yield_now().await,
        }
        let Some(chunk) = self.chunks.pop_front() else {
            return Step::Done;
        };
        self.due = Some(Instant::now() + self.delay);
        Step::Text(chunk)
    }
}

/// Split `text` into about `parts` pieces of at most `max_chars` chars each, on char
/// boundaries; joined, the pieces are `text` again.
fn split(text: &str, parts: usize, max_chars: usize) -> Vec<String> {
    let total = text.chars().count();
    let size = total.div_ceil(parts.max(1)).clamp(1, max_chars.max(1));
    let mut chunks = Vec::with_capacity(total.div_ceil(size));
    let mut chunk = String::new();
    for (n, ch) in text.chars().enumerate() {
        if n > 0 && n % size == 0 {
            chunks.push(std::mem::take(&mut chunk));
        }
        chunk.push(ch);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> TurnMessage {
        TurnMessage {
            id: "m".into(),
            sender: "ann".into(),
            at: 0,
            text: text.into(),
            addressed: true,
            attachments: Vec::new(),
        }
    }

    /// Every step of `run` until it ends.
    async fn collect(run: &mut EchoRun) -> Vec<Step> {
        let mut steps = Vec::new();
        loop {
            let step = run.next().await;
            let last = !matches!(step, Step::Text(_));
            steps.push(step);
            if last {
                return steps;
            }
        }
    }

    fn text(steps: &[Step]) -> String {
        steps
            .iter()
            .filter_map(|step| {
                if let Step::Text(text) = step {
                    Some(text.as_str())
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn split_makes_about_four_bounded_chunks_that_join_back() {
        assert_eq!(split("hello world", 4, 16), vec!["hel", "lo ", "wor", "ld"]);
        assert_eq!(split("héé😀x", 4, 16), vec!["hé", "é😀", "x"]);
        let long = "x".repeat(100);
        let chunks = split(&long, 4, 16);
        assert!(chunks.iter().all(|chunk| chunk.chars().count() <= 16));
        assert_eq!(chunks.concat(), long);
        assert_eq!(split("a", 4, 16), vec!["a"]);
        assert!(split("", 4, 16).is_empty());
    }

    #[tokio::test]
    async fn one_message_is_echoed_exactly_in_several_deltas() {
        let mut run = Echo::new(Duration::ZERO).start(vec![message("hello world")]);
        let steps = collect(&mut run).await;
        assert!(steps.len() > 2, "{steps:?}");
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(text(&steps), "hello world");
    }

    #[tokio::test]
    async fn messages_and_follow_ups_are_joined_by_blank_lines() {
        let mut run = Echo::new(Duration::ZERO).start(vec![message("one"), message("two")]);
        let Step::Text(first) = run.next().await else {
            panic!("expected text")
        };
        run.follow_up(vec![message("three")]);
        let mut steps = vec![Step::Text(first)];
        steps.extend(collect(&mut run).await);
        assert_eq!(text(&steps), "one\n\ntwo\n\nthree");
    }

    #[tokio::test]
    async fn fail_ends_the_turn_after_what_came_before() {
        let mut run =
            Echo::new(Duration::ZERO).start(vec![message("ok"), message(FAIL), message("never")]);
        let steps = collect(&mut run).await;
        assert_eq!(text(&steps), "ok");
        assert_eq!(steps.last(), Some(&Step::Failed(FAIL_MESSAGE.into())));
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_are_spaced_by_the_delay_and_the_wait_survives_cancellation() {
        let delay = Duration::from_secs(1);
        let mut run = Echo::new(delay).start(vec![message("abcdefgh")]);
        let start = Instant::now();
        assert_eq!(run.next().await, Step::Text("ab".into()));
        // Give up on the next chunk half-way through the wait, as a select! would.
        let early = tokio::time::timeout(delay / 2, run.next()).await;
        assert!(early.is_err());
        assert_eq!(run.next().await, Step::Text("cd".into()));
        assert_eq!(Instant::now() - start, delay, "the wait did not restart");
    }
}
