//! The agent's Markdown in Discord's formatting.
//!
//! Discord renders the Markdown agents write (bold, italics, code spans, fenced code
//! blocks with languages, headings, lists, quotes, links) as it is, so the text goes out
//! unchanged: what the user sees is exactly what the agent produced. Mentions inside it
//! (`@everyone`, `<@&role>`) stay text: every send and edit carries `allowed_mentions`
//! (see [`super::adapter`]), which is what keeps them from pinging, rather than rewriting
//! the text. The split into 2,000-character messages, never inside a code block or a
//! formatting span, is the shared [`crate::reply`] policy's.

/// The text to send for `markdown`.
pub fn render(markdown: &str) -> &str {
    markdown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_mentions_go_out_as_written() {
        let text = "**Done.** @everyone see `main.rs`:\n```rust\nfn main() {}\n```";
        assert_eq!(render(text), text);
    }
}
