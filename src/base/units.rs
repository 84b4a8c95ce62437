//! Sizes and durations as people write them in the config and on the command line: the
//! one parser of each (so that "16MB" means the same everywhere: 16,000,000 bytes), their
//! serde forms, and sizes for people.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a size: an integer number of bytes, or a number with a unit: `KiB`, `MiB`,
/// `GiB`, `TiB` (or `K`, `M`, `G`, `T`: powers of 1024 too) or `kB`, `MB`, `GB`, `TB`
/// (powers of 1000), any case, optional space: "64KiB", "1.5 GiB", "500MB", "4096".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let what = || format!("`{s}` is not a size like \"64KiB\", \"1GiB\" or 4096");
    let mult: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(what()),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || int.len() > 20 || frac.len() > 9 || frac.contains('.') {
        return Err(what());
    }
    let int: u128 = int.parse().map_err(|_| what())?;
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| what())?
    };
    let bytes = int * mult + frac_val * mult / 10u128.pow(frac.len() as u32);
    if bytes > i64::MAX as u128 {
        return Err(format!("`{s}` is larger than any file system holds"));
    }
    Ok(bytes as u64)
}

/// A duration key: a string for [`parse_duration`], or an integer number of seconds.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a duration like \"30s\", \"5m\", \"60d\"")
    })? {
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

pub fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(i64),
        Text(String),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a size like \"64KiB\", \"1GiB\" or 4096"))?
    {
        Raw::Bytes(n) => u64::try_from(n)
            .map_err(|_| serde::de::Error::custom(format!("{n} is not a size (negative)"))),
        Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

pub fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

/// Parses a duration such as "250ms", "1s", "5m", "12h", "60d" (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"30s\", \"5m\", \"60d\""))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        "w" => n * 7.0 * 86400.0,
        u => {
            return Err(format!(
                "unknown unit `{u}` in `{s}` (use ms, s, m, h, d, w)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A size for people: "512 B", "1.5 KiB", "3.0 GiB".
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}
/// Bytes in at most six columns: "512B", "999.9K", "12.5M", "1.0T".
pub fn short_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else if v < 100.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}
