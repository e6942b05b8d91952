//! Where a reply's text is cut into platform messages: measuring it as the platform counts,
//! and choosing each break point so that code blocks and inline spans survive the cut.
//!
//! [`split`] cuts a whole text; [`super::ReplyState::push`] cuts the growing tail of a streamed
//! reply with the same [`cut`], so both follow the rules in the parent module's docs.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::markdown;
use crate::LengthUnit;

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
pub(super) struct Fence {
    ticks: usize,
    info: String,
}

impl Fence {
    /// A fence from its parts (see [`Fence::parts`]), as a snapshot recorded it.
    pub(super) fn from_parts(ticks: usize, info: String) -> Self {
        Self { ticks, info }
    }

    /// How many backticks open it, and its info string.
    pub(super) fn parts(&self) -> (usize, &str) {
        (self.ticks, &self.info)
    }

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

/// Whether `text` ends inside a fenced code block: one it opens and does not close.
pub(super) fn ends_in_code(text: &str) -> bool {
    let mut open: Option<Fence> = None;
    for line in text.split('\n') {
        match &open {
            None => open = Fence::open(line),
            Some(fence) if fence.is_closed_by(line) => open = None,
            Some(_) => {}
        }
    }
    open.is_some()
}

/// What [`cut`] decided for the rest of a reply.
pub(super) enum Cut {
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
pub(super) fn cut(rest: &str, fence: Option<&Fence>, max_len: usize, unit: LengthUnit) -> Cut {
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
pub(super) mod tests {
    //! The splitting tests, and the long sample reply that the streaming tests share.

    use super::*;

    /// About 10,000 characters: prose, a 5,000-character code block and a short one.
    pub(in crate::reply) fn long_text() -> String {
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
    pub(in crate::reply) fn balanced(part: &str) -> bool {
        part.lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count()
            % 2
            == 0
    }

    /// Whether `parts` are `text` cut up, up to whitespace at the cuts and fences added there.
    pub(in crate::reply) fn reassembles(text: &str, parts: &[String]) -> bool {
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
}
