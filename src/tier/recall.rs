//! The recall: single flight per inode, the Glacier / Deep Archive restore flow and its
//! pollers, and the crash-safe order of the steps (docs/invariants.md).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::watch;

use super::config::OnArchived;
use crate::catalog::{FileRow, FileState};
use crate::fs::backing::{self, Errno, SetTime};
use crate::fs::overlay::Waiter;
use crate::store::{ChecksumAlgo, GetRequest, StoreErrorKind};
use crate::tier::marks;
use crate::tier::state::Action;
use crate::tier::stub::StubRecord;

use super::context::{ns_of, split_ns, RecallResult, StepError, Tiering};
use super::record::{Change, Durability};

/// What [`Tiering::claim`] gives: the recall in flight to wait on, or this caller's own.
pub(super) enum Claim {
    Joined(watch::Receiver<RecallResult>),
    Mine(Claimed),
}

/// A recall this caller runs: whoever else wants the file waits on `rx` until
/// [`Tiering::release_claim`] sends the outcome. A claim dropped without it (a panic of its
/// recall) is released with EIO: the file's next recall starts afresh, never joins a
/// recall that will not end.
pub(super) struct Claimed {
    pub node: u64,
    tx: watch::Sender<RecallResult>,
    pub rx: watch::Receiver<RecallResult>,
    /// `coldtier recalls cancel` notifies it (one permit: a later wait sees it).
    pub cancel: Arc<tokio::sync::Notify>,
    owner: std::sync::Weak<Tiering>,
    released: bool,
}

impl Claimed {
    /// Out of the maps (the single-flight entry only if it is still this claim's), then
    /// its waiters hear `result`.
    fn end(&mut self, t: &Tiering, result: Result<(), i32>) {
        self.released = true;
        let node = self.node;
        t.streams.lock().remove(&node);
        t.readers.in_flight.lock().remove(&node);
        {
            let mut m = t.recalls.lock();
            if m.get(&node).is_some_and(|rx| rx.same_channel(&self.rx)) {
                m.remove(&node);
            }
        }
        let _ = self.tx.send(Some(result));
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        tracing::error!(
            node = self.node,
            "a recall ended without an outcome; its readers get EIO"
        );
        if let Some(t) = self.owner.upgrade() {
            self.end(&t, Err(libc::EIO));
        } else {
            let _ = self.tx.send(Some(Err(libc::EIO)));
        }
    }
}

/// Objects up to this size have their RECALL_STARTED recorded with the recall's outcome.
pub(super) const LATE_START_MAX: u64 = 8 << 20;

/// The detail of a recall's events.
pub(super) fn start_detail(rec: &StubRecord) -> serde_json::Value {
    json!({"object_key": rec.object_key, "version_id": rec.version_id, "bytes": rec.size})
}

/// `action` with `detail`, after the recall's RECALL_STARTED if that is still owed (which
/// it no longer is then).
pub(super) fn after_owed_start(
    owed: &mut bool,
    start: &serde_json::Value,
    action: Action,
    detail: serde_json::Value,
) -> Change {
    let mut steps = Vec::with_capacity(2);
    if std::mem::take(owed) {
        steps.push((Action::RecallStart, start.clone()));
    }
    steps.push((action, detail));
    Change::steps(steps)
}

impl Tiering {
    /// Whether the file open as `fd` is being recalled now (its catalog row may say
    /// `stub` until the recall ends: see `recall_steps`).
    pub(crate) fn recall_in_flight(&self, fd: BorrowedFd<'_>) -> bool {
        if self.recalls.lock().is_empty() {
            return false;
        }
        let Ok(st) = backing::stat_fd(fd) else {
            return false;
        };
        let node = self.node_id(&st);
        // A stream whose recall failed has told its readers already: not in flight any
        // more, though its cleanup has not finished.
        self.recalls.lock().contains_key(&node)
            && !self
                .streams
                .lock()
                .get(&node)
                .is_some_and(|s| s.has_failed())
    }

    pub(super) fn in_flight(&self, ino: u64) -> Option<Waiter> {
        let rx = self.recalls.lock().get(&ino).cloned()?;
        Some(self.waiter(rx))
    }

    /// What a data operation (or a truncating open) waits on: the recall's outcome, for at
    /// most `recall.timeout`; past it the operation fails with `EAGAIN` and the recall goes
    /// on (a later one joins it).
    pub(super) fn waiter(&self, rx: watch::Receiver<RecallResult>) -> Waiter {
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
                                "a read gave up waiting for a recall (recall.timeout): EAGAIN; the recall goes on"
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
        self.recall_rx_for(node, fd, rec, None, None)
    }

    /// [`Tiering::recall_rx`] for a read of `(offset, length)`: a streaming recall fetches
    /// the chunks it needs first.
    pub(crate) fn recall_rx_for(
        &self,
        node: u64,
        fd: OwnedFd,
        rec: StubRecord,
        first: Option<(u64, u64)>,
        who: Option<&super::rules::Reader>,
    ) -> watch::Receiver<RecallResult> {
        let claim = match self.claim(node, rec.size, who) {
            Claim::Joined(rx) => return rx,
            Claim::Mine(c) => c,
        };
        let rx = claim.rx.clone();
        // A stub with chunk sums streams: readers get its chunks as they land.
        let file = File::from(fd);
        if let Some(s) = file
            .try_clone()
            .ok()
            .and_then(|f| super::stream::Stream::for_record(&rec, f))
        {
            if let Some((off, len)) = first {
                s.want(off, len);
            }
            self.streams.lock().insert(node, s);
        }
        let me = self.arc();
        // A blocking thread of its own: the recall's fsyncs, xattrs and catalog writes
        // block, and concurrent recalls must not queue behind the runtime's workers.
        self.rt.spawn_blocking(move || {
            let _ = me.recall_whole(claim, file, rec);
        });
        rx
    }

    /// Becomes the recall of `node` (registered in the single-flight map and the list of
    /// recalls in flight), or joins the one in flight.
    pub(super) fn claim(&self, node: u64, size: u64, who: Option<&super::rules::Reader>) -> Claim {
        let mut m = self.recalls.lock();
        if let Some(rx) = m.get(&node) {
            return Claim::Joined(rx.clone());
        }
        let who =
            who.map(|w| json!({"uid": w.uid, "gid": w.gid, "pid": w.pid, "program": w.program}));
        if let Some(w) = &who {
            self.readers.who.lock().insert(node, w.clone());
        }
        let cancel = Arc::new(tokio::sync::Notify::new());
        self.readers.in_flight.lock().insert(
            node,
            super::readers::InFlight {
                // Filled in by the recall from its row (one path lookup per recall).
                path: String::new(),
                size,
                since_ns: super::usage::now_ns(),
                who,
                cancel: cancel.clone(),
            },
        );
        let (tx, rx) = watch::channel(None);
        m.insert(node, rx.clone());
        Claim::Mine(Claimed {
            node,
            tx,
            rx,
            cancel,
            owner: self.me.clone(),
            released: false,
        })
    }

    /// Ends a recall this caller claimed: out of the maps, then its waiters hear `result`.
    pub(super) fn release_claim(&self, mut claim: Claimed, result: Result<(), i32>) {
        claim.end(self, result);
    }

    /// The whole recall of a claimed stub, on a blocking thread: [`Tiering::recall`], then
    /// the claim released with its outcome.
    pub(super) fn recall_whole(
        &self,
        claim: Claimed,
        file: File,
        rec: StubRecord,
    ) -> Result<(), StepError> {
        let r = self
            .rt
            .block_on(self.recall(claim.node, file, rec, claim.cancel.clone()));
        self.release_claim(claim, r.as_ref().map(drop).map_err(|e| e.errno));
        r
    }

    /// The recall: GET into the same backing inode, fsync, checksum, then the switch from
    /// stub to premigrated under the gate. A failure leaves the stub (empty, times back).
    pub(super) async fn recall(
        &self,
        node: u64,
        file: File,
        rec: StubRecord,
        cancel: Arc<tokio::sync::Notify>,
    ) -> Result<(), StepError> {
        // Every caller read `rec` under the file's gate and claimed the file under it
        // (docs/invariants.md), so this holds; checked again because what follows empties
        // the file: one that is no longer that stub is left as it is.
        let still = {
            let _held = self.gate.lock(node);
            self.is_still_stub(file.as_fd(), &rec)
        };
        if !still.map_err(StepError::from)? {
            tracing::error!(node, key = %rec.object_key, "a recall found its file no longer the stub it was started for; the file is left as it is");
            if let Some(s) = self.streams.lock().get(&node) {
                s.fail(libc::EAGAIN);
            }
            return Ok(());
        }
        let t0 = Instant::now();
        let _in_flight = crate::tier::metrics::RECALLS_IN_FLIGHT.track();
        let mut row = self.row_for(&rec, file.as_fd(), FileState::Stub);
        if let Some(f) = self.readers.in_flight.lock().get_mut(&node) {
            f.path.clone_from(&row.path);
        }
        let mut start_owed = false;
        // Who started it (a read: uid, pid, program), in its RECALL_STARTED.
        let mut start = start_detail(&rec);
        if let (Some(who), Some(m)) = (self.readers.who.lock().remove(&node), start.as_object_mut())
        {
            m.insert("who".into(), who);
        }
        // `coldtier recalls cancel`: the steps are dropped where they wait (a GET, a restore
        // poll), never inside the switch (it does not wait), as a crash would stop them.
        let result = tokio::select! {
            r = self.recall_steps(node, &file, &rec, &mut row, &mut start_owed, &start) => r,
            _ = cancel.notified() => Err(StepError::new(
                libc::ECANCELED,
                "cancelled (coldtier recalls cancel)",
            )),
        };
        let failed = result
            .as_ref()
            .err()
            .filter(|e| e.errno != libc::EAGAIN && e.errno != libc::ETIMEDOUT);
        if let Some(e) = failed {
            // The row is a stub again before any reader hears of the failure (a `status`
            // right after the reader's EIO says `stub`). A crash before the reset below
            // leaves a stub with some local bytes, which its next read recalls over.
            tracing::error!(path = %row.path, key = %rec.object_key, "recall failed: {e}");
            let detail = json!({"object_key": rec.object_key, "error": e.message});
            let change = after_owed_start(&mut start_owed, &start, Action::RecallFailed, detail);
            if let Err(ce) = self.record(&mut row, change) {
                tracing::error!("catalog: cannot record RECALL_FAILED: {ce}");
            }
        }
        if let (Err(e), Some(s)) = (&result, self.streams.lock().get(&node)) {
            // Every reader of the stream gets the error before the file is emptied.
            s.fail(e.errno);
        }
        match &result {
            Ok(()) => {
                tracing::info!(path = %row.path, bytes = rec.size, ms = t0.elapsed().as_millis() as u64, "recalled");
            }
            Err(e) if failed.is_none() => {
                tracing::info!(path = %row.path, "recall waits for an archive restore: {e}");
            }
            Err(_) => self.reset_stub(&file, &rec),
        }
        crate::tier::metrics::recall_done(
            result.as_ref().map_err(|e| e.errno).copied(),
            rec.size,
            t0.elapsed(),
        );
        result
    }

    /// Whether the file behind `fd` is still the stub `rec` describes (the same file, the
    /// same object): what a recall checks under the file's gate before it claims the file
    /// or empties it. A stub recalled since `rec` was read (and maybe written since) is
    /// not, nor one tiered again to another object.
    pub(super) fn is_still_stub(
        &self,
        fd: BorrowedFd<'_>,
        rec: &StubRecord,
    ) -> Result<bool, Errno> {
        Ok(marks::record(fd, marks::STUB)?.is_some_and(|now| {
            now.file_id == rec.file_id
                && now.object_key == rec.object_key
                && now.version_id == rec.version_id
                && now.checksum == rec.checksum
        }))
    }

    /// Puts a stub back as it was: no data, its times.
    pub(super) fn reset_stub(&self, file: &File, rec: &StubRecord) {
        let _ = backing::ftruncate(file.as_fd(), 0);
        let _ = backing::utimens_fd(file.as_fd(), false, SetTime::Omit, split_ns(rec.mtime_ns));
    }

    pub(super) async fn recall_steps(
        &self,
        node: u64,
        file: &File,
        rec: &StubRecord,
        row: &mut FileRow,
        start_owed: &mut bool,
        start: &serde_json::Value,
    ) -> Result<(), StepError> {
        let store = self.store()?;
        let algo: ChecksumAlgo = rec
            .checksum_algo
            .parse()
            .map_err(|e: String| StepError::new(libc::EIO, e))?;
        let detail = start.clone();
        let mut pending = row.state == FileState::RestorePending;
        if !pending {
            // A small object's recall takes one GET: its RECALL_STARTED is recorded with
            // its outcome, in one transaction (status shows `recalling` meanwhile from the
            // recalls in flight). A large one's is recorded now, so that a crash
            // mid-recall is put right (and its blocks freed) at the next start.
            if rec.size <= LATE_START_MAX {
                *start_owed = true;
            } else {
                self.record(
                    row,
                    Change::of(Action::RecallStart, detail.clone()).durability(Durability::Lazy),
                )
                .unwrap_or_else(|e| tracing::error!("catalog: {e}"));
            }
        }
        let mut deadline: Option<Instant> = None;
        // A replica that served the recall when the primary failed: its name, and why.
        let mut fallback: Option<(String, String)> = None;
        loop {
            if pending {
                let meta = store
                    .head(&rec.object_key, rec.version_id.as_deref())
                    .await
                    .map_err(|e| {
                        StepError::new(libc::EIO, format!("HEAD {}: {e}", rec.object_key))
                    })?;
                if meta.restore.readable() {
                    self.record(
                        row,
                        Change::of(Action::RestoreReady, detail.clone())
                            .durability(Durability::Lazy),
                    )
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
            let stream = self.streams.lock().get(&node).cloned();
            if rec.extents.is_some() || stream.is_some() {
                // A sparse file: its size first (all holes), then its data extents. A
                // stream: its size, then its chunks as they come.
                backing::ftruncate(file.as_fd(), rec.size)?;
            }
            self.failpoint("recall-after-truncate");
            tracing::debug!(node, "recall: fetching");
            let got = self
                .fetch_from(
                    &store,
                    rec.version_id.as_deref(),
                    stream.as_ref(),
                    file,
                    rec,
                    algo,
                )
                .await;
            match got {
                Err(e) if e.is(StoreErrorKind::InvalidObjectState) => {
                    let tier = self.settings().recall.restore_tier;
                    // The members of one archived pack share its restore: the first
                    // recall requests it, the others wait on it.
                    let shared = rec.pack.is_some() && !self.first_pack_restore(rec);
                    let outcome = if shared {
                        "SharedWithPack".to_string()
                    } else {
                        let o = store
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
                            });
                        match o {
                            Ok(o) => format!("{o:?}"),
                            Err(e) => {
                                self.pack_restores.lock().remove(&rec.object_key);
                                return Err(e);
                            }
                        }
                    };
                    let d = json!({
                        "object_key": rec.object_key,
                        "tier": self.settings().recall.restore_tier.as_str(),
                        "days": self.settings().recall.restore_days,
                        "outcome": outcome,
                    });
                    let change = after_owed_start(start_owed, start, Action::RestoreRequested, d);
                    self.record(row, change)
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
                    let why = format!("GET {}: {e}", rec.object_key);
                    if errno == libc::EIO {
                        if let Some(from) = self
                            .recall_from_replicas(file, rec, algo, stream.as_ref(), &why)
                            .await
                        {
                            fallback = Some(from);
                            break;
                        }
                    }
                    return Err(StepError::new(errno, why));
                }
                Ok(got) => {
                    // The data (and the size and blocks that reach it) on disk before the
                    // switch: fdatasync is enough, the times are set again after it.
                    backing::fsync(file.as_fd(), true)?;
                    self.failpoint("recall-after-data");
                    if got.checksum.algo != algo || got.checksum.base64() != rec.checksum {
                        let why = format!(
                            "checksum mismatch: {} read back as {}, the stub record says {}:{}",
                            rec.object_key, got.checksum, rec.checksum_algo, rec.checksum
                        );
                        // A stream's chunks each matched their sums: its whole cannot be
                        // fetched again in place; a plain GET's file is refilled.
                        if stream.is_none() {
                            if let Some(from) =
                                self.recall_from_replicas(file, rec, algo, None, &why).await
                            {
                                fallback = Some(from);
                                break;
                            }
                        }
                        return Err(StepError::new(libc::EIO, why));
                    }
                    break;
                }
            }
        }
        if fallback.is_some() {
            // The replica's bytes on disk (synced), as the primary's are above.
            self.failpoint("recall-after-data");
        }
        // The switch: times back, then copy record, then the stub record goes. The data is
        // on disk already; the switch itself needs no fsync: lost to a power cut, the file
        // is a stub again (its data is recalled again), never a file with missing data.
        backing::utimens_fd(file.as_fd(), false, SetTime::Now, split_ns(rec.mtime_ns))?;
        {
            let _held = self.gate.lock(node);
            marks::set_record(file.as_fd(), marks::COPY, rec)?;
            self.failpoint("recall-after-premig-xattr");
            marks::unstub(file.as_fd(), &rec.file_id)?;
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
        let mut detail = detail;
        if let (Some((from, why)), Some(m)) = (fallback, detail.as_object_mut()) {
            m.insert("from_replica".into(), json!(from));
            m.insert("primary_error".into(), json!(why));
        }
        let change = after_owed_start(start_owed, start, Action::RecallDone, detail);
        self.record(row, change.durability(Durability::Lazy))
            .unwrap_or_else(|e| tracing::error!("catalog: cannot record RECALLED: {e}"));
        Ok(())
    }

    /// The object into `file` from `store` (version `version_id`): through the stream's
    /// chunks when there is one, else one GET.
    pub(super) async fn fetch_from(
        &self,
        store: &std::sync::Arc<dyn crate::store::ObjectStore>,
        version_id: Option<&str>,
        stream: Option<&std::sync::Arc<super::stream::Stream>>,
        file: &File,
        rec: &StubRecord,
        algo: ChecksumAlgo,
    ) -> Result<crate::store::GetResult, crate::store::StoreError> {
        match stream {
            Some(s) => {
                self.stream_get(s, store.clone(), version_id, file, rec, algo)
                    .await
            }
            None => {
                // Spans (a bulk recall's, read-ahead) are of the primary only: a replica's
                // bytes are fetched by themselves, and said to be the replica's.
                let primary = rec.pack.is_some()
                    && self
                        .store_opt()
                        .is_some_and(|p| std::sync::Arc::ptr_eq(&p, store));
                if primary {
                    self.span_fetched(rec).await;
                    if let Some(got) = self.member_from_span(rec, file, algo) {
                        return got;
                    }
                    if let Some(got) = self
                        .member_read_ahead(store.as_ref(), version_id, rec, file, algo)
                        .await
                    {
                        return got;
                    }
                }
                // A pack member: one ranged GET of its bytes, hashed by themselves.
                let (expected_size, range, dest_base) = match &rec.pack {
                    Some(p) => (p.pack_size, Some((p.offset, rec.size)), p.offset),
                    None => (rec.object_size(), None, 0),
                };
                store
                    .get(GetRequest {
                        key: &rec.object_key,
                        version_id,
                        dest: Some(file),
                        expected_size,
                        checksum: algo,
                        extents: rec.extents.as_ref(),
                        range,
                        dest_base,
                        progress: None,
                    })
                    .await
            }
        }
    }

    /// The primary failed (`why`): the object from the first `[[replica]]` target that
    /// gives the bytes the stub record's checksum names (a stream goes on with the chunks
    /// it lacks, each checked against its sum): first the targets the catalog records a
    /// verified copy on, then the others, asked for the key (a catalog rebuilt from the
    /// primary records none, nor does it know of copies put by the bucket's own
    /// replication; the checksum is the proof either way). Its name and `why`, or None
    /// (the recall then fails as it would have).
    async fn recall_from_replicas(
        &self,
        file: &File,
        rec: &StubRecord,
        algo: ChecksumAlgo,
        stream: Option<&std::sync::Arc<super::stream::Stream>>,
        why: &str,
    ) -> Option<(String, String)> {
        self.forget_pack_spans(&rec.object_key);
        let mut targets = self
            .catalog
            .replica_targets(&rec.object_key, rec.version_id.as_deref())
            .unwrap_or_else(|e| {
                tracing::error!("catalog: {e}");
                Vec::new()
            });
        for name in self.replica_names() {
            if !targets.iter().any(|(t, _)| *t == name) {
                targets.push((name, None));
            }
        }
        for (target, replica_version) in targets {
            let Some(replica) = self.replica(&target) else {
                continue;
            };
            tracing::warn!(key = %rec.object_key, target = %target, "recall: the primary failed ({why}); reading the replica");
            if stream.is_none() {
                let reset = backing::ftruncate(file.as_fd(), 0).and_then(|_| match rec.extents {
                    Some(_) => backing::ftruncate(file.as_fd(), rec.size),
                    None => Ok(()),
                });
                if reset.is_err() {
                    return None;
                }
            }
            let got = self
                .fetch_from(
                    &replica,
                    replica_version.as_deref(),
                    stream,
                    file,
                    rec,
                    algo,
                )
                .await;
            match got {
                Ok(g) if g.checksum.algo == algo && g.checksum.base64() == rec.checksum => {
                    if backing::fsync(file.as_fd(), true).is_ok() {
                        return Some((target, why.to_string()));
                    }
                }
                Ok(g) => {
                    tracing::error!(key = %rec.object_key, target = %target, "replica read back as {}: not used", g.checksum)
                }
                Err(e) => tracing::error!(key = %rec.object_key, target = %target, "replica: {e}"),
            }
        }
        None
    }

    /// A streaming recall's GET: every chunk fetched and checked against its sum
    /// ([`super::stream`]), then the whole object's checksum: from the chunk sums for
    /// crc32c (what they are), else by reading the file back.
    async fn stream_get(
        &self,
        s: &std::sync::Arc<super::stream::Stream>,
        store: std::sync::Arc<dyn crate::store::ObjectStore>,
        version_id: Option<&str>,
        file: &File,
        rec: &StubRecord,
        algo: ChecksumAlgo,
    ) -> Result<crate::store::GetResult, crate::store::StoreError> {
        s.fetch_all(store, &rec.object_key, version_id).await?;
        let checksum = if algo == ChecksumAlgo::Crc32c {
            s.combined_crc32c()
        } else {
            let f = file
                .try_clone()
                .map_err(|e| crate::store::StoreError::io("dup of the recalled file", &e))?;
            let size = rec.size;
            tokio::task::spawn_blocking(move || {
                let mut h = crate::store::Hasher::new(algo);
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0u64;
                while off < size {
                    let n = buf.len().min((size - off) as usize);
                    crate::store::read_mapped(&f, None, &mut buf[..n], off)?;
                    h.update(&buf[..n]);
                    off += n as u64;
                }
                Ok(h.finalize())
            })
            .await
            .map_err(|e| {
                crate::store::StoreError::new(StoreErrorKind::Other, format!("read back: {e}"))
            })??
        };
        Ok(crate::store::GetResult {
            bytes: rec.size,
            checksum,
            version_id: rec.version_id.clone(),
        })
    }

    /// Whether this recall of a pack member is the first to find the pack archived since
    /// its restore would have lapsed (`recall.restore_days`): it then requests the restore
    /// for all of the pack's members.
    fn first_pack_restore(&self, rec: &StubRecord) -> bool {
        let days = u64::from(self.settings().recall.restore_days.max(1));
        let fresh = std::time::Duration::from_secs(days * 86_400);
        let mut m = self.pack_restores.lock();
        match m.get(&rec.object_key) {
            Some(t) if t.elapsed() < fresh => false,
            _ => {
                m.insert(rec.object_key.clone(), Instant::now());
                true
            }
        }
    }

    /// Polls a pending restore in the background and recalls the file once it is ready
    /// (one poller per file: [`super::background::RestorePoller`]).
    pub(super) fn spawn_poller(&self, node: u64, file: &File, rec: &StubRecord) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim dropped without an outcome (its recall panicked) tells its waiters EIO and
    /// leaves the file to a new recall, never to the dead one.
    #[test]
    fn a_claim_dropped_without_its_outcome_frees_the_file_for_the_next_recall() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = super::super::context::test_tiering(dir.path(), None, &rt);
        let Claim::Mine(first) = t.claim(7, 10, None) else {
            panic!("the first claim of a node is its own");
        };
        let Claim::Joined(mut rx) = t.claim(7, 10, None) else {
            panic!("a second claim joins the first");
        };
        assert_eq!(t.recalls_list().len(), 1);
        drop(first);
        assert_eq!(*rx.borrow_and_update(), Some(Err(libc::EIO)));
        assert!(t.recalls_list().is_empty());
        let Claim::Mine(again) = t.claim(7, 10, None) else {
            panic!("after a dropped claim the next recall starts afresh");
        };
        t.release_claim(again, Ok(()));
        assert!(matches!(t.claim(7, 10, None), Claim::Mine(_)));
    }
}
