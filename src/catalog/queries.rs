//! Read-only queries behind the reporting commands (`find`, `stats`, `events`): filtered,
//! paged (keyset: no OFFSET), and answered from indexes and the `file_totals` running
//! totals of schema v2, so they stay fast on millions of rows.

use super::{event_from_row, file_from_row, Catalog, Event, EventKind, FileRow, FileState};
use super::{EVENT_COLS, FILE_COLS};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, OptionalExtension};
use serde::{Deserialize, Serialize};

type Result<T, E = super::CatalogError> = std::result::Result<T, E>;

/// Which tracked files `find` wants. Every filter given must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileQuery {
    /// Any of these states (empty: any state).
    pub states: Vec<FileState>,
    /// Last modified (mtime) before this time, nanoseconds since the epoch.
    pub modified_before_ns: Option<i64>,
    /// Strictly larger than this many bytes.
    pub larger_than: Option<u64>,
    /// SQLite GLOB on the path relative to the source (`*` also spans `/`; case-sensitive).
    pub path_glob: Option<String>,
    /// Only pinned (true) or only unpinned (false) files.
    pub pinned: Option<bool>,
    /// Only members of packs: of any pack (`Some(None)`) or of the pack with this id.
    pub pack: Option<Option<String>>,
}

/// Files and bytes in one (state, storage class, pinned) group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    pub state: FileState,
    /// None: no object (resident files never copied).
    pub storage_class: Option<String>,
    pub pinned: bool,
    pub files: u64,
    pub bytes: u64,
}

/// Which events `events` wants. Every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// At or after this time (nanoseconds since the epoch).
    pub since_ns: Option<i64>,
    /// Any of these kinds (empty: any kind).
    pub kinds: Vec<EventKind>,
    /// Events of this path, or of any path below it (relative to the source).
    pub path: Option<String>,
}

/// The literal part of a GLOB pattern before its first wildcard.
fn glob_prefix(glob: &str) -> &str {
    let end = glob.find(['*', '?', '[']).unwrap_or(glob.len());
    &glob[..end]
}

/// `col >= prefix AND col < prefix + U+10FFFF`: the rows whose `col` starts with `prefix`,
/// as a range the column's index can serve.
fn push_prefix(conds: &mut Vec<String>, args: &mut Vec<Value>, col: &str, prefix: &str) {
    if prefix.is_empty() {
        return;
    }
    conds.push(format!("{col} >= ? AND {col} < ?"));
    args.push(Value::Text(prefix.to_owned()));
    args.push(Value::Text(format!("{prefix}\u{10FFFF}")));
}

fn file_conditions(q: &FileQuery) -> (Vec<String>, Vec<Value>) {
    let mut conds = Vec::new();
    let mut args = Vec::new();
    if !q.states.is_empty() {
        let marks = vec!["?"; q.states.len()].join(", ");
        conds.push(format!("state IN ({marks})"));
        args.extend(q.states.iter().map(|s| Value::Text(s.as_str().into())));
    }
    if let Some(t) = q.modified_before_ns {
        conds.push("mtime_ns < ?".into());
        args.push(Value::Integer(t));
    }
    if let Some(n) = q.larger_than {
        conds.push("size > ?".into());
        args.push(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
    }
    if let Some(g) = &q.path_glob {
        push_prefix(&mut conds, &mut args, "path", glob_prefix(g));
        conds.push("path GLOB ?".into());
        args.push(Value::Text(g.clone()));
    }
    if let Some(p) = q.pinned {
        conds.push("pinned = ?".into());
        args.push(Value::Integer(p.into()));
    }
    match &q.pack {
        None => {}
        Some(None) => conds.push("object_key IN (SELECT object_key FROM packs)".into()),
        Some(Some(id)) => {
            conds.push("object_key IN (SELECT object_key FROM packs WHERE pack_id = ?)".into());
            args.push(Value::Text(id.clone()));
        }
    }
    (conds, args)
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

impl Catalog {
    /// Up to `limit` files matching `q` whose path sorts after `after`, ordered by path.
    /// Page through all of them by passing the last path of each page as the next `after`.
    pub fn find_files(
        &self,
        q: &FileQuery,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileRow>> {
        let (mut conds, mut args) = file_conditions(q);
        if let Some(a) = after {
            conds.push("path > ?".into());
            args.push(Value::Text(a.to_owned()));
        }
        args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {FILE_COLS} FROM files {} ORDER BY path LIMIT ?",
            where_clause(&conds)
        );
        self.read("finding files", |c| {
            c.prepare(&sql)?
                .query_map(params_from_iter(args), file_from_row)?
                .collect()
        })
    }

    /// How many files match `q`, and their bytes (logical sizes).
    pub fn count_files(&self, q: &FileQuery) -> Result<(u64, u64)> {
        let (conds, args) = file_conditions(q);
        let sql = format!(
            "SELECT count(*), coalesce(sum(size), 0) FROM files {}",
            where_clause(&conds)
        );
        self.read("counting files", |c| {
            c.prepare(&sql)?
                .query_row(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))
        })
    }

    /// Files and bytes per (state, storage class, pinned), from the running totals (a few
    /// rows, whatever the number of files). Empty groups are left out.
    pub fn totals(&self) -> Result<Vec<Total>> {
        self.read("reading the file totals", |c| {
            c.prepare_cached(
                "SELECT state, storage_class, pinned, files, bytes FROM file_totals \
                 WHERE files > 0 ORDER BY state, storage_class, pinned",
            )?
            .query_map([], |r| {
                let class: String = r.get(1)?;
                Ok(Total {
                    state: r.get(0)?,
                    storage_class: (!class.is_empty()).then_some(class),
                    pinned: r.get(2)?,
                    files: r.get(3)?,
                    bytes: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    /// Up to `limit` events with id > `after_id` matching `q`, oldest first (page with the
    /// last id).
    pub fn find_events(&self, q: &EventQuery, after_id: i64, limit: usize) -> Result<Vec<Event>> {
        let mut after_id = after_id;
        if let Some(since) = q.since_ns {
            // Event times never decrease along the chain: the first event at or after
            // `since` (by the time index) starts the range.
            let first: Option<i64> = self.read("finding the first event since a time", |c| {
                c.prepare_cached(
                    "SELECT id FROM events WHERE time_ns >= ?1 ORDER BY time_ns, id LIMIT 1",
                )?
                .query_row([since], |r| r.get(0))
                .optional()
            })?;
            match first {
                Some(id) => after_id = after_id.max(id - 1),
                None => return Ok(Vec::new()),
            }
        }
        let mut conds = vec!["id > ?".to_string()];
        let mut args = vec![Value::Integer(after_id)];
        if let Some(since) = q.since_ns {
            conds.push("time_ns >= ?".into());
            args.push(Value::Integer(since));
        }
        if !q.kinds.is_empty() {
            let marks = vec!["?"; q.kinds.len()].join(", ");
            conds.push(format!("kind IN ({marks})"));
            args.extend(q.kinds.iter().map(|k| Value::Text(k.as_str().into())));
        }
        if let Some(p) = q.path.as_deref().map(|p| p.trim_end_matches('/')) {
            if !p.is_empty() {
                conds.push("(path = ? OR (path >= ? AND path < ?))".into());
                args.push(Value::Text(p.to_owned()));
                args.push(Value::Text(format!("{p}/")));
                args.push(Value::Text(format!("{p}0"))); // '0' sorts right after '/'
            }
        }
        args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {EVENT_COLS} FROM events WHERE {} ORDER BY id LIMIT ?",
            conds.join(" AND ")
        );
        self.read("finding events", |c| {
            c.prepare(&sql)?
                .query_map(params_from_iter(args), event_from_row)?
                .collect()
        })
    }

    /// The file id of the newest event that names `path` (relative to the source): the
    /// file that was there last, deleted or renamed since.
    pub fn last_file_id_at(&self, path: &str) -> Result<Option<String>> {
        self.read("finding the last file at a path", |c| {
            c.prepare_cached(
                "SELECT file_id FROM events WHERE path = ?1 AND file_id IS NOT NULL \
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([path], |r| r.get(0))
            .optional()
        })
    }

    /// The number of events in the log.
    pub fn event_count(&self) -> Result<u64> {
        let n: i64 = self.read("counting events", |c| {
            c.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
        })?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path().join("c.db")).unwrap();
        (dir, cat)
    }

    fn row(n: u32, state: FileState, class: Option<&str>) -> FileRow {
        FileRow {
            state,
            size: 1000 * u64::from(n),
            mtime_ns: 1_000_000_000 * i64::from(n),
            storage_class: class.map(str::to_owned),
            object_key: class.map(|_| format!("data/{n}/0")),
            ..FileRow::new(format!("id{n}"), format!("d{}/f{n}", n % 3))
        }
    }

    /// What the totals must be: a GROUP BY over the files table.
    fn recomputed(cat: &Catalog) -> Vec<Total> {
        let mut out = Vec::new();
        let mut after = None::<String>;
        loop {
            let page = cat
                .find_files(&FileQuery::default(), after.as_deref(), 2)
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.path.clone());
            for f in page {
                match out.iter_mut().find(|t: &&mut Total| {
                    t.state == f.state && t.storage_class == f.storage_class && t.pinned == f.pinned
                }) {
                    Some(t) => {
                        t.files += 1;
                        t.bytes += f.size;
                    }
                    None => out.push(Total {
                        state: f.state,
                        storage_class: f.storage_class.clone(),
                        pinned: f.pinned,
                        files: 1,
                        bytes: f.size,
                    }),
                }
            }
        }
        out.sort_by(|a, b| {
            (a.state.as_str(), &a.storage_class, a.pinned).cmp(&(
                b.state.as_str(),
                &b.storage_class,
                b.pinned,
            ))
        });
        out
    }

    fn sorted(mut t: Vec<Total>) -> Vec<Total> {
        t.sort_by(|a, b| {
            (a.state.as_str(), &a.storage_class, a.pinned).cmp(&(
                b.state.as_str(),
                &b.storage_class,
                b.pinned,
            ))
        });
        t
    }

    #[test]
    fn totals_follow_every_kind_of_change() {
        let (_d, cat) = open();
        for n in 1..=9 {
            cat.transition(
                &row(n, FileState::Resident, None),
                EventKind::Scanned,
                json!({}),
            )
            .unwrap();
        }
        assert_eq!(sorted(cat.totals().unwrap()), recomputed(&cat));
        // Upserts that change state, class, size and pin; a delete; a rename (no change).
        let mut r = row(2, FileState::Premigrated, Some("STANDARD"));
        cat.transition(&r, EventKind::Verified, json!({})).unwrap();
        r.state = FileState::Stub;
        r.pinned = true;
        cat.transition(&r, EventKind::Stubbed, json!({})).unwrap();
        let mut r3 = row(3, FileState::Stub, Some("GLACIER"));
        r3.size = 5;
        cat.transition(&r3, EventKind::Stubbed, json!({})).unwrap();
        cat.delete_file("id4", json!({})).unwrap();
        cat.rename_path("id5", "elsewhere/f5").unwrap();
        let t = sorted(cat.totals().unwrap());
        assert_eq!(t, recomputed(&cat));
        let stub_bytes: u64 = t
            .iter()
            .filter(|t| t.state == FileState::Stub)
            .map(|t| t.bytes)
            .sum();
        assert_eq!(stub_bytes, 2000 + 5);
    }

    #[test]
    fn a_v1_catalog_gets_its_totals_on_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let mut c = rusqlite::Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            tx.execute_batch(include_str!("schema/v1.sql")).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            for n in 0..10 {
                tx.execute(
                    "INSERT INTO files (file_id, path, state, size, mtime_ns, ctime_ns, ino, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 0, 0, 0, 0)",
                    rusqlite::params![format!("i{n}"), format!("p{n}"), if n < 3 { "stub" } else { "resident" }, 10 * n],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let cat = Catalog::open(&path).unwrap();
        let t = cat.totals().unwrap();
        let stub = t.iter().find(|t| t.state == FileState::Stub).unwrap();
        assert_eq!((stub.files, stub.bytes), (3, 30));
        let res = t.iter().find(|t| t.state == FileState::Resident).unwrap();
        assert_eq!((res.files, res.bytes), (7, 420));
    }

    #[test]
    fn find_filters_and_pages() {
        let (_d, cat) = open();
        for n in 1..=30 {
            let st = if n % 2 == 0 {
                FileState::Stub
            } else {
                FileState::Resident
            };
            cat.transition(&row(n, st, None), EventKind::Scanned, json!({}))
                .unwrap();
        }
        let q = FileQuery {
            states: vec![FileState::Stub],
            larger_than: Some(10_000),
            modified_before_ns: Some(25_000_000_000),
            path_glob: Some("d1/*".into()),
            pinned: Some(false),
            pack: None,
        };
        // Stubs (even), > 10 kB (n > 10), mtime < 25 s (n < 25), in d1 (n % 3 == 1).
        let want: Vec<String> = (11..25)
            .filter(|n| n % 2 == 0 && n % 3 == 1)
            .map(|n| format!("d1/f{n}"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut got = Vec::new();
        let mut after = None::<String>;
        loop {
            let page = cat.find_files(&q, after.as_deref(), 1).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.path.clone());
            got.extend(page.into_iter().map(|f| f.path));
        }
        assert_eq!(got, want);
        let (n, bytes) = cat.count_files(&q).unwrap();
        assert_eq!(n as usize, want.len());
        assert_eq!(bytes, [16u64, 22].iter().map(|n| n * 1000).sum::<u64>());
        // A glob whose literal prefix is the whole path, and `?` / `[...]`.
        let one = FileQuery {
            path_glob: Some("d2/f2?".into()),
            ..Default::default()
        };
        let got: Vec<String> = cat
            .find_files(&one, None, 100)
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(got, vec!["d2/f20", "d2/f23", "d2/f26", "d2/f29"]);
    }

    #[test]
    fn events_filter_by_time_kind_and_path() {
        let (_d, cat) = open();
        for n in 1..=6 {
            cat.transition(
                &row(n, FileState::Resident, None),
                EventKind::Scanned,
                json!({}),
            )
            .unwrap();
        }
        cat.append_event(None, Some("d1"), EventKind::Failed, json!({}))
            .unwrap();
        cat.append_event(None, Some("d10/x"), EventKind::Failed, json!({}))
            .unwrap();
        let all = cat.find_events(&EventQuery::default(), 0, 100).unwrap();
        assert_eq!(all.len(), 8);
        let q = EventQuery {
            path: Some("d1/".into()),
            ..Default::default()
        };
        let got: Vec<String> = cat
            .find_events(&q, 0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.path.unwrap())
            .collect();
        assert_eq!(got, vec!["d1/f1", "d1/f4", "d1"]);
        let q = EventQuery {
            kinds: vec![EventKind::Failed],
            since_ns: Some(all[6].time_ns),
            ..Default::default()
        };
        let got = cat.find_events(&q, 0, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, 7);
        assert_eq!(cat.find_events(&q, 7, 10).unwrap()[0].id, 8);
        let future = EventQuery {
            since_ns: Some(i64::MAX),
            ..Default::default()
        };
        assert!(cat.find_events(&future, 0, 10).unwrap().is_empty());
        assert_eq!(cat.event_count().unwrap(), 8);
    }
}
