//! Server-sent events, parsed from a body that arrives in pieces cut anywhere.
//!
//! The bridge streams a provider's response body as `Body` chunks that end on character
//! boundaries but not on line or event boundaries, so the parser keeps the partial line
//! and the partial event between pushes. It follows the WHATWG rules that both providers
//! rely on: `\n`, `\r\n` or `\r` end a line (a `\r\n` may itself be split across chunks),
//! a blank line ends an event, `data` lines join with `\n`, `:` starts a comment.

/// The largest event (line plus data so far) kept in memory. A provider event is a few KB
/// at most; anything this big is a broken or hostile stream, and parsing stops.
pub const MAX_EVENT: usize = 4 << 20;

/// One complete event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty when the stream does not name its events (OpenAI).
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// An event grew past [`MAX_EVENT`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a server-sent event is larger than {MAX_EVENT} bytes")]
pub struct TooLarge;

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current line, not yet ended.
    line: String,
    /// The last chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    /// The event being built.
    event: String,
    data: String,
    /// Whether any `data` line was seen (an event with an empty data line still counts).
    has_data: bool,
}

impl SseParser {
    /// Feed a chunk; returns the events it completes, in order.
    pub fn push(&mut self, mut chunk: &str) -> Result<Vec<SseEvent>, TooLarge> {
        let mut events = Vec::new();
        if self.after_cr && !chunk.is_empty() {
            chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
            self.after_cr = false;
        }
        while let Some(end) = chunk.find(['\r', '\n']) {
            self.line.push_str(&chunk[..end]);
            let crlf = chunk[end..].starts_with("\r\n");
            if &chunk[end..=end] == "\r" && end + 1 == chunk.len() {
                self.after_cr = true;
            }
            chunk = &chunk[end + if crlf { 2 } else { 1 }..];
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_done(&line) {
                events.push(event);
            }
            self.check()?;
        }
        self.line.push_str(chunk);
        self.check()?;
        Ok(events)
    }

    fn check(&self) -> Result<(), TooLarge> {
        if self.line.len() + self.data.len() > MAX_EVENT {
            return Err(TooLarge);
        }
        Ok(())
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let has_data = std::mem::replace(&mut self.has_data, false);
            return has_data.then_some(SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` matter for reconnecting, which a model response never does.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: ping\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\r\rdata:tight\n\n";

    fn expected() -> Vec<SseEvent> {
        let event = |event: &str, data: &str| SseEvent {
            event: event.into(),
            data: data.into(),
        };
        vec![
            event("message_start", "{\"a\":1}"),
            event("ping", "x\ny"),
            event("", "[DONE]"),
            event("", "tight"),
        ]
    }

    #[test]
    fn a_whole_stream_parses() -> Result<(), TooLarge> {
        assert_eq!(SseParser::default().push(STREAM)?, expected());
        Ok(())
    }

    #[test]
    fn every_split_point_gives_the_same_events() -> Result<(), TooLarge> {
        let chars: Vec<(usize, char)> = STREAM.char_indices().collect();
        for (at, _) in &chars {
            let mut parser = SseParser::default();
            let mut events = parser.push(&STREAM[..*at])?;
            events.extend(parser.push(&STREAM[*at..])?);
            assert_eq!(events, expected(), "split at {at}");
        }
        // And one char at a time.
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for (at, ch) in chars {
            events.extend(parser.push(&STREAM[at..at + ch.len_utf8()])?);
        }
        assert_eq!(events, expected());
        Ok(())
    }

    #[test]
    fn an_unfinished_event_is_not_emitted() -> Result<(), TooLarge> {
        let mut parser = SseParser::default();
        assert!(parser.push("data: half")?.is_empty());
        assert!(parser.push("\n")?.is_empty());
        assert_eq!(parser.push("\n")?.len(), 1);
        Ok(())
    }

    #[test]
    fn huge_events_are_refused() {
        let mut parser = SseParser::default();
        let line = "x".repeat(1 << 20);
        let mut result = Ok(Vec::new());
        for _ in 0..5 {
            result = parser.push("data: ").and_then(|_| parser.push(&line));
            if result.is_err() {
                break;
            }
            result = parser.push("\n");
        }
        assert_eq!(result, Err(TooLarge));
    }
}
