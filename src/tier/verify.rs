//! `coldtier verify`: reconciles the three views of tiered data, the records on the
//! backing files (the truth for what each file needs), the catalog, and the bucket.
//!
//! What it finds (each one a VERIFY_FINDING event and a line of the report):
//! * `object_missing`, `object_size`, `object_checksum`, `object_metadata`: a stub's or
//!   premigrated file's object is gone, or is not what the record says (size; checksum as
//!   the store reports it; the genealogy metadata coldtier wrote). `--deep` also reads the
//!   object back and compares our whole-object checksum (`object_content`).
//! * `orphan`: an object under the store prefix that no file, catalog row or retained
//!   (deleted/superseded, see `Tiering::gc`) content names. Reported, never deleted.
//! * `premigrated_changed`: a copy record that no longer matches the file (size, mtime):
//!   the file was changed without the mount.
//! * `bad_record`: a record xattr that does not decode.
//! * `replica_missing`, `replica_size`, `replica_content` (--deep): a copy on a
//!   `[[replica]]` target that the catalog records is gone, of another size, or holds other
//!   bytes.
//! * `catalog_missing_row`, `catalog_mismatch`, `catalog_file_missing`: the catalog and
//!   the files disagree (a row missing, another state or object, a row for a file that no
//!   longer carries its record).
//!
//! Order: the bucket is listed first, then the tree walked, then the catalog and events
//! read, so that an object written or superseded while verify runs is never an orphan.
//! Verify takes the job lock: no policy run or gc moves objects meanwhile.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::base::progress::Progress;
use crate::catalog::{EventKind, FileRow, FileState, JobCounts};
use crate::fs::backing::{self, Stat};
use crate::store::{ChecksumAlgo, GetRequest, ObjectStore, StoreErrorKind};
use crate::tier::context::{ns_of, StepError, Tiering, KEY_PREFIX};
use crate::tier::marks;
use crate::tier::stub::StubRecord;

/// Objects checked at once.
const IN_FLIGHT: usize = 8;

/// One thing verify found wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub path: Option<String>,
    pub file_id: Option<String>,
    /// The full key (with the store's prefix).
    pub object_key: Option<String>,
    pub message: String,
}

impl Finding {
    /// The report line: `KIND path [key]: message`.
    pub fn line(&self) -> String {
        let mut s = format!("{:<20}", self.kind.to_uppercase());
        if let Some(p) = &self.path {
            s.push_str(&format!(" {p}"));
        }
        if let Some(k) = &self.object_key {
            s.push_str(&format!(" [{k}]"));
        }
        s.push_str(&format!(": {}", self.message));
        s
    }
}

/// A file that names an object: its stub or copy record.
#[derive(Debug, Clone)]
struct RecordedObject {
    rel: String,
    rec: StubRecord,
    stub: bool,
    /// The backing file's inode number (two names of one hard-linked file share it).
    ino: u64,
}

/// What walking the tree found.
#[derive(Default)]
struct TreeWalk {
    files: u64,
    refs: Vec<RecordedObject>,
    /// File ids of files found with a record that is reported, not checked.
    reported: HashSet<String>,
    findings: Vec<Finding>,
    notes: Vec<String>,
}

/// What checking one object found.
#[derive(Default)]
struct ObjectCheck {
    findings: Vec<Finding>,
    notes: Vec<String>,
    reread: u64,
    bytes_reread: u64,
}

impl Tiering {
    /// `coldtier verify`: see the module doc. The answer is the report (JSON).
    pub async fn reconcile(
        self: &Arc<Self>,
        deep: bool,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Value, StepError> {
        // A background check half done (its xattr changed, its catalog record not yet)
        // would show as a finding.
        self.settle().await;
        let Ok(_job) = self.job_lock.try_lock() else {
            return Err(StepError::new(
                libc::EBUSY,
                "a policy run or gc is in progress: run verify when it is done",
            ));
        };
        let t0 = std::time::Instant::now();
        let store = self.store()?;
        let job_id = self
            .catalog
            .start_job("verify", if deep { "deep" } else { "quick" })?;

        // 1. The bucket.
        progress(Progress::new("listing the bucket", 0, 0));
        let list_prefix = if self.store_prefix.is_empty() {
            format!("{KEY_PREFIX}/")
        } else {
            String::new()
        };
        let listed = match store.list(&list_prefix).await {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("cannot list the bucket: {e}");
                let _ = self.catalog.finish_job(
                    job_id,
                    &JobCounts {
                        errors: vec![msg.clone()],
                        ..Default::default()
                    },
                );
                return Err(StepError::new(libc::EIO, msg));
            }
        };

        // 2. The tree.
        progress(Progress::new("walking the tree", 0, 0));
        let me = self.clone();
        let walked = tokio::task::spawn_blocking(move || me.walk_records())
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("walk task: {e}")))??;
        let TreeWalk {
            files,
            refs,
            reported,
            mut findings,
            mut notes,
        } = walked;

        // 3. The catalog.
        let mut rows: HashMap<String, FileRow> = HashMap::new();
        for state in [
            FileState::Premigrated,
            FileState::Stub,
            FileState::Recalling,
            FileState::RestorePending,
        ] {
            for r in self.catalog.files_by_state(state, usize::MAX)? {
                rows.insert(r.file_id.clone(), r);
            }
        }
        let mut seen_ids = reported;
        // The first file found with each id: another file (not a second name of it) with
        // the same id is a copy of its backing file made with its xattrs.
        let mut first: HashMap<&str, (u64, &str)> = HashMap::new();
        for r in &refs {
            seen_ids.insert(r.rec.file_id.clone());
            let want = if r.stub {
                "stub"
            } else {
                FileState::Premigrated.as_str()
            };
            let f = |kind, message: String| Finding {
                kind,
                path: Some(r.rel.clone()),
                file_id: Some(r.rec.file_id.clone()),
                object_key: Some(self.full_key(&r.rec.object_key)),
                message,
            };
            match first.get(r.rec.file_id.as_str()) {
                Some(&(ino, other)) if ino != r.ino => findings.push(f(
                    "shared_id",
                    format!(
                        "carries the same file id as {other} (its backing file copied with its \
                         xattrs outside the mount?): the catalog knows one file by that id; gc \
                         keeps every object a file names"
                    ),
                )),
                Some(_) => {}
                None => {
                    first.insert(&r.rec.file_id, (r.ino, &r.rel));
                }
            }
            let row = match rows.get(&r.rec.file_id) {
                Some(row) => Some(row.clone()),
                // Not in a tiered state in the catalog (or not there at all).
                None => self.catalog.file_by_id(&r.rec.file_id)?,
            };
            match row {
                None => findings.push(f(
                    "catalog_missing_row",
                    format!("the file is {want} but the catalog has no row for it"),
                )),
                Some(row) => {
                    let state_ok = if r.stub {
                        matches!(
                            row.state,
                            FileState::Stub | FileState::Recalling | FileState::RestorePending
                        )
                    } else {
                        row.state == FileState::Premigrated
                    };
                    if !state_ok {
                        findings.push(f(
                            "catalog_mismatch",
                            format!("the file is {want}, the catalog says {}", row.state),
                        ));
                    } else if row.object_key.as_deref() != Some(r.rec.object_key.as_str())
                        || row.version_id != r.rec.version_id
                    {
                        findings.push(f(
                            "catalog_mismatch",
                            format!(
                                "the record names {} version {:?}, the catalog {:?} version {:?}",
                                r.rec.object_key, r.rec.version_id, row.object_key, row.version_id
                            ),
                        ));
                    }
                }
            }
        }
        for row in rows.values() {
            if !seen_ids.contains(&row.file_id) {
                findings.push(Finding {
                    kind: "catalog_file_missing",
                    path: Some(row.path.clone()),
                    file_id: Some(row.file_id.clone()),
                    object_key: row.object_key.as_deref().map(|k| self.full_key(k)),
                    message: format!(
                        "the catalog says {}, but no file in the tree carries this file's record \
                         (deleted or replaced without the mount?)",
                        row.state
                    ),
                });
            }
        }

        // 4. Each named object.
        let total = refs.len() as u64;
        progress(Progress::new(format!("checking {total} objects"), 0, 0));
        let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut set = tokio::task::JoinSet::new();
        let mut checked = ObjectCheck::default();
        let mut done = 0u64;
        for r in refs.iter().cloned() {
            let permit = sem.clone().acquire_owned().await.expect("semaphore open");
            let store = store.clone();
            let full = self.full_key(&r.rec.object_key);
            set.spawn(async move {
                let c = check_object(store.as_ref(), &r, &full, deep).await;
                drop(permit);
                c
            });
            while let Some(c) = set.try_join_next() {
                merge(&mut checked, c);
                done += 1;
            }
            progress(Progress::new(
                "checking objects",
                done,
                checked.bytes_reread,
            ));
        }
        while let Some(c) = set.join_next().await {
            merge(&mut checked, c);
            done += 1;
            progress(Progress::new(
                "checking objects",
                done,
                checked.bytes_reread,
            ));
        }
        findings.append(&mut checked.findings);
        notes.append(&mut checked.notes);

        // 4b. The replica targets: every copy recorded of an object in use is there, of its
        // size; with --deep, read back and compared with the copy's checksum.
        let mut replicas_checked = 0u64;
        for target in self.replica_names() {
            progress(Progress::new(format!("checking replica {target}"), 0, 0));
            let (f, n) = self.verify_replica(&target, &refs, deep).await?;
            findings.extend(f);
            replicas_checked += n;
        }

        // 5. Orphans: listed objects nothing names.
        let mut named: HashSet<String> = refs.iter().map(|r| r.rec.object_key.clone()).collect();
        named.extend(self.catalog.object_keys_in_use()?);
        // Uploads under way (their intent recorded before they started).
        named.extend(
            self.catalog
                .open_uploads()?
                .into_iter()
                .map(|u| u.object_key),
        );
        let events = self.catalog.events_of_kinds(&[
            EventKind::Superseded,
            EventKind::Deleted,
            EventKind::Failed,
            EventKind::ObjectDeleted,
        ])?;
        let mut gone = HashSet::new();
        let mut retained = HashSet::new();
        for e in &events {
            if let Some((k, _)) = super::gc::event_object(&e.detail) {
                if e.kind == EventKind::ObjectDeleted {
                    gone.insert(k);
                } else {
                    retained.insert(k);
                }
            }
        }
        let mut n_retained = 0u64;
        let mut n_backups = 0u64;
        for o in &listed {
            if o.key
                .starts_with(&format!("{}/", crate::catalog::backup::STORE_DIR))
            {
                n_backups += 1;
                continue;
            }
            // The store check's probe objects (a check cut off by a crash leaves one;
            // gc removes it).
            if o.key
                .starts_with(&format!("{}/", crate::store::PROBE_PREFIX))
            {
                continue;
            }
            // A pack's index is named through its pack.
            let key = match o.key.strip_suffix(".index.json") {
                Some(stem)
                    if crate::tier::stub::parse_pack_key(&format!("{stem}.tar")).is_some() =>
                {
                    format!("{stem}.tar")
                }
                _ => o.key.clone(),
            };
            if named.contains(&key) {
                continue;
            }
            if retained.contains(&key) && !gone.contains(&key) {
                n_retained += 1;
                continue;
            }
            let why = if gone.contains(&o.key) {
                "gc recorded its deletion (OBJECT_DELETED), yet it is there"
            } else if o.key.starts_with(&format!("{KEY_PREFIX}/"))
                || o.key
                    .starts_with(&format!("{}/", crate::tier::stub::PACK_PREFIX))
            {
                "no file, catalog row or retained content names it"
            } else {
                "not a coldtier object key (coldtier writes only data/, packs/ and catalog/ keys)"
            };
            let file_id =
                crate::tier::stub::parse_object_key(&o.key).map(|(_, id, _)| id.to_string());
            findings.push(Finding {
                kind: "orphan",
                path: None,
                file_id,
                object_key: Some(self.full_key(&o.key)),
                message: format!("{} bytes: {why}; verify never deletes it", o.size),
            });
        }

        // 6. Record and report.
        for f in &findings {
            let detail = json!({
                "finding": f.kind,
                "object_key": f.object_key,
                "message": f.message,
                "job_id": job_id,
            });
            if let Err(e) = self.catalog.append_event(
                f.file_id.as_deref(),
                f.path.as_deref(),
                EventKind::VerifyFinding,
                detail,
            ) {
                tracing::error!("catalog: cannot record a verify finding: {e}");
            }
        }
        let counts = JobCounts {
            files_scanned: files,
            files_failed: findings.len() as u64,
            errors: findings.iter().map(Finding::line).collect(),
            ..Default::default()
        };
        if let Err(e) = self.catalog.finish_job(job_id, &counts) {
            tracing::error!("catalog: cannot finish job {job_id}: {e}");
        }
        tracing::info!(
            job_id,
            deep,
            findings = findings.len(),
            files,
            objects = listed.len(),
            "verify done"
        );
        Ok(json!({
            "job_id": job_id,
            "deep": deep,
            "clean": findings.is_empty(),
            "files_scanned": files,
            "stubs": refs.iter().filter(|r| r.stub).count(),
            "premigrated": refs.iter().filter(|r| !r.stub).count(),
            "objects_listed": listed.len(),
            "objects_checked": total,
            "objects_reread": checked.reread,
            "replica_copies_checked": replicas_checked,
            "bytes_reread": checked.bytes_reread,
            "retained": n_retained,
            "catalog_backups": n_backups,
            "findings": findings,
            "notes": notes,
            "seconds": t0.elapsed().as_secs_f64(),
        }))
    }

    /// Checks replica `target`'s recorded copies of the objects `refs` name: findings
    /// (`replica_missing`, `replica_size`, `replica_content`), and how many were checked.
    async fn verify_replica(
        &self,
        target: &str,
        refs: &[RecordedObject],
        deep: bool,
    ) -> Result<(Vec<Finding>, u64), StepError> {
        let Some(store) = self.replica(target) else {
            return Ok((Vec::new(), 0));
        };
        let recorded: HashMap<(String, String), (Option<String>, u64)> = self
            .catalog
            .replica_rows(target)?
            .into_iter()
            .map(|(k, v, rv, size)| ((k, v), (rv, size)))
            .collect();
        let mut findings = Vec::new();
        let mut checked = 0u64;
        // The recorded copies the refs name, and each copy's HEAD: once per copy (a pack's
        // members share one), IN_FLIGHT at once.
        let wanted: Vec<(&RecordedObject, &Option<String>, u64)> = refs
            .iter()
            .filter_map(|r| {
                let key = (
                    r.rec.object_key.clone(),
                    r.rec.version_id.clone().unwrap_or_default(),
                );
                recorded.get(&key).map(|(rv, size)| (r, rv, *size))
            })
            .collect();
        let mut copies: Vec<(String, Option<String>)> = wanted
            .iter()
            .map(|(r, rv, _)| (r.rec.object_key.clone(), (*rv).clone()))
            .collect();
        copies.sort();
        copies.dedup();
        let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut set = tokio::task::JoinSet::new();
        for (key, version) in copies {
            let permit = sem.clone().acquire_owned().await.expect("semaphore open");
            let store = store.clone();
            set.spawn(async move {
                let head = store
                    .head(&key, version.as_deref())
                    .await
                    .map(|m| m.size)
                    .map_err(|e| (e.is(StoreErrorKind::NotFound), e.to_string()));
                drop(permit);
                ((key, version), head)
            });
        }
        let mut heads = HashMap::new();
        while let Some(r) = set.join_next().await {
            let (copy, head) =
                r.map_err(|e| StepError::new(libc::EIO, format!("a replica check failed: {e}")))?;
            heads.insert(copy, head);
        }
        for (r, replica_version, size) in wanted {
            checked += 1;
            let f = |kind, message: String| Finding {
                kind,
                path: Some(r.rel.clone()),
                file_id: Some(r.rec.file_id.clone()),
                object_key: Some(r.rec.object_key.clone()),
                message: format!("replica {target}: {message}"),
            };
            match heads.get(&(r.rec.object_key.clone(), replica_version.clone())) {
                Some(Err((true, _))) => {
                    findings.push(f(
                        "replica_missing",
                        "the copy recorded is not there".into(),
                    ));
                    continue;
                }
                Some(Err((false, e))) => {
                    findings.push(f("replica_missing", format!("cannot be read: {e}")));
                    continue;
                }
                Some(Ok(got)) if *got != size => {
                    findings.push(f(
                        "replica_size",
                        format!("{got} bytes, the copy recorded has {size}"),
                    ));
                    continue;
                }
                Some(Ok(_)) => {}
                None => unreachable!("every copy wanted was asked for"),
            }
            if deep {
                let algo: ChecksumAlgo = match r.rec.checksum_algo.parse() {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                let got = match &r.rec.pack {
                    Some(p) => read_member(store.as_ref(), &r.rec, p, replica_version.as_deref())
                        .await
                        .map_err(|e| e.to_string()),
                    None => store
                        .get(GetRequest {
                            key: &r.rec.object_key,
                            version_id: replica_version.as_deref(),
                            dest: None,
                            expected_size: size,
                            checksum: algo,
                            extents: None,
                            range: None,
                            dest_base: 0,
                            progress: None,
                        })
                        .await
                        .map_err(|e| e.to_string()),
                };
                match got {
                    Ok(g) if g.checksum.base64() == r.rec.checksum => {}
                    Ok(g) => findings.push(f(
                        "replica_content",
                        format!(
                            "reads back as {}, the record says {}",
                            g.checksum, r.rec.checksum
                        ),
                    )),
                    Err(e) => findings.push(f("replica_content", format!("read back: {e}"))),
                }
            }
        }
        Ok((findings, checked))
    }

    /// Walks the tree and reads every file's records.
    fn walk_records(&self) -> Result<TreeWalk, StepError> {
        let mut w = TreeWalk::default();
        self.walk(Path::new(""), &mut |rel, st: &Stat, dir, name| {
            w.files += 1;
            let Ok(fd) = backing::open_path_at(dir, name) else {
                return;
            };
            let rel_s = String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned();
            let bad = |what: &str| Finding {
                kind: "bad_record",
                path: Some(rel_s.clone()),
                file_id: marks::file_id(fd.as_fd()).ok().flatten(),
                object_key: None,
                message: format!(
                    "its {what} record does not decode (see the daemon log): the file cannot be recalled or released"
                ),
            };
            match marks::record(fd.as_fd(), marks::STUB) {
                Err(_) => return w.findings.push(bad("stub")),
                Ok(Some(rec)) => {
                    if st.size != 0 {
                        w.notes.push(format!(
                            "{rel_s}: a stub with {} local bytes (an interrupted recall, or a write \
                             without the mount): its next open recalls over them",
                            st.size
                        ));
                    }
                    return w.refs.push(RecordedObject {
                        rel: rel_s,
                        rec,
                        stub: true,
                        ino: st.ino,
                    });
                }
                Ok(None) => {}
            }
            match marks::record(fd.as_fd(), marks::COPY) {
                Err(_) => w.findings.push(bad("copy")),
                Ok(Some(rec)) => {
                    // Other times alone (touched, renamed, chmod) are no change: then the
                    // content decides.
                    let changed = rec.size != st.size
                        || (rec.mtime_ns != ns_of(st.mtime)
                            && !backing::reopen(fd.as_fd(), libc::O_RDONLY)
                                .ok()
                                .map(std::fs::File::from)
                                .and_then(|f| crate::tier::hooks::content_matches(&f, &rec).ok())
                                .unwrap_or(false));
                    if changed {
                        w.reported.insert(rec.file_id.clone());
                        w.findings.push(Finding {
                            kind: "premigrated_changed",
                            path: Some(rel_s),
                            file_id: Some(rec.file_id.clone()),
                            object_key: Some(self.full_key(&rec.object_key)),
                            message: format!(
                                "changed without the mount since its copy: now {} bytes, mtime {}; \
                                 the copy has {} bytes, mtime {} and other content (the next policy run copies it again)",
                                st.size,
                                ns_of(st.mtime),
                                rec.size,
                                rec.mtime_ns
                            ),
                        });
                    } else {
                        w.refs.push(RecordedObject {
                            rel: rel_s,
                            rec,
                            stub: false,
                            ino: st.ino,
                        });
                    }
                }
                Ok(None) => {}
            }
        })?;
        Ok(w)
    }
}

fn merge(into: &mut ObjectCheck, c: Result<ObjectCheck, tokio::task::JoinError>) {
    match c {
        Ok(mut c) => {
            into.findings.append(&mut c.findings);
            into.notes.append(&mut c.notes);
            into.reread += c.reread;
            into.bytes_reread += c.bytes_reread;
        }
        Err(e) => into.notes.push(format!("a check task failed: {e}")),
    }
}

/// HEADs (and with `deep`, reads back) the object `r` names.
async fn check_object(
    store: &dyn ObjectStore,
    r: &RecordedObject,
    full: &str,
    deep: bool,
) -> ObjectCheck {
    let mut out = ObjectCheck::default();
    let rec = &r.rec;
    let mk = |kind: &'static str, message: String| Finding {
        kind,
        path: Some(r.rel.clone()),
        file_id: Some(rec.file_id.clone()),
        object_key: Some(full.to_string()),
        message,
    };
    let what = if r.stub { "stub" } else { "premigrated file" };
    if let Some(p) = &rec.pack {
        return check_member(store, r, p, deep, &mk).await;
    }
    let meta = match store.head(&rec.object_key, rec.version_id.as_deref()).await {
        Ok(m) => m,
        Err(e) if e.is(StoreErrorKind::NotFound) => {
            out.findings.push(mk(
                "object_missing",
                format!(
                    "the {what}'s object (version {:?}) is not in the bucket{}",
                    rec.version_id,
                    if r.stub {
                        ": its data is LOST unless a backup of the bucket has it"
                    } else {
                        ": the local data is the only copy; release would be refused by a new copy"
                    }
                ),
            ));
            return out;
        }
        Err(e) => {
            out.findings
                .push(mk("object_unreadable", format!("HEAD failed: {e}")));
            return out;
        }
    };
    if meta.size != rec.object_size() {
        out.findings.push(mk(
            "object_size",
            format!(
                "the object is {} bytes, the record says {}",
                meta.size,
                rec.object_size()
            ),
        ));
    }
    let md = |k: &str| meta.metadata.get(k).map(String::as_str);
    let size_s = rec.size.to_string();
    // The content's mtime: times set through the mount since the copy are the file's.
    let mtime_s = rec.content_mtime().to_string();
    let meta_bad: Vec<&str> = [
        ("coldtier-file-id", Some(rec.file_id.as_str())),
        ("coldtier-size", Some(size_s.as_str())),
        ("coldtier-mtime-ns", Some(mtime_s.as_str())),
    ]
    .into_iter()
    .filter(|(k, want)| md(k) != *want)
    .map(|(k, _)| k)
    .collect();
    if !meta_bad.is_empty() {
        out.findings.push(mk(
            "object_metadata",
            format!(
                "the object's {} {} not what coldtier wrote (replaced behind coldtier's back?)",
                meta_bad.join(", "),
                if meta_bad.len() == 1 { "is" } else { "are" }
            ),
        ));
    }
    let multipart = meta.checksum.as_ref().is_some_and(|c| c.parts.is_some())
        || meta.etag.as_deref().is_some_and(|e| {
            e.trim_matches('"')
                .rsplit_once('-')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    match &meta.checksum {
        Some(c)
            if !multipart && (c.algo.name() != rec.checksum_algo || c.value != rec.checksum) =>
        {
            out.findings.push(mk(
                "object_checksum",
                format!(
                    "the store reports checksum {c}, the record says {}:{}",
                    rec.checksum_algo, rec.checksum
                ),
            ));
        }
        Some(_) if !multipart => {}
        _ if multipart => {
            // A multipart object's own checksum is a composite; coldtier tags the
            // whole-object one.
            let want = format!("{}:{}", rec.checksum_algo, rec.checksum);
            match store.get_tags(&rec.object_key, rec.version_id.as_deref()).await {
                Ok(t) => match t.get("coldtier-checksum") {
                    Some(v) if *v == want => {}
                    Some(v) => out.findings.push(mk(
                        "object_checksum",
                        format!("the object's checksum tag says {v}, the record {want}"),
                    )),
                    None if !deep => out.notes.push(format!(
                        "{}: multipart object without a whole-object checksum tag: only --deep checks its content",
                        r.rel
                    )),
                    None => {}
                },
                Err(e) => out
                    .notes
                    .push(format!("{}: cannot read the object's tags: {e}", r.rel)),
            }
        }
        _ if !deep => out.notes.push(format!(
            "{}: the store reports no checksum for {full}: only --deep checks its content",
            r.rel
        )),
        _ => {}
    }
    if !deep {
        return out;
    }
    if !meta.restore.readable() {
        out.notes.push(format!(
            "{}: {full} is archived ({}) and not restored: not read back",
            r.rel, meta.storage_class
        ));
        return out;
    }
    let Ok(algo) = rec.checksum_algo.parse::<ChecksumAlgo>() else {
        out.findings.push(mk(
            "object_checksum",
            format!(
                "the record's checksum algorithm {} is unknown",
                rec.checksum_algo
            ),
        ));
        return out;
    };
    let got = store
        .get(GetRequest {
            key: &rec.object_key,
            version_id: rec.version_id.as_deref(),
            dest: None,
            expected_size: rec.object_size(),
            checksum: algo,
            extents: None,
            range: None,
            dest_base: 0,
            progress: None,
        })
        .await;
    reread(
        &mut out,
        got.map_err(|e| format!("reading it back failed: {e}")),
        rec,
        "the object's content",
        &mk,
    );
    out
}

/// The outcome of a read-back of `rec`'s bytes (`what` they are) into `out`.
fn reread(
    out: &mut ObjectCheck,
    got: Result<crate::store::GetResult, String>,
    rec: &crate::tier::stub::StubRecord,
    what: &str,
    mk: &(dyn Fn(&'static str, String) -> Finding + Sync),
) {
    out.reread = 1;
    match got {
        Ok(g) => {
            out.bytes_reread = g.bytes;
            if g.checksum.base64() != rec.checksum {
                out.findings.push(mk(
                    "object_content",
                    format!(
                        "read back, {what} has {}, the record says {}:{} (corrupted)",
                        g.checksum, rec.checksum_algo, rec.checksum
                    ),
                ));
            }
        }
        Err(e) => out.findings.push(mk("object_content", e)),
    }
}

/// A pack member's bytes, read back (ranged, hashed, not stored) from `store` (version
/// `version_id` of its pack).
pub(super) async fn read_member(
    store: &dyn ObjectStore,
    rec: &crate::tier::stub::StubRecord,
    p: &crate::tier::stub::PackRef,
    version_id: Option<&str>,
) -> Result<crate::store::GetResult, String> {
    let algo: ChecksumAlgo = rec.checksum_algo.parse().map_err(|_| {
        format!(
            "the record's checksum algorithm {} is unknown",
            rec.checksum_algo
        )
    })?;
    store
        .get(GetRequest {
            key: &rec.object_key,
            version_id,
            dest: None,
            expected_size: p.pack_size,
            checksum: algo,
            extents: None,
            range: Some((p.offset, rec.size)),
            dest_base: p.offset,
            progress: None,
        })
        .await
        .map_err(|e| format!("reading it back failed: {e}"))
}

/// [`check_object`] of a pack member: its pack is there, of its size, and with `deep`
/// the member's bytes (one ranged GET) have its checksum.
async fn check_member(
    store: &dyn ObjectStore,
    r: &RecordedObject,
    p: &crate::tier::stub::PackRef,
    deep: bool,
    mk: &(dyn Fn(&'static str, String) -> Finding + Sync),
) -> ObjectCheck {
    let mut out = ObjectCheck::default();
    let rec = &r.rec;
    let meta = match store.head(&rec.object_key, rec.version_id.as_deref()).await {
        Ok(m) => m,
        Err(e) if e.is(StoreErrorKind::NotFound) => {
            out.findings.push(mk(
                "object_missing",
                format!(
                    "the pack {} this {} is a member of is not in the bucket{}",
                    p.id,
                    if r.stub { "stub" } else { "premigrated file" },
                    if r.stub {
                        ": its data is LOST unless a backup of the bucket or a replica has it"
                    } else {
                        ""
                    }
                ),
            ));
            return out;
        }
        Err(e) => {
            out.findings
                .push(mk("object_unreadable", format!("HEAD failed: {e}")));
            return out;
        }
    };
    if meta.size != p.pack_size {
        out.findings.push(mk(
            "object_size",
            format!(
                "the pack is {} bytes, the record says {}",
                meta.size, p.pack_size
            ),
        ));
        return out;
    }
    if meta.metadata.get("coldtier-pack-id") != Some(&p.id) {
        out.findings.push(mk(
            "object_metadata",
            "the pack's coldtier-pack-id is not its id (replaced behind coldtier's back?)".into(),
        ));
    }
    if !deep {
        return out;
    }
    if !meta.restore.readable() {
        out.notes.push(format!(
            "{}: its pack is archived ({}) and not restored: not read back",
            r.rel, meta.storage_class
        ));
        return out;
    }
    let got = read_member(store, rec, p, rec.version_id.as_deref()).await;
    reread(&mut out, got, rec, "the member's bytes in its pack", mk);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_lines_name_kind_path_and_key() {
        let f = Finding {
            kind: "orphan",
            path: None,
            file_id: None,
            object_key: Some("t/data/x/1".into()),
            message: "3 bytes".into(),
        };
        assert_eq!(f.line(), "ORPHAN               [t/data/x/1]: 3 bytes");
    }
}
