//! The bulk recall (`coldtier recall PATH...`, `-r`): many stubs at once, the cost of
//! each small one cut to what it must cost (docs/architecture.md "Bulk recall").
//!
//! Each stub is claimed in the same single-flight map an open uses (a reader of a file
//! in the batch waits for it, as for any recall), and its bytes are fetched into its
//! backing file by a task on the runtime: one GET, or its share of a pack span the bulk
//! recall fetched once for all its members, checked against the stub record's checksum.
//! The fetched files are then finished in batches on one blocking thread: each file's
//! data on disk (fdatasync), its times back, the switch from stub to premigrated under
//! its gate (the same order as one recall: docs/invariants.md), and the RECALL_STARTED and
//! RECALLED events of the whole batch in one catalog transaction. Per file that saves the
//! thread a recall of one file takes, the hand-offs between it and the runtime, and a
//! catalog commit.
//!
//! Anything unusual goes to the recall of one file ([`Tiering::recall_whole`]), under the
//! claim already held: a large object, a sparse file, a stream, a restore pending, a GET
//! that failed (replicas, archive restores), a checksum that did not match, an error of
//! the switch, a cancel (`coldtier recalls cancel`). It starts over from the stub, as a
//! recall after a crash would.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::catalog::{FileRow, FileState};
use crate::fs::backing::{self, SetTime};
use crate::store::ChecksumAlgo;
use crate::tier::marks;
use crate::tier::state::Action;
use crate::tier::stub::StubRecord;

use super::context::{ns_of, split_ns, StepError, Tiering};
use super::manual::Recalled;
use super::recall::{start_detail, Claim, Claimed, LATE_START_MAX};
use super::record::{Change, Durability};

/// Files whose data, switch and records are finished together.
const BATCH: usize = 64;

/// A claimed stub whose verified bytes are in its backing file (not yet on disk).
struct Fetched {
    claim: Claimed,
    file: File,
    rec: StubRecord,
    row: FileRow,
    t0: Instant,
    /// The backing filesystem's device.
    dev: u64,
    _in_flight: crate::base::metrics::GaugeGuard,
}

/// What the first stage made of one path.
enum Step {
    Done(Result<Recalled, StepError>),
    Fetched(Box<Fetched>),
}

/// A batch of fetched files whose data `sync_batch` made durable: per backing filesystem
/// (device), whether its syncfs succeeded.
struct Synced {
    files: Vec<(usize, Fetched)>,
    synced: std::collections::HashMap<u64, bool>,
}

/// The data of a batch on disk (a blocking thread): one syncfs for each filesystem among
/// the files, where each file's fdatasync would write and flush by itself. Each file then
/// asks for an error of its own writeback at its switch (syncfs reports the filesystem's
/// since the file was opened); a file on a filesystem whose syncfs failed, or alone in its
/// batch, gets its own fdatasync.
fn sync_batch(files: Vec<(usize, Fetched)>) -> Synced {
    let mut synced = std::collections::HashMap::new();
    if files.len() > 1 {
        for (_, f) in &files {
            synced.entry(f.dev).or_insert_with(|| {
                backing::syncfs(f.file.as_fd())
                    .inspect_err(|e| tracing::warn!("bulk recall: syncfs: {e:?}"))
                    .is_ok()
            });
        }
    }
    Synced { files, synced }
}

/// The outcome of a path: its index in the request and its result.
pub type BulkResult = (usize, Result<Recalled, StepError>);

impl Tiering {
    /// Recalls the stubs among `rels` (relative to the source), `slots` fetches at once;
    /// `done` hears each path's outcome as it is known. The RECALLED events are written
    /// lazily: the caller makes them durable ([`crate::catalog::Catalog::sync`]) before it
    /// reports.
    pub async fn recall_paths(
        &self,
        rels: Vec<(usize, PathBuf)>,
        slots: usize,
        done: &mut dyn FnMut(BulkResult),
    ) {
        let me = self.arc();
        let sem = Arc::new(tokio::sync::Semaphore::new(slots.max(1)));
        let mut set = tokio::task::JoinSet::new();
        let mut ready: Vec<(usize, Fetched)> = Vec::new();
        // Two stages after the fetches, each one batch at a time: the data of a batch is
        // made durable (`sync_batch`) while the batch before it is recorded and switched
        // (`finish_batch`), so that the finisher's catalog work does not wait for the disk.
        let mut syncing: Option<tokio::task::JoinHandle<Synced>> = None;
        let mut synced: Option<Synced> = None;
        let mut finishing: Option<tokio::task::JoinHandle<Vec<BulkResult>>> = None;
        // What each task and each batch answer for: a task that panics still gets each of
        // its paths a result (a failure), never a silent gap.
        let mut tasks: std::collections::HashMap<tokio::task::Id, usize> = Default::default();
        let mut in_sync: Vec<usize> = Vec::new();
        let mut in_batch: Vec<usize> = Vec::new();
        let failed = |e: &tokio::task::JoinError| {
            StepError::new(libc::EIO, format!("the recall failed: {e}"))
        };
        let mut rels = rels.into_iter();
        loop {
            // Fetches while there are slots, as long as what waits to be finished stays
            // bounded (each holds an open file and a claim).
            while ready.len() < 2 * BATCH && sem.available_permits() > 0 {
                let Some((i, rel)) = rels.next() else { break };
                let permit = sem.clone().try_acquire_owned().expect("a permit is free");
                let me = me.clone();
                let task = set.spawn(async move {
                    let s = me.claim_and_fetch(rel).await;
                    drop(permit);
                    (i, s)
                });
                tasks.insert(task.id(), i);
            }
            // A synced batch goes to the finisher whenever it is idle ...
            if finishing.is_none() {
                if let Some(batch) = synced.take() {
                    in_batch = batch.files.iter().map(|(i, _)| *i).collect();
                    let me = me.clone();
                    finishing = Some(tokio::task::spawn_blocking(move || me.finish_batch(batch)));
                }
            }
            // ... and whatever is fetched to the sync whenever it is idle and its last batch
            // has been taken: the batches are as large as the fetches outrun the two stages
            // (group commit), at most BATCH.
            if syncing.is_none() && synced.is_none() && !ready.is_empty() {
                let batch: Vec<_> = ready.drain(..ready.len().min(BATCH)).collect();
                in_sync = batch.iter().map(|(i, _)| *i).collect();
                syncing = Some(tokio::task::spawn_blocking(move || sync_batch(batch)));
            }
            if set.is_empty() && syncing.is_none() && synced.is_none() && finishing.is_none() {
                return;
            }
            tokio::select! {
                r = set.join_next_with_id(), if !set.is_empty() => match r {
                    Some(Ok((id, (i, step)))) => {
                        tasks.remove(&id);
                        match step {
                            Step::Done(r) => done((i, r)),
                            Step::Fetched(f) => ready.push((i, *f)),
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!("bulk recall: a fetch task failed: {e}");
                        if let Some(i) = tasks.remove(&e.id()) {
                            done((i, Err(failed(&e))));
                        }
                    }
                    None => {}
                },
                r = async { syncing.as_mut().expect("guarded").await }, if syncing.is_some() => {
                    syncing = None;
                    match r {
                        Ok(batch) => synced = Some(batch),
                        Err(e) => {
                            tracing::error!("bulk recall: a batch failed: {e}");
                            for i in in_sync.drain(..) {
                                done((i, Err(failed(&e))));
                            }
                        }
                    }
                }
                r = async { finishing.as_mut().expect("guarded").await }, if finishing.is_some() => {
                    finishing = None;
                    match r {
                        Ok(results) => results.into_iter().for_each(&mut *done),
                        Err(e) => {
                            tracing::error!("bulk recall: a batch failed: {e}");
                            for i in in_batch.drain(..) {
                                done((i, Err(failed(&e))));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Claims the stub at `rel` and fetches its bytes into it; the recall of one file for
    /// anything unusual.
    async fn claim_and_fetch(self: Arc<Self>, rel: PathBuf) -> Step {
        let fd = match backing::open_beneath(self.root(), &rel, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) => return Step::Done(Err(e.into())),
        };
        let st = match backing::stat_fd(fd.as_fd()) {
            Ok(st) => st,
            Err(e) => return Step::Done(Err(e.into())),
        };
        let node = self.node_id(&st);
        // The record read and the claim under the file's gate, as a read's recall takes
        // them (docs/invariants.md): a recall's switch, and a truncate of a stub to zero,
        // happen under it too. Read outside it, the record could be of a stub that another
        // recall switched, and a writer changed, before this claim: this recall would then
        // empty the file and write the old object's bytes over the new ones.
        let (claimed, rec) = {
            let _held = self.gate.lock(node);
            let rec = match marks::record(fd.as_fd(), marks::STUB) {
                Ok(Some(rec)) => rec,
                Ok(None) => return Step::Done(Ok(Recalled::AlreadyLocal)),
                Err(e) => return Step::Done(Err(e.into())),
            };
            self.failpoint("bulk-recall-before-claim");
            (self.claim(node, rec.size, None), rec)
        };
        let bytes = rec.size;
        let claim = match claimed {
            Claim::Joined(mut rx) => {
                // A recall of it is in flight (a reader's): its outcome is this one's.
                let r = match rx.wait_for(|v| v.is_some()).await {
                    Ok(v) => (*v).unwrap_or(Err(libc::EIO)),
                    Err(_) => Err(libc::EIO),
                };
                return Step::Done(
                    r.map(|()| Recalled::Now { bytes })
                        .map_err(|e| backing::Errno(e).into()),
                );
            }
            Claim::Mine(c) => c,
        };
        let file = match backing::reopen(fd.as_fd(), libc::O_RDWR) {
            Ok(w) => File::from(w),
            Err(e) => {
                self.release_claim(claim, Err(e.0));
                return Step::Done(Err(e.into()));
            }
        };
        // The path is known: no need to ask the kernel for it.
        let row = self.row_at(
            &rec,
            Some(rel.to_string_lossy().into_owned()),
            FileState::Stub,
        );
        if let Some(f) = self.readers.in_flight.lock().get_mut(&node) {
            f.path.clone_from(&row.path);
        }
        let usual = rec.size <= LATE_START_MAX
            && rec.extents.is_none()
            && rec.chunks.is_none()
            && row.state != FileState::RestorePending;
        let algo: Option<ChecksumAlgo> = rec.checksum_algo.parse().ok();
        let (Some(algo), true) = (algo, usual) else {
            return self.whole(claim, file, rec, bytes).await;
        };
        let in_flight = crate::tier::metrics::RECALLS_IN_FLIGHT.track();
        let t0 = Instant::now();
        let fetched = tokio::select! {
            r = self.fetch_small(&file, &rec, algo) => r,
            _ = claim.cancel.notified() => {
                // The recall of one file hears the cancel at once and records it.
                claim.cancel.notify_one();
                false
            }
        };
        if !fetched {
            drop(in_flight);
            return self.whole(claim, file, rec, bytes).await;
        }
        Step::Fetched(Box::new(Fetched {
            claim,
            file,
            rec,
            row,
            t0,
            dev: st.dev,
            _in_flight: in_flight,
        }))
    }

    /// The stub's bytes into `file`, checked against its record: false for anything that
    /// did not go as usual (the recall of one file then takes over).
    async fn fetch_small(&self, file: &File, rec: &StubRecord, algo: ChecksumAlgo) -> bool {
        let Ok(store) = self.store() else {
            return false;
        };
        match backing::stat_fd(file.as_fd()) {
            Ok(st) if st.size == 0 => {}
            Ok(_) => {
                if backing::ftruncate(file.as_fd(), 0).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
        self.failpoint("recall-after-truncate");
        match self
            .fetch_from(&store, rec.version_id.as_deref(), None, file, rec, algo)
            .await
        {
            Ok(got) => got.checksum.algo == algo && got.checksum.base64() == rec.checksum,
            Err(_) => false,
        }
    }

    /// The recall of one file, on a blocking thread, under `claim`.
    async fn whole(
        self: &Arc<Self>,
        claim: Claimed,
        file: File,
        rec: StubRecord,
        bytes: u64,
    ) -> Step {
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || me.recall_whole(claim, file, rec)).await;
        Step::Done(match r {
            Ok(Ok(())) => Ok(Recalled::Now { bytes }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StepError::new(libc::EIO, format!("the recall failed: {e}"))),
        })
    }

    /// Finishes a synced batch (a blocking thread): each file's times, its switch under
    /// its gate, then the events of all in one catalog transaction, then the claims
    /// released. A file whose step fails is recalled again by itself.
    fn finish_batch(&self, batch: Synced) -> Vec<BulkResult> {
        let Synced {
            files: mut batch,
            synced,
        } = batch;
        let mut out = Vec::with_capacity(batch.len());
        // RECALL_STARTED of the batch before any switch: a crash after a file's switch and
        // before the batch's RECALLED leaves its row `recalling`, which the next start
        // puts in line with the file (`resume`), as for the recall of a large file.
        self.record_each(&mut batch, Action::RecallStart);
        let mut switched: Vec<(usize, Fetched)> = Vec::with_capacity(batch.len());
        for (i, mut f) in batch {
            let synced = synced.get(&f.dev).copied().unwrap_or(false);
            match self.switch(&mut f, synced) {
                Ok(()) => switched.push((i, f)),
                Err(e) => {
                    tracing::warn!(path = %f.row.path, "bulk recall: {e}; recalling the file by itself");
                    let bytes = f.rec.size;
                    let Fetched {
                        claim, file, rec, ..
                    } = f;
                    out.push((
                        i,
                        self.recall_whole(claim, file, rec)
                            .map(|()| Recalled::Now { bytes }),
                    ));
                }
            }
        }
        // Lazy, as one recall's RECALLED: the files' records are the truth and the data is
        // on disk; the caller syncs the catalog before it reports.
        self.failpoint("bulk-recall-before-records");
        self.record_each(&mut switched, Action::RecallDone);
        for (i, f) in switched {
            tracing::info!(path = %f.row.path, bytes = f.rec.size, ms = f.t0.elapsed().as_millis() as u64, "recalled");
            crate::tier::metrics::recall_done(Ok(()), f.rec.size, f.t0.elapsed());
            self.release_claim(f.claim, Ok(()));
            out.push((i, Ok(Recalled::Now { bytes: f.rec.size })));
        }
        out
    }

    /// `action` of each file of `batch`, in one catalog transaction (lazy).
    fn record_each(&self, batch: &mut [(usize, Fetched)], action: Action) {
        let changes: Vec<_> = batch
            .iter_mut()
            .map(|(_, f)| {
                let c = Change::of(action, start_detail(&f.rec)).durability(Durability::Lazy);
                (&mut f.row, c)
            })
            .collect();
        if let Err(e) = self.record_batch(changes) {
            tracing::error!("catalog: cannot record {action:?} of a bulk recall: {e}");
        }
    }

    /// One fetched file: data on disk (`synced`: by a syncfs of its filesystem after
    /// the file's writes), times back, then the switch from stub to premigrated (as the
    /// recall of one file: docs/invariants.md).
    fn switch(&self, f: &mut Fetched, synced: bool) -> Result<(), StepError> {
        let fd = f.file.as_fd();
        if synced {
            backing::writeback_error(fd)?;
        } else {
            backing::fsync(fd, true)?;
        }
        self.failpoint("recall-after-data");
        backing::futimens(fd, SetTime::Now, split_ns(f.rec.mtime_ns))?;
        {
            let _held = self.gate.lock(f.claim.node);
            marks::set_record(fd, marks::COPY, &f.rec)?;
            self.failpoint("recall-after-premig-xattr");
            marks::unstub(fd, &f.rec.file_id)?;
        }
        self.reset_mark(f.claim.node);
        let st = backing::stat_fd(fd)?;
        f.row.ctime_ns = ns_of(st.ctime);
        f.row.mtime_ns = ns_of(st.mtime);
        f.row.size = st.size;
        f.row.ino = st.ino;
        Ok(())
    }
}
