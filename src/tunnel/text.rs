//! HTML to readable text, for `web_fetch`: what an agent needs is the words and the links,
//! not the markup.
//!
//! A small forgiving scanner rather than a full HTML parser: it drops `head`, `script`,
//! `style` and similar, turns block elements into line breaks, list items into `- ` lines
//! and headings into `# ` lines, keeps `pre` as it is, decodes the common entities,
//! collapses whitespace, and writes a link as `text (target)` with the target made absolute.
//! It reads the page as it arrives ([`HtmlText`]): only an unfinished tag or entity at the
//! end of a piece is held for the next one.

use reqwest::Url;

/// Elements whose content is not text for a reader; skipped up to their end tag.
const SKIPPED: &[&str] = &[
    "head", "title", "script", "style", "noscript", "template", "svg", "math", "iframe", "object",
    "canvas", "select", "button",
];

/// Elements that begin a new line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hr",
    "html",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "section",
    "summary",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "tr",
    "ul",
];

/// Convert an HTML document to text; `base` makes relative link targets absolute.
#[cfg(test)]
fn html_to_text(html: &str, base: Option<&Url>) -> String {
    let mut text = HtmlText::new(base.cloned());
    text.push(html);
    text.finish()
}

/// The longest markup construct (a tag, a comment's opening, an entity) held back while
/// waiting for the rest of it; one that is longer is read as text, as a lone `<` is.
const HELD_MAX: usize = 16 * 1024;

/// HTML to text as the page arrives: each piece is converted as far as it can be, and only
/// an unfinished tag, comment opening or entity at its end is held until the next one, so a
/// page is never held whole, only its text.
#[derive(Debug)]
pub(crate) struct HtmlText {
    base: Option<Url>,
    out: Writer,
    /// A link being written: its target, and where its text begins in `out`.
    link: Option<(String, usize)>,
    /// Input not converted yet (an unfinished construct at the end of the last piece).
    held: String,
    /// Inside a comment.
    comment: bool,
    /// Inside an element whose content is not text (`script`, `style`, ...): its name.
    skipping: Option<String>,
    /// The text of the `<title>` being read, shown first if nothing is shown yet.
    title: Option<String>,
}

impl HtmlText {
    /// A converter; `base` makes relative link targets absolute.
    pub(crate) fn new(base: Option<Url>) -> Self {
        Self {
            base,
            out: Writer::default(),
            link: None,
            held: String::new(),
            comment: false,
            skipping: None,
            title: None,
        }
    }

    /// Converts the next piece of the page.
    pub(crate) fn push(&mut self, html: &str) {
        self.held.push_str(html);
        let input = std::mem::take(&mut self.held);
        let used = self.convert(&input, false);
        self.held = input[used..].to_string();
    }

    /// The text of the whole page.
    pub(crate) fn finish(mut self) -> String {
        let input = std::mem::take(&mut self.held);
        self.convert(&input, true);
        self.out.finish()
    }

    /// Converts `input` as far as it can; returns how many bytes it used. At the `end` of
    /// the page everything is used.
    fn convert(&mut self, input: &str, end: bool) -> usize {
        let mut rest = input;
        let used = |rest: &str| input.len() - rest.len();
        loop {
            if self.comment {
                match rest.find("-->") {
                    Some(at) => {
                        rest = &rest[at + 3..];
                        self.comment = false;
                        continue;
                    }
                    // The last two bytes may begin the `-->`.
                    None if end => return input.len(),
                    None => {
                        return used(&rest[floor_boundary(rest, rest.len().saturating_sub(2))..])
                    }
                }
            }
            if let Some(name) = self.skipping.clone() {
                match end_of_element(rest, &name) {
                    Some((content, after)) => {
                        self.skipped(&rest[..content], true);
                        rest = &rest[after..];
                        self.skipping = None;
                        continue;
                    }
                    None if end => {
                        self.skipped(rest, false);
                        return input.len();
                    }
                    None => {
                        // Keep what may begin the end tag (from the last `<`).
                        let keep = match rest.rfind('<') {
                            Some(at) if rest.len() - at < HELD_MAX => at,
                            _ => rest.len(),
                        };
                        self.skipped(&rest[..keep], false);
                        return used(&rest[keep..]);
                    }
                }
            }
            let Some(lt) = rest.find('<') else {
                let keep = if end {
                    rest.len()
                } else {
                    unfinished_entity(rest)
                };
                self.out.text(&decode_entities(&rest[..keep]));
                return used(&rest[keep..]);
            };
            self.out.text(&decode_entities(&rest[..lt]));
            rest = &rest[lt..];
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = after;
                self.comment = true;
                continue;
            }
            let tag = Tag::parse(rest);
            // Wait for the rest of a tag (or of what may become one) cut by this piece.
            let cut = match &tag {
                Some(tag) => !tag.complete,
                None => rest.len() < 3 || "<!--".starts_with(rest),
            };
            if !end && cut && rest.len() < HELD_MAX {
                return used(rest);
            }
            let Some(tag) = tag else {
                // A lone `<` in text.
                self.out.text("<");
                rest = &rest[1..];
                continue;
            };
            rest = &rest[tag.len..];
            self.tag(&tag);
        }
    }

    /// Content of a skipped element; `closed` when its end tag came.
    fn skipped(&mut self, content: &str, closed: bool) {
        let Some(title) = self.title.as_mut() else {
            return;
        };
        if title.len() < 1024 {
            title.push_str(content);
        }
        if closed {
            let title = decode_entities(&std::mem::take(title));
            self.title = None;
            let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
            // The page's name heads its text, unless text came before it.
            if !title.is_empty() && self.out.buf.is_empty() {
                self.out.text(&title);
                self.out.block(2);
            }
        }
    }

    fn tag(&mut self, tag: &Tag) {
        let name = tag.name.as_str();
        let out = &mut self.out;
        // The head is not skipped whole, as other such elements are: its title is the
        // page's name, and what else it holds (style, script) is skipped on its own.
        if name != "head" && !tag.closing && SKIPPED.contains(&name) && !tag.self_closing {
            self.skipping = Some(name.to_string());
            if name == "title" {
                self.title = Some(String::new());
            }
            return;
        }
        match (name, tag.closing) {
            ("br", _) => out.line_break(),
            ("pre", false) => {
                out.block(1);
                out.pre += 1;
            }
            ("pre", true) => {
                out.pre = out.pre.saturating_sub(1);
                out.block(1);
            }
            ("li", false) => {
                out.block(1);
                out.text("- ");
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6", false) => {
                out.block(2);
                let level = name[1..].parse().unwrap_or(1);
                out.text(&"#".repeat(level));
                out.text(" ");
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "p", _) => out.block(2),
            ("td" | "th", false) => out.text(" "),
            ("a", false) => {
                self.link = tag
                    .attr("href")
                    .and_then(|href| link_target(&href, self.base.as_ref()))
                    .map(|target| (target, out.buf.len()));
            }
            ("a", true) => {
                if let Some((target, start)) = self.link.take() {
                    let shown = out.buf.get(start..).unwrap_or("").trim();
                    if !shown.is_empty() && shown != target {
                        out.text(&format!(" ({target})"));
                    }
                }
            }
            ("img", _) => {
                if let Some(alt) = tag.attr("alt").filter(|a| !a.trim().is_empty()) {
                    out.text(&format!("[{}]", alt.trim()));
                }
            }
            _ if BLOCKS.contains(&name) => out.block(1),
            _ => {}
        }
    }
}

/// Where an entity at the end of `text` that may not be complete yet begins (`text.len()`
/// if there is none): a `&` followed by at most a few name characters and no `;`.
fn unfinished_entity(text: &str) -> usize {
    match text.rfind('&') {
        Some(at)
            if text.len() - at <= 12
                && text[at + 1..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '#') =>
        {
            at
        }
        _ => text.len(),
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The end tag of `name` in `rest`: where the element's content ends and where what
/// follows the end tag begins; `None` if it has not come (completely) yet.
fn end_of_element(rest: &str, name: &str) -> Option<(usize, usize)> {
    let close = format!("</{name}");
    let mut from = 0;
    while let Some(at) = find_ignore_case(&rest[from..], &close) {
        let start = from + at;
        let after = &rest[start..];
        match after.as_bytes().get(close.len()).copied() {
            Some(b) if b == b'>' || b.is_ascii_whitespace() || b == b'/' => {
                return after.find('>').map(|gt| (start, start + gt + 1));
            }
            None => return None,
            Some(_) => from = start + close.len(),
        }
    }
    None
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A link worth showing: http(s), absolute.
fn link_target(href: &str, base: Option<&Url>) -> Option<String> {
    let href = decode_entities(href.trim());
    let url = match base {
        Some(base) => base.join(&href).ok()?,
        None => Url::parse(&href).ok()?,
    };
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// One start or end tag.
#[derive(Debug)]
struct Tag {
    /// Lower-case element name (empty for `<!doctype>` and the like).
    name: String,
    closing: bool,
    self_closing: bool,
    /// The raw attribute text.
    attrs: String,
    /// Bytes from `<` to `>` inclusive.
    len: usize,
    /// Whether its `>` came (else it runs to the end of the input).
    complete: bool,
}

impl Tag {
    /// Parse the tag at the start of `s` (which begins with `<`); `None` if it is not one.
    fn parse(s: &str) -> Option<Tag> {
        let bytes = s.as_bytes();
        let mut i = 1;
        let closing = bytes.get(i) == Some(&b'/');
        if closing {
            i += 1;
        }
        let special = matches!(bytes.get(i), Some(b'!' | b'?'));
        if !special && !bytes.get(i)?.is_ascii_alphabetic() {
            return None;
        }
        let name_start = i;
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b':')
        {
            i += 1;
        }
        let name = s[name_start..i].to_ascii_lowercase();
        // Find the closing `>`, honouring quoted attribute values.
        let attrs_start = i;
        let mut quote = None;
        while let Some(&b) = bytes.get(i) {
            match (quote, b) {
                (None, b'>') => break,
                (None, b'"' | b'\'') => quote = Some(b),
                (Some(q), _) if q == b => quote = None,
                _ => {}
            }
            i += 1;
        }
        let attrs = s.get(attrs_start..i).unwrap_or("");
        let self_closing = attrs.trim_end().ends_with('/');
        let complete = i < bytes.len();
        Some(Tag {
            complete,
            name: if special { String::new() } else { name },
            closing,
            self_closing,
            attrs: attrs.to_string(),
            len: (i + 1).min(s.len()),
        })
    }

    /// The value of attribute `name`, if present.
    fn attr(&self, name: &str) -> Option<String> {
        let mut rest = self.attrs.as_str();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
            if rest.is_empty() {
                return None;
            }
            let key_end = rest
                .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
                .unwrap_or(rest.len());
            let key = &rest[..key_end];
            rest = rest[key_end..].trim_start();
            let value = if let Some(after) = rest.strip_prefix('=') {
                let after = after.trim_start();
                let (value, next) = match after.chars().next() {
                    Some(q @ ('"' | '\'')) => {
                        let body = &after[1..];
                        let end = body.find(q).unwrap_or(body.len());
                        (&body[..end], body.get(end + 1..).unwrap_or(""))
                    }
                    _ => {
                        let end = after.find(char::is_whitespace).unwrap_or(after.len());
                        (&after[..end], &after[end..])
                    }
                };
                rest = next;
                Some(value)
            } else {
                None
            };
            if key.eq_ignore_ascii_case(name) {
                return Some(value.unwrap_or("").to_string());
            }
        }
    }
}

/// Decode character references: the common named ones and every numeric one.
pub(crate) fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest
            .char_indices()
            .skip(1)
            .take(12)
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '#'))
            .map_or(rest.len().min(13), |(i, _)| i);
        let name = &rest[1..end];
        match entity(name) {
            Some(c) => {
                out.push(c);
                let consumed = end + usize::from(rest[end..].starts_with(';'));
                rest = &rest[consumed..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return Some(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "times" => '×',
        "euro" => '€',
        "pound" => '£',
        "para" => '¶',
        "sect" => '§',
        "larr" => '←',
        "rarr" => '→',
        _ => return None,
    })
}

/// Builds the text: collapses whitespace outside `pre`, and blank lines to one.
#[derive(Debug, Default)]
struct Writer {
    buf: String,
    /// A space is due before the next word.
    space: bool,
    /// Line breaks due before the next word (1 = new line, 2 = blank line).
    breaks: usize,
    /// Depth of `pre` elements.
    pre: usize,
}

impl Writer {
    fn text(&mut self, text: &str) {
        for c in text.chars() {
            if self.pre > 0 {
                if c == '\n' {
                    self.buf.push('\n');
                } else {
                    self.flush();
                    self.buf.push(if c == '\u{a0}' { ' ' } else { c });
                }
            } else if c.is_whitespace() {
                self.space = true;
            } else {
                self.flush();
                self.buf.push(c);
            }
        }
    }

    /// Emit due breaks or a due space before visible text.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            self.breaks = 0;
            self.space = false;
            return;
        }
        if self.breaks > 0 {
            let trimmed = self.buf.trim_end_matches([' ', '\t']).len();
            self.buf.truncate(trimmed);
            let have = self.buf.len() - self.buf.trim_end_matches('\n').len();
            for _ in have..self.breaks {
                self.buf.push('\n');
            }
        } else if self.space && !self.buf.ends_with(['\n', ' ']) {
            self.buf.push(' ');
        }
        self.breaks = 0;
        self.space = false;
    }

    fn block(&mut self, lines: usize) {
        self.breaks = self.breaks.max(lines);
    }

    fn line_break(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        self.flush();
        self.buf.push('\n');
        self.space = false;
    }

    fn finish(self) -> String {
        let mut lines: Vec<&str> = Vec::new();
        let mut blank = false;
        for line in self.buf.lines().map(str::trim_end) {
            if line.trim().is_empty() {
                blank = !lines.is_empty();
                continue;
            }
            if blank {
                lines.push("");
                blank = false;
            }
            lines.push(line);
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_becomes_readable_text() {
        let html = r#"<!DOCTYPE html>
<html><head><title>The  Title &amp; more</title>
<style>body { color: red }</style><script>var x = "<p>not text</p>";</script></head>
<body>
  <!-- a comment <p>hidden</p> -->
  <h1>Main   heading</h1>
  <p>First paragraph with <b>bold</b> and <a href="/docs?a=1&amp;b=2">a link</a>.</p>
  <p>Second&nbsp;one: 3 &lt; 4 &#8212; &#x263A; &unknown; AT&T</p>
  <ul><li>one</li><li>two <a href="https://example.com/">https://example.com/</a></li></ul>
  <pre>  keep
    this</pre>
  <div>line<br>broken</div>
  <SCRIPT type="text/javascript">alert("<b>no</b>")</SCRIPT>
  <a href="javascript:alert(1)">js link</a> <img src="x.png" alt="a cat">
</body></html>"#;
        let base = Url::parse("https://site.test/page").ok();
        let text = html_to_text(html, base.as_ref());
        assert_eq!(
            text,
            "The Title & more\n\
             \n\
             # Main heading\n\
             \n\
             First paragraph with bold and a link (https://site.test/docs?a=1&b=2).\n\
             \n\
             Second one: 3 < 4 — ☺ &unknown; AT&T\n\
             \n\
             - one\n\
             - two https://example.com/\n\
             \x20 keep\n\
             \x20   this\n\
             line\n\
             broken\n\
             js link [a cat]"
        );
    }

    #[test]
    fn broken_markup_does_not_lose_text() {
        assert_eq!(html_to_text("a < b and c>d", None), "a < b and c>d");
        assert_eq!(
            html_to_text("<p>open <b>never closed", None),
            "open never closed"
        );
        assert_eq!(html_to_text("<script>never closed", None), "");
        assert_eq!(
            html_to_text(r#"<p title="a > b">quoted</p>"#, None),
            "quoted"
        );
        assert_eq!(html_to_text("x<!-- unterminated", None), "x");
        assert_eq!(html_to_text("", None), "");
    }

    /// Any cut of the page into pieces gives the text of the whole page.
    #[test]
    fn a_page_in_pieces_reads_as_the_whole_page() {
        let html = concat!(
            "<html><head><title>T &amp; t</title><style>p { x: 1 }</style></head><body>",
            "<!-- c <p>no</p> --><h2>Head</h2><p title=\"a > b\">one &amp; two &euro;",
            "</p><script>if (a < b) { x = \"</p>\" }</script><a href=\"/x\">link</a> &#8212;",
            "<pre> a\n  b</pre>tail &lt; end</body></html>"
        );
        let base = Url::parse("https://site.test/").ok();
        let whole = html_to_text(html, base.as_ref());
        assert!(
            whole.starts_with("T & t\n\n## Head\n\none & two €"),
            "{whole}"
        );
        for size in 1..html.len() {
            let mut text = HtmlText::new(base.clone());
            let mut rest = html;
            while !rest.is_empty() {
                let at = floor_boundary(rest, size.min(rest.len()));
                let at = if at == 0 { rest.len() } else { at };
                text.push(&rest[..at]);
                rest = &rest[at..];
            }
            assert_eq!(text.finish(), whole, "pieces of {size} bytes");
        }
    }

    #[test]
    fn entities_decode() {
        assert_eq!(
            decode_entities("&lt;a&gt; &quot;q&quot; &#39;s&#39;"),
            "<a> \"q\" 's'"
        );
        assert_eq!(decode_entities("&#0;&#xD800;"), "\u{0}\u{fffd}");
        assert_eq!(decode_entities("fish & chips &amp"), "fish & chips &");
        assert_eq!(decode_entities("ünïcode &euro;5"), "ünïcode €5");
    }

    #[test]
    fn attributes_parse_in_all_quotings() {
        let tag = Tag::parse(r#"<a class=x href='/a b' data-x="1">"#);
        assert_eq!(
            tag.as_ref().and_then(|t| t.attr("href")),
            Some("/a b".into())
        );
        assert_eq!(tag.as_ref().and_then(|t| t.attr("class")), Some("x".into()));
        let tag = Tag::parse("<a HREF=/plain>");
        assert_eq!(tag.and_then(|t| t.attr("href")), Some("/plain".into()));
    }
}
