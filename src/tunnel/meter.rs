//! Reading token usage out of a model response while it streams past.
//!
//! The tunnel forwards every chunk to the box at once and shows it to a [`TokenMeter`]
//! too, which keeps only what it needs: the current line of a server-sent-event stream, or
//! (for a non-streamed JSON answer) the body up to a cap, then only its tail.
//!
//! What is read, from either vendor's documented formats:
//! - Anthropic streams: `message_start` carries `message.usage` (`input_tokens` and the
//!   cache counts), `message_delta` carries `usage.output_tokens` (cumulative).
//! - OpenAI streams: a chunk with `"usage": {"prompt_tokens", "completion_tokens"}`
//!   (sent last when `stream_options.include_usage` is set, which the tunnel asks for).
//! - Non-streamed answers of both: the body's top-level `usage`.
//!
//! Usage fields are cumulative in both formats, so the meter keeps the largest value seen
//! of each and reports only growth: nothing is counted twice.

use serde_json::Value;

/// The longest event-stream line the meter looks at; longer lines (huge text deltas) are
/// skipped, as usage never rides on them.
const MAX_LINE: usize = 1 << 20;

/// How much of a non-streamed JSON body is kept to parse whole at the end.
const MAX_JSON: usize = 8 << 20;

/// Past [`MAX_JSON`], how much of the body's end is kept: `usage` comes last in both
/// vendors' answers.
const JSON_TAIL: usize = 64 << 10;

/// Token counts of one response, each the largest (latest) value reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tokens {
    pub input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
}

impl Tokens {
    /// Everything the response cost.
    pub(crate) fn total(&self) -> u64 {
        self.input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read)
            .saturating_add(self.output)
    }

    /// Take the larger of each count.
    fn merge(&mut self, other: Tokens) {
        self.input = self.input.max(other.input);
        self.cache_creation = self.cache_creation.max(other.cache_creation);
        self.cache_read = self.cache_read.max(other.cache_read);
        self.output = self.output.max(other.output);
    }

    /// Read a `usage` object of either vendor.
    fn from_usage(usage: &Value) -> Option<Tokens> {
        let count = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| usage.get(name).and_then(Value::as_u64))
                .unwrap_or(0)
        };
        usage.is_object().then(|| Tokens {
            // OpenAI's prompt_tokens already include its cached tokens; Anthropic's
            // input_tokens do not, hence the separate cache counts.
            input: count(&["input_tokens", "prompt_tokens"]),
            cache_creation: count(&["cache_creation_input_tokens"]),
            cache_read: count(&["cache_read_input_tokens"]),
            output: count(&["output_tokens", "completion_tokens"]),
        })
    }

    /// The usage in one JSON document (an event's data or a whole answer), if any.
    fn from_document(doc: &Value) -> Option<Tokens> {
        doc.get("usage").and_then(Tokens::from_usage).or_else(|| {
            doc.get("message")?
                .get("usage")
                .and_then(Tokens::from_usage)
        })
    }
}

/// How the body is being read.
#[derive(Debug)]
enum Mode {
    /// Server-sent events: scan `data:` lines.
    Events { line: Vec<u8>, skipping: bool },
    /// One JSON document: keep it (or, past the cap, its tail) for the end.
    Json { body: Vec<u8>, truncated: bool },
    /// Something else: nothing to read.
    Ignore,
}

/// Follows one response's token usage.
#[derive(Debug)]
pub(crate) struct TokenMeter {
    mode: Mode,
    seen: Tokens,
    /// The part of `seen.total()` already reported.
    reported: u64,
}

impl TokenMeter {
    /// A meter for a response of this content type.
    pub(crate) fn new(content_type: Option<&str>) -> Self {
        let essence = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let mode = if essence == "text/event-stream" {
            Mode::Events {
                line: Vec::new(),
                skipping: false,
            }
        } else if essence.ends_with("json") {
            Mode::Json {
                body: Vec::new(),
                truncated: false,
            }
        } else {
            Mode::Ignore
        };
        Self {
            mode,
            seen: Tokens::default(),
            reported: 0,
        }
    }

    /// Read more of the body; returns the tokens newly reported by it.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        match &mut self.mode {
            Mode::Events { line, skipping } => {
                let mut found = Vec::new();
                while let Some(pos) = bytes.iter().position(|b| *b == b'\n') {
                    if !*skipping && line.len() + pos <= MAX_LINE {
                        line.extend_from_slice(&bytes[..pos]);
                        found.extend(event_tokens(line));
                    }
                    line.clear();
                    *skipping = false;
                    bytes = &bytes[pos + 1..];
                }
                if *skipping || line.len() + bytes.len() > MAX_LINE {
                    line.clear();
                    *skipping = true;
                } else {
                    line.extend_from_slice(bytes);
                }
                for tokens in found {
                    self.seen.merge(tokens);
                }
            }
            Mode::Json { body, truncated } => {
                body.extend_from_slice(bytes);
                if body.len() > MAX_JSON {
                    let cut = body.len() - JSON_TAIL;
                    body.drain(..cut);
                    *truncated = true;
                }
            }
            Mode::Ignore => {}
        }
        self.report()
    }

    /// The body is complete (or broke off); returns the tokens it newly reported.
    pub(crate) fn finish(&mut self) -> u64 {
        match std::mem::replace(&mut self.mode, Mode::Ignore) {
            Mode::Events { line, skipping } => {
                if !skipping {
                    if let Some(tokens) = event_tokens(&line) {
                        self.seen.merge(tokens);
                    }
                }
            }
            Mode::Json { body, truncated } => {
                let tokens = if truncated {
                    usage_in_tail(&body)
                } else {
                    serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|doc| Tokens::from_document(&doc))
                };
                if let Some(tokens) = tokens {
                    self.seen.merge(tokens);
                }
            }
            Mode::Ignore => {}
        }
        self.report()
    }

    /// Everything seen so far.
    #[cfg(test)]
    pub(crate) fn tokens(&self) -> Tokens {
        self.seen
    }

    fn report(&mut self) -> u64 {
        let total = self.seen.total();
        let new = total.saturating_sub(self.reported);
        self.reported = total;
        new
    }
}

/// The usage in one event-stream line, if it is a `data:` line carrying one.
fn event_tokens(line: &[u8]) -> Option<Tokens> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let data = line.strip_prefix(b"data:")?;
    let data = data.strip_prefix(b" ").unwrap_or(data);
    // Cheap test first: most events are text deltas without usage.
    if !data.windows(7).any(|w| w == b"\"usage\"") {
        return None;
    }
    let doc: Value = serde_json::from_slice(data).ok()?;
    Tokens::from_document(&doc)
}

/// The last `"usage": {...}` object in the tail of a large JSON body.
fn usage_in_tail(tail: &[u8]) -> Option<Tokens> {
    let key = b"\"usage\"";
    let at = tail.windows(key.len()).rposition(|w| w == key)?;
    let rest = &tail[at + key.len()..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = rest.get(colon..)?.strip_prefix(b":")?;
    let value = serde_json::Deserializer::from_slice(rest)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    Tokens::from_usage(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANTHROPIC: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n",
        "\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n",
        "\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello — \\\"usage\\\" wörld\"}}\n",
        "\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
        "\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n",
        "\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n",
        "\n",
    );

    const OPENAI: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":9,\"total_tokens\":40}}\r\n\r\n",
        "data: [DONE]\r\n\r\n",
    );

    /// Feed `body` cut at `cuts`, returning the sum of what was reported.
    fn metered(content_type: &str, body: &[u8], cuts: &[usize]) -> (u64, Tokens) {
        let mut meter = TokenMeter::new(Some(content_type));
        let mut total = 0;
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
            total += meter.feed(&body[start..cut]);
            start = cut;
        }
        total += meter.finish();
        (total, meter.tokens())
    }

    #[test]
    fn anthropic_stream_split_anywhere() {
        let body = ANTHROPIC.as_bytes();
        let expected = Tokens {
            input: 25,
            cache_creation: 100,
            cache_read: 50,
            output: 15,
        };
        for cut in 0..=body.len() {
            let (total, tokens) = metered("text/event-stream; charset=utf-8", body, &[cut]);
            assert_eq!((total, tokens), (190, expected), "cut at {cut}");
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..body.len()).collect();
        assert_eq!(metered("text/event-stream", body, &cuts).0, 190);
    }

    #[test]
    fn input_tokens_count_as_soon_as_the_message_starts() {
        let mut meter = TokenMeter::new(Some("text/event-stream"));
        let first = ANTHROPIC.find("event: content_block_start").unwrap_or(0);
        assert_eq!(meter.feed(&ANTHROPIC.as_bytes()[..first]), 176);
        assert_eq!(meter.feed(&ANTHROPIC.as_bytes()[first..]), 14);
        assert_eq!(meter.finish(), 0);
    }

    #[test]
    fn openai_stream_split_anywhere() {
        let body = OPENAI.as_bytes();
        for cut in 0..=body.len() {
            let (total, tokens) = metered("text/event-stream", body, &[cut, cut.max(40)]);
            assert_eq!(total, 40, "cut at {cut}");
            assert_eq!((tokens.input, tokens.output), (31, 9));
        }
    }

    #[test]
    fn non_streamed_answers_of_both_vendors() {
        let anthropic = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],
            "usage": {"input_tokens": 12, "output_tokens": 3}}"#;
        assert_eq!(metered("application/json", anthropic, &[5, 40]).0, 15);
        let openai = br#"{"id":"c","object":"chat.completion","choices":[],
            "usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#;
        assert_eq!(metered("application/json", openai, &[3]).0, 9);
        assert_eq!(metered("application/json", b"{not json", &[]).0, 0);
        assert_eq!(metered("text/html", openai, &[]).0, 0);
    }

    #[test]
    fn huge_json_bodies_keep_only_their_tail() {
        let filler = "x".repeat(MAX_JSON + 10);
        let body = format!(
            r#"{{"content":[{{"type":"text","text":"{filler}"}}],"usage":{{"input_tokens":4,"output_tokens":6}}}}"#
        );
        let cuts: Vec<usize> = (1..body.len() / 65536).map(|i| i * 65536).collect();
        assert_eq!(metered("application/json", body.as_bytes(), &cuts).0, 10);
    }

    #[test]
    fn garbage_and_broken_streams_count_what_was_seen() {
        assert_eq!(
            metered("text/event-stream", b"\x00\xff<html>nope\n\n", &[]).0,
            0
        );
        let broken = &ANTHROPIC.as_bytes()[..ANTHROPIC.find("event: message_delta").unwrap_or(0)];
        assert_eq!(metered("text/event-stream", broken, &[]).0, 176);
    }
}
