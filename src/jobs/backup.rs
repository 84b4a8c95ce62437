//! Catalog backups as a job: one backup run (a consistent snapshot, kept in the backup
//! directory and/or uploaded under `<prefix>/catalog/`, old ones pruned, a CATALOG_BACKUP
//! event), and the worker that takes one at each time `catalog.backup_schedule` names.
//! `coldtier catalog backup` and the scheduler both come here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::base::cancel::Cancel;
use crate::base::worker::{BoxFuture, Worker, WorkerState};
use crate::catalog::backup::{file_name, parse_file_name, prune_dir, Keep, Snapshot, STORE_DIR};
use crate::catalog::{Catalog, EventKind};
use crate::store::{ObjectStore, PutRequest, StorageClass};
use crate::tier::context::{StepError, Tiering};

/// Where one backup goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The configured local directory and the store (if any), with retention: the
    /// scheduled backups and `coldtier catalog backup MNT`.
    Managed { dir: PathBuf, keep: Keep },
    /// Only the store (`--to s3`), with retention there.
    Store { keep: Keep },
    /// Only this directory (`--to DIR`); nothing is pruned there.
    Dir(PathBuf),
}

/// Takes one backup of `catalog` named after `name` (the mount's name), stores it where
/// `target` says, prunes old ones, and records a CATALOG_BACKUP event. Blocking: call it
/// from a plain thread (store calls go through `rt`).
pub fn run(
    catalog: &Catalog,
    store: Option<Arc<dyn ObjectStore>>,
    store_prefix: &str,
    rt: &tokio::runtime::Handle,
    name: &str,
    target: &Target,
    why: &str,
) -> Result<serde_json::Value, String> {
    let now = crate::base::time::system_now_ns();
    let fname = file_name(name, now);
    let (dir, keep_local, to_store, keep) = match target {
        Target::Managed { dir, keep } => (dir.clone(), true, true, Some(*keep)),
        Target::Store { keep } => {
            let d = std::env::temp_dir().join(format!("coldtier-backup-{}", std::process::id()));
            (d, false, true, Some(*keep))
        }
        Target::Dir(d) => (d.clone(), true, false, None),
    };
    if to_store && store.is_none() && !matches!(target, Target::Managed { .. }) {
        return Err("no [store] is configured for this mount: cannot back up to s3".into());
    }
    crate::base::private::ensure_private_dir(&dir, "cannot create the backup directory")?;
    let dest = dir.join(&fname);
    let snap = catalog.snapshot_to(&dest).map_err(|e| e.to_string())?;
    let mut object_key = None;
    let mut errors = Vec::new();
    let mut pruned_local = Vec::new();
    let mut pruned_store = Vec::new();
    if let (true, Some(store)) = (to_store, store.as_ref()) {
        let key = format!("{STORE_DIR}/{fname}");
        match upload(store.as_ref(), rt, &key, &snap, name) {
            Ok(()) => {
                object_key = Some(if store_prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{store_prefix}/{key}")
                })
            }
            Err(e) => errors.push(format!("upload of {key}: {e}")),
        }
        if let (Some(keep), true) = (keep, errors.is_empty()) {
            match prune_store(store.as_ref(), rt, name, &keep) {
                Ok(p) => pruned_store = p,
                Err(e) => errors.push(format!("pruning the store's backups: {e}")),
            }
        }
    }
    if !keep_local {
        let _ = std::fs::remove_file(&dest);
        let _ = std::fs::remove_dir(&dir);
    } else if let Some(keep) = keep {
        match prune_dir(&dir, name, &keep) {
            Ok(p) => pruned_local = p,
            Err(e) => errors.push(format!("pruning {}: {e}", dir.display())),
        }
    }
    let detail = json!({
        "why": why,
        "file": fname,
        "local_path": keep_local.then(|| dest.display().to_string()),
        "object_key": object_key,
        "bytes": snap.bytes,
        "sha256": snap.sha256,
        "files": snap.files,
        "events": snap.events,
        "last_event_id": snap.last_event_id,
        "last_event_hash": snap.last_event_hash,
        "pruned_local": pruned_local,
        "pruned_store": pruned_store,
        "errors": errors,
    });
    catalog
        .append_event(None, None, EventKind::CatalogBackup, detail.clone())
        .map_err(|e| format!("the backup was taken but its event was not recorded: {e}"))?;
    Ok(detail)
}

fn upload(
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    key: &str,
    snap: &Snapshot,
    name: &str,
) -> Result<(), String> {
    let file = std::fs::File::open(&snap.path).map_err(|e| e.to_string())?;
    let metadata = BTreeMap::from([
        ("coldtier-kind".to_string(), "catalog-backup".to_string()),
        ("coldtier-mount".to_string(), name.to_string()),
        ("coldtier-sha256".to_string(), snap.sha256.clone()),
        (
            "coldtier-last-event-id".to_string(),
            snap.last_event_id.to_string(),
        ),
        (
            "coldtier-last-event-hash".to_string(),
            snap.last_event_hash.clone(),
        ),
    ]);
    let tags = BTreeMap::from([("coldtier-state".to_string(), "catalog-backup".to_string())]);
    rt.block_on(store.put(PutRequest {
        key: key.to_string(),
        body: file.into(),
        size: snap.bytes,
        // A backup must be readable at once when it is needed: never an archive class.
        storage_class: Some(StorageClass::Standard),
        metadata,
        tags,
        checksum: None,
        extents: None,
    }))
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn prune_store(
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    name: &str,
    keep: &Keep,
) -> Result<Vec<String>, String> {
    let listed = rt
        .block_on(store.list(&format!("{STORE_DIR}/")))
        .map_err(|e| e.to_string())?;
    let found: Vec<(String, i64)> = listed
        .into_iter()
        .filter_map(|o| {
            let f = o.key.strip_prefix(&format!("{STORE_DIR}/"))?.to_string();
            let t = parse_file_name(name, &f)?;
            Some((o.key, t))
        })
        .collect();
    let times: Vec<i64> = found.iter().map(|f| f.1).collect();
    let mut pruned = Vec::new();
    for ((key, _), k) in found.iter().zip(keep.kept(&times)) {
        if !k {
            rt.block_on(store.delete(key, None))
                .map_err(|e| format!("DELETE {key}: {e}"))?;
            pruned.push(key.clone());
        }
    }
    Ok(pruned)
}

/// Where a backup goes: `to` None (the configured directory and the store, with
/// retention), "s3" (the store only), or an absolute directory (only there, no pruning).
pub fn backup_target(t: &Tiering, to: Option<&str>) -> Result<Target, String> {
    let keep = Keep::parse(&t.settings().catalog.backup_keep)?;
    Ok(match to {
        None => Target::Managed {
            dir: t.settings().backup_dir.clone(),
            keep,
        },
        Some("s3") => Target::Store { keep },
        Some(d) if Path::new(d).is_absolute() => Target::Dir(d.into()),
        Some(d) => {
            return Err(format!(
                "--to {d}: give an absolute directory, or `s3` for the bucket"
            ))
        }
    })
}

/// Takes one catalog backup now (blocking; not from a tokio worker thread).
pub fn backup_now(t: &Tiering, to: Option<&str>, why: &str) -> Result<Value, StepError> {
    let target = backup_target(t, to).map_err(|m| StepError::new(libc::EINVAL, m))?;
    let name = crate::base::mountinfo::mount_name(&t.mountpoint);
    if t.paused() && matches!(target, Target::Store { .. }) {
        return Err(t.not_paused().unwrap_err());
    }
    // Paused: the local copy only.
    let store = t.store_opt().filter(|_| !t.paused());
    run(
        &t.catalog,
        store,
        &t.store_prefix,
        &t.rt,
        &name,
        &target,
        why,
    )
    .map_err(|m| StepError::new(libc::EIO, m))
}

/// Takes a catalog backup at each time `catalog.backup_schedule` names (UTC), to the
/// configured directory and the store, with the configured retention.
pub struct BackupScheduler {
    pub t: Arc<Tiering>,
}

impl Worker for BackupScheduler {
    fn name(&self) -> String {
        "catalog backup scheduler".into()
    }
    fn status(&self) -> String {
        if self.t.store_opt().is_none() {
            return "no [store]: no scheduled backups".into();
        }
        super::schedule::next_text(
            self.t.settings().catalog.backup_schedule.as_ref(),
            "catalog.backup_schedule",
        )
    }
    fn wait_for_work(&mut self) -> BoxFuture<'_, WorkerState> {
        Box::pin(super::schedule::wait(
            &self.t,
            |s| s.catalog.backup_schedule.clone(),
            "catalog backup",
        ))
    }
    fn work<'a>(&'a mut self, _cancel: &'a Cancel) -> BoxFuture<'a, Result<WorkerState, String>> {
        Box::pin(async move {
            let t = self.t.clone();
            match tokio::task::spawn_blocking(move || backup_now(&t, None, "scheduled")).await {
                Ok(Ok(d)) => {
                    tracing::info!(file = %d["file"], bytes = %d["bytes"], "catalog backup taken");
                    Ok(WorkerState::Idle)
                }
                Ok(Err(e)) => Err(format!("scheduled catalog backup failed: {e}")),
                Err(e) => Err(format!("scheduled catalog backup task: {e}")),
            }
        })
    }
}
