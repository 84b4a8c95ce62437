//! The reporting commands: `find`, `stats`, `events`, `config` and `audit`. Each asks the
//! daemon of the mount over the control socket (pages of at most [`PAGE`] rows at a time,
//! printed as they come) and prints text for people or JSON lines for scripts. None of
//! them recalls a file or contacts the store. Exit codes: 0 done, 1 failure or findings (a
//! broken chain), 2 bad input.

use std::io::Write;

use anyhow::anyhow;
use serde::Serialize;
use serde_json::json;

use super::args::{AuditArgs, ConfigCommand, EventsArgs, FindArgs, StatsArgs};
use super::output::{local_minute, print_json_line};
use super::request::{call_typed, client_for, resolve};
use super::BadInput;
use crate::base::time::format_time;
use crate::base::units::{human_bytes, parse_duration, parse_size};
use crate::control::protocol::Op;
use crate::control::queries::{EventsRequest, FindRequest};
use crate::control::replies::{
    AuditReply, ConfigVersionRow, ConfigVersionsReply, EventRow, EventsReply, FindCount, FindReply,
    StatsReply,
};

/// Rows asked for per request.
pub const PAGE: u64 = 5000;

pub(super) fn stats(a: &StatsArgs) -> anyhow::Result<()> {
    let since_ns = match &a.since {
        None => None,
        Some(s) => Some(parse_since(s, now_ns()).map_err(|e| BadInput(format!("--since: {e}")))?),
    };
    let mut c = client_for(&a.mountpoint)?;
    let r: StatsReply = call_typed(&mut c, Op::Stats { since_ns })?;
    if a.json {
        print_json_line(&r);
    } else {
        print!("{}", stats_text(&r));
    }
    Ok(())
}

pub(super) fn audit(a: &AuditArgs) -> anyhow::Result<()> {
    let mut c = client_for(&a.mountpoint)?;
    let r: AuditReply = call_typed(&mut c, Op::Audit)?;
    if a.json {
        print_json_line(&r);
    }
    let head = format!(
        "head: event {} hash {}",
        r.head
            .as_ref()
            .map_or_else(|| "null".to_string(), |h| h.id.to_string()),
        r.head.as_ref().map_or("-", |h| h.hash.as_str())
    );
    if r.ok {
        if !a.json {
            println!(
                "event chain intact: {} events verified; {head} (record it elsewhere to detect a cut tail)",
                r.checked,
            );
        }
        Ok(())
    } else {
        Err(anyhow!(
            "event chain broken at event {}: {} (events 1..{} verify; {head})",
            r.first_bad_id
                .map_or_else(|| "null".to_string(), |i| i.to_string()),
            r.reason.as_deref().unwrap_or("?"),
            r.checked,
        ))
    }
}

// ---- find ------------------------------------------------------------------------------

fn now_ns() -> i64 {
    crate::base::time::system_now_ns()
}

pub(super) fn find(a: &FindArgs) -> anyhow::Result<()> {
    let modified_before_ns = match &a.older_than {
        None => None,
        Some(d) => {
            let d = parse_duration(d).map_err(|e| BadInput(format!("--older-than: {e}")))?;
            Some(now_ns().saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
        }
    };
    let larger_than = match &a.larger_than {
        None => None,
        Some(s) => Some(parse_size(s).map_err(|e| BadInput(format!("--larger-than: {e}")))?),
    };
    if a.path.as_deref() == Some("") {
        return Err(
            BadInput("--path: empty glob (leave it out to match every path)".into()).into(),
        );
    }
    let mut c = client_for(&a.mountpoint)?;
    let mut req = FindRequest {
        states: a.state.clone(),
        modified_before_ns,
        larger_than,
        path_glob: a.path.clone(),
        pinned: a.pinned.then_some(true),
        pack: a.pack.clone(),
        after: None,
        limit: PAGE,
        count_only: a.count,
    };
    if a.count {
        let r: FindCount = call_typed(&mut c, Op::Find(req))?;
        if a.json {
            print_json_line(&r);
        } else {
            println!(
                "{} files, {} ({} bytes)",
                r.files,
                human_bytes(r.bytes),
                r.bytes
            );
        }
        return Ok(());
    }
    let mut left = a.limit.unwrap_or(u64::MAX);
    let mut out = std::io::stdout().lock();
    while left > 0 {
        req.limit = PAGE.min(left);
        let r: FindReply = call_typed(&mut c, Op::Find(req.clone()))?;
        left = left.saturating_sub(r.files.len() as u64);
        for f in &r.files {
            if a.json {
                writeln!(out, "{}", json_line(f)?)?;
            } else {
                writeln!(
                    out,
                    "{:<15} {} {:>10}  {}  {}",
                    f.state,
                    if f.pinned { "P" } else { "-" },
                    human_bytes(f.size),
                    local_minute(f.mtime_ns),
                    f.path.display()
                )?;
            }
        }
        match r.next_after {
            Some(next) => req.after = Some(next),
            None => break,
        }
    }
    Ok(())
}

// ---- stats -----------------------------------------------------------------------------

pub fn stats_text(r: &StatsReply) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{}: {} tracked files, {}\n\n",
        r.mountpoint.display(),
        r.files,
        human_bytes(r.bytes)
    ));
    s.push_str(&format!(
        "{:<16} {:>12} {:>12}\n",
        "STATE", "FILES", "BYTES"
    ));
    for st in &r.states {
        s.push_str(&format!(
            "{:<16} {:>12} {:>12}\n",
            st.state,
            st.files,
            human_bytes(st.bytes)
        ));
    }
    s.push_str(&format!(
        "{:<16} {:>12} {:>12}\n\n",
        "(pinned)",
        r.pinned.files,
        human_bytes(r.pinned.bytes)
    ));
    s.push_str(&format!(
        "local space saved: {} ({} bytes: stubs and files waiting for a restore)\n\n",
        human_bytes(r.local_bytes_saved),
        r.local_bytes_saved
    ));
    s.push_str(&format!(
        "{:<20} {:>10} {:>12} {:>14} {:>12}\n",
        "STORAGE CLASS", "OBJECTS", "BYTES", "USD/GB-MONTH", "USD/MONTH"
    ));
    for c in &r.storage_classes {
        s.push_str(&format!(
            "{:<20} {:>10} {:>12} {:>14} {:>12.2}\n",
            c.storage_class,
            c.files,
            human_bytes(c.bytes),
            c.usd_per_gb_month,
            c.monthly_usd
        ));
    }
    s.push_str(&format!(
        "estimated storage cost: {:.2} USD/month (prices from [costs]; no requests, retrievals or minimums)\n",
        r.monthly_usd
    ));
    if let Some(st) = &r.store {
        s.push_str(&format!(
            "\nstore: {}\n  {}; copies are proven by {}{}\n",
            st.describe,
            if st.validates_checksums {
                "refuses uploads that do not match their checksum"
            } else {
                "does not refuse an upload that does not match its checksum"
            },
            st.copies_proven_by,
            if st.tiering_paused {
                "\n  tiering is PAUSED (coldtier resume)"
            } else {
                ""
            }
        ));
    }
    if let Some(p) = &r.packs {
        s.push_str(&format!(
            "\npacks: {} holding {} files, {} in the store, {} of it live ({:.0}%; the rest goes at repack or gc)\n",
            p.packs,
            p.members,
            crate::base::units::human_bytes(p.bytes),
            crate::base::units::human_bytes(p.live_bytes),
            if p.bytes > 0 { 100.0 * p.live_bytes as f64 / p.bytes as f64 } else { 0.0 }
        ));
    }
    if let Some(rs) = &r.recalls {
        s.push_str(&format!(
            "\nreads of stubs since {} (recalls, stream reads, refusals: denied, deferred, throttled)\n",
            crate::base::time::format_time(rs.since_ns)
        ));
        if rs.by_program.is_empty() {
            s.push_str("  none\n");
        }
        for (title, rows) in [("PROGRAM", &rs.by_program), ("UID", &rs.by_uid)] {
            if rows.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "{:<16} {:>9} {:>12} {:>9} {:>12} {:>9}\n",
                title, "RECALLS", "BYTES", "STREAMED", "BYTES", "REFUSED"
            ));
            for x in rows.iter() {
                let name = x
                    .program
                    .clone()
                    .or_else(|| x.uid.map(|u| u.to_string()))
                    .unwrap_or_else(|| "-".into());
                s.push_str(&format!(
                    "{:<16} {:>9} {:>12} {:>9} {:>12} {:>9}\n",
                    name,
                    x.recalls,
                    human_bytes(x.recalled_bytes),
                    x.streamed,
                    human_bytes(x.streamed_bytes),
                    x.refused
                ));
            }
        }
    }
    s
}

// ---- events ----------------------------------------------------------------------------

/// `--since`: "2026-11-30", "2026-11-30T08:00", "2026-11-30 08:00:05Z" (UTC), or a
/// duration ago ("90m", "24h", "7d"). Nanoseconds since the epoch.
pub fn parse_since(s: &str, now_ns: i64) -> Result<i64, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "`{s}` is not a time like \"2026-11-30\", \"2026-11-30T08:00:00Z\" (UTC) or a duration ago like \"24h\", \"7d\""
        )
    };
    if !t.contains('-') && !t.contains(':') {
        let d = parse_duration(t).map_err(|_| bad())?;
        return Ok(now_ns.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)));
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, tm),
        None => (t, "00:00:00"),
    };
    let num = |x: &str, lo: i64, hi: i64| -> Result<i64, String> {
        let v: i64 = x.parse().map_err(|_| bad())?;
        if (lo..=hi).contains(&v) && !x.is_empty() {
            Ok(v)
        } else {
            Err(bad())
        }
    };
    let dp: Vec<&str> = date.split('-').collect();
    if dp.len() != 3 || dp[0].len() != 4 {
        return Err(bad());
    }
    let (y, mo, d) = (
        num(dp[0], 1970, 9999)?,
        num(dp[1], 1, 12)?,
        num(dp[2], 1, 31)?,
    );
    let tp: Vec<&str> = time.split(':').collect();
    if tp.len() < 2 || tp.len() > 3 {
        return Err(bad());
    }
    let (h, mi) = (num(tp[0], 0, 23)?, num(tp[1], 0, 59)?);
    let (sec, frac) = match tp.get(2) {
        None => (0, 0),
        Some(x) => {
            let (whole, frac) = x.split_once('.').unwrap_or((x, ""));
            let f = if frac.is_empty() {
                0
            } else if frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) {
                frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - frac.len() as u32)
            } else {
                return Err(bad());
            };
            (num(whole, 0, 60)?, f)
        }
    };
    let secs = crate::base::cron::days_from_civil(y, mo as u32, d as u32) * 86400
        + h * 3600
        + mi * 60
        + sec;
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(frac))
        .ok_or_else(|| format!("`{s}` is after 2262, the last time coldtier can record"))
}

/// One line of `events --json`: the event and its time in words (for a SIEM).
#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(flatten)]
    event: &'a EventRow,
    time: String,
}

/// One JSON object as one line (keys sorted, as `output::print_json_line` prints them).
fn json_line<T: Serialize>(v: &T) -> serde_json::Result<String> {
    serde_json::to_string(&serde_json::to_value(v)?)
}

pub(super) fn events(a: &EventsArgs) -> anyhow::Result<()> {
    let since_ns = match &a.since {
        None => None,
        Some(s) => Some(parse_since(s, now_ns()).map_err(|e| BadInput(format!("--since: {e}")))?),
    };
    let path = match &a.path {
        None => None,
        Some(p) => {
            // The file may be gone: resolve what exists of it, keep the rest.
            let abs = std::path::absolute(p).map_err(|e| BadInput(format!("--path: {e}")))?;
            Some(resolve(&abs).unwrap_or(abs))
        }
    };
    let mut c = client_for(&a.mountpoint)?;
    let mut req = EventsRequest {
        since_ns,
        kinds: a.kinds.clone(),
        path,
        after_id: a.after,
        limit: PAGE,
    };
    let mut left = a.limit.unwrap_or(u64::MAX);
    let mut out = std::io::stdout().lock();
    while left > 0 {
        req.limit = PAGE.min(left);
        let r: EventsReply = call_typed(&mut c, Op::Events(req.clone()))?;
        left = left.saturating_sub(r.events.len() as u64);
        for e in &r.events {
            if a.json {
                let line = EventLine {
                    event: e,
                    time: format_time(e.time_ns),
                };
                writeln!(out, "{}", json_line(&line)?)?;
            } else {
                writeln!(
                    out,
                    "{:>8}  {}  {:<17} v{:<3} {}  {}",
                    e.id,
                    format_time(e.time_ns),
                    e.kind,
                    e.config_version,
                    e.path.as_deref().unwrap_or("-"),
                    super::output::detail_text(&e.detail, &r.key_prefix)
                )?;
            }
        }
        match r.next_after_id {
            Some(id) => req.after_id = id,
            None => break,
        }
    }
    Ok(())
}

// ---- config ----------------------------------------------------------------------------

/// A line diff of `a` to `b` (longest common subsequence): lines prefixed with ' ', '-'
/// or '+'.
pub fn diff_lines(a: &str, b: &str) -> Vec<String> {
    let x: Vec<&str> = a.lines().collect();
    let y: Vec<&str> = b.lines().collect();
    let (n, m) = (x.len(), y.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if x[i] == y[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            out.push(format!(" {}", x[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || l[i][j + 1] >= l[i + 1][j]) {
            out.push(format!("+{}", y[j]));
            j += 1;
        } else {
            out.push(format!("-{}", x[i]));
            i += 1;
        }
    }
    out
}

pub(super) fn config(cmd: &ConfigCommand) -> anyhow::Result<()> {
    let mountpoint = match cmd {
        ConfigCommand::Show { mountpoint, .. }
        | ConfigCommand::History { mountpoint, .. }
        | ConfigCommand::Diff { mountpoint, .. } => mountpoint,
    };
    let mut c = client_for(mountpoint)?;
    let r: ConfigVersionsReply = call_typed(&mut c, Op::ConfigVersions)?;
    let versions = &r.versions;
    let known = || {
        let n = versions.len();
        if n == 0 {
            "the catalog has no config version yet".to_string()
        } else {
            format!("versions 1 to {n} exist (see `coldtier config history`)")
        }
    };
    let get = |v: i64| -> anyhow::Result<&ConfigVersionRow> {
        versions
            .iter()
            .find(|x| x.version == v)
            .ok_or_else(|| BadInput(format!("no config version {v}: {}", known())).into())
    };
    match cmd {
        ConfigCommand::Show { version, json, .. } => {
            let v = match version.or(r.current) {
                Some(v) => get(v)?,
                None => return Err(anyhow!("{}", known())),
            };
            if *json {
                print_json_line(v);
            } else {
                print!("{}", v.text);
            }
        }
        ConfigCommand::History { json, .. } => {
            /// A version without its text.
            #[derive(Serialize)]
            struct VersionLine<'a> {
                version: i64,
                hash: &'a str,
                time_ns: i64,
            }
            for v in versions {
                if *json {
                    print_json_line(&VersionLine {
                        version: v.version,
                        hash: &v.hash,
                        time_ns: v.time_ns,
                    });
                } else {
                    println!(
                        "v{:<4} {}  sha256 {}{}",
                        v.version,
                        format_time(v.time_ns),
                        v.hash,
                        if Some(v.version) == r.current {
                            "  (in force)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        ConfigCommand::Diff { from, to, json, .. } => {
            let (a, b) = (get(*from)?, get(*to)?);
            let lines = diff_lines(&a.text, &b.text);
            if *json {
                let changed: Vec<&String> = lines.iter().filter(|l| !l.starts_with(' ')).collect();
                print_json_line(&json!({"from": from, "to": to, "changes": changed}));
            } else {
                println!("--- config v{from}\n+++ config v{to}");
                for l in &lines {
                    println!("{l}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_times_and_durations() {
        assert_eq!(parse_since("1970-01-02", 0).unwrap(), 86_400_000_000_000);
        assert_eq!(
            parse_since("2025-12-01T00:00:00.123Z", 0).unwrap(),
            1_764_547_200_123_000_000
        );
        assert_eq!(
            parse_since("2025-12-01 00:01", 0).unwrap(),
            1_764_547_260_000_000_000
        );
        assert_eq!(
            parse_since("2h", 10_000_000_000_000).unwrap(),
            10_000_000_000_000 - 7_200_000_000_000
        );
        assert!(parse_since("2999-01-01", 0).unwrap_err().contains("2262"));
        for bad in [
            "yesterday",
            "2025-13-01",
            "2025-12-01T25:00",
            "25-12-01",
            "2025-12-01T10",
        ] {
            let e = parse_since(bad, 0).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn diffs_read_like_diff() {
        assert_eq!(
            diff_lines("a\nb\nc\n", "a\nc\nd\n"),
            vec![" a", "-b", " c", "+d"]
        );
    }
}
