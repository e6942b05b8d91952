//! A turn answered by a task of its own: the plumbing shared by the agent loop and the
//! harness.
//!
//! The endpoint polls a run for its next [`Step`] inside a `select!`, so that future must
//! be cancel-safe. A model turn is far too stateful to be written that way, so it runs as
//! a spawned task instead and hands its steps over a bounded channel; receiving from the
//! channel is the cancel-safe part. Dropping the [`TaskRun`] aborts the task at its next
//! await, and everything the task owns is dropped with it: that is how `Cancel` stops a
//! turn, kills its shell command (whose guard kills the process group) and abandons its
//! model request.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clawpen_protocol::TurnMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Steps a turn task made that the endpoint has not taken yet. The endpoint takes them as
/// fast as the session accepts them; a task that gets this far ahead waits.
pub const STEP_QUEUE: usize = 32;

/// What a run does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// More reply text.
    Text(String),
    /// A status line ("running: cargo test").
    Status(String),
    /// A separate chat message.
    Message(String),
    /// A workspace file to upload (path relative to the workspace).
    File(String),
    /// The last this many bytes of reply text are withdrawn (an answer starts over).
    Retract(usize),
    /// The turn failed with this message for the user; the run is over.
    Failed(String),
    /// The reply is complete; the run is over.
    Done,
}

/// A turn's way out to the endpoint; counts the reply text against the output limit.
#[derive(Debug)]
pub struct Out {
    steps: mpsc::Sender<Step>,
    /// Reply bytes sent so far.
    written: usize,
    /// The most reply bytes the turn may send.
    cap: usize,
    /// The last char of the reply so far, to know whether a paragraph break is needed.
    last: Option<char>,
    /// Start the next text on a new paragraph (set between model steps).
    paragraph: bool,
}

/// A point in the reply to go back to ([`Out::mark`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    written: usize,
    last: Option<char>,
    paragraph: bool,
}

/// The reply reached the output limit; what fit was sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("this reply reached the output limit of {} KB (CLAWPEN_MAX_OUTPUT_KB) and was cut off.", .0 / 1024)]
pub struct OutputFull(pub usize);

impl Out {
    /// An `Out` sending to `steps`, allowing `cap` bytes of reply text.
    pub fn new(steps: mpsc::Sender<Step>, cap: usize) -> Self {
        Out {
            steps,
            written: 0,
            cap,
            last: None,
            paragraph: false,
        }
    }

    /// Stream reply text; past the limit, what fits is sent and the turn must end.
    pub async fn text(&mut self, text: &str) -> Result<(), OutputFull> {
        if text.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.paragraph) && self.last.is_some_and(|last| last != '\n') {
            self.push("\n\n").await?;
        }
        self.push(text).await
    }

    async fn push(&mut self, text: &str) -> Result<(), OutputFull> {
        let room = self.cap.saturating_sub(self.written);
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let piece = &text[..end];
        if !piece.is_empty() {
            self.written += piece.len();
            self.last = piece.chars().last();
            self.send(Step::Text(piece.to_owned())).await;
        }
        if end < text.len() {
            return Err(OutputFull(self.cap));
        }
        Ok(())
    }

    /// Put the next text, if any, in a new paragraph (unless the reply so far is empty or
    /// ends a line): text from separate model steps must not run together.
    pub fn paragraph(&mut self) {
        self.paragraph = true;
    }

    /// Reply bytes sent so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Where the reply stands now, to [`Out::rewind`] to.
    pub fn mark(&self) -> Mark {
        Mark {
            written: self.written,
            last: self.last,
            paragraph: self.paragraph,
        }
    }

    /// Withdraws the text sent since `mark`: the answer it belonged to starts over, and
    /// the reader sees its new text in place of the old.
    pub async fn rewind(&mut self, mark: Mark) {
        let bytes = self.written.saturating_sub(mark.written);
        if bytes > 0 {
            self.send(Step::Retract(bytes)).await;
        }
        self.written = mark.written;
        self.last = mark.last;
        self.paragraph = mark.paragraph;
    }

    /// A status line.
    pub async fn status(&self, text: impl Into<String>) {
        self.send(Step::Status(text.into())).await;
    }

    /// A separate chat message.
    pub async fn message(&self, text: String) {
        self.send(Step::Message(text)).await;
    }

    /// A file to upload.
    pub async fn file(&self, path: String) {
        self.send(Step::File(path)).await;
    }

    async fn send(&self, step: Step) {
        // No receiver means the run was dropped; this task is being aborted anyway.
        let _ = self.steps.send(step).await;
    }
}

/// Follow-up messages waiting for the turn's next model call. Not a channel: the endpoint
/// must hand them over without waiting, and the turn takes them all at once. It holds only
/// what the bridge sent during one turn, one entry per chat message.
#[derive(Clone, Debug, Default)]
pub struct Inbox(Arc<Mutex<Vec<TurnMessage>>>);

impl Inbox {
    /// Add messages for the turn.
    pub fn push(&self, messages: Vec<TurnMessage>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(messages);
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Take every waiting message.
    pub fn take(&self) -> Vec<TurnMessage> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What a turn task returns: `Err` holds the message the user sees.
pub type TurnResult = Result<(), String>;

/// A turn running as a task.
#[derive(Debug)]
pub struct TaskRun {
    steps: mpsc::Receiver<Step>,
    inbox: Inbox,
    /// Aborted on drop.
    task: JoinHandle<()>,
}

impl TaskRun {
    /// Run `turn` as a task, given its `Out` (allowing `max_output` bytes) and its inbox,
    /// ending it with a message after `turn_time`.
    pub fn spawn<F, Fut>(turn_time: Duration, max_output: usize, turn: F) -> TaskRun
    where
        F: FnOnce(Out, Inbox) -> Fut,
        Fut: Future<Output = TurnResult> + Send + 'static,
    {
        let (steps_in, steps) = mpsc::channel(STEP_QUEUE);
        let inbox = Inbox::default();
        let work = turn(Out::new(steps_in.clone(), max_output), inbox.clone());
        let task = tokio::spawn(async move {
            let end = match tokio::time::timeout(turn_time, work).await {
                Ok(Ok(())) => Step::Done,
                Ok(Err(message)) => Step::Failed(message),
                Err(_) => Step::Failed(format!(
                    "this turn took longer than {} s (CLAWPEN_TURN_SECS) and was stopped.",
                    turn_time.as_secs()
                )),
            };
            let _ = steps_in.send(end).await;
        });
        TaskRun { steps, inbox, task }
    }

    /// Messages for the running turn, taken at its next model call.
    pub fn follow_up(&self, messages: Vec<TurnMessage>) {
        self.inbox.push(messages);
    }

    /// Follow-ups the turn never took (they came after its last model call).
    pub fn unanswered(&self) -> Vec<TurnMessage> {
        self.inbox.take()
    }

    /// The next step. Cancel-safe: it only receives from a channel.
    pub async fn next(&mut self) -> Step {
        match self.steps.recv().await {
            Some(step) => step,
            // The task ended without a last step: it panicked.
            None => Step::Failed("the agent stopped unexpectedly during this turn".into()),
        }
    }
}

impl Drop for TaskRun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn text_past_the_limit_is_cut_on_a_char_boundary() {
        let (steps_in, mut steps) = mpsc::channel(8);
        let mut out = Out::new(steps_in, 5);
        assert_eq!(out.text("abc").await, Ok(()));
        assert_eq!(out.text("déf").await, Err(OutputFull(5)));
        assert_eq!(out.written(), 4);
        assert_eq!(steps.recv().await, Some(Step::Text("abc".into())));
        assert_eq!(steps.recv().await, Some(Step::Text("d".into())));
    }

    #[tokio::test]
    async fn paragraphs_separate_steps_only_when_needed() -> Result<(), OutputFull> {
        let (steps_in, mut steps) = mpsc::channel(8);
        let mut out = Out::new(steps_in, 100);
        out.paragraph();
        out.text("first").await?;
        out.paragraph();
        out.text("second\n").await?;
        out.paragraph();
        out.text("third").await?;
        drop(out);
        let mut text = String::new();
        while let Some(Step::Text(piece)) = steps.recv().await {
            text.push_str(&piece);
        }
        assert_eq!(text, "first\n\nsecond\nthird");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_past_its_time_fails_with_a_message() {
        let mut run = TaskRun::spawn(Duration::from_secs(3), 100, |_, _| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let Step::Failed(message) = run.next().await else {
            panic!("expected a failure")
        };
        assert!(message.contains("3 s"), "{message}");
    }

    #[tokio::test]
    async fn dropping_the_run_aborts_the_task() {
        let (dropped_in, dropped) = tokio::sync::oneshot::channel::<()>();
        let run = TaskRun::spawn(Duration::from_secs(60), 100, |_, _| async move {
            // Dropped with the task's future when it is aborted.
            let _guard = dropped_in;
            std::future::pending::<()>().await;
            Ok(())
        });
        tokio::task::yield_now().await;
        drop(run);
        assert!(dropped.await.is_err(), "the sender was dropped, not used");
    }
}
