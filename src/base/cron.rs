//! When policy runs happen: a standard 5-field cron expression (`policy.schedule`), parsed
//! and validated, and the next time it fires after a given time. Times are UTC: a service
//! on a file server should not skip or double a run when the clocks change, and the
//! computation stays pure (no time-zone database, no `TZ`).
//!
//! Syntax, as in cron(5) (Vixie cron / cronie):
//! `minute hour day-of-month month day-of-week`, each field `*`, a number, a range `a-b`,
//! any of those with a step `/n` (`a/n` means `a-max/n`), or a comma-separated list of
//! them. Months and weekdays also take English three-letter names (`jan`, `mon`, any
//! case); weekday 0 and 7 are both Sunday. `@yearly` (`@annually`), `@monthly`,
//! `@weekly`, `@daily` (`@midnight`) and `@hourly` are accepted; `@reboot` is not (there is
//! no "boot" of a policy). As in cron, when both day fields are restricted (neither starts
//! with `*`), a day matches if *either* matches; otherwise both must.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A parsed cron expression. Compares and prints as its source text.
#[derive(Clone)]
pub struct Schedule {
    source: String,
    minutes: u64, // bits 0..=59
    hours: u32,   // bits 0..=23
    days: u32,    // bits 1..=31
    months: u16,  // bits 1..=12
    weekdays: u8, // bits 0..=6, Sunday = 0
    day_star: bool,
    weekday_star: bool,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Schedule {}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.source)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Schedule::parse(s)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The number of the first name (1 for months, 0 for weekdays).
    names_from: u32,
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_from: 0,
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
    names_from: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
    names_from: 1,
};
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
    names_from: 0,
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let v = if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            i as u32 + self.names_from
        } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 4 {
            s.parse().expect("digits")
        } else {
            return Err(format!("{}: `{s}` is not a number", self.name));
        };
        if v < self.min || v > self.max {
            return Err(format!(
                "{}: {v} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The bit set of one field's text, and whether it starts with `*`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .ok()
                        .filter(|s| *s >= 1 && *s <= self.max.max(1))
                        .ok_or_else(|| format!("{}: bad step `{s}`", self.name))?;
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{}: range `{range}` runs backwards", self.name));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                (a, if step.is_some() { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step.unwrap_or(1);
            }
        }
        Ok((bits, text.starts_with('*')))
    }
}

impl Schedule {
    /// Parses a cron expression (see the module doc).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let source = text.trim();
        let expanded = match source {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(format!(
                    "`{s}` is not one of @yearly, @annually, @monthly, @weekly, @daily, \
                     @midnight, @hourly"
                ))
            }
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{source}` has {} fields; a cron expression has 5: minute hour \
                 day-of-month month day-of-week (UTC)",
                fields.len()
            ));
        }
        let (minutes, _) = MINUTE.parse(fields[0])?;
        let (hours, _) = HOUR.parse(fields[1])?;
        let (days, day_star) = DAY.parse(fields[2])?;
        let (months, _) = MONTH.parse(fields[3])?;
        let (weekdays, weekday_star) = WEEKDAY.parse(fields[4])?;
        // 7 is Sunday too.
        let weekdays = ((weekdays | (weekdays >> 7)) & 0x7f) as u8;
        let s = Schedule {
            source: source.to_owned(),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays,
            day_star,
            weekday_star,
        };
        // Only "day of month AND month" can be impossible (`0 0 30 2 *`): with a weekday
        // restriction the days are OR-ed (or the weekday alone decides, every week).
        if s.weekday_star
            && !(1..=12).any(|m| {
                s.months & (1 << m) != 0 && (1..=max_days(m)).any(|d| s.days & (1 << d) != 0)
            })
        {
            return Err(format!(
                "`{source}` names no day that exists: it would never run"
            ));
        }
        Ok(s)
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn day_matches(&self, year: i64, month: u32, day: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.days & (1 << day) != 0;
        let dow = self.weekdays & (1 << weekday(year, month, day)) != 0;
        if self.day_star || self.weekday_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `t` (at a whole minute, UTC) at which this schedule
    /// fires; `None` only if there is none within ~9 years (which [`Schedule::parse`]
    /// makes impossible) or the time is out of range.
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).ok()?,
            // Before the epoch: round towards minus infinity.
            Err(e) => {
                let d = e.duration();
                -i64::try_from(d.as_secs()).ok()? - i64::from(d.subsec_nanos() > 0)
            }
        };
        let start = secs.div_euclid(60).checked_add(1)?; // minutes since the epoch
        let first_day = start.div_euclid(1440);
        // Feb 29 falling on a given weekday recurs within 28 years, but with OR-ed days
        // or without a weekday the longest gap is 8 years (Feb 29 across 2100).
        for day in first_day..first_day + 366 * 9 {
            let (y, m, d) = civil_from_days(day);
            if !self.day_matches(y, m, d) {
                continue;
            }
            let from = if day == first_day {
                start.rem_euclid(1440) as u32
            } else {
                0
            };
            if let Some(min) = self.first_minute_from(from) {
                let at = day.checked_mul(86400)?.checked_add(i64::from(min) * 60)?;
                return Some(if at >= 0 {
                    UNIX_EPOCH + Duration::from_secs(at as u64)
                } else {
                    UNIX_EPOCH - Duration::from_secs(at.unsigned_abs())
                });
            }
        }
        None
    }

    /// The first minute of the day at or after `from` whose hour and minute match.
    fn first_minute_from(&self, from: u32) -> Option<u32> {
        (from / 60..24)
            .filter(|h| self.hours & (1 << h) != 0)
            .find_map(|h| {
                let m0 = if h == from / 60 { from % 60 } else { 0 };
                (m0..60)
                    .find(|m| self.minutes & (1 << m) != 0)
                    .map(|m| h * 60 + m)
            })
    }
}

/// The most days month `m` ever has (February: 29).
fn max_days(m: u32) -> u32 {
    match m {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month 1..=12, day 1..=31) of a day number (days since 1970-01-01), from Howard
/// Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// 0 = Sunday.
fn weekday(y: i64, m: u32, d: u32) -> u32 {
    // 1970-01-01 was a Thursday.
    (days_from_civil(y, m, d) + 4).rem_euclid(7) as u32
}

/// A schedule in a config file: a cron expression, or "off" / "" for none.
pub fn de_schedule<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Schedule>, D::Error> {
    let t = <String as serde::Deserialize>::deserialize(d)?;
    match t.trim() {
        "" | "off" => Ok(None),
        t => Schedule::parse(t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UTC "YYYY-MM-DD HH:MM" -> SystemTime.
    fn at(s: &str) -> SystemTime {
        let p = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let days = days_from_civil(p(0..4), p(5..7) as u32, p(8..10) as u32);
        let secs = days * 86400 + p(11..13) * 3600 + p(14..16) * 60;
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    }

    fn show(t: SystemTime) -> String {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        let (y, m, d) = civil_from_days(secs.div_euclid(86400));
        let r = secs.rem_euclid(86400);
        format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", r / 3600, r % 3600 / 60)
    }

    fn next(expr: &str, from: &str) -> String {
        show(Schedule::parse(expr).unwrap().next_after(at(from)).unwrap())
    }

    #[test]
    fn calendar_helpers_agree() {
        for z in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(weekday(1970, 1, 1), 4);
        assert_eq!(weekday(2024, 2, 29), 4);
        assert_eq!(weekday(2000, 1, 1), 6);
        let is_leap = |y| civil_from_days(days_from_civil(y, 2, 28) + 1).1 == 2;
        assert!(is_leap(2000) && is_leap(2024) && !is_leap(1900) && !is_leap(2100));
    }

    #[test]
    fn next_times() {
        let cases = [
            ("0 3 * * *", "2024-05-01 02:59", "2024-05-01 03:00"),
            ("0 3 * * *", "2024-05-01 03:00", "2024-05-02 03:00"),
            ("0 3 * * *", "2024-12-31 03:00", "2025-01-01 03:00"),
            ("* * * * *", "2024-05-01 10:10", "2024-05-01 10:11"),
            ("*/15 * * * *", "2024-05-01 10:10", "2024-05-01 10:15"),
            ("*/15 * * * *", "2024-05-01 10:45", "2024-05-01 11:00"),
            ("5/20 * * * *", "2024-05-01 10:46", "2024-05-01 11:05"),
            ("0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00"),
            ("0 0 29 2 *", "2096-03-01 00:00", "2104-02-29 00:00"),
            ("0 0 31 * *", "2024-04-01 00:00", "2024-05-31 00:00"),
            ("30 2 * * mon-fri", "2024-05-03 02:30", "2024-05-06 02:30"),
            ("30 2 * * 1-5", "2024-05-03 02:31", "2024-05-06 02:30"),
            ("0 0 * * 7", "2024-05-01 00:00", "2024-05-05 00:00"),
            ("0 0 * * sun", "2024-05-05 00:00", "2024-05-12 00:00"),
            // Both day fields restricted: either matches (13th or a Friday).
            ("0 0 13 * 5", "2024-05-01 00:00", "2024-05-03 00:00"),
            ("0 0 13 * 5", "2024-05-10 00:00", "2024-05-13 00:00"),
            // Day-of-month given as */n counts as starting with `*`: AND.
            ("0 0 */10 * 5", "2024-05-01 00:00", "2024-05-31 00:00"),
            ("0 9,17 * jan,JUL *", "2024-05-01 00:00", "2024-07-01 09:00"),
            ("15 14 1 * *", "2024-05-01 14:15", "2024-06-01 14:15"),
            ("@hourly", "2024-05-01 10:00", "2024-05-01 11:00"),
            ("@daily", "2024-05-01 10:00", "2024-05-02 00:00"),
            ("@weekly", "2024-05-01 10:00", "2024-05-05 00:00"),
            ("@monthly", "2024-05-01 10:00", "2024-06-01 00:00"),
            ("@yearly", "2024-05-01 10:00", "2025-01-01 00:00"),
            ("@annually", "2024-01-01 00:00", "2025-01-01 00:00"),
            ("59 23 31 12 *", "1969-12-31 23:58", "1969-12-31 23:59"),
            ("0 0 1 1 *", "1969-06-01 00:00", "1970-01-01 00:00"),
        ];
        for (expr, from, want) in cases {
            assert_eq!(next(expr, from), want, "{expr} after {from}");
        }
    }

    #[test]
    fn next_is_strictly_after_and_on_a_minute() {
        let s = Schedule::parse("* * * * *").unwrap();
        let t = at("2024-05-01 10:10") + Duration::from_millis(1500);
        assert_eq!(s.next_after(t), Some(at("2024-05-01 10:11")));
        let t = at("1969-12-31 23:59") + Duration::from_millis(500);
        assert_eq!(s.next_after(t), Some(at("1970-01-01 00:00")));
    }

    /// next_after agrees with a minute-by-minute search on random expressions.
    #[test]
    fn agrees_with_brute_force() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut r = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut pick = |min: u64, max: u64| -> String {
            match r(5) {
                0 => "*".into(),
                1 => format!("{}", min + r(max - min + 1)),
                2 => {
                    let a = min + r(max - min + 1);
                    format!("{a}-{}", a + r(max - a + 1))
                }
                3 => format!("*/{}", 1 + r(max.min(12))),
                _ => format!("{},{}", min + r(max - min + 1), min + r(max - min + 1)),
            }
        };
        let mut tested = 0;
        while tested < 300 {
            let expr = format!(
                "{} {} {} {} {}",
                pick(0, 59),
                pick(0, 23),
                pick(1, 31),
                pick(1, 12),
                pick(0, 7)
            );
            let Ok(s) = Schedule::parse(&expr) else {
                continue;
            };
            tested += 1;
            let from = at("2023-11-20 13:37");
            let want = (1..=(60 * 24 * 366 * 2))
                .map(|i| from + Duration::from_secs(i * 60))
                .find(|t| {
                    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                    let (y, m, d) = civil_from_days(secs / 86400);
                    let mins = secs % 86400 / 60;
                    s.day_matches(y, m, d)
                        && s.hours & (1 << (mins / 60)) != 0
                        && s.minutes & (1 << (mins % 60)) != 0
                });
            if let Some(want) = want {
                assert_eq!(s.next_after(from), Some(want), "{expr}");
            }
        }
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * 0 *",
            "* * * * 8",
            "*/0 * * * *",
            "*/61 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "1,,2 * * * *",
            "-1 * * * *",
            "* * * foo *",
            "* * * * mon-",
            "1.5 * * * *",
            "@reboot",
            "@every 5m",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        // With a weekday restriction, the days are OR-ed, so this is fine.
        assert!(Schedule::parse("0 0 30 2 mon").is_ok());
        assert!(Schedule::parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let e = Schedule::parse("0 25 * * *").unwrap_err();
        assert_eq!(e, "hour: 25 is outside 0-23");
        let e = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(e.contains("never"), "{e}");
        let e = Schedule::parse("0 0 * *").unwrap_err();
        assert!(e.contains("5"), "{e}");
    }

    #[test]
    fn compares_and_prints_as_source() {
        let s = Schedule::parse(" 0 3 * * * ").unwrap();
        assert_eq!(s.to_string(), "0 3 * * *");
        assert_eq!(s, "0 3 * * *".parse().unwrap());
        assert_ne!(s, Schedule::parse("0 3 * * 0-7").unwrap());
    }
}
