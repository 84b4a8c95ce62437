//! CatalogError: every way a catalog call can fail, with what was being done.

use std::path::PathBuf;

/// A broken link in the event hash chain, as found by [`super::Catalog::verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainError {
    /// The id of the first event whose link does not hold (for a deleted row: the row
    /// after the gap).
    pub first_bad_id: i64,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event chain broken at event {}: {}",
            self.first_bad_id, self.reason
        )
    }
}

impl std::error::Error for ChainError {}

/// The catalog module's one error type.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: cannot create its directory: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The fsync that makes commits durable failed: what was committed may not be on disk.
    #[error("catalog {path}: cannot sync the write-ahead log: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// SQLite said no; `context` says what the catalog was doing.
    #[error("catalog: {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "catalog {path} has schema version {found}, newer than this coldtier supports \
         ({supported}); run a newer coldtier or restore an older catalog"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("{path} is not a coldtier catalog: {reason}")]
    NotACatalog { path: PathBuf, reason: String },

    #[error(
        "catalog {path}: SQLite kept journal_mode `{mode}`, but WAL is required \
         (is the catalog on a filesystem without shared memory, such as NFS?)"
    )]
    NoWal { path: PathBuf, mode: String },

    /// Another file identity already has this path.
    #[error("path `{path}` is already tracked as file {other_file_id}")]
    PathInUse { path: String, other_file_id: String },

    #[error("no file with id {0} in the catalog")]
    NoSuchFile(String),

    #[error("no job with id {0} in the catalog")]
    NoSuchJob(i64),

    #[error("job {0} is already finished")]
    JobAlreadyFinished(i64),

    /// A catalog backup could not be taken (the message says why and what to do).
    #[error("catalog backup: {0}")]
    Backup(String),

    /// A value that SQLite's signed 64-bit integers cannot hold.
    #[error("{what} = {value} does not fit the catalog's 64-bit signed integers")]
    OutOfRange { what: &'static str, value: u64 },

    /// The event hash chain does not verify: someone or something changed, deleted or
    /// reordered events.
    #[error(transparent)]
    ChainBroken(#[from] ChainError),
}

/// Attaches "what we were doing" to a rusqlite error.
pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, CatalogError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, CatalogError> {
        self.map_err(|source| CatalogError::Sqlite { context, source })
    }
}
