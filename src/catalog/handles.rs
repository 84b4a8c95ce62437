//! The node-handle map: for each FUSE node id the mount has handed to the kernel, the
//! backing filesystem's own file handle (`name_to_handle_at`) of that object, so that a
//! node id resolves to the same file after the kernel dropped the inode, after the daemon
//! forgot it, after a remount, a daemon crash or a reboot (an NFS client's file handle
//! holds the node id: docs/architecture.md, "NFS handles").
//!
//! A SQLite file of its own beside the catalog (`<catalog>.handles`, 0600): it is not part
//! of the record (no events, not in backups) and is rebuilt as files are looked up; losing
//! it makes old NFS handles stale, nothing else. It is bound to the backing filesystem it
//! was written for: opened for another source root (another filesystem could give the same
//! handle bytes to another file), it starts empty.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::error::{CatalogError, Context};

type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The map of one mount.
pub struct HandleDb {
    conn: parking_lot::Mutex<Connection>,
    path: PathBuf,
}

/// Where the map of the catalog at `catalog` lives.
pub fn path_for(catalog: &Path) -> PathBuf {
    let mut p = catalog.as_os_str().to_owned();
    p.push(".handles");
    PathBuf::from(p)
}

fn key(ino: u64) -> i64 {
    ino as i64
}

impl HandleDb {
    /// Opens (or creates) the map at `path` for the source whose root has file handle
    /// `root_handle`; a map written for another root is emptied.
    pub fn open(path: &Path, root_handle: &[u8]) -> Result<HandleDb> {
        let made = |source| CatalogError::CreateDir {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::base::private::create_private_dir(parent).map_err(made)?;
        }
        if !path.exists() {
            crate::base::private::open_private(path, false).map_err(made)?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            crate::base::private::make_file_private(Path::new(&p)).map_err(made)?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("opening the node-handle map")?;
        conn.busy_timeout(super::BUSY_TIMEOUT)
            .ctx("setting the busy timeout")?;
        // WAL without a sync per commit: a committed batch survives a crash of the daemon
        // (it is in the kernel's page cache); a power cut may take the last ones, whose
        // handles then go stale (docs/operations.md).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS handles (ino INTEGER PRIMARY KEY, handle BLOB NOT NULL);",
        )
        .ctx("creating the node-handle map")?;
        let stored: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'root'", [], |r| {
                r.get(0)
            })
            .optional()
            .ctx("reading the node-handle map's root")?;
        if stored.as_deref() != Some(root_handle) {
            if stored.is_some() {
                tracing::warn!(
                    map = %path.display(),
                    "the node-handle map was written for another source root: starting it anew \
                     (NFS handles taken before are stale)"
                );
            }
            conn.execute_batch("BEGIN; DELETE FROM handles; DELETE FROM meta;")
                .ctx("emptying the node-handle map")?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('root', ?1)",
                params![root_handle],
            )
            .ctx("recording the node-handle map's root")?;
            conn.execute_batch("COMMIT;")
                .ctx("emptying the node-handle map")?;
        }
        Ok(HandleDb {
            conn: parking_lot::Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `entries` (node id, handle) in one transaction; a node id already mapped to
    /// the same handle is not written again.
    pub fn put_all(&self, entries: &[(u64, Box<[u8]>)]) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().ctx("starting a node-handle map write")?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO handles (ino, handle) VALUES (?1, ?2)
                     ON CONFLICT(ino) DO UPDATE SET handle = excluded.handle
                     WHERE handle != excluded.handle",
                )
                .ctx("preparing a node-handle map write")?;
            for (ino, h) in entries {
                st.execute(params![key(*ino), &h[..]])
                    .ctx("writing the node-handle map")?;
            }
        }
        tx.commit().ctx("committing the node-handle map")
    }

    /// The handle recorded for node id `ino`.
    pub fn get(&self, ino: u64) -> Result<Option<Box<[u8]>>> {
        let conn = self.conn.lock();
        let mut st = conn
            .prepare_cached("SELECT handle FROM handles WHERE ino = ?1")
            .ctx("preparing a node-handle map read")?;
        let found = st
            .query_row(params![key(ino)], |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .ctx("reading the node-handle map")?;
        Ok(found.map(Vec::into_boxed_slice))
    }

    /// How many node ids are mapped.
    pub fn len(&self) -> Result<u64> {
        let conn = self.conn.lock();
        conn.query_row("SELECT count(*) FROM handles", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .ctx("counting the node-handle map")
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Folds the write-ahead log into the file (at unmount).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .lock()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .ctx("checkpointing the node-handle map")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn handles_are_kept_and_bound_to_their_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db.handles");
        let db = HandleDb::open(&p, b"root-a").unwrap();
        assert_eq!(db.get(7).unwrap(), None);
        db.put_all(&[
            (7, Box::from(&b"h7"[..])),
            (u64::MAX - 3, Box::from(&b"hx"[..])),
        ])
        .unwrap();
        db.put_all(&[(7, Box::from(&b"h7"[..]))]).unwrap();
        assert_eq!(db.get(7).unwrap().as_deref(), Some(&b"h7"[..]));
        assert_eq!(db.get(u64::MAX - 3).unwrap().as_deref(), Some(&b"hx"[..]));
        db.put_all(&[(7, Box::from(&b"h7b"[..]))]).unwrap();
        assert_eq!(db.get(7).unwrap().as_deref(), Some(&b"h7b"[..]));
        assert_eq!(db.len().unwrap(), 2);
        drop(db);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The same root: kept.
        let db = HandleDb::open(&p, b"root-a").unwrap();
        assert_eq!(db.len().unwrap(), 2);
        drop(db);
        // Another root: another filesystem's handles could open other files: emptied.
        let db = HandleDb::open(&p, b"root-b").unwrap();
        assert!(db.is_empty().unwrap());
        assert_eq!(
            path_for(Path::new("/x/c.db")),
            PathBuf::from("/x/c.db.handles")
        );
    }
}
