//! The records tiering keeps on backing files, in `trusted.coldtier.*` xattrs (invisible
//! and untouchable through the mount; users cannot forge them):
//!
//! | xattr | holds | means |
//! |---|---|---|
//! | `trusted.coldtier.id` | the file id (32 hex digits) | the file's identity, set at its first copy; survives renames and state changes |
//! | `trusted.coldtier.copy` | a [`StubRecord`] | a verified copy of exactly this content is in the store (premigrated) |
//! | `trusted.coldtier.stub` | a [`StubRecord`] | the data is NOT local: the store holds it (a stub, or a recall not finished) |
//!
//! `stub` wins: a file that has it is a stub whatever its backing size (a crash in the
//! middle of a recall leaves a partly written file with the stub record: it is recalled
//! again, never shown as complete).
//!
//! A stub record is written in its compact form when it has one (a pack member's, or that
//! of a file with a whole object of its own: [`StubRecord::encode_compact`]), and the stub
//! then has no `id` xattr: the record names the file, and alone it stays inside a 256-byte
//! ext4 inode, so the stub costs no block ([`set_stub`]; docs/architecture.md "Compact
//! stub records"). [`file_id`] reads the id from the records when the `id` xattr is not
//! there, and [`unstub`] puts it back before the stub record goes.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use crate::fs::backing::{self, Errno, SysResult};
use crate::tier::stub::{is_valid_file_id, FileFacts, StubRecord};

pub const STUB: &CStr = c"trusted.coldtier.stub";
pub const COPY: &CStr = c"trusted.coldtier.copy";
pub const ID: &CStr = c"trusted.coldtier.id";

/// Whether the file may have any of coldtier's xattrs: false only when one listxattr
/// shows none (most files of a tree: a scan reads their records with one call instead of
/// three). A list that does not fit, or any error, says maybe.
pub fn may_have_marks(fd: BorrowedFd<'_>) -> bool {
    let mut names = [0u8; 1024];
    match backing::listxattr_fd(fd, &mut names) {
        Ok(n) => names[..n]
            .split(|b| *b == 0)
            .any(crate::fs::overlay::is_private_xattr),
        Err(_) => true,
    }
}

/// Which of coldtier's xattrs a file has, from one listxattr ([`present`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Present {
    pub id: bool,
    pub copy: bool,
    pub stub: bool,
}

impl Present {
    /// Whether the file has any of them.
    pub fn any(self) -> bool {
        self.id || self.copy || self.stub
    }
}

/// Which of the `id`, `copy` and `stub` xattrs the file (`fd` opened for reading or
/// writing: one flistxattr) has; `None`
/// when the list cannot be read whole (the caller then asks for each). A caller holding
/// the file's gate may act on the answer: only coldtier changes these xattrs, under the
/// gate (users cannot reach them through the mount).
pub fn present(fd: BorrowedFd<'_>) -> Option<Present> {
    let mut names = [0u8; 1024];
    let n = backing::flistxattr(fd, &mut names).ok()?;
    let mut p = Present::default();
    for name in names[..n].split(|b| *b == 0) {
        if name == ID.to_bytes() {
            p.id = true;
        } else if name == COPY.to_bytes() {
            p.copy = true;
        } else if name == STUB.to_bytes() {
            p.stub = true;
        }
    }
    Some(p)
}

/// Reads and decodes a record xattr. A record that does not decode is an error (EIO):
/// never guessed at, never ignored.
pub fn record(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<Option<StubRecord>> {
    let Some(bytes) = backing::getxattr_all(fd, name)? else {
        return Ok(None);
    };
    let decoded = if StubRecord::is_compact_encoding(&bytes) && name == STUB {
        // The compact form leaves the ctime and the inode number to the file.
        let st = backing::stat_fd(fd)?;
        let facts = FileFacts {
            ctime_ns: super::context::ns_of(st.ctime),
            ino: st.ino,
        };
        StubRecord::decode_compact(&bytes, facts)
    } else {
        StubRecord::decode(&bytes)
    };
    decoded.map(Some).map_err(|e| {
        tracing::error!("{}: undecodable record: {e}", name.to_string_lossy());
        Errno(libc::EIO)
    })
}

/// Writes a record in its full form (the `copy` record, or a `stub` record that must keep
/// everything: see [`set_stub`] for the usual way to write one).
pub fn set_record(fd: BorrowedFd<'_>, name: &CStr, rec: &StubRecord) -> SysResult<()> {
    let bytes = rec.encode().map_err(|e| {
        tracing::error!("refusing to write an invalid record: {e}");
        Errno(libc::EINVAL)
    })?;
    backing::setxattr_fd(fd, name, &bytes, 0)
}

/// Writes the stub record: compact when the record has a compact form, and then the `id`
/// xattr goes first, so that the record takes the room it had inside the inode (ext4 keeps
/// an xattr where it is written: one written while the id is there would go to a block and
/// stay there). In between (`between` runs there: a failpoint), the file keeps its `copy`
/// record, which names it too.
pub fn set_stub(fd: BorrowedFd<'_>, rec: &StubRecord, between: impl FnOnce()) -> SysResult<()> {
    set_stub_known(fd, rec, true, between)
}

/// [`set_stub`] by a caller that knows (`may_have_id` false: from [`present`], under the
/// gate) that the file has no `id` xattr: the removal that would find none is not made.
pub fn set_stub_known(
    fd: BorrowedFd<'_>,
    rec: &StubRecord,
    may_have_id: bool,
    between: impl FnOnce(),
) -> SysResult<()> {
    match rec.encode_compact() {
        Some(bytes) => {
            if may_have_id {
                remove(fd, ID)?;
            }
            between();
            backing::setxattr_fd(fd, STUB, &bytes, 0)
        }
        // A full record keeps the `id` xattr beside it (a file stubbed straight from its
        // copy has none yet).
        None => {
            if may_have_id {
                ensure_file_id(fd, &rec.file_id)?;
            } else {
                set_file_id(fd, &rec.file_id)?;
            }
            set_record(fd, STUB, rec)
        }
    }
}

/// Whether the file's stub record is a pack member's in the full encoding (one that may
/// have a compact form).
pub fn has_full_member_stub(fd: BorrowedFd<'_>) -> bool {
    backing::getxattr_all(fd, STUB)
        .ok()
        .flatten()
        .is_some_and(|b| StubRecord::is_full_member_encoding(&b))
}

/// Removes the stub record of a file that stays tracked (recalled, or truncated through the
/// mount): the `id` xattr a compact stub lacks is put back first.
pub fn unstub(fd: BorrowedFd<'_>, file_id: &str) -> SysResult<()> {
    ensure_file_id(fd, file_id)?;
    remove(fd, STUB)
}

/// Sets the `id` xattr unless it is there.
pub fn ensure_file_id(fd: BorrowedFd<'_>, id: &str) -> SysResult<()> {
    match backing::getxattr_all(fd, ID)? {
        Some(_) => Ok(()),
        None => set_file_id(fd, id),
    }
}

/// Removes an xattr; one that is not there is fine.
pub fn remove(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    match backing::removexattr_fd(fd, name) {
        Ok(()) | Err(Errno(libc::ENODATA)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The file id, if the file has a valid one: its `id` xattr, else (a compact stub, or a file
/// cut between [`set_stub`]'s two steps) the id its stub or copy record names.
pub fn file_id(fd: BorrowedFd<'_>) -> SysResult<Option<String>> {
    Ok(file_id_from(fd)?.map(|(id, _)| id))
}

/// [`file_id`], and whether it came from the `id` xattr (false: from a record).
pub fn file_id_from(fd: BorrowedFd<'_>) -> SysResult<Option<(String, bool)>> {
    if let Some(b) = backing::getxattr_all(fd, ID)? {
        return Ok(valid_id(b).map(|id| (id, true)));
    }
    for name in [STUB, COPY] {
        if let Some(rec) = record(fd, name)? {
            return Ok(Some((rec.file_id, false)));
        }
    }
    Ok(None)
}

/// The `id` xattr alone, if valid (a caller that reads the records anyway: [`file_id`]
/// without its second and third reads).
pub fn id_xattr(fd: BorrowedFd<'_>) -> SysResult<Option<String>> {
    Ok(backing::getxattr_all(fd, ID)?.and_then(valid_id))
}

fn valid_id(b: Vec<u8>) -> Option<String> {
    String::from_utf8(b).ok().filter(|s| is_valid_file_id(s))
}

pub fn set_file_id(fd: BorrowedFd<'_>, id: &str) -> SysResult<()> {
    backing::setxattr_fd(fd, ID, id.as_bytes(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// One listxattr tells which records a file has; other xattrs are not mistaken for
    /// them.
    #[test]
    fn present_names_the_records_a_file_has() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        let fd = f.as_fd();
        assert_eq!(present(fd), Some(Present::default()));
        assert!(!Present::default().any());
        backing::setxattr_fd(fd, c"user.other", b"x", 0).unwrap();
        assert_eq!(present(fd), Some(Present::default()));
        set_file_id(fd, "0123456789abcdef0123456789abcdef").unwrap();
        let p = present(fd).unwrap();
        assert_eq!((p.id, p.copy, p.stub), (true, false, false));
        backing::setxattr_fd(fd, COPY, b"{}", 0).unwrap();
        backing::setxattr_fd(fd, STUB, b"{}", 0).unwrap();
        remove(fd, ID).unwrap();
        let p = present(fd).unwrap();
        assert_eq!((p.id, p.copy, p.stub), (false, true, true));
        assert!(p.any());
    }
}
