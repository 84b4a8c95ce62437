//! The control protocol between the CLI and the daemon: versioned serde types, one JSON
//! object per line. These are not the clap structs: the CLI translates its arguments into
//! requests, so either side can change its surface without breaking the wire.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Wire version; a daemon refuses requests of another version with a clear error.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the CLI asks of the daemon. Each op's final answer (`Reply::Done.result`) is the
/// type of [`super::replies`] its doc names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Liveness and identity of the daemon. Reply: `PingReply`.
    Ping,
    /// State of each path (absolute paths inside the mount).
    /// Reply: `PathResults<StatusEntry>`.
    Status {
        paths: Vec<PathBuf>,
        recursive: bool,
    },
    /// Reply: `PathResults<PinResult>`.
    Pin {
        paths: Vec<PathBuf>,
        recursive: bool,
    },
    /// Reply: `PathResults<PinResult>`.
    Unpin {
        paths: Vec<PathBuf>,
        recursive: bool,
    },
    /// Reply: `PathResults<RecallResult>`.
    Recall {
        paths: Vec<PathBuf>,
        recursive: bool,
    },
    /// Reply: `PathResults<ReleaseResult>`.
    Release {
        paths: Vec<PathBuf>,
        recursive: bool,
        /// Report what would be released; change nothing.
        #[serde(default)]
        dry_run: bool,
    },
    /// Reply: `HistoryReply`.
    History { path: PathBuf },
    /// A policy run on the whole mount, or on the tree below `under` (an absolute path
    /// inside the mount). Reply: `MigrateReport`.
    Migrate {
        dry_run: bool,
        mode: Option<String>,
        #[serde(default)]
        under: Option<PathBuf>,
    },
    /// `coldtier archive`: copy (with `release`, and stub) the files named, or the trees
    /// below the directories named with `recursive`, whatever their age and size; pins,
    /// excludes and hard links hold and are reported. Reply: `MigrateReport`.
    Archive {
        paths: Vec<PathBuf>,
        recursive: bool,
        release: bool,
        dry_run: bool,
    },
    /// Reply: `GcReport`.
    Gc { dry_run: bool },
    /// `coldtier replicate`: copy to replica `to` every object it lacks. Reply:
    /// `ReplicateReport`.
    Replicate { to: String, dry_run: bool },
    /// `coldtier replicas`: per replica target, what it holds and lacks. Reply:
    /// `ReplicasReply`.
    Replicas,
    /// `coldtier verify`: reconcile the catalog, the files' records and the bucket.
    /// Reply: `VerifyReport`.
    Verify { deep: bool },
    /// `coldtier catalog backup`: `to` is None (the configured directory and the store),
    /// "s3" (the store only) or an absolute directory (only there). Reply: `BackupReport`.
    CatalogBackup { to: Option<String> },
    /// The entries of a directory (or one file) with their tiering state, from the backing
    /// tree: never recalls, never asks the store. Reply: `ListReply`.
    List { path: PathBuf },
    /// Files from the catalog (one page). Reply: `FindReply`, or `FindCount` with
    /// `count_only`.
    Find(crate::control::queries::FindRequest),
    /// Files and bytes per state and storage class, space saved, estimated cost, and the
    /// recalls since `since_ns` (default: the last 24 hours) by program and by user.
    /// Reply: `StatsReply`.
    Stats {
        #[serde(default)]
        since_ns: Option<i64>,
    },
    /// Events from the catalog (one page). Reply: `EventsReply`.
    Events(crate::control::queries::EventsRequest),
    /// The newest policy runs. Reply: `JobsReply`.
    Jobs { limit: u64 },
    /// Every config version (secrets redacted). Reply: `ConfigVersionsReply`.
    ConfigVersions,
    /// Check the event hash chain end to end. Reply: `AuditReply`.
    Audit,
    /// Pause tiering: no policy runs, gc or catalog uploads (recalls go on).
    /// Reply: `PauseReply`.
    Pause,
    /// Check the store and, if it works, resume tiering. Reply: `ResumeReply`.
    Resume,
    /// Stop the running policy run or gc (that one, if `id` is given) cleanly.
    /// Reply: `CancelJobReply`.
    CancelJob { job: Option<i64> },
    /// The daemon's background workers (schedulers, tagger, restore pollers) with their
    /// state and last error. Reply: `WorkersReply`.
    Workers,
    /// Cancel the piece of work `worker` (its id in `Workers`) is doing (it then waits
    /// for its next). Reply: `CancelWorkerReply`. (Not `id`: the request's own `id` sits
    /// beside the op's fields.)
    CancelWorker { worker: u64 },
    /// The recalls in flight, queued (deferred by a rule) and waiting for an archive
    /// restore. Reply: `RecallsReply`.
    Recalls,
    /// Stop recalls: the one with this id, those a uid started, or all.
    /// Reply: `RecallsReply` (the ones stopped).
    CancelRecalls {
        recall: Option<u64>,
        uid: Option<u32>,
        all: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// Why a request failed; `code` is stable for scripts, `message` says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotInMount,
    NotFound,
    Unsupported,
    Busy,
    Failed,
    /// The user who asked may not: root's alone, or a file that user cannot read.
    Forbidden,
}

pub use crate::base::progress::{Progress, Totals};

/// One line from the daemon: progress while a long request runs, then exactly one final
/// `Done` or `Error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Progress {
        id: u64,
        message: String,
        #[serde(default)]
        files: u64,
        #[serde(default)]
        bytes: u64,
        /// Absent until the daemon knows how much there is to do (and from daemons older
        /// than this field: the bar then shows counts and a rate only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totals: Option<Totals>,
    },
    /// `result` is the op's reply type (see [`Op`]) as JSON: the envelope stays untyped so
    /// that one reader serves every op; both ends go through the typed structs.
    Done { id: u64, result: serde_json::Value },
    Error {
        id: u64,
        #[serde(flatten)]
        error: ErrorBody,
    },
}

impl Reply {
    /// The progress line of request `id`.
    pub fn progress(id: u64, p: Progress) -> Reply {
        Reply::Progress {
            id,
            message: p.message,
            files: p.files,
            bytes: p.bytes,
            totals: p.totals,
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Progress { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_line() {
        let r = Request {
            v: PROTOCOL_VERSION,
            id: 7,
            op: Op::Pin {
                paths: vec!["/srv/share/a b".into()],
                recursive: true,
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""op":"pin""#), "{line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Progress {
                id: 1,
                message: "copying".into(),
                files: 3,
                bytes: 9,
                totals: None,
            },
            Reply::Progress {
                id: 1,
                message: "12 candidates, 4096 bytes".into(),
                files: 0,
                bytes: 0,
                totals: Some(Totals {
                    files: 12,
                    bytes: 4096,
                }),
            },
            Reply::Done {
                id: 1,
                result: serde_json::json!({"ok": true}),
            },
            Reply::Error {
                id: 1,
                error: ErrorBody {
                    code: ErrorCode::NotInMount,
                    message: "x".into(),
                },
            },
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), r);
        }
    }

    #[test]
    fn report_requests_round_trip() {
        for op in [
            Op::List {
                path: "/m/d".into(),
            },
            Op::Find(crate::control::queries::FindRequest {
                states: vec!["stub".into()],
                larger_than: Some(5),
                after: Some("a/b".into()),
                limit: 10,
                ..Default::default()
            }),
            Op::Stats { since_ns: None },
            Op::Events(crate::control::queries::EventsRequest {
                kinds: vec!["STUBBED".into()],
                after_id: 3,
                ..Default::default()
            }),
            Op::Jobs { limit: 5 },
            Op::ConfigVersions,
            Op::Audit,
            Op::Pause,
            Op::Resume,
            Op::CancelJob { job: Some(7) },
            Op::CancelJob { job: None },
            Op::Workers,
            Op::CancelWorker { worker: 3 },
        ] {
            let r = Request { v: 1, id: 1, op };
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r, "{line}");
        }
    }

    #[test]
    fn progress_without_totals_reads_as_before() {
        // A daemon older than `totals` (or a line without them) still parses, and a
        // line without them is written as before.
        let line = r#"{"kind":"progress","id":1,"message":"scanning","files":0,"bytes":0}"#;
        let r: Reply = serde_json::from_str(line).unwrap();
        assert_eq!(r, Reply::progress(1, Progress::new("scanning", 0, 0)));
        assert_eq!(serde_json::to_string(&r).unwrap(), line);
    }

    #[test]
    fn unknown_ops_are_rejected() {
        assert!(serde_json::from_str::<Request>(r#"{"v":1,"id":1,"op":"format_disk"}"#).is_err());
    }
}
