//! The engine's context: [`Tiering`], what one mount's tiering holds (the catalog, the
//! store, the settings in force, the backing root, the gate, the runner of background
//! workers), the small accessors every part uses, and [`StepError`]. The parts are
//! `record` (recording a change), `recall`, `hooks` (what the overlay tells the engine),
//! `recovery` (what a crash left), `migrate`, `gc`, `verify`.
//!
//! The xattrs on the backing file are the truth ([`super::marks`]); the catalog records
//! each change as an event, in the same order.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::config::Settings;
use crate::catalog::{Catalog, CatalogError};
use crate::fs::backing::{self, Errno, SetTime, Stat};
use crate::fs::gate::Gate;
use crate::fs::overlay::OverlayFs;
use crate::store::ObjectStore;

/// The first segment of every object key coldtier writes inside the store's prefix:
/// `data/<file id>/<content version>` (other segments are left for catalog backups).
pub const KEY_PREFIX: &str = crate::tier::stub::DATA_PREFIX;

/// What the tiering code needs of the mount.
pub trait MountView: Send + Sync {
    /// The tiering code changed the records of `ino`: drop the cached view.
    fn reset_tier_mark(&self, ino: u64);
    /// The node id (gate key) of backing object (dev, ino).
    fn node_id(&self, dev: u64, ino: u64) -> u64;
    /// An O_PATH fd of live node `ino`, if the kernel still holds it.
    fn node_fd(&self, ino: u64) -> Option<std::os::fd::OwnedFd>;
}

impl<B: Send + Sync + 'static> MountView for OverlayFs<B> {
    fn reset_tier_mark(&self, ino: u64) {
        OverlayFs::reset_tier_mark(self, ino)
    }
    fn node_id(&self, dev: u64, ino: u64) -> u64 {
        OverlayFs::node_id(self, dev, ino)
    }
    fn node_fd(&self, ino: u64) -> Option<std::os::fd::OwnedFd> {
        OverlayFs::node_fd(self, ino)
    }
}

pub(super) type RecallResult = Option<Result<(), i32>>;

/// The tiering side of one mount.
pub struct Tiering {
    pub(super) me: Weak<Tiering>,
    /// The settings in force (replaced by a reload: [`Tiering::set_settings`]).
    pub(super) settings: parking_lot::RwLock<Arc<Settings>>,
    /// What the store check at mount found, and whether tiering is paused.
    pub(super) store_state: StoreState,
    pub catalog: Arc<Catalog>,
    /// Last opens seen, not yet all in the catalog ([`super::usage`]).
    pub usage: super::usage::Usage,
    /// The store (replaced by a reload that changes its settings: [`Tiering::set_store`]).
    pub(super) store: parking_lot::RwLock<Option<Arc<dyn ObjectStore>>>,
    /// The `[[replica]]` targets, by name (opened at mount; fixed until the next).
    pub(super) replicas: parking_lot::RwLock<Vec<(String, Arc<dyn ObjectStore>)>>,
    /// Each replica's store check (whether its checksum word is proof), once per daemon.
    pub(super) replica_checks: Mutex<HashMap<String, bool>>,
    /// Replica targets whose server refused a server-side copy from the primary: copies to
    /// them are streamed through this host for the life of the daemon.
    pub(super) no_server_copy: Mutex<std::collections::HashSet<String>>,
    /// Objects a HEAD found as recorded a moment ago ([`Tiering::copy_still_there`]), and
    /// when: the members of one pack, stubbed from their copy records, ask once.
    pub(super) copies_seen: Mutex<HashMap<(String, Option<String>), std::time::Instant>>,
    /// Bumped by every reload of the config: the schedulers wait on it.
    pub(super) reloaded: tokio::sync::watch::Sender<u64>,
    /// The store's own key prefix (shown in full keys), "" for none.
    pub store_prefix: String,
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    pub(super) root: OwnedFd,
    pub(super) root_dev: u64,
    pub rt: tokio::runtime::Handle,
    pub(super) gate: Arc<Gate>,
    /// The mount (weak: the overlay holds the engine as its hooks, and no cycle keeps
    /// either alive after the other is gone).
    pub(super) mount: OnceLock<Weak<dyn MountView>>,
    pub(super) recalls: Mutex<HashMap<u64, watch::Receiver<RecallResult>>>,
    /// Reads of stubs: transient streams, deferred files, who starts recalls.
    pub(super) readers: super::readers::ReaderState,
    /// The recalls in flight that stream (their chunks readable as they land), by node.
    pub(super) streams: Mutex<HashMap<u64, Arc<super::stream::Stream>>>,
    /// Files with a restore poller (by file id): one each.
    pub(super) pollers: Mutex<HashSet<String>>,
    /// Archived packs whose restore a member's recall requested, and when (the other
    /// members wait on that one).
    pub(super) pack_restores: Mutex<HashMap<String, std::time::Instant>>,
    /// Pack spans a bulk recall fetched once for many members.
    pub(super) pack_spans: super::pack::PackCache,
    /// Catalog records a pack run owes its members, by file id, until it writes them
    /// together: any other record of one of those files writes them first
    /// ([`super::record::Owed`]).
    pub(super) owed: super::record::OwedMap,
    /// Pack spans read ahead by members' recalls, for the members after them.
    pub(super) pack_readahead: super::pack::Readahead,
    /// The runner of every background worker of this mount (`crate::jobs`, the tagger,
    /// the restore pollers).
    pub workers: Arc<crate::base::worker::Runner>,
    /// One-shot background checks in flight (a closed file compared with its copy, the
    /// search for a hard link's other names): [`Tiering::settle`] waits for them.
    pub(super) checks: (std::sync::atomic::AtomicUsize, tokio::sync::Notify),
    /// The tagger's queue.
    pub(super) tags: tokio::sync::mpsc::UnboundedSender<super::background::TagRequest>,
    /// gc acts as if now were this much later (`COLDTIER_TEST_GC_SKEW` seconds, read only
    /// in builds with the `testing` feature; zero otherwise).
    pub(super) gc_skew: Duration,
    pub(super) host: String,
    /// One policy run (or gc) at a time.
    pub(super) job_lock: tokio::sync::Mutex<()>,
    /// The job running now (a policy run or gc): its id, kind and cancel flag.
    pub(super) running: Mutex<Option<(i64, String, crate::base::cancel::Cancel)>>,
}

/// Unregisters the running job when dropped.
pub struct RunningJob<'a>(&'a Tiering);

impl Drop for RunningJob<'_> {
    fn drop(&mut self) {
        *self.0.running.lock() = None;
    }
}

pub(super) const VALIDATES_NO: u8 = 1;

pub(super) const VALIDATES_YES: u8 = 2;

/// The store as the daemon knows it.
#[derive(Debug, Default)]
pub struct StoreState {
    /// 0: not checked yet (copies are read back), 1: does not validate checksums,
    /// 2: validates them.
    pub(super) validates: std::sync::atomic::AtomicU8,
    pub(super) paused: std::sync::atomic::AtomicBool,
}

/// How a tiering step failed: the errno an application sees, and what to log.
#[derive(Debug, Clone)]
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
        crate::base::failpoint::arm_from_env();
        #[cfg(feature = "testing")]
        let gc_skew = std::env::var("COLDTIER_TEST_GC_SKEW")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or_default();
        #[cfg(not(feature = "testing"))]
        let gc_skew = Duration::ZERO;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let (tags, tag_rx) = tokio::sync::mpsc::unbounded_channel();
        let workers = crate::base::worker::Runner::new(rt.clone());
        let t = Arc::new_cyclic(|me| Tiering {
            me: me.clone(),
            settings: parking_lot::RwLock::new(Arc::new({
                apply_limits(&settings);
                settings
            })),
            store_state: StoreState::default(),
            reloaded: tokio::sync::watch::channel(0).0,
            catalog,
            usage: Default::default(),
            store: parking_lot::RwLock::new(store),
            replicas: Default::default(),
            replica_checks: Mutex::new(HashMap::new()),
            no_server_copy: Mutex::default(),
            copies_seen: Mutex::default(),
            store_prefix,
            source,
            mountpoint,
            root,
            root_dev,
            rt,
            gate,
            mount: OnceLock::new(),
            recalls: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            readers: Default::default(),
            pollers: Mutex::new(HashSet::new()),
            pack_restores: Mutex::new(HashMap::new()),
            pack_spans: Default::default(),
            owed: Default::default(),
            pack_readahead: Default::default(),
            workers,
            checks: (
                std::sync::atomic::AtomicUsize::new(0),
                tokio::sync::Notify::new(),
            ),
            tags,
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
        apply_limits(&settings);
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

    /// Puts the `[[replica]]` targets in force (at mount).
    pub fn set_replicas(&self, replicas: Vec<(String, Arc<dyn ObjectStore>)>) {
        *self.replicas.write() = replicas;
    }

    /// The replica target named `name`.
    pub fn replica(&self, name: &str) -> Option<Arc<dyn ObjectStore>> {
        self.replicas
            .read()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    /// The names of the replica targets, in config order.
    pub fn replica_names(&self) -> Vec<String> {
        self.replicas
            .read()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
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

    /// What the running job is (`migrate`, `gc`, `replicate NAME` ...), if one runs.
    pub fn running_kind(&self) -> Option<String> {
        self.running
            .lock()
            .as_ref()
            .map(|(_, kind, _)| kind.clone())
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
        let _ = self.mount.set(Arc::downgrade(&m));
    }

    pub(super) fn arc(&self) -> Arc<Tiering> {
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

    /// Runs `f` on a blocking thread as a one-shot background check that
    /// [`Tiering::settle`] waits for.
    pub(super) fn spawn_check(&self, f: impl FnOnce(Arc<Tiering>) + Send + 'static) {
        struct Done(Arc<Tiering>);
        impl Drop for Done {
            fn drop(&mut self) {
                let (n, notify) = &self.0.checks;
                if n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                    notify.notify_waiters();
                }
            }
        }
        self.checks
            .0
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let me = self.arc();
        self.rt.spawn_blocking(move || {
            let done = Done(me.clone());
            f(me);
            drop(done);
        });
    }

    /// Returns once no background check is in flight (`verify` starts with it, so that it
    /// never reports the moment between a check's xattr change and its catalog record).
    pub async fn settle(&self) {
        loop {
            let notified = self.checks.1.notified();
            if self.checks.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Writes the last opens noted since the last flush to the catalog (kept for the next
    /// flush if the catalog refuses them).
    pub fn flush_usage(&self) {
        let batch = self.usage.take();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.catalog.note_used(&batch) {
            tracing::warn!("catalog: cannot record last opens: {e}");
            self.usage.put_back(batch);
        }
    }

    /// A failpoint of a crash-sensitive step ([`crate::base::failpoint`]; nothing outside
    /// builds with the `testing` feature).
    pub fn failpoint(&self, name: &str) {
        crate::base::failpoint::hit(name);
    }

    pub fn node_id(&self, st: &Stat) -> u64 {
        match self.mount.get().and_then(Weak::upgrade) {
            Some(m) => m.node_id(st.dev, st.ino),
            None => st.ino,
        }
    }

    pub fn reset_mark(&self, node: u64) {
        if let Some(m) = self.mount.get().and_then(Weak::upgrade) {
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
    pub(super) fn rel_in(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Option<String> {
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
}

/// Puts `[limits]` in force: the store's bandwidth buckets (process-wide: one daemon serves
/// one mount).
fn apply_limits(s: &Settings) {
    crate::store::UPLOAD_BW.set_rate(s.limits.upload_bwlimit);
    crate::store::DOWNLOAD_BW.set_rate(s.limits.download_bwlimit);
}

/// A tiering engine over `dir/src` with a catalog in `dir` and `store`, on `rt`: for the
/// unit tests of its parts.
#[cfg(test)]
pub(crate) fn test_tiering(
    dir: &std::path::Path,
    store: Option<Arc<dyn ObjectStore>>,
    rt: &tokio::runtime::Runtime,
) -> Arc<Tiering> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let catalog = Arc::new(Catalog::open(dir.join("c.db")).unwrap());
    Tiering::new(
        Default::default(),
        catalog,
        store,
        String::new(),
        src.clone(),
        src.clone(),
        backing::open_dir_path(&src).unwrap(),
        rt.handle().clone(),
        Arc::new(crate::fs::gate::Gate::default()),
    )
    .unwrap()
}
