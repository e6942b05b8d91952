//! The agent's Markdown as Telegram HTML (`parse_mode = HTML`).
//!
//! HTML rather than MarkdownV2 because its escaping is three characters (`<`, `>`, `&`), so
//! any text the agent writes renders without an escaping mistake turning into a refused
//! message. Inline spans are the shared ones of [`crate::reply::markdown`], so a part the
//! splitter cut never ends inside one.
//!
//! The visible text is never longer than the Markdown (markers are dropped, bullets swap one
//! character for one), so a part within the length limit as Markdown is within it as shown;
//! the one exception is an empty code block, shown as `(empty)` (at most four units more
//! than its fences, for a block left unclosed).

use crate::reply::markdown::{escaped_len, inline_spans, SpanKind};

/// The most entities (formatted spans, links, code blocks) Telegram applies in one message;
/// it ignores the rest.
pub const MAX_ENTITIES: usize = 100;

/// Renders a reply part (or all of a reply) as Telegram HTML, with at most
/// [`MAX_ENTITIES`] entities: past them the text goes on plain, on purpose, rather than
/// with formatting Telegram would drop at random places.
pub fn to_html(markdown: &str) -> String {
    limit_entities(&render(markdown), MAX_ENTITIES)
}

/// Keeps the first `max` entities of our own HTML (tags from [`render`], text escaped) and
/// drops the tags of the others, keeping their text. A `<code class=…>` right inside a
/// `<pre>` is part of that block's entity, as Telegram counts it.
fn limit_entities(html: &str, max: usize) -> String {
    let mut out = String::with_capacity(html.len());
    // For each open tag: whether it was kept.
    let mut open: Vec<bool> = Vec::new();
    let (mut kept, mut rest, mut after_pre) = (0, html, None);
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let Some(gt) = rest[lt..].find('>') else {
            break;
        };
        let tag = &rest[lt..lt + gt + 1];
        rest = &rest[lt + gt + 1..];
        let keep = if tag.starts_with("</") {
            open.pop().unwrap_or(true)
        } else if let (Some(pre_kept), true) = (after_pre, tag.starts_with("<code")) {
            open.push(pre_kept);
            pre_kept
        } else {
            let keep = kept < max;
            kept += usize::from(keep);
            open.push(keep);
            keep
        };
        after_pre = (tag == "<pre>").then_some(keep);
        if keep {
            out.push_str(tag);
        }
    }
    out.push_str(rest);
    out
}

fn render(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + markdown.len() / 8);
    let mut lines = markdown.split('\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
        if let Some((ticks, info)) = fence_open(line) {
            let mut code = Vec::new();
            for line in lines.by_ref() {
                if closes(ticks, line) {
                    break;
                }
                code.push(line);
            }
            code_block(info, &code.join("\n"), &mut out);
        } else if let Some(quoted) = quote_line(line) {
            out.push_str("<blockquote>");
            inline(quoted, &mut out);
            while let Some(quoted) = lines.peek().and_then(|l| quote_line(l)) {
                out.push('\n');
                inline(quoted, &mut out);
                lines.next();
            }
            out.push_str("</blockquote>");
        } else {
            block_line(line, &mut out);
        }
    }
    out
}

/// An opening fence like the splitter's: up to three spaces, three or more backticks, an
/// info string without backticks. Returns the backtick count and the language.
fn fence_open(line: &str) -> Option<(usize, &str)> {
    let body = line.trim_start_matches(' ');
    let ticks = body.len() - body.trim_start_matches('`').len();
    let info = body[ticks..].trim();
    (line.len() - body.len() <= 3 && ticks >= 3 && !info.contains('`')).then_some((ticks, info))
}

fn closes(ticks: usize, line: &str) -> bool {
    let body = line.trim_start_matches(' ');
    let run = body.len() - body.trim_start_matches('`').len();
    line.len() - body.len() <= 3 && run >= ticks && body[run..].trim().is_empty()
}

/// What an empty code block shows: Telegram refuses a message whose only entity is an
/// empty `<pre>` ("message text is empty") and would show nothing of it anyway.
const EMPTY_BLOCK: &str = "(empty)";

fn code_block(info: &str, code: &str, out: &mut String) {
    let code = if code.trim().is_empty() {
        EMPTY_BLOCK
    } else {
        code
    };
    // The first word of the info string names the language; only a safe class name is used.
    let lang: String = info
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_+-#.".contains(*c))
        .collect();
    if lang.is_empty() {
        out.push_str("<pre>");
        escape(code, out);
        out.push_str("</pre>");
    } else {
        out.push_str("<pre><code class=\"language-");
        out.push_str(&lang);
        out.push_str("\">");
        escape(code, out);
        out.push_str("</code></pre>");
    }
}

fn quote_line(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches(' ').strip_prefix('>')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// One line outside code blocks and quotes: a heading, a list item, a rule, or text.
fn block_line(line: &str, out: &mut String) {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let hashes = trimmed.len() - trimmed.trim_start_matches('#').len();
    if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
        let title = trimmed[hashes..].trim().trim_end_matches('#').trim_end();
        out.push_str("<b>");
        inline(title, out);
        out.push_str("</b>");
        return;
    }
    let compact: String = trimmed.chars().filter(|c| *c != ' ').collect();
    let rule = compact.len() >= 3
        && ['-', '*', '_']
            .iter()
            .any(|m| compact.chars().all(|c| c == *m));
    if rule {
        out.push_str("———");
        return;
    }
    for bullet in ["- ", "* ", "+ "] {
        if let Some(item) = trimmed.strip_prefix(bullet) {
            out.push_str(indent);
            out.push_str("• ");
            inline(item, out);
            return;
        }
    }
    inline(line, out);
}

/// Renders one line's inline Markdown.
fn inline(line: &str, out: &mut String) {
    inline_in(line, false, out);
}

/// Renders inline Markdown, inside a link's text if `in_link`: Telegram shows no code
/// inside a link, so there a code span is plain text.
fn inline_in(line: &str, in_link: bool, out: &mut String) {
    let mut pos = 0;
    for span in inline_spans(line) {
        text(&line[pos..span.outer.start], out);
        let inner = &line[span.inner.clone()];
        let tag = match span.kind {
            SpanKind::Code if in_link => {
                escape(inner, out);
                pos = span.outer.end;
                continue;
            }
            SpanKind::Code => {
                out.push_str("<code>");
                escape(inner, out);
                out.push_str("</code>");
                pos = span.outer.end;
                continue;
            }
            SpanKind::Link => {
                let url = span.url.clone().map(|u| &line[u]).unwrap_or_default();
                if is_safe_url(url) {
                    out.push_str("<a href=\"");
                    escape_attr(url, out);
                    out.push_str("\">");
                    inline_in(inner, true, out);
                    out.push_str("</a>");
                } else {
                    text(&line[span.outer.clone()], out);
                }
                pos = span.outer.end;
                continue;
            }
            SpanKind::Bold => "b",
            SpanKind::Italic => "i",
            SpanKind::Strike => "s",
            SpanKind::Spoiler => "tg-spoiler",
        };
        out.push('<');
        out.push_str(tag);
        out.push('>');
        inline_in(inner, in_link, out);
        out.push_str("</");
        out.push_str(tag);
        out.push('>');
        pos = span.outer.end;
    }
    text(&line[pos..], out);
}

/// Links the user can follow safely; others stay text (no `javascript:` and the like).
fn is_safe_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://", "tg://", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// Plain text: backslash escapes resolved (CommonMark: before ASCII punctuation), HTML
/// escaped.
fn text(s: &str, out: &mut String) {
    let mut i = 0;
    while let Some(at) = s[i..].find('\\').map(|n| i + n) {
        escape(&s[i..at], out);
        let len = escaped_len(s, at);
        let escaped = &s[at + 1..at + len];
        if escaped.len() == 1 && escaped.bytes().all(|b| b.is_ascii_punctuation()) {
            escape(escaped, out);
        } else {
            escape(&s[at..at + len], out);
        }
        i = at + len;
    }
    escape(&s[i..], out);
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            c => escape(c.encode_utf8(&mut [0; 4]), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::split;
    use crate::LengthUnit;

    /// What Telegram shows of some HTML: tags dropped, entities decoded.
    fn visible(html: &str) -> String {
        let mut out = String::new();
        let mut rest = html;
        while let Some(lt) = rest.find('<') {
            out.push_str(&rest[..lt]);
            rest = rest[lt..].split_once('>').map_or("", |(_, r)| r);
        }
        out.push_str(rest);
        out.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    }

    #[test]
    fn inline_markdown_becomes_tags_and_text_is_escaped() {
        assert_eq!(
            to_html("**bold** *it* `a<b` ~~s~~ ||x|| [go](https://e.x/?a=1&b=\"2\") 1 < 2 & 3"),
            "<b>bold</b> <i>it</i> <code>a&lt;b</code> <s>s</s> <tg-spoiler>x</tg-spoiler> \
             <a href=\"https://e.x/?a=1&amp;b=&quot;2&quot;\">go</a> 1 &lt; 2 &amp; 3"
        );
        assert_eq!(
            to_html("**bold with *italic* inside**"),
            "<b>bold with <i>italic</i> inside</b>"
        );
        assert_eq!(
            to_html(r"\*not italic\* snake_case"),
            "*not italic* snake_case"
        );
        assert_eq!(
            to_html("[x](javascript:alert(1))"),
            "[x](javascript:alert(1))"
        );
    }

    #[test]
    fn blocks_become_pre_bold_bullets_and_quotes() {
        let md = "# Title\n\nSome text:\n```rust\nfn main() { a < b }\n```\n- one\n  * two\n> quoted\n> more\n---";
        assert_eq!(
            to_html(md),
            "<b>Title</b>\n\nSome text:\n<pre><code class=\"language-rust\">fn main() { a &lt; b }</code></pre>\n\
             • one\n  • two\n<blockquote>quoted\nmore</blockquote>\n———"
        );
        assert_eq!(to_html("```\n**not bold**\n```"), "<pre>**not bold**</pre>");
        assert_eq!(
            to_html("```\n```"),
            "<pre>(empty)</pre>",
            "never an empty message"
        );
        assert_eq!(
            to_html("```sh\n  \n```"),
            "<pre><code class=\"language-sh\">(empty)</code></pre>"
        );
        assert_eq!(
            to_html("```py\nunclosed while streaming"),
            "<pre><code class=\"language-py\">unclosed while streaming</code></pre>"
        );
    }

    #[test]
    fn past_a_hundred_entities_the_text_goes_on_plain() {
        let md: String = (1..=120).map(|n| format!("**b{n}** ")).collect();
        let html = to_html(&md);
        assert_eq!(html.matches("<b>").count(), MAX_ENTITIES);
        assert_eq!(html.matches("</b>").count(), MAX_ENTITIES);
        assert!(html.ends_with("b101 b102 b103 b104 b105 b106 b107 b108 b109 b110 b111 b112 b113 b114 b115 b116 b117 b118 b119 b120 "));
        let block = limit_entities(
            "<b>x</b><pre><code class=\"language-rs\">y</code></pre><i>z</i>",
            2,
        );
        assert_eq!(
            block,
            "<b>x</b><pre><code class=\"language-rs\">y</code></pre>z"
        );
        let nested = limit_entities("<b>a<i>b</i>c</b><s>d</s>", 1);
        assert_eq!(nested, "<b>abc</b>d");
    }

    #[test]
    fn link_text_has_no_code_inside() {
        assert_eq!(
            to_html("see [`cargo test`](https://doc.rust-lang.org) and `x`"),
            "see <a href=\"https://doc.rust-lang.org\">cargo test</a> and <code>x</code>"
        );
    }

    #[test]
    fn the_visible_text_is_never_longer_than_the_markdown() {
        let samples = [
            "# Head\n**b** _i_ `c` [l](https://x.y) ||s|| ~~d~~ \\* a < b & c > d",
            "```rust\nlet x = \"<&>\";\n```\n> q\n- item\n1. first\n***",
            "plain text with émoji 😀 and no markup",
        ];
        for md in samples {
            let shown = visible(&to_html(md));
            assert!(
                shown.encode_utf16().count() <= md.encode_utf16().count(),
                "{md:?} shows as {shown:?}"
            );
        }
    }

    #[test]
    fn split_parts_each_render_without_stray_markers() {
        let md =
            "Some **bold words here** and a [link text](https://e.x) then more words. ".repeat(40);
        for part in split(&md, 200, LengthUnit::Utf16) {
            let shown = visible(&to_html(&part));
            assert!(
                !shown.contains("**") && !shown.contains("]("),
                "{part:?} -> {shown:?}"
            );
        }
    }
}
