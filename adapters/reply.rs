//! The reply-streaming policy, with no I/O: how a growing reply maps onto platform messages.
//!
//! An agent's reply arrives in deltas while its turn runs and is shown as one or more
//! platform messages ("parts"), each within the platform's length limit:
//! - [`split`] cuts a text at the gentlest place in the second half of a message: a blank
//!   line, then a line break, then a space (earlier ones only if the second half has none),
//!   and only as a last resort between two characters. A fenced code block stays
//!   whole when it fits in one message; a longer one is closed at the end of a part and
//!   reopened (with its info string) at the start of the next, so that every part renders.
//! - While streaming ([`ReplyState::push`]) only the last part grows. When it would exceed the
//!   limit it is cut the same way: its first piece is *sealed*, so its text never changes again
//!   and it is never re-split, and a new part begins with the rest.
//! - [`ReplyState::next_op`] names the platform operation that brings the messages closer to
//!   the text, and [`EditThrottle`] says when an edit may go. Time is always passed in.
//! - On a platform with drafts (`caps.has_drafts`), the growing part is shown as a draft
//!   instead of a sent-then-edited message, and sent as a real message once it is final.
//! - A part never ends inside an inline Markdown span ([`markdown`]) while there is any other
//!   place to cut, because adapters format each part on its own.

use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{Capabilities, LengthUnit, MessageRef};

pub mod markdown;

/// Everything known about one turn's reply: the agent's text and the platform messages
/// ("reply parts") carrying it. Persisted after every step, so that a restart continues the
/// same messages instead of repeating them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyState {
    /// The agent's full text so far. Grow it with [`ReplyState::push`], which keeps the parts
    /// in step; changing it directly leaves them stale.
    pub text: String,
    /// The platform messages carrying the text, in order: sealed parts, then at most one
    /// growing part. A part exists only once it has something to show.
    pub parts: Vec<Part>,
    /// The inbound message the reply answers, for platforms that thread replies.
    pub reply_to: Option<MessageRef>,
    /// Byte offset in `text` where the growing part's text begins: sealed parts own the rest.
    #[serde(default)]
    consumed: usize,
    /// The code block that a sealed part closed early, reopened at the growing part's start.
    #[serde(default)]
    fence: Option<Fence>,
}

/// One platform message of a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The platform's id, once sent.
    pub message: Option<MessageRef>,
    /// The text the platform shows for it now.
    pub shown: String,
    /// The text it should show: final once `sealed`, else the growing tail of the reply.
    #[serde(default)]
    pub text: String,
    /// A later part has taken over, so `text` is final and it only awaits delivery.
    #[serde(default)]
    pub sealed: bool,
    /// The text its draft shows, while it is streamed as a draft. Not persisted: a draft is
    /// ephemeral on the platform, so after a restart it is shown afresh.
    #[serde(skip)]
    pub drafted: String,
}

/// A platform operation that brings a reply's messages closer to its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Send part `part` as a new message.
    Send {
        /// Index into [`ReplyState::parts`].
        part: usize,
        /// The text to send.
        text: String,
    },
    /// Replace the text of part `part`, already sent as `message`.
    Edit {
        /// Index into [`ReplyState::parts`].
        part: usize,
        /// The platform message to edit.
        message: MessageRef,
        /// Its new text.
        text: String,
    },
    /// Show the growing part `part`, not yet sent, as a draft (platforms with drafts).
    Draft {
        /// Index into [`ReplyState::parts`].
        part: usize,
        /// The text to show.
        text: String,
    },
}

impl ReplyState {
    /// A reply not yet started.
    pub fn new(reply_to: Option<MessageRef>) -> Self {
        Self {
            reply_to,
            ..Self::default()
        }
    }

    /// Whether there is nothing to show: no non-whitespace text has arrived. A turn that
    /// finishes like this gets an error message from the caller instead of a reply.
    pub fn is_blank(&self) -> bool {
        self.parts.is_empty()
    }

    /// Appends agent text and re-plans the growing part, sealing whatever no longer fits in
    /// one message of `caps.max_len` (hence the capabilities: where a part ends depends on the
    /// platform). Sealed parts are never looked at again, so pushes stay cheap.
    pub fn push(&mut self, delta: &str, caps: &Capabilities) {
        self.text.push_str(delta);
        loop {
            let rest = self.text.get(self.consumed..).unwrap_or_default();
            match cut(rest, self.fence.as_ref(), caps.max_len, caps.length_unit) {
                Cut::Fits(text) => return self.set_growing(text),
                Cut::Split { head, next, fence } => {
                    self.set_growing(head);
                    if let Some(last) = self.parts.last_mut() {
                        last.sealed = true;
                    }
                    self.consumed += next;
                    self.fence = fence;
                }
            }
        }
    }

    fn set_growing(&mut self, text: String) {
        match self.parts.last_mut() {
            Some(last) if !last.sealed => last.text = text,
            _ if !text.is_empty() => self.parts.push(Part {
                text,
                ..Part::default()
            }),
            _ => {}
        }
    }

    /// The next operation due, or `None` when every part shows what it should for now.
    ///
    /// Parts are sent in order, and sends come before edits so that new text is never held
    /// back by a throttled edit. Without `caps.can_edit` a part is sent only once its text is
    /// final (sealed, or the turn `finished`), so nothing needs editing; with it, a part is
    /// sent as soon as it has text and edited as it grows. With `caps.has_drafts` the growing
    /// part is drafted instead and sent only once final, as without edits. A blank reply
    /// yields nothing.
    pub fn next_op(&self, caps: &Capabilities, finished: bool) -> Option<Op> {
        if let Some((part, p)) = self
            .parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.message.is_none())
        {
            if p.sealed || finished || (caps.can_edit && !caps.has_drafts) {
                return Some(Op::Send {
                    part,
                    text: p.text.clone(),
                });
            }
            if caps.has_drafts && p.drafted != p.text {
                return Some(Op::Draft {
                    part,
                    text: p.text.clone(),
                });
            }
        }
        if !caps.can_edit {
            return None;
        }
        self.parts
            .iter()
            .enumerate()
            .find_map(|(part, p)| match &p.message {
                Some(message) if p.shown != p.text => Some(Op::Edit {
                    part,
                    message: message.clone(),
                    text: p.text.clone(),
                }),
                _ => None,
            })
    }

    /// Records an operation the platform carried out; `sent` is the id a `Send` returned (a
    /// send without one is not recorded, as no edit could reach it). Called right after each
    /// success, so a send that went through is never repeated.
    pub fn applied(&mut self, op: &Op, sent: Option<MessageRef>) {
        match op {
            Op::Send { part, text } => {
                if let (Some(p), Some(message)) = (self.parts.get_mut(*part), sent) {
                    p.message = Some(message);
                    p.shown.clone_from(text);
                }
            }
            Op::Edit { part, text, .. } => {
                if let Some(p) = self.parts.get_mut(*part) {
                    p.shown.clone_from(text);
                }
            }
            Op::Draft { part, text } => {
                if let Some(p) = self.parts.get_mut(*part) {
                    p.drafted.clone_from(text);
                }
            }
        }
    }

    /// The draft being shown now, to show again before the platform lets it lapse: the
    /// growing part when it is drafted and not yet sent.
    pub fn current_draft(&self) -> Option<Op> {
        let (part, p) = self
            .parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.message.is_none())?;
        (!p.sealed && !p.drafted.is_empty()).then(|| Op::Draft {
            part,
            text: p.drafted.clone(),
        })
    }
}

/// Spaces out edits by a platform's `min_edit_interval`.
///
/// Every write (send or edit) starts a new interval, because platforms count all writes to a
/// chat; but only edits wait for it: a send carries text the user has not seen at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EditThrottle {
    interval: Duration,
    last_write: Option<Instant>,
}

impl EditThrottle {
    /// A throttle that has seen no write yet.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_write: None,
        }
    }

    /// Records a write (send or edit) done at `at`.
    pub fn wrote(&mut self, at: Instant) {
        self.last_write = Some(at);
    }

    /// When the next edit may go; `None` if it may go at any time.
    pub fn due(&self) -> Option<Instant> {
        self.last_write.map(|last| last + self.interval)
    }

    /// Whether an edit may go at `now`.
    pub fn may_edit(&self, now: Instant) -> bool {
        self.due().is_none_or(|due| now >= due)
    }
}

/// The length of `text` as a platform counts it.
pub fn measure(text: &str, unit: LengthUnit) -> usize {
    match unit {
        LengthUnit::Chars => text.chars().count(),
        LengthUnit::Utf16 => text.encode_utf16().count(),
    }
}

/// Whether `text` measures at most `budget`, without counting all of a text far too long
/// (a unit takes one to four bytes), so that cutting a long reply stays linear.
fn fits(text: &str, budget: usize, unit: LengthUnit) -> bool {
    text.len() <= budget || (text.len() / 4 <= budget && measure(text, unit) <= budget)
}

fn char_len(c: char, unit: LengthUnit) -> usize {
    match unit {
        LengthUnit::Chars => 1,
        LengthUnit::Utf16 => c.len_utf16(),
    }
}

/// Splits a complete text into messages of at most `max_len` units (see the module docs for
/// where it cuts). Whitespace at the cuts is dropped and parts are never empty. A part is
/// longer than `max_len` only if a single character is.
pub fn split(text: &str, max_len: usize, unit: LengthUnit) -> Vec<String> {
    let (mut parts, mut rest, mut fence) = (Vec::new(), text, None);
    loop {
        match cut(rest, fence.as_ref(), max_len, unit) {
            Cut::Fits(last) => {
                if !last.is_empty() {
                    parts.push(last);
                }
                return parts;
            }
            Cut::Split {
                head,
                next,
                fence: after,
            } => {
                parts.push(head);
                rest = rest.get(next..).unwrap_or_default();
                fence = after;
            }
        }
    }
}

/// The opening line of a fenced code block: enough to close and reopen it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fence {
    ticks: usize,
    info: String,
}

impl Fence {
    /// Parses an opening fence: up to three spaces, three or more backticks, an info string.
    fn open(line: &str) -> Option<Self> {
        let body = line.trim_start_matches(' ');
        let ticks = body.len() - body.trim_start_matches('`').len();
        let info = body[ticks..].trim();
        (line.len() - body.len() <= 3 && ticks >= 3 && !info.contains('`')).then(|| Self {
            ticks,
            info: info.to_string(),
        })
    }

    fn is_closed_by(&self, line: &str) -> bool {
        let body = line.trim_start_matches(' ');
        let ticks = body.len() - body.trim_start_matches('`').len();
        line.len() - body.len() <= 3 && ticks >= self.ticks && body[ticks..].trim().is_empty()
    }

    /// The line reopening the block at the start of a part.
    fn opener(&self) -> String {
        format!("{}{}\n", "`".repeat(self.ticks), self.info)
    }

    /// The line closing the block at the end of a part.
    fn closer(&self) -> String {
        format!("\n{}", "`".repeat(self.ticks))
    }

    /// Whether closing and reopening fits comfortably: if the fences took more than half a
    /// message, parts would be mostly fence, so such a block is cut like plain text.
    fn wraps(&self, max_len: usize, unit: LengthUnit) -> bool {
        2 * (measure(&self.opener(), unit) + measure(&self.closer(), unit)) <= max_len
    }
}

/// What [`cut`] decided for the rest of a reply.
enum Cut {
    /// All of it fits in one part, shown as this (empty if it is only whitespace).
    Fits(String),
    /// The first part is `head`; the rest starts at byte `next`, inside code block `fence`.
    Split {
        head: String,
        next: usize,
        fence: Option<Fence>,
    },
}

/// A fenced code block of the text being cut, in byte offsets.
struct Block {
    /// Where its opening fence line starts (0 when it was reopened from an earlier part).
    start: usize,
    /// Just past its closing fence line (or the end of what was scanned, if unclosed).
    end: usize,
    /// The first non-whitespace byte of its content: a cut must leave code before it.
    first_code: usize,
    /// Just past the last non-whitespace content: a cut must leave code after it.
    last_code: usize,
    /// Whether it fits in one message, in which case it is never cut.
    fits: bool,
    /// The length of its closing fence when a cut closes and reopens it (0: cut as is).
    closer_len: usize,
    fence: Fence,
}

/// A place where a part may end.
#[derive(Clone, Copy)]
struct Break<'a> {
    /// Higher is better: a break at whitespace outside any inline span beats everything;
    /// then any break at whitespace beats a hard cut, and one outside a span beats one inside;
    /// among equals, one in the second half of the message beats any in the first, so that a
    /// blank line near the start leaves no stub; then a blank line beats a line break, which
    /// beats a space.
    rank: (bool, bool, bool, bool, u8),
    /// Where the part's text ends.
    head_end: usize,
    /// Where the rest begins, past the whitespace dropped at the cut.
    next: usize,
    /// The code block it falls in, which the cut closes and reopens.
    block: Option<&'a Block>,
}

/// Finds the code blocks of `rest`, scanning no further than `horizon` units: a block still
/// open there is longer than a message, which is all there is to know about it.
fn blocks(
    rest: &str,
    fence: Option<&Fence>,
    prefix: usize,
    max_len: usize,
    unit: LengthUnit,
) -> Vec<Block> {
    let horizon = max_len.saturating_mul(2).saturating_add(prefix + 2);
    let (mut found, mut units, mut pos) = (Vec::new(), prefix, 0);
    let new_block = |start, fence: Fence| Block {
        start,
        end: 0,
        first_code: usize::MAX,
        last_code: 0,
        fits: false,
        closer_len: if fence.wraps(max_len, unit) {
            measure(&fence.closer(), unit)
        } else {
            0
        },
        fence,
    };
    let mut open = fence.map(|f| new_block(0, f.clone()));
    while pos < rest.len() && units <= horizon {
        let line_end = rest[pos..].find('\n').map_or(rest.len(), |i| pos + i);
        let line = &rest[pos..line_end];
        match open.as_mut() {
            None => open = Fence::open(line).map(|f| new_block(pos, f)),
            Some(block) if block.fence.is_closed_by(line) => {
                block.end = line_end;
                let lead = if block.start == 0 { prefix } else { 0 };
                block.fits = fits(
                    &rest[block.start..line_end],
                    max_len.saturating_sub(lead),
                    unit,
                );
                found.extend(open.take());
            }
            Some(block) => {
                if let Some(i) = line.find(|c: char| !c.is_whitespace()) {
                    block.first_code = block.first_code.min(pos + i);
                    block.last_code = pos + line.trim_end().len();
                }
            }
        }
        units += measure(line, unit) + 1;
        pos = line_end + 1;
    }
    if let Some(mut block) = open {
        block.end = rest.len();
        let lead = if block.start == 0 { prefix } else { 0 };
        block.fits =
            pos >= rest.len() && fits(&rest[block.start..], max_len.saturating_sub(lead), unit);
        found.push(block);
    }
    found
}

/// Decides the first part of `rest`, which starts inside code block `fence` if that is set.
fn cut(rest: &str, fence: Option<&Fence>, max_len: usize, unit: LengthUnit) -> Cut {
    if fence.is_none() {
        let lead = rest.len() - rest.trim_start().len();
        if lead > 0 {
            return match cut(&rest[lead..], None, max_len, unit) {
                Cut::Split { head, next, fence } => Cut::Split {
                    head,
                    next: lead + next,
                    fence,
                },
                fits => fits,
            };
        }
    }
    let prefix = fence
        .filter(|f| f.wraps(max_len, unit))
        .map(Fence::opener)
        .unwrap_or_default();
    let prefix_len = measure(&prefix, unit);
    let body = rest.trim_end();
    if body.is_empty() {
        return Cut::Fits(String::new());
    }
    if prefix_len <= max_len && fits(body, max_len - prefix_len, unit) {
        return Cut::Fits(prefix + body);
    }
    let blocks = blocks(rest, fence, prefix_len, max_len, unit);
    let mut best: Option<Break> = None;
    let (mut units, mut prev_space, mut next_block) = (prefix_len, true, 0);
    // The inline spans of the line being scanned, in offsets into `rest`.
    let (mut line_end, mut spans) = (0, Vec::<Range<usize>>::new());
    for (i, c) in rest.char_indices() {
        if units > max_len {
            break;
        }
        while blocks.get(next_block).is_some_and(|b| b.end <= i) {
            next_block += 1;
        }
        if i >= line_end {
            line_end = rest[i..].find('\n').map_or(rest.len(), |n| i + n);
            spans = markdown::inline_spans(&rest[i..line_end])
                .into_iter()
                .map(|s| s.outer.start + i..s.outer.end + i)
                .collect();
        }
        let space = c.is_whitespace();
        let in_block = blocks.get(next_block).is_some_and(|b| b.start < i);
        let outside = in_block || !spans.iter().any(|s| s.start < i && i < s.end);
        let at = |rank: u8, next, block| Break {
            rank: (
                rank > 0 && outside,
                rank > 0,
                outside,
                2 * units >= max_len,
                rank,
            ),
            head_end: i,
            next,
            block,
        };
        let candidate = match blocks.get(next_block).filter(|b| b.start < i) {
            // Inside a block: only between its first and last code, and only if it is too long.
            Some(block) if block.fits || block.first_code >= i => None,
            Some(block) if units + block.closer_len > max_len => None,
            Some(block) => {
                let (rank, next) = if c == '\n' { (2, i + 1) } else { (0, i) };
                (next < block.last_code).then(|| at(rank, next, Some(block)))
            }
            None if space && !prev_space => {
                let run_end = rest[i..]
                    .find(|c: char| !c.is_whitespace())
                    .map_or(rest.len(), |n| i + n);
                let rank = match rest[i..run_end].matches('\n').count() {
                    0 => 1,
                    1 => 2,
                    _ => 3,
                };
                (run_end < rest.len()).then(|| at(rank, run_end, None))
            }
            None if !space && !prev_space && i > 0 => Some(at(0, i, None)),
            None => None,
        };
        if let Some(found) = candidate {
            if best.is_none_or(|b| found.rank >= b.rank) {
                best = Some(found);
            }
        }
        prev_space = space;
        units += char_len(c, unit);
    }
    let Some(Break {
        head_end,
        next,
        block,
        ..
    }) = best
    else {
        // Not even one character fits after the fences: cut after it anyway, to make progress.
        let next = rest.chars().next().map_or(rest.len(), char::len_utf8);
        return Cut::Split {
            head: prefix + &rest[..next],
            next,
            fence: fence.cloned(),
        };
    };
    let mut head = prefix + &rest[..head_end];
    if let Some(block) = block.filter(|b| b.closer_len > 0) {
        head.push_str(&block.fence.closer());
    }
    Cut::Split {
        head,
        next,
        fence: block.map(|b| b.fence.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_len: usize, can_edit: bool) -> Capabilities {
        Capabilities {
            max_len,
            length_unit: LengthUnit::Chars,
            can_edit,
            has_drafts: false,
            has_threads: false,
            min_edit_interval: Duration::from_secs(1),
            typing_interval: None,
        }
    }

    /// About 10,000 characters: prose, a 5,000-character code block and a short one.
    fn long_text() -> String {
        let sentences = |p| format!("Sentence {p} says a little more, and then a little more. ");
        let prose = |n: usize| -> String {
            (0..n)
                .map(|p| sentences(p).repeat(3) + if p % 3 == 2 { "\n" } else { "\n\n" })
                .collect()
        };
        let code: String = (0..150)
            .map(|i| format!("    let value_{i:03} = compute({i:03});\n"))
            .collect();
        format!(
            "{}```rust\n{code}```\n\n{}Run it:\n```sh\ncargo test\n```\n\n{}",
            prose(14),
            prose(6),
            prose(10)
        )
    }

    /// Whether every fence a part opens, it closes.
    fn balanced(part: &str) -> bool {
        part.lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count()
            % 2
            == 0
    }

    /// Whether `parts` are `text` cut up, up to whitespace at the cuts and fences added there.
    fn reassembles(text: &str, parts: &[String]) -> bool {
        let mut rest = text;
        for part in parts {
            let reopened = part
                .starts_with("```")
                .then(|| part.split_once('\n').map(|(_, r)| r));
            let closed = part.strip_suffix("\n```");
            let both = reopened.flatten().and_then(|r| r.strip_suffix("\n```"));
            let variants = [Some(part.as_str()), reopened.flatten(), closed, both];
            let found = variants
                .into_iter()
                .flatten()
                .map(str::trim_start)
                .find(|v| rest.trim_start().starts_with(v));
            let Some(found) = found else { return false };
            rest = &rest.trim_start()[found.len()..];
        }
        rest.trim().is_empty()
    }

    /// Carries out every operation due, as a platform that never fails would.
    fn drain(state: &mut ReplyState, caps: &Capabilities, finished: bool, log: &mut Vec<Op>) {
        while let Some(op) = state.next_op(caps, finished) {
            let sent = matches!(op, Op::Send { .. }).then(|| MessageRef(format!("m{}", log.len())));
            state.applied(&op, sent);
            log.push(op);
            assert!(log.len() < 100_000, "operations never settle");
        }
    }

    fn send(part: usize, text: &str) -> Op {
        Op::Send {
            part,
            text: text.into(),
        }
    }

    fn edit(part: usize, message: &str, text: &str) -> Op {
        Op::Edit {
            part,
            message: MessageRef(message.into()),
            text: text.into(),
        }
    }

    #[test]
    fn long_text_splits_within_the_limit_without_breaking_fences() {
        let text = long_text();
        assert!(text.chars().count() >= 10_000, "{}", text.len());
        let parts = split(&text, 1000, LengthUnit::Chars);
        assert!(parts.len() >= 10, "{}", parts.len());
        for part in &parts {
            assert!(
                !part.is_empty() && measure(part, LengthUnit::Chars) <= 1000,
                "{part:?}"
            );
            assert!(balanced(part), "unbalanced fences in {part:?}");
        }
        assert!(
            parts.iter().any(|p| p.contains("```sh\ncargo test\n```")),
            "short block was cut"
        );
        assert!(
            parts
                .iter()
                .filter(|p| p.starts_with("```rust\n    let"))
                .count()
                >= 4
        );
        assert!(reassembles(&text, &parts));
    }

    #[test]
    fn cuts_prefer_paragraphs_then_lines_then_words() {
        let cut = |text, max| split(text, max, LengthUnit::Chars);
        assert_eq!(
            cut("one two\nthree\n\nfour five six", 20),
            ["one two\nthree", "four five six"]
        );
        assert_eq!(
            cut("one two three\nfour five six seven", 20),
            ["one two three", "four five six seven"]
        );
        assert_eq!(
            cut("one two three four five", 10),
            ["one two", "three four", "five"]
        );
        assert_eq!(cut("abcdefghijkl", 5), ["abcde", "fghij", "kl"]);
        assert_eq!(cut("  \n  ", 5), Vec::<String>::new());
    }

    #[test]
    fn a_code_block_that_fits_moves_whole_to_the_next_part() {
        let text = "intro line\n```\nlet a = 1;\nlet b = 2;\n```\nafter";
        assert_eq!(
            split(text, 30, LengthUnit::Chars),
            ["intro line", "```\nlet a = 1;\nlet b = 2;\n```", "after"]
        );
    }

    #[test]
    fn utf16_counts_emoji_as_two_and_never_splits_them() {
        assert_eq!(measure("héllo 😀", LengthUnit::Chars), 7);
        assert_eq!(measure("héllo 😀", LengthUnit::Utf16), 8);
        let text = "😀".repeat(6);
        let parts = split(&text, 5, LengthUnit::Utf16);
        assert_eq!(parts, ["😀😀", "😀😀", "😀😀"]);
        assert_eq!(split(&text, 5, LengthUnit::Chars), ["😀😀😀😀😀", "😀"]);
        assert_eq!(
            split("ab 😀😀 cd", 6, LengthUnit::Utf16),
            ["ab", "😀😀", "cd"]
        );
        assert_eq!(split("ab 😀😀 cd", 6, LengthUnit::Chars), ["ab 😀😀", "cd"]);
    }

    #[test]
    fn streaming_sends_once_then_edits_as_text_grows() {
        let (caps, mut state, mut log) = (caps(100, true), ReplyState::new(None), Vec::new());
        for delta in ["\n", "Hel", "lo", ",", " ", "world", "  "] {
            state.push(delta, &caps);
            drain(&mut state, &caps, false, &mut log);
        }
        drain(&mut state, &caps, true, &mut log);
        let expected = [
            send(0, "Hel"),
            edit(0, "m0", "Hello"),
            edit(0, "m0", "Hello,"),
            edit(0, "m0", "Hello, world"),
        ];
        assert_eq!(log, expected);
    }

    #[test]
    fn crossing_the_limit_seals_the_part_and_starts_a_new_one() {
        let (caps, mut state, mut log) = (caps(20, true), ReplyState::new(None), Vec::new());
        state.push("aaaa bbbb", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.push(" cccc dddd ee", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.push("ee ffff", &caps);
        drain(&mut state, &caps, true, &mut log);
        let expected = [
            send(0, "aaaa bbbb"),
            send(1, "ee"),
            edit(0, "m0", "aaaa bbbb cccc dddd"),
            edit(1, "m1", "eeee ffff"),
        ];
        assert_eq!(log, expected);
        assert!(state.parts[0].sealed && !state.parts[1].sealed);
    }

    #[test]
    fn without_edits_a_part_goes_out_only_when_final() {
        let (caps, mut state, mut log) = (caps(20, false), ReplyState::new(None), Vec::new());
        for word in ["aaaa ", "bbbb ", "cccc ", "dddd "] {
            state.push(word, &caps);
            drain(&mut state, &caps, false, &mut log);
        }
        assert!(log.is_empty(), "{log:?}");
        state.push("eeee", &caps);
        drain(&mut state, &caps, false, &mut log);
        assert_eq!(log, [send(0, "aaaa bbbb cccc dddd")]);
        drain(&mut state, &caps, true, &mut log);
        assert_eq!(log, [send(0, "aaaa bbbb cccc dddd"), send(1, "eeee")]);
    }

    #[test]
    fn streamed_parts_show_the_whole_text_and_sealed_parts_never_change() {
        let text = long_text();
        for can_edit in [true, false] {
            let (caps, mut state, mut log) =
                (caps(1000, can_edit), ReplyState::new(None), Vec::new());
            let (mut sealed, mut rest, mut step) = (Vec::<String>::new(), text.as_str(), 0);
            while !rest.is_empty() {
                step = step % 13 + 1;
                let at = (0..=step.min(rest.len()))
                    .rev()
                    .find(|&i| rest.is_char_boundary(i))
                    .unwrap_or(0);
                state.push(&rest[..at], &caps);
                rest = &rest[at..];
                drain(&mut state, &caps, false, &mut log);
                let now: Vec<String> = state
                    .parts
                    .iter()
                    .filter(|p| p.sealed)
                    .map(|p| p.text.clone())
                    .collect();
                assert!(now.starts_with(&sealed), "a sealed part changed");
                sealed = now;
            }
            drain(&mut state, &caps, true, &mut log);
            let shown: Vec<String> = state.parts.iter().map(|p| p.shown.clone()).collect();
            for (part, shown) in state.parts.iter().zip(&shown) {
                assert_eq!(&part.text, shown);
                assert!(
                    measure(shown, LengthUnit::Chars) <= 1000 && balanced(shown),
                    "{shown:?}"
                );
            }
            assert!(reassembles(&text, &shown), "streamed parts lost text");
            let sends = log
                .iter()
                .filter(|op| matches!(op, Op::Send { .. }))
                .count();
            assert_eq!(sends, state.parts.len(), "one message per part");
            assert!(can_edit || sends == log.len(), "edited without can_edit");
        }
    }

    #[test]
    fn a_resumed_reply_keeps_editing_its_messages() {
        let (caps, mut state, mut log) = (caps(20, true), ReplyState::new(None), Vec::new());
        state.push("aaaa bbbb cccc dddd eeee", &caps);
        drain(&mut state, &caps, false, &mut log);
        let mut resumed = state.clone(); // what the store hands back after a restart
        resumed.push(" ffff", &caps);
        assert_eq!(
            resumed.next_op(&caps, false),
            Some(edit(1, "m1", "eeee ffff"))
        );
    }

    #[test]
    fn a_blank_reply_asks_for_nothing() {
        let (caps, mut state) = (caps(20, true), ReplyState::new(None));
        state.push(" \n\n ", &caps);
        assert!(state.is_blank());
        assert_eq!(state.next_op(&caps, true), None);
    }

    fn draft(part: usize, text: &str) -> Op {
        Op::Draft {
            part,
            text: text.into(),
        }
    }

    #[test]
    fn with_drafts_the_growing_part_is_drafted_and_sent_once_final() {
        let caps = Capabilities {
            has_drafts: true,
            ..caps(20, true)
        };
        let (mut state, mut log) = (ReplyState::new(None), Vec::new());
        state.push("aaaa bbbb", &caps);
        drain(&mut state, &caps, false, &mut log);
        state.push(" cccc", &caps);
        drain(&mut state, &caps, false, &mut log);
        assert_eq!(state.current_draft(), Some(draft(0, "aaaa bbbb cccc")));
        state.push(" dddd eeee", &caps);
        drain(&mut state, &caps, false, &mut log);
        drain(&mut state, &caps, true, &mut log);
        let expected = [
            draft(0, "aaaa bbbb"),
            draft(0, "aaaa bbbb cccc"),
            send(0, "aaaa bbbb cccc dddd"),
            draft(1, "eeee"),
            send(1, "eeee"),
        ];
        assert_eq!(log, expected);
        assert_eq!(state.current_draft(), None, "nothing left to draft");
        let restarted: ReplyState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap_or_default())
                .unwrap_or_default();
        assert!(restarted.parts.iter().all(|p| p.drafted.is_empty()));
    }

    #[test]
    fn parts_do_not_end_inside_inline_spans() {
        let cut = |text, max| split(text, max, LengthUnit::Chars);
        // The space inside the bold text is the latest, but cutting there breaks the span.
        assert_eq!(
            cut("intro words **very bold text** tail", 28),
            ["intro words", "**very bold text** tail"]
        );
        assert_eq!(
            cut("see [the long link text](https://example.com/x) now", 45),
            ["see", "[the long link text](https://example.com/x)", "now"]
        );
        // A span longer than a message is cut inside rather than one character at a time.
        let long = format!("**{}**", "word ".repeat(10).trim_end());
        let parts = cut(&long, 20);
        assert!(
            parts.len() <= 4 && parts.iter().all(|p| p.len() <= 20),
            "{parts:?}"
        );
    }

    #[test]
    fn edits_wait_for_the_interval_after_any_write() {
        let t0 = Instant::now();
        let mut throttle = EditThrottle::new(Duration::from_secs(1));
        assert!(throttle.may_edit(t0) && throttle.due().is_none());
        throttle.wrote(t0);
        assert!(!throttle.may_edit(t0 + Duration::from_millis(999)));
        assert_eq!(throttle.due(), Some(t0 + Duration::from_secs(1)));
        assert!(throttle.may_edit(t0 + Duration::from_secs(1)));
    }
}
