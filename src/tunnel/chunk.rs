//! Turning a byte stream into protocol `Body` text: UTF-8, never split inside a character,
//! and in pieces small enough for one protocol line each.

/// The most bytes of text in one `Body` part. JSON escaping can grow text up to six times
/// (control characters become `\u00XX`), and this keeps even that far below the protocol's
/// line limit.
pub(crate) const BODY_PIECE: usize = 32 * 1024;

/// Decodes UTF-8 that arrives in arbitrary chunks.
///
/// A character cut by a chunk boundary is held back until the rest arrives; bytes that
/// can never be valid UTF-8 become U+FFFD, so one bad byte does not stop a response.
#[derive(Debug, Default)]
pub(crate) struct Utf8Chunks {
    /// The start of a character whose remaining bytes have not arrived (at most 3 bytes).
    tail: Vec<u8>,
}

impl Utf8Chunks {
    /// Decode `bytes`, returning every complete character so far.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        let joined;
        let mut rest: &[u8] = if self.tail.is_empty() {
            bytes
        } else {
            let mut buf = std::mem::take(&mut self.tail);
            buf.extend_from_slice(bytes);
            joined = buf;
            &joined
        };
        let mut out = String::with_capacity(rest.len());
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    return out;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Checked by from_utf8 just above, so this never replaces anything.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            self.tail = after.to_vec();
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// The stream ended: whatever is held back can no longer complete.
    pub(crate) fn finish(&mut self) -> String {
        let tail = std::mem::take(&mut self.tail);
        String::from_utf8_lossy(&tail).into_owned()
    }
}

/// Split `text` into pieces of at most [`BODY_PIECE`] bytes, on character boundaries.
pub(crate) fn pieces(text: &str) -> impl Iterator<Item = &str> {
    pieces_of(text, BODY_PIECE)
}

fn pieces_of(mut text: &str, max: usize) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        if text.is_empty() {
            return None;
        }
        let mut end = max.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // `max` is smaller than this character: take the character whole.
            end = text.chars().next().map_or(text.len(), char::len_utf8);
        }
        let (piece, rest) = text.split_at(end);
        text = rest;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_cut_between_chunks_are_joined() {
        let text = "aé€😀z — fin";
        let bytes = text.as_bytes();
        // Every way of cutting the bytes in two, and byte by byte.
        for cut in 0..=bytes.len() {
            let mut chunks = Utf8Chunks::default();
            let mut out = chunks.push(&bytes[..cut]);
            out += &chunks.push(&bytes[cut..]);
            out += &chunks.finish();
            assert_eq!(out, text, "cut at {cut}");
        }
        let mut chunks = Utf8Chunks::default();
        let mut out = String::new();
        for b in bytes {
            let piece = chunks.push(std::slice::from_ref(b));
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER));
            out += &piece;
        }
        assert_eq!(out + &chunks.finish(), text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut chunks = Utf8Chunks::default();
        assert_eq!(chunks.push(b"a\xffb"), "a\u{fffd}b");
        // A truncated character at the very end is replaced at finish.
        assert_eq!(chunks.push(b"c\xe2\x82"), "c");
        assert_eq!(chunks.finish(), "\u{fffd}");
        // A started character followed by something else is invalid, not held.
        assert_eq!(chunks.push(b"\xe2"), "");
        assert_eq!(chunks.push(b"x"), "\u{fffd}x");
    }

    #[test]
    fn pieces_respect_the_size_and_character_boundaries() {
        let text = "ab€cd€€e";
        let parts: Vec<&str> = pieces_of(text, 4).collect();
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.len() <= 4), "{parts:?}");
        assert_eq!(parts, ["ab", "€c", "d€", "€e"]);
        let parts: Vec<&str> = pieces_of("€€", 2).collect();
        assert_eq!(parts, ["€", "€"]);
        assert_eq!(pieces("").count(), 0);
    }
}
