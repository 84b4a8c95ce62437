//! `coldtier replicate MOUNTPOINT --to NAME`: backfills a `[[replica]]` target with every
//! object the files name that it has no verified copy of (docs/operations.md,
//! "Replicas").
//!
//! Two passes. First every missing object is HEADed on the primary: an archived one gets
//! its RestoreObject now (all of them ahead of any copying, at most
//! [`MAX_RESTORES_PER_RUN`] a run) and waits for a later run. Then each readable one is
//! read from the primary into an unnamed temporary file on the source file system (checked
//! against the checksum the catalog holds: a corrupt primary is never replicated), put to
//! the target under the same key with the primary's metadata (so that `catalog rebuild`
//! can use the target), proven there (the target's checksum word when the target refuses
//! a body that does not match its checksum, else a read-back), and recorded: a `replicas`
//! row and a REPLICATED event in one durable transaction. What has a row is never copied
//! again: a run killed half-way resumes where it stopped, and a second run is a no-op.

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::context::{StepError, Tiering};
use crate::base::cancel::Cancel;
use crate::base::progress::{Progress, Totals};
use crate::catalog::{JobCounts, ObjectRef};
use crate::store::{
    ChecksumAlgo, GetRequest, ObjectStore, PutRequest, RestoreStatus, StoreErrorKind,
};

/// At most this many RestoreObject requests a run issues; the rest wait for the next run.
pub const MAX_RESTORES_PER_RUN: usize = 1000;

/// What a replication run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicateSummary {
    pub job_id: i64,
    pub target: String,
    pub dry_run: bool,
    /// Objects the target lacked when the run started.
    pub missing: u64,
    pub missing_bytes: u64,
    pub copied: u64,
    pub bytes_copied: u64,
    /// Archived on the primary: restore requested (or under way); a later run copies them.
    pub restoring: u64,
    /// Found on the target already (a replication cut short after its PUT, or the bucket's
    /// own replication), read back there, equal, and recorded: not copied again.
    pub found: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    /// A dry run: the paths of the files whose objects the target lacks.
    pub paths: Vec<String>,
    pub seconds: f64,
    pub cancelled: bool,
}

/// What is put to a replica: the bytes of `file` (its `extents` only, for a sparse file's
/// object), `size` bytes whose checksum must be `checksum`.
struct Source<'a> {
    body: &'a crate::store::PutBody,
    size: u64,
    extents: Option<crate::store::Extents>,
    algo: ChecksumAlgo,
    checksum: String,
    metadata: std::collections::BTreeMap<String, String>,
}

/// Runs `work` on each item, as many at once as `sem` has permits, until `cancel`; `done`
/// hears each result as it comes (the items not started when cancelled are left).
async fn bounded<T, R, Fut>(
    items: Vec<T>,
    sem: &Arc<tokio::sync::Semaphore>,
    cancel: &Cancel,
    work: impl Fn(T) -> Fut,
    mut done: impl FnMut(Result<R, tokio::task::JoinError>),
) where
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for item in items {
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.expect("semaphore open"),
            _ = cancel.cancelled() => break,
        };
        let fut = work(item);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        });
        while let Some(r) = set.try_join_next() {
            done(r);
        }
    }
    while let Some(r) = set.join_next().await {
        done(r);
    }
}

/// What became of one object.
enum Done {
    Copied(u64),
    Restoring,
    /// On the target already, proven there and recorded.
    Found,
}

impl Tiering {
    /// Copies to replica `target` every object it lacks; see the module doc.
    pub async fn replicate(
        self: &Arc<Self>,
        target: &str,
        dry_run: bool,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<ReplicateSummary, StepError> {
        let Some(replica) = self.replica(target) else {
            let known = self.replica_names();
            // EINVAL: bad input (the CLI's exit 2), nothing was done.
            return Err(StepError::new(
                libc::EINVAL,
                if known.is_empty() {
                    format!("no [[replica]] named `{target}`: the config has none")
                } else {
                    format!(
                        "no [[replica]] named `{target}` (the config has: {})",
                        known.join(", ")
                    )
                },
            ));
        };
        let primary = self.store()?;
        let Ok(_job) = self.job_lock.try_lock() else {
            return Err(StepError::new(
                libc::EBUSY,
                "another policy run, gc or replication is in progress",
            ));
        };
        let t0 = std::time::Instant::now();
        let job_id = self
            .catalog
            .start_job("replicate", if dry_run { "dry-run" } else { target })
            .map_err(StepError::from)?;
        let _running = self.running_job(job_id, &format!("replicate {target}"), cancel);
        let todo = self.catalog.objects_missing_on(target)?;
        let mut s = ReplicateSummary {
            job_id,
            target: target.into(),
            dry_run,
            missing: todo.len() as u64,
            missing_bytes: todo.iter().map(|o| o.file_size).sum(),
            ..Default::default()
        };
        progress(Progress {
            message: format!("replicating to {target}"),
            files: 0,
            bytes: 0,
            totals: Some(Totals {
                files: s.missing,
                bytes: s.missing_bytes,
            }),
        });
        if dry_run {
            s.paths = todo.iter().map(|o| o.path.clone()).collect();
        } else {
            self.replicate_all(&primary, &replica, target, todo, &mut s, progress, cancel)
                .await?;
        }
        s.cancelled = cancel.is_cancelled();
        s.seconds = t0.elapsed().as_secs_f64();
        let counts = JobCounts {
            files_scanned: s.missing,
            files_copied: s.copied,
            bytes_copied: s.bytes_copied,
            files_failed: s.failed,
            errors: s.errors.clone(),
            ..Default::default()
        };
        if let Err(e) = self.catalog.finish_job(job_id, &counts) {
            tracing::error!("catalog: cannot finish job {job_id}: {e}");
        }
        tracing::info!(
            job_id,
            target,
            copied = s.copied,
            restoring = s.restoring,
            failed = s.failed,
            "replication finished"
        );
        Ok(s)
    }

    #[allow(clippy::too_many_arguments)]
    async fn replicate_all(
        self: &Arc<Self>,
        primary: &Arc<dyn ObjectStore>,
        replica: &Arc<dyn ObjectStore>,
        target: &str,
        todo: Vec<ObjectRef>,
        s: &mut ReplicateSummary,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<(), StepError> {
        // Whether the target's word on what it stored proves a copy (as at mount for the
        // primary): else every copy is read back from it.
        let validates = self.replica_validates(target, replica).await?;
        // Four objects per part slot, as a recall -r (small objects are latency-bound).
        let slots = (self.settings().uploads.concurrency * 4).clamp(1, 64);
        let sem = Arc::new(tokio::sync::Semaphore::new(slots));
        let (mut done, mut moved) = (0u64, 0u64);
        let mut tally = |r: Result<
            (ObjectRef, Result<Done, StepError>),
            tokio::task::JoinError,
        >,
                         s: &mut ReplicateSummary,
                         progress: &mut (dyn FnMut(Progress) + Send)| {
            let (obj, r) = match r {
                Ok(v) => v,
                Err(e) => {
                    s.failed += 1;
                    s.errors.push(format!("replication task: {e}"));
                    return;
                }
            };
            match r {
                Ok(Done::Copied(n)) => {
                    s.copied += 1;
                    s.bytes_copied += n;
                    done += 1;
                    moved += obj.file_size;
                }
                Ok(Done::Restoring) => s.restoring += 1,
                Ok(Done::Found) => {
                    s.found += 1;
                    done += 1;
                    moved += obj.file_size;
                }
                Err(e) => {
                    tracing::warn!(path = %obj.path, key = %obj.object_key, target, "replication failed: {e}");
                    s.failed += 1;
                    s.errors.push(format!("{}: {}", obj.path, e.message));
                }
            }
            progress(Progress::new(
                format!("replicating to {target}"),
                done,
                moved,
            ));
        };
        // 0. What the target holds already (one listing): an object of the same key and
        //    size is read back there and, equal, recorded without a copy: the primary is
        //    not asked for it (it may have lost it since). A target that cannot be listed
        //    is copied to as if empty.
        let listed: HashMap<String, u64> =
            match crate::tier::rebuild::list_objects(replica.as_ref()).await {
                Ok(l) => l.into_iter().map(|o| (o.key, o.size)).collect(),
                Err(e) => {
                    tracing::warn!(
                        target,
                        "replicate: cannot list the target ({e}): every object is copied"
                    );
                    HashMap::new()
                }
            };
        let (there, mut todo): (Vec<ObjectRef>, Vec<ObjectRef>) = todo
            .into_iter()
            .partition(|o| listed.get(&o.object_key) == Some(&o.file_size));
        // Those whose bytes there differ are copied as the others are (steps 1 and 2).
        let mut differ = Vec::new();
        bounded(
            there,
            &sem,
            cancel,
            |obj| {
                let (me, replica, target) = (self.clone(), replica.clone(), target.to_string());
                async move {
                    let r = me.adopt_copy(&replica, &target, &obj).await;
                    (obj, r)
                }
            },
            |r| match r {
                Ok((obj, Ok(false))) => differ.push(obj),
                r => tally(r.map(|(o, r)| (o, r.map(|_| Done::Found))), s, progress),
            },
        )
        .await;
        todo.extend(differ);
        // 1. Every object HEADed on the store, `slots` at a time; archived ones get their
        //    RestoreObject now: all of them go out before any copy starts.
        let restores = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut ready: Vec<(ObjectRef, crate::store::ObjectMeta)> = Vec::new();
        bounded(
            todo,
            &sem,
            cancel,
            |obj| {
                let (me, primary, restores) = (self.clone(), primary.clone(), restores.clone());
                async move {
                    let r = me.head_for_copy(&primary, &obj, &restores).await;
                    (obj, r)
                }
            },
            |r| match r {
                Ok((obj, Ok(Some(meta)))) => ready.push((obj, meta)),
                r => tally(r.map(|(o, r)| (o, r.map(|_| Done::Restoring))), s, progress),
            },
        )
        .await;
        // 2. The readable ones copied, `slots` at a time.
        bounded(
            ready,
            &sem,
            cancel,
            |(obj, meta)| {
                let me = self.clone();
                let (primary, replica, target) =
                    (primary.clone(), replica.clone(), target.to_string());
                async move {
                    let r = me
                        .copy_object(&primary, &replica, &target, &obj, meta, validates)
                        .await;
                    (obj, r)
                }
            },
            |r| tally(r, s, progress),
        )
        .await;
        Ok(())
    }

    /// `obj` found on replica `target` (a listing names its key, of its size): read back
    /// there whole and recorded if it holds the primary's bytes (true); false if it holds
    /// others (the caller copies it as any other).
    async fn adopt_copy(
        &self,
        replica: &Arc<dyn ObjectStore>,
        target: &str,
        obj: &ObjectRef,
    ) -> Result<bool, StepError> {
        let algo: ChecksumAlgo = obj
            .checksum_algo
            .parse()
            .map_err(|e: String| StepError::new(libc::EIO, e))?;
        let size = obj.file_size;
        let back = self
            .read_back(replica, target, obj, None, size, algo, &obj.checksum)
            .await;
        if let Err(e) = back {
            tracing::info!(key = %obj.object_key, target, "replicate: the object found on the target is not the primary's ({}): copied again", e.message);
            return Ok(false);
        }
        self.record_replica(target, obj, size, None, "readback", "found on the target")
            .await?;
        Ok(true)
    }

    /// The store's HEAD of `obj`: its metadata when it is ready to copy; None when it is
    /// archived (its restore asked for now, unless [`MAX_RESTORES_PER_RUN`] were this
    /// run) or being restored.
    async fn head_for_copy(
        &self,
        primary: &Arc<dyn ObjectStore>,
        obj: &ObjectRef,
        restores: &std::sync::atomic::AtomicUsize,
    ) -> Result<Option<crate::store::ObjectMeta>, StepError> {
        let meta = primary
            .head(&obj.object_key, obj.version_id.as_deref())
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("HEAD: {e}")))?;
        if meta.restore.readable() {
            return Ok(Some(meta));
        }
        if meta.restore == RestoreStatus::Archived
            && restores.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < MAX_RESTORES_PER_RUN
        {
            self.request_restore(primary, obj).await?;
        }
        Ok(None)
    }

    /// Asks the primary to restore an archived object (the recall's tier and days).
    async fn request_restore(
        &self,
        primary: &Arc<dyn ObjectStore>,
        obj: &ObjectRef,
    ) -> Result<(), StepError> {
        let r = &self.settings().recall;
        let outcome = primary
            .restore(
                &obj.object_key,
                obj.version_id.as_deref(),
                r.restore_days,
                r.restore_tier,
            )
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("RestoreObject: {e}")))?;
        let detail = json!({
            "object_key": obj.object_key,
            "tier": r.restore_tier.as_str(),
            "days": r.restore_days,
            "outcome": format!("{outcome:?}"),
            "for": "replicate",
        });
        // A durable write (an fsync): on a blocking thread, not a runtime worker.
        let (catalog, obj) = (self.catalog.clone(), obj.clone());
        let recorded = tokio::task::spawn_blocking(move || {
            catalog.append_event(
                Some(&obj.file_id),
                Some(&obj.path),
                crate::catalog::EventKind::RestoreRequested,
                detail,
            )
        })
        .await;
        if let Ok(Err(e)) = recorded {
            tracing::error!("catalog: cannot record RESTORE_REQUESTED: {e}");
        }
        Ok(())
    }

    /// One object: copied by the target's server when it shares the primary's endpoint
    /// ([`Tiering::copy_on_server`]), else primary -> temporary file (checked) -> target
    /// (proven); then recorded.
    async fn copy_object(
        &self,
        primary: &Arc<dyn ObjectStore>,
        replica: &Arc<dyn ObjectStore>,
        target: &str,
        obj: &ObjectRef,
        meta: crate::store::ObjectMeta,
        validates: bool,
    ) -> Result<Done, StepError> {
        let algo: ChecksumAlgo = obj
            .checksum_algo
            .parse()
            .map_err(|e: String| StepError::new(libc::EIO, e))?;
        if let Some(done) = self
            .copy_on_server(primary, replica, target, obj, meta.size, algo, validates)
            .await?
        {
            return Ok(done);
        }
        let tmp = self.scratch_file(meta.size)?;
        self.failpoint("replicate-before-get");
        let got = primary
            .get(GetRequest::whole(
                &obj.object_key,
                obj.version_id.as_deref(),
                Some(&tmp),
                meta.size,
                algo,
            ))
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("GET from the primary: {e}")))?;
        if got.checksum.base64() != obj.checksum {
            return Err(StepError::new(
                libc::EIO,
                format!(
                    "the primary's object reads back as {}, the catalog says {}:{}: not replicated",
                    got.checksum, obj.checksum_algo, obj.checksum
                ),
            ));
        }
        let body = crate::store::PutBody::File(tmp);
        let tmp = Source {
            body: &body,
            size: meta.size,
            extents: None,
            algo,
            checksum: got.checksum.base64(),
            metadata: meta.metadata.clone(),
        };
        self.copy_pack_index(primary, replica, target, &obj.object_key)
            .await?;
        self.put_to_replica(replica, target, obj, &tmp, validates)
            .await?;
        Ok(Done::Copied(meta.size))
    }

    /// `obj` (`size` bytes) copied into replica `target` by the target's own server from the
    /// primary's bucket (S3 CopyObject: the data never passes through this host), proven
    /// there (`validates` and the checksum the server computed for the copy equal to ours;
    /// else a read-back) and recorded. None: the target cannot (another endpoint or kind,
    /// over 5 GiB, or its server refused a copy from the primary before): the caller
    /// streams it.
    #[allow(clippy::too_many_arguments)]
    async fn copy_on_server(
        &self,
        primary: &Arc<dyn ObjectStore>,
        replica: &Arc<dyn ObjectStore>,
        target: &str,
        obj: &ObjectRef,
        size: u64,
        algo: ChecksumAlgo,
        validates: bool,
    ) -> Result<Option<Done>, StepError> {
        if self.no_server_copy.lock().contains(target) {
            return Ok(None);
        }
        let Some(src) = primary.copy_source() else {
            return Ok(None);
        };
        let version = obj.version_id.as_deref();
        let Some(copy) = replica.copy_from(&src, &obj.object_key, version, size, algo) else {
            return Ok(None);
        };
        self.copy_pack_index(primary, replica, target, &obj.object_key)
            .await?;
        let copy = match copy.await {
            Ok(c) => c,
            Err(e) if e.kind == StoreErrorKind::AccessDenied || e.kind == StoreErrorKind::Other => {
                // Credentials of the target that cannot read the primary's bucket, a
                // server without CopyObject: stream, to this target, from now on.
                tracing::warn!(
                    target,
                    "server-side copy refused ({e}): copies to this target go through this host"
                );
                self.no_server_copy.lock().insert(target.to_string());
                return Ok(None);
            }
            Err(e) => {
                return Err(StepError::new(
                    libc::EIO,
                    format!("CopyObject to {target}: {e}"),
                ))
            }
        };
        self.failpoint("replicate-after-put");
        let ours = crate::store::ReportedChecksum {
            algo,
            value: obj.checksum.clone(),
            parts: None,
        };
        let proven = validates && copy.reported.as_ref().is_some_and(|r| r.matches(&ours));
        if !proven {
            let v = copy.version_id.as_deref();
            self.read_back(replica, target, obj, v, size, algo, &obj.checksum)
                .await?;
        }
        let proof = if proven { "checksum" } else { "readback" };
        self.record_replica(
            target,
            obj,
            size,
            copy.version_id,
            proof,
            "server-side copy",
        )
        .await?;
        Ok(Some(Done::Copied(size)))
    }

    /// Reads back what replica `target` holds under `obj`'s key (version `version_id`) and
    /// checks it against `want` (base64, of `algo`).
    #[allow(clippy::too_many_arguments)]
    async fn read_back(
        &self,
        replica: &Arc<dyn ObjectStore>,
        target: &str,
        obj: &ObjectRef,
        version_id: Option<&str>,
        size: u64,
        algo: ChecksumAlgo,
        want: &str,
    ) -> Result<(), StepError> {
        let back = replica
            .get(GetRequest::whole(
                &obj.object_key,
                version_id,
                None,
                size,
                algo,
            ))
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("read-back from {target}: {e}")))?;
        if back.checksum.algo != algo || back.checksum.base64() != want {
            return Err(StepError::new(
                libc::EIO,
                format!(
                    "{target} holds other bytes than the primary's (read back as {})",
                    back.checksum
                ),
            ));
        }
        Ok(())
    }

    /// Puts `src` to replica `target` under `obj`'s key, proves it there (`validates`: the
    /// target's word on what it stored is proof; else a read-back) and records it (a
    /// `replicas` row and a REPLICATED event, durable).
    async fn put_to_replica(
        &self,
        replica: &Arc<dyn ObjectStore>,
        target: &str,
        obj: &ObjectRef,
        src: &Source<'_>,
        validates: bool,
    ) -> Result<(), StepError> {
        let put = replica
            .put(PutRequest {
                key: obj.object_key.clone(),
                body: src
                    .body
                    .try_clone()
                    .map_err(|e| StepError::new(libc::EIO, format!("dup of the source: {e}")))?,
                size: src.size,
                storage_class: None,
                metadata: src.metadata.clone(),
                tags: Default::default(),
                checksum: Some(src.algo),
                extents: src.extents.clone(),
            })
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("PUT to {target}: {e}")))?;
        self.failpoint("replicate-after-put");
        if put.checksum.base64() != src.checksum {
            return Err(StepError::new(
                libc::EIO,
                format!(
                    "the bytes sent to {target} are not the copy's ({} against {}): not replicated",
                    put.checksum, src.checksum
                ),
            ));
        }
        let proven = validates && put.reported.as_ref().is_some_and(|r| put.proven_by(r));
        if !proven {
            self.read_back(
                replica,
                target,
                obj,
                put.version_id.as_deref(),
                src.size,
                src.algo,
                &src.checksum,
            )
            .await?;
        }
        let proof = if proven { "checksum" } else { "readback" };
        self.record_replica(target, obj, src.size, put.version_id, proof, "streamed")
            .await
    }

    /// Records `obj`'s copy on replica `target` (version `replica_version`): a `replicas`
    /// row and a REPLICATED event, durable.
    async fn record_replica(
        &self,
        target: &str,
        obj: &ObjectRef,
        size: u64,
        replica_version: Option<String>,
        proof: &str,
        how: &str,
    ) -> Result<(), StepError> {
        let detail = json!({
            "target": target,
            "object_key": obj.object_key,
            "version_id": obj.version_id,
            "replica_version": replica_version,
            "bytes": size,
            "checksum": format!("{}:{}", obj.checksum_algo, obj.checksum),
            "proof": proof,
            "how": how,
        });
        let catalog = self.catalog.clone();
        let (target, obj2, rv) = (target.to_string(), obj.clone(), replica_version);
        tokio::task::spawn_blocking(move || {
            catalog.record_replicated(&target, &obj2, size, rv.as_deref(), detail)
        })
        .await
        .map_err(|e| StepError::new(libc::EIO, format!("catalog task: {e}")))??;
        Ok(())
    }

    /// Whether replica `target`'s word on what it stored proves a copy: its store check,
    /// once per daemon (a probe object put, read and deleted).
    async fn replica_validates(
        &self,
        target: &str,
        replica: &Arc<dyn ObjectStore>,
    ) -> Result<bool, StepError> {
        if let Some(v) = self.replica_checks.lock().get(target) {
            return Ok(*v);
        }
        let nonce = format!(
            "replica-{:x}-{:x}",
            crate::base::time::system_now_ns(),
            std::process::id()
        );
        let v = crate::store::check(&**replica, &nonce)
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("replica {target}: {e}")))?
            .validates_checksums;
        self.replica_checks.lock().insert(target.to_string(), v);
        Ok(v)
    }

    /// `policy.copies`: before the data of the file open as `file` (its copy record `rec`)
    /// may be freed, the first `copies - 1` replica targets must hold a verified copy; the
    /// ones that do not get it now, from the local file (which the copy record proves
    /// current: the bytes sent must have the copy's checksum). An error leaves the file as
    /// it is (premigrated).
    pub(crate) async fn ensure_copies(
        &self,
        file: &std::fs::File,
        rec: &crate::tier::stub::StubRecord,
        path: &str,
    ) -> Result<(), StepError> {
        let want = self.settings().policy.copies.saturating_sub(1) as usize;
        if want == 0 {
            return Ok(());
        }
        let names = self.replica_names();
        let have = self
            .catalog
            .replica_targets(&rec.object_key, rec.version_id.as_deref())?;
        let obj = ObjectRef {
            file_id: rec.file_id.clone(),
            path: path.to_string(),
            object_key: rec.object_key.clone(),
            version_id: rec.version_id.clone(),
            file_size: rec.size,
            checksum_algo: rec.checksum_algo.clone(),
            checksum: rec.checksum.clone(),
        };
        let missing: Vec<&String> = names
            .iter()
            .take(want)
            .filter(|target| !have.iter().any(|(t, _)| t == *target))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if rec.pack.is_some() {
            // A member's local bytes are not the pack: the pack run copies the whole pack
            // to the targets; one that lacks it gets it from `coldtier replicate`.
            return Err(StepError::new(
                libc::EAGAIN,
                format!(
                    "policy.copies = {}: the pack {} has no copy on replica {} yet (run coldtier replicate): the file stays premigrated",
                    want + 1,
                    rec.object_key,
                    missing[0]
                ),
            ));
        }
        let algo: ChecksumAlgo = rec
            .checksum_algo
            .parse()
            .map_err(|e: String| StepError::new(libc::EIO, e))?;
        // The object's genealogy, as the store holds it (a rebuild from a target needs
        // it): one HEAD, whatever the number of targets.
        let metadata = self
            .store()?
            .head(&rec.object_key, rec.version_id.as_deref())
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("HEAD on the store: {e}")))?
            .metadata;
        let body = crate::store::PutBody::File(
            file.try_clone()
                .map_err(|e| StepError::new(libc::EIO, format!("dup of the file: {e}")))?,
        );
        let src = Source {
            body: &body,
            size: rec.object_size(),
            extents: rec.extents.clone(),
            algo,
            checksum: rec.checksum.clone(),
            metadata,
        };
        for target in missing {
            self.copy_to(&obj, &src, target).await.map_err(|e| {
                StepError::new(
                    e.errno,
                    format!(
                        "policy.copies = {}: the copy on replica {target} failed, the file stays premigrated: {}",
                        want + 1,
                        e.message
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// policy.copies for a pack just written: the pack (`body`, its local copy, in memory or
    /// in a temporary file) to each of the first `copies - 1` targets that lacks it.
    pub(super) async fn copy_pack_to_replicas(
        &self,
        body: &crate::store::PutBody,
        obj: &ObjectRef,
        algo: ChecksumAlgo,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<(), StepError> {
        let want = self.settings().policy.copies.saturating_sub(1) as usize;
        if want == 0 {
            return Ok(());
        }
        let src = Source {
            body,
            size: obj.file_size,
            extents: None,
            algo,
            checksum: obj.checksum.clone(),
            metadata,
        };
        let primary = self.store()?;
        for target in self.replica_names().iter().take(want) {
            let replica = self.replica(target).ok_or_else(|| {
                StepError::new(libc::EIO, format!("replica {target} is not open"))
            })?;
            self.copy_pack_index(&primary, &replica, target, &obj.object_key)
                .await?;
            self.copy_to(obj, &src, target).await?;
        }
        Ok(())
    }

    /// A pack's index goes to a replica before the pack (so that a catalog rebuilt from
    /// the replica finds it): read from the primary, checked, written, read back.
    /// Nothing for other objects.
    async fn copy_pack_index(
        &self,
        primary: &Arc<dyn ObjectStore>,
        replica: &Arc<dyn ObjectStore>,
        target: &str,
        pack_key: &str,
    ) -> Result<(), StepError> {
        let Some((prefix, id)) = crate::tier::stub::parse_pack_key(pack_key) else {
            return Ok(());
        };
        let key = crate::tier::stub::pack_index_key(prefix, id);
        let err = |e: String| StepError::new(libc::EIO, format!("pack index {key}: {e}"));
        let meta = primary
            .head(&key, None)
            .await
            .map_err(|e| err(e.to_string()))?;
        if meta.size > crate::tier::pack::MAX_INDEX_BYTES {
            return Err(err(format!("{} bytes", meta.size)));
        }
        let algo = ChecksumAlgo::Crc32c;
        let tmp = self.scratch_file(meta.size)?;
        let got = primary
            .get(GetRequest::whole(&key, None, Some(&tmp), meta.size, algo))
            .await
            .map_err(|e| err(e.to_string()))?;
        let put = replica
            .put(PutRequest {
                key: key.clone(),
                body: tmp.into(),
                size: meta.size,
                storage_class: Some(crate::store::StorageClass::Standard),
                metadata: meta.metadata.clone(),
                tags: Default::default(),
                checksum: Some(algo),
                extents: None,
            })
            .await
            .map_err(|e| err(format!("PUT to {target}: {e}")))?;
        if put.checksum != got.checksum {
            return Err(err(format!(
                "the bytes sent to {target} are not the primary's"
            )));
        }
        let back = replica
            .get(GetRequest::whole(
                &key,
                put.version_id.as_deref(),
                None,
                meta.size,
                algo,
            ))
            .await
            .map_err(|e| err(format!("read-back from {target}: {e}")))?;
        if back.checksum != got.checksum {
            return Err(err(format!("{target} holds other bytes than were sent")));
        }
        Ok(())
    }

    /// One copy of `policy.copies`: `src` (the local file's bytes) to replica `target`.
    async fn copy_to(
        &self,
        obj: &ObjectRef,
        src: &Source<'_>,
        target: &str,
    ) -> Result<(), StepError> {
        let replica = self
            .replica(target)
            .ok_or_else(|| StepError::new(libc::EIO, format!("replica {target} is not open")))?;
        let validates = self.replica_validates(target, &replica).await?;
        self.put_to_replica(&replica, target, obj, src, validates)
            .await
    }

    /// Where `size` bytes pass through the daemon (an object on its way between two
    /// stores, a pack's span): a memory file when they are within `store.part_size`, so
    /// that nothing is written to the source (which may be full), else an unnamed file on
    /// the source ([`Tiering::unnamed_file`]).
    pub(super) fn scratch_file(&self, size: u64) -> Result<std::fs::File, StepError> {
        if size <= self.settings().uploads.part_size {
            return super::readers::anon_file(c"coldtier-scratch")
                .map_err(|e| StepError::new(libc::EIO, format!("a memory file: {e}")));
        }
        self.unnamed_file()
    }

    /// An unnamed file on the source file system (O_TMPFILE, mode 0600, root's), gone
    /// when closed.
    pub(super) fn unnamed_file(&self) -> Result<std::fs::File, StepError> {
        // SAFETY: a plain syscall on our root fd and a static, NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                std::os::fd::AsRawFd::as_raw_fd(&self.root().as_fd()),
                c".".as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(StepError::new(
                libc::EIO,
                format!(
                    "a temporary file on the source: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        // SAFETY: a fresh fd we own.
        Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}
