//! Telegram's HTML parse mode, as far as the fake checks it: the tags it knows, that they
//! balance, that `<` and `&` are escaped, and what text the user then sees.

/// The tags Telegram's HTML parse mode knows.
const TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
];

/// What Telegram shows of an HTML text, or why it cannot parse it.
pub fn visible_html(html: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                let end = rest.find('>').ok_or("unclosed start tag")?;
                let tag = &rest[1..end];
                if let Some(name) = tag.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    if open.pop().as_deref() != Some(name.as_str()) {
                        return Err(format!("unmatched end tag {name}"));
                    }
                } else {
                    let name = tag
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if !TAGS.contains(&name.as_str()) {
                        return Err(format!("unsupported start tag \"{name}\""));
                    }
                    open.push(name);
                }
                rest = &rest[end + 1..];
            }
            '&' => {
                let end = rest.find(';').ok_or("unescaped &")?;
                let entity = &rest[1..end];
                let decoded = match entity {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    _ => entity
                        .strip_prefix('#')
                        .and_then(|n| n.parse::<u32>().ok())
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("unknown entity &{entity};"))?,
                };
                out.push(decoded);
                rest = &rest[end + 1..];
            }
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    match open.pop() {
        Some(tag) => Err(format!(
            "can't find end tag corresponding to start tag \"{tag}\""
        )),
        None => Ok(out),
    }
}

/// Telegram applies at most this many entities to a message and ignores the rest.
const MAX_ENTITIES: usize = 100;

/// How many entities of an HTML text (checked by [`visible_html`]) Telegram ignores: those
/// past the 100th (a `<code>` right inside `<pre>` is part of the block's entity), and code
/// inside a link, which Telegram does not show as code.
pub fn ignored_entities(html: &str) -> usize {
    let (mut count, mut ignored, mut open, mut after_pre) = (0usize, 0usize, Vec::new(), false);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        let Some(gt) = rest[lt..].find('>') else {
            break;
        };
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if tag.starts_with('/') {
            open.pop();
            after_pre = false;
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name == "code" && open.iter().any(|t: &String| t == "a") {
            ignored += 1;
        }
        if !(name == "code" && after_pre) {
            count += 1;
        }
        after_pre = name == "pre";
        open.push(name);
    }
    ignored + count.saturating_sub(MAX_ENTITIES)
}
