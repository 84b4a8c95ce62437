//! The catalog's row types: what a file, an event, a config version and a job look like.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a file's data lives (docs/architecture.md, "Records on the backing file").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Data only on local disk.
    Resident,
    /// A verified copy is in S3 and the data is still local.
    Premigrated,
    /// Local data freed; the object in S3 is the data.
    Stub,
    /// A recall is copying the object back.
    Recalling,
    /// The object is archived and a restore has been asked for.
    RestorePending,
}

impl FileState {
    pub const ALL: [FileState; 5] = [
        FileState::Resident,
        FileState::Premigrated,
        FileState::Stub,
        FileState::Recalling,
        FileState::RestorePending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Resident => "resident",
            FileState::Premigrated => "premigrated",
            FileState::Stub => "stub",
            FileState::Recalling => "recalling",
            FileState::RestorePending => "restore_pending",
        }
    }
}

/// What happened, as recorded in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Scanned,
    Copied,
    Verified,
    Stubbed,
    RecallStarted,
    Recalled,
    RecallFailed,
    RestoreRequested,
    Pinned,
    Unpinned,
    Superseded,
    Deleted,
    ObjectDeleted,
    Failed,
    ConfigChanged,
    /// `coldtier verify` found something wrong (detail: what, where, why).
    VerifyFinding,
    /// A catalog backup was taken (detail: where it went, the chain head it holds).
    CatalogBackup,
    /// The catalog was rebuilt from the records on disk and the bucket.
    CatalogRebuilt,
    /// A tracked file got another name (a hard link through the mount; detail: the path).
    Linked,
    /// A read of a stub was refused by `[[recall.rules]]` (detail: mode `deny` or `defer`,
    /// who: uid, gid, pid, program; the rule).
    RecallRefused,
    /// A stub was read without being recalled (`stream` rule; detail: who, bytes fetched).
    Streamed,
    /// An object was copied to a `[[replica]]` target and verified there (detail: target,
    /// object key and version, bytes, the replica's version).
    Replicated,
    /// A pack object (small files gathered into one object) was written and verified
    /// (detail: its key, version, size, members, checksum, index key). Its members' own
    /// COPIED/VERIFIED follow.
    Packed,
    /// A pack member's record was switched to a new pack by gc's repack (detail: the old
    /// and new pack keys and offsets).
    Repacked,
}

impl EventKind {
    pub const ALL: [EventKind; 24] = [
        EventKind::Scanned,
        EventKind::Copied,
        EventKind::Verified,
        EventKind::Stubbed,
        EventKind::RecallStarted,
        EventKind::Recalled,
        EventKind::RecallFailed,
        EventKind::RestoreRequested,
        EventKind::Pinned,
        EventKind::Unpinned,
        EventKind::Superseded,
        EventKind::Deleted,
        EventKind::ObjectDeleted,
        EventKind::Failed,
        EventKind::ConfigChanged,
        EventKind::VerifyFinding,
        EventKind::CatalogBackup,
        EventKind::CatalogRebuilt,
        EventKind::Linked,
        EventKind::RecallRefused,
        EventKind::Streamed,
        EventKind::Replicated,
        EventKind::Packed,
        EventKind::Repacked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scanned => "SCANNED",
            EventKind::Copied => "COPIED",
            EventKind::Verified => "VERIFIED",
            EventKind::Stubbed => "STUBBED",
            EventKind::RecallStarted => "RECALL_STARTED",
            EventKind::Recalled => "RECALLED",
            EventKind::RecallFailed => "RECALL_FAILED",
            EventKind::RestoreRequested => "RESTORE_REQUESTED",
            EventKind::Pinned => "PINNED",
            EventKind::Unpinned => "UNPINNED",
            EventKind::Superseded => "SUPERSEDED",
            EventKind::Deleted => "DELETED",
            EventKind::ObjectDeleted => "OBJECT_DELETED",
            EventKind::Failed => "FAILED",
            EventKind::ConfigChanged => "CONFIG_CHANGED",
            EventKind::VerifyFinding => "VERIFY_FINDING",
            EventKind::CatalogBackup => "CATALOG_BACKUP",
            EventKind::CatalogRebuilt => "CATALOG_REBUILT",
            EventKind::Linked => "LINKED",
            EventKind::RecallRefused => "RECALL_REFUSED",
            EventKind::Streamed => "STREAMED",
            EventKind::Replicated => "REPLICATED",
            EventKind::Packed => "PACKED",
            EventKind::Repacked => "REPACKED",
        }
    }
}

/// The unknown name given to `FromStr` for [`FileState`] or [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}`")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

macro_rules! string_enum {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        name: s.to_owned(),
                    })
            }
        }

        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

string_enum!(FileState, "file state");
string_enum!(EventKind, "event kind");

/// One tracked file. `file_id` is its identity: it survives renames and names its objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRow {
    /// UUID-like, generated by the caller when the file is first seen.
    pub file_id: String,
    /// Current path, relative to the source root. Unique among tracked files.
    pub path: String,
    pub state: FileState,
    /// Logical size in bytes (what `stat` shows through the mount, also for stubs).
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Inode number of the backing file.
    pub ino: u64,
    pub object_key: Option<String>,
    pub version_id: Option<String>,
    pub checksum_algo: Option<String>,
    pub checksum: Option<String>,
    pub md5: Option<String>,
    pub storage_class: Option<String>,
    pub pinned: bool,
    /// Nanoseconds since the epoch of the last change to this row; set by the catalog.
    pub updated_at: i64,
}

impl FileRow {
    /// A resident file with no object yet (the caller fills in the rest).
    pub fn new(file_id: impl Into<String>, path: impl Into<String>) -> FileRow {
        FileRow {
            file_id: file_id.into(),
            path: path.into(),
            state: FileState::Resident,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 0,
            object_key: None,
            version_id: None,
            checksum_algo: None,
            checksum: None,
            md5: None,
            storage_class: None,
            pinned: false,
            updated_at: 0,
        }
    }
}

/// One pack object (`packs` table): small files gathered into one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRow {
    pub object_key: String,
    pub pack_id: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub members: u64,
    pub checksum_algo: String,
    pub checksum: String,
    pub storage_class: String,
    pub index_key: String,
    /// The pack gc's repack wrote this one for.
    pub repack_of: Option<String>,
}

/// A pack and its live members: the files that still name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackLive {
    pub pack: PackRow,
    /// How many files name it.
    pub members: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their bytes counted in whole 512-byte blocks (a tar's unit), each member's own.
    pub blocks: u64,
}

/// One entry of the append-only, hash-chained event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1, 2, 3 ... with no gaps: the order of the chain.
    pub id: i64,
    /// Nanoseconds since the epoch; never decreases along the chain.
    pub time_ns: i64,
    pub file_id: Option<String>,
    pub path: Option<String>,
    pub kind: EventKind,
    pub detail: serde_json::Value,
    /// The config version in force when the event was appended (0: none recorded yet).
    pub config_version: i64,
    /// `hash` of the event before (64 zeros for the first event).
    pub prev_hash: String,
    /// Lower-case hex SHA-256 of this event's canonical encoding (docs/catalog.md).
    pub hash: String,
}

/// One numbered version of the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// 1, 2, 3 ...
    pub version: i64,
    /// Lower-case hex SHA-256 of `text`.
    pub hash: String,
    /// The full config text.
    pub text: String,
    pub time_ns: i64,
}

/// What a finished policy run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    pub files_scanned: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub files_stubbed: u64,
    pub files_failed: u64,
    /// One line per error; the catalog keeps the first [`super::MAX_JOB_ERRORS`].
    pub errors: Vec<String>,
    /// Local bytes freed by the files stubbed (schema v2).
    #[serde(default)]
    pub bytes_stubbed: u64,
}

/// One policy run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    /// What ran, e.g. `migrate`, `release`, `gc`.
    pub kind: String,
    /// How it ran, e.g. `scheduled`, `manual`, `dry-run`.
    pub mode: String,
    /// The config version in force when the job started.
    pub config_version: i64,
    pub started_ns: i64,
    /// None while the job runs (or if the daemon died during it).
    pub finished_ns: Option<i64>,
    pub files_scanned: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub files_stubbed: u64,
    pub files_failed: u64,
    pub errors: Vec<String>,
    pub duration_ms: Option<u64>,
    /// Local bytes freed by the files stubbed (0 for runs recorded before schema v2).
    pub bytes_stubbed: u64,
}

/// An object a file's row names, as `coldtier replicate` copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub file_id: String,
    pub path: String,
    pub object_key: String,
    pub version_id: Option<String>,
    /// The file's size (the object of a sparse file holds only its data).
    pub file_size: u64,
    pub checksum_algo: String,
    pub checksum: String,
}

/// One copy a replica target holds, as recorded: (object key, the primary's version or "",
/// the replica's version, size).
pub type ReplicaRow = (String, String, Option<String>, u64);

/// What one replica target holds of the objects files name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplicaCounts {
    pub objects: u64,
    pub bytes: u64,
    pub replicated: u64,
    pub replicated_bytes: u64,
}

/// What the alerting metrics read from the catalog (times in ns since the epoch; 0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertFacts {
    /// The end of the last policy run (migrate, scheduled or archive; not a dry run).
    pub last_run_ns: i64,
    /// The files that run failed.
    pub last_run_failed: i64,
    /// The end of the last run that failed nothing and reported no error.
    pub last_ok_run_ns: i64,
    /// The last CATALOG_BACKUP event.
    pub last_backup_ns: i64,
}

/// How many files, and how many bytes, are in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    pub state: FileState,
    pub files: u64,
    pub bytes: u64,
}

/// An upload intent ([`crate::catalog::Catalog::begin_upload`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Upload {
    pub object_key: String,
    pub file_id: String,
    pub path: String,
    pub started_ns: i64,
}
