//! Tiering in the daemon: the [`Tiering`] context (catalog, store, config, the backing
//! root), the overlay hooks (stub detection, recall on open, supersede on write, rename and
//! delete tracking) and the recall itself: single flight per inode, the Glacier restore
//! flow, and the crash-safe order of its steps.
//!
//! The xattrs on the backing file are the truth ([`super::marks`]); the catalog records
//! each change as an event, in the same order.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use super::config::{OnArchived, Settings};
use crate::catalog::{Catalog, CatalogError, EventKind, FileRow, FileState};
use crate::fs::backing::{self, Errno, SetTime, Stat, SysResult};
use crate::fs::gate::Gate;
use crate::fs::overlay::{Go, OverlayFs, TierHooks, Waiter};
use crate::store::{ChecksumAlgo, GetRequest, ObjectStore, StoreErrorKind};
use crate::tier::marks;
use crate::tier::state::{self, Action};
use crate::tier::stub::StubRecord;

/// The first segment of every object key coldtier writes inside the store's prefix:
/// `data/<file id>/<content version>` (other segments are left for catalog backups).
pub const KEY_PREFIX: &str = "data";

/// What the tiering code needs of the mount.
pub trait MountView: Send + Sync {
    /// The tiering code changed the records of `ino`: drop the cached view.
    fn reset_tier_mark(&self, ino: u64);
    /// The node id (gate key) of backing object (dev, ino).
    fn node_id(&self, dev: u64, ino: u64) -> u64;
}

impl<B: Send + Sync + 'static> MountView for OverlayFs<B> {
    fn reset_tier_mark(&self, ino: u64) {
        OverlayFs::reset_tier_mark(self, ino)
    }
    fn node_id(&self, dev: u64, ino: u64) -> u64 {
        OverlayFs::node_id(self, dev, ino)
    }
}

type RecallResult = Option<Result<(), i32>>;

/// The tiering side of one mount.
pub struct Tiering {
    me: Weak<Tiering>,
    /// The settings in force (replaced by a reload: [`Tiering::set_settings`]).
    settings: parking_lot::RwLock<Arc<Settings>>,
    /// What the store check at mount found, and whether tiering is paused.
    pub store_state: StoreState,
    pub catalog: Arc<Catalog>,
    /// The store (replaced by a reload that changes its settings: [`Tiering::set_store`]).
    store: parking_lot::RwLock<Option<Arc<dyn ObjectStore>>>,
    /// Bumped by every reload of the config: the schedulers wait on it.
    reloaded: tokio::sync::watch::Sender<u64>,
    /// The store's own key prefix (shown in full keys), "" for none.
    pub store_prefix: String,
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    root: OwnedFd,
    pub root_dev: u64,
    pub rt: tokio::runtime::Handle,
    pub gate: Arc<Gate>,
    mount: OnceLock<Arc<dyn MountView>>,
    recalls: Mutex<HashMap<u64, watch::Receiver<RecallResult>>>,
    /// Files with a restore poller (by file id): one each.
    pollers: Mutex<HashSet<String>>,
    /// The runner of every background worker of this mount (`crate::jobs`, the tagger,
    /// the restore pollers).
    pub workers: Arc<crate::base::worker::Runner>,
    /// The tagger's queue.
    tags: tokio::sync::mpsc::UnboundedSender<super::background::TagRequest>,
    failpoint: Option<String>,
    /// `COLDTIER_TEST_GC_SKEW`: gc acts as if now were this much later (tests only).
    pub gc_skew: Duration,
    pub host: String,
    /// One policy run (or gc) at a time.
    pub job_lock: tokio::sync::Mutex<()>,
    /// The job running now (a policy run or gc): its id, kind and cancel flag.
    running: Mutex<Option<(i64, String, crate::base::cancel::Cancel)>>,
}

/// Unregisters the running job when dropped.
pub struct RunningJob<'a>(&'a Tiering);

impl Drop for RunningJob<'_> {
    fn drop(&mut self) {
        *self.0.running.lock() = None;
    }
}

const VALIDATES_NO: u8 = 1;
const VALIDATES_YES: u8 = 2;

/// The store as the daemon knows it.
#[derive(Debug, Default)]
pub struct StoreState {
    /// 0: not checked yet (copies are read back), 1: does not validate checksums,
    /// 2: validates them.
    validates: std::sync::atomic::AtomicU8,
    paused: std::sync::atomic::AtomicBool,
}

/// How a tiering step failed: the errno an application sees, and what to log.
#[derive(Debug)]
pub struct StepError {
    pub errno: i32,
    pub message: String,
}

impl StepError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        StepError {
            errno,
            message: message.into(),
        }
    }
}

impl From<Errno> for StepError {
    fn from(e: Errno) -> Self {
        StepError::new(e.0, std::io::Error::from_raw_os_error(e.0).to_string())
    }
}

impl From<CatalogError> for StepError {
    fn from(e: CatalogError) -> Self {
        StepError::new(libc::EIO, e.to_string())
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Nanoseconds since the epoch as (seconds, nanoseconds) for utimensat.
pub fn split_ns(ns: i64) -> SetTime {
    SetTime::At(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

pub fn ns_of(t: (i64, u32)) -> i64 {
    t.0.saturating_mul(1_000_000_000).saturating_add(t.1 as i64)
}

/// The next state and events of `action` when the catalog's view refuses it (the files on
/// disk are the truth; the catalog catches up, with the event of what happened).
fn forced(action: Action) -> (Option<FileState>, Vec<EventKind>) {
    use Action as A;
    use FileState as S;
    let (s, e) = match action {
        A::CopyVerified => (S::Premigrated, EventKind::Verified),
        A::Stub | A::Release => (S::Stub, EventKind::Stubbed),
        A::RecallStart | A::RestoreReady => (S::Recalling, EventKind::RecallStarted),
        A::RecallDone => (S::Premigrated, EventKind::Recalled),
        A::RecallFailed => (S::Stub, EventKind::RecallFailed),
        A::RestoreRequested => (S::RestorePending, EventKind::RestoreRequested),
        A::WriteOrTruncate | A::TruncateToZeroOfStub => (S::Resident, EventKind::Superseded),
        A::Pin => (S::Resident, EventKind::Pinned),
        A::Unpin => (S::Resident, EventKind::Unpinned),
        A::Delete => return (None, vec![EventKind::Deleted]),
    };
    (Some(s), vec![e])
}

impl Tiering {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        catalog: Arc<Catalog>,
        store: Option<Arc<dyn ObjectStore>>,
        store_prefix: String,
        source: PathBuf,
        mountpoint: PathBuf,
        root: OwnedFd,
        rt: tokio::runtime::Handle,
        gate: Arc<Gate>,
    ) -> std::io::Result<Arc<Tiering>> {
        let root_dev = backing::stat_fd(root.as_fd())
            .map_err(|e| std::io::Error::from_raw_os_error(e.0))?
            .dev;
        let failpoint = std::env::var("COLDTIER_TEST_FAILPOINT")
            .ok()
            .filter(|s| !s.is_empty());
        if let Some(f) = &failpoint {
            tracing::warn!(failpoint = %f, "test failpoint armed: the daemon kills itself (or pauses) there");
        }
        let gc_skew = std::env::var("COLDTIER_TEST_GC_SKEW")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let (tags, tag_rx) = tokio::sync::mpsc::unbounded_channel();
        let workers = crate::base::worker::Runner::new(rt.clone());
        let t = Arc::new_cyclic(|me| Tiering {
            me: me.clone(),
            settings: parking_lot::RwLock::new(Arc::new(settings)),
            store_state: StoreState::default(),
            reloaded: tokio::sync::watch::channel(0).0,
            catalog,
            store: parking_lot::RwLock::new(store),
            store_prefix,
            source,
            mountpoint,
            root,
            root_dev,
            rt,
            gate,
            mount: OnceLock::new(),
            recalls: Mutex::new(HashMap::new()),
            pollers: Mutex::new(HashSet::new()),
            workers,
            tags,
            failpoint,
            gc_skew,
            host,
            job_lock: tokio::sync::Mutex::new(()),
            running: Mutex::new(None),
        });
        t.workers.spawn(
            super::background::Tagger {
                t: Arc::downgrade(&t),
                rx: tag_rx,
                next: None,
                tagged: 0,
                failed: 0,
            },
            false,
        );
        Ok(t)
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// Puts `settings` in force (a reload; the daemon checked what may change) and tells
    /// the schedulers.
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write() = Arc::new(settings);
        self.reloaded.send_modify(|n| *n += 1);
    }

    /// Changes each time the config is reloaded.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// The store, if one is configured.
    pub fn store_opt(&self) -> Option<Arc<dyn ObjectStore>> {
        self.store.read().clone()
    }

    /// Puts another store in force (a reload with new credentials or settings; the same
    /// bucket and prefix). Operations under way keep the one they started with.
    pub fn set_store(&self, store: Arc<dyn ObjectStore>) {
        *self.store.write() = Some(store);
    }

    /// Whether the store is known to refuse uploads that do not match their checksum, so
    /// that its word proves a copy (else copies are read back).
    pub fn store_validates(&self) -> bool {
        self.store_state
            .validates
            .load(std::sync::atomic::Ordering::SeqCst)
            == VALIDATES_YES
    }

    /// Records what the store check found.
    pub fn set_store_validates(&self, yes: bool) {
        let v = if yes { VALIDATES_YES } else { VALIDATES_NO };
        self.store_state
            .validates
            .store(v, std::sync::atomic::Ordering::SeqCst);
        crate::tier::metrics::STORE_VALIDATES_CHECKSUMS.set(yes as i64);
    }

    /// Whether policy runs, gc and catalog uploads are paused (`mount --paused`, `pause`).
    pub fn paused(&self) -> bool {
        self.store_state
            .paused
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Registers job `id` (of `kind`) as the one running, cancellable by
    /// [`Tiering::cancel_job`], until the returned guard drops.
    pub fn running_job(
        &self,
        id: i64,
        kind: &str,
        cancel: &crate::base::cancel::Cancel,
    ) -> RunningJob<'_> {
        *self.running.lock() = Some((id, kind.to_string(), cancel.clone()));
        RunningJob(self)
    }

    /// Cancels the running job (that one if `id` is given): its id and kind, or None if
    /// no such job runs.
    pub fn cancel_job(&self, id: Option<i64>) -> Option<(i64, String)> {
        let r = self.running.lock();
        let (rid, kind, cancel) = r.as_ref()?;
        if id.is_some_and(|i| i != *rid) {
            return None;
        }
        cancel.cancel();
        Some((*rid, kind.clone()))
    }

    /// The error of a job that needs the store while tiering is paused.
    pub fn not_paused(&self) -> Result<(), StepError> {
        if self.paused() {
            return Err(StepError::new(
                libc::EAGAIN,
                "tiering is paused: `coldtier resume MOUNTPOINT` checks the store and resumes it",
            ));
        }
        Ok(())
    }

    pub fn set_paused(&self, on: bool) {
        self.store_state
            .paused
            .store(on, std::sync::atomic::Ordering::SeqCst);
        crate::tier::metrics::TIERING_PAUSED.set(on as i64);
    }

    pub fn set_mount(&self, m: Arc<dyn MountView>) {
        let _ = self.mount.set(m);
    }

    fn arc(&self) -> Arc<Tiering> {
        self.me.upgrade().expect("Tiering is alive while called")
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The store, or the error every tiering step gives without one.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, StepError> {
        self.store_opt().ok_or_else(|| {
            StepError::new(
                libc::EIO,
                "no [store] is configured for this mount: add a [store] section to its config",
            )
        })
    }

    /// The key as the store shows it (with the store's prefix).
    pub fn full_key(&self, key: &str) -> String {
        if self.store_prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.store_prefix)
        }
    }

    /// `COLDTIER_TEST_FAILPOINT=NAME`: dies here, as a crash would;
    /// `NAME:pause=MS`: waits here MS milliseconds (a slow step, to watch it in flight).
    pub fn failpoint(&self, name: &str) {
        let Some(armed) = self.failpoint.as_deref() else {
            return;
        };
        if let Some(ms) = armed
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(":pause="))
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            tracing::warn!(failpoint = name, ms, "test failpoint reached: pausing");
            std::thread::sleep(Duration::from_millis(ms));
            return;
        }
        if armed == name {
            tracing::error!(
                failpoint = name,
                "test failpoint reached: killing the daemon"
            );
            // SAFETY: sending a signal to ourselves.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            std::thread::sleep(Duration::from_secs(10));
        }
    }

    pub fn node_id(&self, st: &Stat) -> u64 {
        match self.mount.get() {
            Some(m) => m.node_id(st.dev, st.ino),
            None => st.ino,
        }
    }

    pub fn reset_mark(&self, node: u64) {
        if let Some(m) = self.mount.get() {
            m.reset_tier_mark(node);
        }
    }

    /// The path of an open backing file relative to the source, if it still has one.
    pub fn rel_of(&self, fd: BorrowedFd<'_>) -> Option<String> {
        let p = backing::fd_path(fd)?;
        let rel = p.strip_prefix(&self.source).ok()?;
        let s = rel.to_str()?.to_string();
        (!s.ends_with(" (deleted)")).then_some(s)
    }

    /// The source-relative path of `name` in directory `dir`.
    fn rel_in(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Option<String> {
        let dir = self.rel_of(dir).or_else(|| {
            backing::fd_path(dir)
                .filter(|p| p == &self.source)
                .map(|_| String::new())
        })?;
        let name = std::str::from_utf8(name.as_bytes()).ok()?;
        Some(if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        })
    }

    /// Makes `path` free for `file_id` in the catalog: a row of another file that still
    /// holds it (a file deleted or moved without the mount) is parked aside.
    pub fn claim_path(&self, file_id: &str, path: &str) {
        if let Ok(Some(other)) = self.catalog.file_by_path(path) {
            if other.file_id != file_id {
                let park = format!(".coldtier-moving/{}", other.file_id);
                tracing::warn!(path, other = %other.file_id, "catalog: path held by another file's row; parking it");
                let _ = self.catalog.rename_path(&other.file_id, &park);
            }
        }
    }

    /// Records `action` on `row` (state, events) in the catalog. The catalog follows the
    /// files: if its view refuses the action, the action is recorded anyway, with a warning.
    pub fn apply(
        &self,
        row: &mut FileRow,
        action: Action,
        detail: serde_json::Value,
    ) -> Result<(), CatalogError> {
        self.apply_with(row, action, detail, true)
    }

    /// [`Tiering::apply`]; `durable` false for a step a durable record follows shortly.
    pub fn apply_with(
        &self,
        row: &mut FileRow,
        action: Action,
        detail: serde_json::Value,
        durable: bool,
    ) -> Result<(), CatalogError> {
        self.apply_all(row, &[(action, detail)], durable)
    }

    /// Records several actions on `row`, in order, in one catalog transaction (a row
    /// removed by one of them is removed in a transaction of its own, after the others).
    pub fn apply_all(
        &self,
        row: &mut FileRow,
        steps: &[(Action, serde_json::Value)],
        durable: bool,
    ) -> Result<(), CatalogError> {
        self.apply_after(Vec::new(), row, steps, durable)
    }

    /// [`Tiering::apply_all`], after `prior` (transitions already worked out, such as a
    /// copy's COPIED and VERIFIED) in the same transaction.
    pub fn apply_after(
        &self,
        prior: Vec<Transition>,
        row: &mut FileRow,
        steps: &[(Action, serde_json::Value)],
        durable: bool,
    ) -> Result<(), CatalogError> {
        let mut items = prior;
        for (action, detail) in steps {
            let action = *action;
            let (next, events, pinned) = match state::transition(row.state, row.pinned, action) {
                Ok(t) => (t.next, t.events, t.pinned),
                Err(e) => {
                    tracing::warn!(file_id = %row.file_id, path = %row.path,
                        "catalog out of step with the file ({e}); recording what happened");
                    let (n, ev) = forced(action);
                    let pinned = match action {
                        Action::Pin => true,
                        Action::Unpin => false,
                        _ => row.pinned,
                    };
                    (n, ev, pinned)
                }
            };
            match next {
                None => {
                    if !items.is_empty() {
                        self.catalog
                            .transition_batch_with(&std::mem::take(&mut items), durable)?;
                    }
                    if self.catalog.file_by_id(&row.file_id)?.is_some() {
                        self.catalog.delete_file(&row.file_id, detail.clone())?;
                    }
                }
                Some(s) => {
                    row.state = s;
                    row.pinned = pinned;
                    for kind in events {
                        items.push((row.clone(), kind, detail.clone()));
                    }
                }
            }
        }
        if !items.is_empty() {
            self.catalog.transition_batch_with(&items, durable)?;
        }
        Ok(())
    }

    /// Sets the object's state tag, in the background (the tagger), best effort.
    pub fn tag_later(&self, key: String, version: Option<String>, state: &'static str) {
        if self.store_opt().is_some() {
            let _ = self.tags.send((key, version, state));
        }
    }

    /// The catalog row of a file with record `rec`; rebuilt from the record if the catalog
    /// lost it.
    pub fn row_for(&self, rec: &StubRecord, fd: BorrowedFd<'_>, state: FileState) -> FileRow {
        match self.catalog.file_by_id(&rec.file_id) {
            Ok(Some(mut row)) => {
                if let Some(p) = self.rel_of(fd) {
                    row.path = p;
                }
                row
            }
            other => {
                if let Err(e) = other {
                    tracing::error!("catalog: {e}");
                }
                let mut row = FileRow::new(
                    rec.file_id.clone(),
                    self.rel_of(fd)
                        .unwrap_or_else(|| format!(".coldtier-unknown/{}", rec.file_id)),
                );
                fill_from_record(&mut row, rec);
                row.state = state;
                row
            }
        }
    }

    /// Supersedes a premigrated file's copy (its content is about to change): drops the
    /// copy record and records SUPERSEDED. Called with the file's gate held.
    pub(crate) fn supersede(
        &self,
        fd: BorrowedFd<'_>,
        rec: &StubRecord,
        action: Action,
        why: &str,
    ) -> SysResult<()> {
        marks::remove(fd, marks::COPY)?;
        marks::remove(fd, marks::STUB)?;
        let mut row = self.row_for(rec, fd, FileState::Premigrated);
        let detail = json!({
            "object_key": rec.object_key,
            "version_id": rec.version_id,
            "reason": why,
        });
        row.object_key = None;
        row.version_id = None;
        row.checksum = None;
        row.checksum_algo = None;
        row.md5 = None;
        row.storage_class = None;
        if let Err(e) = self.apply(&mut row, action, detail) {
            tracing::error!(path = %row.path, "catalog: cannot record SUPERSEDED: {e}");
        }
        self.tag_later(rec.object_key.clone(), rec.version_id.clone(), "superseded");
        Ok(())
    }

    /// O_TRUNC (or truncate to 0) of a stub: the old content is not needed.
    fn truncate_stub(&self, fd: BorrowedFd<'_>, rec: &StubRecord) -> SysResult<()> {
        let w = backing::reopen(fd, libc::O_RDWR)?;
        backing::ftruncate(w.as_fd(), 0)?;
        self.supersede(w.as_fd(), rec, Action::TruncateToZeroOfStub, "truncated")?;
        backing::fsync(w.as_fd(), false)
    }

    /// Whether the file open as `fd` is being recalled now (its catalog row may say
    /// `stub` until the recall ends: see `recall_steps`).
    pub(crate) fn recall_in_flight(&self, fd: BorrowedFd<'_>) -> bool {
        if self.recalls.lock().is_empty() {
            return false;
        }
        backing::stat_fd(fd).is_ok_and(|st| self.recalls.lock().contains_key(&self.node_id(&st)))
    }

    fn in_flight(&self, ino: u64) -> Option<Waiter> {
        let rx = self.recalls.lock().get(&ino).cloned()?;
        Some(self.waiter(rx))
    }

    /// What an open waits on: the recall's outcome, for at most `recall.timeout`; past
    /// it the open fails with `EAGAIN` and the recall goes on (a later open joins it).
    fn waiter(&self, rx: watch::Receiver<RecallResult>) -> Waiter {
        let rt = self.rt.clone();
        let limit = Some(self.settings().recall.timeout).filter(|d| !d.is_zero());
        Box::new(move || {
            let mut rx = rx;
            rt.block_on(async move {
                let outcome = rx.wait_for(|v| v.is_some());
                let waited = match limit {
                    None => outcome.await,
                    Some(d) => match tokio::time::timeout(d, outcome).await {
                        Ok(r) => r,
                        Err(_) => {
                            crate::tier::metrics::RECALLS_OPEN_TIMEOUT.inc();
                            tracing::warn!(
                                secs = d.as_secs_f64(),
                                "an open gave up waiting for a recall (recall.timeout): EAGAIN; the recall goes on"
                            );
                            return Err(Errno(libc::EAGAIN));
                        }
                    },
                };
                match waited {
                    Ok(v) => (*v).unwrap_or(Err(libc::EIO)).map_err(Errno),
                    Err(_) => Err(Errno(libc::EIO)),
                }
            })
        })
    }

    /// Starts the recall of stub `node` (or joins the one in flight).
    pub(crate) fn recall_rx(
        &self,
        node: u64,
        fd: OwnedFd,
        rec: StubRecord,
    ) -> watch::Receiver<RecallResult> {
        let mut m = self.recalls.lock();
        if let Some(rx) = m.get(&node) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        m.insert(node, rx.clone());
        let me = self.arc();
        let rt = self.rt.clone();
        // A blocking thread of its own: the recall's fsyncs, xattrs and catalog writes
        // block, and concurrent recalls must not queue behind the runtime's workers.
        self.rt.spawn_blocking(move || {
            let r = rt.block_on(me.recall(node, File::from(fd), rec));
            me.recalls.lock().remove(&node);
            let _ = tx.send(Some(r.map_err(|e| e.errno)));
        });
        rx
    }

    /// Recalls the stub open as `fd` (any mode; reopened for writing) and waits for it.
    pub async fn recall_and_wait(
        &self,
        node: u64,
        fd: BorrowedFd<'_>,
        rec: StubRecord,
    ) -> Result<(), i32> {
        let w = backing::reopen(fd, libc::O_RDWR).map_err(|e| e.0)?;
        let mut rx = self.recall_rx(node, w, rec);
        let r = match rx.wait_for(|v| v.is_some()).await {
            Ok(v) => (*v).unwrap_or(Err(libc::EIO)),
            Err(_) => Err(libc::EIO),
        };
        r
    }

    /// The recall: GET into the same backing inode, fsync, checksum, then the switch from
    /// stub to premigrated under the gate. A failure leaves the stub (empty, times back).
    async fn recall(&self, node: u64, file: File, rec: StubRecord) -> Result<(), StepError> {
        let t0 = Instant::now();
        let _in_flight = crate::tier::metrics::RECALLS_IN_FLIGHT.track();
        let mut row = self.row_for(&rec, file.as_fd(), FileState::Stub);
        let mut start_owed = false;
        let result = self
            .recall_steps(node, &file, &rec, &mut row, &mut start_owed)
            .await;
        match &result {
            Ok(()) => {
                tracing::info!(path = %row.path, bytes = rec.size, ms = t0.elapsed().as_millis() as u64, "recalled");
            }
            Err(e) if e.errno == libc::EAGAIN || e.errno == libc::ETIMEDOUT => {
                tracing::info!(path = %row.path, "recall waits for an archive restore: {e}");
            }
            Err(e) => {
                tracing::error!(path = %row.path, key = %rec.object_key, "recall failed: {e}");
                self.reset_stub(&file, &rec);
                let detail = json!({"object_key": rec.object_key, "error": e.message});
                let steps = after_owed_start(&mut start_owed, &rec, Action::RecallFailed, detail);
                if let Err(ce) = self.apply_all(&mut row, &steps, true) {
                    tracing::error!("catalog: cannot record RECALL_FAILED: {ce}");
                }
            }
        }
        crate::tier::metrics::recall_done(
            result.as_ref().map_err(|e| e.errno).copied(),
            rec.size,
            t0.elapsed(),
        );
        result
    }

    /// Puts a stub back as it was: no data, its times.
    fn reset_stub(&self, file: &File, rec: &StubRecord) {
        let _ = backing::ftruncate(file.as_fd(), 0);
        let _ = backing::utimens_fd(file.as_fd(), false, SetTime::Omit, split_ns(rec.mtime_ns));
    }

    async fn recall_steps(
        &self,
        node: u64,
        file: &File,
        rec: &StubRecord,
        row: &mut FileRow,
        start_owed: &mut bool,
    ) -> Result<(), StepError> {
        let store = self.store()?;
        let algo: ChecksumAlgo = rec
            .checksum_algo
            .parse()
            .map_err(|e: String| StepError::new(libc::EIO, e))?;
        let detail = start_detail(rec);
        let mut pending = row.state == FileState::RestorePending;
        if !pending {
            // A small object's recall takes one GET: its RECALL_STARTED is recorded with
            // its outcome, in one transaction (status shows `recalling` meanwhile from the
            // recalls in flight). A large one's is recorded now, so that a crash
            // mid-recall is put right (and its blocks freed) at the next start.
            if rec.size <= LATE_START_MAX {
                *start_owed = true;
            } else {
                self.apply_with(row, Action::RecallStart, detail.clone(), false)
                    .unwrap_or_else(|e| tracing::error!("catalog: {e}"));
            }
        }
        let mut deadline: Option<Instant> = None;
        loop {
            if pending {
                let meta = store
                    .head(&rec.object_key, rec.version_id.as_deref())
                    .await
                    .map_err(|e| {
                        StepError::new(libc::EIO, format!("HEAD {}: {e}", rec.object_key))
                    })?;
                if meta.restore.readable() {
                    self.apply_with(row, Action::RestoreReady, detail.clone(), false)
                        .unwrap_or_else(|e| tracing::error!("catalog: {e}"));
                    pending = false;
                    continue;
                }
                match self.settings().recall.on_archived {
                    OnArchived::Fail => {
                        self.spawn_poller(node, file, rec);
                        return Err(StepError::new(
                            libc::EAGAIN,
                            format!("{} is archived; a restore is in progress", rec.object_key),
                        ));
                    }
                    OnArchived::Wait => {
                        let d = *deadline.get_or_insert_with(|| {
                            Instant::now() + self.settings().recall.wait_timeout
                        });
                        let now = Instant::now();
                        if now >= d {
                            self.spawn_poller(node, file, rec);
                            return Err(StepError::new(
                                libc::ETIMEDOUT,
                                format!(
                                    "{} not restored within recall.wait_timeout",
                                    rec.object_key
                                ),
                            ));
                        }
                        tokio::time::sleep(self.settings().recall.poll_interval.min(d - now)).await;
                        continue;
                    }
                }
            }
            if backing::stat_fd(file.as_fd())?.size != 0 {
                backing::ftruncate(file.as_fd(), 0)?;
            }
            if rec.extents.is_some() {
                // A sparse file: its size first (all holes), then its data extents.
                backing::ftruncate(file.as_fd(), rec.size)?;
            }
            self.failpoint("recall-after-truncate");
            let got = store
                .get(GetRequest {
                    key: &rec.object_key,
                    version_id: rec.version_id.as_deref(),
                    dest: Some(file),
                    expected_size: rec.object_size(),
                    checksum: algo,
                    extents: rec.extents.as_ref(),
                })
                .await;
            match got {
                Err(e) if e.is(StoreErrorKind::InvalidObjectState) => {
                    let tier = self.settings().recall.restore_tier;
                    let outcome = store
                        .restore(
                            &rec.object_key,
                            rec.version_id.as_deref(),
                            self.settings().recall.restore_days,
                            tier,
                        )
                        .await
                        .map_err(|e| {
                            StepError::new(
                                libc::EIO,
                                format!("RestoreObject {}: {e}", rec.object_key),
                            )
                        })?;
                    let d = json!({
                        "object_key": rec.object_key,
                        "tier": self.settings().recall.restore_tier.as_str(),
                        "days": self.settings().recall.restore_days,
                        "outcome": format!("{outcome:?}"),
                    });
                    let steps = after_owed_start(start_owed, rec, Action::RestoreRequested, d);
                    self.apply_all(row, &steps, true)
                        .unwrap_or_else(|e| tracing::error!("catalog: {e}"));
                    pending = true;
                    continue;
                }
                Err(e) => {
                    // A full disk (or quota) reaches the reader as such; the stub stays.
                    let errno = match e.errno {
                        Some(n @ (libc::ENOSPC | libc::EDQUOT)) => n,
                        _ => libc::EIO,
                    };
                    return Err(StepError::new(
                        errno,
                        format!("GET {}: {e}", rec.object_key),
                    ));
                }
                Ok(got) => {
                    backing::fsync(file.as_fd(), false)?;
                    self.failpoint("recall-after-data");
                    if got.checksum.algo != algo || got.checksum.base64() != rec.checksum {
                        return Err(StepError::new(
                            libc::EIO,
                            format!(
                                "checksum mismatch: {} read back as {}, the stub record says {}:{}",
                                rec.object_key, got.checksum, rec.checksum_algo, rec.checksum
                            ),
                        ));
                    }
                    break;
                }
            }
        }
        // The switch: times back, then copy record, then the stub record goes. The data is
        // on disk already; the switch itself needs no fsync: lost to a power cut, the file
        // is a stub again (its data is recalled again), never a file with missing data.
        backing::utimens_fd(file.as_fd(), false, SetTime::Now, split_ns(rec.mtime_ns))?;
        {
            let _held = self.gate.lock(node);
            marks::set_record(file.as_fd(), marks::COPY, rec)?;
            self.failpoint("recall-after-premig-xattr");
            marks::remove(file.as_fd(), marks::STUB)?;
        }
        self.reset_mark(node);
        let st = backing::stat_fd(file.as_fd())?;
        row.ctime_ns = ns_of(st.ctime);
        row.mtime_ns = ns_of(st.mtime);
        row.size = st.size;
        row.ino = st.ino;
        // Lazy: the file's records are the truth and the data is on disk. Should a power
        // cut take this commit, the row says `recalling` with no stub record on the file,
        // and `resume` records RECALLED at the next start.
        let steps = after_owed_start(start_owed, rec, Action::RecallDone, detail);
        self.apply_all(row, &steps, false)
            .unwrap_or_else(|e| tracing::error!("catalog: cannot record RECALLED: {e}"));
        Ok(())
    }

    /// Polls a pending restore in the background and recalls the file once it is ready
    /// (one poller per file: [`super::background::RestorePoller`]).
    fn spawn_poller(&self, node: u64, file: &File, rec: &StubRecord) {
        if !self.pollers.lock().insert(rec.file_id.clone()) {
            return;
        }
        let Ok(fd) = file.try_clone() else {
            self.pollers.lock().remove(&rec.file_id);
            return;
        };
        self.workers.spawn(
            super::background::RestorePoller {
                t: self.arc(),
                node,
                file: fd,
                rec: rec.clone(),
                polls: 0,
                last: "waiting for the first poll".into(),
            },
            false,
        );
    }

    /// A restore poller ended (done, or stopped with the daemon).
    pub(crate) fn poller_gone(&self, file_id: &str) {
        self.pollers.lock().remove(file_id);
    }

    /// At start: the uploads a crash interrupted are resolved. An upload whose file's
    /// records name its object reached its copy record: the catalog records the copy
    /// (VERIFIED, and STUBBED if the file is a stub by now). Any other is given up: a
    /// FAILED event names the object (which may or may not exist) for gc to delete after
    /// the retention. Either event ends the intent.
    pub fn resolve_uploads(&self) {
        let open = match self.catalog.open_uploads() {
            Ok(u) => u,
            Err(e) => return tracing::error!("catalog: {e}"),
        };
        for u in open {
            let file = backing::open_beneath(
                self.root(),
                Path::new(&u.path),
                libc::O_PATH | libc::O_NOFOLLOW,
            )
            .ok();
            let rec = |mark| {
                file.as_ref()
                    .and_then(|f| marks::record(f.as_fd(), mark).ok().flatten())
                    .filter(|r: &StubRecord| r.object_key == u.object_key)
            };
            let (copy, stub) = (rec(marks::COPY), rec(marks::STUB));
            let note = json!({
                "object_key": u.object_key,
                "note": "the copy was completed before the daemon stopped",
            });
            let recorded = match (stub, copy, &file) {
                (Some(r), _, Some(f)) => {
                    let mut row = self.row_for(&r, f.as_fd(), FileState::Premigrated);
                    let mut d = note.clone();
                    d["version_id"] = json!(r.version_id);
                    self.apply_all(
                        &mut row,
                        &[(Action::CopyVerified, d), (Action::Stub, json!({"object_key": r.object_key}))],
                        true,
                    )
                }
                (None, Some(r), Some(f)) => {
                    let mut row = self.row_for(&r, f.as_fd(), FileState::Resident);
                    let mut d = note.clone();
                    d["version_id"] = json!(r.version_id);
                    self.apply(&mut row, Action::CopyVerified, d)
                }
                _ => self
                    .catalog
                    .append_event(
                        Some(&u.file_id),
                        Some(&u.path),
                        EventKind::Failed,
                        json!({
                            "object_key": u.object_key,
                            "version_id": null,
                            "error": "the daemon stopped during the copy: the object, if any, is discarded",
                        }),
                    )
                    .map(drop),
            };
            match recorded {
                Ok(()) => {
                    tracing::info!(key = %u.object_key, path = %u.path, "resolved an upload the daemon was doing when it stopped")
                }
                Err(e) => {
                    tracing::error!(key = %u.object_key, "catalog: cannot resolve an interrupted upload: {e}")
                }
            }
        }
    }

    /// At start: pending restores get their pollers again; rows left `recalling` by a
    /// crash are put back in line with their files.
    pub fn resume(&self) {
        self.resolve_uploads();
        for state in [FileState::RestorePending, FileState::Recalling] {
            let rows = match self.catalog.files_by_state(state, usize::MAX) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("catalog: {e}");
                    continue;
                }
            };
            for mut row in rows {
                let Ok(fd) = backing::open_beneath(
                    self.root(),
                    Path::new(&row.path),
                    libc::O_RDWR | libc::O_NOFOLLOW,
                ) else {
                    continue;
                };
                let file = File::from(fd);
                let stub = marks::record(file.as_fd(), marks::STUB).ok().flatten();
                match (state, stub) {
                    (FileState::RestorePending, Some(rec)) => {
                        if let Ok(st) = backing::stat_fd(file.as_fd()) {
                            self.spawn_poller(self.node_id(&st), &file, &rec);
                        }
                    }
                    (FileState::Recalling, Some(rec)) => {
                        self.reset_stub(&file, &rec);
                        let d = json!({"error": "the daemon stopped during the recall"});
                        let _ = self.apply(&mut row, Action::RecallFailed, d);
                    }
                    (FileState::Recalling, None) => {
                        let d = json!({"note": "recall completed before the daemon stopped"});
                        let _ = self.apply(&mut row, Action::RecallDone, d);
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Tiering {
    fn gate_writers(&self, held: &crate::fs::gate::Held<'_>) -> u32 {
        held.opens().writers
    }

    /// Whether premigrated file `file` still holds the content its copy has: `expect` is
    /// the (size, mtime, ctime) it had with its copy record. Unchanged: those as they are
    /// now (`Some`). Same size, other times (touched, renamed, chmod, xattrs, or written
    /// and put back to the same size): the file is read and hashed, and if its checksum
    /// is the copy's, the times it had while it was read are the new ones to expect (and
    /// the catalog row learns them). Another size, or other content: `None`.
    pub fn copy_still_good(
        &self,
        file: &File,
        rec: &StubRecord,
        expect: (u64, i64, i64),
    ) -> Result<Option<(u64, i64, i64)>, StepError> {
        let times = |st: &Stat| (st.size, ns_of(st.mtime), ns_of(st.ctime));
        let before = backing::stat_fd(file.as_fd())?;
        if times(&before) == expect {
            return Ok(Some(expect));
        }
        if before.size != rec.size || before.size != expect.0 {
            return Ok(None);
        }
        let same = content_matches(file, rec)?;
        let after = backing::stat_fd(file.as_fd())?;
        if times(&after) != times(&before) {
            // Changing while it was read: not proven either way; the caller treats it
            // as changed.
            return Ok(None);
        }
        if !same {
            return Ok(None);
        }
        let now = times(&before);
        if let Err(e) = self.catalog.rebaseline(&rec.file_id, now.1, now.2) {
            tracing::warn!(file_id = %rec.file_id, "catalog: {e}");
        }
        Ok(Some(now))
    }
}

/// The names in directory `dir` whose inode number is `ino` (from the directory entries).
fn same_dir_names(dir: BorrowedFd<'_>, ino: u64) -> Vec<std::ffi::OsString> {
    let Ok(d) = backing::open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = backing::for_each_dirent(d.as_fd(), &mut vec![0u8; 64 * 1024], |r| {
        if r.ino == ino && r.kind != libc::DT_DIR {
            out.push(r.name.to_os_string());
        }
    });
    out
}

/// Whether the data of `file` (open for reading) has the checksum its record names (the
/// copy's): reads and hashes the whole file.
pub fn content_matches(file: &File, rec: &StubRecord) -> Result<bool, StepError> {
    let algo: ChecksumAlgo = rec
        .checksum_algo
        .parse()
        .map_err(|e: String| StepError::new(libc::EIO, e))?;
    let size = backing::stat_fd(file.as_fd())?.size;
    if size != rec.size {
        return Ok(false);
    }
    if let Some(e) = &rec.extents {
        // Data where the copy has a hole is a change (even zeros written there: the
        // content would be the same, but the check stays simple and safe).
        let now = backing::data_extents(file.as_fd(), size)?;
        let inside = |&(o, l): &(u64, u64)| e.0.iter().any(|&(eo, el)| o >= eo && o + l <= eo + el);
        if !now.iter().all(inside) {
            return Ok(false);
        }
    }
    let sum = crate::store::checksum_mapped(file, rec.extents.as_ref(), rec.object_size(), algo)
        .map_err(|e| StepError::new(e.errno.unwrap_or(libc::EIO), e.message))?;
    Ok(sum.algo == algo && sum.base64() == rec.checksum)
}

/// A file's row as one event leaves it, the event, and its detail.
pub type Transition = (FileRow, EventKind, serde_json::Value);

/// Objects up to this size have their RECALL_STARTED recorded with the recall's outcome.
const LATE_START_MAX: u64 = 8 << 20;

/// The detail of a recall's events.
fn start_detail(rec: &StubRecord) -> serde_json::Value {
    json!({"object_key": rec.object_key, "version_id": rec.version_id, "bytes": rec.size})
}

/// `action` with `detail`, after the recall's RECALL_STARTED if that is still owed (which
/// it no longer is then).
fn after_owed_start(
    owed: &mut bool,
    rec: &StubRecord,
    action: Action,
    detail: serde_json::Value,
) -> Vec<(Action, serde_json::Value)> {
    let mut steps = Vec::with_capacity(2);
    if std::mem::take(owed) {
        steps.push((Action::RecallStart, start_detail(rec)));
    }
    steps.push((action, detail));
    steps
}

/// Copies a record's object fields into a row.
pub fn fill_from_record(row: &mut FileRow, rec: &StubRecord) {
    row.size = rec.size;
    row.mtime_ns = rec.mtime_ns;
    row.ctime_ns = rec.ctime_ns;
    row.ino = rec.ino;
    row.object_key = Some(rec.object_key.clone());
    row.version_id = rec.version_id.clone();
    row.checksum_algo = Some(rec.checksum_algo.clone());
    row.checksum = Some(rec.checksum.clone());
    row.md5 = rec.md5.clone();
    row.storage_class = Some(rec.storage_class.clone());
}

impl TierHooks for Tiering {
    fn stub_view(&self, fd: BorrowedFd<'_>) -> SysResult<Option<(u64, i64)>> {
        Ok(marks::record(fd, marks::STUB)?.map(|r| (r.size, r.mtime_ns)))
    }

    fn stub_layout(&self, fd: BorrowedFd<'_>) -> SysResult<Option<crate::fs::overlay::StubLayout>> {
        Ok(marks::record(fd, marks::STUB)?.map(|r| (r.size, r.extents.map(|e| e.0))))
    }

    fn times_set(&self, fd: BorrowedFd<'_>) {
        let Ok(Some(mut rec)) = marks::record(fd, marks::STUB) else {
            return;
        };
        let Ok(st) = backing::stat_fd(fd) else { return };
        if rec.mtime_ns != ns_of(st.mtime) {
            rec.set_mtime(ns_of(st.mtime));
            if let Err(e) = marks::set_record(fd, marks::STUB, &rec) {
                tracing::error!(file_id = %rec.file_id, "cannot keep the new mtime in the stub record: {e:?}");
            }
        }
    }

    fn before_open(&self, ino: u64, fd: BorrowedFd<'_>, flags: i32) -> SysResult<Go> {
        if let Some(w) = self.in_flight(ino) {
            return Ok(Go::Wait(w));
        }
        let wants_write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if let Some(rec) = marks::record(fd, marks::STUB)? {
            if wants_write && flags & libc::O_TRUNC != 0 {
                self.truncate_stub(fd, &rec)?;
                return Ok(Go::Proceed);
            }
            // An open for writing fetches nothing until data is written or read (`touch`
            // opens for writing and only sets times).
            if wants_write {
                return Ok(Go::Lazy);
            }
            let w = backing::reopen(fd, libc::O_RDWR)?;
            let rx = self.recall_rx(ino, w, rec);
            return Ok(Go::Wait(self.waiter(rx)));
        }
        // A premigrated file opened for writing keeps its copy: only a change of its data
        // gives it up, found when the last writer closes (`writer_closed`) or, at the
        // latest, by the stub step.
        Ok(Go::Proceed)
    }

    fn before_data(&self, ino: u64, fd: BorrowedFd<'_>) -> SysResult<Go> {
        if let Some(w) = self.in_flight(ino) {
            return Ok(Go::Wait(w));
        }
        match marks::record(fd, marks::STUB)? {
            Some(rec) => {
                let w = backing::reopen(fd, libc::O_RDWR)?;
                let rx = self.recall_rx(ino, w, rec);
                Ok(Go::Wait(self.waiter(rx)))
            }
            None => Ok(Go::Proceed),
        }
    }

    fn writer_closed(&self, ino: u64, fd: BorrowedFd<'_>) {
        let Ok(Some(rec)) = marks::record(fd, marks::COPY) else {
            return;
        };
        let Ok(st) = backing::stat_fd(fd) else { return };
        if st.size != rec.size {
            if let Err(e) = self.supersede(fd, &rec, Action::WriteOrTruncate, "written") {
                tracing::error!(file_id = %rec.file_id, "cannot give up a changed file's copy: {e:?}");
            }
            self.reset_mark(ino);
            return;
        }
        let row = self.row_for(&rec, fd, FileState::Premigrated);
        if (ns_of(st.mtime), ns_of(st.ctime)) == (row.mtime_ns, row.ctime_ns) {
            return;
        }
        // Same size, new times: written, or only touched. Its content decides, read in
        // the background (the close must not wait for it).
        let Ok(file) = backing::reopen(fd, libc::O_RDONLY) else {
            return;
        };
        let me = self.arc();
        let expect = (row.size, row.mtime_ns, row.ctime_ns);
        self.rt.spawn_blocking(move || {
            let file = File::from(file);
            match me.copy_still_good(&file, &rec, expect) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let _held = me.gate.lock(ino);
                    // Re-checked under the gate: still no writer, still that record.
                    if me.gate_writers(&_held) == 0
                        && marks::record(file.as_fd(), marks::COPY)
                            .ok()
                            .flatten()
                            .is_some_and(|r| r.object_key == rec.object_key)
                    {
                        if let Err(e) = me.supersede(
                            file.as_fd(),
                            &rec,
                            Action::WriteOrTruncate,
                            "written",
                        ) {
                            tracing::error!(file_id = %rec.file_id, "cannot give up a changed file's copy: {e:?}");
                        }
                        me.reset_mark(ino);
                    }
                }
                Err(e) => tracing::warn!(file_id = %rec.file_id, "cannot check a written file against its copy: {e}"),
            }
        });
    }

    fn before_truncate(&self, ino: u64, fd: BorrowedFd<'_>, size: u64) -> SysResult<Go> {
        if let Some(w) = self.in_flight(ino) {
            return Ok(Go::Wait(w));
        }
        if let Some(rec) = marks::record(fd, marks::STUB)? {
            if size == 0 {
                self.truncate_stub(fd, &rec)?;
                return Ok(Go::Proceed);
            }
            let w = backing::reopen(fd, libc::O_RDWR)?;
            let rx = self.recall_rx(ino, w, rec);
            return Ok(Go::Wait(self.waiter(rx)));
        }
        if let Some(rec) = marks::record(fd, marks::COPY)? {
            // A truncate to the size the file has changes no data.
            if backing::stat_fd(fd)?.size != size {
                self.supersede(fd, &rec, Action::WriteOrTruncate, "truncated")?;
            }
        }
        Ok(Go::Proceed)
    }

    fn tracked(&self, fd: BorrowedFd<'_>) -> Option<String> {
        marks::file_id(fd).ok().flatten()
    }

    fn unlinked(&self, file_id: &str) {
        let mut row = match self.catalog.file_by_id(file_id) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return tracing::error!("catalog: {e}"),
        };
        let detail = json!({"object_key": row.object_key, "version_id": row.version_id});
        let obj = row.object_key.clone().zip(Some(row.version_id.clone()));
        if let Err(e) = self.apply(&mut row, Action::Delete, detail) {
            tracing::error!(path = %row.path, "catalog: cannot record DELETED: {e}");
        }
        if let Some((key, version)) = obj {
            self.tag_later(key, version, "deleted");
        }
    }

    fn linked(&self, file_id: &str, newdir: BorrowedFd<'_>, newname: &OsStr) {
        let Some(rel) = self.rel_in(newdir, newname) else {
            return;
        };
        if let Err(e) = self.catalog.append_event(
            Some(file_id),
            Some(&rel),
            EventKind::Linked,
            json!({"path": rel}),
        ) {
            tracing::error!("catalog: cannot record LINKED: {e}");
        }
    }

    fn name_removed(&self, file_id: &str, dir: BorrowedFd<'_>, name: &OsStr) {
        let Some(removed) = self.rel_in(dir, name) else {
            return;
        };
        let row = match self.catalog.file_by_id(file_id) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return tracing::error!("catalog: {e}"),
        };
        if row.path != removed {
            return; // the catalog names another of its names already
        }
        // Another name: one it was linked under through the mount, else one in the same
        // directory, else (in the background) one anywhere in the tree.
        let is_it = |rel: &str| {
            backing::open_beneath(self.root(), Path::new(rel), libc::O_PATH | libc::O_NOFOLLOW)
                .ok()
                .is_some_and(|fd| {
                    marks::file_id(fd.as_fd()).ok().flatten().as_deref() == Some(file_id)
                })
        };
        let linked = self
            .catalog
            .history(file_id)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .filter(|e| e.kind == EventKind::Linked)
            .filter_map(|e| e.path)
            .filter(|p| *p != removed);
        let mut found: Option<String> = linked.into_iter().find(|p| is_it(p));
        if found.is_none() {
            found = same_dir_names(dir, row.ino)
                .into_iter()
                .filter_map(|n| self.rel_in(dir, &n))
                .find(|p| *p != removed && is_it(p));
        }
        match found {
            Some(p) => self.renamed_to(file_id, &p),
            None => {
                let me = self.arc();
                let id = file_id.to_string();
                self.rt.spawn_blocking(move || {
                    let mut hit: Option<String> = None;
                    let _ = me.walk(Path::new(""), &mut |rel, st, d, n| {
                        if hit.is_none() && st.ino == row.ino {
                            if let Ok(fd) = backing::open_path_at(d, n) {
                                if marks::file_id(fd.as_fd()).ok().flatten().as_deref() == Some(&id) {
                                    hit = rel.to_str().map(str::to_string);
                                }
                            }
                        }
                    });
                    match hit {
                        Some(p) => me.renamed_to(&id, &p),
                        None => tracing::warn!(file_id = %id, "a removed name's other names were not found"),
                    }
                });
            }
        }
    }

    fn dir_renamed(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        newdir: BorrowedFd<'_>,
        newname: &OsStr,
    ) {
        let (Some(old), Some(new)) = (self.rel_in(dir, name), self.rel_in(newdir, newname)) else {
            return;
        };
        match self.catalog.rename_prefix(&old, &new) {
            Ok(n) if n > 0 => tracing::debug!(old, new, files = n, "directory renamed"),
            Ok(_) => {}
            Err(e) => tracing::error!("catalog: cannot record the rename of {old} to {new}: {e}"),
        }
    }

    fn renamed(&self, file_id: &str, newdir: BorrowedFd<'_>, newname: &OsStr) {
        let Some(rel) = self.rel_in(newdir, newname) else {
            return;
        };
        self.renamed_to(file_id, &rel);
    }
}

impl Tiering {
    /// The catalog's path of tracked file `file_id` is `rel` now.
    fn renamed_to(&self, file_id: &str, rel: &str) {
        let rel = rel.to_string();
        match self.catalog.rename_path(file_id, &rel) {
            Ok(()) | Err(CatalogError::NoSuchFile(_)) => {}
            Err(CatalogError::PathInUse { .. }) => {
                // An exchange in flight (or a stale row): park the other row, then retry.
                self.claim_path(file_id, &rel);
                if let Err(e) = self.catalog.rename_path(file_id, &rel) {
                    tracing::error!("catalog: cannot record the rename to {rel}: {e}");
                }
            }
            Err(e) => tracing::error!("catalog: cannot record the rename to {rel}: {e}"),
        }
    }
}
