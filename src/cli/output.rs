//! Output helpers shared by the commands: JSON lines for scripts, local times for tables.
//! Sizes and UTC times are `crate::base::units::human_bytes` and
//! `crate::base::time::format_time`.

use serde::Serialize;

use crate::base::time::format_time;

/// One JSON object on one line of stdout. It goes through `serde_json::Value`, whose
/// objects sort their keys: the lines scripts read keep one order whatever the order of
/// the fields in the reply types.
pub fn print_json_line<T: Serialize>(v: &T) {
    let line = serde_json::to_value(v).and_then(|v| serde_json::to_string(&v));
    println!("{}", line.unwrap_or_default());
}

/// Local time "YYYY-MM-DD HH:MM" (like `ls -l --time-style=long-iso`).
pub fn local_minute(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000) as libc::time_t;
    // SAFETY: tm is a plain C struct that localtime_r fills in.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return format_time(ns);
        }
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min
        )
    }
}

/// An event's detail as the text output shows it: every `object_key` (at any depth: a
/// DELETED event keeps the row it removed) with the store's key prefix, as `status`,
/// `find`, `verify` and `gc` print keys and as the bucket lists them. `--json` keeps the
/// detail as recorded (the hash chain covers it).
pub fn detail_text(detail: &serde_json::Value, key_prefix: &str) -> String {
    fn walk(v: &mut serde_json::Value, prefix: &str) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    match v {
                        serde_json::Value::String(s) if k == "object_key" && !prefix.is_empty() => {
                            *s = format!("{prefix}/{s}");
                        }
                        _ => walk(v, prefix),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| walk(v, prefix)),
            _ => {}
        }
    }
    let mut d = detail.clone();
    walk(&mut d, key_prefix);
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::units::human_bytes;

    #[test]
    fn times_and_sizes_print_as_people_read_them() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_time(1_764_547_200_123_000_000),
            "2025-12-01T00:00:00.123Z"
        );
        assert_eq!(format_time(-1_000_000_000), "1969-12-31T23:59:59.000Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
