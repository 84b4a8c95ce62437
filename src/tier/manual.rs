//! What an operator does to one file by hand (`coldtier status`, `pin`, `unpin`, `release`,
//! and what a `recall` did: the recall itself is `bulk`): the engine's side, in domain terms. The daemon's handler resolves paths,
//! checks who may ask, runs these over many files and turns the results into replies.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use serde_json::json;

use crate::catalog::{FileRow, FileState};
use crate::fs::backing;

use super::context::{ns_of, StepError, Tiering};
use super::marks;
use super::migrate::Outcome;
use super::record::Change;
use super::state::Action;
use super::stub::new_file_id;

/// A file's tiering state as `coldtier status` shows it: from the file's records and the
/// catalog, never from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    pub state: FileState,
    /// The logical size (a stub's from its record).
    pub size: u64,
    pub pinned: bool,
    pub file_id: Option<String>,
    /// The full key (with the store's prefix) of the object holding the content.
    pub object_key: Option<String>,
    pub version_id: Option<String>,
    pub storage_class: Option<String>,
    /// "ALGO:VALUE".
    pub checksum: Option<String>,
    /// 512-byte blocks the file holds on disk.
    pub blocks: u64,
    /// An archive restore is under way (from the catalog's state).
    pub restore_in_progress: bool,
    /// A pack member: the offset of its bytes in the pack.
    pub pack_offset: Option<u64>,
}

/// What `release` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Stubbed now: the logical size and the bytes freed.
    Now {
        bytes: u64,
        freed: u64,
    },
    AlreadyStub,
}

/// What `recall` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recalled {
    /// The data came back: the logical size.
    Now { bytes: u64 },
    /// Not a stub: its data is local already.
    AlreadyLocal,
}

fn io_text(e: backing::Errno) -> String {
    std::io::Error::from_raw_os_error(e.0).to_string()
}

impl Tiering {
    /// The status of the file at `rel`, open as `f`.
    pub fn status(&self, f: &File) -> Result<FileStatus, StepError> {
        let st = backing::stat_fd(f.as_fd())?;
        let (state, pinned, row, rec) = self.state_of(f.as_fd());
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
        Ok(FileStatus {
            state,
            size,
            pinned,
            file_id: row
                .as_ref()
                .map(|r| r.file_id.clone())
                .or_else(|| rec_ok.map(|r| r.file_id.clone())),
            object_key: rec_ok.map(|r| self.full_key(&r.object_key)),
            version_id: rec_ok.and_then(|r| r.version_id.clone()),
            storage_class: rec_ok.map(|r| r.storage_class.clone()),
            checksum: rec_ok.map(|r| format!("{}:{}", r.checksum_algo, r.checksum)),
            blocks: st.blocks,
            restore_in_progress: state == FileState::RestorePending,
            pack_offset: rec_ok.and_then(|r| r.pack.as_ref()).map(|p| p.offset),
        })
    }

    /// Pins (`on`) or unpins the file at `rel` (relative to the source), open as `f`: a
    /// pinned file is never tiered. Returns the file's state; `None` when there was nothing
    /// to do (unpinning a file the catalog does not know).
    pub fn set_pinned(
        &self,
        rel: &Path,
        f: &File,
        on: bool,
    ) -> Result<Option<FileState>, StepError> {
        let fd = f.as_fd();
        let st = backing::stat_fd(fd)?;
        // Under the file's gate: a stub step reads the pin under it (and a copy of a new
        // file sets its id under it), so neither misses this one.
        let _held = self.gate.lock(self.node_id(&st));
        let (state, _, row, rec) = self.state_of(fd);
        let mut row = match (row, rec) {
            (Some(r), _) => r,
            (None, Some(rec)) => self.row_for(&rec, fd, state),
            (None, None) => {
                if !on {
                    return Ok(None);
                }
                let id = match marks::file_id(fd)? {
                    Some(i) => i,
                    None => {
                        let i =
                            new_file_id().map_err(|e| StepError::new(libc::EIO, e.to_string()))?;
                        marks::set_file_id(fd, &i).map_err(|e| {
                            StepError::new(e.0, format!("cannot mark the file: {}", io_text(e)))
                        })?;
                        i
                    }
                };
                let mut r = FileRow::new(id, rel.to_string_lossy());
                r.size = st.size;
                r.mtime_ns = ns_of(st.mtime);
                r.ctime_ns = ns_of(st.ctime);
                r.ino = st.ino;
                r
            }
        };
        row.path = rel.to_string_lossy().into_owned();
        let action = if on { Action::Pin } else { Action::Unpin };
        self.record(&mut row, Change::of(action, json!({})))?;
        Ok(Some(state))
    }

    /// Frees the data of the premigrated file open as `f` now (its copy is proven).
    pub fn release(&self, f: &File) -> Result<Released, StepError> {
        let fd = f.as_fd();
        let Some(rec) = self.releasable(fd)? else {
            return Ok(Released::AlreadyStub);
        };
        let st = backing::stat_fd(fd)?;
        let row = self.row_for(&rec, fd, FileState::Premigrated);
        let expect = (row.size, row.mtime_ns, row.ctime_ns);
        let node = self.node_id(&st);
        // The copy is still there (proven when it was made, maybe long ago); else it is
        // dropped and nothing freed. (A plain thread: the control socket's.)
        if let Some(why) = self.rt.block_on(self.copy_still_there(&rec))? {
            self.drop_gone_copy(node, f, &rec, &why)?;
            return Err(StepError::new(
                libc::ENODATA,
                format!("not released: {why}; the file keeps its data, and `coldtier migrate` copies it again"),
            ));
        }
        // policy.copies holds for a release by hand too.
        self.rt.block_on(self.ensure_copies(f, &rec, &row.path))?;
        match self.stub_step(node, f, &rec, expect, Action::Release, (Vec::new(), false))? {
            Outcome::Stubbed(freed) => Ok(Released::Now {
                bytes: rec.size,
                freed,
            }),
            Outcome::Busy => Err(StepError::new(
                libc::EBUSY,
                "the file is open: close it and try again",
            )),
            Outcome::Changed => Err(StepError::new(
                libc::ESTALE,
                "the file changed since it was copied: its copy is superseded; migrate it again",
            )),
            o => Err(StepError::new(
                libc::EAGAIN,
                format!("not released ({o:?})"),
            )),
        }
    }

    /// The copy record of a file a release may stub: None for a stub already; an error
    /// for a file without a verified copy or one chattr makes unchangeable.
    fn releasable(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Option<crate::tier::stub::StubRecord>, StepError> {
        if marks::record(fd, marks::STUB)?.is_some() {
            return Ok(None);
        }
        let Some(rec) = marks::record(fd, marks::COPY)? else {
            return Err(StepError::new(
                libc::ENODATA,
                "no verified copy exists: run `coldtier migrate` (copy-only or stub) first",
            ));
        };
        super::migrate::refuse_unchangeable(fd)?;
        Ok(Some(rec))
    }

    /// What [`Tiering::release`] would do with `f`, changing nothing: None for a stub;
    /// else (size, bytes it would free, "would release" or a note), or the error a release
    /// would give (no copy, pinned, immutable, open, changed since its copy, its copy gone
    /// from the store).
    pub fn release_check(&self, f: &File) -> Result<Option<(u64, u64, String)>, StepError> {
        let fd = f.as_fd();
        let Some(rec) = self.releasable(fd)? else {
            return Ok(None);
        };
        let st = backing::stat_fd(fd)?;
        let row = self.row_for(&rec, fd, FileState::Premigrated);
        if row.pinned {
            return Err(StepError::new(
                libc::EPERM,
                "the file is pinned: its data is never freed",
            ));
        }
        if self.gate.lock(self.node_id(&st)).opens().handles > 0 {
            return Err(StepError::new(
                libc::EBUSY,
                "the file is open: close it and try again",
            ));
        }
        if st.size != row.size {
            return Err(StepError::new(
                libc::ESTALE,
                "the file changed since it was copied: a release would supersede its copy",
            ));
        }
        // The store is asked, as a release would (a HEAD: nothing changes).
        if let Some(why) = self.rt.block_on(self.copy_still_there(&rec))? {
            return Err(StepError::new(
                libc::ENODATA,
                format!("would not be released: {why}"),
            ));
        }
        let note = if (ns_of(st.mtime), ns_of(st.ctime)) != (row.mtime_ns, row.ctime_ns) {
            "would release (its times moved since the copy: its content is compared first)"
        } else {
            "would release"
        };
        Ok(Some((rec.size, st.blocks * 512, note.to_string())))
    }
}
