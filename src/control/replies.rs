//! Wire types of the daemon's final answers: the `result` of `Reply::Done`, one type per
//! request (the `Op` variant names its type). The daemon builds these and the CLI reads
//! them back with [`crate::control::client::Client::call_typed`]; neither side indexes the
//! JSON by string. They are the protocol's own types, not the engine's or the catalog's:
//! the daemon converts (`daemon::handler`, `daemon::reports`), so either side can change
//! its internals without breaking the wire.
//!
//! The JSON field names and shapes are what scripts read (`--json` prints these objects,
//! with their keys sorted as `serde_json::Value` sorts them): a field that is absent in
//! some answers is `skip_serializing_if`, a field that is `null` in some is a plain
//! `Option`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

// ---- ping ------------------------------------------------------------------------------

/// `Op::Ping`: the daemon's identity. Other users than root get `pid` and `mountpoint`
/// only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReply {
    pub pid: u32,
    pub mountpoint: PathBuf,
    #[serde(flatten)]
    pub detail: Option<PingDetail>,
}

/// What root learns besides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingDetail {
    pub source: PathBuf,
    /// The store's description; null without a store.
    pub store: Option<String>,
    pub catalog: PathBuf,
    /// The daemon's coldtier version.
    #[serde(default)]
    pub version: String,
    /// The config file the mount was made with (null: none).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The catalog's config version in force.
    #[serde(default)]
    pub config_version: i64,
    /// `metrics.listen` (null: no metrics endpoint).
    #[serde(default)]
    pub metrics: Option<String>,
    /// Whether tiering is paused.
    #[serde(default)]
    pub paused: bool,
}

// ---- per-file requests -----------------------------------------------------------------

/// `status`, `pin`, `unpin`, `recall`, `release`: one result per file, in the order named
/// (a directory's files sorted), and how many failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: serde::de::DeserializeOwned"
))]
pub struct PathResults<T> {
    pub results: Vec<PathResult<T>>,
    pub failed: u64,
}

impl<T> Default for PathResults<T> {
    fn default() -> Self {
        PathResults {
            results: Vec::new(),
            failed: 0,
        }
    }
}

/// One file's result: `{"path", "ok": true, ...the request's fields}` or `{"path", "ok":
/// false, "error"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: serde::de::DeserializeOwned"
))]
pub struct PathResult<T> {
    /// Absolute, inside the mount.
    pub path: PathBuf,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request's own fields (`ok` results only).
    #[serde(flatten)]
    pub result: Option<T>,
}

impl<T> PathResult<T> {
    pub fn ok(path: PathBuf, result: T) -> Self {
        PathResult {
            path,
            ok: true,
            error: None,
            result: Some(result),
        }
    }

    pub fn failed(path: PathBuf, error: impl Into<String>) -> Self {
        PathResult {
            path,
            ok: false,
            error: Some(error.into()),
            result: None,
        }
    }
}

/// `Op::Status`: a file's tiering state, from its records on disk (never the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// Relative to the mount point.
    pub rel_path: PathBuf,
    /// resident, premigrated, stub, recalling, restore_pending.
    pub state: String,
    /// What `stat` shows through the mount (a stub's logical size).
    pub size: u64,
    pub pinned: bool,
    pub file_id: Option<String>,
    /// The full key (with the store's prefix) of its copy, if it has a valid one.
    pub object_key: Option<String>,
    pub version_id: Option<String>,
    pub storage_class: Option<String>,
    /// `algorithm:value`.
    pub checksum: Option<String>,
    /// Blocks on the backing file (0 for a stub).
    pub blocks: u64,
    /// "in_progress" while an archive restore is pending.
    pub restore: Option<String>,
    /// A pack member: where its bytes start in the pack `object_key` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_offset: Option<u64>,
}

/// `Op::Pin`, `Op::Unpin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinResult {
    pub pinned: bool,
    /// The file's state; absent for an untracked file unpinned (nothing to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// `Op::Recall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallResult {
    pub recalled: bool,
    /// Why nothing was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Bytes recalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// `Op::Release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseResult {
    pub released: bool,
    /// Why nothing was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The file's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Local bytes freed (its blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<u64>,
}

// ---- history, events -------------------------------------------------------------------

/// One event of the catalog's hash-chained log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub id: i64,
    pub time_ns: i64,
    pub file_id: Option<String>,
    /// Relative to the source.
    pub path: Option<String>,
    /// STUBBED, RECALLED ...
    pub kind: String,
    /// Free-form: what the kind records.
    pub detail: serde_json::Value,
    pub config_version: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// `Op::History`: every event of one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryReply {
    pub path: PathBuf,
    pub file_id: String,
    pub events: Vec<EventRow>,
    /// The store's key prefix: event details name keys without it (as recorded, under the
    /// hash chain); the text output shows them with it, as the bucket does.
    #[serde(default)]
    pub key_prefix: String,
}

/// `Op::Events`: one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsReply {
    pub events: Vec<EventRow>,
    /// The `after_id` of the next page; null on the last one.
    pub next_after_id: Option<i64>,
    /// As in [`HistoryReply`].
    #[serde(default)]
    pub key_prefix: String,
}

// ---- jobs ------------------------------------------------------------------------------

/// One file a policy run acts on (or would, in a dry run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub path: String,
    pub size: u64,
    /// "copy", "stub", "copy+stub" ...
    pub plan: String,
    /// The bytes its stub frees (would free, in a dry run): its allocated blocks.
    #[serde(default)]
    pub frees: u64,
}

/// A file `coldtier archive` left alone, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    /// "pinned", "excluded", "hard-linked", "empty", "already", "not-regular",
    /// "directory", "missing".
    pub kind: String,
    pub reason: String,
}

/// `Op::Migrate`: what the policy run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateReport {
    pub job_id: i64,
    pub mode: String,
    pub scanned: u64,
    pub candidates: u64,
    pub deferred: u64,
    pub copied: u64,
    pub bytes_copied: u64,
    pub stubbed: u64,
    pub bytes_freed: u64,
    pub busy: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub files: Vec<PlannedFile>,
    pub seconds: f64,
    /// Stopped early (`coldtier jobs cancel`, or the client went away).
    pub cancelled: bool,
    /// What the stubs of the candidates free (in a dry run: would free).
    #[serde(default)]
    pub bytes_to_free: u64,
    /// `coldtier archive`: the files named and left alone, with why.
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
    /// Stopped before its end by `policy.window` or `policy.max_duration` (why): the
    /// files under way were finished, the next run goes on with the rest.
    #[serde(default)]
    pub stopped: Option<String>,
    /// What the admin should know that is not an error (a dry run without a store).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One object gc deleted (or would delete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcObject {
    pub object_key: String,
    pub version_id: Option<String>,
    /// The event kind that made it garbage (SUPERSEDED, DELETED, FAILED).
    pub reason: String,
    /// The `[[replica]]` target the copy was on; None: the store's own object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A copy on `target` the catalog did not record (a replication killed between its
    /// PUT and its REPLICATED), found by asking the target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unrecorded: bool,
}

/// `Op::Replicate`: what a replication run did (a dry run: what it would copy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicateReport {
    pub job_id: i64,
    pub target: String,
    pub dry_run: bool,
    /// Objects the target lacked when the run started, and their files' bytes.
    pub missing: u64,
    pub missing_bytes: u64,
    pub copied: u64,
    pub bytes_copied: u64,
    /// Archived on the primary: restore requested or under way; a later run copies them.
    pub restoring: u64,
    /// Found on the target already, read back there and recorded: not copied again.
    #[serde(default)]
    pub found: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    /// A dry run: the files whose objects the target lacks.
    pub paths: Vec<String>,
    pub seconds: f64,
    pub cancelled: bool,
}

/// One replica target in `Op::Replicas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaTarget {
    pub name: String,
    pub store: String,
    /// Objects the files name, and their files' bytes.
    pub objects: u64,
    pub bytes: u64,
    pub replicated: u64,
    pub replicated_bytes: u64,
    pub missing: u64,
    pub missing_bytes: u64,
    /// A replication to it is running now.
    pub in_flight: bool,
    /// The last replication run to it: its job id, end (ns), objects copied and failed.
    pub last_job: Option<i64>,
    pub last_finished_ns: Option<i64>,
    pub last_copied: u64,
    pub last_failed: u64,
    /// The files whose objects it lacks.
    pub missing_paths: Vec<String>,
}

/// `Op::Replicas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicasReply {
    pub targets: Vec<ReplicaTarget>,
}

/// `Op::Gc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    pub job_id: i64,
    pub dry_run: bool,
    pub deleted: Vec<GcObject>,
    pub kept_under_retention: u64,
    /// Objects past their retention that the records of a file on disk still name, which
    /// the catalog does not know (a backing file copied with its xattrs outside the mount):
    /// kept.
    #[serde(default)]
    pub kept_named_on_disk: Vec<GcKept>,
    /// Packs rewritten with only their live members (`pack.repack_below`).
    #[serde(default)]
    pub repacked: Vec<GcRepack>,
    pub errors: Vec<String>,
}

/// An object gc kept because a file on disk names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcKept {
    pub object_key: String,
    /// One file whose stub or copy record names it.
    pub path: String,
}

/// One pack gc repacked (or would, or could not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcRepack {
    pub object_key: String,
    pub live_members: u64,
    pub live_bytes: u64,
    pub pack_bytes: u64,
    /// The new pack.
    #[serde(default)]
    pub repacked_into: Option<String>,
    /// Members switched to the new pack, and left on the old one (changed meanwhile).
    #[serde(default)]
    pub switched: Option<u64>,
    #[serde(default)]
    pub left: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// One thing verify found wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyFinding {
    /// orphan, missing_object, bad_record ...
    pub kind: String,
    pub path: Option<String>,
    pub file_id: Option<String>,
    pub object_key: Option<String>,
    pub message: String,
}

/// `Op::Verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub job_id: i64,
    pub deep: bool,
    pub clean: bool,
    pub files_scanned: u64,
    pub stubs: u64,
    pub premigrated: u64,
    pub objects_listed: u64,
    pub objects_checked: u64,
    pub objects_reread: u64,
    pub bytes_reread: u64,
    /// Copies on `[[replica]]` targets checked (there, of their size; read back with
    /// --deep).
    #[serde(default)]
    pub replica_copies_checked: u64,
    pub retained: u64,
    pub catalog_backups: u64,
    pub findings: Vec<VerifyFinding>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// One policy run, gc or verify, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub mode: String,
    pub config_version: i64,
    pub started_ns: i64,
    /// Null while it runs (or if the daemon died during it).
    pub finished_ns: Option<i64>,
    pub files_scanned: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub files_stubbed: u64,
    pub files_failed: u64,
    pub errors: Vec<String>,
    pub duration_ms: Option<u64>,
    pub bytes_stubbed: u64,
}

/// `Op::Jobs`: the newest runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsReply {
    pub jobs: Vec<JobRow>,
}

/// `Op::CancelJob`: the job that was told to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelJobReply {
    pub cancelled: i64,
    pub kind: String,
}

/// One background worker of the daemon (the runner's own description of it).
pub use crate::base::worker::WorkerInfo as WorkerRow;

/// `Op::Workers`: every background worker, in the order they started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkersReply {
    pub workers: Vec<WorkerRow>,
}

/// One recall in flight, queued (deferred) or waiting for an archive restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallRow {
    /// Its id: what `coldtier recalls cancel ID` takes.
    pub id: u64,
    pub path: String,
    pub size: u64,
    /// Bytes verified and in place so far.
    pub done: u64,
    /// `streaming`, `recalling`, `queued` or `restore`.
    pub state: String,
    /// Who started it: uid, gid, pid, program.
    pub who: Option<serde_json::Value>,
    /// When it started (queued: when it was queued), ns since the epoch.
    pub since_ns: i64,
}

/// `Op::Recalls` (and `Op::CancelRecalls`: the ones stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallsReply {
    pub recalls: Vec<RecallRow>,
}

/// `Op::CancelWorker`: the worker whose piece of work in progress was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelWorkerReply {
    pub worker: u64,
    pub name: String,
    /// Its state when cancelled: "busy" (its work stops) or "idle" (nothing to stop).
    pub state: String,
}

/// `Op::Pause`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseReply {
    pub paused: bool,
}

/// `Op::Resume`: the store check passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeReply {
    pub paused: bool,
    pub validates_checksums: bool,
}

// ---- catalog ---------------------------------------------------------------------------

/// `Op::CatalogBackup` (also the detail of its CATALOG_BACKUP event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupReport {
    /// manual, scheduled.
    pub why: String,
    /// The backup's file name.
    pub file: String,
    pub local_path: Option<String>,
    pub object_key: Option<String>,
    pub bytes: u64,
    pub sha256: String,
    pub files: u64,
    pub events: u64,
    pub last_event_id: i64,
    pub last_event_hash: String,
    pub pruned_local: Vec<String>,
    pub pruned_store: Vec<String>,
    pub errors: Vec<String>,
}

/// `Op::Audit`: the event chain checked end to end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReply {
    pub ok: bool,
    /// Events that verify (1..checked).
    pub checked: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last event; null for an empty log.
    pub head: Option<ChainHead>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub id: i64,
    pub hash: String,
    pub time_ns: i64,
}

/// One recorded config version (secrets redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersionRow {
    pub version: i64,
    /// SHA-256 of the recorded text.
    pub hash: String,
    pub time_ns: i64,
    pub text: String,
}

/// `Op::ConfigVersions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersionsReply {
    pub versions: Vec<ConfigVersionRow>,
    /// The version in force; null before the first is recorded.
    pub current: Option<i64>,
}

// ---- reports ---------------------------------------------------------------------------

/// `Op::List`: a directory's entries (or one file), from the backing tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    pub path: PathBuf,
    /// False when `path` is one file (its one entry is that file).
    pub dir: bool,
    pub entries: Vec<ListEntry>,
}

/// One entry as `ls` shows it: what `stat` through the mount shows, plus the state; or
/// why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub stat: Option<EntryStat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryStat {
    /// file, dir, symlink, fifo, socket, char, block, other.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    /// Regular files: their tiering state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Symlinks: where they point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One file from the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundFile {
    /// Absolute, inside the mount.
    pub path: PathBuf,
    /// Relative to the source.
    pub rel_path: String,
    pub state: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub pinned: bool,
    pub file_id: String,
    pub storage_class: Option<String>,
    pub object_key: Option<String>,
    /// The pack the file's bytes are in (a pack member's), if any.
    #[serde(default)]
    pub pack_id: Option<String>,
}

/// `Op::Find`: one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindReply {
    pub files: Vec<FoundFile>,
    /// The `after` of the next page; null on the last one.
    pub next_after: Option<String>,
}

/// `Op::Find` with `count_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCount {
    pub files: u64,
    pub bytes: u64,
}

/// Files and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTotal {
    pub state: String,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassTotal {
    pub storage_class: String,
    pub files: u64,
    pub bytes: u64,
    /// The `[costs]` key of its price.
    pub price_key: String,
    pub usd_per_gb_month: f64,
    pub monthly_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSummary {
    pub describe: String,
    pub validates_checksums: bool,
    /// "the store's checksum" or "reading them back".
    pub copies_proven_by: String,
    pub tiering_paused: bool,
}

/// `Op::Stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    pub mountpoint: PathBuf,
    pub files: u64,
    pub bytes: u64,
    /// Every state, in the order resident, premigrated, stub, recalling, restore_pending.
    pub states: Vec<StateTotal>,
    pub pinned: Count,
    pub local_bytes_saved: u64,
    pub storage_classes: Vec<ClassTotal>,
    pub monthly_usd: f64,
    /// Events in the log.
    pub events: u64,
    /// Null without a store.
    pub store: Option<StoreSummary>,
    /// Recalls, stream reads and refusals since a time, by program and by user.
    #[serde(default)]
    pub recalls: Option<RecallStats>,
    /// Pack objects (`[pack]`): None if there are none.
    #[serde(default)]
    pub packs: Option<PackStats>,
}

/// The packs files name (`coldtier stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackStats {
    /// Packs some file still names, their bytes in the store ...
    pub packs: u64,
    pub bytes: u64,
    /// ... the files naming them and those files' bytes (the rest is dead until repack
    /// or gc).
    pub members: u64,
    pub live_bytes: u64,
}

/// Who recalled what since `since_ns` (`coldtier stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallStats {
    pub since_ns: i64,
    /// The most active first.
    pub by_program: Vec<RecallTally>,
    pub by_uid: Vec<RecallTally>,
}

/// One program's or one user's recalls (RECALL_STARTED), stream reads (STREAMED) and
/// refusals (RECALL_REFUSED: denied, deferred, throttled).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecallTally {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub program: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uid: Option<u32>,
    pub recalls: u64,
    pub recalled_bytes: u64,
    pub streamed: u64,
    pub streamed_bytes: u64,
    pub refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T>(v: serde_json::Value) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let t: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        t
    }

    #[test]
    fn per_file_results_keep_their_shapes() {
        let r: PathResults<ReleaseResult> = round_trip(json!({
            "results": [
                {"path": "/m/a", "ok": true, "released": true, "bytes": 5, "bytes_freed": 4096},
                {"path": "/m/b", "ok": true, "released": false, "note": "already a stub"},
                {"path": "/m/c", "ok": false, "error": "is a directory (use -r)"},
            ],
            "failed": 1,
        }));
        assert_eq!(r.results[2].result, None);
        assert_eq!(
            r.results[1].result.as_ref().unwrap().note.as_deref(),
            Some("already a stub")
        );
        let p: PathResult<PinResult> =
            round_trip(json!({"path": "/m/x", "ok": true, "pinned": false}));
        assert_eq!(p.result.unwrap().state, None);
        let s: PathResult<StatusEntry> = round_trip(json!({
            "path": "/m/x", "ok": true, "rel_path": "x", "state": "stub", "size": 3,
            "pinned": false, "file_id": "f", "object_key": "t/data/f/1", "version_id": null,
            "storage_class": "STANDARD", "checksum": "crc32c:AAAA", "blocks": 0, "restore": null,
        }));
        assert_eq!(s.result.unwrap().state, "stub");
    }

    #[test]
    fn optional_parts_are_absent_or_null_as_before() {
        let p: PingReply = round_trip(json!({"pid": 1, "mountpoint": "/m"}));
        assert!(p.detail.is_none());
        // A daemon of before `coldtier mounts` (no version, config, metrics): still read.
        let old: PingReply = serde_json::from_value(
            json!({"pid": 1, "mountpoint": "/m", "source": "/s", "store": null, "catalog": "/c.db"}),
        )
        .unwrap();
        assert_eq!(old.detail.unwrap().config_version, 0);
        round_trip::<PingReply>(json!({
            "pid": 1, "mountpoint": "/m", "source": "/s", "store": null, "catalog": "/c.db",
            "version": "0.1.0", "config": null, "config_version": 1, "metrics": null,
            "paused": false,
        }));
        let l: ListReply = round_trip(json!({"path": "/m", "dir": true, "entries": [
            {"name": "gone", "error": "No such file or directory (os error 2)"},
            {"name": "l", "type": "symlink", "mode": 511, "nlink": 1, "uid": 0, "gid": 0,
             "size": 1, "mtime_ns": 5, "target": "x"},
        ]}));
        assert!(l.entries[0].stat.is_none());
        assert_eq!(l.entries[1].stat.as_ref().unwrap().kind, "symlink");
        round_trip::<AuditReply>(json!({"ok": true, "checked": 0, "head": null}));
        round_trip::<AuditReply>(json!({
            "ok": false, "checked": 2, "first_bad_id": 3, "reason": "hash",
            "head": {"id": 4, "hash": "h", "time_ns": 9},
        }));
    }
}
