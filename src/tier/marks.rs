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

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use crate::fs::backing::{self, Errno, SysResult};
use crate::tier::stub::{is_valid_file_id, StubRecord};

pub const STUB: &CStr = c"trusted.coldtier.stub";
pub const COPY: &CStr = c"trusted.coldtier.copy";
pub const ID: &CStr = c"trusted.coldtier.id";

/// Reads and decodes a record xattr. A record that does not decode is an error (EIO):
/// never guessed at, never ignored.
pub fn record(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<Option<StubRecord>> {
    match backing::getxattr_all(fd, name)? {
        None => Ok(None),
        Some(bytes) => StubRecord::decode(&bytes).map(Some).map_err(|e| {
            tracing::error!("{}: undecodable record: {e}", name.to_string_lossy());
            Errno(libc::EIO)
        }),
    }
}

pub fn set_record(fd: BorrowedFd<'_>, name: &CStr, rec: &StubRecord) -> SysResult<()> {
    let bytes = rec.encode().map_err(|e| {
        tracing::error!("refusing to write an invalid record: {e}");
        Errno(libc::EINVAL)
    })?;
    backing::setxattr_fd(fd, name, &bytes, 0)
}

/// Removes an xattr; one that is not there is fine.
pub fn remove(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    match backing::removexattr_fd(fd, name) {
        Ok(()) | Err(Errno(libc::ENODATA)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The file id, if the file has a valid one.
pub fn file_id(fd: BorrowedFd<'_>) -> SysResult<Option<String>> {
    Ok(backing::getxattr_all(fd, ID)?
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| is_valid_file_id(s)))
}

pub fn set_file_id(fd: BorrowedFd<'_>, id: &str) -> SysResult<()> {
    backing::setxattr_fd(fd, ID, id.as_bytes(), 0)
}
