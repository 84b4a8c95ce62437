//! The clock and civil dates: nanoseconds since the epoch, and days <-> (year, month, day)
//! in the proleptic Gregorian calendar (UTC).

/// A time as nanoseconds since the Unix epoch (negative before 1970).
pub fn ns_of_system_time(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Now, in nanoseconds since the Unix epoch (negative before 1970).
pub fn system_now_ns() -> i64 {
    ns_of_system_time(std::time::SystemTime::now())
}

pub use super::cron::{civil_from_days, days_from_civil};

/// UTC time of nanoseconds since the epoch, ISO 8601 to the millisecond.
pub fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
