//! Inline Markdown spans: the one notion of them that splitting and formatting share.
//!
//! A reply is cut into parts on its Markdown, and each part is then formatted on its own (into
//! Telegram HTML, for one). A cut inside `**bold text**` would leave each half with a lone
//! marker, shown literally. So [`super::split`] never ends a part inside a span found here
//! when it has any other choice, and formatters render exactly these spans: what the one
//! protects, the other formats.
//!
//! Spans never cross a line. Chat Markdown rarely does, and it keeps every line break a safe
//! place to cut.

use std::ops::Range;

/// What an inline span means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// `` `code` ``: shown as is, nothing inside is Markdown.
    Code,
    /// `**bold**` or `__bold__`.
    Bold,
    /// `*italic*` or `_italic_`.
    Italic,
    /// `~~struck~~`.
    Strike,
    /// `||hidden||`, a spoiler where the platform has them.
    Spoiler,
    /// `[text](url)`.
    Link,
}

/// One inline span of a line, in byte offsets into that line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// What it means.
    pub kind: SpanKind,
    /// From the opening marker to the end of the closing one: the range a cut must avoid.
    pub outer: Range<usize>,
    /// What the markers enclose (a link's text); spans nested in it are found by calling
    /// [`inline_spans`] on it.
    pub inner: Range<usize>,
    /// A link's destination.
    pub url: Option<Range<usize>>,
}

/// The outermost spans of one line, in order and not overlapping.
///
/// The rules are a small, predictable part of CommonMark: an opening marker is followed by a
/// non-space and a closing one preceded by a non-space (so `2 * 3 * 4` stays text); `_` only
/// counts at word edges (so `snake_case_name` stays text); a backslash makes the next
/// character literal; code spans end at the same number of backticks and hide what is in
/// them; a marker without its partner is just text.
pub fn inline_spans(line: &str) -> Vec<Span> {
    let bytes = line.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let found = match bytes[i] {
            b'\\' => {
                i += escaped_len(line, i);
                continue;
            }
            b'`' => code_span(line, i),
            b'[' => link(line, i),
            b'*' | b'_' | b'~' | b'|' => emphasis(line, i),
            _ => None,
        };
        match found {
            Some(span) => {
                i = span.outer.end;
                spans.push(span);
            }
            None => i += run_len(bytes, i).max(1),
        }
    }
    spans
}

/// How many bytes a backslash at `at` and the character it escapes take.
pub fn escaped_len(line: &str, at: usize) -> usize {
    1 + line[at + 1..].chars().next().map_or(0, char::len_utf8)
}

/// The length of the run of identical bytes starting at `at`.
fn run_len(bytes: &[u8], at: usize) -> usize {
    bytes[at..].iter().take_while(|&&b| b == bytes[at]).count()
}

fn code_span(line: &str, at: usize) -> Option<Span> {
    let bytes = line.as_bytes();
    let ticks = run_len(bytes, at);
    let mut j = at + ticks;
    while j < bytes.len() {
        if bytes[j] == b'`' {
            let run = run_len(bytes, j);
            if run == ticks {
                return Some(Span {
                    kind: SpanKind::Code,
                    outer: at..j + run,
                    inner: at + ticks..j,
                    url: None,
                });
            }
            j += run;
        } else {
            j += 1;
        }
    }
    None
}

fn link(line: &str, at: usize) -> Option<Span> {
    let close = at + 1 + find_unescaped(&line[at + 1..], b']')?;
    let rest = line.get(close + 1..)?;
    if close == at + 1 || !rest.starts_with('(') {
        return None;
    }
    let url_start = close + 2;
    let url_len = line[url_start..].find(')')?;
    let url = url_start..url_start + url_len;
    if url.is_empty() || line[url.clone()].contains(char::is_whitespace) {
        return None;
    }
    Some(Span {
        kind: SpanKind::Link,
        outer: at..url.end + 1,
        inner: at + 1..close,
        url: Some(url),
    })
}

/// The byte offset of the first `wanted` in `text` that no backslash escapes.
fn find_unescaped(text: &str, wanted: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += escaped_len(text, i),
            b if b == wanted => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn is_space(c: Option<char>) -> bool {
    c.is_none_or(char::is_whitespace)
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

fn emphasis(line: &str, at: usize) -> Option<Span> {
    let bytes = line.as_bytes();
    let marker = bytes[at];
    let run = run_len(bytes, at);
    let (width, kind) = match marker {
        b'~' if run >= 2 => (2, SpanKind::Strike),
        b'|' if run >= 2 => (2, SpanKind::Spoiler),
        b'*' | b'_' if run >= 2 => (2, SpanKind::Bold),
        b'*' | b'_' => (1, SpanKind::Italic),
        _ => return None,
    };
    let before = line[..at].chars().next_back();
    let after = line[at + width..].chars().next();
    if is_space(after) || (marker == b'_' && is_word(before)) {
        return None;
    }
    let mut j = at + width;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += escaped_len(line, j),
            b'`' => j = code_span(line, j).map_or(j + run_len(bytes, j), |s| s.outer.end),
            b if b == marker => {
                // A closing run ends the span with its last `width` markers, so that
                // `***both***` is bold around italic.
                let run = run_len(bytes, j);
                let close = j + run - width;
                let before = line[..close].chars().next_back();
                let after = line[close + width..].chars().next();
                let fits = run >= width && close > at + width;
                if fits && !is_space(before) && !(marker == b'_' && is_word(after)) {
                    return Some(Span {
                        kind,
                        outer: at..close + width,
                        inner: at + width..close,
                        url: None,
                    });
                }
                j += run;
            }
            _ => j += 1,
        }
    }
    None
}

/// Characters that are markup more often than text: a part made only of these (and fence
/// lines and whitespace) may render as nothing at all.
const MARKUP: &str = "*_~`>#|";

/// Whether a part of a reply shows something once formatted: a character outside fence
/// lines that is neither whitespace nor markup. A part that opens with a code fence (just
/// ```` ```rust ````) renders as an empty block, which platforms refuse or show as nothing,
/// so the first send of a streamed part waits for visible text. Errs towards "not visible":
/// holding a send a moment too long costs nothing, sending an empty message costs the reply.
pub fn has_visible_text(part: &str) -> bool {
    part.lines()
        .filter(|line| {
            let body = line.trim_start();
            !(body.starts_with("```") || body.starts_with("~~~"))
        })
        .flat_map(str::chars)
        .any(|c| !c.is_whitespace() && !MARKUP.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spans of `line` as (kind, outer text).
    fn spans(line: &str) -> Vec<(SpanKind, &str)> {
        inline_spans(line)
            .into_iter()
            .map(|s| (s.kind, &line[s.outer]))
            .collect()
    }

    #[test]
    fn fences_markers_and_blanks_are_not_visible_text() {
        for blank in [
            "",
            "  \n",
            "```rust\n",
            "```\n```",
            "**",
            "> ",
            "# ",
            "```\n\n```\n",
        ] {
            assert!(!has_visible_text(blank), "{blank:?}");
        }
        for shown in ["a", "```\nx\n```", "- ", "😀", "```sh\n$ ls"] {
            assert!(has_visible_text(shown), "{shown:?}");
        }
    }

    #[test]
    fn finds_each_kind_of_span() {
        use SpanKind::*;
        assert_eq!(
            spans("a **b c** and *d* or _e_ ~~f~~ ||g|| `h *i*` [j k](https://x.y/z)"),
            [
                (Bold, "**b c**"),
                (Italic, "*d*"),
                (Italic, "_e_"),
                (Strike, "~~f~~"),
                (Spoiler, "||g||"),
                (Code, "`h *i*`"),
                (Link, "[j k](https://x.y/z)"),
            ]
        );
    }

    #[test]
    fn markers_that_are_just_text_stay_text() {
        for line in [
            "2 * 3 * 4",
            "snake_case_name and other_name",
            "** not bold **",
            "a lone * star",
            r"\*escaped\*",
            "`unclosed code",
            "[not a link] (x)",
            "[empty]()",
            "~single~",
        ] {
            assert_eq!(spans(line), [], "{line}");
        }
    }

    #[test]
    fn nesting_is_found_one_level_at_a_time() {
        let line = "***both*** then **bold `code**` end**";
        let outer = inline_spans(line);
        assert_eq!(outer.len(), 2);
        assert_eq!(&line[outer[0].inner.clone()], "*both*");
        assert_eq!(&line[outer[1].inner.clone()], "bold `code**` end");
        let inner = inline_spans(&line[outer[0].inner.clone()]);
        assert_eq!(inner[0].kind, SpanKind::Italic);
    }

    #[test]
    fn code_spans_need_the_same_number_of_backticks() {
        assert_eq!(spans("``a ` b`` c"), [(SpanKind::Code, "``a ` b``")]);
    }

    #[test]
    fn multibyte_text_is_handled_on_char_boundaries() {
        assert_eq!(spans("é*ü*😀 \\😀"), [(SpanKind::Italic, "*ü*")]);
    }
}
