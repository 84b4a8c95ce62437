//! The daemon's answers to the CLI (control socket requests): status, pin, unpin,
//! recall, release, history, migrate, gc. Paths arrive as absolute paths inside the mount
//! and are reached in the backing tree with openat2 below the source root (no `..`, no
//! symlinks), so a request can never name a file outside the source.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::catalog::FileState;
use crate::config::{Config, MigrateMode};
use crate::control::protocol::{ErrorBody, ErrorCode, Op};
use crate::control::server::{Ctx, Handler, Peer};
use crate::fs::backing;
use crate::tier::engine::{ns_of, StepError, Tiering};
use crate::tier::marks;
use crate::tier::state::Action;
use crate::tier::stub::new_file_id;

/// The config in force, shared by the handler and the reload (`daemon::reload`).
pub type ConfigCell = Arc<parking_lot::RwLock<Arc<Config>>>;

/// The control-socket handler of a mount.
pub struct Control {
    pub t: Arc<Tiering>,
    pub config: ConfigCell,
}

pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code,
        message: message.into(),
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

    /// Runs `f` on each file; collects `{path, ok, ...}` results.
    fn each(
        &self,
        paths: &[PathBuf],
        recursive: bool,
        progress: &mut dyn FnMut(String, u64, u64),
        mut f: impl FnMut(&Path, &File) -> Result<Value, String>,
    ) -> Value {
        let mut results = Vec::new();
        let mut failed = 0u64;
        let mut done = 0u64;
        for item in self.expand(paths, recursive) {
            let r = match item {
                Err((p, e)) => Err((p, e)),
                Ok(rel) => {
                    let abs = self.abs(&rel);
                    match backing::open_beneath(
                        self.t.root(),
                        &rel,
                        libc::O_PATH | libc::O_NOFOLLOW,
                    ) {
                        Err(e) => Err((abs, std::io::Error::from_raw_os_error(e.0).to_string())),
                        Ok(fd) => {
                            f(&rel, &File::from(fd))
                                .map_err(|e| (abs.clone(), e))
                                .map(|mut v| {
                                    v["path"] = json!(abs);
                                    v
                                })
                        }
                    }
                }
            };
            match r {
                Ok(mut v) => {
                    v["ok"] = json!(true);
                    results.push(v)
                }
                Err((p, e)) => {
                    failed += 1;
                    results.push(json!({"path": p, "ok": false, "error": e}));
                }
            }
            done += 1;
            if done % 100 == 0 {
                progress(format!("{done} files"), done, 0);
            }
        }
        json!({"results": results, "failed": failed})
    }

    fn status_of(&self, rel: &Path, f: &File) -> Result<Value, String> {
        let st = backing::stat_fd(f.as_fd()).map_err(|e| format!("{e:?}"))?;
        let (state, pinned, row, rec) = self.t.state_of(f.as_fd());
        let size = match (&rec, state) {
            (Some(r), FileState::Stub | FileState::Recalling | FileState::RestorePending) => r.size,
            _ => st.size,
        };
        // A copy record of another size is stale (the file was written behind the mount);
        // other times alone are not (a touch or a rename keeps the copy).
        let rec_ok = rec
            .as_ref()
            .filter(|r| state != FileState::Premigrated || r.size == st.size);
        let state = if state == FileState::Premigrated && rec_ok.is_none() {
            FileState::Resident
        } else {
            state
        };
        Ok(json!({
            "rel_path": rel,
            "state": state.as_str(),
            "size": size,
            "pinned": pinned,
            "file_id": row.as_ref().map(|r| r.file_id.clone()).or_else(|| rec_ok.map(|r| r.file_id.clone())),
            "object_key": rec_ok.map(|r| self.t.full_key(&r.object_key)),
            "version_id": rec_ok.and_then(|r| r.version_id.clone()),
            "storage_class": rec_ok.map(|r| r.storage_class.clone()),
            "checksum": rec_ok.map(|r| format!("{}:{}", r.checksum_algo, r.checksum)),
            "blocks": st.blocks,
            // From the catalog, never from the store (status must not contact it).
            "restore": (state == FileState::RestorePending).then_some("in_progress"),
        }))
    }

    fn pin(&self, rel: &Path, f: &File, pin: bool) -> Result<Value, String> {
        let fd = f.as_fd();
        let st = backing::stat_fd(fd).map_err(|e| format!("{e:?}"))?;
        // Under the file's gate: a stub step reads the pin under it (and a copy of a new
        // file sets its id under it), so neither misses this one.
        let _held = self.t.gate.lock(self.t.node_id(&st));
        let (state, _, row, rec) = self.t.state_of(fd);
        let mut row = match (row, rec) {
            (Some(r), _) => r,
            (None, Some(rec)) => self.t.row_for(&rec, fd, state),
            (None, None) => {
                if !pin {
                    return Ok(json!({"pinned": false}));
                }
                let id = match marks::file_id(fd).map_err(|e| format!("{e:?}"))? {
                    Some(i) => i,
                    None => {
                        let i = new_file_id().map_err(|e| e.to_string())?;
                        marks::set_file_id(fd, &i)
                            .map_err(|e| format!("cannot mark the file: {e:?}"))?;
                        i
                    }
                };
                let mut r = crate::catalog::FileRow::new(id, rel.to_string_lossy());
                r.size = st.size;
                r.mtime_ns = ns_of(st.mtime);
                r.ctime_ns = ns_of(st.ctime);
                r.ino = st.ino;
                r
            }
        };
        row.path = rel.to_string_lossy().into_owned();
        let action = if pin { Action::Pin } else { Action::Unpin };
        self.t
            .record(&mut row, crate::tier::record::Change::of(action, json!({})))
            .map_err(|e| e.to_string())?;
        Ok(json!({"pinned": pin, "state": state.as_str()}))
    }

    /// `coldtier recall`: every stub named, several at a time (4 x `store.concurrency`, as
    /// a policy run), each through the same single-flight recall an open uses.
    fn recall_many(
        &self,
        paths: &[PathBuf],
        recursive: bool,
        progress: &mut dyn FnMut(String, u64, u64),
    ) -> Value {
        let items = self.expand(paths, recursive);
        let total = items.len() as u64;
        let slots = (self.t.settings().uploads.concurrency * 4).clamp(1, 256);
        let t = self.t.clone();
        let mut results: Vec<(usize, Value)> = Vec::new();
        let mut failed = 0u64;
        t.rt.clone().block_on(async {
            let sem = Arc::new(tokio::sync::Semaphore::new(slots));
            let mut set = tokio::task::JoinSet::new();
            let mut done = 0u64;
            let mut bytes = 0u64;
            let mut collect =
                |r: Result<(usize, PathBuf, Result<Value, String>), tokio::task::JoinError>,
                 results: &mut Vec<(usize, Value)>,
                 failed: &mut u64| {
                    let Ok((i, abs, r)) = r else { return };
                    done += 1;
                    match r {
                        Ok(mut v) => {
                            bytes += v["bytes"].as_u64().unwrap_or(0);
                            v["path"] = json!(abs);
                            v["ok"] = json!(true);
                            results.push((i, v));
                        }
                        Err(e) => {
                            *failed += 1;
                            results.push((i, json!({"path": abs, "ok": false, "error": e})));
                        }
                    }
                    progress(format!("recalled {done} of {total}"), done, bytes);
                };
            for (i, item) in items.into_iter().enumerate() {
                let rel = match item {
                    Ok(rel) => rel,
                    Err((p, e)) => {
                        failed += 1;
                        results.push((i, json!({"path": p, "ok": false, "error": e})));
                        continue;
                    }
                };
                let permit = sem.clone().acquire_owned().await.expect("semaphore open");
                let t = t.clone();
                let abs = self.abs(&rel);
                set.spawn(async move {
                    let r = recall_one(&t, &rel).await;
                    drop(permit);
                    (i, abs, r)
                });
                while let Some(r) = set.try_join_next() {
                    collect(r, &mut results, &mut failed);
                }
            }
            while let Some(r) = set.join_next().await {
                collect(r, &mut results, &mut failed);
            }
        });
        // RECALLED is written lazily: on disk before the report.
        if let Err(e) = self.t.catalog.sync() {
            tracing::error!("catalog: {e}");
        }
        results.sort_by_key(|(i, _)| *i);
        let results: Vec<Value> = results.into_iter().map(|(_, v)| v).collect();
        json!({"results": results, "failed": failed})
    }

    fn release(&self, f: &File) -> Result<Value, String> {
        let fd = f.as_fd();
        if marks::record(fd, marks::STUB)
            .map_err(|e| format!("{e:?}"))?
            .is_some()
        {
            return Ok(json!({"released": false, "note": "already a stub"}));
        }
        let Some(rec) = marks::record(fd, marks::COPY).map_err(|e| format!("{e:?}"))? else {
            return Err(
                "no verified copy exists: run `coldtier migrate` (copy-only or stub) first".into(),
            );
        };
        let st = backing::stat_fd(fd).map_err(|e| format!("{e:?}"))?;
        let row = self.t.row_for(&rec, fd, FileState::Premigrated);
        let expect = (row.size, row.mtime_ns, row.ctime_ns);
        let node = self.t.node_id(&st);
        match self
            .t
            .stub_step(node, f, &rec, expect, Action::Release, Vec::new())
            .map_err(|e| e.message)?
        {
            crate::tier::migrate::Outcome::Stubbed(freed) => {
                Ok(json!({"released": true, "bytes": rec.size, "bytes_freed": freed}))
            }
            crate::tier::migrate::Outcome::Busy => {
                Err("the file is open: close it and try again".into())
            }
            crate::tier::migrate::Outcome::Changed => Err(
                "the file changed since it was copied: its copy is superseded; migrate it again"
                    .into(),
            ),
            o => Err(format!("not released ({o:?})")),
        }
    }

    fn history(&self, p: &Path) -> Result<Value, ErrorBody> {
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
        Ok(json!({"path": p, "file_id": id, "events": events}))
    }
}

impl Control {
    /// What a user other than root may ask: the state (`status`, `ls`) and `history` of the
    /// files that user may read, as the kernel decides it for that user (mode bits, ACLs,
    /// every directory on the way). Anything else is root's.
    fn handle_user(
        &self,
        op: Op,
        progress: &mut dyn FnMut(String, u64, u64),
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
            Op::Ping => Ok(json!({"pid": std::process::id(), "mountpoint": self.t.mountpoint})),
            Op::Status { paths, recursive } => {
                let v = self.each(&paths, recursive, progress, |rel, f| self.status_of(rel, f));
                let results = v["results"].as_array().cloned().unwrap_or_default();
                // Each file must be readable by the user; a file found by -r must also sit
                // in a directory the user may list (its name is no secret then).
                let rel_of = |r: &Value| {
                    let p = PathBuf::from(r["path"].as_str().unwrap_or(""));
                    self.rel(&p).unwrap_or(p)
                };
                let mut asks: Vec<(PathBuf, i32)> = Vec::new();
                for r in &results {
                    let rel = rel_of(r);
                    let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
                    asks.push((rel, libc::R_OK));
                    asks.push((dir, libc::R_OK | libc::X_OK));
                }
                let ok = may(&asks)?;
                let mut out = Vec::new();
                for (i, r) in results.into_iter().enumerate() {
                    let named = paths.iter().any(|p| p.as_os_str() == r["path"].as_str().unwrap_or(""));
                    let (readable, listable) = (ok[2 * i], ok[2 * i + 1]);
                    if readable && (named || listable) {
                        out.push(r);
                    } else if named {
                        out.push(json!({"path": r["path"], "ok": false, "error": "permission denied"}));
                    }
                }
                let failed = out.iter().filter(|r| r["ok"] != true).count();
                Ok(json!({"results": out, "failed": failed}))
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
                self.history(&path)
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
        progress: &mut dyn FnMut(String, u64, u64),
        ctx: &Ctx,
    ) -> Result<Value, ErrorBody> {
        if !ctx.peer.is_root() {
            return self.handle_user(op, progress, &ctx.peer);
        }
        let cancel = &ctx.cancel;
        match op {
            Op::Ping => Ok(json!({
                "pid": std::process::id(),
                "source": self.t.source,
                "mountpoint": self.t.mountpoint,
                "store": self.t.store_opt().map(|s| s.describe()),
                "catalog": self.t.catalog.path(),
            })),
            Op::Status { paths, recursive } => {
                Ok(self.each(&paths, recursive, progress, |rel, f| self.status_of(rel, f)))
            }
            Op::Pin { paths, recursive } => {
                Ok(self.each(&paths, recursive, progress, |rel, f| self.pin(rel, f, true)))
            }
            Op::Unpin { paths, recursive } => {
                Ok(self.each(&paths, recursive, progress, |rel, f| {
                    self.pin(rel, f, false)
                }))
            }
            Op::Recall { paths, recursive } => Ok(self.recall_many(&paths, recursive, progress)),
            Op::Release { paths, recursive } => {
                let r = self.each(&paths, recursive, progress, |_, f| self.release(f));
                if let Err(e) = self.t.catalog.sync() {
                    tracing::error!("catalog: {e}");
                }
                Ok(r)
            }
            Op::History { path } => self.history(&path),
            Op::Migrate { dry_run, mode } => {
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
                let t = self.t.clone();
                let mut last = std::time::Instant::now();
                let mut relay = |m: String, f: u64, b: u64| {
                    if last.elapsed().as_millis() >= 500 || f == 0 {
                        last = std::time::Instant::now();
                        progress(m, f, b);
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
                        t2.run_policy(mode, "migrate", &mut send, &cancel).await
                    },
                )
                .map_err(step_err)?;
                serde_json::to_value(summary).map_err(|e| err(ErrorCode::Failed, e.to_string()))
            }
            Op::Pause => {
                if !self.t.paused() {
                    self.t.set_paused(true);
                    tracing::warn!("tiering paused (coldtier pause)");
                }
                Ok(json!({"paused": true}))
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
                Ok(json!({"paused": false, "validates_checksums": c.validates_checksums}))
            }
            Op::Gc { dry_run } => self
                .t
                .rt
                .block_on(self.t.gc(dry_run, cancel))
                .map_err(step_err),
            Op::CancelJob { job } => match self.t.cancel_job(job) {
                Some((id, kind)) => {
                    tracing::warn!(job_id = id, kind, "job cancelled (coldtier jobs cancel)");
                    Ok(json!({"cancelled": id, "kind": kind}))
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
                run_relaying(
                    &self.t,
                    "verify",
                    true,
                    progress,
                    move |mut send| async move { t.reconcile(deep, &mut send).await },
                )
                .map_err(step_err)
            }
            Op::CatalogBackup { to } => {
                crate::jobs::backup::backup_now(&self.t, to.as_deref(), "manual").map_err(|e| {
                    if e.errno == libc::EINVAL {
                        err(ErrorCode::BadRequest, e.message)
                    } else {
                        step_err(e)
                    }
                })
            }
            op @ (Op::List { .. }
            | Op::Find(_)
            | Op::Stats
            | Op::Events(_)
            | Op::Jobs { .. }
            | Op::ConfigVersions
            | Op::Audit) => super::reports::handle(&self.t, &self.config(), &op)
                .unwrap_or_else(|| Err(err(ErrorCode::Unsupported, "not a report request"))),
        }
    }
}

/// Recalls one file (relative path) if it is a stub.
async fn recall_one(t: &Tiering, rel: &Path) -> Result<Value, String> {
    let fd = backing::open_beneath(t.root(), rel, libc::O_PATH | libc::O_NOFOLLOW)
        .map_err(|e| std::io::Error::from_raw_os_error(e.0).to_string())?;
    let Some(rec) = marks::record(fd.as_fd(), marks::STUB).map_err(|e| format!("{e:?}"))? else {
        return Ok(json!({"recalled": false, "note": "data is local already"}));
    };
    let st = backing::stat_fd(fd.as_fd()).map_err(|e| format!("{e:?}"))?;
    let node = t.node_id(&st);
    let size = rec.size;
    t.recall_and_wait(node, fd.as_fd(), rec)
        .await
        .map_err(|e| std::io::Error::from_raw_os_error(e).to_string())?;
    Ok(json!({"recalled": true, "bytes": size}))
}

/// A job's progress callback: (message, files, bytes).
pub type Relay = Box<dyn FnMut(String, u64, u64) + Send>;

/// Runs an engine job from a plain thread (a control-socket connection) on the engine's
/// runtime, relaying its progress to `progress` (at most twice a second with `throttle`).
fn run_relaying<T, F, Fut>(
    t: &Arc<Tiering>,
    what: &str,
    throttle: bool,
    progress: &mut dyn FnMut(String, u64, u64),
    job: F,
) -> Result<T, StepError>
where
    T: Send + 'static,
    F: FnOnce(Relay) -> Fut,
    Fut: std::future::Future<Output = Result<T, StepError>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64, u64)>();
    let mut last: Option<std::time::Instant> = None;
    let relay: Relay = Box::new(move |m, f, b| {
        if !throttle || last.is_none_or(|l| l.elapsed().as_millis() >= 500) {
            last = Some(std::time::Instant::now());
            let _ = tx.send((m, f, b));
        }
    });
    let task = t.rt.spawn(job(relay));
    t.rt.block_on(async {
        while let Some((m, f, b)) = rx.recv().await {
            progress(m, f, b);
        }
        task.await
            .map_err(|e| StepError::new(libc::EIO, format!("{what} task: {e}")))?
    })
}
