//! Log output: text or JSON lines on stderr, with repeated identical warnings and errors
//! shown as a count rather than a flood.
//!
//! A warning or error whose callsite and field values are the same as one shown less than
//! [`REPEAT_WINDOW`] ago is not written; the next one written after the window says how
//! many were left out (`suppressed=N`, or `"suppressed":N` in JSON). Different values (a
//! conversation, a count, an error text) make different lines, which are all shown. Lower
//! levels are never held back: they are off unless asked for.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How long an identical warning or error is held back after it was shown.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The most distinct lines remembered; past it, lines older than the window are forgotten,
/// and if none is, new lines are shown without being remembered.
const REMEMBERED: usize = 1024;

/// Sets up logging on stderr: `CLAWPEN_LOG` filters (else `default_filter`),
/// `CLAWPEN_LOG_FORMAT=json` writes one JSON object per line.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_env("CLAWPEN_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("CLAWPEN_LOG_FORMAT").as_deref() {
        // For log collectors: the event's fields at the top level, the spans it runs in
        // (conversation, platform) listed under `spans`.
        Ok("json") => {
            let json = format::Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true);
            logs.fmt_fields(JsonFields::new())
                .event_format(Limited::new(json))
                .init()
        }
        Ok("" | "text") | Err(_) => logs
            .event_format(Limited::new(format::Format::default()))
            .init(),
        Ok(other) => {
            logs.event_format(Limited::new(format::Format::default()))
                .init();
            tracing::warn!(
                value = other,
                "CLAWPEN_LOG_FORMAT is neither `text` nor `json`; logging text"
            );
        }
    }
}

/// What to do with one warning or error.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` identical ones were left out since the last one written.
    Show { suppressed: u64 },
    /// Leave it out (counted).
    Hide,
}

/// The memory of recent lines: the policy, without I/O.
#[derive(Debug, Default)]
pub struct Repeats {
    /// By line key: when it was last written, and how many were held back since.
    seen: HashMap<u64, (Instant, u64)>,
}

impl Repeats {
    /// Decides for a line with `key` at `now`.
    pub fn check(&mut self, key: u64, now: Instant) -> Verdict {
        if let Some((shown, held)) = self.seen.get_mut(&key) {
            if now.saturating_duration_since(*shown) < REPEAT_WINDOW {
                *held += 1;
                return Verdict::Hide;
            }
            let suppressed = std::mem::take(held);
            *shown = now;
            return Verdict::Show { suppressed };
        }
        if self.seen.len() >= REMEMBERED {
            self.seen
                .retain(|_, (shown, _)| now.saturating_duration_since(*shown) < REPEAT_WINDOW);
        }
        if self.seen.len() < REMEMBERED {
            self.seen.insert(key, (now, 0));
        }
        Verdict::Show { suppressed: 0 }
    }
}

/// Hashes an event's field values.
struct KeyOf<'a>(&'a mut std::collections::hash_map::DefaultHasher);

impl Visit for KeyOf<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        field.name().hash(self.0);
        format!("{value:?}").hash(self.0);
    }
}

/// An event formatter that holds back repeated warnings and errors ([`Repeats`]).
pub struct Limited<F> {
    inner: F,
    /// A std mutex, held for one map operation per warning or error written.
    repeats: Mutex<Repeats>,
}

impl<F> Limited<F> {
    /// Wraps the formatter `inner`.
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            repeats: Mutex::default(),
        }
    }
}

/// Adds `suppressed` to one formatted line: a JSON field before its closing brace, or a
/// `key=value` before its newline.
pub fn annotate(line: &str, suppressed: u64) -> String {
    let body = line.trim_end_matches('\n');
    let newline = &line[body.len()..];
    match body.strip_suffix('}') {
        Some(open) if body.starts_with('{') => {
            format!("{open},\"suppressed\":{suppressed}}}{newline}")
        }
        _ => format!("{body} suppressed={suppressed}{newline}"),
    }
}

impl<S, N, F> FormatEvent<S, N> for Limited<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Warnings and errors only (in tracing's order, less verbose is smaller).
        if *event.metadata().level() > Level::WARN {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event.metadata().callsite().hash(&mut hasher);
        event.record(&mut KeyOf(&mut hasher));
        let verdict = self
            .repeats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(hasher.finish(), Instant::now());
        match verdict {
            Verdict::Hide => Ok(()),
            Verdict::Show { suppressed: 0 } => self.inner.format_event(ctx, writer, event),
            Verdict::Show { suppressed } => {
                let mut line = String::new();
                self.inner
                    .format_event(ctx, format::Writer::new(&mut line), event)?;
                writer.write_str(&annotate(&line, suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_counted_and_reported_with_the_next_one_shown() {
        let mut repeats = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(repeats.check(1, t0), Verdict::Show { suppressed: 0 });
        for s in 1..=5 {
            assert_eq!(repeats.check(1, t0 + Duration::from_secs(s)), Verdict::Hide);
        }
        // Another line is not held back by the first.
        assert_eq!(
            repeats.check(2, t0 + Duration::from_secs(1)),
            Verdict::Show { suppressed: 0 }
        );
        let later = t0 + REPEAT_WINDOW + Duration::from_secs(1);
        assert_eq!(repeats.check(1, later), Verdict::Show { suppressed: 5 });
        assert_eq!(
            repeats.check(1, later + Duration::from_secs(1)),
            Verdict::Hide
        );
    }

    #[test]
    fn memory_is_bounded_and_new_lines_are_shown_when_it_is_full() {
        let mut repeats = Repeats::default();
        let t0 = Instant::now();
        for key in 0..REMEMBERED as u64 + 10 {
            assert_eq!(repeats.check(key, t0), Verdict::Show { suppressed: 0 });
        }
        assert_eq!(repeats.seen.len(), REMEMBERED);
        // Past the window the old lines are forgotten to make room.
        let later = t0 + REPEAT_WINDOW;
        assert_eq!(
            repeats.check(u64::MAX, later),
            Verdict::Show { suppressed: 0 }
        );
        assert_eq!(repeats.seen.len(), 1);
    }

    #[test]
    fn the_count_goes_into_the_line_in_either_format() {
        assert_eq!(
            annotate("{\"level\":\"WARN\",\"message\":\"x\"}\n", 3),
            "{\"level\":\"WARN\",\"message\":\"x\",\"suppressed\":3}\n"
        );
        assert_eq!(
            annotate("2026-11-29T08:00:00Z  WARN clawpen: x error=boom\n", 3),
            "2026-11-29T08:00:00Z  WARN clawpen: x error=boom suppressed=3\n"
        );
    }
}
