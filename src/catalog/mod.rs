//! Catalog: the SQLite record of tracked files, the append-only hash-chained event log,
//! config versions and policy jobs. The only module that names rusqlite.
//!
//! One writer connection behind a mutex, plus a small pool of read-only connections that
//! WAL lets read while a write is in progress. Concurrent writes share transactions
//! (each runs in its own savepoint of the batch's transaction, so one that fails undoes
//! only itself) and fsyncs (group commit): see [`Catalog::write`]. docs/catalog.md has
//! the schema, the exact hash-chain encoding and the guarantees.

pub mod backup;
mod chain;
pub mod config;
mod error;
pub mod handles;
pub mod metrics;
mod queries;
mod schema;
mod totals;
mod types;

#[cfg(test)]
mod tests;

pub use chain::{canonical_json, GENESIS_HASH, HASH_DOMAIN};
pub use error::{CatalogError, ChainError};
pub use queries::{EventQuery, FileQuery, Total};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use types::{
    AlertFacts, ConfigVersion, Event, EventKind, FileRow, FileState, Job, JobCounts, ObjectRef,
    PackLive, PackRow, ReplicaCounts, ReplicaRow, StateCount, UnknownName, Upload,
};

use chain::{event_hash, sha256_hex, HashInput, RawEvent, Verifier};
use error::Context;
use parking_lot::Mutex;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use totals::TotalsDelta;

/// How long a statement waits for another process's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A finished job keeps at most this many error lines (its `files_failed` keeps the count).
pub const MAX_JOB_ERRORS: usize = 1000;

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 16;

/// Most writes one shared transaction takes before it commits, waiters or not.
const MAX_BATCH: usize = 256;

/// A write of at least this many transitions is the first of its transaction
/// ([`Joins::First`]).
const OWN_TRANSACTION: usize = 32;

/// Whether a write may join the transaction open on the writer (in a savepoint), or must
/// be the first of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joins {
    Shared,
    First,
}

/// Nanoseconds since the Unix epoch. Injectable for tests.
pub type Clock = Box<dyn Fn() -> i64 + Send + Sync>;

pub use crate::base::time::system_now_ns;

type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The largest catalog file [`Catalog::warm`] reads ahead (about 100,000 files' rows and
/// their events).
const WARM_MAX: u64 = 64 << 20;

/// The catalog. `Send + Sync`: share it as `Arc<Catalog>`.
pub struct Catalog {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Threads waiting for the writer lock: while there are any, the lock holder leaves
    /// the batch's transaction open for them (write combining).
    waiting: std::sync::atomic::AtomicUsize,
    readers: Mutex<Vec<Connection>>,
    clock: Clock,
    /// The config version in force as this process last wrote or read it (the daemon is
    /// the catalog's one writer): the policy stamps it on every object it uploads.
    config_version: std::sync::atomic::AtomicI64,
    /// Which batches have ended, and how.
    batches: Mutex<BatchState>,
    batch_cv: parking_lot::Condvar,
    sync: Mutex<SyncState>,
    synced_cv: parking_lot::Condvar,
}

/// The writer connection and the batch its open transaction belongs to.
struct Writer {
    conn: Connection,
    /// A transaction is open; the writes of batch `batch` are in it.
    open: bool,
    /// Number of the current (or last) batch; batch n ends with commit number n.
    batch: u64,
    /// Writes in the open batch.
    members: usize,
    /// The head of the event chain, kept between writes (see [`Heads`]).
    head: Heads,
    /// `PRAGMA data_version` when the head was last known right: another connection's
    /// commit changes it, and the head is read again.
    data_version: i64,
}

/// Runs one statement without parameters from the statement cache (the writer runs its
/// transaction statements for every write: parsing them each time costs more than they do).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

impl Writer {
    /// Opens the transaction of a new batch.
    fn begin(&mut self) -> rusqlite::Result<()> {
        run(&self.conn, "BEGIN IMMEDIATE")?;
        let dv: rusqlite::Result<i64> = self
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)));
        match dv {
            Ok(v) if v == self.data_version => {}
            Ok(v) => {
                self.data_version = v;
                self.head = Heads::default();
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        self.open = true;
        self.batch += 1;
        self.members = 0;
        Ok(())
    }
}

/// The end of each batch: the last batch ended, and the recent ones whose COMMIT failed.
#[derive(Default)]
struct BatchState {
    ended: u64,
    failed: std::collections::VecDeque<(u64, String)>,
}

/// The event chain's head, read from the database once and then advanced in memory by
/// each write; forgotten when a write or a batch rolls back, or another connection
/// commits.
#[derive(Default)]
struct Heads(Option<Head>);

impl Heads {
    fn get(&mut self, conn: &Connection) -> Result<&mut Head> {
        if self.0.is_none() {
            self.0 = Some(Head::load(conn)?);
        }
        Ok(self.0.as_mut().expect("loaded above"))
    }
}

/// The group commit's state: how far the WAL is known to be on disk.
#[derive(Default)]
struct SyncState {
    synced: u64,
    syncing: bool,
}

impl Drop for Catalog {
    /// Closes the readers first: the last connection to close checkpoints the WAL into the
    /// database and removes it (a read-only one cannot), so a cleanly closed catalog is one
    /// self-contained file, which copies and backups by hand expect.
    fn drop(&mut self) {
        self.readers.lock().clear();
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

const FILE_COLS: &str = "file_id, path, state, size, mtime_ns, ctime_ns, ino, object_key, \
     version_id, checksum_algo, checksum, md5, storage_class, pinned, updated_at";

const EVENT_COLS: &str =
    "id, time_ns, file_id, path, kind, detail, config_version, prev_hash, hash";

const CONFIG_COLS: &str = "version, hash, text, time_ns";

/// The trigger that keeps config versions append-only (as schema v1 makes it).
const CONFIG_NO_UPDATE_TRIGGER: &str =
    "CREATE TRIGGER config_versions_no_update BEFORE UPDATE ON config_versions
BEGIN
    SELECT RAISE(ABORT, 'config versions are append-only');
END;";

const JOB_COLS: &str = "id, kind, mode, config_version, started_ns, finished_ns, \
     files_scanned, files_copied, bytes_copied, files_stubbed, files_failed, errors, duration_ms, \
     bytes_stubbed";

impl Catalog {
    /// Opens (creating it and its parent directory if needed) the catalog at `path`, in WAL
    /// mode, and brings its schema up to date. Idempotent. Refuses a catalog written by a
    /// newer coldtier ([`CatalogError::SchemaTooNew`]) and files that are not catalogs.
    pub fn open(path: impl AsRef<Path>) -> Result<Catalog> {
        Self::open_with_clock(path, Box::new(system_now_ns))
    }

    /// [`Catalog::open`] with a given clock (tests).
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Clock) -> Result<Catalog> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::base::private::create_private_dir(parent).map_err(|source| {
                CatalogError::CreateDir {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        // The catalog is root's alone (it names every file of the share): made 0600 before
        // SQLite opens it, so that its WAL and shared-memory files, which SQLite creates
        // with the database's mode, are 0600 too. An older coldtier's 0644 is put right.
        let private = |p: &Path| {
            crate::base::private::make_file_private(p).map_err(|source| CatalogError::CreateDir {
                path: p.to_path_buf(),
                source,
            })
        };
        if !path.exists() {
            crate::base::private::open_private(&path, false).map_err(|source| {
                CatalogError::CreateDir {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            private(Path::new(&p))?;
        }
        // No SQLITE_OPEN_URI: a path is a path, for the writer and the readers alike.
        let mut writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("opening the catalog for writing")?;
        writer
            .busy_timeout(BUSY_TIMEOUT)
            .ctx("setting the busy timeout")?;
        // Refuse a newer or foreign database before changing anything in it.
        schema::check_version(&writer, &path)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .ctx("switching to WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::NoWal { path, mode });
        }
        // NORMAL: SQLite does not fsync at commit; `write` does, once for every group of
        // commits that arrive while the previous fsync runs (group commit). A write that
        // returned is on disk, as with FULL, at a fraction of the fsyncs under load.
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .ctx("setting synchronous=NORMAL")?;
        // Each write of a shared transaction runs in a savepoint, whose undo copies of the
        // pages it changes (the sub-journal) SQLite keeps in a temporary file past 64 KiB:
        // in memory instead (at most the pages one write changes, a few dozen KiB).
        writer
            .pragma_update(None, "temp_store", "MEMORY")
            .ctx("setting temp_store=MEMORY")?;
        schema::migrate(&mut writer, &path)?;
        writer.set_prepared_statement_cache_capacity(64);
        let catalog = Catalog {
            path,
            writer: Mutex::new(Writer {
                conn: writer,
                open: false,
                batch: 0,
                members: 0,
                head: Heads::default(),
                data_version: 0,
            }),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            clock,
            config_version: std::sync::atomic::AtomicI64::new(0),
            batches: Mutex::new(BatchState::default()),
            batch_cv: parking_lot::Condvar::new(),
            sync: Mutex::new(SyncState::default()),
            synced_cv: parking_lot::Condvar::new(),
        };
        let reader = catalog.open_reader()?;
        catalog.readers.lock().push(reader);
        if let Some(c) = catalog.current_config()? {
            catalog.note_config_version(c.version);
        }
        Ok(catalog)
    }

    /// Where the catalog lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the kernel to read the catalog (and its WAL) into the page cache in the
    /// background, if it is at most [`WARM_MAX`] bytes: before a job that reads and writes
    /// a row per file (a bulk recall, a policy run), whose rows are spread over the file,
    /// the kernel's large sequential reads replace one small read per page on a cold cache
    /// (measured: docs/benchmarks.md). A larger catalog is left to be read as it is used.
    pub fn warm(&self) {
        for suffix in ["", "-wal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let Ok(f) = std::fs::File::open(&p) else {
                continue;
            };
            if f.metadata().is_ok_and(|m| m.len() <= WARM_MAX) {
                // SAFETY: an open fd; advice only (an error changes nothing).
                unsafe {
                    libc::posix_fadvise(
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        0,
                        0,
                        libc::POSIX_FADV_WILLNEED,
                    )
                };
            }
        }
    }

    fn open_reader(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("opening a read connection")?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx("setting the busy timeout")?;
        Ok(conn)
    }

    /// Runs `f` on a pooled read-only connection. Never waits for the writer.
    fn read<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let idle = self.readers.lock().pop();
        let conn = match idle {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = f(&conn).ctx(context);
        let mut idle = self.readers.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Runs `f` on the writer, in its own savepoint of an IMMEDIATE transaction: if it
    /// returns Ok its changes are committed, otherwise they are rolled back (and only
    /// they). Returns once the commit is on disk.
    ///
    /// Write combining: writes that arrive while another holds the writer join its
    /// transaction, and the last of them commits for all (at most [`MAX_BATCH`] writes);
    /// the others wait for that commit. One WAL commit and one fsync then cover many
    /// writes, where each write alone would rewrite the same index pages and wait for its
    /// own fsync (group commit: the writer lock is released before the fsync, so the next
    /// batch runs while this one is synced).
    fn write<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Connection, &mut Heads, i64) -> Result<T>,
    ) -> Result<T> {
        self.write_as(context, Joins::Shared, f)
    }

    /// `write`, in a transaction of its own when `joins` is [`Joins::First`].
    fn write_as<T>(
        &self,
        context: &'static str,
        joins: Joins,
        f: impl FnOnce(&Connection, &mut Heads, i64) -> Result<T>,
    ) -> Result<T> {
        let _timer = metrics::CATALOG_WRITE_SECONDS.start_timer();
        let (out, seq) = self.commit(context, joins, f)?;
        self.make_durable(seq)?;
        Ok(out)
    }

    /// Commits like `write` without waiting for the fsync: the commit survives a crash of
    /// the process at once, and a power loss once any later `write` has returned (the WAL
    /// is sequential). For an event that a durable one follows shortly (RECALL_STARTED
    /// before RECALLED or RECALL_FAILED, COPIED before VERIFIED or FAILED).
    fn write_lazy<T>(
        &self,
        context: &'static str,
        joins: Joins,
        f: impl FnOnce(&Connection, &mut Heads, i64) -> Result<T>,
    ) -> Result<T> {
        let _timer = metrics::CATALOG_WRITE_SECONDS.start_timer();
        Ok(self.commit(context, joins, f)?.0)
    }

    /// Runs `f` in the current batch (see `write`) and returns once the batch is
    /// committed, with the number of that commit. A write that must be the first of its
    /// transaction ([`Joins::First`]) commits the open one (the writes already in it)
    /// before it starts its own.
    fn commit<T>(
        &self,
        context: &'static str,
        joins: Joins,
        f: impl FnOnce(&Connection, &mut Heads, i64) -> Result<T>,
    ) -> Result<(T, u64)> {
        use std::sync::atomic::Ordering::SeqCst;
        self.waiting.fetch_add(1, SeqCst);
        let mut w = self.writer.lock();
        self.waiting.fetch_sub(1, SeqCst);
        if joins == Joins::First && w.open && w.members > 0 {
            self.end_open(&mut w);
        }
        if !w.open {
            w.begin().ctx(context)?;
        }
        let batch = w.batch;
        let now = (self.clock)();
        // A write that joins others in the open transaction runs in a savepoint, so that
        // its failure undoes only its own changes. The first write of a transaction needs
        // none (its failure rolls the whole transaction back, which holds nothing else):
        // an open savepoint makes SQLite copy every page a statement changes into its
        // sub-journal, about a fifth of the cost of a batch of file transitions.
        let alone = w.members == 0;
        let out = {
            let Writer { conn, head, .. } = &mut *w;
            match if alone {
                Ok(())
            } else {
                run(conn, "SAVEPOINT coldtier_write")
            } {
                Err(e) => Ok(Err(e).ctx(context)),
                Ok(()) => {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn, head, now)))
                }
            }
        };
        let kept = matches!(out, Ok(Ok(_)));
        let undo: &[&str] = match (kept, alone) {
            (true, true) => &[],
            (true, false) => &["RELEASE coldtier_write"],
            (false, true) => &["ROLLBACK"],
            (false, false) => &["ROLLBACK TO coldtier_write", "RELEASE coldtier_write"],
        };
        if !w.conn.is_autocommit() {
            if let Err(e) = undo.iter().try_for_each(|sql| run(&w.conn, sql)) {
                tracing::error!("catalog: ending a write's savepoint: {e}");
                let _ = w.conn.execute_batch("ROLLBACK");
            }
        }
        if alone && !kept && w.conn.is_autocommit() {
            // The failed write was the whole transaction: nothing of another's was lost.
            w.head = Heads::default();
            self.end_batch(&mut w, Ok(()));
            drop(w);
            return match out {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => unreachable!("a kept write is not rolled back here"),
                Err(panic) => std::panic::resume_unwind(panic),
            };
        }
        if !kept {
            w.head = Heads::default();
        }
        w.members += 1;
        if w.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full disk): the
            // batch is lost, and every write in it fails.
            self.end_batch(&mut w, Err("the transaction was rolled back".to_owned()));
        } else if self.waiting.load(SeqCst) == 0 || w.members >= MAX_BATCH {
            self.end_open(&mut w);
        }
        drop(w);
        let out = match out {
            Ok(o) => o?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        self.wait_batch(batch).ctx(context)?;
        Ok((out, batch))
    }

    /// Commits the open transaction (rolled back if its COMMIT fails) and ends its batch.
    fn end_open(&self, w: &mut Writer) {
        let r = run(&w.conn, "COMMIT").map_err(|e| e.to_string());
        if r.is_err() {
            let _ = w.conn.execute_batch("ROLLBACK");
        }
        self.end_batch(w, r);
    }

    /// Records the end of the open batch (the writer lock is held).
    fn end_batch(&self, w: &mut Writer, r: std::result::Result<(), String>) {
        w.open = false;
        if r.is_err() {
            w.head = Heads::default();
        }
        let mut b = self.batches.lock();
        b.ended = w.batch;
        if let Err(e) = r {
            tracing::error!("catalog: commit {} failed: {e}", w.batch);
            b.failed.push_back((w.batch, e));
            while b.failed.len() > 64 {
                b.failed.pop_front();
            }
        }
        self.batch_cv.notify_all();
    }

    /// The number of the last batch that ended: commits made so far, in commit order.
    fn ended(&self) -> u64 {
        self.batches.lock().ended
    }

    /// Waits until batch `batch` has ended; its error if its COMMIT failed.
    fn wait_batch(&self, batch: u64) -> rusqlite::Result<()> {
        let mut b = self.batches.lock();
        while b.ended < batch {
            self.batch_cv.wait(&mut b);
        }
        match b.failed.iter().find(|(n, _)| *n == batch) {
            Some((_, e)) => Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some(format!("the shared transaction did not commit: {e}")),
            )),
            None => Ok(()),
        }
    }

    /// Waits until commit number `seq` is on disk, fsyncing the WAL if no one else is.
    fn make_durable(&self, seq: u64) -> Result<()> {
        let mut st = self.sync.lock();
        loop {
            if st.synced >= seq {
                return Ok(());
            }
            if st.syncing {
                self.synced_cv.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let target = self.ended();
            drop(st);
            let r = self.fsync_wal();
            st = self.sync.lock();
            st.syncing = false;
            if r.is_ok() {
                st.synced = st.synced.max(target);
            }
            self.synced_cv.notify_all();
            r?;
        }
    }

    fn fsync_wal(&self) -> Result<()> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_data());
        match sync(Path::new(&wal)) {
            Ok(()) => Ok(()),
            // No WAL file (everything checkpointed and the file removed): the database
            // file itself holds the commits.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => sync(&self.path),
            Err(e) => Err(e),
        }
        .map_err(|source| CatalogError::Sync {
            path: self.path.clone(),
            source,
        })
    }

    /// Commits made and commits known to be on disk (tests).
    #[doc(hidden)]
    pub fn durability(&self) -> (u64, u64) {
        (self.ended(), self.sync.lock().synced)
    }

    // ---- config versions -------------------------------------------------------------

    /// Records the config text the daemon runs with. Same text as the latest version:
    /// returns that version. Otherwise adds version latest+1 and, in the same transaction,
    /// a CONFIG_CHANGED event that already carries the new version.
    pub fn record_config(&self, text: &str) -> Result<ConfigVersion> {
        let hash = sha256_hex(text);
        let v = self.write("recording a config version", |tx, heads, now| {
            let latest = latest_config(tx).ctx("reading the latest config version")?;
            if let Some(latest) = &latest {
                if latest.hash == hash {
                    return Ok(latest.clone());
                }
            }
            let version = latest.as_ref().map_or(1, |l| l.version + 1);
            let head = heads.get(tx)?;
            let time_ns = head.next_time(now);
            tx.prepare_cached(
                "INSERT INTO config_versions (version, hash, text, time_ns) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![version, hash, text, time_ns]))
            .ctx("inserting a config version")?;
            head.config_version = version;
            let detail = serde_json::json!({
                "version": version,
                "hash": hash,
                "previous": latest.as_ref().map(|l| l.version),
            });
            head.push(
                tx,
                time_ns,
                None,
                None,
                EventKind::ConfigChanged,
                &detail,
            )?;
            Ok(ConfigVersion {
                version,
                hash: hash.clone(),
                text: text.to_owned(),
                time_ns,
            })
        })?;
        self.note_config_version(v.version);
        Ok(v)
    }

    /// Rewrites the recorded texts of config versions through `redact` where that changes
    /// them: versions an older coldtier recorded with their credentials in clear. The one
    /// sanctioned change of the append-only table (its update trigger is lifted inside
    /// the transaction and put back), with `secure_delete` on so that the old text's bytes
    /// are overwritten, and the WAL checkpointed and truncated after. The hashes stay
    /// (the CONFIG_CHANGED events of the chain name them). Returns how many were changed.
    pub fn redact_config_texts(&self, redact: impl Fn(&str) -> String) -> Result<usize> {
        let versions = self.config_history()?;
        let changed: Vec<(i64, String)> = versions
            .iter()
            .filter_map(|v| {
                let r = redact(&v.text);
                (r != v.text).then_some((v.version, r))
            })
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        {
            let w = self.writer.lock();
            if w.open {
                return Err(CatalogError::Backup(
                    "redacting config versions: a write is in progress".into(),
                ));
            }
            let conn = &w.conn;
            let run = |sql: &str| conn.execute_batch(sql).ctx("redacting config versions");
            run("PRAGMA secure_delete = ON")?;
            let body = || -> Result<()> {
                run("BEGIN IMMEDIATE; DROP TRIGGER config_versions_no_update;")?;
                for (version, text) in &changed {
                    conn.execute(
                        "UPDATE config_versions SET text = ?2 WHERE version = ?1",
                        params![version, text],
                    )
                    .ctx("redacting a config version")?;
                }
                run(CONFIG_NO_UPDATE_TRIGGER)?;
                run("COMMIT")
            };
            let r = body();
            if r.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let _ = conn.execute_batch("PRAGMA secure_delete = OFF");
            r?;
        }
        self.checkpoint()?;
        Ok(changed.len())
    }

    /// The config version in force (the latest), if any was recorded.
    pub fn current_config(&self) -> Result<Option<ConfigVersion>> {
        let c = self.read("reading the current config version", latest_config)?;
        if let Some(c) = &c {
            self.note_config_version(c.version);
        }
        Ok(c)
    }

    /// The number of the config version in force (0 if none was recorded), as this
    /// process last recorded or read it: no query.
    pub fn config_version_in_force(&self) -> i64 {
        self.config_version
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn note_config_version(&self, version: i64) {
        self.config_version
            .fetch_max(version, std::sync::atomic::Ordering::SeqCst);
    }

    /// Config version `version`, if it exists.
    pub fn config_version(&self, version: i64) -> Result<Option<ConfigVersion>> {
        self.read("reading a config version", |c| {
            c.prepare_cached(&format!(
                "SELECT {CONFIG_COLS} FROM config_versions WHERE version = ?1"
            ))?
            .query_row([version], config_from_row)
            .optional()
        })
    }

    /// Every config version, oldest first.
    pub fn config_history(&self) -> Result<Vec<ConfigVersion>> {
        self.read("reading the config history", |c| {
            c.prepare_cached(&format!(
                "SELECT {CONFIG_COLS} FROM config_versions ORDER BY version"
            ))?
            .query_map([], config_from_row)?
            .collect()
        })
    }

    /// The config version that was in force when event `event_id` was appended: "what
    /// threshold was active when this file was stubbed?" is
    /// `config_for_event(history(id).find(STUBBED).id)`, one indexed join.
    pub fn config_for_event(&self, event_id: i64) -> Result<Option<ConfigVersion>> {
        self.read("reading the config of an event", |c| {
            c.prepare_cached(
                "SELECT c.version, c.hash, c.text, c.time_ns FROM events e \
                 JOIN config_versions c ON c.version = e.config_version WHERE e.id = ?1",
            )?
            .query_row([event_id], config_from_row)
            .optional()
        })
    }

    // ---- events ------------------------------------------------------------------------

    /// Appends one event, stamped with the time and the config version in force, chained
    /// to the event before it. Appends never fork the chain: the head is read and the row
    /// inserted in one transaction under the writer lock.
    pub fn append_event(
        &self,
        file_id: Option<&str>,
        path: Option<&str>,
        kind: EventKind,
        detail: serde_json::Value,
    ) -> Result<Event> {
        self.write("appending an event", |tx, heads, now| {
            let head = heads.get(tx)?;
            let time_ns = head.next_time(now);
            head.push(tx, time_ns, file_id, path, kind, &detail)
        })
    }

    /// Writes `file` (insert, or update by `file_id`) and appends its event, in one
    /// transaction: both happen or neither does. `file.updated_at` is ignored; the row gets
    /// the event's time. Fails with [`CatalogError::PathInUse`] if another file id has
    /// `file.path`.
    pub fn transition(
        &self,
        file: &FileRow,
        kind: EventKind,
        detail: serde_json::Value,
    ) -> Result<Event> {
        self.write("recording a file transition", |tx, heads, now| {
            let head = heads.get(tx)?;
            let time_ns = head.next_time(now);
            let mut totals = TotalsDelta::default();
            upsert_file(tx, file, kind, time_ns, &mut totals)?;
            totals.apply(tx)?;
            head.push(
                tx,
                time_ns,
                Some(&file.file_id),
                Some(&file.path),
                kind,
                &detail,
            )
        })
    }

    /// [`Catalog::transition`] for many files in one transaction (a scan batch, an
    /// import): all or nothing. Returns the ids of the events appended, in order.
    pub fn transition_batch(
        &self,
        items: &[(FileRow, EventKind, serde_json::Value)],
    ) -> Result<Range<i64>> {
        self.transition_batch_with(items, true)
    }

    /// [`Catalog::transition_batch`]; with `durable` false it returns before the fsync
    /// (see `write_lazy`).
    pub fn transition_batch_with(
        &self,
        items: &[(FileRow, EventKind, serde_json::Value)],
        durable: bool,
    ) -> Result<Range<i64>> {
        let body = |tx: &Connection, heads: &mut Heads, now: i64| {
            let head = heads.get(tx)?;
            let first = head.id + 1;
            let mut totals = TotalsDelta::default();
            let mut staged = Vec::with_capacity(items.len());
            for (i, (file, kind, detail)) in items.iter().enumerate() {
                let time_ns = head.next_time(now);
                // Consecutive steps of one file (COPIED, VERIFIED): only its last row
                // stays, so only that one is written.
                let superseded = items.get(i + 1).is_some_and(|(next, _, _)| {
                    next.file_id == file.file_id && next.path == file.path
                });
                if !superseded {
                    upsert_file(tx, file, *kind, time_ns, &mut totals)?;
                }
                staged.push(head.stage(
                    tx,
                    time_ns,
                    Some(&file.file_id),
                    Some(&file.path),
                    *kind,
                    detail,
                )?);
            }
            insert_events(tx, &staged)?;
            totals.apply(tx)?;
            Ok(first..head.id + 1)
        };
        const WHAT: &str = "recording a batch of file transitions";
        // A batch of many files starts a transaction of its own rather than join one in a
        // savepoint: SQLite copies into a savepoint's sub-journal every page the
        // savepoint changes, and the insert trigger on `events` (docs/catalog.md) makes
        // each INSERT a statement transaction, whose end walks that sub-journal from its
        // start. Joined, a batch of 256 files spent a third of its time there.
        let joins = if items.len() >= OWN_TRANSACTION {
            Joins::First
        } else {
            Joins::Shared
        };
        if durable {
            self.write_as(WHAT, joins, body)
        } else {
            self.write_lazy(WHAT, joins, body)
        }
    }

    /// Makes every write committed so far durable (one fsync of the WAL, shared with
    /// concurrent callers): the barrier after a run of lazy writes.
    pub fn sync(&self) -> Result<()> {
        self.make_durable(self.ended())
    }

    /// Folds the WAL into the database file and empties it: the daemon's clean stop, after
    /// its last write, so that the catalog file is whole on its own (copies by hand expect
    /// that; a process that exits does not close its connections, which would do the same).
    /// Returns false when a reader of another process kept part of the WAL.
    pub fn checkpoint(&self) -> Result<bool> {
        self.sync()?;
        let w = self.writer.lock();
        if w.open {
            return Ok(false);
        }
        let busy: i64 = w
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .ctx("checkpointing the WAL")?;
        Ok(busy == 0)
    }

    /// Removes a file's row and appends its DELETED event, in one transaction. The event's
    /// detail is `{"row": <the row as it was>, "detail": <detail>}`, so the object key and
    /// version of a deleted file stay in the audit trail for `gc`.
    pub fn delete_file(&self, file_id: &str, detail: serde_json::Value) -> Result<Event> {
        self.write("deleting a file", |tx, heads, now| {
            let row = file_where(tx, "file_id = ?1", file_id)
                .ctx("reading the file to delete")?
                .ok_or_else(|| CatalogError::NoSuchFile(file_id.to_owned()))?;
            tx.prepare_cached("DELETE FROM files WHERE file_id = ?1")
                .and_then(|mut s| s.execute([file_id]))
                .ctx("deleting a file row")?;
            let mut totals = TotalsDelta::default();
            totals.add(&row, -1);
            totals.apply(tx)?;
            let head = heads.get(tx)?;
            let time_ns = head.next_time(now);
            let detail = serde_json::json!({ "row": row, "detail": detail });
            head.push(
                tx,
                time_ns,
                Some(file_id),
                Some(&row.path),
                EventKind::Deleted,
                &detail,
            )
        })
    }

    /// Changes a file's current path (its identity, state and objects stay). Not an event:
    /// a rename is no state transition; later events carry the new path.
    pub fn rename_path(&self, file_id: &str, new_path: &str) -> Result<()> {
        self.write("renaming a file", |tx, _, now| {
            check_path_free(tx, file_id, new_path)?;
            let n = tx
                .prepare_cached("UPDATE files SET path = ?2, updated_at = ?3 WHERE file_id = ?1")
                .and_then(|mut s| s.execute(params![file_id, new_path, now]))
                .ctx("updating a file's path")?;
            if n == 0 {
                return Err(CatalogError::NoSuchFile(file_id.to_owned()));
            }
            Ok(())
        })
    }

    /// Records, durably, that `object_key` is about to be uploaded for file `file_id` at
    /// `path`: from now on the object is the catalog's to account for, whatever happens
    /// to the upload. The VERIFIED or FAILED event naming the object ends the intent.
    pub fn begin_upload(&self, object_key: &str, file_id: &str, path: &str) -> Result<()> {
        self.write("recording an upload intent", |tx, _, now| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO uploads (object_key, file_id, path, started_ns) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![object_key, file_id, path, now]))
            .ctx("recording an upload intent")?;
            Ok(())
        })
    }

    /// The upload intents no outcome has ended (after a crash: uploads that were under
    /// way), oldest first.
    pub fn open_uploads(&self) -> Result<Vec<Upload>> {
        self.read("reading upload intents", |c| {
            c.prepare_cached(
                "SELECT object_key, file_id, path, started_ns FROM uploads ORDER BY started_ns",
            )?
            .query_map([], |r| {
                Ok(Upload {
                    object_key: r.get(0)?,
                    file_id: r.get(1)?,
                    path: r.get(2)?,
                    started_ns: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// Records last opens (backing inode number, ns since the epoch): each row keeps the
    /// latest it was given. One transaction for the batch.
    pub fn note_used(&self, batch: &[(u64, i64)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write("recording last opens", |tx, _, _| {
            let mut s = tx
                .prepare_cached(
                    "INSERT INTO used (ino, used_ns) VALUES (?1, ?2) ON CONFLICT (ino) \
                     DO UPDATE SET used_ns = max(used_ns, excluded.used_ns)",
                )
                .ctx("recording last opens")?;
            for &(ino, ns) in batch {
                s.execute(params![ino as i64, ns])
                    .ctx("recording last opens")?;
            }
            Ok(())
        })
    }

    /// Every last open recorded: backing inode number -> ns since the epoch.
    pub fn used_times(&self) -> Result<std::collections::HashMap<u64, i64>> {
        self.read("reading last opens", |c| {
            c.prepare_cached("SELECT ino, used_ns FROM used")?
                .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
                .collect()
        })
    }

    /// A premigrated file's times changed while its data did not (proven by its checksum):
    /// the times its copy expects from now on. Not an event: nothing changed state.
    pub fn rebaseline(&self, file_id: &str, mtime_ns: i64, ctime_ns: i64) -> Result<()> {
        self.write("recording a file's new times", |tx, _, now| {
            tx.prepare_cached(
                "UPDATE files SET mtime_ns = ?2, ctime_ns = ?3, updated_at = ?4 WHERE file_id = ?1",
            )
            .and_then(|mut s| s.execute(params![file_id, mtime_ns, ctime_ns, now]))
            .ctx("updating a file's times")?;
            Ok(())
        })
    }

    /// A directory was renamed: every tracked path below `old_dir` moves below `new_dir`
    /// (one statement; not an event, like [`Catalog::rename_path`]). Returns how many.
    pub fn rename_prefix(&self, old_dir: &str, new_dir: &str) -> Result<usize> {
        let lo = format!("{old_dir}/");
        let hi = format!("{old_dir}0"); // '0' sorts right after '/'
        self.write("renaming a directory", |tx, _, now| {
            tx.prepare_cached(
                "UPDATE files SET path = ?3 || substr(path, ?4), updated_at = ?5 \
                 WHERE path >= ?1 AND path < ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    lo,
                    hi,
                    format!("{new_dir}/"),
                    lo.chars().count() as i64 + 1,
                    now
                ])
            })
            .ctx("updating paths below a renamed directory")
        })
    }

    /// Every event of one file, oldest first.
    pub fn history(&self, file_id: &str) -> Result<Vec<Event>> {
        self.read("reading a file's history", |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE file_id = ?1 ORDER BY id"
            ))?
            .query_map([file_id], event_from_row)?
            .collect()
        })
    }

    /// Up to `limit` events with id > `after_id`, oldest first (page with the last id).
    pub fn events_since(&self, after_id: i64, limit: usize) -> Result<Vec<Event>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("reading events", |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?
            .query_map([after_id, limit], event_from_row)?
            .collect()
        })
    }

    /// The newest event (the chain's head), if any. Record its id and hash elsewhere to
    /// detect truncation of the tail, which the chain alone cannot show.
    pub fn last_event(&self) -> Result<Option<Event>> {
        self.read("reading the last event", |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events ORDER BY id DESC LIMIT 1"
            ))?
            .query_row([], event_from_row)
            .optional()
        })
    }

    /// Recomputes every event's hash from the first to the last and checks each link.
    /// Returns the number of events checked, or [`CatalogError::ChainBroken`] naming the
    /// first event whose link does not hold.
    pub fn verify_chain(&self) -> Result<u64> {
        let outcome = self.read("verifying the event chain", |c| {
            let mut stmt = c.prepare(&format!("SELECT {EVENT_COLS} FROM events ORDER BY id"))?;
            let mut rows = stmt.query([])?;
            let mut verifier = Verifier::new();
            while let Some(r) = rows.next()? {
                let raw = RawEvent {
                    id: r.get(0)?,
                    time_ns: r.get(1)?,
                    file_id: r.get(2)?,
                    path: r.get(3)?,
                    kind: r.get(4)?,
                    detail: r.get(5)?,
                    config_version: r.get(6)?,
                    prev_hash: r.get(7)?,
                    hash: r.get(8)?,
                };
                if let Err(e) = verifier.check(&raw) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(verifier.checked()))
        })?;
        outcome.map_err(CatalogError::ChainBroken)
    }

    /// Every event of the given kinds, oldest first (gc reads the superseded and deleted
    /// objects from here).
    pub fn events_of_kinds(&self, kinds: &[EventKind]) -> Result<Vec<Event>> {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let list = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
        self.read("reading events by kind", |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE kind IN (SELECT value FROM json_each(?1)) ORDER BY id"
            ))?
            .query_map([list], event_from_row)?
            .collect()
        })
    }

    /// Events of these kinds at or after `since_ns` (time order): what `coldtier stats`
    /// sums recalls by program and user from.
    pub fn events_of_kinds_since(&self, kinds: &[EventKind], since_ns: i64) -> Result<Vec<Event>> {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let list = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
        self.read("reading events by kind", |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE time_ns >= ?2 \
                 AND kind IN (SELECT value FROM json_each(?1)) ORDER BY time_ns, id"
            ))?
            .query_map(params![list, since_ns], event_from_row)?
            .collect()
        })
    }

    /// The object keys that tracked files name now.
    pub fn object_keys_in_use(&self) -> Result<std::collections::HashSet<String>> {
        self.read("reading the object keys in use", |c| {
            c.prepare_cached("SELECT object_key FROM files WHERE object_key IS NOT NULL")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect()
        })
    }

    // ---- replicas ------------------------------------------------------------------------

    /// The objects files name (premigrated, stub, recalling, restore pending) that
    /// `target` has no verified copy of, by path: a pack once (under its first member's
    /// path), with the pack's size and checksum.
    pub fn objects_missing_on(&self, target: &str) -> Result<Vec<ObjectRef>> {
        self.read("reading the objects a replica lacks", |c| {
            c.prepare_cached(
                "SELECT f.file_id, min(f.path), f.object_key, f.version_id, \
                 coalesce(p.size, f.size), coalesce(p.checksum_algo, f.checksum_algo), \
                 coalesce(p.checksum, f.checksum) \
                 FROM files f LEFT JOIN packs p ON p.object_key = f.object_key \
                 WHERE f.object_key IS NOT NULL AND f.checksum IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.target = ?1 \
                   AND r.object_key = f.object_key \
                   AND r.version_id = coalesce(f.version_id, '')) \
                 GROUP BY f.object_key, coalesce(f.version_id, '') \
                 ORDER BY min(f.path)",
            )?
            .query_map([target], |r| {
                Ok(ObjectRef {
                    file_id: r.get(0)?,
                    path: r.get(1)?,
                    object_key: r.get(2)?,
                    version_id: r.get(3)?,
                    file_size: r.get(4)?,
                    checksum_algo: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    checksum: r.get(6)?,
                })
            })?
            .collect()
        })
    }

    /// Per target: the objects files name and their bytes (file sizes), and how many of
    /// them (and bytes) `target` holds a verified copy of.
    pub fn replica_counts(&self, target: &str) -> Result<ReplicaCounts> {
        self.read("counting a replica's objects", |c| {
            c.prepare_cached(
                "SELECT count(*), coalesce(sum(f.size), 0), \
                   count(r.target), coalesce(sum(CASE WHEN r.target IS NULL THEN 0 ELSE f.size END), 0) \
                 FROM files f LEFT JOIN replicas r ON r.target = ?1 \
                   AND r.object_key = f.object_key AND r.version_id = coalesce(f.version_id, '') \
                 WHERE f.object_key IS NOT NULL AND f.checksum IS NOT NULL",
            )?
            .query_row([target], |r| {
                Ok(ReplicaCounts {
                    objects: r.get(0)?,
                    bytes: r.get(1)?,
                    replicated: r.get(2)?,
                    replicated_bytes: r.get(3)?,
                })
            })
        })
    }

    /// The targets holding a verified copy of an object (a version of it), by name, with
    /// the copy's version there.
    pub fn replica_targets(
        &self,
        object_key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<(String, Option<String>)>> {
        self.read("reading an object's replicas", |c| {
            c.prepare_cached(
                "SELECT target, replica_version FROM replicas \
                 WHERE object_key = ?1 AND version_id = ?2 ORDER BY target",
            )?
            .query_map(
                rusqlite::params![object_key, version_id.unwrap_or("")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect()
        })
    }

    /// What `target` holds, as recorded.
    pub fn replica_rows(&self, target: &str) -> Result<Vec<ReplicaRow>> {
        self.read("reading a replica's objects", |c| {
            c.prepare_cached(
                "SELECT object_key, version_id, replica_version, size FROM replicas \
                 WHERE target = ?1 ORDER BY object_key",
            )?
            .query_map([target], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
    }

    /// Forgets `target`'s copy of an object (gc deleted it there), with an OBJECT_DELETED
    /// event naming the target (its detail names the key as `replica_of`, never
    /// `object_key`: the primary's object is another matter), in one durable transaction.
    pub fn forget_replica(
        &self,
        target: &str,
        object_key: &str,
        version_id: Option<&str>,
        file: (Option<&str>, Option<&str>),
        detail: serde_json::Value,
    ) -> Result<Event> {
        self.write("forgetting a replica copy", |tx, heads, now| {
            tx.prepare_cached(
                "DELETE FROM replicas WHERE target = ?1 AND object_key = ?2 AND version_id = ?3",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    target,
                    object_key,
                    version_id.unwrap_or("")
                ])
            })
            .ctx("forgetting a replica copy")?;
            let head = heads.get(tx)?;
            let time_ns = head.next_time(now);
            head.push(
                tx,
                time_ns,
                file.0,
                file.1,
                EventKind::ObjectDeleted,
                &detail,
            )
        })
    }

    // ---- packs ---------------------------------------------------------------------------

    /// Records pack `p` (written and verified) with its PACKED event, in one durable
    /// transaction: before any member's record names it.
    pub fn record_pack(&self, p: &PackRow, detail: serde_json::Value) -> Result<Event> {
        let size = i64::try_from(p.size).map_err(|_| CatalogError::OutOfRange {
            what: "size",
            value: p.size,
        })?;
        self.write("recording a pack", |tx, heads, now| {
            let head = heads.get(tx)?;
            let time_ns = head.next_time(now);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO packs (object_key, pack_id, version_id, size, members, \
                 checksum_algo, checksum, storage_class, index_key, repack_of, created_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    p.object_key,
                    p.pack_id,
                    p.version_id,
                    size,
                    p.members as i64,
                    p.checksum_algo,
                    p.checksum,
                    p.storage_class,
                    p.index_key,
                    p.repack_of,
                    time_ns
                ])
            })
            .ctx("recording a pack")?;
            head.push(tx, time_ns, None, None, EventKind::Packed, &detail)
        })
    }

    /// The pack whose object is `object_key`, if it is one.
    pub fn pack(&self, object_key: &str) -> Result<Option<PackRow>> {
        self.read("reading a pack", |c| {
            c.prepare_cached(
                "SELECT object_key, pack_id, version_id, size, members, checksum_algo, \
                 checksum, storage_class, index_key, repack_of FROM packs WHERE object_key = ?1",
            )?
            .query_row([object_key], pack_row)
            .optional()
        })
    }

    /// The last pack gc's repack wrote for `old` (its live members), if any.
    pub fn repack_of(&self, old: &str) -> Result<Option<PackRow>> {
        self.read("reading a repack", |c| {
            c.prepare_cached(
                "SELECT object_key, pack_id, version_id, size, members, checksum_algo, \
                 checksum, storage_class, index_key, repack_of FROM packs WHERE repack_of = ?1 \
                 ORDER BY created_ns DESC LIMIT 1",
            )?
            .query_row([old], pack_row)
            .optional()
        })
    }

    /// Ends the upload intent of `object_key` (its outcome recorded otherwise).
    pub fn end_upload(&self, object_key: &str) -> Result<()> {
        self.write("ending an upload intent", |tx, _, _| {
            tx.prepare_cached("DELETE FROM uploads WHERE object_key = ?1")
                .and_then(|mut s| s.execute([object_key]))
                .ctx("ending an upload intent")?;
            Ok(())
        })
    }

    /// The files whose object is `object_key` (a pack's live members), by path.
    pub fn files_naming(&self, object_key: &str) -> Result<Vec<FileRow>> {
        self.read("listing the files naming an object", |c| {
            c.prepare_cached(&format!(
                "SELECT {FILE_COLS} FROM files WHERE object_key = ?1 ORDER BY path"
            ))?
            .query_map([object_key], file_from_row)?
            .collect()
        })
    }

    /// Every pack, with the files that still name it (its live members).
    pub fn packs(&self) -> Result<Vec<PackLive>> {
        self.read("reading the packs", |c| {
            c.prepare_cached(
                "SELECT p.object_key, p.pack_id, p.version_id, p.size, p.members, \
                 p.checksum_algo, p.checksum, p.storage_class, p.index_key, p.repack_of, \
                 (SELECT count(*) FROM files f WHERE f.object_key = p.object_key), \
                 (SELECT coalesce(sum(size), 0) FROM files f WHERE f.object_key = p.object_key), \
                 (SELECT coalesce(sum((size + 511) / 512), 0) FROM files f \
                  WHERE f.object_key = p.object_key) \
                 FROM packs p ORDER BY p.created_ns",
            )?
            .query_map([], |r| {
                Ok(PackLive {
                    pack: pack_row(r)?,
                    members: r.get::<_, i64>(10)? as u64,
                    bytes: r.get::<_, i64>(11)? as u64,
                    blocks: r.get::<_, i64>(12)? as u64,
                })
            })?
            .collect()
        })
    }

    /// Records that `target` holds a verified copy of `obj` (its version `replica_version`
    /// there) with its REPLICATED event, in one durable transaction.
    pub fn record_replicated(
        &self,
        target: &str,
        obj: &ObjectRef,
        object_size: u64,
        replica_version: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<Event> {
        let size = i64::try_from(object_size).map_err(|_| CatalogError::OutOfRange {
            what: "size",
            value: object_size,
        })?;
        self.write("recording a replica", |tx, heads, now| {
            let head = heads.get(tx)?;
            let time_ns = head.next_time(now);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO replicas \
                 (target, object_key, version_id, replica_version, size, replicated_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    target,
                    obj.object_key,
                    obj.version_id.as_deref().unwrap_or(""),
                    replica_version,
                    size,
                    time_ns
                ])
            })
            .ctx("recording a replica")?;
            head.push(
                tx,
                time_ns,
                Some(&obj.file_id),
                Some(&obj.path),
                EventKind::Replicated,
                &detail,
            )
        })
    }

    // ---- files ---------------------------------------------------------------------------

    pub fn file_by_id(&self, file_id: &str) -> Result<Option<FileRow>> {
        self.read("reading a file by id", |c| {
            file_where(c, "file_id = ?1", file_id)
        })
    }

    /// The file currently at `path` (relative to the source root).
    pub fn file_by_path(&self, path: &str) -> Result<Option<FileRow>> {
        self.read("reading a file by path", |c| {
            file_where(c, "path = ?1", path)
        })
    }

    /// The id of the file currently at `path`, without the rest of its row.
    pub fn file_id_at(&self, path: &str) -> Result<Option<String>> {
        self.read("reading a file by path", |c| {
            c.prepare_cached("SELECT file_id FROM files WHERE path = ?1")?
                .query_row([path], |r| r.get(0))
                .optional()
        })
    }

    /// Up to `limit` files in `state`, ordered by path.
    pub fn files_by_state(&self, state: FileState, limit: usize) -> Result<Vec<FileRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("listing files by state", |c| {
            c.prepare_cached(&format!(
                "SELECT {FILE_COLS} FROM files WHERE state = ?1 ORDER BY path LIMIT ?2"
            ))?
            .query_map(params![state, limit], file_from_row)?
            .collect()
        })
    }

    /// What the alerting metrics read at each scrape: the end of the last policy run
    /// (migrate, scheduled or archive; dry runs aside) and its failed files, the end of the
    /// last one that failed nothing, and the time of the last catalog backup (ns since the
    /// epoch; 0: never).
    pub fn alert_facts(&self) -> Result<AlertFacts> {
        self.read("reading the last runs and backup", |c| {
            const RUNS: &str = "kind IN ('migrate', 'scheduled', 'archive') \
                 AND mode != 'dry-run' AND finished_ns IS NOT NULL";
            let (last_run_ns, last_run_failed) = c
                .prepare_cached(&format!(
                    "SELECT finished_ns, files_failed FROM jobs WHERE {RUNS} \
                     ORDER BY id DESC LIMIT 1"
                ))?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((0, 0));
            let last_ok_run_ns: i64 = c
                .prepare_cached(&format!(
                    "SELECT coalesce(max(finished_ns), 0) FROM jobs WHERE {RUNS} \
                     AND files_failed = 0 AND errors = '[]'"
                ))?
                .query_row([], |r| r.get(0))?;
            let last_backup_ns: i64 = c
                .prepare_cached(
                    "SELECT time_ns FROM events INDEXED BY events_kind \
                     WHERE kind = 'CATALOG_BACKUP' ORDER BY id DESC LIMIT 1",
                )?
                .query_row([], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            Ok(AlertFacts {
                last_run_ns,
                last_run_failed,
                last_ok_run_ns,
                last_backup_ns,
            })
        })
    }

    /// Files and bytes in each state (every state, zeros included), in [`FileState::ALL`]
    /// order. Reads only the (state, size) index.
    pub fn state_counts(&self) -> Result<Vec<StateCount>> {
        let found: Vec<StateCount> = self.read("counting files by state", |c| {
            c.prepare_cached(
                "SELECT state, count(*), coalesce(sum(size), 0) FROM files \
                 INDEXED BY files_state_size GROUP BY state",
            )?
            .query_map([], |r| {
                Ok(StateCount {
                    state: r.get(0)?,
                    files: r.get(1)?,
                    bytes: r.get(2)?,
                })
            })?
            .collect()
        })?;
        Ok(FileState::ALL
            .into_iter()
            .map(|state| {
                found
                    .iter()
                    .find(|s| s.state == state)
                    .copied()
                    .unwrap_or(StateCount {
                        state,
                        files: 0,
                        bytes: 0,
                    })
            })
            .collect())
    }

    // ---- jobs ----------------------------------------------------------------------------

    /// Records the start of a policy run; returns its id.
    pub fn start_job(&self, kind: &str, mode: &str) -> Result<i64> {
        self.write("starting a job", |tx, _, now| {
            let config_version = latest_config(tx)
                .ctx("reading the config version")?
                .map_or(0, |c| c.version);
            tx.prepare_cached(
                "INSERT INTO jobs (kind, mode, config_version, started_ns) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![kind, mode, config_version, now]))
            .ctx("inserting a job")?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Records the end of a policy run with its counts; a job finishes once.
    pub fn finish_job(&self, id: i64, counts: &JobCounts) -> Result<Job> {
        let int = |what: &'static str, value: u64| {
            i64::try_from(value).map_err(|_| CatalogError::OutOfRange { what, value })
        };
        let scanned = int("files_scanned", counts.files_scanned)?;
        let copied = int("files_copied", counts.files_copied)?;
        let bytes = int("bytes_copied", counts.bytes_copied)?;
        let stubbed = int("files_stubbed", counts.files_stubbed)?;
        let failed = int("files_failed", counts.files_failed)?;
        let bytes_stubbed = int("bytes_stubbed", counts.bytes_stubbed)?;
        let mut errors: Vec<String> = counts.errors.iter().take(MAX_JOB_ERRORS).cloned().collect();
        if counts.errors.len() > MAX_JOB_ERRORS {
            errors.push(format!(
                "... and {} more errors not kept",
                counts.errors.len() - MAX_JOB_ERRORS
            ));
        }
        let errors_json = serde_json::Value::from(errors).to_string();
        self.write("finishing a job", |tx, _, now| {
            let (started, finished): (i64, Option<i64>) = tx
                .prepare_cached("SELECT started_ns, finished_ns FROM jobs WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .ctx("reading a job")?
                .ok_or(CatalogError::NoSuchJob(id))?;
            if finished.is_some() {
                return Err(CatalogError::JobAlreadyFinished(id));
            }
            let duration_ms = now.saturating_sub(started).max(0) / 1_000_000;
            tx.prepare_cached(
                "UPDATE jobs SET finished_ns = ?2, files_scanned = ?3, files_copied = ?4, \
                 bytes_copied = ?5, files_stubbed = ?6, files_failed = ?7, errors = ?8, \
                 duration_ms = ?9, bytes_stubbed = ?10 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    now,
                    scanned,
                    copied,
                    bytes,
                    stubbed,
                    failed,
                    errors_json,
                    duration_ms,
                    bytes_stubbed
                ])
            })
            .ctx("finishing a job")?;
            tx.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id], job_from_row))
                .ctx("reading a finished job")
        })
    }

    pub fn job(&self, id: i64) -> Result<Option<Job>> {
        self.read("reading a job", |c| {
            c.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))?
                .query_row([id], job_from_row)
                .optional()
        })
    }

    /// The newest `limit` jobs, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("listing jobs", |c| {
            c.prepare_cached(&format!(
                "SELECT {JOB_COLS} FROM jobs ORDER BY id DESC LIMIT ?1"
            ))?
            .query_map([limit], job_from_row)?
            .collect()
        })
    }
}

/// The chain's head as seen inside a write transaction, advanced by each push.
struct Head {
    id: i64,
    hash: String,
    time_ns: i64,
    config_version: i64,
}

impl Head {
    fn load(tx: &Connection) -> Result<Head> {
        let last: Option<(i64, String, i64)> = tx
            .prepare_cached("SELECT id, hash, time_ns FROM events ORDER BY id DESC LIMIT 1")
            .and_then(|mut s| {
                s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .ctx("reading the head of the event chain")?;
        let config_version = latest_config(tx)
            .ctx("reading the config version in force")?
            .map_or(0, |c| c.version);
        let (id, hash, time_ns) = last.unwrap_or((0, GENESIS_HASH.to_owned(), i64::MIN));
        Ok(Head {
            id,
            hash,
            time_ns,
            config_version,
        })
    }

    /// Event times never go backwards along the chain, even if the clock does.
    fn next_time(&self, now: i64) -> i64 {
        now.max(self.time_ns)
    }

    fn push(
        &mut self,
        tx: &Connection,
        time_ns: i64,
        file_id: Option<&str>,
        path: Option<&str>,
        kind: EventKind,
        detail: &serde_json::Value,
    ) -> Result<Event> {
        let e = self.next_event(time_ns, file_id, path, kind, detail);
        insert_events(tx, std::slice::from_ref(&e))?;
        end_upload_of(tx, &e, detail)?;
        self.advance(&e);
        Ok(Event {
            id: e.id,
            time_ns: e.time_ns,
            file_id: file_id.map(str::to_owned),
            path: path.map(str::to_owned),
            kind,
            detail: detail.clone(),
            config_version: e.config_version,
            prev_hash: e.prev_hash,
            hash: e.hash,
        })
    }

    /// The next event of the chain, linked to the head and hashed, the head moved past
    /// it, but not inserted: the caller inserts it, in order with the others it staged,
    /// with [`insert_events`] in the same write (whose failure resets the head).
    fn stage<'a>(
        &mut self,
        tx: &Connection,
        time_ns: i64,
        file_id: Option<&'a str>,
        path: Option<&'a str>,
        kind: EventKind,
        detail: &serde_json::Value,
    ) -> Result<StagedEvent<'a>> {
        let e = self.next_event(time_ns, file_id, path, kind, detail);
        end_upload_of(tx, &e, detail)?;
        self.advance(&e);
        Ok(e)
    }

    fn next_event<'a>(
        &self,
        time_ns: i64,
        file_id: Option<&'a str>,
        path: Option<&'a str>,
        kind: EventKind,
        detail: &serde_json::Value,
    ) -> StagedEvent<'a> {
        let id = self.id + 1;
        let time_ns = self.next_time(time_ns);
        let detail = canonical_json(detail);
        let hash = event_hash(&HashInput {
            prev_hash: &self.hash,
            id,
            time_ns,
            file_id,
            path,
            kind: kind.as_str(),
            detail: &detail,
            config_version: self.config_version,
        });
        StagedEvent {
            id,
            time_ns,
            file_id,
            path,
            kind,
            detail,
            config_version: self.config_version,
            prev_hash: self.hash.clone(),
            hash,
        }
    }

    fn advance(&mut self, e: &StagedEvent<'_>) {
        self.id = e.id;
        self.time_ns = e.time_ns;
        self.hash.clone_from(&e.hash);
    }
}

/// An event linked into the chain, to be inserted ([`Head::stage`]).
struct StagedEvent<'a> {
    id: i64,
    time_ns: i64,
    file_id: Option<&'a str>,
    path: Option<&'a str>,
    kind: EventKind,
    /// Canonical JSON.
    detail: String,
    config_version: i64,
    prev_hash: String,
    hash: String,
}

/// Rows of `events` inserted by one statement where a batch has that many: the insert
/// trigger makes each statement a statement transaction (a sub-journal opened, filled
/// with the pages it changes, and freed), so one per 16 events instead of one per event.
/// A micro-benchmark of the schema (Python's sqlite3, 23,040 events in transactions of
/// 768): 14 µs an event one by one, 10 µs sixteen at a time, the same at 64.
const EVENTS_PER_INSERT: usize = 16;

/// Inserts `events` (consecutive, in chain order) in that order.
fn insert_events(tx: &Connection, events: &[StagedEvent<'_>]) -> Result<()> {
    // The statement for `n` rows (prepared once per connection: `prepare_cached`).
    let sql = |n: usize| {
        let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
        format!("INSERT INTO events ({EVENT_COLS}) VALUES {rows}")
    };
    let insert = |sql: &str, rows: &[StagedEvent<'_>]| {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(event_values(rows))))
            .ctx("inserting an event")
    };
    let mut chunks = events.chunks_exact(EVENTS_PER_INSERT);
    if chunks.len() > 0 {
        let many = sql(EVENTS_PER_INSERT);
        for c in chunks.by_ref() {
            insert(&many, c)?;
        }
    }
    if !chunks.remainder().is_empty() {
        let one = sql(1);
        for e in chunks.remainder() {
            insert(&one, std::slice::from_ref(e))?;
        }
    }
    Ok(())
}

/// The values of `events`' rows, in `EVENT_COLS` order, one row after another.
fn event_values<'a>(events: &'a [StagedEvent<'_>]) -> Vec<&'a dyn rusqlite::ToSql> {
    events
        .iter()
        .flat_map(|e| -> [&'a dyn rusqlite::ToSql; 9] {
            [
                &e.id,
                &e.time_ns,
                &e.file_id,
                &e.path,
                &e.kind,
                &e.detail,
                &e.config_version,
                &e.prev_hash,
                &e.hash,
            ]
        })
        .collect()
}

/// The outcome of an upload (its copy proven, or given up) ends its intent: an outcome of
/// the intent's own file. (A pack's intent is the pack's, not one of its members': it
/// ends when all of them are recorded, `Catalog::end_upload`.)
fn end_upload_of(tx: &Connection, e: &StagedEvent<'_>, detail: &serde_json::Value) -> Result<()> {
    if matches!(e.kind, EventKind::Verified | EventKind::Failed) {
        if let (Some(key), Some(id)) = (detail["object_key"].as_str(), e.file_id) {
            tx.prepare_cached("DELETE FROM uploads WHERE object_key = ?1 AND file_id = ?2")
                .and_then(|mut s| s.execute([key, id]))
                .ctx("ending an upload intent")?;
        }
    }
    Ok(())
}

fn check_path_free(tx: &Connection, file_id: &str, path: &str) -> Result<()> {
    let other: Option<String> = tx
        .prepare_cached("SELECT file_id FROM files WHERE path = ?1 AND file_id <> ?2")
        .and_then(|mut s| s.query_row([path, file_id], |r| r.get(0)).optional())
        .ctx("checking whether a path is taken")?;
    match other {
        Some(other_file_id) => Err(CatalogError::PathInUse {
            path: path.to_owned(),
            other_file_id,
        }),
        None => Ok(()),
    }
}

/// Inserts or updates `f`'s row for an event of `kind`, and adds what it changes to
/// `totals`. An existing row's `pinned` changes only with PINNED or UNPINNED: a step that
/// read the row before a concurrent pin (a copy in flight) must not undo it.
fn upsert_file(
    tx: &Connection,
    f: &FileRow,
    kind: EventKind,
    updated_at: i64,
    totals: &mut TotalsDelta,
) -> Result<()> {
    use rusqlite::types::Value;
    let size = i64::try_from(f.size).map_err(|_| CatalogError::OutOfRange {
        what: "size",
        value: f.size,
    })?;
    let old = file_where(tx, "file_id = ?1", &f.file_id).ctx("reading a file row")?;
    let Some(old) = old else {
        check_path_free(tx, &f.file_id, &f.path)?;
        tx.prepare_cached(&format!(
            "INSERT INTO files ({FILE_COLS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))
        .and_then(|mut s| {
            s.execute(params![
                f.file_id,
                f.path,
                f.state,
                size,
                f.mtime_ns,
                f.ctime_ns,
                // Inode numbers are u64; stored bit for bit.
                f.ino as i64,
                f.object_key,
                f.version_id,
                f.checksum_algo,
                f.checksum,
                f.md5,
                f.storage_class,
                f.pinned,
                updated_at
            ])
        })
        .ctx("writing a file row")?;
        totals.add(f, 1);
        return Ok(());
    };
    if old.path != f.path {
        check_path_free(tx, &f.file_id, &f.path)?;
    }
    // Only the columns that change: SQLite rewrites every index that has a column named
    // in SET, changed or not, and the files table has seven.
    let mut cols: Vec<&str> = Vec::new();
    let mut vals: Vec<Value> = vec![Value::from(f.file_id.clone())];
    let mut set = |col: &'static str, changed: bool, v: Value| {
        if changed {
            cols.push(col);
            vals.push(v);
        }
    };
    set("path", old.path != f.path, f.path.clone().into());
    set(
        "state",
        old.state != f.state,
        f.state.as_str().to_owned().into(),
    );
    set("size", old.size != f.size, size.into());
    set("mtime_ns", old.mtime_ns != f.mtime_ns, f.mtime_ns.into());
    set("ctime_ns", old.ctime_ns != f.ctime_ns, f.ctime_ns.into());
    set("ino", old.ino != f.ino, (f.ino as i64).into());
    for (col, was, now) in [
        ("object_key", &old.object_key, &f.object_key),
        ("version_id", &old.version_id, &f.version_id),
        ("checksum_algo", &old.checksum_algo, &f.checksum_algo),
        ("checksum", &old.checksum, &f.checksum),
        ("md5", &old.md5, &f.md5),
        ("storage_class", &old.storage_class, &f.storage_class),
    ] {
        set(col, was != now, now.clone().into());
    }
    let pin_event = matches!(kind, EventKind::Pinned | EventKind::Unpinned);
    set(
        "pinned",
        pin_event && old.pinned != f.pinned,
        f.pinned.into(),
    );
    set("updated_at", true, updated_at.into());
    let assignments: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ?{}", i + 2))
        .collect();
    tx.prepare_cached(&format!(
        "UPDATE files SET {} WHERE file_id = ?1",
        assignments.join(", ")
    ))
    .and_then(|mut s| s.execute(rusqlite::params_from_iter(vals)))
    .ctx("writing a file row")?;
    totals.change(&old, f, if pin_event { f.pinned } else { old.pinned });
    Ok(())
}

fn latest_config(c: &Connection) -> rusqlite::Result<Option<ConfigVersion>> {
    c.prepare_cached(&format!(
        "SELECT {CONFIG_COLS} FROM config_versions ORDER BY version DESC LIMIT 1"
    ))?
    .query_row([], config_from_row)
    .optional()
}

fn file_where(c: &Connection, condition: &str, value: &str) -> rusqlite::Result<Option<FileRow>> {
    c.prepare_cached(&format!("SELECT {FILE_COLS} FROM files WHERE {condition}"))?
        .query_row([value], file_from_row)
        .optional()
}

fn json_column<T: serde::de::DeserializeOwned>(r: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = r.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        file_id: r.get(0)?,
        path: r.get(1)?,
        state: r.get(2)?,
        size: r.get(3)?,
        mtime_ns: r.get(4)?,
        ctime_ns: r.get(5)?,
        ino: r.get::<_, i64>(6)? as u64,
        object_key: r.get(7)?,
        version_id: r.get(8)?,
        checksum_algo: r.get(9)?,
        checksum: r.get(10)?,
        md5: r.get(11)?,
        storage_class: r.get(12)?,
        pinned: r.get(13)?,
        updated_at: r.get(14)?,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        time_ns: r.get(1)?,
        file_id: r.get(2)?,
        path: r.get(3)?,
        kind: r.get(4)?,
        detail: json_column(r, 5)?,
        config_version: r.get(6)?,
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

fn config_from_row(r: &Row<'_>) -> rusqlite::Result<ConfigVersion> {
    Ok(ConfigVersion {
        version: r.get(0)?,
        hash: r.get(1)?,
        text: r.get(2)?,
        time_ns: r.get(3)?,
    })
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        mode: r.get(2)?,
        config_version: r.get(3)?,
        started_ns: r.get(4)?,
        finished_ns: r.get(5)?,
        files_scanned: r.get(6)?,
        files_copied: r.get(7)?,
        bytes_copied: r.get(8)?,
        files_stubbed: r.get(9)?,
        files_failed: r.get(10)?,
        errors: json_column(r, 11)?,
        duration_ms: r.get(12)?,
        bytes_stubbed: r.get(13)?,
    })
}

fn pack_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PackRow> {
    Ok(PackRow {
        object_key: r.get(0)?,
        pack_id: r.get(1)?,
        version_id: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        members: r.get::<_, i64>(4)? as u64,
        checksum_algo: r.get(5)?,
        checksum: r.get(6)?,
        storage_class: r.get(7)?,
        index_key: r.get(8)?,
        repack_of: r.get(9)?,
    })
}
