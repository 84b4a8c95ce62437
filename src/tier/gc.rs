//! Garbage collection: the objects of deleted and superseded content whose retention has
//! passed, and of copies that failed, are deleted from the store (each an OBJECT_DELETED
//! event); an object a tracked file still names never is, nor one that the records of any
//! file on disk name (a file can carry records the catalog does not know: see
//! [`Tiering::keys_on_disk`]).

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::Path;

use serde_json::{json, Value};

use crate::base::cancel::Cancel;
use crate::catalog::{system_now_ns, EventKind, JobCounts};

use super::context::{StepError, Tiering};

/// The object key and version an event's detail names: the event's own `object_key`, or
/// that of its `detail` or `row` (the one reading gc and verify share).
pub fn event_object(d: &Value) -> Option<(String, Option<String>)> {
    for v in [d, &d["detail"], &d["row"]] {
        if let Some(k) = v["object_key"].as_str() {
            return Some((k.to_string(), v["version_id"].as_str().map(str::to_string)));
        }
    }
    None
}

/// After `deleted` (the deletion of `key` from `store`): a pack's index goes with it (it
/// is no object of its own in the catalog).
async fn purge_index_after(
    deleted: Result<(), crate::store::StoreError>,
    store: &dyn crate::store::ObjectStore,
    key: &str,
) -> Result<(), crate::store::StoreError> {
    match (deleted, crate::tier::stub::parse_pack_key(key)) {
        (Ok(()), Some((prefix, id))) => store
            .purge(&crate::tier::stub::pack_index_key(prefix, id))
            .await
            .map_err(|e| e.context("the pack's index")),
        (r, _) => r,
    }
}

/// Deletes `key` (and a pack's index) from `store` if it is there, every version of it:
/// how many of the two were there.
async fn delete_unrecorded(
    store: &dyn crate::store::ObjectStore,
    key: &str,
) -> Result<usize, crate::store::StoreError> {
    let mut keys = vec![key.to_string()];
    if let Some((prefix, id)) = crate::tier::stub::parse_pack_key(key) {
        keys.push(crate::tier::stub::pack_index_key(prefix, id));
    }
    let mut there = 0;
    for k in &keys {
        match store.head(k, None).await {
            Err(e) if e.is(crate::store::StoreErrorKind::NotFound) => continue,
            Err(e) => return Err(e),
            Ok(_) => there += 1,
        }
        store.purge(k).await?;
    }
    Ok(there)
}

impl Tiering {
    /// The object keys that the stub and copy records of the files on disk name, each with
    /// the path of one file that names it. gc deletes none of them, whatever the catalog
    /// says: a backing file copied with its xattrs outside the mount (`cp -a` or
    /// `rsync -X` as root, a restore from a backup) carries the original's records and
    /// names its object, yet the catalog knows one file by that id; deleting the original
    /// must not take the copy's data. An error if a directory of the tree cannot be read
    /// (what it holds is not known: gc then deletes nothing).
    fn keys_on_disk(&self) -> Result<HashMap<String, String>, StepError> {
        let mut keys = HashMap::new();
        let mut unread = None;
        let mut skipped = |dir: &Path, e: crate::fs::backing::Errno| {
            unread.get_or_insert_with(|| format!("{}: {e:?}", dir.display()));
        };
        super::migrate::walk_tree(
            self.root(),
            self.root_dev,
            Path::new(""),
            &mut skipped,
            &mut |rel, _, dir, name| {
                let Ok(fd) = crate::fs::backing::open_path_at(dir, name) else {
                    return;
                };
                if !super::marks::may_have_marks(fd.as_fd()) {
                    return;
                }
                for which in [super::marks::STUB, super::marks::COPY] {
                    if let Ok(Some(rec)) = super::marks::record(fd.as_fd(), which) {
                        keys.entry(rec.object_key)
                            .or_insert_with(|| rel.to_string_lossy().into_owned());
                    }
                }
            },
        )?;
        match unread {
            None => Ok(keys),
            Some(dir) => Err(StepError::new(
                libc::EIO,
                format!(
                    "cannot read directory {dir}: the objects its files may name are not \
                     known, so no object is deleted"
                ),
            )),
        }
    }

    /// `coldtier gc`: deletes the objects of deleted and superseded content whose
    /// retention has passed, and of copies that failed verification. Each deletion is an
    /// OBJECT_DELETED event. Never deletes an object a tracked file still names.
    pub async fn gc(&self, dry_run: bool, cancel: &Cancel) -> Result<serde_json::Value, StepError> {
        let Ok(_job) = self.job_lock.try_lock() else {
            return Err(StepError::new(
                libc::EBUSY,
                "a policy run or gc is in progress",
            ));
        };
        let store = self.store()?;
        if !dry_run {
            self.not_paused()?;
        }
        let job_id = self
            .catalog
            .start_job("gc", if dry_run { "dry-run" } else { "manual" })?;
        let _running = self.running_job(job_id, "gc", cancel);
        // Packs mostly dead are rewritten first: the old ones, superseded by it, are then
        // deleted with the rest once past the retention.
        let repacked = self.repack_packs(dry_run).await?;
        let mut errors: Vec<String> = repacked
            .iter()
            .filter_map(|r| {
                r["error"]
                    .as_str()
                    .map(|e| format!("repack of {}: {e}", r["object_key"].as_str().unwrap_or("?")))
            })
            .collect();
        let mut events = self.catalog.events_of_kinds(&[
            EventKind::Superseded,
            EventKind::Deleted,
            EventKind::Failed,
            EventKind::ObjectDeleted,
        ])?;
        if !dry_run {
            let named: HashSet<String> = events
                .iter()
                .filter_map(|e| event_object(&e.detail))
                .map(|o| o.0)
                .collect();
            let ended = self.supersede_cut_repacks(&named)?;
            events.extend(ended);
        }
        let in_use = self.catalog.object_keys_in_use()?;
        let gone: HashSet<(String, Option<String>)> = events
            .iter()
            .filter(|e| e.kind == EventKind::ObjectDeleted)
            .filter_map(|e| event_object(&e.detail))
            .collect();
        let now = system_now_ns().saturating_add(self.gc_skew.as_nanos() as i64);
        let retention = self.settings().catalog.retention.as_nanos() as i64;
        let mut deleted = Vec::new();
        let mut kept = 0u64;
        let mut kept_on_disk = Vec::new();
        // Read once, when the first object is found past its retention.
        let mut on_disk: Option<HashMap<String, String>> = None;
        let mut seen = HashSet::new();
        for e in events.iter().filter(|e| e.kind != EventKind::ObjectDeleted) {
            if cancel.is_cancelled() {
                errors.push("cancelled: the objects left are deleted by the next gc".into());
                break;
            }
            let Some(obj) = event_object(&e.detail) else {
                continue;
            };
            if gone.contains(&obj) || in_use.contains(&obj.0) || !seen.insert(obj.clone()) {
                continue;
            }
            if now.saturating_sub(e.time_ns) < retention {
                kept += 1;
                continue;
            }
            let full = self.full_key(&obj.0);
            if on_disk.is_none() {
                match self.keys_on_disk() {
                    Ok(k) => on_disk = Some(k),
                    Err(err) => {
                        errors.push(err.message);
                        break;
                    }
                }
            }
            if let Some(rel) = on_disk.as_ref().and_then(|k| k.get(&obj.0)) {
                tracing::warn!(
                    object = %full,
                    path = %rel,
                    "gc: kept: a file on disk names it, though the catalog does not (its backing \
                     file copied with its xattrs outside the mount?)"
                );
                kept_on_disk.push(json!({"object_key": full, "path": rel}));
                continue;
            }
            // Its copies on the replica targets go first: should one fail, the primary's
            // stays too and the next gc tries both again (a primary gone first would leave
            // the copies behind for good).
            let copies = self.catalog.replica_targets(&obj.0, obj.1.as_deref())?;
            if dry_run {
                for (target, _) in &copies {
                    deleted.push(json!({"object_key": full, "version_id": obj.1, "reason": e.kind, "target": target}));
                }
                deleted.push(json!({"object_key": full, "version_id": obj.1, "reason": e.kind}));
                continue;
            }
            let mut copies_left = false;
            for (target, replica_version) in &copies {
                let Some(replica) = self.replica(target) else {
                    copies_left = true;
                    errors.push(format!(
                        "DELETE {full} on replica {target}: the target is not configured any more"
                    ));
                    continue;
                };
                let r = match replica_version.as_deref() {
                    Some(v) => replica.delete(&obj.0, Some(v)).await,
                    None => replica.purge(&obj.0).await,
                };
                let r = purge_index_after(r, replica.as_ref(), &obj.0).await;
                match r {
                    Ok(()) => {
                        let detail = json!({
                            "replica_of": obj.0,
                            "version_id": obj.1,
                            "target": target,
                            "replica_version": replica_version,
                            "reason": e.kind,
                            "event": e.id,
                        });
                        self.catalog.forget_replica(
                            target,
                            &obj.0,
                            obj.1.as_deref(),
                            (e.file_id.as_deref(), e.path.as_deref()),
                            detail,
                        )?;
                        deleted.push(json!({"object_key": full, "version_id": obj.1, "reason": e.kind, "target": target}));
                    }
                    Err(err) => {
                        copies_left = true;
                        errors.push(format!("DELETE {full} on replica {target}: {err}"));
                    }
                }
            }
            // A target the catalog records no copy on may hold one all the same: a copy
            // put by a replication (or a policy run's copy, `policy.copies`) killed before
            // its REPLICATED. Asked for by name, and deleted.
            for target in self.replica_names() {
                if copies.iter().any(|(t, _)| *t == target) {
                    continue;
                }
                let Some(replica) = self.replica(&target) else {
                    continue;
                };
                match delete_unrecorded(replica.as_ref(), &obj.0).await {
                    Ok(0) => {}
                    Ok(_) => {
                        tracing::info!(object = %full, %target, "gc: deleted a copy the catalog did not record (a replication cut short)");
                        deleted.push(json!({"object_key": full, "reason": e.kind, "target": target, "unrecorded": true}));
                    }
                    Err(err) => {
                        copies_left = true;
                        errors.push(format!("DELETE {full} on replica {target}: {err}"));
                    }
                }
            }
            if copies_left {
                continue;
            }
            // A known version is deleted; an unknown one (an upload that failed or was cut
            // off) takes every version of the key, and its unfinished multipart upload.
            let deleted_obj = match obj.1.as_deref() {
                Some(v) => store.delete(&obj.0, Some(v)).await,
                None => store.purge(&obj.0).await,
            };
            let deleted_obj = purge_index_after(deleted_obj, store.as_ref(), &obj.0).await;
            match deleted_obj {
                Ok(()) => {
                    let detail = json!({
                        "object_key": obj.0,
                        "version_id": obj.1,
                        "reason": e.kind,
                        "event": e.id,
                    });
                    self.catalog.append_event(
                        e.file_id.as_deref(),
                        e.path.as_deref(),
                        EventKind::ObjectDeleted,
                        detail,
                    )?;
                    deleted
                        .push(json!({"object_key": full, "version_id": obj.1, "reason": e.kind}));
                }
                Err(err) => errors.push(format!("DELETE {full}: {err}")),
            }
        }
        // Probe objects a store check cut off by a crash left behind (never data).
        if !dry_run {
            match store
                .list(&format!("{}/", crate::store::PROBE_PREFIX))
                .await
            {
                Ok(left) => {
                    for o in left {
                        if let Err(e) = store.purge(&o.key).await {
                            errors.push(format!("DELETE {}: {e}", self.full_key(&o.key)));
                        }
                    }
                }
                Err(e) => errors.push(format!("listing probe objects: {e}")),
            }
        }
        let counts = JobCounts {
            files_failed: errors.len() as u64,
            errors: errors.clone(),
            ..Default::default()
        };
        let _ = self.catalog.finish_job(job_id, &counts);
        Ok(json!({
            "job_id": job_id,
            "dry_run": dry_run,
            "deleted": deleted,
            "kept_under_retention": kept,
            "kept_named_on_disk": kept_on_disk,
            "repacked": repacked,
            "errors": errors,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_objects_are_read_like_gc_reads_them() {
        assert_eq!(
            event_object(&json!({"object_key": "data/a/1", "version_id": "v"})),
            Some(("data/a/1".into(), Some("v".into())))
        );
        assert_eq!(
            event_object(&json!({"row": {"object_key": "data/a/2"}, "detail": {}})),
            Some(("data/a/2".into(), None))
        );
        assert_eq!(event_object(&json!({"note": 1})), None);
    }
}
