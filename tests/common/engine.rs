//! The tiering engine in-process, without FUSE and without an S3 server: the overlay
//! (`OverlayFs`, driven the way the FUSE adapter drives it) over a temp tree, the engine
//! with its hooks installed, the catalog, and the in-memory store (with its failure
//! injection) behind a wrapper that counts requests. A restart builds a new engine over
//! the same tree, catalog and store, as a new daemon would.
#![allow(dead_code)]

use coldtier::fs::privs::Requester;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coldtier::base::cancel::Cancel;
use coldtier::catalog::{Catalog, FileState};
use coldtier::fs::backing::{self, Errno};
use coldtier::fs::inodes::ROOT_INO;
use coldtier::fs::overlay::{Caller, OpenOutcome, OverlayFs, OverlayOptions};
use coldtier::store::{
    GetRequest, GetResult, ListEntry, MemoryStore, ObjectMeta, ObjectStore, PutRequest, PutResult,
    RestoreOutcome, RestoreTier, StorageClass, StoreFuture,
};
use coldtier::tier::config::{MigrateMode, Settings};
use coldtier::tier::context::Tiering;
use coldtier::tier::migrate::RunSummary;

/// Requests the engine sent to the store, by kind.
#[derive(Default)]
pub struct Counts {
    pub put: AtomicU64,
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub delete: AtomicU64,
    pub other: AtomicU64,
}

impl Counts {
    pub fn gets(&self) -> u64 {
        self.get.load(Ordering::SeqCst)
    }
    pub fn puts(&self) -> u64 {
        self.put.load(Ordering::SeqCst)
    }
}

/// The memory store, counting what reaches it.
pub struct Counted {
    pub inner: Arc<MemoryStore>,
    pub counts: Arc<Counts>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

impl ObjectStore for Counted {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put(&self, req: PutRequest) -> StoreFuture<'_, PutResult> {
        bump(&self.counts.put);
        self.inner.put(req)
    }
    fn head<'a>(&'a self, key: &'a str, v: Option<&'a str>) -> StoreFuture<'a, ObjectMeta> {
        bump(&self.counts.head);
        self.inner.head(key, v)
    }
    fn get<'a>(&'a self, req: GetRequest<'a>) -> StoreFuture<'a, GetResult> {
        bump(&self.counts.get);
        self.inner.get(req)
    }
    fn restore<'a>(
        &'a self,
        key: &'a str,
        v: Option<&'a str>,
        days: u32,
        tier: RestoreTier,
    ) -> StoreFuture<'a, RestoreOutcome> {
        bump(&self.counts.other);
        self.inner.restore(key, v, days, tier)
    }
    fn delete<'a>(&'a self, key: &'a str, v: Option<&'a str>) -> StoreFuture<'a, ()> {
        bump(&self.counts.delete);
        self.inner.delete(key, v)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ListEntry>> {
        bump(&self.counts.other);
        self.inner.list(prefix)
    }
    fn get_tags<'a>(
        &'a self,
        key: &'a str,
        v: Option<&'a str>,
    ) -> StoreFuture<'a, BTreeMap<String, String>> {
        bump(&self.counts.other);
        self.inner.get_tags(key, v)
    }
    fn set_tags<'a>(
        &'a self,
        key: &'a str,
        v: Option<&'a str>,
        tags: BTreeMap<String, String>,
    ) -> StoreFuture<'a, ()> {
        bump(&self.counts.other);
        self.inner.set_tags(key, v, tags)
    }
    fn validates_checksums<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        self.inner.validates_checksums(key)
    }
    fn purge<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        bump(&self.counts.delete);
        self.inner.purge(key)
    }
    fn set_storage_class<'a>(
        &'a self,
        key: &'a str,
        v: Option<&'a str>,
        class: StorageClass,
    ) -> StoreFuture<'a, Option<String>> {
        bump(&self.counts.other);
        self.inner.set_storage_class(key, v, class)
    }
}

/// Settings that tier every file at once: no age, no minimum size, no schedule.
pub fn eager_settings() -> Settings {
    let mut s = Settings::default();
    s.policy.atime_older_than = Duration::ZERO;
    s.policy.min_size = 0;
    s.policy.schedule = None;
    s.policy.mode = MigrateMode::Stub;
    s.catalog.retention = Duration::ZERO;
    s.catalog.backup_schedule = None;
    s.recall.timeout = Duration::from_secs(120);
    s
}

fn root_caller() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        pid: 0,
        umask: 0o022,
    }
}

/// One engine over `src` with the catalog at `db`.
pub struct Engine {
    pub src: PathBuf,
    pub db: PathBuf,
    pub store: Arc<MemoryStore>,
    pub counts: Arc<Counts>,
    pub fs: Arc<OverlayFs<()>>,
    pub t: Arc<Tiering>,
    rt: Option<tokio::runtime::Runtime>,
}

/// The temp directories of an engine's tree and catalog, kept across restarts.
pub struct Dirs {
    pub dir: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("src")).unwrap();
        Dirs { dir }
    }
    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("catalog.db")
    }
}

impl Engine {
    /// Starts an engine (as the daemon's `start_tiering` does, without the mount).
    pub fn start(dirs: &Dirs, store: Arc<MemoryStore>, settings: Settings) -> Engine {
        Engine::start_with_replicas(dirs, store, settings, Vec::new())
    }

    /// [`Engine::start`] with `replicas` as its `[[replica]]` targets (set before it
    /// resumes, as the daemon sets them).
    pub fn start_with_replicas(
        dirs: &Dirs,
        store: Arc<MemoryStore>,
        settings: Settings,
        replicas: Vec<(String, Arc<dyn ObjectStore>)>,
    ) -> Engine {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let src = dirs.src();
        let catalog = Arc::new(Catalog::open(dirs.db()).expect("catalog"));
        let counts = Arc::new(Counts::default());
        let counted: Arc<dyn ObjectStore> = Arc::new(Counted {
            inner: store.clone(),
            counts: counts.clone(),
        });
        let fs = Arc::new(
            OverlayFs::new(
                backing::open_dir_path(&src).unwrap(),
                OverlayOptions {
                    passthrough: false,
                    inode_fds: 0,
                    no_xattrs_ttl: Duration::ZERO,
                    attr_fresh: Duration::ZERO,
                },
            )
            .unwrap(),
        );
        let t = Tiering::new(
            settings,
            catalog,
            Some(counted),
            String::new(),
            src.clone(),
            src.clone(),
            backing::open_dir_path(&src).unwrap(),
            rt.handle().clone(),
            fs.gate(),
        )
        .expect("engine");
        t.set_replicas(replicas);
        t.set_mount(fs.clone());
        fs.set_tier_hooks(t.clone());
        t.resume();
        Engine {
            src,
            db: dirs.db(),
            store,
            counts,
            fs,
            t,
            rt: Some(rt),
        }
    }

    /// Stops this engine as a daemon stops (its workers and runtime end); the tree, the
    /// catalog and the store stay for the next.
    pub fn stop(mut self) {
        self.t.workers.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }

    /// The inode of `rel` (looked up from the root, as the kernel would).
    pub fn lookup(&self, rel: &str) -> Result<u64, Errno> {
        let mut ino = ROOT_INO;
        for part in Path::new(rel).iter() {
            ino = self.fs.lookup(ino, part)?.ino;
        }
        Ok(ino)
    }

    fn parent_and_name<'a>(&self, rel: &'a str) -> (u64, &'a OsStr) {
        let p = Path::new(rel);
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => self.lookup(d.to_str().unwrap()).unwrap(),
            _ => ROOT_INO,
        };
        (parent, p.file_name().unwrap())
    }

    /// Opens `rel` with `flags`, waiting for a recall when the overlay says so.
    pub fn open(&self, rel: &str, flags: i32) -> Result<u64, Errno> {
        let ino = self.lookup(rel)?;
        loop {
            match self.fs.open(
                ino,
                flags,
                coldtier::fs::privs::Requester::DAEMON,
                |_, _| Ok(()),
            )? {
                OpenOutcome::Opened(o) => return Ok(o.fh),
                OpenOutcome::Wait(w) => w()?,
            }
        }
    }

    /// Before a data operation on `fh`: brings the data back if the handle was opened
    /// lazily (the FUSE adapter's `with_data`).
    fn data(&self, fh: u64) -> Result<(), Errno> {
        while let Some(w) = self.fs.needs_data(fh)? {
            w()?;
        }
        Ok(())
    }

    /// Reads the whole file, through the overlay.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, Errno> {
        let fh = self.open(rel, libc::O_RDONLY)?;
        let r = (|| {
            self.data(fh)?;
            let mut out = Vec::new();
            loop {
                let chunk = self.fs.read(fh, out.len() as u64, 1 << 20)?;
                if chunk.is_empty() {
                    return Ok(out);
                }
                out.extend_from_slice(&chunk);
            }
        })();
        self.fs.release(fh);
        r
    }

    /// Replaces the content of `rel` (creating it), through the overlay.
    pub fn write(&self, rel: &str, data: &[u8]) -> Result<(), Errno> {
        let fh = match self.lookup(rel) {
            Ok(_) => self.open(rel, libc::O_WRONLY | libc::O_TRUNC)?,
            Err(Errno(libc::ENOENT)) => {
                let (parent, name) = self.parent_and_name(rel);
                self.fs
                    .create(
                        parent,
                        name,
                        0o644,
                        libc::O_WRONLY,
                        root_caller(),
                        |_, _| Ok(()),
                    )?
                    .1
                    .fh
            }
            Err(e) => return Err(e),
        };
        let r = (|| {
            self.data(fh)?;
            let mut off = 0usize;
            while off < data.len() {
                off += self
                    .fs
                    .write(fh, off as u64, &data[off..], Requester::DAEMON)?
                    as usize;
            }
            Ok(())
        })();
        self.fs.release(fh);
        r
    }

    /// Writes `data` at `off` into the existing `rel` (no truncate).
    pub fn write_at(&self, rel: &str, off: u64, data: &[u8]) -> Result<(), Errno> {
        let fh = self.open(rel, libc::O_WRONLY)?;
        let r = self
            .data(fh)
            .and_then(|()| self.fs.write(fh, off, data, Requester::DAEMON).map(|_| ()));
        self.fs.release(fh);
        r
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
        let (p, n) = self.parent_and_name(from);
        let (np, nn) = self.parent_and_name(to);
        self.fs.rename(p, n, np, nn, 0)
    }

    pub fn unlink(&self, rel: &str) -> Result<(), Errno> {
        let (p, n) = self.parent_and_name(rel);
        self.fs.unlink(p, n)
    }

    /// The size `stat` shows (a stub's logical size), through the overlay.
    pub fn size(&self, rel: &str) -> Result<u64, Errno> {
        Ok(self.fs.getattr(self.lookup(rel)?)?.stat.size)
    }

    /// The names in the tree's root.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.src)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A policy run in `mode` over the whole tree.
    pub fn migrate(&self, mode: MigrateMode) -> RunSummary {
        let mut quiet = |_: coldtier::base::progress::Progress| {};
        self.block_on(self.t.run_policy(mode, "test", &mut quiet, &Cancel::new()))
            .expect("policy run")
    }

    /// The backing file of `rel`, opened directly (no overlay).
    pub fn backing(&self, rel: &str) -> std::fs::File {
        std::fs::File::open(self.src.join(rel)).unwrap()
    }

    /// The tiering state of `rel`, from its records and the catalog.
    pub fn state(&self, rel: &str) -> FileState {
        self.t.status(&self.backing(rel)).unwrap().state
    }

    /// Waits for the engine's background checks (a closed file compared with its copy).
    pub fn settle(&self) {
        self.block_on(self.t.settle());
    }

    /// Waits until `rel` is in `state` (for work the engine does in the background, such
    /// as comparing a closed file's content with its copy); fails after a minute.
    pub fn wait_for(&self, rel: &str, state: FileState) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.state(rel) != state {
            assert!(
                std::time::Instant::now() < deadline,
                "{rel} never became {state:?} (is {:?})",
                self.state(rel)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// 512-byte blocks the backing file holds.
    pub fn blocks(&self, rel: &str) -> u64 {
        backing::stat_fd(self.backing(rel).as_fd()).unwrap().blocks
    }

    pub fn pin(&self, rel: &str, on: bool) {
        self.t
            .set_pinned(Path::new(rel), &self.backing(rel), on)
            .unwrap();
    }

    /// The catalog's state of the file at `rel` (None: no row).
    pub fn catalog_state(&self, rel: &str) -> Option<FileState> {
        self.t.catalog.file_by_path(rel).unwrap().map(|r| r.state)
    }

    /// Every object key in the store.
    pub fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .block_on(self.store.list(""))
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        v.sort();
        v
    }

    /// The object keys the files' records name (stub and copy records).
    pub fn referenced(&self) -> Vec<String> {
        let mut v = Vec::new();
        for name in self.names() {
            let f = self.backing(&name);
            for which in [coldtier::tier::marks::STUB, coldtier::tier::marks::COPY] {
                if let Some(r) = coldtier::tier::marks::record(f.as_fd(), which).unwrap() {
                    v.push(r.object_key.clone());
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }

    /// `coldtier verify`: the findings' lines (empty when all is well).
    pub fn verify(&self) -> Vec<String> {
        let mut quiet = |_: coldtier::base::progress::Progress| {};
        let v = self
            .block_on(self.t.reconcile(false, &mut quiet))
            .expect("verify");
        v["findings"]
            .as_array()
            .map(|a| a.iter().map(|f| f.to_string()).collect())
            .unwrap_or_default()
    }

    /// `coldtier gc` (retention zero in [`eager_settings`]).
    pub fn gc(&self) -> serde_json::Value {
        self.block_on(self.t.gc(false, &Cancel::new())).expect("gc")
    }
}

/// `n` bytes of a pattern that differs per `seed`.
pub fn data(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The name of a file as the test sees it (utf-8 paths only).
pub fn name(p: &Path) -> &str {
    std::str::from_utf8(p.as_os_str().as_bytes()).unwrap()
}
