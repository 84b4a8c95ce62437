//! Wire types of the catalog queries (`find`, `events`): what the CLI asks, in the
//! protocol's terms (not the clap structs, not the catalog's query types).

use serde::{Deserialize, Serialize};

/// `coldtier find`: one page of the catalog's files matching every filter given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FindRequest {
    /// State names (`resident`, `premigrated`, `stub`, `recalling`, `restore_pending`);
    /// empty: any.
    pub states: Vec<String>,
    /// Modified (mtime) before this time, nanoseconds since the epoch.
    pub modified_before_ns: Option<i64>,
    /// Strictly larger than this many bytes.
    pub larger_than: Option<u64>,
    /// A GLOB on the path relative to the source, or absolute inside the mount.
    pub path_glob: Option<String>,
    pub pinned: Option<bool>,
    /// Only members of packs: `any`, or a pack id (32 hex digits).
    pub pack: Option<String>,
    /// Keyset paging: only paths after this one (the `next_after` of the page before).
    pub after: Option<String>,
    /// Page size (the daemon caps it).
    pub limit: u64,
    /// Only count the matches (files and bytes), list nothing.
    pub count_only: bool,
}

/// `coldtier events`: one page of events matching every filter given, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsRequest {
    /// At or after this time, nanoseconds since the epoch.
    pub since_ns: Option<i64>,
    /// Event kinds (`STUBBED`, `RECALLED` ...); empty: any.
    pub kinds: Vec<String>,
    /// An absolute path inside the mount: events of it and of everything below it.
    pub path: Option<std::path::PathBuf>,
    /// Only events with a larger id (the `next_after_id` of the page before).
    pub after_id: i64,
    /// Page size (the daemon caps it).
    pub limit: u64,
}
