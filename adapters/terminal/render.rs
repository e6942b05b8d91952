//! Printing a terminal conversation's replies.
//!
//! On a terminal the reply streams: every edit that extends the text prints just the new
//! part. On a pipe each reply is printed once, complete, when its turn finishes, so that
//! scripts read whole replies.

use std::io::Write;

use super::TerminalEvent;

/// Turns [`TerminalEvent`]s into output.
#[derive(Debug)]
pub struct Renderer {
    streaming: bool,
    /// The reply's messages in order: (id, text printed or collected so far).
    parts: Vec<(String, String)>,
}

impl Renderer {
    /// `streaming`: print as text arrives (a terminal); otherwise whole replies (a pipe).
    pub fn new(streaming: bool) -> Self {
        Self {
            streaming,
            parts: Vec::new(),
        }
    }

    /// Apply one event, writing to `out` (and status lines to `status`); returns true when
    /// a reply is complete.
    pub fn apply(
        &mut self,
        event: &TerminalEvent,
        out: &mut dyn Write,
        status: &mut dyn Write,
    ) -> std::io::Result<bool> {
        match event {
            TerminalEvent::Send { id, text } => {
                if self.streaming {
                    if !self.parts.is_empty() {
                        writeln!(out)?;
                    }
                    write!(out, "{text}")?;
                    out.flush()?;
                }
                self.parts.push((id.clone(), text.clone()));
            }
            TerminalEvent::Edit { id, text } => {
                let Some(part) = self.parts.iter_mut().find(|(p, _)| p == id) else {
                    return Ok(false);
                };
                if self.streaming {
                    match text.strip_prefix(part.1.as_str()) {
                        Some(more) => write!(out, "{more}")?,
                        // The text changed in the middle (e.g. reformatted): print it anew.
                        None => write!(out, "\n{text}")?,
                    }
                    out.flush()?;
                }
                part.1 = text.clone();
            }
            TerminalEvent::Status { text } => {
                if self.streaming {
                    writeln!(status, "[{text}]")?;
                }
            }
            // An answer of the bridge's own is complete as it comes; while a reply is
            // under way it goes beside it, like a status line, so the reply stays whole.
            TerminalEvent::Notice { text } => {
                if !self.parts.is_empty() {
                    writeln!(status, "[{text}]")?;
                    return Ok(false);
                }
                writeln!(out, "{text}")?;
                out.flush()?;
                return Ok(true);
            }
            TerminalEvent::Finished => {
                if self.streaming {
                    writeln!(out)?;
                } else {
                    let whole: Vec<&str> = self.parts.iter().map(|(_, t)| t.as_str()).collect();
                    writeln!(out, "{}", whole.join("\n"))?;
                }
                out.flush()?;
                self.parts.clear();
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(streaming: bool, events: &[TerminalEvent]) -> (String, usize) {
        let mut renderer = Renderer::new(streaming);
        let (mut out, mut status) = (Vec::new(), Vec::new());
        let mut done = 0;
        for event in events {
            if renderer
                .apply(event, &mut out, &mut status)
                .unwrap_or(false)
            {
                done += 1;
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), done)
    }

    fn events() -> Vec<TerminalEvent> {
        vec![
            TerminalEvent::Send {
                id: "a".into(),
                text: "hel".into(),
            },
            TerminalEvent::Edit {
                id: "a".into(),
                text: "hello".into(),
            },
            TerminalEvent::Status {
                text: "thinking".into(),
            },
            TerminalEvent::Edit {
                id: "a".into(),
                text: "hello world".into(),
            },
            TerminalEvent::Finished,
        ]
    }

    #[test]
    fn a_terminal_sees_the_reply_grow_once() {
        assert_eq!(run(true, &events()), ("hello world\n".to_string(), 1));
    }

    #[test]
    fn a_notice_is_a_complete_answer_unless_a_reply_is_under_way() {
        let notice = TerminalEvent::Notice {
            text: "⏹ Stop requested.".into(),
        };
        for streaming in [true, false] {
            assert_eq!(
                run(streaming, std::slice::from_ref(&notice)),
                ("⏹ Stop requested.\n".to_string(), 1)
            );
        }
        let mut during = events();
        during.insert(2, notice);
        assert_eq!(run(true, &during), ("hello world\n".to_string(), 1));
    }

    #[test]
    fn a_pipe_gets_each_complete_reply() {
        let mut all = events();
        all.extend(vec![
            TerminalEvent::Send {
                id: "b".into(),
                text: "second".into(),
            },
            TerminalEvent::Finished,
        ]);
        assert_eq!(run(false, &all), ("hello world\nsecond\n".to_string(), 2));
    }
}
