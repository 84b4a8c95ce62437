//! Catalog backups: a consistent online snapshot with SQLite's backup API (while the
//! daemon keeps writing), its names, the daily/weekly/monthly retention and the pruning of
//! a local directory. The backup run (local copy, upload under `<prefix>/catalog/`,
//! pruning, the CATALOG_BACKUP event) is `crate::jobs::backup`.
//!
//! Consistency: the snapshot is copied in ONE backup step (`step(-1)`), i.e. inside one
//! read transaction on a read-only connection. In WAL mode that transaction sees one
//! committed state and does not block the writer; a step-wise copy would restart every
//! time the daemon commits and might never finish under load.

use crate::base::time::{civil_from_days, days_from_civil};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::Context;
use super::{Catalog, CatalogError};

/// The first segment of backup keys inside the store's prefix (data lives under `data/`).
pub const STORE_DIR: &str = "catalog";

/// The default retention: the newest backup of each of the last 7 days, 4 weeks and 12
/// months that have one.
pub const DEFAULT_KEEP: &str = "7d 4w 12m";

/// What one snapshot holds.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub path: PathBuf,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    pub files: u64,
    pub events: u64,
    /// The chain head in the snapshot (id 0 and the genesis hash for none).
    pub last_event_id: i64,
    pub last_event_hash: String,
}

impl Catalog {
    /// Writes a consistent snapshot of the catalog to `dest` (which must not exist): the
    /// backup API in one step from a read-only connection, then the copy is switched to
    /// rollback-journal mode (a single self-contained file), checked with
    /// `PRAGMA integrity_check`, fsynced and renamed into place.
    pub fn snapshot_to(&self, dest: &Path) -> Result<Snapshot, CatalogError> {
        if dest.exists() {
            return Err(CatalogError::Backup(format!(
                "{} exists already: backups are never overwritten",
                dest.display()
            )));
        }
        let tmp = dest.with_extension("db.partial");
        let _ = std::fs::remove_file(&tmp);
        let out = self.snapshot_inner(&tmp);
        if out.is_err() {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(tmp.with_extension("partial-journal"));
            return out;
        }
        let mut snap = out?;
        std::fs::rename(&tmp, dest)
            .map_err(|e| CatalogError::Backup(format!("renaming to {}: {e}", dest.display())))?;
        if let Some(dir) = dest.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        snap.path = dest.to_path_buf();
        Ok(snap)
    }

    fn snapshot_inner(&self, tmp: &Path) -> Result<Snapshot, CatalogError> {
        let src = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("opening the catalog for a backup")?;
        src.busy_timeout(super::BUSY_TIMEOUT)
            .ctx("setting the busy timeout")?;
        // 0600 before SQLite opens it (its journal then gets the same mode).
        crate::base::private::open_private(tmp, false)
            .map_err(|e| CatalogError::Backup(format!("creating {}: {e}", tmp.display())))?;
        let mut dst = Connection::open_with_flags(
            tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("creating the backup file")?;
        {
            let b = Backup::new(&src, &mut dst).ctx("starting the backup")?;
            let mut tries = 0;
            loop {
                match b.step(-1).ctx("copying the catalog")? {
                    StepResult::Done => break,
                    StepResult::More => continue,
                    // Another connection holds a lock we need for a moment: wait and retry.
                    StepResult::Busy | StepResult::Locked if tries < 200 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        return Err(CatalogError::Backup(
                            "the catalog stayed locked for 10 s: try again".into(),
                        ))
                    }
                }
            }
        }
        drop(src);
        let mode: String = dst
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .ctx("switching the backup to a rollback journal")?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(CatalogError::Backup(format!(
                "the backup kept journal mode {mode}"
            )));
        }
        let check: Vec<String> = dst
            .prepare("PRAGMA integrity_check")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .ctx("checking the backup")?;
        if check != ["ok"] {
            return Err(CatalogError::Backup(format!(
                "the backup fails integrity_check: {}",
                check.join("; ")
            )));
        }
        let files: u64 = dst
            .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
            .ctx("counting files in the backup")?;
        let events: u64 = dst
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .ctx("counting events in the backup")?;
        let head: Option<(i64, String)> = dst
            .query_row(
                "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx("reading the chain head of the backup")?;
        dst.close().map_err(|(_, e)| e).ctx("closing the backup")?;
        let f = std::fs::File::open(tmp)
            .map_err(|e| CatalogError::Backup(format!("reopening {}: {e}", tmp.display())))?;
        f.sync_all()
            .map_err(|e| CatalogError::Backup(format!("fsync {}: {e}", tmp.display())))?;
        let (bytes, sha256) = sha256_file(tmp)
            .map_err(|e| CatalogError::Backup(format!("reading {}: {e}", tmp.display())))?;
        let (last_event_id, last_event_hash) = head.unwrap_or((0, super::GENESIS_HASH.to_string()));
        Ok(Snapshot {
            path: tmp.to_path_buf(),
            bytes,
            sha256,
            files,
            events,
            last_event_id,
            last_event_hash,
        })
    }
}

fn sha256_file(p: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

// ---- names and retention ----------------------------------------------------------------

/// (year, month 1..=12, day 1..=31) of days since 1970-01-01.
fn civil(days: i64) -> (i64, i64, i64) {
    let (y, m, d) = civil_from_days(days);
    (y, m.into(), d.into())
}

/// Days since 1970-01-01 of a civil date (month 1..=12, day 1..=31).
fn days_of(y: i64, m: i64, d: i64) -> i64 {
    days_from_civil(y, m as u32, d as u32)
}

/// `<name>-YYYYMMDDTHHMMSS.mmmZ.db` for a backup taken at `time_ns` (UTC): sorts by time.
pub fn file_name(name: &str, time_ns: i64) -> String {
    let secs = time_ns.div_euclid(1_000_000_000);
    let ms = time_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (y, m, d) = civil(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    format!(
        "{name}-{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{ms:03}Z.db",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The time (ns) of a backup file named by [`file_name`] for `name`; None for other files.
pub fn parse_file_name(name: &str, file: &str) -> Option<i64> {
    let t = file
        .strip_prefix(name)?
        .strip_prefix('-')?
        .strip_suffix("Z.db")?;
    let b = t.as_bytes();
    if b.len() != 19 || b[8] != b'T' || b[15] != b'.' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s, ms) = (num(9..11)?, num(11..13)?, num(13..15)?, num(16..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let secs = days_of(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
    Some(secs * 1_000_000_000 + ms * 1_000_000)
}

/// How many backups to keep: the newest of each of the last `daily` days, `weekly` weeks
/// (Monday to Sunday, UTC) and `monthly` months that have one. The newest backup is
/// always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Keep {
    /// Parses "7d 4w 12m" (any order, each at most once, missing ones are 0).
    pub fn parse(s: &str) -> Result<Keep, String> {
        let mut k = Keep {
            daily: 0,
            weekly: 0,
            monthly: 0,
        };
        let mut seen = [false; 3];
        let what = || format!("`{s}` is not like \"7d 4w 12m\" (daily, weekly, monthly counts)");
        for tok in s.split_whitespace() {
            let (n, unit) = tok.split_at(tok.len() - 1);
            let n: u32 = n.parse().map_err(|_| what())?;
            if n > 10_000 {
                return Err(format!("`{tok}`: at most 10000"));
            }
            let i = match unit {
                "d" => 0,
                "w" => 1,
                "m" => 2,
                _ => return Err(what()),
            };
            if seen[i] {
                return Err(format!("`{s}` names `{unit}` twice"));
            }
            seen[i] = true;
            match i {
                0 => k.daily = n,
                1 => k.weekly = n,
                _ => k.monthly = n,
            }
        }
        if !seen.iter().any(|s| *s) {
            return Err(what());
        }
        Ok(k)
    }

    /// Which of the backups taken at `times` (ns, any order) to keep, by index.
    pub fn kept(&self, times: &[i64]) -> Vec<bool> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(times[i]));
        let mut keep = vec![false; times.len()];
        let periods: [(u32, &dyn Fn(i64) -> i64); 3] = [
            (self.daily, &|day| day),
            // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
            (self.weekly, &|day| (day + 3).div_euclid(7)),
            (self.monthly, &|day| {
                let (y, m, _) = civil(day);
                y * 12 + m
            }),
        ];
        for (n, period) in periods {
            let mut last = None;
            let mut count = 0;
            for &i in &order {
                if count >= n {
                    break;
                }
                let p = period(times[i].div_euclid(86_400_000_000_000));
                if last != Some(p) {
                    last = Some(p);
                    keep[i] = true;
                    count += 1;
                }
            }
        }
        if let Some(&newest) = order.first() {
            keep[newest] = true;
        }
        keep
    }
}

/// Removes the backups of `name` in `dir` that `keep` does not keep; returns their names.
pub fn prune_dir(dir: &Path, name: &str, keep: &Keep) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Some(f) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(t) = parse_file_name(name, &f) {
            found.push((f, t));
        }
    }
    let times: Vec<i64> = found.iter().map(|f| f.1).collect();
    let mut pruned = Vec::new();
    for ((f, _), k) in found.iter().zip(keep.kept(&times)) {
        if !k {
            std::fs::remove_file(dir.join(f))?;
            pruned.push(f.clone());
        }
    }
    pruned.sort();
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    #[test]
    fn names_sort_by_time_and_parse_back() {
        let t = 1_764_621_442_123_000_000; // 2025-12-01T20:37:22.123Z
        let f = file_name("srv-share", t);
        assert_eq!(f, "srv-share-20251201T203722.123Z.db");
        assert_eq!(parse_file_name("srv-share", &f), Some(t));
        assert_eq!(parse_file_name("srv", &f), None);
        assert_eq!(parse_file_name("srv-share", "srv-share-2025.db"), None);
        assert_eq!(
            parse_file_name("srv-share", "srv-share-20251301T203722.123Z.db"),
            None
        );
        assert!(file_name("a", t) < file_name("a", t + 1_000_000));
        for days in [-1000, 0, 59, 365 * 30 + 7] {
            let (y, m, d) = civil(days);
            assert_eq!(days_of(y, m, d), days);
        }
    }

    #[test]
    fn keep_parses_and_refuses_nonsense() {
        assert_eq!(
            Keep::parse("7d 4w 12m"),
            Ok(Keep {
                daily: 7,
                weekly: 4,
                monthly: 12
            })
        );
        assert_eq!(Keep::parse("2w").unwrap().daily, 0);
        for bad in ["", "7", "7x", "d", "7d 7d", "-1d", "7d,4w"] {
            assert!(Keep::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn retention_keeps_the_newest_of_each_day_week_and_month() {
        // One backup a day for 400 days, two on the last day.
        let start = days_of(2025, 1, 1) * DAY + 2 * 3600 * 1_000_000_000;
        let mut times: Vec<i64> = (0..400).map(|d| start + d * DAY).collect();
        let last = *times.last().unwrap();
        times.push(last + 3600 * 1_000_000_000);
        let k = Keep::parse("7d 4w 12m").unwrap();
        let kept = k.kept(&times);
        let kept_times: Vec<i64> = times
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(t, _)| *t)
            .collect();
        // 7 days (the newest of the last day, not its earlier one), + older week ends,
        // + older month ends: no more than 7 + 4 + 12.
        assert!(kept_times.len() <= 23, "{}", kept_times.len());
        assert!(kept_times.len() > 12, "{}", kept_times.len());
        assert!(kept[times.len() - 1], "the newest is kept");
        assert!(
            !kept[times.len() - 2],
            "an older backup of the same day goes"
        );
        // Each of the last 7 days keeps one.
        for d in 1..7 {
            assert!(kept[times.len() - 2 - d], "day -{d}");
        }
        // 12 distinct months are represented.
        let months: std::collections::BTreeSet<(i64, i64)> = kept_times
            .iter()
            .map(|t| {
                let (y, m, _) = civil(t.div_euclid(DAY));
                (y, m)
            })
            .collect();
        assert_eq!(months.len(), 12, "{months:?}");
        // Nothing to prune when there are fewer backups than slots.
        assert!(k.kept(&times[..3]).iter().all(|k| *k));
        assert!(Keep::parse("1d").unwrap().kept(&[]).is_empty());
    }
}

#[cfg(test)]
mod big {
    use super::*;
    use crate::catalog::EventKind;
    use serde_json::json;
    use std::sync::Arc;

    /// A catalog of 100,000 files (generated in SQL) backs up whole and consistent while
    /// another thread keeps appending events; prints the time it takes (debug builds
    /// compile SQLite and SHA-256 without optimisation: most of it is the integrity check
    /// and the hash of the copy).
    #[test]
    fn a_big_catalog_backs_up_under_writes() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Arc::new(Catalog::open(dir.path().join("c.db")).unwrap());
        let t0 = std::time::Instant::now();
        {
            let conn = &cat.writer.lock().conn;
            conn.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
                 INSERT INTO files (file_id, path, state, size, mtime_ns, ctime_ns, ino,
                                    object_key, updated_at)
                 SELECT printf('%032x', i), 'dir' || (i % 1000) || '/file' || i, 'stub',
                        i * 1000, i, i, i, printf('data/%032x/%016x', i, i), i FROM n;",
            )
            .unwrap();
        }
        let generated = t0.elapsed();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (cat, stop) = (cat.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    cat.append_event(None, None, EventKind::Scanned, json!({"n": n}))
                        .unwrap();
                    n += 1;
                }
                n
            })
        };
        let t1 = std::time::Instant::now();
        // Let the writer get going first.
        while cat.last_event().unwrap().map_or(0, |e| e.id) < 10 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let snap = cat.snapshot_to(&dir.path().join("b.db")).unwrap();
        let took = t1.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let appended = writer.join().unwrap();
        assert_eq!(snap.files, 100_000);
        assert!(appended > 0);
        assert!(snap.events >= 10, "{}", snap.events);
        eprintln!(
            "100k files: generated in {:.1}s; backup of {} MiB in {:.2}s while {appended} events \
             were appended ({} of them in the copy)",
            generated.as_secs_f64(),
            snap.bytes >> 20,
            took.as_secs_f64(),
            snap.events
        );
    }
}
