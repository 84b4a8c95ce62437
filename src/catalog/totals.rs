//! The running totals of the files table (`file_totals`: files and bytes per state,
//! storage class and pinned), kept by the catalog's writes (schema v7): each write adds
//! up what its rows change and applies the sums once, in its own transaction (or
//! savepoint), so that the totals commit or roll back with the rows.

use super::error::{CatalogError, Context};
use super::types::FileRow;
use rusqlite::{params, Connection};
use std::collections::HashMap;

type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// (state, storage class or '', pinned) of a totals row.
type Key = (&'static str, String, bool);

/// What a write's row changes do to the totals: (files, bytes) per key.
#[derive(Default)]
pub(crate) struct TotalsDelta(HashMap<Key, (i64, i64)>);

impl TotalsDelta {
    /// A row `f` was added (`sign` 1) or removed (-1).
    pub(crate) fn add(&mut self, f: &FileRow, sign: i64) {
        self.add_parts(f, f.pinned, sign);
    }

    /// Row `old` became `new`, written with `pinned` (a row's pin changes only with a pin
    /// event: `new.pinned` may not be what was written).
    pub(crate) fn change(&mut self, old: &FileRow, new: &FileRow, pinned: bool) {
        if old.state != new.state
            || old.storage_class != new.storage_class
            || old.pinned != pinned
            || old.size != new.size
        {
            self.add_parts(old, old.pinned, -1);
            self.add_parts(new, pinned, 1);
        }
    }

    fn add_parts(&mut self, f: &FileRow, pinned: bool, sign: i64) {
        let key = (
            f.state.as_str(),
            f.storage_class.clone().unwrap_or_default(),
            pinned,
        );
        let e = self.0.entry(key).or_default();
        e.0 += sign;
        e.1 += sign * i64::try_from(f.size).unwrap_or(i64::MAX);
    }

    /// Adds the sums to `file_totals` (rows that sum to nothing are not written).
    pub(crate) fn apply(self, tx: &Connection) -> Result<()> {
        for ((state, class, pinned), (files, bytes)) in self.0 {
            if files == 0 && bytes == 0 {
                continue;
            }
            tx.prepare_cached(
                "INSERT INTO file_totals (state, storage_class, pinned, files, bytes) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (state, storage_class, pinned) \
                 DO UPDATE SET files = files + excluded.files, bytes = bytes + excluded.bytes",
            )
            .and_then(|mut s| s.execute(params![state, class, pinned, files, bytes]))
            .ctx("updating the file totals")?;
        }
        Ok(())
    }
}
