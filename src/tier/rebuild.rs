//! `coldtier catalog rebuild SOURCE --config FILE`: rebuilds a lost catalog, offline,
//! from the records on the backing files (`trusted.coldtier.*`, which users cannot forge)
//! and the objects' metadata in the bucket (which anyone with write access to the bucket
//! can forge: untrusted input).
//!
//! * Every stub and premigrated file gets its row back (state, object key, version,
//!   checksum, storage class) with a CATALOG_REBUILT event, once its object has been
//!   checked: the object's size, its genealogy metadata (file id, size, mtime, a path that
//!   stays inside SOURCE, mode, uid, gid) and the checksum the store reports must agree
//!   with the record on disk. A record whose object does not agree is rejected: no row,
//!   one report line (the file stays a stub on disk and `coldtier verify` shows it).
//! * Objects no file names: of a file still on disk (another content version), recorded as
//!   SUPERSEDED; of a file gone, tagged `deleted`/`superseded`, recorded as DELETED or
//!   SUPERSEDED (gc deletes them after the retention, counted from the rebuild); tagged
//!   `live` (the file vanished without a trace), reported and NOT recorded, so nothing
//!   ever deletes them without an operator.
//! * Rebuild writes nothing but the new catalog: paths in the bucket are only checked and
//!   stored as text, never opened or created.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use serde_json::json;

use crate::catalog::{Catalog, EventKind, FileRow, FileState};
use crate::fs::backing::{self, Stat};
use crate::store::{ListEntry, ObjectMeta, ObjectStore, StoreErrorKind};
use crate::tier::context::ns_of;
use crate::tier::marks;
use crate::tier::stub::{parse_object_key, StubRecord};

/// Longest `coldtier-path` accepted (migrate cuts it at 1024 bytes).
const MAX_META_PATH: usize = 4096;

/// Rows written per catalog transaction.
const BATCH: usize = 1000;

/// Checks a path from object metadata: relative, no `.`/`..`/empty segments, no NUL or
/// control characters, not too long. Such a path names a place inside SOURCE.
pub fn check_meta_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("is empty".into());
    }
    if p.len() > MAX_META_PATH {
        return Err(format!("is {} bytes long", p.len()));
    }
    if p.starts_with('/') {
        return Err(format!(
            "`{}` is absolute: it escapes SOURCE",
            p.escape_debug()
        ));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(format!("`{}` has control characters", p.escape_debug()));
    }
    if p.split('/').any(|s| s == "..") {
        return Err(format!(
            "`{}` has a `..` segment: it escapes SOURCE",
            p.escape_debug()
        ));
    }
    if p.split('/').any(|s| s.is_empty() || s == ".") {
        return Err(format!(
            "`{}` has an empty or `.` segment",
            p.escape_debug()
        ));
    }
    Ok(())
}

/// The genealogy an object's metadata claims, each value checked for its form.
#[derive(Debug, Clone, PartialEq)]
pub struct Genealogy {
    pub path: String,
    pub file_id: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// A sparse file's data extents (`coldtier-extents`): the object holds only them.
    pub extents: Option<crate::store::Extents>,
}

/// Reads and checks the metadata coldtier writes on each object (untrusted input): every
/// field present and well-formed, the size plausible and equal to the object's.
pub fn genealogy(meta: &ObjectMeta) -> Result<Genealogy, String> {
    let get = |k: &str| {
        meta.metadata
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("metadata {k} is missing (not an object coldtier wrote?)"))
    };
    let path = get("coldtier-path")?;
    check_meta_path(path).map_err(|e| format!("metadata coldtier-path {e}"))?;
    let file_id = get("coldtier-file-id")?;
    if !crate::tier::stub::is_valid_file_id(file_id) {
        return Err(format!(
            "metadata coldtier-file-id `{}` is not 32 hex digits",
            file_id.escape_debug()
        ));
    }
    let size_s = get("coldtier-size")?;
    let size: u64 = size_s
        .parse()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
        .ok_or_else(|| {
            format!(
                "metadata coldtier-size `{}` is not a plausible size",
                size_s.escape_debug()
            )
        })?;
    let extents = match meta.metadata.get("coldtier-extents") {
        None => None,
        Some(e) => Some(
            crate::tier::stub::extents_from_meta(e, size)
                .map_err(|why| format!("metadata coldtier-extents: {why}"))?,
        ),
    };
    let object_size = extents.as_ref().map_or(size, |e| e.data_len());
    if object_size != meta.size {
        return Err(format!(
            "metadata coldtier-size{} says {object_size} bytes, the object is {}",
            if extents.is_some() {
                " and coldtier-extents"
            } else {
                ""
            },
            meta.size
        ));
    }
    let mtime_s = get("coldtier-mtime-ns")?;
    let mtime_ns: i64 = mtime_s.parse().map_err(|_| {
        format!(
            "metadata coldtier-mtime-ns `{}` is not a number",
            mtime_s.escape_debug()
        )
    })?;
    for (k, radix) in [
        ("coldtier-mode", 8),
        ("coldtier-uid", 10),
        ("coldtier-gid", 10),
    ] {
        let v = get(k)?;
        if u32::from_str_radix(v, radix).is_err() {
            return Err(format!(
                "metadata {k} `{}` is not a valid value",
                v.escape_debug()
            ));
        }
    }
    Ok(Genealogy {
        path: path.to_string(),
        file_id: file_id.to_string(),
        size,
        mtime_ns,
        extents,
    })
}

/// Whether a pack (`meta`, its index `ix`) holds the member `rec` says it does.
fn member_matches_pack(
    meta: &ObjectMeta,
    p: &crate::tier::stub::PackRef,
    ix: &Result<crate::tier::pack::PackIndex, String>,
    rec: &StubRecord,
) -> Result<(), String> {
    if meta.size != p.pack_size {
        return Err(format!(
            "the pack is {} bytes, the stub says {}",
            meta.size, p.pack_size
        ));
    }
    if meta.metadata.get("coldtier-pack-id") != Some(&p.id) {
        return Err("the pack's coldtier-pack-id is not its id".into());
    }
    let ix = ix.as_ref().map_err(|e| format!("its index: {e}"))?;
    let m = ix
        .members
        .iter()
        .find(|m| m.offset == p.offset)
        .ok_or_else(|| format!("its index has no member at offset {}", p.offset))?;
    crate::tier::pack::member_matches(m, rec)
}

/// Whether an object agrees with the record on disk that names it.
pub fn matches_record(meta: &ObjectMeta, rec: &StubRecord) -> Result<Genealogy, String> {
    let g = genealogy(meta)?;
    if g.file_id != rec.file_id {
        return Err(format!(
            "the object says file {}, the stub {}",
            g.file_id, rec.file_id
        ));
    }
    if g.size != rec.size {
        return Err(format!(
            "the object is {} bytes, the stub {}",
            g.size, rec.size
        ));
    }
    if g.extents != rec.extents {
        return Err("the object's data extents are not the stub's".to_string());
    }
    if g.mtime_ns != rec.content_mtime() {
        return Err(format!(
            "the object says mtime {}, the stub {}",
            g.mtime_ns,
            rec.content_mtime()
        ));
    }
    if let Some(c) = &meta.checksum {
        let multipart = c.parts.is_some()
            || meta
                .etag
                .as_deref()
                .is_some_and(|e| e.trim_matches('"').contains('-'));
        if !multipart && (c.algo.name() != rec.checksum_algo || c.value != rec.checksum) {
            return Err(format!(
                "the store reports checksum {c}, the stub {}:{}",
                rec.checksum_algo, rec.checksum
            ));
        }
    }
    Ok(g)
}

/// One regular file of the tree with records, or with coldtier's id alone (a file whose
/// copy was superseded, or cut short by a crash before its record: the objects of its id
/// that no record names are its dead content).
pub struct DiskFile {
    rel: String,
    st: Stat,
    id: Option<String>,
    stub: Option<StubRecord>,
    copy: Option<StubRecord>,
}

/// Walks the tree below `root` (same filesystem, no symlinks followed) and reads the
/// records (or the id) of every regular file that has them.
pub fn walk(
    root: BorrowedFd<'_>,
    report: &mut Vec<String>,
) -> std::io::Result<(u64, Vec<DiskFile>)> {
    let io = |e: backing::Errno| std::io::Error::from_raw_os_error(e.0);
    let root_dev = backing::stat_fd(root).map_err(io)?.dev;
    let mut out = Vec::new();
    let mut files = 0u64;
    let mut skipped_dirs = Vec::new();
    crate::tier::migrate::walk_tree(
        root,
        root_dev,
        Path::new(""),
        &mut |rel, e| {
            skipped_dirs.push(format!(
                "SKIPPED {}: cannot read the directory: {e:?}",
                rel.display()
            ))
        },
        &mut |rel, st, dir, name| {
            files += 1;
            if let Some(f) = read_records(dir, name, rel, *st, report) {
                out.push(f);
            }
        },
    )
    .map_err(io)?;
    report.extend(skipped_dirs);
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((files, out))
}

fn read_records(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
    st: Stat,
    report: &mut Vec<String>,
) -> Option<DiskFile> {
    let fd = backing::open_path_at(dir, name).ok()?;
    let Ok(rel) = std::str::from_utf8(rel.as_os_str().as_bytes()) else {
        report.push(format!(
            "SKIPPED {}: the path is not UTF-8 (the catalog keeps UTF-8 paths)",
            rel.display()
        ));
        return None;
    };
    let id = marks::file_id(fd.as_fd()).ok().flatten();
    let mut rec = |name, what: &str| match marks::record(fd.as_fd(), name) {
        Ok(r) => Ok(r),
        Err(_) => {
            report.push(format!(
                "REJECTED {rel}: its {what} record does not decode; it stays as it is on disk"
            ));
            Err(())
        }
    };
    let stub = rec(marks::STUB, "stub").ok()?;
    let copy = if stub.is_none() {
        rec(marks::COPY, "copy").ok()?
    } else {
        None
    };
    if stub.is_none() && copy.is_none() && id.is_none() {
        return None;
    }
    Some(DiskFile {
        rel: rel.to_string(),
        st,
        id,
        stub,
        copy,
    })
}

/// What a rebuild recorded.
#[derive(Default)]
pub struct Counts {
    pub stubs: u64,
    pub premigrated: u64,
    pub superseded: u64,
    pub deleted: u64,
}

/// HEADs each object a record names and writes the rows; then records the objects no
/// file names.
#[allow(clippy::too_many_arguments)]
pub fn rebuild(
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    catalog: &Catalog,
    listed: &[ListEntry],
    disk: &[DiskFile],
    report: &mut Vec<String>,
    say: &dyn Fn(&str),
) -> anyhow::Result<Counts> {
    let full = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}/{k}")
        }
    };
    let mut counts = Counts::default();
    let mut named: HashSet<String> = HashSet::new();
    let mut disk_ids: HashMap<String, String> = HashMap::new();
    // Files with an id and no record: an object of their id that no record names is
    // content they no longer have.
    let id_only: HashMap<&str, &str> = disk
        .iter()
        .filter(|f| f.stub.is_none() && f.copy.is_none())
        .filter_map(|f| Some((f.id.as_deref()?, f.rel.as_str())))
        .collect();
    let mut stale: Vec<(String, StubRecord)> = Vec::new();
    let mut rows: Vec<(FileRow, EventKind, serde_json::Value)> = Vec::new();
    say(&format!(
        "checking {} records against the bucket",
        disk.iter()
            .filter(|f| f.stub.is_some() || f.copy.is_some())
            .count()
    ));
    // HEADs, 8 at a time.
    let heads: Vec<Option<Result<ObjectMeta, crate::store::StoreError>>> = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = Vec::new();
        for f in disk {
            let rec = f.stub.clone().or_else(|| f.copy.clone());
            let store = store.clone();
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let rec = rec?;
                let _p = sem.acquire_owned().await.ok()?;
                Some(store.head(&rec.object_key, rec.version_id.as_deref()).await)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.ok().flatten());
        }
        out
    });
    // The indexes of the packs that records name: each read and checked once.
    let mut indexes: HashMap<String, Result<crate::tier::pack::PackIndex, String>> = HashMap::new();
    for f in disk {
        let Some(rec) = f.stub.as_ref().or(f.copy.as_ref()) else {
            continue;
        };
        if let Some(p) = &rec.pack {
            if !indexes.contains_key(&rec.object_key) {
                let ix = rt.block_on(crate::tier::pack::fetch_index(
                    store.as_ref(),
                    &rec.object_key,
                    &p.id,
                    p.pack_size,
                ));
                indexes.insert(rec.object_key.clone(), ix);
            }
        }
    }
    let mut packs_found: BTreeMap<String, (crate::catalog::PackRow, u64)> = BTreeMap::new();
    for (f, head) in disk.iter().zip(heads) {
        let (rec, state) = match (&f.stub, &f.copy) {
            (Some(r), _) => (r, FileState::Stub),
            (None, Some(r)) => (r, FileState::Premigrated),
            _ => continue,
        };
        named.insert(rec.object_key.clone());
        let key = full(&rec.object_key);
        if let Some(id) = &f.id {
            if *id != rec.file_id {
                report.push(format!(
                    "REJECTED {}: its record names file {} but the file is {id}",
                    f.rel, rec.file_id
                ));
                continue;
            }
        }
        if let Some(other) = disk_ids.get(&rec.file_id) {
            report.push(format!(
                "REJECTED {}: file id {} is also {other} (a copy of a stub made without the \
                 mount?); only the first is imported",
                f.rel, rec.file_id
            ));
            continue;
        }
        if state == FileState::Premigrated
            && (rec.size != f.st.size || rec.mtime_ns != ns_of(f.st.mtime))
        {
            // Changed since the copy: the copy is old content.
            stale.push((f.rel.clone(), rec.clone()));
            continue;
        }
        let meta = match head {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) if e.is(StoreErrorKind::NotFound) => {
                report.push(format!(
                    "MISSING {} [{key}]: the object is not in the bucket: this {} cannot be \
                     recalled; its row is kept so that verify keeps reporting it",
                    f.rel,
                    if state == FileState::Stub {
                        "stub"
                    } else {
                        "copy"
                    }
                ));
                None
            }
            Some(Err(e)) => {
                return Err(anyhow!(
                    "HEAD {key}: {e} (the bucket must be readable to rebuild)"
                ))
            }
            None => continue,
        };
        if let (Some(m), Some(p)) = (&meta, &rec.pack) {
            let ix = indexes.get(&rec.object_key).expect("read above");
            if let Err(why) = member_matches_pack(m, p, ix, rec) {
                report.push(format!(
                    "REJECTED {} [{key}]: the pack does not match the record on disk: {why}",
                    f.rel
                ));
                continue;
            }
            let ix = ix.as_ref().expect("checked");
            let entry = packs_found
                .entry(rec.object_key.clone())
                .or_insert_with(|| {
                    let c = crate::store::Checksum::parse(&ix.checksum).expect("checked");
                    let row = crate::catalog::PackRow {
                        object_key: rec.object_key.clone(),
                        pack_id: p.id.clone(),
                        version_id: rec.version_id.clone(),
                        size: p.pack_size,
                        members: ix.members.len() as u64,
                        checksum_algo: c.algo.name().to_string(),
                        checksum: c.base64(),
                        storage_class: rec.storage_class.clone(),
                        index_key: crate::tier::stub::pack_index_key(
                            crate::tier::stub::parse_pack_key(&rec.object_key)
                                .expect("a pack key")
                                .0,
                            &p.id,
                        ),
                        repack_of: None,
                    };
                    (row, 0)
                });
            entry.1 += 1;
        } else if let Some(m) = &meta {
            if let Err(why) = matches_record(m, rec) {
                report.push(format!(
                    "REJECTED {} [{key}]: the object does not match the record on disk: {why}",
                    f.rel
                ));
                continue;
            }
        }
        disk_ids.insert(rec.file_id.clone(), f.rel.clone());
        let mut row = FileRow::new(rec.file_id.clone(), f.rel.clone());
        crate::tier::record::fill_from_record(&mut row, rec);
        row.state = state;
        row.ctime_ns = ns_of(f.st.ctime);
        row.ino = f.st.ino;
        if let Some(m) = &meta {
            let class = m.storage_class.as_str();
            if !class.is_empty() && class.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                row.storage_class = Some(class.to_string());
            }
        }
        let detail = json!({
            "object_key": rec.object_key,
            "version_id": rec.version_id,
            "from": if state == FileState::Stub { "stub record" } else { "copy record" },
            "object_found": meta.is_some(),
        });
        match state {
            FileState::Stub => counts.stubs += 1,
            _ => counts.premigrated += 1,
        }
        rows.push((row, EventKind::CatalogRebuilt, detail));
        if rows.len() >= BATCH {
            catalog.transition_batch(&rows)?;
            rows.clear();
        }
    }
    // The packs first: no row names a pack the catalog does not know.
    for (row, found) in packs_found.into_values() {
        let d = json!({
            "object_key": row.object_key,
            "version_id": row.version_id,
            "bytes": row.size,
            "members": row.members,
            "members_found": found,
            "found_by": "catalog rebuild",
        });
        catalog.record_pack(&row, d)?;
    }
    if !rows.is_empty() {
        catalog.transition_batch(&rows)?;
    }

    // Stale copies: their objects are superseded content.
    for (rel, rec) in &stale {
        let d = json!({
            "object_key": rec.object_key,
            "version_id": rec.version_id,
            "reason": "rebuild: the file changed since this copy",
        });
        catalog.append_event(Some(&rec.file_id), Some(rel), EventKind::Superseded, d)?;
        counts.superseded += 1;
    }

    // Objects no record names.
    let rest: Vec<&ListEntry> = listed.iter().filter(|o| !named.contains(&o.key)).collect();
    say(&format!("looking at {} objects no file names", rest.len()));
    for o in rest {
        let key = full(&o.key);
        if o.key.ends_with(".index.json") {
            continue;
        }
        if let Some((_, pack_id)) = crate::tier::stub::parse_pack_key(&o.key) {
            // Every member a file on disk with other content (its record names another
            // object, or it has its id alone, its data local): the pack is dead content,
            // recorded for gc. Else (a member's file is not in SOURCE, or the index cannot
            // be read) it is kept.
            let index = rt.block_on(crate::tier::pack::fetch_index(
                store.as_ref(),
                &o.key,
                pack_id,
                o.size,
            ));
            let on_disk = |id: &str| disk_ids.contains_key(id) || id_only.contains_key(id);
            match index {
                Ok(ix) if ix.members.iter().all(|m| on_disk(&m.file_id)) => {
                    let d = json!({
                        "object_key": o.key,
                        "reason": "rebuild: a pack whose every member is a file on disk \
                                   with other content",
                        "members": ix.members.len(),
                    });
                    catalog.append_event(None, None, EventKind::Superseded, d)?;
                    counts.superseded += 1;
                }
                Ok(ix) => report.push(format!(
                    "UNREFERENCED [{key}]: a pack ({} bytes) no file in SOURCE names, with \
                     {} of its {} members' files not in SOURCE: not recorded (nothing will \
                     delete it); its index beside it lists what it holds",
                    o.size,
                    ix.members.iter().filter(|m| !on_disk(&m.file_id)).count(),
                    ix.members.len()
                )),
                Err(why) => report.push(format!(
                    "UNREFERENCED [{key}]: a pack ({} bytes) no file in SOURCE names, whose \
                     index cannot be read ({why}): not recorded (nothing will delete it)",
                    o.size
                )),
            }
            continue;
        }
        let Some(("data", key_id, _)) = parse_object_key(&o.key) else {
            report.push(format!(
                "SKIPPED [{key}]: not a coldtier object key (data/<file id>/<16 hex>)"
            ));
            continue;
        };
        let meta = match rt.block_on(store.head(&o.key, None)) {
            Ok(m) => m,
            Err(e) => {
                report.push(format!("SKIPPED [{key}]: HEAD failed: {e}"));
                continue;
            }
        };
        let g = match genealogy(&meta) {
            Ok(g) => g,
            Err(why) => {
                report.push(format!(
                    "SKIPPED [{key}]: untrusted metadata rejected: {why}"
                ));
                continue;
            }
        };
        if g.file_id != key_id {
            report.push(format!(
                "SKIPPED [{key}]: its metadata says file {}, its key {key_id}",
                g.file_id
            ));
            continue;
        }
        let detail = |reason: &str, tag: Option<&str>| {
            json!({
                "object_key": o.key,
                "version_id": meta.version_id,
                "reason": reason,
                "tag": tag,
                "original_path": g.path,
            })
        };
        if let Some(rel) = disk_ids
            .get(key_id)
            .map(String::as_str)
            .or_else(|| id_only.get(key_id).copied())
        {
            let d = detail("rebuild: another content version of a file on disk", None);
            catalog.append_event(Some(key_id), Some(rel), EventKind::Superseded, d)?;
            counts.superseded += 1;
            continue;
        }
        let tags: BTreeMap<String, String> = rt
            .block_on(store.get_tags(&o.key, None))
            .unwrap_or_default();
        match tags.get("coldtier-state").map(String::as_str) {
            Some(s @ ("deleted" | "superseded")) => {
                let (kind, reason) = if s == "deleted" {
                    (EventKind::Deleted, "rebuild: the object of a deleted file")
                } else {
                    (EventKind::Superseded, "rebuild: superseded content")
                };
                catalog.append_event(Some(key_id), Some(&g.path), kind, detail(reason, Some(s)))?;
                if s == "deleted" {
                    counts.deleted += 1;
                } else {
                    counts.superseded += 1;
                }
            }
            other => report.push(format!(
                "UNREFERENCED [{key}]: tagged {}, of `{}` ({} bytes), but no file in SOURCE \
                 names it: not recorded (nothing will delete it); restore the file, or delete \
                 the object once you are sure",
                other.unwrap_or("(no state tag)"),
                g.path.escape_debug(),
                g.size
            )),
        }
    }
    Ok(counts)
}

/// Records the copies replica `target` holds (`listed`: its listing) of the objects the
/// rebuilt catalog names: the catalog would otherwise know of none, `policy.copies` would
/// count none, `coldtier replicate` would copy each again (and fail for an object the
/// primary has lost), and a recall would find them only by asking. How many.
pub fn record_replica_copies(
    catalog: &Catalog,
    target: &str,
    listed: &[ListEntry],
) -> anyhow::Result<u64> {
    let sizes: HashMap<&str, u64> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let mut n = 0u64;
    for obj in catalog.objects_missing_on(target)? {
        if let Some(&size) = sizes.get(obj.object_key.as_str()) {
            catalog.record_replicated(
                target,
                &obj,
                size,
                None,
                json!({"target": target, "object_key": obj.object_key, "bytes": size, "found_by": "catalog rebuild"}),
            )?;
            n += 1;
        }
    }
    Ok(n)
}

/// The objects of `store` under coldtier's two prefixes (file objects and packs).
pub async fn list_objects(
    store: &dyn ObjectStore,
) -> Result<Vec<ListEntry>, crate::store::StoreError> {
    let mut listed = store
        .list(&format!("{}/", crate::tier::context::KEY_PREFIX))
        .await?;
    listed.extend(
        store
            .list(&format!("{}/", crate::tier::stub::PACK_PREFIX))
            .await?,
    );
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RestoreStatus, StorageClass};

    fn meta(pairs: &[(&str, &str)], size: u64) -> ObjectMeta {
        ObjectMeta {
            key: "data/x/1".into(),
            size,
            storage_class: StorageClass::Standard,
            version_id: None,
            etag: None,
            checksum: None,
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            restore: RestoreStatus::NotArchived,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn good(path: &str, size: &str) -> Vec<(&'static str, String)> {
        vec![
            ("coldtier-path", path.to_string()),
            ("coldtier-file-id", ID.to_string()),
            ("coldtier-size", size.to_string()),
            ("coldtier-mtime-ns", "1700000000000000000".to_string()),
            ("coldtier-mode", "100644".to_string()),
            ("coldtier-uid", "0".to_string()),
            ("coldtier-gid", "0".to_string()),
        ]
    }

    fn m(v: &[(&'static str, String)], size: u64) -> ObjectMeta {
        let p: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        meta(&p, size)
    }

    #[test]
    fn paths_that_escape_source_are_refused() {
        for p in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a/./b",
            "a//b",
            "",
            "..",
            "a\nb",
            "a\0b",
        ] {
            assert!(check_meta_path(p).is_err(), "{p:?} accepted");
        }
        for p in [
            "a",
            "dir/file.bin",
            "a..b/c",
            ".hidden/x",
            "name with space",
        ] {
            assert_eq!(check_meta_path(p), Ok(()), "{p:?}");
        }
        assert!(check_meta_path(&"a/".repeat(3000)).is_err());
    }

    #[test]
    fn hostile_metadata_is_rejected_with_a_reason() {
        assert!(genealogy(&m(&good("dir/f", "5"), 5)).is_ok());
        type Case = (Vec<(&'static str, String)>, u64, &'static str);
        let cases: Vec<Case> = vec![
            (good("../../etc/passwd", "5"), 5, "escapes SOURCE"),
            (good("/etc/passwd", "5"), 5, "absolute"),
            (
                good("f", "99999999999999999999999"),
                5,
                "not a plausible size",
            ),
            (good("f", "18446744073709551615"), 5, "not a plausible size"),
            (good("f", "-1"), 5, "not a plausible size"),
            (good("f", "6"), 5, "the object is 5"),
            (
                {
                    let mut v = good("f", "5");
                    v[3].1 = "yesterday".into();
                    v
                },
                5,
                "not a number",
            ),
            (
                {
                    let mut v = good("f", "5");
                    v[1].1 = "../../x".into();
                    v
                },
                5,
                "not 32 hex",
            ),
            (
                {
                    let mut v = good("f", "5");
                    v[4].1 = "rwxr-xr-x".into();
                    v
                },
                5,
                "coldtier-mode",
            ),
            (
                {
                    let mut v = good("f", "5");
                    v.remove(0);
                    v
                },
                5,
                "missing",
            ),
        ];
        for (v, size, want) in cases {
            let e = genealogy(&m(&v, size)).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }
}
