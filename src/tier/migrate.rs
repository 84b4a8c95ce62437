//! Policy runs and the other jobs that move data: scan the backing tree, select, then for
//! each file copy -> verify -> (stub); `release` (stub now); `gc` (delete expired objects).
//!
//! The crash-safe order (invariant 1 and 2), for one file:
//! 1. identity xattr; stat S0; PUT (streamed from the file); COPIED event;
//! 2. verify: the checksum the store reports for that exact object version equals ours
//!    (or a read-back); VERIFIED only after it;
//! 3. under the file's gate: unchanged since S0 (size, mtime, ctime) and no writer, then
//!    the copy record -> premigrated;
//! 4. stub, under the gate: no handle open, unchanged since the copy record, not pinned;
//!    stub record FIRST, then truncate (blocks freed), times back, copy record removed,
//!    fsync; STUBBED. A crash between the stub record and the truncate leaves a full file
//!    marked stub: it is recalled again on open (same bytes), never lost.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::json;

use super::config::{MigrateMode, Verify};
use super::context::{ns_of, StepError, Tiering, KEY_PREFIX};
use super::record::{fill_from_record, Change, Durability, Transition};
use crate::base::cancel::Cancel;
use crate::base::progress::{Progress, Totals};
use crate::catalog::{system_now_ns, EventKind, FileRow, FileState, JobCounts};
use crate::fs::backing::{self, SetTime, Stat};
use crate::store::{GetRequest, PutRequest, StorageClass, StoreErrorKind};
use crate::tier::marks;
use crate::tier::policy::{self, Decision, FileFacts, Plan, SkipReason};
use crate::tier::state::Action;
use crate::tier::stub::{
    extents_to_meta, new_file_id, object_key, sparse_extents, StubRecord, STUB_VERSION,
};

/// One file a run would act on.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub path: String,
    pub size: u64,
    pub plan: &'static str,
    /// The bytes its stub would free (its allocated blocks; 0 for a copy alone).
    pub frees: u64,
}

/// What a run covers: the whole mount, or trees and files inside it.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Relative to the mount; empty (or one empty path): the whole mount. A file names
    /// that file only.
    pub paths: Vec<PathBuf>,
    /// `coldtier archive`: every regular file named (or below a directory named, with
    /// `recursive`), whatever its age, size and the include patterns; pins, excludes and
    /// hard links still hold, and every file left alone is reported with why.
    pub on_demand: bool,
    pub recursive: bool,
    /// With `on_demand`: stub the files too (`archive --release`), not only copy them.
    pub release: bool,
}

/// A file a run left alone, and why (reported by `coldtier archive`).
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    /// "pinned", "excluded", "hard-linked", "empty", "already", "not-regular",
    /// "directory", "missing".
    pub kind: &'static str,
    pub reason: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    pub candidates: Vec<(FileFacts, Plan)>,
    pub scanned: u64,
    /// Only for an on-demand scope.
    pub skipped: Vec<Skipped>,
    /// The bytes each candidate's stub would free.
    pub frees: std::collections::HashMap<PathBuf, u64>,
    /// Stubs of pack members whose full record was rewritten in its compact form.
    pub compacted: u64,
}

fn skip_kind(why: &SkipReason) -> &'static str {
    match why {
        SkipReason::Pinned => "pinned",
        SkipReason::Excluded(_) => "excluded",
        SkipReason::HardLinked { .. } => "hard-linked",
        SkipReason::Empty => "empty",
        SkipReason::AlreadyTiered(_) => "already",
        SkipReason::NotRegular => "not-regular",
        SkipReason::NotIncluded
        | SkipReason::TooSmall { .. }
        | SkipReason::TooLarge { .. }
        | SkipReason::TooRecent { .. } => "policy",
    }
}

/// What a policy run did (the control socket's answer to `migrate`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub job_id: i64,
    pub mode: String,
    pub scanned: u64,
    pub candidates: u64,
    pub deferred: u64,
    pub copied: u64,
    pub bytes_copied: u64,
    pub stubbed: u64,
    pub bytes_freed: u64,
    pub busy: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub files: Vec<Planned>,
    pub seconds: f64,
    /// Stopped early (`coldtier jobs cancel`, or the client went away).
    pub cancelled: bool,
    /// What the stubs of the candidates free (a dry run: would free).
    pub bytes_to_free: u64,
    /// Files named (`coldtier archive`) and left alone, with why.
    pub skipped: Vec<Skipped>,
    /// Stopped before its end by its window or max_duration (why): the files under way
    /// were finished, the rest waits for the next run.
    pub stopped: Option<String>,
    /// What the admin should know that is not an error (a dry run without a store).
    pub notes: Vec<String>,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied,
    /// Stubbed: the bytes this freed on disk (its blocks; a sparse file frees less than
    /// its size).
    Stubbed(u64),
    /// Open by someone: left premigrated for a later run.
    Busy,
    /// Changed since it was copied: its copy is superseded; a later run copies it again.
    Changed,
    /// Nothing to do any more (state changed since the scan).
    Skipped,
}

/// What the part of the stub step under the gate left to record.
enum StubStep {
    /// Stubbed: `row` (pin as read under the gate) gets the stub's event; `freed` bytes.
    Stubbed { row: Box<FileRow>, freed: u64 },
    /// Not stubbed, and why.
    Not(Outcome),
}

impl StubStep {
    fn outcome(&self) -> Outcome {
        match self {
            StubStep::Stubbed { freed, .. } => Outcome::Stubbed(*freed),
            StubStep::Not(o) => *o,
        }
    }
}

fn plan_name(p: Plan) -> &'static str {
    match p {
        Plan::Copy => "copy",
        Plan::CopyThenStub => "copy+stub",
        Plan::Stub => "stub",
    }
}

fn time_of(t: (i64, u32)) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::new(t.0 as u64, t.1)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.0.unsigned_abs()) + Duration::from_nanos(t.1 as u64)
    }
}

fn facts_of(rel: &Path, st: &Stat) -> FileFacts {
    FileFacts {
        rel_path: rel.to_path_buf(),
        size: st.size,
        atime: time_of(st.atime),
        mtime: time_of(st.mtime),
        ctime: time_of(st.ctime),
        state: FileState::Resident,
        pinned: false,
        is_regular: st.file_type() == libc::S_IFREG,
        nlink: st.nlink as u64,
    }
}

fn unchanged(a: &Stat, b: &Stat) -> bool {
    a.size == b.size && a.mtime == b.mtime && a.ctime == b.ctime && a.ino == b.ino
}

/// Walks the tree below `start` (relative to `root`; "" for all) on the filesystem
/// `root_dev`, calling `f(rel_path, stat, dir_fd, name)` for every regular file. Symlinks
/// are not followed, other filesystems not entered; a directory that cannot be opened or
/// read goes to `skipped` and the walk goes on. Used by the daemon (scan, status -r,
/// verify) and by the offline catalog rebuild.
pub fn walk_tree(
    root: BorrowedFd<'_>,
    root_dev: u64,
    start: &Path,
    skipped: &mut dyn FnMut(&Path, crate::fs::backing::Errno),
    f: &mut dyn FnMut(&Path, &Stat, BorrowedFd<'_>, &OsStr),
) -> Result<(), crate::fs::backing::Errno> {
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let top = backing::open_beneath(root, start, dir_flags)?;
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(top, start.to_path_buf())];
    let mut buf = vec![0u8; 64 * 1024];
    while let Some((dir, rel)) = stack.pop() {
        let mut subdirs = Vec::new();
        let read = backing::for_each_dirent(dir.as_fd(), &mut buf, |r| {
            if r.kind != libc::DT_DIR && r.kind != libc::DT_REG && r.kind != libc::DT_UNKNOWN {
                return;
            }
            let Ok(st) = backing::stat_at(dir.as_fd(), r.name) else {
                return;
            };
            let child = rel.join(r.name);
            if st.is_dir() {
                if st.dev == root_dev {
                    match backing::open_at(dir.as_fd(), r.name, dir_flags, 0) {
                        Ok(d) => subdirs.push((d, child)),
                        Err(e) => skipped(&child, e),
                    }
                }
            } else if st.file_type() == libc::S_IFREG {
                f(&child, &st, dir.as_fd(), r.name);
            }
        });
        if let Err(e) = read {
            skipped(&rel, e);
        }
        stack.extend(subdirs);
    }
    Ok(())
}

/// HEADs in flight at once when a bulk release checks its files' copies ahead.
const COPY_CHECKS_AT_ONCE: usize = 16;

impl Tiering {
    /// Walks the backing tree below `start` (relative; "" for all) on this filesystem,
    /// calling `f(rel_path, stat, dir_fd, name)` for every regular file ([`walk_tree`]);
    /// a directory that cannot be read is logged and skipped.
    pub fn walk(
        &self,
        start: &Path,
        f: &mut dyn FnMut(&Path, &Stat, BorrowedFd<'_>, &OsStr),
    ) -> Result<(), StepError> {
        let mut skipped = |dir: &Path, e: crate::fs::backing::Errno| {
            tracing::warn!(dir = %dir.display(), "scan: cannot read directory: {e:?}");
        };
        walk_tree(self.root(), self.root_dev, start, &mut skipped, f)?;
        Ok(())
    }

    /// The state and pin flag of a regular file, from its records and the catalog.
    pub fn state_of(
        &self,
        fd: BorrowedFd<'_>,
    ) -> (FileState, bool, Option<FileRow>, Option<StubRecord>) {
        if !marks::may_have_marks(fd) {
            return (FileState::Resident, false, None, None);
        }
        // The records first: a compact stub's id is in its record (no `id` xattr).
        let stub = marks::record(fd, marks::STUB).ok().flatten();
        let copy = match stub {
            None => marks::record(fd, marks::COPY).ok().flatten(),
            Some(_) => None,
        };
        let id = marks::id_xattr(fd)
            .ok()
            .flatten()
            .or_else(|| stub.as_ref().or(copy.as_ref()).map(|r| r.file_id.clone()));
        let row = id
            .as_deref()
            .and_then(|id| self.catalog.file_by_id(id).ok().flatten());
        let pinned = row.as_ref().is_some_and(|r| r.pinned);
        if let Some(rec) = stub {
            let state = match row.as_ref().map(|r| r.state) {
                Some(s @ (FileState::Recalling | FileState::RestorePending)) => s,
                _ if self.recall_in_flight(fd) => FileState::Recalling,
                _ => FileState::Stub,
            };
            return (state, pinned, row, Some(rec));
        }
        if let Some(rec) = copy {
            return (FileState::Premigrated, pinned, row, Some(rec));
        }
        (FileState::Resident, pinned, row, None)
    }

    /// Brings the catalog's path of a tracked empty-looking file (a stub) up to date: a
    /// rename of one of its directories, or one made without the mount, moved it. With
    /// `compact` (its node id), a pack member's stub with a full record (made before
    /// compact records) gets its compact one (returns true).
    fn refresh_path(
        &self,
        rel: &Path,
        compact: Option<u64>,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> bool {
        let Ok(fd) = backing::open_path_at(dir, name) else {
            return false;
        };
        // One read of the id: a stub with the `id` xattr may be an old full member stub.
        let Ok(Some((id, from_xattr))) = marks::file_id_from(fd.as_fd()) else {
            return false;
        };
        let compacted = match compact {
            Some(node) if from_xattr => self.compact_stub(node, fd.as_fd()),
            _ => false,
        };
        let Some(rel) = rel.to_str() else {
            return compacted;
        };
        if let Ok(Some(row)) = self.catalog.file_by_id(&id) {
            if row.path != rel {
                if let Err(e) = self.catalog.rename_path(&id, rel) {
                    tracing::warn!(path = rel, "catalog: cannot update the path: {e}");
                }
            }
        }
        compacted
    }

    /// Rewrites the full stub record of a pack member (a stub made before compact records:
    /// its record and `id` xattr in a block) in its compact form, under the file's gate,
    /// which frees the block (docs/architecture.md "Compact stub records"). `set_stub`'s
    /// order keeps the file a stub that names itself at every step. Whether it did.
    fn compact_stub(&self, node: u64, fd: BorrowedFd<'_>) -> bool {
        if !marks::has_full_member_stub(fd) {
            return false;
        }
        let _held = self.gate.lock(node);
        // Read again under the gate: a recall may have switched the file meanwhile.
        let Ok(Some(rec)) = marks::record(fd, marks::STUB) else {
            return false;
        };
        if rec.encode_compact().is_none() || !marks::has_full_member_stub(fd) {
            return false;
        }
        match marks::set_stub(fd, &rec, || {}) {
            Ok(()) => {
                self.reset_mark(node);
                true
            }
            Err(e) => {
                tracing::warn!(file_id = %rec.file_id, "cannot rewrite the stub record compact: {e:?}");
                false
            }
        }
    }

    /// Scans the tree and evaluates the policy: the candidates with their plans, and how
    /// many files were looked at.
    pub fn scan(&self, mode: MigrateMode) -> Result<ScanResult, StepError> {
        self.scan_scope(mode, &Scope::default())
    }

    /// [`Tiering::scan`] of what `scope` names (the whole mount, trees, files).
    pub fn scan_scope(&self, mode: MigrateMode, scope: &Scope) -> Result<ScanResult, StepError> {
        let mut policy = self.settings().policy.clone();
        policy.mode = mode;
        if scope.on_demand {
            // `coldtier archive`: whatever the file's age and size, and whether or not an
            // include pattern takes it; excludes, pins and hard links still hold.
            policy.include = Default::default();
            policy.atime_older_than = Duration::ZERO;
            policy.min_size = 1;
            policy.max_size = None;
            policy.mode = if scope.release {
                MigrateMode::Stub
            } else {
                MigrateMode::CopyOnly
            };
        }
        let now = SystemTime::now();
        let mut res = ScanResult::default();
        let mut seen = std::collections::HashSet::new();
        // Opens through the mount count as uses (`super::usage`).
        self.flush_usage();
        let opened = self.catalog.used_times().unwrap_or_else(|e| {
            tracing::warn!("catalog: cannot read last opens (atime and mtime alone decide): {e}");
            Default::default()
        });
        let whole = [PathBuf::new()];
        let starts = if scope.paths.is_empty() {
            &whole[..]
        } else {
            &scope.paths[..]
        };
        for start in starts {
            // A file named: its directory, that name only.
            let kind = if start.as_os_str().is_empty() {
                Some(libc::S_IFDIR)
            } else {
                backing::open_beneath(self.root(), start, libc::O_PATH | libc::O_NOFOLLOW)
                    .and_then(|fd| backing::stat_fd(fd.as_fd()))
                    .ok()
                    .map(|st| st.file_type())
            };
            let skip = |res: &mut ScanResult, kind: &'static str, why: String| {
                res.skipped.push(Skipped {
                    path: start.to_string_lossy().into_owned(),
                    kind,
                    reason: why,
                });
            };
            match kind {
                None if scope.on_demand => {
                    skip(&mut res, "missing", "no such file".into());
                    continue;
                }
                Some(libc::S_IFDIR) if scope.on_demand && !scope.recursive => {
                    skip(
                        &mut res,
                        "directory",
                        "a directory (-r takes a tree)".into(),
                    );
                    continue;
                }
                Some(k) if scope.on_demand && k != libc::S_IFDIR && k != libc::S_IFREG => {
                    skip(&mut res, "not-regular", SkipReason::NotRegular.to_string());
                    continue;
                }
                _ => {}
            }
            let one_file = kind.is_some_and(|k| k != libc::S_IFDIR);
            let (dir, only) = if one_file {
                (start.parent().unwrap_or(Path::new("")), start.file_name())
            } else {
                (start.as_path(), None)
            };
            self.walk(dir, &mut |rel, st, dir, name| {
                if only.is_some_and(|o| o != name) || !seen.insert(rel.to_path_buf()) {
                    return;
                }
                res.scanned += 1;
                if st.size == 0 && !scope.on_demand {
                    // Only a run that frees space rewrites records: a dry run changes
                    // nothing on the files.
                    let compact = policy.mode == MigrateMode::Stub;
                    if self.refresh_path(rel, compact.then_some(st.ino), dir, name) {
                        res.compacted += 1;
                    }
                    return;
                }
                let mut facts = facts_of(rel, st);
                if let Some(&ns) = opened.get(&st.ino) {
                    facts.atime = facts.atime.max(time_of((
                        ns.div_euclid(1_000_000_000),
                        ns.rem_euclid(1_000_000_000) as u32,
                    )));
                }
                // Cheap checks first (stubs have no local bytes: they stop at Empty). An
                // archive reports every file it leaves, so it reads each one's state.
                if !scope.on_demand
                    && matches!(
                        policy::evaluate(&policy, &facts, now),
                        Decision::Skip(
                            SkipReason::NotRegular
                                | SkipReason::HardLinked { .. }
                                | SkipReason::Excluded(_)
                                | SkipReason::NotIncluded
                                | SkipReason::TooRecent { .. }
                                | SkipReason::TooSmall { .. }
                                | SkipReason::TooLarge { .. }
                                | SkipReason::Empty,
                        )
                    )
                {
                    return;
                }
                let Ok(fd) = backing::open_path_at(dir, name) else {
                    return;
                };
                let (state, pinned, _, rec) = self.state_of(fd.as_fd());
                facts.state = state;
                facts.pinned = pinned;
                // A copy record of another size than the file has now is stale. Other times
                // alone (a touch, a rename) are the stub step's to judge, by the content.
                if state == FileState::Premigrated && rec.is_some_and(|r| r.size != st.size) {
                    facts.state = FileState::Resident;
                }
                match policy::evaluate(&policy, &facts, now) {
                    Decision::Candidate { plan, .. } => {
                        if matches!(plan, Plan::Stub | Plan::CopyThenStub) {
                            res.frees.insert(rel.to_path_buf(), st.blocks * 512);
                        }
                        res.candidates.push((facts, plan));
                    }
                    Decision::Skip(why) if scope.on_demand => {
                        res.skipped.push(Skipped {
                            path: rel.to_string_lossy().into_owned(),
                            kind: skip_kind(&why),
                            reason: why.to_string(),
                        });
                    }
                    Decision::Skip(_) => {}
                }
            })?;
        }
        Ok(res)
    }

    /// A policy run: scan, select within the limits, then copy (and stub) up to a few
    /// files at a time. `progress` hears about it as it goes (the totals once the scan
    /// has chosen the candidates).
    pub async fn run_policy(
        self: &Arc<Self>,
        mode: MigrateMode,
        kind: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<RunSummary, StepError> {
        self.run_policy_scope(mode, kind, progress, cancel, Scope::default())
            .await
    }

    /// [`Tiering::run_policy`] on what `scope` names: trees or files (relative to the
    /// mount), and with `scope.on_demand` whatever their age and size (`coldtier
    /// archive`).
    pub async fn run_policy_scope(
        self: &Arc<Self>,
        mode: MigrateMode,
        kind: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
        scope: Scope,
    ) -> Result<RunSummary, StepError> {
        let Ok(_job) = self.job_lock.try_lock() else {
            return Err(StepError::new(
                libc::EBUSY,
                "another policy run or gc is in progress",
            ));
        };
        let t0 = std::time::Instant::now();
        if mode != MigrateMode::DryRun {
            self.store()?;
            self.not_paused()?;
        }
        let job_id = self
            .catalog
            .start_job(kind, mode.as_str())
            .map_err(StepError::from)?;
        let _running = self.running_job(job_id, kind, cancel);
        progress(Progress::new("scanning", 0, 0));
        let me = self.clone();
        let on_demand = scope.on_demand;
        let scan = tokio::task::spawn_blocking(move || me.scan_scope(mode, &scope))
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("scan task: {e}")))?;
        let scan = match scan {
            Ok(s) => s,
            Err(e) => {
                let counts = JobCounts {
                    errors: vec![e.message.clone()],
                    ..Default::default()
                };
                let _ = self.catalog.finish_job(job_id, &counts);
                return Err(e);
            }
        };
        if scan.compacted > 0 {
            tracing::info!(
                stubs = scan.compacted,
                "pack members' stub records rewritten in their compact form (their xattr blocks freed)"
            );
        }
        let p = &self.settings().policy;
        // Files named by hand are all taken: the run limits are the policy's.
        let sel = if on_demand {
            policy::select(scan.candidates, None, None)
        } else {
            policy::select(scan.candidates, p.max_files, p.max_bytes)
        };
        let frees = |f: &FileFacts| scan.frees.get(&f.rel_path).copied().unwrap_or(0);
        let mut summary = RunSummary {
            job_id,
            mode: mode.as_str().into(),
            scanned: scan.scanned,
            bytes_to_free: sel.selected.iter().map(|(f, _)| frees(f)).sum(),
            skipped: scan.skipped,
            candidates: sel.selected.len() as u64,
            deferred: sel.deferred.len() as u64,
            files: sel
                .selected
                .iter()
                .map(|(f, plan)| Planned {
                    path: f.rel_path.to_string_lossy().into_owned(),
                    size: f.size,
                    plan: plan_name(*plan),
                    frees: frees(f),
                })
                .collect(),
            ..Default::default()
        };
        progress(Progress {
            message: format!("{} candidates, {} bytes", sel.selected.len(), sel.bytes),
            files: 0,
            bytes: 0,
            totals: Some(Totals {
                files: sel.selected.len() as u64,
                bytes: sel.bytes,
            }),
        });
        // Where the run must stop: the end of its window (scheduled runs), its
        // max_duration (scheduled and migrate runs; not an archive of files named by hand).
        let stop_at = (!on_demand).then(|| self.stop_at(kind, t0)).flatten();
        if self.store_opt().is_none() {
            summary.notes.push(
                "no [store] is configured: nothing can be tiered (a real run fails) until a \
                 [store] section is added and the config reloaded"
                    .into(),
            );
        }
        if mode != MigrateMode::DryRun {
            let stub = mode == MigrateMode::Stub;
            let budget = InFlight::of(&self.settings().uploads);
            let deadline = async {
                match &stop_at {
                    Some((at, _)) => tokio::time::sleep_until((*at).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(deadline);
            let sem = Arc::new(tokio::sync::Semaphore::new(budget.slots));
            let done_files = Arc::new(AtomicU64::new(0));
            let done_bytes = Arc::new(AtomicU64::new(0));
            let mut set = tokio::task::JoinSet::new();
            // Small files go in packs ([pack]), each pack one task; the others one each.
            let (packs, singles) = super::pack::plan_packs(sel.selected, &self.settings().pack);
            let work = packs
                .into_iter()
                .map(Work::Pack)
                .chain(singles.into_iter().map(|(f, p)| Work::One(f, p)));
            for w in work {
                let need = budget.slots_for(w.bytes());
                // Cancelled: no new file is started; the ones under way finish.
                let permit = tokio::select! {
                    p = sem.clone().acquire_many_owned(need) => p.expect("semaphore open"),
                    _ = cancel.cancelled() => break,
                    _ = &mut deadline => {
                        summary.stopped = stop_at.as_ref().map(|(_, why)| why.clone());
                        break;
                    }
                };
                if cancel.is_cancelled() {
                    break;
                }
                if let Some((at, why)) = &stop_at {
                    if std::time::Instant::now() >= *at {
                        summary.stopped = Some(why.clone());
                        break;
                    }
                }
                let me = self.clone();
                let (df, db) = (done_files.clone(), done_bytes.clone());
                // Each file (or pack) on a blocking thread of its own: its catalog
                // writes, xattrs and fsyncs block, and must not hold the runtime's few
                // workers.
                let rt = self.rt.clone();
                set.spawn_blocking(move || {
                    let (n, bytes) = (w.files(), w.bytes());
                    let r = match w {
                        Work::One(facts, plan) => {
                            let r = rt.block_on(me.migrate_file(&facts.rel_path, plan, stub));
                            vec![(facts, plan, r)]
                        }
                        Work::Pack(items) => rt.block_on(me.migrate_pack(items, stub)),
                    };
                    df.fetch_add(n, Ordering::Relaxed);
                    db.fetch_add(bytes, Ordering::Relaxed);
                    drop(permit);
                    r
                });
                while let Some(res) = set.try_join_next() {
                    tally(&mut summary, res);
                }
                progress(Progress::new(
                    "migrating",
                    done_files.load(Ordering::Relaxed),
                    done_bytes.load(Ordering::Relaxed),
                ));
            }
            while let Some(res) = set.join_next().await {
                tally(&mut summary, res);
                progress(Progress::new(
                    "migrating",
                    done_files.load(Ordering::Relaxed),
                    done_bytes.load(Ordering::Relaxed),
                ));
            }
        }
        // The records of the run (written lazily) on disk before it reports.
        if let Err(e) = self.catalog.sync() {
            tracing::error!("catalog: {e}");
        }
        if let Some(why) = &summary.stopped {
            tracing::info!(
                job_id,
                "policy run stopped: {why}; the next run goes on with the rest"
            );
        }
        if cancel.is_cancelled() {
            summary.cancelled = true;
            summary
                .errors
                .push("cancelled: the files under way were finished, no other was started".into());
            tracing::warn!(job_id, "policy run cancelled");
        }
        summary.seconds = t0.elapsed().as_secs_f64();
        let counts = JobCounts {
            files_scanned: summary.scanned,
            files_copied: summary.copied,
            bytes_copied: summary.bytes_copied,
            files_stubbed: summary.stubbed,
            files_failed: summary.failed,
            errors: summary.errors.clone(),
            bytes_stubbed: summary.bytes_freed,
        };
        if let Err(e) = self.catalog.finish_job(job_id, &counts) {
            tracing::error!("catalog: cannot finish job {job_id}: {e}");
        }
        tracing::info!(
            job_id,
            mode = mode.as_str(),
            scanned = summary.scanned,
            copied = summary.copied,
            stubbed = summary.stubbed,
            failed = summary.failed,
            seconds = summary.seconds,
            "policy run finished"
        );
        if summary.failed > 0 {
            tracing::error!(
                job_id,
                "policy run finished with {} failed files (first: {})",
                summary.failed,
                summary.errors.first().map_or("", String::as_str)
            );
        }
        Ok(summary)
    }

    /// When a run of `kind` started at `t0` must stop, and why: the end of
    /// `policy.window` (scheduled runs) or `policy.max_duration`, whichever comes first.
    fn stop_at(&self, kind: &str, t0: std::time::Instant) -> Option<(std::time::Instant, String)> {
        let p = &self.settings().policy;
        let mut at: Option<(std::time::Instant, String)> = p.max_duration.map(|d| {
            (
                t0 + d,
                format!("policy.max_duration ({}s) reached", d.as_secs()),
            )
        });
        if kind == "scheduled" {
            if let Some(w) = p.window {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                // Outside the window the scheduler does not start the run; zero left.
                let left = w.remaining(now).unwrap_or(Duration::ZERO);
                let end = std::time::Instant::now() + left;
                if at.as_ref().is_none_or(|(a, _)| end < *a) {
                    at = Some((end, format!("the end of policy.window {w} (UTC)")));
                }
            }
        }
        at
    }

    /// Copies (and with `stub`, stubs) one file by its path relative to the source.
    pub async fn migrate_file(
        &self,
        rel: &Path,
        plan: Plan,
        stub: bool,
    ) -> Result<Outcome, StepError> {
        let _in_flight = crate::tier::metrics::MIGRATIONS_IN_FLIGHT.track();
        let file = self.open_to_copy(rel)?;
        let st = backing::stat_fd(file.as_fd())?;
        if st.file_type() != libc::S_IFREG || st.nlink != 1 {
            return Ok(Outcome::Skipped);
        }
        let node = self.node_id(&st);
        if marks::record(file.as_fd(), marks::STUB)?.is_some() {
            return Ok(Outcome::Skipped);
        }
        refuse_unchangeable(file.as_fd())?;
        if plan == Plan::Stub {
            let Some(rec) = marks::record(file.as_fd(), marks::COPY)? else {
                return Ok(Outcome::Skipped);
            };
            // A copy proven long ago may be gone from the bucket since: it is dropped and
            // the file copied again now.
            if let Some(why) = self.copy_still_there(&rec).await? {
                self.drop_gone_copy(node, &file, &rec, &why)?;
            } else {
                let row = self.row_for(&rec, file.as_fd(), FileState::Premigrated);
                let expect = (row.size, row.mtime_ns, row.ctime_ns);
                self.ensure_copies(&file, &rec, &row.path).await?;
                match self.stub_step(
                    node,
                    &file,
                    &rec,
                    expect,
                    Action::Stub,
                    (Vec::new(), false),
                )? {
                    // Its copy could not be proven current (changed, or the catalog lost the
                    // copy's last step in a crash): superseded; copy it again now.
                    Outcome::Changed => {}
                    o => return Ok(o),
                }
            }
        }
        // With `stub`, the copy's records (COPIED, VERIFIED) are written with the stub's
        // (STUBBED), in one transaction: one row write per file instead of two. Straight
        // to the stub or not is decided once, with the copy (`policy.copies`): a reload
        // that raises it meanwhile counts from the next file on.
        let (rec, expect, copied, direct) = self.copy_step(node, rel, &file, stub).await?;
        if !stub {
            return Ok(Outcome::Copied);
        }
        // policy.copies: the replicas' copies before the data may go; without them the
        // file stays premigrated (its copy's records written on their own).
        if !direct {
            if let Err(e) = self
                .ensure_copies(&file, &rec, &rel.to_string_lossy())
                .await
            {
                if !copied.is_empty() {
                    self.catalog.transition_batch_with(&copied, false)?;
                }
                return Err(e);
            }
        }
        self.stub_step(node, &file, &rec, expect, Action::Stub, (copied, direct))
    }

    /// Records a copy that failed: FAILED, naming the object (which may exist even when
    /// the upload failed: an answer lost on the way) for gc to delete after the retention;
    /// the event also ends the upload's intent. An object that exists is tagged
    /// `discarded` (in the background).
    pub(super) fn failed_event(
        &self,
        row: &FileRow,
        error: &str,
        object: Option<(&str, Option<&str>)>,
    ) {
        let mut detail = json!({"error": error});
        if let Some((k, v)) = object {
            detail["object_key"] = json!(k);
            detail["version_id"] = json!(v);
        }
        if let Err(e) = self.catalog.append_event(
            Some(&row.file_id),
            Some(&row.path),
            EventKind::Failed,
            detail,
        ) {
            tracing::error!("catalog: cannot record FAILED: {e}");
        }
        if let Some((k, Some(v))) = object {
            self.tag_later(k.to_string(), Some(v.to_string()), "discarded");
        }
    }

    /// Copy and verify: resident -> premigrated. Returns the copy record, the (size, mtime,
    /// ctime) the file has with it (the copy record's write changed the ctime), and with
    /// `defer` the catalog records of the copy for the caller to write (else they are
    /// written).
    async fn copy_step(
        &self,
        node: u64,
        rel: &Path,
        file: &File,
        defer: bool,
    ) -> Result<(StubRecord, (u64, i64, i64), Vec<Transition>, bool), StepError> {
        let store = self.store()?;
        let path = rel.to_string_lossy().into_owned();
        let st_before = backing::stat_fd(file.as_fd())?;
        let (id, new_id, mut row) = self.identity(file, &path, st_before.ino, true)?;
        let st0 = backing::stat_fd(file.as_fd())?;
        let version = (system_now_ns().max(1)) as u64;
        let key = object_key(KEY_PREFIX, &id, version);
        let config_version = self.catalog.config_version_in_force();
        let mut path_meta = path.clone();
        if path_meta.len() > 1024 {
            let mut cut = 1024;
            while !path_meta.is_char_boundary(cut) {
                cut -= 1;
            }
            path_meta.truncate(cut);
        }
        // A sparse file: only its data goes to the store (its holes are recreated at
        // recall); the object's size is then the data's.
        let extents = if st0.blocks.saturating_mul(512) < st0.size {
            backing::data_extents(file.as_fd(), st0.size)
                .ok()
                .and_then(|d| sparse_extents(&d, st0.size))
        } else {
            None
        };
        let obj_size = extents.as_ref().map_or(st0.size, |e| e.data_len());
        let mut metadata = BTreeMap::from([
            ("coldtier-path".to_string(), path_meta),
            ("coldtier-file-id".to_string(), id.clone()),
            ("coldtier-size".to_string(), st0.size.to_string()),
            (
                "coldtier-mtime-ns".to_string(),
                ns_of(st0.mtime).to_string(),
            ),
            ("coldtier-mode".to_string(), format!("{:o}", st0.mode)),
            ("coldtier-uid".to_string(), st0.uid.to_string()),
            ("coldtier-gid".to_string(), st0.gid.to_string()),
            (
                "coldtier-config-version".to_string(),
                config_version.to_string(),
            ),
            ("coldtier-host".to_string(), self.host.clone()),
        ]);
        if let Some(e) = &extents {
            metadata.insert("coldtier-extents".to_string(), extents_to_meta(e));
        }
        let tags = BTreeMap::from([("coldtier-state".to_string(), "live".to_string())]);
        // A store whose checksums prove nothing has each copy read back; an archived
        // object cannot be read back, so it is uploaded STANDARD, proven, and then moved
        // to its archive class on the server.
        let wanted = self.configured_class();
        let archive_after = !self.store_validates() && wanted.is_archive();
        // The object is the catalog's before it exists: a crash from here on leaves an
        // intent that the next start resolves, never an object nobody knows.
        self.catalog.begin_upload(&key, &id, &path)?;
        self.failpoint("migrate-after-intent");
        let put = store
            .put(PutRequest {
                key: key.clone(),
                body: file
                    .try_clone()
                    .map_err(|e| StepError::new(libc::EIO, e.to_string()))?
                    .into(),
                size: obj_size,
                storage_class: archive_after.then_some(StorageClass::Standard),
                metadata,
                tags,
                checksum: None,
                extents: extents.clone(),
            })
            .await;
        let mut put = match put {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("PUT {}: {e}", self.full_key(&key));
                self.failed_event(&row, &msg, Some((&key, None)));
                return Err(StepError::new(libc::EIO, msg));
            }
        };
        self.failpoint("migrate-after-put");
        crate::tier::metrics::migrated(obj_size);
        let detail = json!({
            "object_key": key,
            "version_id": put.version_id,
            "bytes": obj_size,
            "checksum": put.checksum.to_string(),
            "parts": put.parts,
        });
        row.size = st0.size;
        row.mtime_ns = ns_of(st0.mtime);
        row.ctime_ns = ns_of(st0.ctime);
        row.ino = st0.ino;
        self.claim_path(&id, &path);
        // COPIED is recorded with VERIFIED, in one transaction, once the copy is proven
        // (one commit per file fewer); an unproven copy is recorded by its FAILED event,
        // which names the object for gc.
        let copied = (row.clone(), EventKind::Copied, detail);

        // Verify: the store's checksum of that exact version, or a read-back.
        let verified = self
            .verify(&key, put.version_id.as_deref(), obj_size, &put)
            .await;
        let verified = match (verified, archive_after) {
            (Ok(_), true) => self.archive_proven(&key, obj_size, &mut put, wanted).await,
            (v, _) => v,
        };
        let meta = match verified {
            Ok(m) => m,
            Err(msg) => {
                self.failed_event(&row, &msg, Some((&key, put.version_id.as_deref())));
                return Err(StepError::new(libc::EIO, msg));
            }
        };
        self.failpoint("migrate-after-verify");
        let rec = StubRecord {
            version: STUB_VERSION,
            file_id: id.clone(),
            object_key: key.clone(),
            version_id: put.version_id.clone(),
            size: st0.size,
            mtime_ns: ns_of(st0.mtime),
            ctime_ns: ns_of(st0.ctime),
            ino: st0.ino,
            checksum_algo: put.checksum.algo.name().to_string(),
            checksum: put.checksum.base64(),
            md5: None,
            storage_class: meta.0.clone(),
            config_version,
            content_mtime_ns: None,
            extents,
            chunks: put.chunks.clone(),
            pack: None,
        };
        let direct = self.stubs_directly(defer, new_id);
        let Some(ctime) = self.set_copy_record(node, file, (&st0, new_id), &rec, direct)? else {
            let msg = "changed while it was being copied (the copy is discarded)".to_string();
            self.failed_event(&row, &msg, Some((&key, put.version_id.as_deref())));
            return Err(StepError::new(libc::EAGAIN, msg));
        };
        self.tag_whole_checksum(&key, &put).await;
        fill_from_record(&mut row, &rec);
        row.ctime_ns = ctime;
        let detail = json!({
            "object_key": key,
            "version_id": put.version_id,
            "checksum": put.checksum.to_string(),
            "verify": meta.1,
            "storage_class": rec.storage_class,
        });
        let state = crate::tier::state::transition(row.state, row.pinned, Action::CopyVerified)
            .ok()
            .and_then(|t| t.next)
            .unwrap_or(FileState::Premigrated);
        row.state = state;
        let now = (row.size, row.mtime_ns, row.ctime_ns);
        let items = vec![copied, (row, EventKind::Verified, detail)];
        if defer {
            return Ok((rec, now, items, direct));
        }
        // Lazy: the run's end makes its records durable with one fsync (`run_policy`).
        self.catalog.transition_batch_with(&items, false)?;
        Ok((rec, now, Vec::new(), direct))
    }

    /// A multipart object's own checksum is a composite: the whole-object one is kept
    /// with it as a tag (metadata cannot change after the upload; tags can).
    pub(super) async fn tag_whole_checksum(&self, key: &str, put: &crate::store::PutResult) {
        if put.parts <= 1 {
            return;
        }
        let Ok(store) = self.store() else { return };
        let tags = BTreeMap::from([
            ("coldtier-state".to_string(), "live".to_string()),
            ("coldtier-checksum".to_string(), put.checksum.to_string()),
        ]);
        if let Err(e) = store.set_tags(key, put.version_id.as_deref(), tags).await {
            tracing::warn!(key = %self.full_key(key), "cannot tag the whole-object checksum: {e}");
        }
    }

    /// `rel` opened for reading its data into a copy (without moving its atime where the
    /// kernel allows).
    pub(super) fn open_to_copy(&self, rel: &Path) -> Result<File, StepError> {
        let fd = backing::open_beneath(
            self.root(),
            rel,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME,
        )
        .or_else(|_| backing::open_beneath(self.root(), rel, libc::O_RDONLY | libc::O_NOFOLLOW))?;
        Ok(File::from(fd))
    }

    /// Before the data of a file premigrated earlier is freed from its copy record (a
    /// policy run that stubs, `coldtier release`): whether the copy is still in the store
    /// as recorded. It was proven when it was made, perhaps months ago; a lifecycle rule,
    /// a person or another tool may have deleted or replaced it since, and freeing the
    /// data then would lose the file. A HEAD of the recorded version: None if it is there,
    /// of the recorded size (a pack's, for a member); Some(why) if it is gone or not what
    /// was recorded; an error if the store could not answer (nothing is freed then). An
    /// answer of the last few seconds is used again: the members of one pack ask once.
    pub(crate) async fn copy_still_there(
        &self,
        rec: &StubRecord,
    ) -> Result<Option<String>, StepError> {
        const FRESH: Duration = Duration::from_secs(10);
        let key = (rec.object_key.clone(), rec.version_id.clone());
        let now = std::time::Instant::now();
        {
            let mut seen = self.copies_seen.lock();
            seen.retain(|_, at| now.duration_since(*at) < FRESH);
            if seen.contains_key(&key) {
                return Ok(None);
            }
        }
        let want = rec.pack.as_ref().map_or(rec.object_size(), |p| p.pack_size);
        let store = self.store()?;
        let full = self.full_key(&rec.object_key);
        match store.head(&rec.object_key, rec.version_id.as_deref()).await {
            Ok(m) if m.size == want => {
                self.copies_seen.lock().insert(key, now);
                Ok(None)
            }
            Ok(m) => Ok(Some(format!(
                "its copy {full} is {} bytes in the store, the record says {want} (replaced?)",
                m.size
            ))),
            Err(e) if e.is(StoreErrorKind::NotFound) => Ok(Some(format!(
                "its copy {full} (version {:?}) is not in the store any more",
                rec.version_id
            ))),
            Err(e) => Err(StepError::new(
                libc::EIO,
                format!("HEAD {full}, to check the copy is still there: {e}"),
            )),
        }
    }

    /// Asks the store at once, [`COPY_CHECKS_AT_ONCE`] at a time, for the copies that the
    /// premigrated files among `rels` name, so that each [`Tiering::copy_still_there`] of a
    /// release that follows finds its answer: a bulk release waits for one HEAD per
    /// batch, not per file. What is gone or fails is left for that check to find again.
    /// On a plain thread (the control socket's).
    pub fn check_copies_ahead(&self, rels: &[PathBuf]) {
        let mut recs = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for rel in rels {
            let Ok(fd) = backing::open_beneath(self.root(), rel, libc::O_PATH | libc::O_NOFOLLOW)
            else {
                continue;
            };
            if let Ok(Some(rec)) = marks::record(fd.as_fd(), marks::COPY) {
                if keys.insert((rec.object_key.clone(), rec.version_id.clone())) {
                    recs.push(rec);
                }
            }
        }
        if recs.is_empty() {
            return;
        }
        self.rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for rec in recs {
                while set.len() >= COPY_CHECKS_AT_ONCE {
                    set.join_next().await;
                }
                let me = self.arc();
                set.spawn(async move {
                    let _ = me.copy_still_there(&rec).await;
                });
            }
            while set.join_next().await.is_some() {}
        });
    }

    /// The copy record `rec` of `file` names a copy that is gone ([`Tiering::copy_still_there`]):
    /// it is superseded (SUPERSEDED, with `why`), the file is resident again and its next
    /// copy is a new one. Under the file's gate; nothing if its record changed meanwhile.
    pub(crate) fn drop_gone_copy(
        &self,
        node: u64,
        file: &File,
        rec: &StubRecord,
        why: &str,
    ) -> Result<(), StepError> {
        let _held = self.gate.lock(node);
        let now = marks::record(file.as_fd(), marks::COPY)?;
        if now.as_ref().map(|r| (&r.object_key, &r.version_id))
            != Some((&rec.object_key, &rec.version_id))
        {
            return Ok(());
        }
        tracing::warn!(path = ?self.rel_of(file.as_fd()), "{why}: its copy record is dropped, and the file copied again");
        self.supersede(file.as_fd(), rec, Action::WriteOrTruncate, why)?;
        self.reset_mark(node);
        Ok(())
    }

    /// The identity a file being copied gets: its id (a new one, not yet written, if it
    /// has none or its id is another file's: a copy of that file's records), whether it is
    /// new, and its catalog row (a new one for a new id) under `path`. `marked` false: the
    /// caller found none of coldtier's xattrs on the file ([`marks::present`]), so it has
    /// no id to read.
    pub(super) fn identity(
        &self,
        file: &File,
        path: &str,
        ino: u64,
        marked: bool,
    ) -> Result<(String, bool, FileRow), StepError> {
        let mut id = if marked {
            marks::file_id(file.as_fd())?
        } else {
            None
        };
        let mut row = None;
        if let Some(i) = &id {
            match self.catalog.file_by_id(i)? {
                Some(r) if r.ino != 0 && r.ino != ino => id = None,
                r => row = r,
            }
        }
        // A new id is written to the file only with its copy record, after the copy is
        // verified: a failed run leaves the file exactly as it was.
        let new_id = id.is_none();
        let id = match id {
            Some(i) => i,
            None => new_file_id().map_err(|e| StepError::new(libc::EIO, e.to_string()))?,
        };
        let mut row = row.unwrap_or_else(|| FileRow::new(id.clone(), path.to_string()));
        row.path = path.to_string();
        Ok((id, new_id, row))
    }

    /// Whether a copy just made goes straight to its stub, with no copy record written in
    /// between (decided once, with the copy): the run stubs (`stub`), no replica must hold
    /// a copy first (a file that waits for one stays premigrated, which only a copy record
    /// says), and the file had no id of its own (`new_id`: a file with an id keeps a name at
    /// every step, invariant 2, and its id may go only while a copy record names it). The
    /// stub record then is the file's first record: one xattr write instead of four (the
    /// id, the copy record, which does not fit in a small inode and takes a block, then the
    /// removal of both), and a crash before it leaves the file as it was, its upload given
    /// up at the next start (docs/architecture.md, "Migrate, in crash-safe order", step 3).
    pub(super) fn stubs_directly(&self, stub: bool, new_id: bool) -> bool {
        stub && new_id && self.settings().policy.copies <= 1
    }

    /// Under the file's gate: if it is as it was when copied (`st0`), not open for
    /// writing, and (`new_id`) no pin gave it an id meanwhile, gives it `rec`'s id and
    /// `rec` as its copy record (unless `direct`: [`Tiering::stubs_directly`], the checks
    /// alone). Its ctime after that, which the stub step expects (the copy's when nothing
    /// was written); None (nothing written): the copy is not the file's.
    pub(super) fn set_copy_record(
        &self,
        node: u64,
        file: &File,
        (st0, new_id): (&Stat, bool),
        rec: &StubRecord,
        direct: bool,
    ) -> Result<Option<i64>, StepError> {
        let held = self.gate.lock(node);
        let st1 = backing::stat_fd(file.as_fd())?;
        // A pin meanwhile may have given a new file its id: ours names the object.
        let id_taken = new_id
            && marks::present(file.as_fd()).is_none_or(marks::Present::any)
            && marks::file_id(file.as_fd())?.is_some();
        if !unchanged(st0, &st1) || held.opens().writers > 0 || id_taken {
            return Ok(None);
        }
        if direct {
            return Ok(Some(ns_of(st1.ctime)));
        }
        if new_id {
            marks::set_file_id(file.as_fd(), &rec.file_id)?;
        }
        marks::set_record(file.as_fd(), marks::COPY, rec)?;
        self.reset_mark(node);
        Ok(Some(ns_of(backing::stat_fd(file.as_fd())?.ctime)))
    }

    /// The storage class uploads get (`store.storage_class`, else STANDARD).
    pub(super) fn configured_class(&self) -> StorageClass {
        self.settings().uploads.storage_class.clone()
    }

    /// Moves a copy proven by reading it back (uploaded STANDARD) to its archive class on
    /// the server, and checks what the server then holds: that exact size, and its
    /// checksum if it reports one. `put` then names the version that holds the data.
    pub(super) async fn archive_proven(
        &self,
        key: &str,
        size: u64,
        put: &mut crate::store::PutResult,
        class: StorageClass,
    ) -> Result<(String, &'static str), String> {
        let store = self.store().map_err(|e| e.message)?;
        let full = self.full_key(key);
        let version = store
            .set_storage_class(key, put.version_id.as_deref(), class.clone())
            .await
            .map_err(|e| format!("archiving {full} as {class} after its read-back: {e}"))?;
        put.version_id = version;
        let meta = store
            .head(key, put.version_id.as_deref())
            .await
            .map_err(|e| format!("verify: HEAD {full} after archiving it: {e}"))?;
        if meta.size != size {
            return Err(format!(
                "verify: {full} is {} bytes after archiving it, it was {size}",
                meta.size
            ));
        }
        if let Some(c) = meta
            .checksum
            .as_ref()
            .filter(|c| c.algo == put.checksum.algo)
        {
            if !put.proven_by(c) {
                return Err(format!(
                    "verify: {full} reports checksum {c} after archiving it, we sent {}",
                    put.expected
                ));
            }
        }
        if meta.storage_class != class {
            return Err(format!(
                "verify: {full} is {} after archiving it as {class}",
                meta.storage_class
            ));
        }
        Ok((
            class.as_str().to_string(),
            "read-back, then archived on the server",
        ))
    }

    /// Proves the object holds what we sent; returns its storage class and how it was
    /// proven. The store's word (the checksum in its answer to the upload, or in a HEAD)
    /// is proof only from a store known to refuse a body that does not match the checksum
    /// sent with it ([`Tiering::store_validates`]); otherwise, and with `verify =
    /// "readback"`, the object is read back and hashed.
    pub(super) async fn verify(
        &self,
        key: &str,
        version: Option<&str>,
        size: u64,
        put: &crate::store::PutResult,
    ) -> Result<(String, &'static str), String> {
        let store = self.store().map_err(|e| e.message)?;
        let trusted = self.settings().policy.verify == Verify::Checksum && self.store_validates();
        // The store's own answer to the upload names the checksum it computed for that
        // version on receipt: from a store that validates, it is the proof, and a HEAD
        // would only ask the same question again.
        if trusted {
            match &put.reported {
                Some(r) if put.proven_by(r) => {
                    return Ok((
                        self.configured_class().as_str().to_string(),
                        "checksum (upload answer)",
                    ))
                }
                Some(r) => {
                    return Err(format!(
                        "verify: {} reports checksum {r}, we sent {}",
                        self.full_key(key),
                        put.expected
                    ))
                }
                None => {}
            }
        }
        let meta = store
            .head(key, version)
            .await
            .map_err(|e| format!("verify: HEAD {}: {e}", self.full_key(key)))?;
        if meta.size != size {
            return Err(format!(
                "verify: {} is {} bytes, the file {size}",
                self.full_key(key),
                meta.size
            ));
        }
        let class = match &meta.storage_class {
            StorageClass::Other(s) if s.is_empty() => "STANDARD".to_string(),
            c => c.as_str().to_string(),
        };
        match &meta.checksum {
            Some(c) if !put.proven_by(c) => {
                return Err(format!(
                    "verify: {} reports checksum {c}, we sent {}",
                    self.full_key(key),
                    put.expected
                ))
            }
            Some(_) if trusted => return Ok((class, "checksum (HEAD)")),
            _ => {}
        }
        // Read it back (hashed as it arrives, not stored) and compare.
        let got = store
            .get(GetRequest {
                key,
                version_id: version,
                dest: None,
                expected_size: size,
                checksum: put.checksum.algo,
                extents: None,
                range: None,
                dest_base: 0,
                progress: None,
            })
            .await;
        let got = match got {
            Ok(g) => g,
            Err(e) if e.is(StoreErrorKind::InvalidObjectState) => {
                return Err(format!(
                    "verify: {} is archived ({class}) and the store does not validate checksums, \
                     so the copy cannot be proven: nothing is stubbed (use a store that \
                     validates checksums, or upload STANDARD and let a bucket lifecycle \
                     rule archive the objects)",
                    self.full_key(key)
                ))
            }
            Err(e) => return Err(format!("verify: read-back of {}: {e}", self.full_key(key))),
        };
        if got.checksum != put.checksum {
            return Err(format!(
                "verify: {} read back as {}, we sent {}",
                self.full_key(key),
                got.checksum,
                put.checksum
            ));
        }
        Ok((class, "read-back"))
    }

    /// Frees the local data of a premigrated file (see the module doc for the order).
    /// `expect`: (size, mtime_ns, ctime_ns) the file must still have; `copied`: the records
    /// of the copy just made (not yet written: they are written first, with this step's in
    /// one transaction when the file is stubbed), and whether that copy gave the file the
    /// id it has (`stubs_directly`: no record or catalog row has it yet).
    pub fn stub_step(
        &self,
        node: u64,
        file: &File,
        rec: &StubRecord,
        expect: (u64, i64, i64),
        action: Action,
        copied: (Vec<Transition>, bool),
    ) -> Result<Outcome, StepError> {
        let (outcome, owed) = self.stub_step_owing(node, file, rec, expect, action, copied)?;
        if let Some((mut row, change)) = owed {
            self.record(&mut row, change)?;
        }
        Ok(outcome)
    }

    /// [`Tiering::stub_step`], returning the lazy catalog record of a stubbed file instead
    /// of writing it: a caller that stubs many files (a pack's members) writes theirs in
    /// one transaction ([`Tiering::record_batch`]), before anything ends the crash cover
    /// of the files' step (the pack's upload intent). `unrecorded`: the file's id is the one
    /// the copy just made gave it (`stubs_directly`), in no record and no catalog row yet.
    pub(super) fn stub_step_owing(
        &self,
        node: u64,
        file: &File,
        rec: &StubRecord,
        expect: (u64, i64, i64),
        action: Action,
        (copied, unrecorded): (Vec<Transition>, bool),
    ) -> Result<(Outcome, Option<(FileRow, Change)>), StepError> {
        let mut copied = copied;
        // Renamed, chmod, touched, xattrs set since the copy: the times moved, the data
        // did not. The content decides (read here, outside the gate); a file whose data
        // changed is found so by the locked part and its copy superseded.
        let expect = self.copy_still_good(file, rec, expect)?.unwrap_or(expect);
        self.failpoint("migrate-before-stub");
        let (mut row, freed) =
            match self.stub_locked(node, file, rec, expect, (&mut copied, unrecorded)) {
                Ok(StubStep::Stubbed { row, freed }) => (row, freed),
                not => {
                    // Not stubbed: the copy's records (if not written yet) on their own.
                    if !copied.is_empty() {
                        self.catalog.transition_batch_with(&copied, false)?;
                    }
                    return not.map(|l| (l.outcome(), None));
                }
            };
        let st = backing::stat_fd(file.as_fd())?;
        row.ctime_ns = ns_of(st.ctime);
        row.mtime_ns = ns_of(st.mtime);
        let detail = json!({"object_key": rec.object_key, "bytes_freed": freed});
        // Lazy: the stub record on the file is the truth, and on disk already; the caller
        // makes the catalog durable at the end of its run (`Catalog::sync`).
        let change = Change::of(action, detail)
            .after(copied)
            .durability(Durability::Lazy);
        Ok((Outcome::Stubbed(freed), Some((*row, change))))
    }

    /// A file whose copy this run made (`copied`: the copy's records, not written yet) and
    /// that keeps its data (pinned, or open), without a copy record (it was to go straight
    /// to its stub: `stubs_directly`; or a write superseded it meanwhile): as it was
    /// copied (`same`), it gets its copy record, and the copy's records the times it has
    /// after that; else the copy is given up (FAILED, naming the object for gc), as one
    /// the file changed during is. A file with its copy record, or whose copy an earlier
    /// run made (whose record must never come back once superseded), is left as it is.
    fn keep_copy(
        &self,
        node: u64,
        fd: BorrowedFd<'_>,
        (rec, same): (&StubRecord, bool),
        copied: &mut Vec<Transition>,
    ) -> Result<(), StepError> {
        if copied.is_empty() || marks::record(fd, marks::COPY)?.is_some() {
            return Ok(());
        }
        if !same {
            let (row, _, _) = copied.pop().expect("not empty");
            copied.clear();
            self.failed_event(
                &row,
                "changed while it was being copied (the copy is discarded)",
                Some((&rec.object_key, rec.version_id.as_deref())),
            );
            return Ok(());
        }
        marks::ensure_file_id(fd, &rec.file_id)?;
        marks::set_record(fd, marks::COPY, rec)?;
        self.reset_mark(node);
        let ctime = ns_of(backing::stat_fd(fd)?.ctime);
        for (r, _, _) in copied.iter_mut() {
            r.ctime_ns = ctime;
        }
        Ok(())
    }

    /// The part of [`Tiering::stub_step`] under the file's gate. Writes `copied` itself
    /// (emptying it) before a SUPERSEDED.
    fn stub_locked(
        &self,
        node: u64,
        file: &File,
        rec: &StubRecord,
        expect: (u64, i64, i64),
        (copied, unrecorded): (&mut Vec<Transition>, bool),
    ) -> Result<StubStep, StepError> {
        let w = backing::reopen(file.as_fd(), libc::O_RDWR)?;
        let held = self.gate.lock(node);
        // The pin is read under the gate, which `pin` holds while it records one. An id
        // the copy just made has no row to read: a pin meanwhile gave the file an id of
        // its own (checked below), never a row under this one.
        let fresh = if unrecorded {
            self.row_unrecorded(rec, w.as_fd(), FileState::Premigrated)
        } else {
            self.row_for(rec, w.as_fd(), FileState::Premigrated)
        };
        // The copy's records go under the file's path of now (renamed meanwhile, its old
        // path may be another file's by now).
        for (r, _, _) in copied.iter_mut() {
            r.path.clone_from(&fresh.path);
        }
        let r = match copied.last() {
            Some((r, _, _)) => {
                let mut r = r.clone();
                r.pinned = fresh.pinned;
                r
            }
            None => fresh,
        };
        let st = backing::stat_fd(w.as_fd())?;
        // Which records the file has, in one call (under the gate: no other step changes
        // them now); a file fresh from its copy has none, and nothing is asked twice.
        let present = marks::present(w.as_fd());
        let may_have_id = present.is_none_or(|p| p.id);
        // Straight from a copy (no copy record in between: `stubs_directly`), a pin may
        // have given a new file another id meanwhile: the copy is not that file's.
        if may_have_id && marks::id_xattr(w.as_fd())?.is_some_and(|id| id != rec.file_id) {
            copied.clear();
            let msg = "given another id while it was being copied (the copy is discarded)";
            self.failed_event(&r, msg, Some((&rec.object_key, rec.version_id.as_deref())));
            return Err(StepError::new(libc::EAGAIN, msg));
        }
        let same = (st.size, ns_of(st.mtime), ns_of(st.ctime)) == expect && st.nlink == 1;
        if r.pinned || held.opens().handles > 0 {
            // The file keeps its data, and its copy if it is current: premigrated.
            self.keep_copy(node, w.as_fd(), (rec, same), copied)?;
            if r.pinned {
                return Err(StepError::new(
                    libc::EPERM,
                    "the file is pinned: its data is never freed",
                ));
            }
            return Ok(StubStep::Not(Outcome::Busy));
        }
        if !same {
            if !copied.is_empty() {
                self.catalog
                    .transition_batch_with(&std::mem::take(copied), false)?;
            }
            self.supersede(
                w.as_fd(),
                rec,
                Action::WriteOrTruncate,
                "changed since it was copied",
            )?;
            self.reset_mark(node);
            return Ok(StubStep::Not(Outcome::Changed));
        }
        let mut srec = rec.clone();
        srec.ctime_ns = ns_of(st.ctime);
        // The times the stub shows (and a recall puts back) are the file's now, which a
        // `touch` since the copy may have moved.
        srec.set_mtime(ns_of(st.mtime));
        marks::set_stub_known(w.as_fd(), &srec, may_have_id, || {
            self.failpoint("migrate-after-id-xattr-removed")
        })?;
        // The stub record reaches the disk before the data is freed, on any
        // filesystem (one without a journal may write metadata out of order).
        backing::fsync(w.as_fd(), false)?;
        self.failpoint("migrate-after-stub-xattr");
        let blocks_before = backing::stat_fd(w.as_fd())?.blocks;
        backing::ftruncate(w.as_fd(), 0)?;
        self.failpoint("migrate-after-truncate");
        // What was really freed: the data's blocks (a sparse file's holes had none; the
        // record's xattr block stays).
        let freed = blocks_before.saturating_sub(backing::stat_fd(w.as_fd())?.blocks) * 512;
        backing::futimens(
            w.as_fd(),
            SetTime::At(st.atime.0, st.atime.1),
            SetTime::At(st.mtime.0, st.mtime.1),
        )?;
        if present.is_none_or(|p| p.copy) {
            marks::remove(w.as_fd(), marks::COPY)?;
        }
        // The rest needs no fsync: lost to a power cut, the file keeps its stub record
        // (and maybe its data, or its copy record): a stub either way, which recalls.
        self.reset_mark(node);
        Ok(StubStep::Stubbed {
            row: Box::new(r),
            freed,
        })
    }
}

/// What a policy run keeps in flight: up to `slots` = 4 x `store.concurrency` (16 by
/// default) small files; a file that goes multipart takes as many slots as it has parts
/// in flight (up to `concurrency`), so memory stays near `slots x part_size` (256 MiB by
/// default) whatever the mix.
struct InFlight {
    slots: usize,
    part_size: u64,
    concurrency: usize,
}

/// The slots of a policy run (4 x `store.concurrency`), each up to a part in memory; a bulk
/// recall fetches pack spans in as many ([`Tiering::span_concurrency`]).
pub(super) fn run_slots(u: &crate::store::UploadLimits) -> usize {
    (u.concurrency * 4).clamp(2, 256)
}

impl InFlight {
    fn of(u: &crate::store::UploadLimits) -> InFlight {
        InFlight {
            slots: run_slots(u),
            part_size: u.part_size.max(1),
            concurrency: u.concurrency.max(1),
        }
    }

    /// The slots a file of `size` bytes takes.
    fn slots_for(&self, size: u64) -> u32 {
        size.div_ceil(self.part_size)
            .clamp(1, self.concurrency as u64) as u32
    }
}

/// An immutable or append-only file (chattr +i, +a) is never tiered: its data must stay
/// as it is, where it is (a stub would change it). Refused before anything is uploaded.
pub(super) fn refuse_unchangeable(fd: BorrowedFd<'_>) -> Result<(), StepError> {
    let flags = backing::file_flags(fd)?;
    if flags & backing::FS_IMMUTABLE_FL != 0 {
        return Err(StepError::new(
            libc::EPERM,
            "immutable (chattr +i): not tiered",
        ));
    }
    if flags & backing::FS_APPEND_FL != 0 {
        return Err(StepError::new(
            libc::EPERM,
            "append-only (chattr +a): not tiered",
        ));
    }
    Ok(())
}

/// What a policy run hands one task: a file, or a pack of small files.
enum Work {
    One(FileFacts, Plan),
    Pack(Vec<(FileFacts, Plan)>),
}

impl Work {
    fn bytes(&self) -> u64 {
        match self {
            Work::One(f, _) => f.size,
            Work::Pack(v) => v.iter().map(|(f, _)| f.size).sum(),
        }
    }

    fn files(&self) -> u64 {
        match self {
            Work::One(..) => 1,
            Work::Pack(v) => v.len() as u64,
        }
    }
}

fn tally(summary: &mut RunSummary, res: Result<Vec<super::pack::Done>, tokio::task::JoinError>) {
    match res {
        Ok(v) => {
            for d in v {
                tally_one(summary, Ok(d));
            }
        }
        Err(e) => tally_one(summary, Err(e)),
    }
}

fn tally_one(summary: &mut RunSummary, res: Result<super::pack::Done, tokio::task::JoinError>) {
    match res {
        Ok((facts, plan, Ok(o))) => match o {
            Outcome::Copied => {
                summary.copied += 1;
                summary.bytes_copied += facts.size;
            }
            Outcome::Stubbed(freed) => {
                if plan != Plan::Stub {
                    summary.copied += 1;
                    summary.bytes_copied += facts.size;
                }
                summary.stubbed += 1;
                summary.bytes_freed += freed;
            }
            Outcome::Busy => summary.busy += 1,
            Outcome::Changed | Outcome::Skipped => {}
        },
        Ok((facts, _, Err(e))) => {
            summary.failed += 1;
            tracing::warn!(path = %facts.rel_path.display(), "policy run: file failed: {}", e.message);
            summary
                .errors
                .push(format!("{}: {}", facts.rel_path.display(), e.message));
        }
        Err(e) => {
            summary.failed += 1;
            tracing::warn!("policy run: file task failed: {e}");
            summary.errors.push(format!("task: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StorageClass, UploadLimits};

    #[test]
    fn a_multipart_file_takes_a_slot_per_part_in_flight() {
        let b = InFlight::of(&UploadLimits {
            concurrency: 4,
            part_size: crate::base::units::parse_size("16MB").unwrap(),
            storage_class: StorageClass::Standard,
            checksum: crate::store::ChecksumAlgo::Crc32c,
        });
        assert_eq!(b.slots, 16);
        assert_eq!(b.slots_for(0), 1);
        assert_eq!(b.slots_for(16_000_000), 1);
        assert_eq!(b.slots_for(16_000_001), 2);
        assert_eq!(b.slots_for(1 << 40), 4);
    }
}
