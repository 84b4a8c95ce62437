//! The daemon's answers to the CLI (control socket requests): status, pin, unpin,
//! recall, release, history, migrate, gc, verify, catalog backup, pause, resume, jobs
//! cancel, workers. Paths arrive as absolute paths inside the mount and are reached in the
//! backing tree with openat2 below the source root (no `..`, no symlinks), so a request can
//! never name a file outside the source. Each answer is built as its wire type
//! (`control::replies`); the engine's own types and JSON are converted here.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::config::{Config, MigrateMode};
use crate::control::protocol::{ErrorBody, ErrorCode, Op, Progress};
use crate::control::replies::{
    BackupReport, CancelJobReply, CancelWorkerReply, GcReport, HistoryReply, MigrateReport,
    PathResult, PathResults, PauseReply, PinResult, PingDetail, PingReply, PlannedFile,
    RecallResult, ReleaseResult, ResumeReply, SkippedFile, StatusEntry, VerifyReport, WorkersReply,
};
use crate::control::server::{Ctx, Handler, Peer};
use crate::fs::backing;
use crate::tier::context::{StepError, Tiering};
use crate::tier::manual::{Recalled, Released};
use crate::tier::marks;
use crate::tier::migrate::Scope;

/// The config in force, shared by the handler and the reload (`daemon::reload`).
pub type ConfigCell = Arc<parking_lot::RwLock<Arc<Config>>>;

/// The control-socket handler of a mount.
pub struct Control {
    pub t: Arc<Tiering>,
    pub config: ConfigCell,
    /// The config file the mount was made with (None: defaults, or `[mount]` only).
    pub config_path: Option<PathBuf>,
}

pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code,
        message: message.into(),
    }
}

/// A reply type as the `Done` envelope carries it.
pub(crate) fn reply<T: Serialize>(r: T) -> Result<Value, ErrorBody> {
    serde_json::to_value(r)
        .map_err(|e| err(ErrorCode::Failed, format!("cannot encode the answer: {e}")))
}

/// An engine report the engine hands over as JSON (gc, verify, a catalog backup), read as
/// its wire type: a field the engine renamed or dropped is an error here, not a silent
/// gap in the CLI's output.
fn from_engine<T: DeserializeOwned>(what: &str, v: Value) -> Result<T, ErrorBody> {
    serde_json::from_value(v).map_err(|e| {
        err(
            ErrorCode::Failed,
            format!("the {what} report does not have the protocol's shape: {e}"),
        )
    })
}

/// [`step_err`] for a request whose EINVAL means its own input was bad (an unknown
/// replica target, a bad backup destination): exit 2 at the CLI, nothing was done.
fn input_err(e: StepError) -> ErrorBody {
    if e.errno == libc::EINVAL {
        err(ErrorCode::BadRequest, e.message)
    } else {
        step_err(e)
    }
}

fn step_err(e: StepError) -> ErrorBody {
    let code = match e.errno {
        libc::EBUSY => ErrorCode::Busy,
        libc::ENOENT => ErrorCode::NotFound,
        _ => ErrorCode::Failed,
    };
    err(code, e.message)
}

/// `p` (absolute, inside the mount) relative to the mount point.
pub(crate) fn rel_in(mountpoint: &Path, p: &Path) -> Result<PathBuf, ErrorBody> {
    p.strip_prefix(mountpoint)
        .map(Path::to_path_buf)
        .map_err(|_| {
            err(
                ErrorCode::NotInMount,
                format!(
                    "{} is not inside the mount {}",
                    p.display(),
                    mountpoint.display()
                ),
            )
        })
}

impl Control {
    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    fn rel(&self, p: &Path) -> Result<PathBuf, ErrorBody> {
        rel_in(&self.t.mountpoint, p)
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.t.mountpoint.join(rel)
    }

    /// The regular files a request names: each path, and with `recursive` everything
    /// below the directories among them. A problem with one path is its own result.
    fn expand(
        &self,
        paths: &[PathBuf],
        recursive: bool,
    ) -> Vec<Result<PathBuf, (PathBuf, String)>> {
        let mut out = Vec::new();
        for p in paths {
            let rel = match self.rel(p) {
                Ok(r) => r,
                Err(e) => {
                    out.push(Err((p.clone(), e.message)));
                    continue;
                }
            };
            let st = backing::open_beneath(self.t.root(), &rel, libc::O_PATH | libc::O_NOFOLLOW)
                .and_then(|fd| backing::stat_fd(fd.as_fd()));
            match st {
                Err(e) => out.push(Err((
                    p.clone(),
                    std::io::Error::from_raw_os_error(e.0).to_string(),
                ))),
                Ok(st) if st.is_dir() => {
                    if !recursive {
                        out.push(Err((p.clone(), "is a directory (use -r)".into())));
                        continue;
                    }
                    let mut files = Vec::new();
                    if let Err(e) = self
                        .t
                        .walk(&rel, &mut |r, _, _, _| files.push(r.to_path_buf()))
                    {
                        out.push(Err((p.clone(), e.message)));
                    }
                    files.sort();
                    out.extend(files.into_iter().map(Ok));
                }
                Ok(st) if st.file_type() == libc::S_IFREG => out.push(Ok(rel)),
                Ok(_) => out.push(Err((p.clone(), "not a regular file".into()))),
            }
        }
        out
    }

    /// Runs `f` on each file; collects each file's result (`{path, ok, ...}`).
    fn each<T>(
        &self,
        paths: &[PathBuf],
        recursive: bool,
        progress: &mut dyn FnMut(Progress),
        f: impl FnMut(&Path, &File) -> Result<T, String>,
    ) -> PathResults<T> {
        self.each_tracked(paths, recursive, progress, None, None, f)
    }

    /// The files that need the work among `items` (`need`, given each item's index, gives
    /// the bytes of one that does), as the totals of a progress bar: `recall -r` counts
    /// stubs, `release -r` premigrated files, not every file below the paths.
    fn totals_of(
        &self,
        items: &[Result<PathBuf, (PathBuf, String)>],
        need: &mut dyn FnMut(usize, std::os::fd::BorrowedFd<'_>) -> Option<u64>,
    ) -> crate::base::progress::Totals {
        let mut t = crate::base::progress::Totals { files: 0, bytes: 0 };
        for (i, item) in items.iter().enumerate() {
            let Ok(rel) = item else { continue };
            let fd = backing::open_beneath(self.t.root(), rel, libc::O_PATH | libc::O_NOFOLLOW);
            if let Some(b) = fd.ok().and_then(|fd| need(i, fd.as_fd())) {
                t.files += 1;
                t.bytes += b;
            }
        }
        t
    }

    /// [`Control::each`] with a progress bar of the files that need the work: `track` is
    /// (`message`, `need`, `did`: the bytes a result moved when it did the work).
    #[allow(clippy::type_complexity)]
    fn each_tracked<T>(
        &self,
        paths: &[PathBuf],
        recursive: bool,
        progress: &mut dyn FnMut(Progress),
        track: Option<(
            &str,
            &dyn Fn(std::os::fd::BorrowedFd<'_>) -> Option<u64>,
            &dyn Fn(&T) -> Option<u64>,
        )>,
        ahead: Option<&dyn Fn(&[PathBuf])>,
        mut f: impl FnMut(&Path, &File) -> Result<T, String>,
    ) -> PathResults<T> {
        let mut out = PathResults::default();
        let mut done = 0u64;
        let items = self.expand(paths, recursive);
        let (mut worked, mut moved) = (0u64, 0u64);
        if let Some((message, need, _)) = &track {
            let totals = self.totals_of(&items, &mut |_, fd| need(fd));
            progress(Progress {
                message: (*message).into(),
                files: 0,
                bytes: 0,
                totals: Some(totals),
            });
        }
        // `ahead` sees each run of AHEAD paths before `f` sees the first of them.
        const AHEAD: usize = 256;
        for (n, item) in items.iter().enumerate() {
            if let Some(ahead) = ahead.filter(|_| n % AHEAD == 0) {
                let run = &items[n..(n + AHEAD).min(items.len())];
                ahead(
                    &run.iter()
                        .filter_map(|i| i.as_ref().ok().cloned())
                        .collect::<Vec<_>>(),
                );
            }
            let r = match item {
                Err((p, e)) => PathResult::failed(p.clone(), e.clone()),
                Ok(rel) => {
                    let abs = self.abs(rel);
                    match backing::open_beneath(self.t.root(), rel, libc::O_PATH | libc::O_NOFOLLOW)
                    {
                        Err(e) => PathResult::failed(
                            abs,
                            std::io::Error::from_raw_os_error(e.0).to_string(),
                        ),
                        Ok(fd) => match f(rel, &File::from(fd)) {
                            Ok(v) => PathResult::ok(abs, v),
                            Err(e) => PathResult::failed(abs, e),
                        },
                    }
                }
            };
            if !r.ok {
                out.failed += 1;
            }
            done += 1;
            match (&track, &r.result) {
                (Some((message, _, did)), Some(v)) => {
                    if let Some(b) = did(v) {
                        worked += 1;
                        moved += b;
                        progress(Progress::new(*message, worked, moved));
                    }
                }
                (None, _) if done % 100 == 0 => {
                    progress(Progress::new(format!("{done} files"), done, 0));
                }
                _ => {}
            }
            out.results.push(r);
        }
        out
    }

    fn status_of(&self, rel: &Path, f: &File) -> Result<StatusEntry, String> {
        let s = self.t.status(f).map_err(|e| e.message)?;
        Ok(StatusEntry {
            rel_path: rel.to_path_buf(),
            state: s.state.as_str().into(),
            size: s.size,
            pinned: s.pinned,
            file_id: s.file_id,
            object_key: s.object_key,
            version_id: s.version_id,
            storage_class: s.storage_class,
            checksum: s.checksum,
            blocks: s.blocks,
            // From the catalog, never from the store (status must not contact it).
            restore: s.restore_in_progress.then(|| "in_progress".into()),
            pack_offset: s.pack_offset,
        })
    }

    fn pin(&self, rel: &Path, f: &File, pin: bool) -> Result<PinResult, String> {
        let state = self.t.set_pinned(rel, f, pin).map_err(|e| e.message)?;
        Ok(PinResult {
            pinned: state.is_some() && pin,
            state: state.map(|s| s.as_str().into()),
        })
    }

    /// A policy run (`migrate`) or an on-demand one (`archive`) on `scope`, its progress
    /// relayed at most twice a second (the line with the totals and the first of each
    /// phase always go, so that a client can draw its bar however fast the scan was).
    fn policy_run(
        &self,
        mode: MigrateMode,
        kind: &'static str,
        scope: Scope,
        cancel: &crate::base::cancel::Cancel,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<MigrateReport, ErrorBody> {
        let t = self.t.clone();
        let mut last = std::time::Instant::now();
        let mut total = u64::MAX;
        let mut relay = |p: Progress| {
            if let Some(t) = p.totals {
                total = t.files;
            }
            // The last file's update goes too: a run shorter than the throttle still
            // ends with its bar full.
            if last.elapsed().as_millis() >= 500
                || p.files == 0
                || p.totals.is_some()
                || p.files >= total
            {
                last = std::time::Instant::now();
                progress(p);
            }
        };
        let cancel = cancel.clone();
        let t2 = t.clone();
        let summary = run_relaying(
            &t,
            "policy run",
            false,
            &mut relay,
            move |mut send| async move {
                t2.run_policy_scope(mode, kind, &mut send, &cancel, scope)
                    .await
            },
        )
        .map_err(step_err)?;
        Ok(migrate_report(summary))
    }

    /// `coldtier replicas`: per target, what it holds and lacks, and its last run.
    fn replicas(&self) -> Result<crate::control::replies::ReplicasReply, ErrorBody> {
        let cat = |e: crate::catalog::CatalogError| err(ErrorCode::Failed, e.to_string());
        let jobs = self.t.catalog.jobs(500).map_err(cat)?;
        let running = self.t.running_kind();
        let mut targets = Vec::new();
        for name in self.t.replica_names() {
            let c = self.t.catalog.replica_counts(&name).map_err(cat)?;
            let missing = self.t.catalog.objects_missing_on(&name).map_err(cat)?;
            let last = jobs
                .iter()
                .find(|j| j.kind == "replicate" && j.mode == name && j.finished_ns.is_some());
            targets.push(crate::control::replies::ReplicaTarget {
                store: self
                    .t
                    .replica(&name)
                    .map(|s| s.describe())
                    .unwrap_or_default(),
                objects: c.objects,
                bytes: c.bytes,
                replicated: c.replicated,
                replicated_bytes: c.replicated_bytes,
                missing: c.objects - c.replicated,
                missing_bytes: c.bytes - c.replicated_bytes,
                in_flight: running.as_deref() == Some(format!("replicate {name}").as_str()),
                last_job: last.map(|j| j.id),
                last_finished_ns: last.and_then(|j| j.finished_ns),
                last_copied: last.map_or(0, |j| j.files_copied),
                last_failed: last.map_or(0, |j| j.files_failed),
                missing_paths: missing.into_iter().map(|o| o.path).collect(),
                name,
            });
        }
        Ok(crate::control::replies::ReplicasReply { targets })
    }

    /// `coldtier recall`: every stub named, several at a time (4 x `store.concurrency`, as
    /// a policy run), each claimed in the same single-flight map an open uses, the small
    /// ones finished in batches ([`Tiering::recall_paths`]).
    fn recall_many(
        &self,
        paths: &[PathBuf],
        recursive: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> PathResults<RecallResult> {
        self.t.catalog.warm();
        let items = self.expand(paths, recursive);
        // The bar counts the stubs, not every file below the paths; the packs several of
        // them are members of are fetched once each.
        let mut members = Vec::new();
        // Where each path's bytes are: (its pack's rank, in the order the packs first
        // come, and its offset in it), None for a file of its own.
        let mut place: Vec<Option<(usize, u64)>> = vec![None; items.len()];
        let mut ranks: std::collections::HashMap<(String, Option<String>), usize> =
            Default::default();
        let totals = self.totals_of(&items, &mut |i, fd| {
            let r = marks::record(fd, marks::STUB).ok().flatten()?;
            let size = r.size;
            if let Some(p) = &r.pack {
                let n = ranks.len();
                let rank = *ranks
                    .entry((r.object_key.clone(), r.version_id.clone()))
                    .or_insert(n);
                place[i] = Some((rank, p.offset));
                members.push(r);
            }
            Some(size)
        });
        progress(Progress {
            message: "recalling".into(),
            files: 0,
            bytes: 0,
            totals: Some(totals),
        });
        let slots = (self.t.settings().uploads.concurrency * 4).clamp(1, 256);
        let t = self.t.clone();
        let mut results: Vec<(usize, PathResult<RecallResult>)> = Vec::new();
        let mut failed = 0u64;
        let spans = t.prefetch_packs(&members);
        let mut rels = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Ok(rel) => rels.push((i, rel)),
                Err((p, e)) => {
                    failed += 1;
                    results.push((i, PathResult::failed(p, e)));
                }
            }
        }
        // Files of their own first (each its own GET, while the spans come), then the
        // members in the order their bytes arrive: the spans are fetched a wave of packs
        // at a time (`PackLease::wave`), each in order, so the members of one wave go
        // by their offsets, the packs of the wave side by side. A member then waits only
        // for its own span to reach it, where the order of the names (a pack holds its
        // files in the order they were scanned) or one pack after another would have the
        // fetch slots wait on one span while the others' members are there.
        let wave = spans.wave();
        rels.sort_by_key(|(i, _)| place[*i].map(|(rank, off)| (rank / wave, off, rank)));
        let abs: std::collections::HashMap<usize, PathBuf> =
            rels.iter().map(|(i, r)| (*i, self.abs(r))).collect();
        let (mut done, mut bytes) = (0u64, 0u64);
        t.rt.block_on(t.recall_paths(rels, slots, &mut |(i, r)| {
            let path = abs[&i].clone();
            match r {
                Ok(Recalled::Now { bytes: b }) => {
                    done += 1;
                    bytes += b;
                    progress(Progress::new("recalling", done, bytes));
                    results.push((i, PathResult::ok(path, recalled_now(b))));
                }
                Ok(Recalled::AlreadyLocal) => {
                    results.push((i, PathResult::ok(path, already_local())));
                }
                Err(e) => {
                    failed += 1;
                    results.push((i, PathResult::failed(path, e.message)));
                }
            }
        }));
        // RECALLED is written lazily: on disk before the report.
        if let Err(e) = self.t.catalog.sync() {
            tracing::error!("catalog: {e}");
        }
        results.sort_by_key(|(i, _)| *i);
        PathResults {
            results: results.into_iter().map(|(_, v)| v).collect(),
            failed,
        }
    }

    fn release(&self, f: &File) -> Result<ReleaseResult, String> {
        Ok(match self.t.release(f).map_err(|e| e.message)? {
            Released::AlreadyStub => ReleaseResult {
                released: false,
                note: Some("already a stub".into()),
                bytes: None,
                bytes_freed: None,
            },
            Released::Now { bytes, freed } => ReleaseResult {
                released: true,
                note: None,
                bytes: Some(bytes),
                bytes_freed: Some(freed),
            },
        })
    }

    /// What `release` would do with `f`: released false, the note "would release" and
    /// the bytes it would free, or why not (the error a release would give).
    fn release_dry(&self, f: &File) -> Result<ReleaseResult, String> {
        Ok(match self.t.release_check(f).map_err(|e| e.message)? {
            None => ReleaseResult {
                released: false,
                note: Some("already a stub".into()),
                bytes: None,
                bytes_freed: None,
            },
            Some((bytes, freed, note)) => ReleaseResult {
                released: false,
                note: Some(note),
                bytes: Some(bytes),
                bytes_freed: Some(freed),
            },
        })
    }

    fn history(&self, p: &Path) -> Result<HistoryReply, ErrorBody> {
        let rel = self.rel(p)?;
        let id = match backing::open_beneath(self.t.root(), &rel, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => marks::file_id(fd.as_fd()).ok().flatten(),
            Err(_) => None,
        };
        let rel_s = rel.to_string_lossy();
        let id = match id {
            Some(i) => Some(i),
            None => self
                .t
                .catalog
                .file_by_path(&rel_s)
                .map_err(|e| err(ErrorCode::Failed, e.to_string()))?
                .map(|r| r.file_id),
        };
        // A file deleted (or renamed away) since: the one the events last name there.
        let id = match id {
            Some(i) => Some(i),
            None => self
                .t
                .catalog
                .last_file_id_at(&rel_s)
                .map_err(|e| err(ErrorCode::Failed, e.to_string()))?,
        };
        let Some(id) = id else {
            return Err(err(
                ErrorCode::NotFound,
                format!(
                    "{}: coldtier has no record of this file (never copied or pinned)",
                    p.display()
                ),
            ));
        };
        let events = self
            .t
            .catalog
            .history(&id)
            .map_err(|e| err(ErrorCode::Failed, e.to_string()))?;
        Ok(HistoryReply {
            path: p.to_path_buf(),
            file_id: id,
            events: events.into_iter().map(super::reports::event_row).collect(),
            key_prefix: self.t.store_prefix.clone(),
        })
    }
}

impl Control {
    /// What a user other than root may ask: the state (`status`, `ls`) and `history` of the
    /// files that user may read, as the kernel decides it for that user (mode bits, ACLs,
    /// every directory on the way). Anything else is root's.
    fn handle_user(
        &self,
        op: Op,
        progress: &mut dyn FnMut(Progress),
        peer: &Peer,
    ) -> Result<Value, ErrorBody> {
        let may = |paths: &[(PathBuf, i32)]| -> Result<Vec<bool>, ErrorBody> {
            backing::access_as(self.t.root(), peer.uid, peer.gid, &peer.groups, paths)
                .map_err(|e| err(ErrorCode::Failed, format!("checking access: {e}")))
        };
        let denied = |p: &Path| {
            err(
                ErrorCode::Forbidden,
                format!("{}: permission denied", p.display()),
            )
        };
        match op {
            Op::Ping => reply(PingReply {
                pid: std::process::id(),
                mountpoint: self.t.mountpoint.clone(),
                detail: None,
            }),
            Op::Status { paths, recursive } => {
                let all = self.each(&paths, recursive, progress, |rel, f| self.status_of(rel, f));
                // Each file must be readable by the user; a file found by -r must also sit
                // in a directory the user may list (its name is no secret then).
                let mut asks: Vec<(PathBuf, i32)> = Vec::new();
                for r in &all.results {
                    let rel = self.rel(&r.path).unwrap_or_else(|_| r.path.clone());
                    let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
                    asks.push((rel, libc::R_OK));
                    asks.push((dir, libc::R_OK | libc::X_OK));
                }
                let ok = may(&asks)?;
                let mut out = PathResults::default();
                for (i, r) in all.results.into_iter().enumerate() {
                    let named = paths.iter().any(|p| p.as_os_str() == r.path.as_os_str());
                    let (readable, listable) = (ok[2 * i], ok[2 * i + 1]);
                    if readable && (named || listable) {
                        out.results.push(r);
                    } else if named {
                        out.results
                            .push(PathResult::failed(r.path, "permission denied"));
                    }
                }
                out.failed = out.results.iter().filter(|r| !r.ok).count() as u64;
                reply(out)
            }
            Op::List { ref path } => {
                let rel = self.rel(path)?;
                let is_dir = backing::open_beneath(self.t.root(), &rel, libc::O_PATH | libc::O_NOFOLLOW)
                    .and_then(|fd| backing::stat_fd(fd.as_fd()))
                    .is_ok_and(|st| st.is_dir());
                let mode = if is_dir { libc::R_OK | libc::X_OK } else { libc::R_OK };
                if !may(&[(rel, mode)])?[0] {
                    return Err(denied(path));
                }
                super::reports::handle(&self.t, &self.config(), &op)
                    .unwrap_or_else(|| Err(err(ErrorCode::Unsupported, "not a report request")))
            }
            Op::History { path } => {
                let rel = self.rel(&path)?;
                // A file that is gone: its history is root's to read.
                if !may(&[(rel, libc::R_OK)])?[0] {
                    return Err(denied(&path));
                }
                reply(self.history(&path)?)
            }
            _ => Err(err(
                ErrorCode::Forbidden,
                "must be run as root (other users may run status, ls and history on the files they can read)",
            )),
        }
    }
}

impl Handler for Control {
    fn handle(
        &self,
        op: Op,
        progress: &mut dyn FnMut(Progress),
        ctx: &Ctx,
    ) -> Result<Value, ErrorBody> {
        if !ctx.peer.is_root() {
            return self.handle_user(op, progress, &ctx.peer);
        }
        let cancel = &ctx.cancel;
        match op {
            Op::Ping => reply(PingReply {
                pid: std::process::id(),
                mountpoint: self.t.mountpoint.clone(),
                detail: Some(PingDetail {
                    source: self.t.source.clone(),
                    store: self.t.store_opt().map(|s| s.describe()),
                    catalog: self.t.catalog.path().to_path_buf(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    config: self.config_path.clone(),
                    config_version: self.t.catalog.config_version_in_force(),
                    metrics: self.config().metrics.listen.clone(),
                    paused: self.t.paused(),
                }),
            }),
            Op::Status { paths, recursive } => {
                reply(self.each(&paths, recursive, progress, |rel, f| self.status_of(rel, f)))
            }
            Op::Pin { paths, recursive } => {
                reply(self.each(&paths, recursive, progress, |rel, f| self.pin(rel, f, true)))
            }
            Op::Unpin { paths, recursive } => {
                reply(self.each(&paths, recursive, progress, |rel, f| {
                    self.pin(rel, f, false)
                }))
            }
            Op::Recall { paths, recursive } => reply(self.recall_many(&paths, recursive, progress)),
            Op::Release {
                paths,
                recursive,
                dry_run: true,
            } => reply(self.each_tracked(
                &paths,
                recursive,
                progress,
                Some(("checking", &premigrated_bytes, &|v: &ReleaseResult| v.bytes)),
                Some(&|rels: &[PathBuf]| self.t.check_copies_ahead(rels)),
                |_, f| self.release_dry(f),
            )),
            Op::Release {
                paths, recursive, ..
            } => {
                let did = |v: &ReleaseResult| v.released.then_some(v.bytes.unwrap_or(0));
                let r = self.each_tracked(
                    &paths,
                    recursive,
                    progress,
                    Some(("releasing", &premigrated_bytes, &did)),
                    // The copies of the next files are asked for at once, not one by one
                    // as each is released.
                    Some(&|rels: &[PathBuf]| self.t.check_copies_ahead(rels)),
                    |_, f| self.release(f),
                );
                if let Err(e) = self.t.catalog.sync() {
                    tracing::error!("catalog: {e}");
                }
                reply(r)
            }
            Op::History { path } => reply(self.history(&path)?),
            Op::Migrate {
                dry_run,
                mode,
                under,
            } => {
                // A path inside the mount: that tree only ("" is the whole mount).
                let under = match under {
                    Some(p) => Some(self.rel(&p)?),
                    None => None,
                };
                let mode = match (dry_run, mode.as_deref()) {
                    (true, _) => MigrateMode::DryRun,
                    (false, None) => self.config().policy.mode,
                    (false, Some("stub")) => MigrateMode::Stub,
                    (false, Some("copy-only")) => MigrateMode::CopyOnly,
                    (false, Some("dry-run")) => MigrateMode::DryRun,
                    (false, Some(m)) => {
                        return Err(err(
                            ErrorCode::BadRequest,
                            format!("unknown mode `{m}` (dry-run, copy-only, stub)"),
                        ))
                    }
                };
                let scope = Scope {
                    paths: under.into_iter().collect(),
                    ..Scope::default()
                };
                reply(self.policy_run(mode, "migrate", scope, cancel, progress)?)
            }
            Op::Archive {
                paths,
                recursive,
                release,
                dry_run,
            } => {
                let paths = paths
                    .iter()
                    .map(|p| self.rel(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let mode = match (dry_run, release) {
                    (true, _) => MigrateMode::DryRun,
                    (false, true) => MigrateMode::Stub,
                    (false, false) => MigrateMode::CopyOnly,
                };
                let scope = Scope {
                    paths,
                    on_demand: true,
                    recursive,
                    release,
                };
                reply(self.policy_run(mode, "archive", scope, cancel, progress)?)
            }
            Op::Pause => {
                if !self.t.paused() {
                    self.t.set_paused(true);
                    tracing::warn!("tiering paused (coldtier pause)");
                }
                reply(PauseReply { paused: true })
            }
            Op::Resume => {
                let store = self.t.store().map_err(step_err)?;
                let c = self
                    .t
                    .rt
                    .block_on(crate::daemon::check_store(&*store))
                    .map_err(|e| {
                        err(
                            ErrorCode::Failed,
                            format!("store {}: {e}; tiering stays paused", store.describe()),
                        )
                    })?;
                self.t.set_store_validates(c.validates_checksums);
                crate::daemon::log_store_check(&c);
                if self.t.paused() {
                    self.t.set_paused(false);
                    tracing::info!("tiering resumed (coldtier resume)");
                }
                reply(ResumeReply {
                    paused: false,
                    validates_checksums: c.validates_checksums,
                })
            }
            Op::Gc { dry_run } => {
                let v = self
                    .t
                    .rt
                    .block_on(self.t.gc(dry_run, cancel))
                    .map_err(step_err)?;
                reply(from_engine::<GcReport>("gc", v)?)
            }
            Op::Replicate { to, dry_run } => {
                let t = self.t.clone();
                let cancel = cancel.clone();
                let v = run_relaying(
                    &self.t,
                    "replication",
                    true,
                    progress,
                    move |mut send| async move {
                        t.replicate(&to, dry_run, &mut send, &cancel)
                            .await
                            .map(|s| serde_json::to_value(s).unwrap_or_default())
                    },
                )
                // No such target: bad input (exit 2), nothing was done.
                .map_err(input_err)?;
                reply(from_engine::<crate::control::replies::ReplicateReport>(
                    "replication",
                    v,
                )?)
            }
            Op::Replicas => reply(self.replicas()?),
            Op::CancelJob { job } => match self.t.cancel_job(job) {
                Some((id, kind)) => {
                    tracing::warn!(job_id = id, kind, "job cancelled (coldtier jobs cancel)");
                    reply(CancelJobReply {
                        cancelled: id,
                        kind,
                    })
                }
                None => Err(err(
                    ErrorCode::NotFound,
                    match job {
                        Some(i) => format!("job {i} is not running"),
                        None => "no policy run or gc is running".into(),
                    },
                )),
            },
            Op::Verify { deep } => {
                let t = self.t.clone();
                let v = run_relaying(
                    &self.t,
                    "verify",
                    true,
                    progress,
                    move |mut send| async move { t.reconcile(deep, &mut send).await },
                )
                .map_err(step_err)?;
                reply(from_engine::<VerifyReport>("verify", v)?)
            }
            Op::CatalogBackup { to } => {
                let v = crate::jobs::backup::backup_now(&self.t, to.as_deref(), "manual")
                    .map_err(input_err)?;
                reply(from_engine::<BackupReport>("catalog backup", v)?)
            }
            Op::Recalls => reply(crate::control::replies::RecallsReply {
                recalls: self.t.recalls_list().into_iter().map(recall_row).collect(),
            }),
            Op::CancelRecalls { recall, uid, all } => {
                use crate::tier::readers::RecallSelector;
                let sel = match (recall, uid, all) {
                    (Some(i), None, false) => RecallSelector::Id(i),
                    (None, Some(u), false) => RecallSelector::Uid(u),
                    (None, None, true) => RecallSelector::All,
                    _ => {
                        return Err(err(
                            ErrorCode::BadRequest,
                            "name one: a recall id, --uid U or --all",
                        ))
                    }
                };
                let stopped = self.t.cancel_recalls(sel);
                if stopped.is_empty() {
                    return Err(err(
                        ErrorCode::NotFound,
                        "no such recall in flight or queued (`coldtier recalls` lists them)",
                    ));
                }
                reply(crate::control::replies::RecallsReply {
                    recalls: stopped.into_iter().map(recall_row).collect(),
                })
            }
            Op::Workers => reply(WorkersReply {
                workers: self.t.workers.list(),
            }),
            Op::CancelWorker { worker: id } => {
                let found = self.t.workers.list().into_iter().find(|w| w.id == id);
                match found {
                    Some(w) if self.t.workers.cancel(id) => {
                        tracing::warn!(
                            worker = id,
                            name = %w.name,
                            state = %w.state,
                            "worker's work cancelled (coldtier jobs cancel --worker)"
                        );
                        reply(CancelWorkerReply {
                            worker: id,
                            name: w.name,
                            state: w.state,
                        })
                    }
                    // Gone meanwhile (a restore poller that finished): no such worker now.
                    _ => Err(err(
                        ErrorCode::NotFound,
                        format!("no worker {id} is running (`coldtier jobs workers` lists them)"),
                    )),
                }
            }
            op @ (Op::List { .. }
            | Op::Find(_)
            | Op::Stats { .. }
            | Op::Events(_)
            | Op::Jobs { .. }
            | Op::ConfigVersions
            | Op::Audit) => super::reports::handle(&self.t, &self.config(), &op)
                .unwrap_or_else(|| Err(err(ErrorCode::Unsupported, "not a report request"))),
        }
    }
}

/// A recall as the protocol shows it (the CLI does not know the engine).
fn recall_row(r: crate::tier::readers::RecallRow) -> crate::control::replies::RecallRow {
    crate::control::replies::RecallRow {
        id: r.id,
        path: r.path,
        size: r.size,
        done: r.done,
        state: r.state,
        who: r.who,
        since_ns: r.since_ns,
    }
}

fn recalled_now(bytes: u64) -> RecallResult {
    RecallResult {
        recalled: true,
        note: None,
        bytes: Some(bytes),
    }
}

fn already_local() -> RecallResult {
    RecallResult {
        recalled: false,
        note: Some("data is local already".into()),
        bytes: None,
    }
}

/// A policy run's summary as the protocol says it (the CLI does not know the engine).
fn migrate_report(s: crate::tier::migrate::RunSummary) -> MigrateReport {
    MigrateReport {
        job_id: s.job_id,
        mode: s.mode,
        scanned: s.scanned,
        candidates: s.candidates,
        deferred: s.deferred,
        copied: s.copied,
        bytes_copied: s.bytes_copied,
        stubbed: s.stubbed,
        bytes_freed: s.bytes_freed,
        busy: s.busy,
        failed: s.failed,
        errors: s.errors,
        files: s
            .files
            .into_iter()
            .map(|f| PlannedFile {
                path: f.path,
                size: f.size,
                plan: f.plan.into(),
                frees: f.frees,
            })
            .collect(),
        seconds: s.seconds,
        cancelled: s.cancelled,
        bytes_to_free: s.bytes_to_free,
        stopped: s.stopped,
        notes: s.notes,
        skipped: s
            .skipped
            .into_iter()
            .map(|k| SkippedFile {
                path: k.path,
                kind: k.kind.into(),
                reason: k.reason,
            })
            .collect(),
    }
}

/// The size of a premigrated file (a copy record and no stub record): what a release
/// would act on.
fn premigrated_bytes(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    if marks::record(fd, marks::STUB).ok().flatten().is_some() {
        return None;
    }
    marks::record(fd, marks::COPY)
        .ok()
        .flatten()
        .map(|r| r.size)
}

/// A job's progress callback, as the engine calls it.
pub type Relay = Box<dyn FnMut(Progress) + Send>;

/// Runs an engine job from a plain thread (a control-socket connection) on the engine's
/// runtime, relaying its progress to `progress` (at most twice a second with `throttle`;
/// the line with the totals always goes).
fn run_relaying<T, F, Fut>(
    t: &Arc<Tiering>,
    what: &str,
    throttle: bool,
    progress: &mut dyn FnMut(Progress),
    job: F,
) -> Result<T, StepError>
where
    T: Send + 'static,
    F: FnOnce(Relay) -> Fut,
    Fut: std::future::Future<Output = Result<T, StepError>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let mut last: Option<std::time::Instant> = None;
    let relay: Relay = Box::new(move |p: Progress| {
        if !throttle || p.totals.is_some() || last.is_none_or(|l| l.elapsed().as_millis() >= 500) {
            last = Some(std::time::Instant::now());
            let _ = tx.send(p);
        }
    });
    let task = t.rt.spawn(job(relay));
    t.rt.block_on(async {
        while let Some(p) = rx.recv().await {
            progress(p);
        }
        task.await
            .map_err(|e| StepError::new(libc::EIO, format!("{what} task: {e}")))?
    })
}
