//! The engine against a reference model (as mountpoint-s3's reftests): proptest drives the
//! in-process engine (tests/common/engine.rs) and a plain map of names to contents with
//! the same random operations (write, partial write, rename, unlink, migrate copy-only and
//! stub, read, pin, unpin, release, gc, restart, and a crash at a failpoint of migrate or
//! recall followed by a restart), and checks after every step that they agree: the same
//! names, sizes and pins; every content read back equal; a pinned file never freed; the
//! state the model predicts where it can. At the end of each case: every file reads back
//! equal, verify finds nothing, and after gc the bucket holds exactly what the files'
//! records name.
//!
//! A second model test runs the same with `[pack]` on (small files go into packs of a
//! few members), and adds what packs bring: a bulk recall (`coldtier recall -r`), gc that
//! repacks mostly dead packs, and crashes at every failpoint of a pack's upload, a repack
//! and a bulk recall. A third adds a `[[replica]]` target and `policy.copies = 2`, and
//! loses or corrupts the primary's object of a stub: every file must still read back
//! (from the replica), and gc must leave neither store holding a dead object. A fourth
//! has the replica with `policy.copies = 1`, filled by `coldtier replicate` (and crashes in
//! it), and loses only objects the catalog says the replica holds. A fifth runs the packs'
//! operations with every object in GLACIER (restores done at once, reads waiting for them).
//! Every model also loses the catalog and rebuilds it from the tree and the primary's
//! bucket (`coldtier catalog rebuild`), and goes on with the rebuilt one, which knows of
//! no replica copy: a primary that loses an object afterwards is recalled from the
//! replica all the same.
//!
//! `COLDTIER_MODEL_CASES` sets the number of cases of each (default 160, of 1 to 47 steps
//! each: about 3,900 steps per run, 10 s here; 2,000 cases, about 48,000 steps, take two
//! minutes).

#[path = "common/engine.rs"]
mod engine;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::Arc;

use coldtier::base::failpoint::{self, FailAction};
use coldtier::catalog::FileState;
use coldtier::store::{MemoryStore, ObjectStore};
use coldtier::tier::config::MigrateMode;
use engine::{data, eager_settings, Dirs, Engine};
use proptest::prelude::*;

/// The names a case uses: the first four without packs, all six with them (a pack wants
/// several small files).
const NAMES: [&str; 6] = ["f0", "f1", "f2", "f3", "f4", "f5"];

const MIGRATE_POINTS: [&str; 5] = [
    "migrate-after-intent",
    "migrate-after-put",
    "migrate-after-verify",
    "migrate-after-stub-xattr",
    "migrate-after-truncate",
];
const RECALL_POINTS: [&str; 3] = [
    "recall-after-truncate",
    "recall-after-data",
    "recall-after-premig-xattr",
];
/// Where a pack's upload, a repack (gc) and a bulk recall can crash; a pack member's stub
/// step crashes at [`MIGRATE_POINTS`] (the step is a file's own).
const PACK_POINTS: [&str; 6] = [
    "pack-after-intent",
    "pack-after-first-member",
    "pack-after-put",
    "pack-after-index",
    "pack-after-record",
    "pack-before-records",
];
const REPACK_POINTS: [&str; 2] = ["repack-after-record", "repack-after-switch"];
const BULK_POINTS: [&str; 2] = ["bulk-recall-before-claim", "bulk-recall-before-records"];
const REPLICATE_POINTS: [&str; 2] = ["replicate-before-get", "replicate-after-put"];

#[derive(Debug, Clone)]
enum Op {
    Write {
        f: usize,
        seed: u64,
        len: usize,
    },
    WriteAt {
        f: usize,
        off: usize,
        seed: u64,
        len: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        f: usize,
    },
    Migrate {
        stub: bool,
    },
    Read {
        f: usize,
    },
    Pin {
        f: usize,
        on: bool,
    },
    Release {
        f: usize,
    },
    Gc,
    Restart,
    /// The catalog lost (its files deleted with the engine stopped) and rebuilt from the
    /// tree's records and the bucket (`coldtier catalog rebuild`), then a new engine.
    Rebuild,
    CrashMigrate {
        point: usize,
    },
    CrashRecall {
        f: usize,
        point: usize,
    },
    /// `coldtier recall -r` of the whole tree.
    BulkRecall,
    /// A crash at `PACK_POINTS[point]` during a policy run that stubs.
    CrashPack {
        point: usize,
    },
    /// A crash at `REPACK_POINTS[point]` during gc.
    CrashRepack {
        point: usize,
    },
    /// A crash at `BULK_POINTS[point]` during a bulk recall.
    CrashBulk {
        point: usize,
    },
    /// `coldtier replicate --to r2`.
    Replicate,
    /// A crash at `REPLICATE_POINTS[point]` during `coldtier replicate --to r2`.
    CrashReplicate {
        point: usize,
    },
    /// The primary loses (or, `corrupt`, rots a byte of) the object of file `f` if that
    /// is a stub (whose object the replica holds too: `policy.copies = 2`). What the
    /// primary lost is never put back: the files go on with their replica's copy.
    LosePrimary {
        f: usize,
        corrupt: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0usize..4;
    prop_oneof![
        4 => (f.clone(), any::<u64>(), 1usize..200_000).prop_map(|(f, seed, len)| Op::Write { f, seed, len }),
        2 => (f.clone(), 0usize..100_000, any::<u64>(), 1usize..5_000)
            .prop_map(|(f, off, seed, len)| Op::WriteAt { f, off, seed, len }),
        1 => (f.clone(), f.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => f.clone().prop_map(|f| Op::Unlink { f }),
        3 => any::<bool>().prop_map(|stub| Op::Migrate { stub }),
        3 => f.clone().prop_map(|f| Op::Read { f }),
        1 => (f.clone(), any::<bool>()).prop_map(|(f, on)| Op::Pin { f, on }),
        1 => f.clone().prop_map(|f| Op::Release { f }),
        1 => Just(Op::Gc),
        1 => Just(Op::Restart),
        1 => Just(Op::Rebuild),
        1 => (0..MIGRATE_POINTS.len()).prop_map(|point| Op::CrashMigrate { point }),
        1 => (f, 0..RECALL_POINTS.len()).prop_map(|(f, point)| Op::CrashRecall { f, point }),
    ]
}

/// The operations with `[pack]` on: six names, files small enough to be packed as often as
/// not, and what packs add.
fn op_packed() -> impl Strategy<Value = Op> {
    let f = 0..NAMES.len();
    prop_oneof![
        4 => (f.clone(), any::<u64>(), 1usize..80_000).prop_map(|(f, seed, len)| Op::Write { f, seed, len }),
        2 => (f.clone(), 0usize..40_000, any::<u64>(), 1usize..5_000)
            .prop_map(|(f, off, seed, len)| Op::WriteAt { f, off, seed, len }),
        1 => (f.clone(), f.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        2 => f.clone().prop_map(|f| Op::Unlink { f }),
        3 => any::<bool>().prop_map(|stub| Op::Migrate { stub }),
        3 => f.clone().prop_map(|f| Op::Read { f }),
        1 => (f.clone(), any::<bool>()).prop_map(|(f, on)| Op::Pin { f, on }),
        1 => f.clone().prop_map(|f| Op::Release { f }),
        3 => Just(Op::Gc),
        1 => Just(Op::Restart),
        2 => Just(Op::BulkRecall),
        1 => (0..MIGRATE_POINTS.len()).prop_map(|point| Op::CrashMigrate { point }),
        1 => (f, 0..RECALL_POINTS.len()).prop_map(|(f, point)| Op::CrashRecall { f, point }),
        2 => (0..PACK_POINTS.len()).prop_map(|point| Op::CrashPack { point }),
        2 => (0..REPACK_POINTS.len()).prop_map(|point| Op::CrashRepack { point }),
        1 => (0..BULK_POINTS.len()).prop_map(|point| Op::CrashBulk { point }),
    ]
}

/// The operations with packs, and a catalog lost and rebuilt.
fn op_packed_rebuilt() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => op_packed(),
        1 => Just(Op::Rebuild),
    ]
}

/// The operations with a replica: those with packs, and a primary that loses objects.
fn op_replicated() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => op_packed(),
        1 => Just(Op::Rebuild),
        3 => (0..NAMES.len(), any::<bool>()).prop_map(|(f, corrupt)| Op::LosePrimary { f, corrupt }),
    ]
}

/// The operations with a replica that `coldtier replicate` fills.
fn op_backfilled() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => op_packed(),
        1 => Just(Op::Rebuild),
        3 => (0..NAMES.len(), any::<bool>()).prop_map(|(f, corrupt)| Op::LosePrimary { f, corrupt }),
        2 => Just(Op::Replicate),
        1 => (0..REPLICATE_POINTS.len()).prop_map(|point| Op::CrashReplicate { point }),
    ]
}

/// [`eager_settings`] with packs of at most three members and 96 KiB, files up to 48 KiB
/// packed, and gc repacking a pack as soon as a tenth of it is dead.
fn packed_settings() -> coldtier::tier::config::Settings {
    let mut s = eager_settings();
    s.pack.enabled = true;
    s.pack.max_member_size = 48 << 10;
    s.pack.target_size = 96 << 10;
    s.pack.max_files = 3;
    s.pack.repack_below = 0.9;
    s
}

/// Runs `f`, which may panic at an armed failpoint (the in-process stand-in for a crash).
fn crashing<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// What the model knows of one file.
#[derive(Debug, Clone)]
struct Model {
    content: Vec<u8>,
    pinned: bool,
    /// The state it must be in; `None` when the model cannot tell (after a crash).
    state: Option<FileState>,
}

struct World {
    /// `[pack]` on ([`packed_settings`]).
    packed: bool,
    /// The `[[replica]]` target "r2" (and `policy.copies = 2` unless `backfill`), if any.
    replica: Option<Arc<MemoryStore>>,
    /// The replica is filled by `coldtier replicate` (`policy.copies = 1`).
    backfill: bool,
    /// Objects go to GLACIER; a read waits for the restore (`on_archived = "wait"`).
    archived: bool,
    /// The objects the primary lost or holds rotten ([`Op::LosePrimary`]).
    lost: std::collections::BTreeSet<String>,
    /// Of those, the ones it lost (a HEAD says so: a release from a copy record naming one
    /// is refused, and the record dropped).
    gone: std::collections::BTreeSet<String>,
    /// Objects in the bucket (or on the replica) that no record on disk named at a catalog
    /// rebuild ([`Op::Rebuild`]): gc may delete them or not.
    orphaned: std::collections::BTreeSet<String>,
    dirs: Dirs,
    store: Arc<MemoryStore>,
    e: Option<Engine>,
    files: BTreeMap<&'static str, Model>,
}

impl World {
    fn e(&self) -> &Engine {
        self.e.as_ref().unwrap()
    }

    fn restart(&mut self) {
        self.e.take().unwrap().stop();
        self.e = Some(self.start());
    }

    fn start(&self) -> Engine {
        let replicas: Vec<(String, Arc<dyn coldtier::store::ObjectStore>)> = match &self.replica {
            Some(r) => vec![("r2".to_string(), r.clone() as _)],
            None => Vec::new(),
        };
        Engine::start_with_replicas(&self.dirs, self.store.clone(), self.settings(), replicas)
    }

    fn settings(&self) -> coldtier::tier::config::Settings {
        let mut s = if self.packed {
            packed_settings()
        } else {
            eager_settings()
        };
        if self.replica.is_some() && !self.backfill {
            s.policy.copies = 2;
        }
        if self.archived {
            s.uploads.storage_class = coldtier::store::StorageClass::Glacier;
            s.recall.on_archived = coldtier::tier::config::OnArchived::Wait;
            s.recall.wait_timeout = std::time::Duration::from_secs(120);
            s.recall.poll_interval = std::time::Duration::from_millis(5);
        }
        s
    }

    /// `coldtier catalog rebuild`: the engine stops, the catalog is lost, a new one is
    /// rebuilt from the records on disk and the bucket, and a new engine starts on it.
    /// Pins are not recoverable (docs/operations.md): the model drops them. Objects that
    /// no record on disk names then may stay for good (a `live` tag whose file is gone is
    /// only reported): the end check leaves them out ([`World::orphaned`]).
    fn rebuild(&mut self) -> Result<(), TestCaseError> {
        use coldtier::tier::rebuild::{list_objects, rebuild, record_replica_copies, walk};
        self.e.take().unwrap().stop();
        let db = self.dirs.db();
        for suffix in ["", "-wal", "-shm"] {
            let f = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            if f.exists() {
                std::fs::remove_file(&f).unwrap();
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn ObjectStore> = self.store.clone();
        let listed = rt.block_on(list_objects(store.as_ref())).unwrap();
        let mut report = Vec::new();
        let root = coldtier::fs::backing::open_dir_path(&self.dirs.src()).unwrap();
        let (_, disk) = walk(root.as_fd(), &mut report).unwrap();
        let catalog = coldtier::catalog::Catalog::open(&db).unwrap();
        let counts = rebuild(
            &rt,
            store,
            "",
            &catalog,
            &listed,
            &disk,
            &mut report,
            &|_| {},
        );
        prop_assert!(counts.is_ok(), "rebuild: {:?}", counts.err());
        // What the replica holds, as `coldtier catalog rebuild` records it for each target.
        let mut on_r2 = Vec::new();
        if let Some(r) = &self.replica {
            on_r2 = rt.block_on(list_objects(r.as_ref())).unwrap();
            record_replica_copies(&catalog, "r2", &on_r2).unwrap();
        }
        drop(catalog);
        rt.shutdown_timeout(std::time::Duration::from_secs(5));
        // Every record on disk names an object the bucket holds (but those the primary
        // lost or rotted): nothing else is rejected.
        let bad: Vec<&String> = report
            .iter()
            .filter(|l| !l.starts_with("UNREFERENCED"))
            .filter(|l| !self.lost.iter().any(|k| l.contains(k.as_str())))
            .collect();
        prop_assert!(bad.is_empty(), "rebuild reported {:?}", bad);
        // What a rebuild takes a file's object to be: its stub record's, else its copy
        // record's.
        let mut named = std::collections::BTreeSet::new();
        for name in self.files.keys() {
            let f = std::fs::File::open(self.dirs.src().join(name)).unwrap();
            let record = |which| coldtier::tier::marks::record(f.as_fd(), which).unwrap();
            if let Some(r) =
                record(coldtier::tier::marks::STUB).or_else(|| record(coldtier::tier::marks::COPY))
            {
                named.insert(r.object_key);
            }
        }
        // (On the replica too: a copy of an object the primary lost, whose file is gone
        // since, is known to no one after the rebuild.)
        for o in listed.iter().chain(&on_r2) {
            let stem = o
                .key
                .strip_suffix(".index.json")
                .map(|s| format!("{s}.tar"));
            if !named.contains(&o.key) && !stem.is_some_and(|t| named.contains(&t)) {
                self.orphaned.insert(o.key.clone());
            }
        }
        for m in self.files.values_mut() {
            m.pinned = false;
        }
        self.e = Some(self.start());
        Ok(())
    }

    /// After a crash: a new engine, and the model no longer knows the states of the files
    /// `unsure` names.
    fn crashed(&mut self, unsure: impl Fn(&Model) -> bool) {
        failpoint::disarm_all();
        self.restart();
        for m in self.files.values_mut() {
            if unsure(m) {
                m.state = None;
            }
        }
    }

    /// `coldtier replicate --to r2`.
    fn replicate(&self) -> coldtier::tier::replicate::ReplicateSummary {
        let e = self.e();
        let mut quiet = |_: coldtier::base::progress::Progress| {};
        e.block_on(e.t.replicate(
            "r2",
            false,
            &mut quiet,
            &coldtier::base::cancel::Cancel::new(),
        ))
        .expect("replicate")
    }

    /// `coldtier recall -r` of every file there is.
    fn bulk_recall(&self) -> Vec<Result<(), String>> {
        let e = self.e();
        let rels: Vec<(usize, std::path::PathBuf)> = self
            .files
            .keys()
            .enumerate()
            .map(|(i, n)| (i, std::path::PathBuf::from(n)))
            .collect();
        let mut out = Vec::new();
        e.block_on(e.t.recall_paths(rels, 4, &mut |(_, r)| {
            out.push(r.map(drop).map_err(|e| e.message))
        }));
        e.t.catalog.sync().unwrap();
        out
    }

    /// Reads `name` and checks it against the model; a stub becomes premigrated.
    fn read(&mut self, name: &'static str) -> Result<(), TestCaseError> {
        let got = self.e().read(name);
        let m = self.files.get_mut(name).unwrap();
        prop_assert_eq!(
            got.as_ref().ok(),
            Some(&m.content),
            "{} read back different",
            name
        );
        if m.state == Some(FileState::Stub) {
            m.state = Some(FileState::Premigrated);
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { f, seed, len } => {
                let name = NAMES[f];
                let body = data(seed, len);
                self.e().write(name, &body).unwrap();
                let pinned = self.files.get(name).is_some_and(|m| m.pinned);
                self.files.insert(
                    name,
                    Model {
                        content: body,
                        pinned,
                        state: Some(FileState::Resident),
                    },
                );
            }
            Op::WriteAt { f, off, seed, len } => {
                let name = NAMES[f];
                let Some(m) = self.files.get(name) else {
                    return Ok(());
                };
                let off = off.min(m.content.len());
                let before = m.content.clone();
                let piece = data(seed, len);
                self.e().write_at(name, off as u64, &piece).unwrap();
                let m = self.files.get_mut(name).unwrap();
                let end = off + piece.len();
                if m.content.len() < end {
                    m.content.resize(end, 0);
                }
                m.content[off..end].copy_from_slice(&piece);
                // A stub or a premigrated file of the same size has its copy compared with
                // the content in the background (`check` waits for it): resident, unless the
                // bytes are the same (premigrated); a size change makes it resident at once.
                m.state = if m.content == before {
                    m.state.map(|s| {
                        if s == FileState::Stub {
                            FileState::Premigrated
                        } else {
                            s
                        }
                    })
                } else {
                    Some(FileState::Resident)
                };
            }
            Op::Rename { from, to } => {
                let (a, b) = (NAMES[from], NAMES[to]);
                if a == b || !self.files.contains_key(a) {
                    return Ok(());
                }
                self.e().rename(a, b).unwrap();
                let m = self.files.remove(a).unwrap();
                self.files.insert(b, m);
            }
            Op::Unlink { f } => {
                let name = NAMES[f];
                if self.files.remove(name).is_some() {
                    self.e().unlink(name).unwrap();
                }
            }
            Op::Migrate { stub } => {
                let mode = if stub {
                    MigrateMode::Stub
                } else {
                    MigrateMode::CopyOnly
                };
                let s = self.e().migrate(mode);
                prop_assert_eq!(s.failed, 0, "{:?}", s.errors);
                for m in self.files.values_mut() {
                    if m.pinned {
                        continue;
                    }
                    m.state = match (stub, m.state) {
                        (true, _) => Some(FileState::Stub),
                        (false, Some(FileState::Stub)) => Some(FileState::Stub),
                        (false, Some(_)) => Some(FileState::Premigrated),
                        (false, None) => None,
                    };
                }
            }
            Op::Read { f } => {
                if self.files.contains_key(NAMES[f]) {
                    self.read(NAMES[f])?;
                }
            }
            Op::Pin { f, on } => {
                let name = NAMES[f];
                if let Some(m) = self.files.get_mut(name) {
                    m.pinned = on;
                    self.e.as_ref().unwrap().pin(name, on);
                }
            }
            Op::Release { f } => {
                let name = NAMES[f];
                let Some(m) = self.files.get(name).cloned() else {
                    return Ok(());
                };
                let copy_gone = coldtier::tier::marks::record(
                    self.e().backing(name).as_fd(),
                    coldtier::tier::marks::COPY,
                )
                .unwrap()
                .is_some_and(|r| self.gone.contains(&r.object_key));
                let r = self.e().t.release(&self.e().backing(name));
                let now = self.e().state(name);
                let m2 = self.files.get_mut(name).unwrap();
                match r {
                    Ok(coldtier::tier::manual::Released::AlreadyStub) => {
                        prop_assert_eq!(now, FileState::Stub);
                        prop_assert!(m.state.is_none() || m.state == Some(FileState::Stub));
                        m2.state = Some(FileState::Stub);
                    }
                    Ok(coldtier::tier::manual::Released::Now { .. }) => {
                        prop_assert!(!m.pinned, "released a pinned file");
                        prop_assert_ne!(
                            m.state,
                            Some(FileState::Resident),
                            "released without a copy"
                        );
                        prop_assert_eq!(now, FileState::Stub);
                        m2.state = Some(FileState::Stub);
                    }
                    Err(_) if copy_gone => {
                        // Its copy is dropped: resident until a run copies it again.
                        prop_assert_eq!(now, FileState::Resident);
                        m2.state = Some(FileState::Resident);
                    }
                    Err(_) => {
                        prop_assert!(
                            m.pinned || m.state != Some(FileState::Premigrated),
                            "release of a premigrated unpinned file failed"
                        );
                    }
                }
            }
            Op::Gc => {
                self.e().gc();
            }
            Op::Restart => self.restart(),
            Op::Rebuild => self.rebuild()?,
            Op::CrashMigrate { point } => {
                failpoint::arm(MIGRATE_POINTS[point], FailAction::Panic);
                let _ = crashing(|| self.e().migrate(MigrateMode::Stub));
                // A policy run leaves a pinned file alone.
                self.crashed(|m| !m.pinned);
            }
            Op::CrashPack { point } => {
                failpoint::arm(PACK_POINTS[point], FailAction::Panic);
                let _ = crashing(|| self.e().migrate(MigrateMode::Stub));
                self.crashed(|m| !m.pinned);
            }
            Op::CrashRepack { point } => {
                failpoint::arm(REPACK_POINTS[point], FailAction::Panic);
                let _ = crashing(|| self.e().gc());
                // A repack changes which pack a member names, never its state.
                self.crashed(|_| false);
            }
            Op::CrashBulk { point } => {
                failpoint::arm(BULK_POINTS[point], FailAction::Panic);
                let _ = crashing(|| self.bulk_recall());
                // A recall brings back pinned stubs too.
                self.crashed(|_| true);
            }
            Op::LosePrimary { f, corrupt } => {
                let name = NAMES[f];
                if !self.files.contains_key(name) {
                    return Ok(());
                }
                // A stub, whatever the model knows of it (a crash may have made it one).
                let Some(rec) = coldtier::tier::marks::record(
                    self.e().backing(name).as_fd(),
                    coldtier::tier::marks::STUB,
                )
                .unwrap() else {
                    return Ok(());
                };
                let key = rec.object_key;
                // Filled by `replicate`, the replica may not hold it yet. What the replica
                // holds, not what the catalog says (a rebuilt catalog knows of no copy).
                let replica = self.replica.as_ref().unwrap();
                let held = self.e().block_on(replica.head(&key, None)).is_ok();
                if !held {
                    prop_assert!(self.backfill, "a stub's object is on no replica: {key}");
                    return Ok(());
                }
                if corrupt {
                    self.store.corrupt(&key);
                } else {
                    let e = self.e();
                    e.block_on(self.store.purge(&key)).unwrap();
                    self.gone.insert(key.clone());
                }
                self.lost.insert(key);
            }
            Op::Replicate => {
                let s = self.replicate();
                prop_assert_eq!(s.failed, 0, "replicate: {:?}", s.errors);
            }
            Op::CrashReplicate { point } => {
                failpoint::arm(REPLICATE_POINTS[point], FailAction::Panic);
                let _ = crashing(|| self.replicate());
                // Replication changes no file.
                self.crashed(|_| false);
            }
            Op::BulkRecall => {
                for r in self.bulk_recall() {
                    prop_assert!(r.is_ok(), "bulk recall: {:?}", r);
                }
                for m in self.files.values_mut() {
                    if m.state == Some(FileState::Stub) {
                        m.state = Some(FileState::Premigrated);
                    }
                }
            }
            Op::CrashRecall { f, point } => {
                let name = NAMES[f];
                if !self.files.contains_key(name) {
                    return Ok(());
                }
                failpoint::arm(RECALL_POINTS[point], FailAction::Panic);
                let r = self.e().read(name);
                failpoint::disarm_all();
                if let Ok(got) = r {
                    // Not a stub: no recall, nothing crashed.
                    prop_assert_eq!(&got, &self.files[name].content);
                } else {
                    self.restart();
                    self.files.get_mut(name).unwrap().state = None;
                }
            }
        }
        self.check()
    }

    /// What must hold after every step.
    fn check(&self) -> Result<(), TestCaseError> {
        let e = self.e();
        e.settle();
        let names: Vec<String> = self.files.keys().map(|s| s.to_string()).collect();
        prop_assert_eq!(e.names(), names);
        for (name, m) in &self.files {
            prop_assert_eq!(
                e.size(name).unwrap(),
                m.content.len() as u64,
                "size of {}",
                name
            );
            let st = e.t.status(&e.backing(name)).unwrap();
            prop_assert_eq!(st.pinned, m.pinned, "pin of {}", name);
            if let Some(want) = m.state {
                prop_assert_eq!(st.state, want, "state of {}", name);
            }
        }
        Ok(())
    }

    /// At the end of a case: everything reads back, verify is clean, and the bucket holds
    /// exactly what the records name once gc ran.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        let names: Vec<&'static str> = self.files.keys().copied().collect();
        for name in names {
            self.read(name)?;
        }
        // Verify names what the primary lost (and objects a rebuild found no record naming:
        // orphans it keeps), and nothing else.
        let findings: Vec<String> = self
            .e()
            .verify()
            .into_iter()
            .filter(|f| !self.lost.iter().any(|k| f.contains(k.as_str())))
            .filter(|f| {
                !(f.contains("\"kind\":\"orphan\"")
                    && self.orphaned.iter().any(|k| f.contains(k.as_str())))
            })
            .collect();
        prop_assert!(findings.is_empty(), "verify: {:?}", findings);
        self.e().gc();
        // A pack's index object goes and stays with its pack.
        let mut named = self.e().referenced();
        for k in named.clone() {
            if let Some(stem) = k.strip_suffix(".tar") {
                named.push(format!("{stem}.index.json"));
            }
        }
        named.sort();
        let held: Vec<String> = self
            .e()
            .objects()
            .into_iter()
            .filter(|k| !self.lost.contains(k) && !self.orphaned.contains(k))
            .collect();
        let want: Vec<String> = named
            .iter()
            .filter(|k| !self.lost.contains(*k))
            .cloned()
            .collect();
        prop_assert_eq!(held, want);
        // The replica holds no object that no file names (what it holds of the named ones
        // depends on which were stubbed).
        if let Some(r) = &self.replica {
            let e = self.e();
            for o in e.block_on(r.list("")).unwrap() {
                prop_assert!(
                    named.contains(&o.key) || self.orphaned.contains(&o.key),
                    "the replica still holds {}, which no file names",
                    o.key
                );
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("COLDTIER_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(160)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // A failing case is shrunk to its shortest sequence; each try builds engines.
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..48)) {
        run(false, &ops)?;
    }

    #[test]
    fn the_engine_with_packs_agrees_with_the_model(
        ops in proptest::collection::vec(op_packed_rebuilt(), 1..48)
    ) {
        run(true, &ops)?;
    }

    #[test]
    fn the_engine_with_a_replica_agrees_with_the_model(
        ops in proptest::collection::vec(op_replicated(), 1..48)
    ) {
        run_replicated(false, &ops)?;
    }

    #[test]
    fn the_engine_with_archived_packs_agrees_with_the_model(
        ops in proptest::collection::vec(op_packed_rebuilt(), 1..48)
    ) {
        run_archived(&ops)?;
    }

    #[test]
    fn the_engine_with_a_backfilled_replica_agrees_with_the_model(
        ops in proptest::collection::vec(op_backfilled(), 1..48)
    ) {
        run_replicated(true, &ops)?;
    }
}

/// One case: `ops` on a new engine (`packed`: with [`packed_settings`]), then the end checks.
fn run(packed: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    run_world(World::new(packed, None, false, false), ops)
}

/// One case with packs in GLACIER, restored as soon as asked.
fn run_archived(ops: &[Op]) -> Result<(), TestCaseError> {
    run_world(World::new(true, None, false, true), ops)
}

/// One case with packs and a replica target (`backfill`: filled by `coldtier replicate`,
/// else by `policy.copies = 2`).
fn run_replicated(backfill: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    run_world(
        World::new(true, Some(Arc::new(MemoryStore::new())), backfill, false),
        ops,
    )
}

impl World {
    /// A world with no file yet and no engine started.
    fn new(
        packed: bool,
        replica: Option<Arc<MemoryStore>>,
        backfill: bool,
        archived: bool,
    ) -> World {
        // Archived objects: their restores are done as soon as asked.
        let store = match archived {
            true => MemoryStore::new().with_restore_delay(std::time::Duration::ZERO),
            false => MemoryStore::new(),
        };
        World {
            packed,
            replica,
            backfill,
            archived,
            lost: Default::default(),
            gone: Default::default(),
            orphaned: Default::default(),
            dirs: Dirs::new(),
            store: Arc::new(store),
            e: None,
            files: BTreeMap::new(),
        }
    }
}

impl World {
    /// A world without replica or archive (`packed`: with [`packed_settings`]), its engine
    /// started.
    fn started(packed: bool) -> World {
        let mut w = World::new(packed, None, false, false);
        w.e = Some(w.start());
        w
    }

    /// The end checks, then the engine stopped.
    fn end(mut self) {
        self.finish().unwrap();
        self.e.take().unwrap().stop();
    }

    /// The catalog rebuilt, then gc: the store must hold nothing (`why` if it does), then
    /// the end checks.
    fn rebuild_and_gc_leaves_nothing(mut self, why: &str) {
        self.apply(&Op::Rebuild).unwrap();
        self.e().gc();
        assert_eq!(self.e().objects(), Vec::<String>::new(), "{why}");
        self.end();
    }
}

/// `ops` in `w` on a new engine, then the end checks.
fn run_world(mut w: World, ops: &[Op]) -> Result<(), TestCaseError> {
    w.e = Some(w.start());
    for op in ops {
        w.apply(op)?;
    }
    w.finish()?;
    w.e.take().unwrap().stop();
    Ok(())
}

/// Found by the model test with packs: three files packed and stubbed; one rewritten (its
/// member dies); gc repacks the other two and is killed after switching the first; the
/// second is replaced by a rename (it dies, naming the first pack); gc repacks the first
/// member again and is killed after its switch, the last one. The second pack was named by
/// no event (its other member had died naming the first): it stayed in the bucket for
/// good until gc learnt to end a repack cut short.
#[test]
fn a_repack_cut_short_after_its_last_switch_leaves_no_pack_behind() {
    let ops = [
        Op::Write {
            f: 0,
            seed: 0,
            len: 1,
        },
        Op::Write {
            f: 3,
            seed: 0,
            len: 60,
        },
        Op::Write {
            f: 2,
            seed: 17_684_335_690_745_485_753,
            len: 39_667,
        },
        Op::Migrate { stub: true },
        Op::WriteAt {
            f: 2,
            off: 20_124,
            seed: 13_579_344_393_095_972_509,
            len: 4_386,
        },
        Op::CrashRepack { point: 1 },
        Op::Rename { from: 2, to: 3 },
        Op::CrashRepack { point: 1 },
    ];
    run(true, &ops).unwrap();
}

/// Found by the model test with a backfilled replica: a replication killed after its PUT to
/// the target, before the REPLICATED that records the copy; the file then rewritten, its
/// pack dead. gc deleted the pack from the primary and left the target's copy, which the
/// catalog did not know of, for good; it now asks each target without a recorded copy.
#[test]
fn a_copy_put_by_a_replication_cut_short_is_deleted_with_its_object() {
    let ops = [
        Op::Write {
            f: 5,
            seed: 0,
            len: 1,
        },
        Op::Migrate { stub: false },
        Op::CrashReplicate { point: 1 },
        Op::Write {
            f: 5,
            seed: 0,
            len: 76_049,
        },
    ];
    run_replicated(true, &ops).unwrap();
}

/// Found with the rebuild in the model: a file's copy superseded by a write (the file keeps
/// its id and loses its copy record), the old object's `superseded` tag never set (the
/// tagger is best effort), then the catalog lost. The rebuild looked for the ids of files
/// with records only, so the object was an orphan no one would delete; a file with its id
/// alone now makes it that file's dead content, which gc deletes.
#[test]
fn a_rebuild_hands_gc_the_dead_content_of_a_file_with_its_id_alone() {
    let mut w = World::started(false);
    let write = |seed, len| Op::Write { f: 0, seed, len };
    w.apply(&write(1, 5_000)).unwrap();
    w.apply(&Op::Migrate { stub: false }).unwrap();
    let old = w.e().objects();
    assert_eq!(old.len(), 1, "{old:?}");
    w.apply(&write(2, 6_000)).unwrap();
    let f = w.e().backing(NAMES[0]);
    assert!(coldtier::tier::marks::file_id(f.as_fd()).unwrap().is_some());
    assert!(
        coldtier::tier::marks::record(f.as_fd(), coldtier::tier::marks::COPY)
            .unwrap()
            .is_none()
    );
    for k in &old {
        w.e()
            .block_on(w.store.set_tags(k, None, BTreeMap::new()))
            .unwrap();
    }
    w.rebuild_and_gc_leaves_nothing("the old content stayed");
}

/// Found with the rebuild in the model: a stub run of two packed premigrated files killed
/// after the first one's truncate (its copy record, which the step removes last, stays
/// beside its stub record); the other rewritten; gc repacks the first alone. The switch
/// moved the stub record to the new pack and left the copy record naming the old one, which
/// gc then kept ("named on disk") for as long as the file stayed a stub. The switch now
/// drops that copy record, and the same gc deletes the old pack.
#[test]
fn a_repack_leaves_no_copy_record_naming_the_old_pack() {
    let mut w = World::started(true);
    for op in [
        Op::Write {
            f: 0,
            seed: 0,
            len: 1,
        },
        Op::Write {
            f: 2,
            seed: 0,
            len: 1,
        },
        Op::Migrate { stub: false },
        Op::CrashMigrate { point: 4 },
        Op::WriteAt {
            f: 2,
            off: 39_911,
            seed: 7,
            len: 4_901,
        },
    ] {
        w.apply(&op).unwrap();
    }
    let before = w.e().objects();
    assert_eq!(before.len(), 2, "one pack and its index: {before:?}");
    w.apply(&Op::Gc).unwrap();
    let after = w.e().objects();
    assert_eq!(after.len(), 2, "the new pack and its index only: {after:?}");
    assert!(
        before.iter().all(|k| !after.contains(k)),
        "{before:?} {after:?}"
    );
    let f = w.e().backing(NAMES[0]);
    let stub = coldtier::tier::marks::record(f.as_fd(), coldtier::tier::marks::STUB).unwrap();
    assert!(stub.is_some_and(|r| after.contains(&r.object_key)));
    assert!(
        coldtier::tier::marks::record(f.as_fd(), coldtier::tier::marks::COPY)
            .unwrap()
            .is_none()
    );
    w.end();
}

/// A pack whose members were all rewritten (each file keeps its id, its data local), then
/// the catalog lost before gc deleted the pack: the rebuild finds every member's file on
/// disk with other content and records the pack for gc, which deletes it and its index.
/// It was reported and kept for good ("nothing will delete it").
#[test]
fn a_rebuild_hands_gc_a_pack_whose_members_all_moved_on() {
    let mut w = World::started(true);
    for f in [0, 1] {
        w.apply(&Op::Write {
            f,
            seed: 1,
            len: 3_000,
        })
        .unwrap();
    }
    w.apply(&Op::Migrate { stub: true }).unwrap();
    let pack = w.e().objects();
    assert_eq!(pack.len(), 2, "one pack and its index: {pack:?}");
    for f in [0, 1] {
        w.apply(&Op::Write {
            f,
            seed: 2,
            len: 2_000,
        })
        .unwrap();
    }
    w.rebuild_and_gc_leaves_nothing("the dead pack stayed");
}

/// Found with the replica's holdings taken from the replica itself in the model: a
/// replication killed after its PUT (the copy is whole on the target, not recorded), then
/// the primary loses the object. The recall asked only the targets the catalog records a
/// copy on, and failed; `replicate` copied from the primary, and failed. Now the recall
/// asks every target (the checksum is the proof), and `replicate` finds the copy on the
/// target, reads it back and records it, without asking the primary.
#[test]
fn an_unrecorded_copy_on_the_replica_serves_a_recall_and_replicate_adopts_it() {
    let mut w = World::new(true, Some(Arc::new(MemoryStore::new())), true, false);
    w.e = Some(w.start());
    w.apply(&Op::Write {
        f: 1,
        seed: 3,
        len: 700,
    })
    .unwrap();
    w.apply(&Op::Migrate { stub: true }).unwrap();
    w.apply(&Op::CrashReplicate { point: 1 }).unwrap();
    let e = w.e();
    assert!(
        e.t.catalog.objects_missing_on("r2").unwrap().len() == 1,
        "no copy recorded"
    );
    w.apply(&Op::LosePrimary {
        f: 1,
        corrupt: false,
    })
    .unwrap();
    assert_eq!(w.lost.len(), 1, "the primary lost the pack");
    w.apply(&Op::Read { f: 1 }).unwrap();
    let s = w.replicate();
    assert_eq!((s.found, s.copied, s.failed), (1, 0, 0), "{s:?}");
    assert!(w.e().t.catalog.objects_missing_on("r2").unwrap().is_empty());
    w.end();
}

/// A copy on the target of the right key and size but other bytes (rotten there) is not
/// adopted: `replicate` reads it back, finds it differs, and copies the object again.
#[test]
fn a_rotten_copy_on_the_replica_is_copied_again_not_adopted() {
    let replica = Arc::new(MemoryStore::new());
    let mut w = World::new(true, Some(replica.clone()), true, false);
    w.e = Some(w.start());
    w.apply(&Op::Write {
        f: 1,
        seed: 4,
        len: 900,
    })
    .unwrap();
    w.apply(&Op::Migrate { stub: true }).unwrap();
    w.apply(&Op::CrashReplicate { point: 1 }).unwrap();
    let on_r2: Vec<String> = w
        .e()
        .block_on(replica.list(""))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".tar"))
        .collect();
    assert_eq!(on_r2.len(), 1, "the pack put before the kill: {on_r2:?}");
    replica.corrupt(&on_r2[0]);
    let s = w.replicate();
    assert_eq!((s.found, s.copied, s.failed), (0, 1, 0), "{s:?}");
    w.apply(&Op::LosePrimary {
        f: 1,
        corrupt: false,
    })
    .unwrap();
    w.apply(&Op::Read { f: 1 }).unwrap();
    w.end();
}
