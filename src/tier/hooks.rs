//! What the overlay tells the engine ([`TierHooks`]): stub detection, recall on open and
//! on first data access, supersede on write, rename, link and delete tracking; and the
//! checks of a copy against the file's content.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use serde_json::json;

use crate::catalog::{CatalogError, EventKind, FileState};
use crate::fs::backing::{self, Stat, SysResult};
use crate::fs::overlay::{DataReady, StubRead, TierHooks};
use crate::store::ChecksumAlgo;
use crate::tier::marks;
use crate::tier::state::Action;
use crate::tier::stub::StubRecord;

use super::context::{ns_of, StepError, Tiering};
use super::record::Change;

/// The names in directory `dir` whose inode number is `ino` (from the directory entries).
pub(super) fn same_dir_names(dir: BorrowedFd<'_>, ino: u64) -> Vec<std::ffi::OsString> {
    let Ok(d) = backing::open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = backing::for_each_dirent(d.as_fd(), &mut vec![0u8; 64 * 1024], |r| {
        if r.ino == ino && r.kind != libc::DT_DIR {
            out.push(r.name.to_os_string());
        }
    });
    out
}

/// Whether the data of `file` (open for reading) has the checksum its record names (the
/// copy's): reads and hashes the whole file.
pub fn content_matches(file: &File, rec: &StubRecord) -> Result<bool, StepError> {
    let algo: ChecksumAlgo = rec
        .checksum_algo
        .parse()
        .map_err(|e: String| StepError::new(libc::EIO, e))?;
    let size = backing::stat_fd(file.as_fd())?.size;
    if size != rec.size {
        return Ok(false);
    }
    if let Some(e) = &rec.extents {
        // Data where the copy has a hole is a change (even zeros written there: the
        // content would be the same, but the check stays simple and safe).
        let now = backing::data_extents(file.as_fd(), size)?;
        let inside = |&(o, l): &(u64, u64)| e.0.iter().any(|&(eo, el)| o >= eo && o + l <= eo + el);
        if !now.iter().all(inside) {
            return Ok(false);
        }
    }
    let sum = crate::store::checksum_mapped(file, rec.extents.as_ref(), rec.object_size(), algo)
        .map_err(|e| StepError::new(e.errno.unwrap_or(libc::EIO), e.message))?;
    Ok(sum.algo == algo && sum.base64() == rec.checksum)
}

impl TierHooks for Tiering {
    fn stub_view(&self, fd: BorrowedFd<'_>) -> SysResult<Option<(u64, i64)>> {
        Ok(marks::record(fd, marks::STUB)?.map(|r| (r.size, r.mtime_ns)))
    }

    fn stub_layout(&self, fd: BorrowedFd<'_>) -> SysResult<Option<crate::fs::overlay::StubLayout>> {
        Ok(marks::record(fd, marks::STUB)?.map(|r| (r.size, r.extents.map(|e| e.0))))
    }

    fn times_set(&self, fd: BorrowedFd<'_>) {
        let Ok(Some(mut rec)) = marks::record(fd, marks::STUB) else {
            return;
        };
        let Ok(st) = backing::stat_fd(fd) else { return };
        if rec.mtime_ns != ns_of(st.mtime) {
            rec.set_mtime(ns_of(st.mtime));
            if let Err(e) = marks::set_stub(fd, &rec, || {}) {
                tracing::error!(file_id = %rec.file_id, "cannot keep the new mtime in the stub record: {e:?}");
            }
        }
    }

    fn before_open(&self, ino: u64, fd: BorrowedFd<'_>, flags: i32) -> SysResult<DataReady> {
        // An open fetches nothing: data is recalled by the first operation that needs it
        // (read, write, copy_file_range; `before_data`). An open that reads nothing (`touch`,
        // smbd's and ganesha's attribute queries, `file` managers' probes) costs no GET.
        let truncate = flags & libc::O_ACCMODE != libc::O_RDONLY && flags & libc::O_TRUNC != 0;
        // A use, whatever atime does (node ids of the source's own file system are its
        // inode numbers; files of other file systems are never tiered).
        if ino < crate::fs::inodes::FOREIGN_BASE {
            self.usage.note(ino, super::usage::now_ns());
        }
        if let Some(w) = self.in_flight(ino) {
            // A recall running: a truncating open waits for it (then truncates a resident
            // file), any other is opened as a stub whose first data operation joins it.
            return Ok(if truncate {
                DataReady::Wait(w)
            } else {
                DataReady::Lazy
            });
        }
        if let Some(rec) = marks::record(fd, marks::STUB)? {
            if truncate {
                self.truncate_stub(fd, &rec)?;
                return Ok(DataReady::Now);
            }
            return Ok(DataReady::Lazy);
        }
        // A premigrated file opened for writing keeps its copy: only a change of its data
        // gives it up, found when the last writer closes (`writer_closed`) or, at the
        // latest, by the stub step.
        Ok(DataReady::Now)
    }

    fn before_read(
        &self,
        ino: u64,
        fd: BorrowedFd<'_>,
        off: u64,
        len: u64,
        who: crate::fs::privs::Requester,
    ) -> SysResult<StubRead> {
        self.read_stub(ino, fd, off, len, who)
    }

    fn before_copy_from(
        &self,
        ino: u64,
        fd: BorrowedFd<'_>,
        who: crate::fs::privs::Requester,
    ) -> SysResult<()> {
        self.copy_from_stub(ino, fd, who)
    }

    fn before_data(&self, ino: u64, fd: BorrowedFd<'_>) -> SysResult<DataReady> {
        if let Some(w) = self.in_flight(ino) {
            return Ok(DataReady::Wait(w));
        }
        match marks::record(fd, marks::STUB)? {
            Some(rec) => {
                let w = backing::reopen(fd, libc::O_RDWR)?;
                let rx = self.recall_rx(ino, w, rec);
                Ok(DataReady::Wait(self.waiter(rx)))
            }
            None => Ok(DataReady::Now),
        }
    }

    fn writer_closed(&self, ino: u64, fd: BorrowedFd<'_>) {
        let Ok(Some(rec)) = marks::record(fd, marks::COPY) else {
            return;
        };
        let Ok(st) = backing::stat_fd(fd) else { return };
        if st.size != rec.size {
            if let Err(e) = self.supersede(fd, &rec, Action::WriteOrTruncate, "written") {
                tracing::error!(file_id = %rec.file_id, "cannot give up a changed file's copy: {e:?}");
            }
            self.reset_mark(ino);
            return;
        }
        let row = self.row_for(&rec, fd, FileState::Premigrated);
        if (ns_of(st.mtime), ns_of(st.ctime)) == (row.mtime_ns, row.ctime_ns) {
            return;
        }
        // Same size, new times: written, or only touched. Its content decides, read in
        // the background (the close must not wait for it).
        let Ok(file) = backing::reopen(fd, libc::O_RDONLY) else {
            return;
        };
        let expect = (row.size, row.mtime_ns, row.ctime_ns);
        self.spawn_check(move |me| {
            let file = File::from(file);
            match me.copy_still_good(&file, &rec, expect) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let _held = me.gate.lock(ino);
                    // Re-checked under the gate: still no writer, still that record.
                    if me.gate_writers(&_held) == 0
                        && marks::record(file.as_fd(), marks::COPY)
                            .ok()
                            .flatten()
                            .is_some_and(|r| r.object_key == rec.object_key)
                    {
                        if let Err(e) = me.supersede(
                            file.as_fd(),
                            &rec,
                            Action::WriteOrTruncate,
                            "written",
                        ) {
                            tracing::error!(file_id = %rec.file_id, "cannot give up a changed file's copy: {e:?}");
                        }
                        me.reset_mark(ino);
                    }
                }
                Err(e) => tracing::warn!(file_id = %rec.file_id, "cannot check a written file against its copy: {e}"),
            }
        });
    }

    fn before_truncate(&self, ino: u64, fd: BorrowedFd<'_>, size: u64) -> SysResult<DataReady> {
        if let Some(w) = self.in_flight(ino) {
            return Ok(DataReady::Wait(w));
        }
        if let Some(rec) = marks::record(fd, marks::STUB)? {
            if size == 0 {
                self.truncate_stub(fd, &rec)?;
                return Ok(DataReady::Now);
            }
            let w = backing::reopen(fd, libc::O_RDWR)?;
            let rx = self.recall_rx(ino, w, rec);
            return Ok(DataReady::Wait(self.waiter(rx)));
        }
        if let Some(rec) = marks::record(fd, marks::COPY)? {
            // A truncate to the size the file has changes no data.
            if backing::stat_fd(fd)?.size != size {
                self.supersede(fd, &rec, Action::WriteOrTruncate, "truncated")?;
            }
        }
        Ok(DataReady::Now)
    }

    fn tracked(&self, fd: BorrowedFd<'_>) -> Option<String> {
        marks::file_id(fd).ok().flatten()
    }

    fn unlinked(&self, file_id: &str) {
        let mut row = match self.catalog.file_by_id(file_id) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return tracing::error!("catalog: {e}"),
        };
        let detail = json!({"object_key": row.object_key, "version_id": row.version_id});
        let obj = row.object_key.clone().zip(Some(row.version_id.clone()));
        if let Err(e) = self.record(&mut row, Change::of(Action::Delete, detail)) {
            tracing::error!(path = %row.path, "catalog: cannot record DELETED: {e}");
        }
        if let Some((key, version)) = obj {
            self.tag_later(key, version, "deleted");
        }
    }

    fn linked(&self, file_id: &str, newdir: BorrowedFd<'_>, newname: &OsStr) {
        let Some(rel) = self.rel_in(newdir, newname) else {
            return;
        };
        if let Err(e) = self.catalog.append_event(
            Some(file_id),
            Some(&rel),
            EventKind::Linked,
            json!({"path": rel}),
        ) {
            tracing::error!("catalog: cannot record LINKED: {e}");
        }
    }

    fn name_removed(&self, file_id: &str, dir: BorrowedFd<'_>, name: &OsStr) {
        let Some(removed) = self.rel_in(dir, name) else {
            return;
        };
        let row = match self.catalog.file_by_id(file_id) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return tracing::error!("catalog: {e}"),
        };
        if row.path != removed {
            return; // the catalog names another of its names already
        }
        // Another name: one it was linked under through the mount, else one in the same
        // directory, else (in the background) one anywhere in the tree.
        let is_it = |rel: &str| {
            backing::open_beneath(self.root(), Path::new(rel), libc::O_PATH | libc::O_NOFOLLOW)
                .ok()
                .is_some_and(|fd| {
                    marks::file_id(fd.as_fd()).ok().flatten().as_deref() == Some(file_id)
                })
        };
        let linked = self
            .catalog
            .history(file_id)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .filter(|e| e.kind == EventKind::Linked)
            .filter_map(|e| e.path)
            .filter(|p| *p != removed);
        let mut found: Option<String> = linked.into_iter().find(|p| is_it(p));
        if found.is_none() {
            found = same_dir_names(dir, row.ino)
                .into_iter()
                .filter_map(|n| self.rel_in(dir, &n))
                .find(|p| *p != removed && is_it(p));
        }
        match found {
            Some(p) => self.renamed_to(file_id, &p),
            None => {
                let id = file_id.to_string();
                self.spawn_check(move |me| {
                    let mut hit: Option<String> = None;
                    let _ = me.walk(Path::new(""), &mut |rel, st, d, n| {
                        if hit.is_none() && st.ino == row.ino {
                            if let Ok(fd) = backing::open_path_at(d, n) {
                                if marks::file_id(fd.as_fd()).ok().flatten().as_deref() == Some(&id) {
                                    hit = rel.to_str().map(str::to_string);
                                }
                            }
                        }
                    });
                    match hit {
                        Some(p) => me.renamed_to(&id, &p),
                        None => tracing::warn!(file_id = %id, "a removed name's other names were not found"),
                    }
                });
            }
        }
    }

    fn dir_renamed(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        newdir: BorrowedFd<'_>,
        newname: &OsStr,
    ) {
        let (Some(old), Some(new)) = (self.rel_in(dir, name), self.rel_in(newdir, newname)) else {
            return;
        };
        match self.catalog.rename_prefix(&old, &new) {
            Ok(n) if n > 0 => tracing::debug!(old, new, files = n, "directory renamed"),
            Ok(_) => {}
            Err(e) => tracing::error!("catalog: cannot record the rename of {old} to {new}: {e}"),
        }
    }

    fn renamed(&self, file_id: &str, newdir: BorrowedFd<'_>, newname: &OsStr) {
        let Some(rel) = self.rel_in(newdir, newname) else {
            return;
        };
        self.renamed_to(file_id, &rel);
    }
}

impl Tiering {
    /// Supersedes a premigrated file's copy (its content is about to change): drops the
    /// copy record and records SUPERSEDED. Called with the file's gate held.
    pub(crate) fn supersede(
        &self,
        fd: BorrowedFd<'_>,
        rec: &StubRecord,
        action: Action,
        why: &str,
    ) -> SysResult<()> {
        // The file stays tracked: a compact stub's id goes back into its own xattr.
        marks::ensure_file_id(fd, &rec.file_id)?;
        marks::remove(fd, marks::COPY)?;
        marks::remove(fd, marks::STUB)?;
        let mut row = self.row_for(rec, fd, FileState::Premigrated);
        let detail = json!({
            "object_key": rec.object_key,
            "version_id": rec.version_id,
            "reason": why,
        });
        row.object_key = None;
        row.version_id = None;
        row.checksum = None;
        row.checksum_algo = None;
        row.md5 = None;
        row.storage_class = None;
        if let Err(e) = self.record(&mut row, Change::of(action, detail)) {
            tracing::error!(path = %row.path, "catalog: cannot record SUPERSEDED: {e}");
        }
        self.tag_later(rec.object_key.clone(), rec.version_id.clone(), "superseded");
        Ok(())
    }

    /// O_TRUNC (or truncate to 0) of a stub: the old content is not needed.
    pub(super) fn truncate_stub(&self, fd: BorrowedFd<'_>, rec: &StubRecord) -> SysResult<()> {
        let w = backing::reopen(fd, libc::O_RDWR)?;
        backing::ftruncate(w.as_fd(), 0)?;
        self.supersede(w.as_fd(), rec, Action::TruncateToZeroOfStub, "truncated")?;
        backing::fsync(w.as_fd(), false)
    }

    pub(super) fn gate_writers(&self, held: &crate::fs::gate::Held<'_>) -> u32 {
        held.opens().writers
    }

    /// Whether premigrated file `file` still holds the content its copy has: `expect` is
    /// the (size, mtime, ctime) it had with its copy record. Unchanged: those as they are
    /// now (`Some`). Same size, other times (touched, renamed, chmod, xattrs, or written
    /// and put back to the same size): the file is read and hashed, and if its checksum
    /// is the copy's, the times it had while it was read are the new ones to expect (and
    /// the catalog row learns them). Another size, or other content: `None`.
    pub fn copy_still_good(
        &self,
        file: &File,
        rec: &StubRecord,
        expect: (u64, i64, i64),
    ) -> Result<Option<(u64, i64, i64)>, StepError> {
        let times = |st: &Stat| (st.size, ns_of(st.mtime), ns_of(st.ctime));
        let before = backing::stat_fd(file.as_fd())?;
        if times(&before) == expect {
            return Ok(Some(expect));
        }
        if before.size != rec.size || before.size != expect.0 {
            return Ok(None);
        }
        let same = content_matches(file, rec)?;
        let after = backing::stat_fd(file.as_fd())?;
        if times(&after) != times(&before) {
            // Changing while it was read: not proven either way; the caller treats it
            // as changed.
            return Ok(None);
        }
        if !same {
            return Ok(None);
        }
        let now = times(&before);
        if let Err(e) = self.catalog.rebaseline(&rec.file_id, now.1, now.2) {
            tracing::warn!(file_id = %rec.file_id, "catalog: {e}");
        }
        Ok(Some(now))
    }

    /// The catalog's path of tracked file `file_id` is `rel` now.
    pub(super) fn renamed_to(&self, file_id: &str, rel: &str) {
        let rel = rel.to_string();
        match self.catalog.rename_path(file_id, &rel) {
            Ok(()) | Err(CatalogError::NoSuchFile(_)) => {}
            Err(CatalogError::PathInUse { .. }) => {
                // An exchange in flight (or a stale row): park the other row, then retry.
                self.claim_path(file_id, &rel);
                if let Err(e) = self.catalog.rename_path(file_id, &rel) {
                    tracing::error!("catalog: cannot record the rename to {rel}: {e}");
                }
            }
            Err(e) => tracing::error!("catalog: cannot record the rename to {rel}: {e}"),
        }
    }
}
