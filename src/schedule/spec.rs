//! Schedules and when they run next: plain data and functions, no I/O.
//!
//! Three kinds: once at an instant, every fixed interval (elapsed time, so an hourly task
//! stays hourly across a daylight-saving change), and a cron expression read in the task's
//! time zone (wall-clock time, so "every weekday at 9" stays at 9 local time).
//!
//! Daylight-saving changes, for cron and for a once-task given as a local time:
//! - a local time that does not exist (the spring gap) runs once, at the first valid time
//!   after the gap (02:30 on the night clocks go from 02:00 to 03:00 runs at 03:00);
//! - a local time that exists twice (the autumn overlap) runs once, at its first occurrence.
//!
//! The cron search walks local wall-clock time (croner on a zone without changes, UTC), and
//! maps each match to an instant here, so these two rules are ours, not a library's.

use chrono::{DateTime, Duration as ChronoDuration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// The most cron matches looked at for one next run: enough to cross any gap and any
/// instant taken already, few enough that an odd pattern cannot spin.
const CRON_STEPS: usize = 512;

/// The longest a daylight-saving gap (or a zone's jump across the date line) can be, in
/// minutes: the search for the first valid time after one stops there.
const GAP_MINUTES: i64 = 48 * 60;

/// When a task runs.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Once, at this instant (Unix seconds).
    Once {
        /// The instant.
        at: i64,
    },
    /// Every `secs` seconds from `anchor` (the first run, Unix seconds).
    Every {
        /// The interval.
        secs: u64,
        /// The first run.
        anchor: i64,
    },
    /// At the matches of a five-field cron expression, in the task's zone.
    Cron {
        /// The expression as given (normalized spacing).
        expr: String,
        /// It parsed.
        cron: Box<Cron>,
    },
}

/// Reads a time zone name (`Europe/Berlin`, `UTC`).
pub fn zone(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        format!("`{name}` is not a time zone name (use an IANA name such as Europe/Berlin or America/New_York)")
    })
}

/// Parses a five-field cron expression (minute hour day-of-month month day-of-week).
pub fn cron(expr: &str) -> Result<Cron, String> {
    let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    if expr.len() > 200 {
        return Err("the cron expression is too long".into());
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(&expr)
        .map_err(|e| format!("`{expr}` is not a cron expression of five fields: {e}"))
}

/// Reads a duration: `90` (seconds), `20m`, `1h30m`, `2 hours`, `1d`, `1w`.
pub fn duration(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a duration (examples: 90s, 20m, 1h30m, 2 hours, 1d, 1w)");
    let text = text.trim().to_ascii_lowercase();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let mut total: u64 = 0;
    let mut rest = text.as_str();
    let mut any = false;
    while !rest.is_empty() {
        rest = rest
            .trim_start_matches([' ', ','])
            .trim_start_matches("and ");
        if rest.is_empty() {
            break;
        }
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return Err(bad()),
        };
        rest = &rest[unit_end..];
        total = number
            .checked_mul(unit)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(bad)?;
        any = true;
    }
    if any {
        Ok(total)
    } else {
        Err(bad())
    }
}

/// Reads a date-time: RFC 3339 with an offset (`2026-03-29T02:30:00+01:00`) is that
/// instant; a local time (`2026-03-29 02:30`, `2026-03-29T02:30:00`) is read in `tz`
/// by the daylight-saving rules above.
pub fn date_time(text: &str, tz: Tz) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp());
    }
    const FORMATS: &[&str] = &[
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ];
    FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .and_then(|naive| local_instant(tz, naive))
        .ok_or_else(|| {
            format!(
                "`{text}` is not a date and time (use YYYY-MM-DD HH:MM, in the task's time zone)"
            )
        })
}

/// The instant of a local time in `tz`: the first of two (autumn), or the first valid
/// instant after a gap (spring).
pub fn local_instant(tz: Tz, naive: NaiveDateTime) -> Option<i64> {
    let mut probe = naive;
    for step in 0..=GAP_MINUTES {
        if let Some(at) = tz.from_local_datetime(&probe).earliest() {
            if step == 0 {
                return Some(at.timestamp());
            }
            // The first valid minute after the gap, from its start.
            return Some(at.timestamp() - at.timestamp().rem_euclid(60));
        }
        probe = probe.checked_add_signed(ChronoDuration::minutes(1))?;
    }
    None
}

/// The wall-clock time of an instant in `tz`.
fn local(tz: Tz, at: i64) -> Option<NaiveDateTime> {
    Some(
        DateTime::from_timestamp(at, 0)?
            .with_timezone(&tz)
            .naive_local(),
    )
}

impl Schedule {
    /// The first run strictly after `after` (Unix seconds). `last` is the run before it,
    /// if any: a cron match is never taken at or before the local time of that run, which
    /// is how an autumn hour repeated on the wall clock does not repeat a run.
    pub fn next_after(&self, tz: Tz, after: i64, last: Option<i64>) -> Option<i64> {
        match self {
            Self::Once { at } => (*at > after && last.is_none()).then_some(*at),
            Self::Every { secs, anchor } => {
                let secs = i64::try_from(*secs).ok().filter(|s| *s > 0)?;
                if *anchor > after {
                    return Some(*anchor);
                }
                let steps = (after - anchor) / secs + 1;
                anchor.checked_add(steps.checked_mul(secs)?)
            }
            Self::Cron { cron, .. } => next_cron(cron, tz, after, last),
        }
    }

    /// The next `count` runs strictly after `after`.
    pub fn upcoming(&self, tz: Tz, after: i64, last: Option<i64>, count: usize) -> Vec<i64> {
        let mut runs = Vec::with_capacity(count);
        let (mut after, mut last) = (after, last);
        while runs.len() < count {
            let Some(next) = self.next_after(tz, after, last) else {
                break;
            };
            runs.push(next);
            after = next;
            last = Some(next);
        }
        runs
    }

    /// The shortest gap between the next few runs (for `min_task_interval_secs`); `None`
    /// for a task that runs at most once from now.
    pub fn shortest_gap(&self, tz: Tz, after: i64) -> Option<u64> {
        let runs = self.upcoming(tz, after, None, 24);
        runs.windows(2)
            .map(|pair| u64::try_from(pair[1] - pair[0]).unwrap_or(0))
            .min()
    }

    /// In words: "once", "every 20 minutes", "cron `0 9 * * 1-5`: At …".
    pub fn describe(&self, tz: Tz) -> String {
        match self {
            Self::Once { at } => format!("once, at {}", show(tz, *at)),
            Self::Every { secs, .. } => format!("every {}", show_duration(*secs)),
            Self::Cron { expr, cron } => {
                format!("cron `{expr}` in {}: {}", tz.name(), cron.describe())
            }
        }
    }
}

/// The first cron match strictly after `after`, walking local time (see the module docs).
fn next_cron(cron: &Cron, tz: Tz, after: i64, last: Option<i64>) -> Option<i64> {
    let mut from = local(tz, after)?;
    if let Some(last) = last.and_then(|l| local(tz, l)) {
        from = from.max(last);
    }
    for _ in 0..CRON_STEPS {
        // The wall clock as if it were UTC: a zone with no changes, so croner only walks it.
        let next = cron.find_next_occurrence(&from.and_utc(), false).ok()?;
        let naive = next.naive_utc();
        let candidate = match tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(at) => Some(at.timestamp()),
            chrono::LocalResult::Ambiguous(first, second) => {
                // Twice on the wall clock, once here: the first, unless that has passed
                // already (a task made during the repeated hour).
                [first.timestamp(), second.timestamp()]
                    .into_iter()
                    .find(|at| *at > after)
            }
            chrono::LocalResult::None => local_instant(tz, naive),
        };
        if let Some(at) = candidate.filter(|at| *at > after) {
            return Some(at);
        }
        from = naive;
    }
    None
}

/// An instant for people: `Mon 30 Nov 2026 09:00 CET`.
pub fn show(tz: Tz, at: i64) -> String {
    match DateTime::from_timestamp(at, 0) {
        Some(utc) => utc
            .with_timezone(&tz)
            .format("%a %d %b %Y %H:%M %Z")
            .to_string(),
        None => format!("{at} (Unix time)"),
    }
}

/// An instant in UTC for logs and ids.
pub fn show_utc(at: i64) -> String {
    DateTime::<Utc>::from_timestamp(at, 0)
        .map(|utc| utc.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// A duration for people: `20 minutes`, `1 day 2 hours`.
pub fn show_duration(secs: u64) -> String {
    let parts = [
        (7 * 86_400, "week"),
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut left = secs;
    let mut words = Vec::new();
    for (unit, name) in parts {
        let n = left / unit;
        if n > 0 {
            left -= n * unit;
            let plural = if n == 1 { "" } else { "s" };
            words.push(format!("{n} {name}{plural}"));
        }
    }
    if words.is_empty() {
        "0 seconds".into()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;

    fn tz(name: &str) -> Tz {
        zone(name).unwrap()
    }

    /// A UTC instant from text.
    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp()
    }

    fn cron_schedule(expr: &str) -> Schedule {
        Schedule::Cron {
            expr: expr.into(),
            cron: Box::new(cron(expr).unwrap()),
        }
    }

    fn runs(schedule: &Schedule, zone: &str, after: &str, count: usize) -> Vec<String> {
        let tz = tz(zone);
        schedule
            .upcoming(tz, utc(after), None, count)
            .into_iter()
            .map(|at| show(tz, at))
            .collect()
    }

    #[test]
    fn once_runs_once_and_only_in_the_future() {
        let at = utc("2026-11-29T14:30:00Z");
        let once = Schedule::Once { at };
        assert_eq!(once.next_after(Tz::UTC, at - 1, None), Some(at));
        assert_eq!(once.next_after(Tz::UTC, at, None), None);
        assert_eq!(once.next_after(Tz::UTC, at - 1, Some(at - 10)), None);
        assert_eq!(once.upcoming(Tz::UTC, 0, None, 3), vec![at]);
    }

    #[test]
    fn intervals_count_elapsed_time_from_their_anchor() {
        let anchor = utc("2026-03-29T00:30:00Z");
        let every = Schedule::Every { secs: 3600, anchor };
        assert_eq!(every.next_after(Tz::UTC, anchor - 5, None), Some(anchor));
        assert_eq!(every.next_after(Tz::UTC, anchor, None), Some(anchor + 3600));
        assert_eq!(
            every.next_after(Tz::UTC, anchor + 3599, None),
            Some(anchor + 3600)
        );
        // Across Berlin's spring change the gaps stay one hour; the wall clock jumps.
        assert_eq!(
            runs(&every, "Europe/Berlin", "2026-03-29T00:00:00Z", 3),
            [
                "Sun 29 Mar 2026 01:30 CET",
                "Sun 29 Mar 2026 03:30 CEST",
                "Sun 29 Mar 2026 04:30 CEST"
            ]
        );
        let never = Schedule::Every { secs: 0, anchor };
        assert_eq!(never.next_after(Tz::UTC, anchor, None), None);
    }

    #[test]
    fn cron_runs_on_the_wall_clock_of_its_zone() {
        let weekdays = cron_schedule("0 9 * * 1-5");
        assert_eq!(
            runs(&weekdays, "Europe/Berlin", "2026-11-27T12:00:00Z", 3),
            [
                "Mon 30 Nov 2026 09:00 CET",
                "Tue 01 Dec 2026 09:00 CET",
                "Wed 02 Dec 2026 09:00 CET"
            ]
        );
        let monthly = cron_schedule("0 8 1 * *");
        assert_eq!(
            runs(&monthly, "America/New_York", "2026-01-15T00:00:00Z", 2),
            ["Sun 01 Feb 2026 08:00 EST", "Sun 01 Mar 2026 08:00 EST"]
        );
    }

    #[test]
    fn a_daily_time_in_the_spring_gap_runs_once_at_the_end_of_the_gap() {
        // Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST.
        let daily = cron_schedule("30 2 * * *");
        assert_eq!(
            runs(&daily, "Europe/Berlin", "2026-03-27T12:00:00Z", 4),
            [
                "Sat 28 Mar 2026 02:30 CET",
                "Sun 29 Mar 2026 03:00 CEST",
                "Mon 30 Mar 2026 02:30 CEST",
                "Tue 31 Mar 2026 02:30 CEST"
            ]
        );
        // New York: 2026-03-08 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            runs(&daily, "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "Sun 08 Mar 2026 03:00 EDT",
                "Mon 09 Mar 2026 02:30 EDT",
                "Tue 10 Mar 2026 02:30 EDT"
            ]
        );
    }

    #[test]
    fn matches_inside_the_spring_gap_collapse_into_one_run() {
        let quarterly = cron_schedule("*/15 * * * *");
        assert_eq!(
            runs(&quarterly, "Europe/Berlin", "2026-03-29T00:40:00Z", 4),
            [
                "Sun 29 Mar 2026 01:45 CET",
                "Sun 29 Mar 2026 03:00 CEST",
                "Sun 29 Mar 2026 03:15 CEST",
                "Sun 29 Mar 2026 03:30 CEST"
            ]
        );
    }

    #[test]
    fn a_time_repeated_in_autumn_runs_once() {
        // Berlin: 2026-10-25 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let daily = cron_schedule("30 2 * * *");
        assert_eq!(
            runs(&daily, "Europe/Berlin", "2026-10-24T12:00:00Z", 3),
            [
                "Sun 25 Oct 2026 02:30 CEST",
                "Mon 26 Oct 2026 02:30 CET",
                "Tue 27 Oct 2026 02:30 CET"
            ]
        );
        let hourly = cron_schedule("30 * * * *");
        assert_eq!(
            runs(&hourly, "Europe/Berlin", "2026-10-24T23:00:00Z", 4),
            [
                "Sun 25 Oct 2026 01:30 CEST",
                "Sun 25 Oct 2026 02:30 CEST",
                "Sun 25 Oct 2026 03:30 CET",
                "Sun 25 Oct 2026 04:30 CET"
            ]
        );
        // New York: 2026-11-01 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        let daily = cron_schedule("30 1 * * *");
        assert_eq!(
            runs(&daily, "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["Sun 01 Nov 2026 01:30 EDT", "Mon 02 Nov 2026 01:30 EST"]
        );
    }

    #[test]
    fn a_late_run_in_the_repeated_hour_does_not_run_the_same_local_time_again() {
        let tz = tz("Europe/Berlin");
        let hourly = cron_schedule("30 * * * *");
        // 02:30 CEST ran (00:30 UTC); it is now 02:10 CET (01:10 UTC), the hour again.
        let ran = utc("2026-10-25T00:30:00Z");
        let now = utc("2026-10-25T01:10:00Z");
        let next = hourly.next_after(tz, now, Some(ran)).unwrap();
        assert_eq!(show(tz, next), "Sun 25 Oct 2026 03:30 CET");
        // A task made during the repeated hour still gets its 02:30, the second one.
        let fresh = hourly.next_after(tz, now, None).unwrap();
        assert_eq!(show(tz, fresh), "Sun 25 Oct 2026 02:30 CET");
    }

    #[test]
    fn local_date_times_follow_the_same_rules() {
        let berlin = tz("Europe/Berlin");
        let gap = date_time("2026-03-29 02:30", berlin).unwrap();
        assert_eq!(show(berlin, gap), "Sun 29 Mar 2026 03:00 CEST");
        let twice = date_time("2026-10-25T02:30", berlin).unwrap();
        assert_eq!(show(berlin, twice), "Sun 25 Oct 2026 02:30 CEST");
        let plain = date_time("2026-11-29 14:30", tz("America/New_York")).unwrap();
        assert_eq!(plain, utc("2026-11-29T19:30:00Z"));
        let offset = date_time("2026-11-29T14:30:00+01:00", berlin).unwrap();
        assert_eq!(offset, utc("2026-11-29T13:30:00Z"));
        assert!(date_time("tomorrow-ish", berlin).is_err());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("90").unwrap(), 90);
        assert_eq!(duration("20m").unwrap(), 1200);
        assert_eq!(duration("1h30m").unwrap(), 5400);
        assert_eq!(duration("2 hours").unwrap(), 7200);
        assert_eq!(duration("1 day, 2 hours and 5 minutes").unwrap(), 93_900);
        assert_eq!(duration("1w").unwrap(), 604_800);
        for bad in ["", "soon", "5 fortnights", "m", "99999999999999999999w"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(show_duration(5400), "1 hour 30 minutes");
        assert_eq!(show_duration(60), "1 minute");
    }

    #[test]
    fn bad_zones_and_expressions_are_refused_in_words() {
        assert!(zone("Mars/Olympus").unwrap_err().contains("IANA"));
        assert!(zone("Europe/Berlin").is_ok());
        assert!(cron("61 * * * *").is_err());
        assert!(cron("* * *").is_err());
        assert!(cron("0 0 0 * * *").is_err(), "seconds are not taken");
        let gap = cron_schedule("*/5 * * * *").shortest_gap(Tz::UTC, 0);
        assert_eq!(gap, Some(300));
    }

    #[test]
    fn a_pattern_that_never_matches_has_no_next_run() {
        let never = cron_schedule("0 0 30 2 *");
        assert_eq!(never.next_after(Tz::UTC, 0, None), None);
    }
}
