//! The clock and civil dates: nanoseconds since the epoch, and days <-> (year, month, day)
//! in the proleptic Gregorian calendar (UTC).

/// Now, in nanoseconds since the Unix epoch (negative before 1970).
pub fn system_now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub use super::cron::{civil_from_days, days_from_civil};
