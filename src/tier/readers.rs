//! Reads of stubs and who may recall (`tier::rules`): the recall path of a read (streamed
//! when the record allows: `tier::stream`), reads without recall (`stream` rule: a
//! transient stream into an anonymous memory file), refusals (`deny`: EACCES; `defer`:
//! EAGAIN and a queued background recall), each with an event naming who.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::catalog::EventKind;
use crate::fs::backing::{self, Errno, SysResult};
use crate::fs::overlay::{StubRead, Waiter};
use crate::fs::privs::Requester;
use crate::tier::marks;
use crate::tier::rules::{decide, Reader, RecallAction};
use crate::tier::stream::{Stream, StreamRead};
use crate::tier::stub::StubRecord;

use super::context::Tiering;

/// A refusal or a stream read of one file is recorded once in this long per mode (a
/// scanner's retries, the kernel's own retry of a failed read, make many).
const NOTE_EVERY: Duration = Duration::from_secs(3600);
/// A transient stream not read for this long is dropped (its memory given back).
const TRANSIENT_IDLE: Duration = Duration::from_secs(60);

/// What reads of stubs keep between reads.
#[derive(Default)]
pub struct ReaderState {
    /// Transient streams (reads without recall), by node.
    pub transients: parking_lot::Mutex<HashMap<u64, Arc<Stream>>>,
    /// The object (key, version) each transient stream reads.
    transient_keys: parking_lot::Mutex<HashMap<u64, (String, Option<String>)>>,
    /// Who starts the recall about to start, by node (for its RECALL_STARTED).
    pub who: parking_lot::Mutex<HashMap<u64, serde_json::Value>>,
    /// Files deferred by a rule, waiting for the background recall, in order (node, path,
    /// when queued).
    pub deferred: parking_lot::Mutex<VecDeque<(u64, String, i64)>>,
    /// The recalls in flight, by node: for `coldtier recalls` and its cancel.
    pub in_flight: parking_lot::Mutex<HashMap<u64, InFlight>>,
    /// Recalls started by reads in the last minute, against `[recall]`'s budgets.
    budget: super::budget::Budget,
    deferring: std::sync::atomic::AtomicBool,
    noted: parking_lot::Mutex<HashMap<(u64, &'static str), Instant>>,
}

impl Tiering {
    /// A read of `len` bytes at `off` of stub `ino` (open as `fd`) by `who`.
    pub(super) fn read_stub(
        &self,
        ino: u64,
        fd: BorrowedFd<'_>,
        off: u64,
        len: u64,
        who: Requester,
    ) -> SysResult<StubRead> {
        if let Some(s) = self.streams.lock().get(&ino).cloned() {
            return Ok(self.read_streamed(s, off, len));
        }
        if let Some(s) = self.readers.transients.lock().get(&ino).cloned() {
            return self.read_transient(ino, s, off, len);
        }
        tracing::debug!(ino, off, "read of a stub");
        // Under the gate: the switch to premigrated is, too.
        let held = self.gate.lock(ino);
        if let Some(w) = self.in_flight(ino) {
            return Ok(StubRead::Wait(w));
        }
        let Some(rec) = marks::record(fd, marks::STUB)? else {
            return Ok(StubRead::Local);
        };
        let settings = self.settings();
        let (action, why, reader, rel) = self.rule_for(fd, who);
        if matches!(action, RecallAction::Recall) {
            let running = self.readers.in_flight.lock().len();
            if let Err(limit) =
                self.readers
                    .budget
                    .admit(&settings.recall, running, who.uid, rec.size)
            {
                drop(held);
                return self.over_budget(ino, fd, &rec, &reader, limit);
            }
        }
        match action {
            RecallAction::Recall => {
                let w = backing::reopen(fd, libc::O_RDWR)?;
                let rx = self.recall_rx_for(ino, w, rec, Some((off, len)), Some(&reader));
                drop(held);
                match self.streams.lock().get(&ino).cloned() {
                    Some(s) => Ok(self.read_streamed(s, off, len)),
                    // Not streamable (no chunk sums, a sparse file): the whole file first.
                    None => Ok(StubRead::Wait(self.waiter(rx))),
                }
            }
            RecallAction::Deny | RecallAction::Defer => {
                drop(held);
                Err(self.refuse(action, ino, fd, &rec, &reader, &why, &rel))
            }
            RecallAction::Stream => {
                let Some(s) = memfd(&rec).and_then(|f| Stream::transient(&rec, f)) else {
                    // Neither chunk sums nor small enough to hold whole: recalled.
                    let w = backing::reopen(fd, libc::O_RDWR)?;
                    let rx = self.recall_rx_for(ino, w, rec, Some((off, len)), Some(&reader));
                    drop(held);
                    return match self.streams.lock().get(&ino).cloned() {
                        Some(s) => Ok(self.read_streamed(s, off, len)),
                        None => Ok(StubRead::Wait(self.waiter(rx))),
                    };
                };
                drop(held);
                self.note(ino, "stream", fd, &rec, &reader, &why);
                self.sweep_transients();
                self.readers.transients.lock().insert(ino, s.clone());
                self.read_transient(ino, s, off, len)
            }
        }
    }

    /// A read that would start a recall over a budget: EAGAIN at once, or a wait until the
    /// budget allows it (then the read tries again), up to `recall.timeout`.
    fn over_budget(
        &self,
        ino: u64,
        fd: BorrowedFd<'_>,
        rec: &StubRecord,
        who: &Reader,
        limit: &'static str,
    ) -> SysResult<StubRead> {
        crate::tier::metrics::recall_refused("throttled");
        self.note(ino, "throttled", fd, rec, who, limit);
        let settings = self.settings();
        if settings.recall.over_budget == super::config::OverBudget::Eagain {
            return Err(Errno(libc::EAGAIN));
        }
        let me = self.arc();
        let (uid, bytes) = (who.uid, rec.size);
        let limit_t = Some(settings.recall.timeout).filter(|d| !d.is_zero());
        Ok(StubRead::Wait(Box::new(move || {
            let _waiting = crate::tier::metrics::RECALLS_WAITING_BUDGET.track();
            let t0 = Instant::now();
            loop {
                let running = me.readers.in_flight.lock().len();
                let cfg = me.settings();
                if me
                    .readers
                    .budget
                    .would_admit(&cfg.recall, running, uid, bytes)
                {
                    return Ok(());
                }
                if limit_t.is_some_and(|l| t0.elapsed() >= l) {
                    return Err(Errno(libc::EAGAIN));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })))
    }

    /// A copy_file_range from stub `ino` by `who`: `deny` and `defer` rules refuse it as
    /// they refuse a read; `stream` and `recall` let it go on (a copy needs the whole file:
    /// it is recalled).
    pub(super) fn copy_from_stub(
        &self,
        ino: u64,
        fd: BorrowedFd<'_>,
        who: Requester,
    ) -> SysResult<()> {
        if self.in_flight(ino).is_some() {
            return Ok(());
        }
        let Some(rec) = marks::record(fd, marks::STUB)? else {
            return Ok(());
        };
        let (action, why, reader, rel) = self.rule_for(fd, who);
        match action {
            RecallAction::Deny | RecallAction::Defer => {
                Err(self.refuse(action, ino, fd, &rec, &reader, &why, &rel))
            }
            RecallAction::Recall | RecallAction::Stream => Ok(()),
        }
    }

    /// The rule for `who` reading the file open as `fd`: the action, the rule's name, the
    /// reader, and the file's path when a rule needs it ("" otherwise).
    fn rule_for(
        &self,
        fd: BorrowedFd<'_>,
        who: Requester,
    ) -> (RecallAction, String, Reader, String) {
        let settings = self.settings();
        let rules = &settings.recall.rules;
        let reader = Reader::of(who.uid, who.gid, who.pid);
        let rel = if rules.iter().any(|r| !r.path.is_empty()) {
            self.rel_of(fd).unwrap_or_default()
        } else {
            String::new()
        };
        let (action, why) = decide(
            rules,
            settings.recall.default_rules,
            &reader,
            Path::new(&rel),
        );
        (action, why, reader, rel)
    }

    /// A `deny` or `defer` refusal: counted, recorded, the file queued for `defer`; the
    /// errno the reader gets.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        action: RecallAction,
        ino: u64,
        fd: BorrowedFd<'_>,
        rec: &StubRecord,
        reader: &Reader,
        why: &str,
        rel: &str,
    ) -> Errno {
        let mode = if action == RecallAction::Deny {
            "deny"
        } else {
            "defer"
        };
        crate::tier::metrics::recall_refused(mode);
        self.note(ino, mode, fd, rec, reader, why);
        if action == RecallAction::Deny {
            return Errno(libc::EACCES);
        }
        self.defer(ino, rel_or(rel, self.rel_of(fd)));
        Errno(libc::EAGAIN)
    }

    fn read_streamed(&self, stream: Arc<Stream>, off: u64, len: u64) -> StubRead {
        match stream.read(off, len) {
            Ok(StreamRead::Data(d)) => StubRead::Data(d),
            Ok(StreamRead::Wait(a, b)) => StubRead::Wait(self.chunk_waiter(stream, a, b)),
            Err(e) => StubRead::Wait(Box::new(move || Err(Errno(e)))),
        }
    }

    fn read_transient(&self, ino: u64, s: Arc<Stream>, off: u64, len: u64) -> SysResult<StubRead> {
        match s.read(off, len) {
            Ok(StreamRead::Data(d)) => Ok(StubRead::Data(d)),
            Ok(StreamRead::Wait(a, b)) => {
                let Some(rec) = self.record_of_transient(ino) else {
                    return Err(Errno(libc::EIO));
                };
                let store = self.store().map_err(|e| Errno(e.errno))?;
                s.ensure_fetching(&self.rt, store, &rec.0, rec.1.as_deref());
                Ok(StubRead::Wait(self.chunk_waiter(s, a, b)))
            }
            Err(e) => {
                // Failed: the next read starts afresh.
                self.readers.transients.lock().remove(&ino);
                Err(Errno(e))
            }
        }
    }

    /// The object key and version a transient stream reads (kept with it at creation).
    fn record_of_transient(&self, ino: u64) -> Option<(String, Option<String>)> {
        self.readers.transient_keys.lock().get(&ino).cloned()
    }

    fn chunk_waiter(&self, stream: Arc<Stream>, a: usize, b: usize) -> Waiter {
        let limit = Some(self.settings().recall.timeout).filter(|d| !d.is_zero());
        Box::new(move || {
            stream.wait(a, b, limit).map_err(|e| {
                if e == libc::EAGAIN {
                    crate::tier::metrics::RECALLS_OPEN_TIMEOUT.inc();
                    tracing::warn!(
                        "a read gave up waiting for a recall (recall.timeout): EAGAIN; the recall goes on"
                    );
                }
                Errno(e)
            })
        })
    }

    /// Drops transient streams nobody read for a while.
    fn sweep_transients(&self) {
        let mut t = self.readers.transients.lock();
        let before: Vec<u64> = t.keys().copied().collect();
        t.retain(|_, s| s.last_read().is_none_or(|r| r.elapsed() < TRANSIENT_IDLE));
        let mut keys = self.readers.transient_keys.lock();
        for k in before {
            if !t.contains_key(&k) {
                keys.remove(&k);
            }
        }
    }

    /// Records a refusal or a stream read of a file by `who` (once an hour per file and
    /// mode).
    fn note(
        &self,
        ino: u64,
        mode: &'static str,
        fd: BorrowedFd<'_>,
        rec: &StubRecord,
        who: &Reader,
        why: &str,
    ) {
        if mode == "stream" {
            self.readers
                .transient_keys
                .lock()
                .insert(ino, (rec.object_key.clone(), rec.version_id.clone()));
        }
        {
            let mut n = self.readers.noted.lock();
            if n.get(&(ino, mode))
                .is_some_and(|t| t.elapsed() < NOTE_EVERY)
            {
                return;
            }
            if n.len() > 100_000 {
                n.retain(|_, t| t.elapsed() < NOTE_EVERY);
            }
            n.insert((ino, mode), Instant::now());
        }
        let path = self.rel_of(fd);
        let detail = json!({
            "mode": mode, "uid": who.uid, "gid": who.gid, "pid": who.pid,
            "program": who.program, "rule": why, "bytes": rec.size,
        });
        let kind = if mode == "stream" {
            EventKind::Streamed
        } else {
            EventKind::RecallRefused
        };
        tracing::info!(path = path.as_deref().unwrap_or("?"), mode, uid = who.uid, program = %who.program, rule = why, "read of a stub: {mode}");
        if let Err(e) = self
            .catalog
            .append_event(Some(&rec.file_id), path.as_deref(), kind, detail)
        {
            tracing::error!("catalog: cannot record a {mode} of a stub: {e}");
        }
    }

    /// Queues `ino` for the background recall of deferred files (one at a time, in order).
    fn defer(&self, ino: u64, rel: String) {
        {
            let mut q = self.readers.deferred.lock();
            if q.iter().any(|(n, _, _)| *n == ino) {
                return;
            }
            q.push_back((ino, rel, super::usage::now_ns()));
            crate::tier::metrics::RECALLS_QUEUED.set(q.len() as i64);
        }
        if self
            .readers
            .deferring
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let me = self.arc();
        self.rt.spawn(async move {
            loop {
                let next = me.readers.deferred.lock().front().cloned();
                let Some((ino, _, _)) = next else {
                    me.readers
                        .deferring
                        .store(false, std::sync::atomic::Ordering::Release);
                    // A file queued between the check and the store: go on.
                    if me.readers.deferred.lock().is_empty()
                        || me
                            .readers
                            .deferring
                            .swap(true, std::sync::atomic::Ordering::AcqRel)
                    {
                        break;
                    }
                    continue;
                };
                if let Some(mut rx) = me.start_deferred(ino) {
                    let _ = rx.wait_for(|v| v.is_some()).await;
                }
                // Unless cancelled meanwhile (then it is gone from the queue already).
                let mut q = me.readers.deferred.lock();
                if q.front().is_some_and(|f| f.0 == ino) {
                    q.pop_front();
                }
                crate::tier::metrics::RECALLS_QUEUED.set(q.len() as i64);
            }
        });
    }

    /// The recall of a deferred file, if it is still a stub the mount knows.
    fn start_deferred(
        &self,
        ino: u64,
    ) -> Option<tokio::sync::watch::Receiver<super::context::RecallResult>> {
        let m = self.mount.get().and_then(std::sync::Weak::upgrade)?;
        let fd = m.node_fd(ino)?;
        let _held = self.gate.lock(ino);
        let rec = marks::record(fd.as_fd(), marks::STUB).ok()??;
        let w = backing::reopen(fd.as_fd(), libc::O_RDWR).ok()?;
        Some(self.recall_rx(ino, w, rec))
    }
}

fn rel_or(rel: &str, other: Option<String>) -> String {
    if rel.is_empty() {
        other.unwrap_or_default()
    } else {
        rel.to_string()
    }
}

/// An anonymous memory file for a transient stream of `rec` (sparse: only the chunks
/// fetched take memory).
fn memfd(rec: &StubRecord) -> Option<File> {
    let f = anon_file(c"coldtier-stream").ok()?;
    f.set_len(rec.size).ok()?;
    Some(f)
}

/// An anonymous memory file (memfd, close-on-exec) named `name` in /proc.
pub(super) fn anon_file(name: &std::ffi::CStr) -> std::io::Result<File> {
    // SAFETY: a NUL-terminated name; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// One recall in flight, queued (deferred) or waiting for an archive restore, as `coldtier
/// recalls` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecallRow {
    /// Its id (the node id): what `coldtier recalls cancel ID` takes.
    pub id: u64,
    pub path: String,
    pub size: u64,
    /// Bytes verified and in place (a streamed recall; 0 for a recall of one GET until it
    /// ends).
    pub done: u64,
    /// `streaming`, `recalling` (one GET), `queued` (deferred by a rule), `restore`
    /// (waiting for an archive restore).
    pub state: String,
    /// Who started it: uid, gid, pid, program (None: coldtier itself or unknown).
    pub who: Option<serde_json::Value>,
    /// When it started (ns since the epoch; queued: when it was queued).
    pub since_ns: i64,
}

/// What `coldtier recalls cancel` stops.
#[derive(Debug, Clone, Copy)]
pub enum RecallSelector {
    Id(u64),
    Uid(u32),
    All,
}

/// A recall in flight: where and since when, who (set by `recall_rx_for`).
pub struct InFlight {
    pub path: String,
    pub size: u64,
    pub since_ns: i64,
    pub who: Option<serde_json::Value>,
    pub cancel: Arc<tokio::sync::Notify>,
}

impl Tiering {
    /// The recalls in flight, queued and waiting for a restore, oldest first.
    pub fn recalls_list(&self) -> Vec<RecallRow> {
        let mut rows: Vec<RecallRow> = Vec::new();
        for (&id, f) in self.readers.in_flight.lock().iter() {
            let stream = self.streams.lock().get(&id).cloned();
            rows.push(RecallRow {
                id,
                path: f.path.clone(),
                size: f.size,
                done: stream.as_ref().map_or(0, |s| s.bytes_done()),
                state: if stream.is_some() {
                    "streaming"
                } else {
                    "recalling"
                }
                .into(),
                who: f.who.clone(),
                since_ns: f.since_ns,
            });
        }
        for (id, rel, since) in self.readers.deferred.lock().iter() {
            if rows.iter().any(|r| r.id == *id) {
                continue;
            }
            rows.push(RecallRow {
                id: *id,
                path: rel.clone(),
                size: 0,
                done: 0,
                state: "queued".into(),
                who: None,
                since_ns: *since,
            });
        }
        for file_id in self.pollers.lock().iter() {
            if let Ok(Some(row)) = self.catalog.file_by_id(file_id) {
                rows.push(RecallRow {
                    id: 0,
                    path: row.path,
                    size: row.size,
                    done: 0,
                    state: "restore".into(),
                    who: None,
                    since_ns: row.updated_at,
                });
            }
        }
        rows.sort_by_key(|r| r.since_ns);
        rows
    }

    /// Stops the recalls `sel` names (and takes queued ones off the queue): each ends as
    /// a failed recall (ECANCELED to its readers, RECALL_FAILED, the file a stub again).
    pub fn cancel_recalls(&self, sel: RecallSelector) -> Vec<RecallRow> {
        let hit = |r: &RecallRow| match sel {
            RecallSelector::Id(i) => r.id == i,
            RecallSelector::Uid(u) => r
                .who
                .as_ref()
                .and_then(|w| w["uid"].as_u64())
                .is_some_and(|x| x == u as u64),
            RecallSelector::All => true,
        };
        let mut out = Vec::new();
        for r in self.recalls_list().into_iter().filter(|r| hit(r)) {
            match r.state.as_str() {
                "queued" => {
                    let mut q = self.readers.deferred.lock();
                    q.retain(|(n, _, _)| *n != r.id);
                    crate::tier::metrics::RECALLS_QUEUED.set(q.len() as i64);
                }
                "restore" => continue,
                _ => {
                    if let Some(f) = self.readers.in_flight.lock().get(&r.id) {
                        f.cancel.notify_one();
                    }
                }
            }
            tracing::warn!(path = %r.path, state = %r.state, "recall cancelled (coldtier recalls cancel)");
            out.push(r);
        }
        out
    }
}
