//! The tiering engine's config sections: `[policy]` (which files a run tiers, how and
//! when) and `[recall]` (bringing stubs back, archived objects). `crate::config` composes
//! them with the other modules' sections and names the key of a bad value.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::base::cron::{de_schedule, Schedule};
use crate::base::units::{de_duration, de_opt_size, de_size};
pub use crate::catalog::config::CatalogConfig;
pub use crate::store::RestoreTier;
use crate::store::UploadLimits;

use super::policy::Patterns;

/// Everything the engine reads from the config, as one value a reload replaces whole
/// (`Tiering::set_settings`); `crate::config::Config::tier_settings` builds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub policy: PolicyConfig,
    pub recall: RecallConfig,
    /// Retention of superseded objects, the backup schedule and how many backups to keep.
    pub catalog: CatalogConfig,
    /// Where catalog backups are written (resolved from `catalog.backup_dir`).
    pub backup_dir: PathBuf,
    /// The store's upload limits (the defaults when no store is configured).
    pub uploads: UploadLimits,
}

/// `[policy]`: which files a policy run tiers, how, how many, and when.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Only paths (relative to SOURCE) matching one of these are tiered; empty: all.
    pub include: Patterns,
    /// Paths matching one of these are never tiered; wins over `include`.
    pub exclude: Patterns,
    /// A file is cold when it has not been used (read: atime, written: mtime) for this long.
    #[serde(deserialize_with = "de_duration")]
    pub atime_older_than: Duration,
    /// Smaller files are left alone (default 1 MiB: see [`DEFAULT_MIN_SIZE`]).
    #[serde(deserialize_with = "de_size")]
    pub min_size: u64,
    /// Larger files are left alone (none: no upper limit).
    #[serde(deserialize_with = "de_opt_size")]
    pub max_size: Option<u64>,
    pub mode: MigrateMode,
    /// At most this many files per run (none: no limit).
    pub max_files: Option<u64>,
    /// At most this many bytes of file data per run (none: no limit).
    #[serde(deserialize_with = "de_opt_size")]
    pub max_bytes: Option<u64>,
    pub verify: Verify,
    /// When runs start (cron, UTC); `None` ("off" or ""): only on `coldtier migrate`.
    #[serde(deserialize_with = "de_schedule")]
    pub schedule: Option<Schedule>,
}

/// The default `policy.min_size`, 1 MiB. Tiering a small file frees little (its inode,
/// xattr and catalog row stay) while its recall costs a full store round trip and each
/// object costs requests and per-object overhead (S3 archive classes bill at least 40 KiB
/// of metadata per object, the IA classes at least 128 KiB per object). On typical shares
/// files under 1 MiB are most of the files and a few per cent of the bytes: skipping them
/// keeps object counts and recall latency down for almost the same space freed.
pub const DEFAULT_MIN_SIZE: u64 = 1 << 20;

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            include: Patterns::default(),
            exclude: Patterns::default(),
            atime_older_than: Duration::from_secs(60 * 86400),
            min_size: DEFAULT_MIN_SIZE,
            max_size: None,
            mode: MigrateMode::DryRun,
            max_files: None,
            max_bytes: None,
            verify: Verify::Checksum,
            schedule: Some(Schedule::parse(DEFAULT_SCHEDULE).expect("valid default schedule")),
        }
    }
}

/// The default `policy.schedule`: every night at 03:00 UTC.
pub const DEFAULT_SCHEDULE: &str = "0 3 * * *";

/// `policy.mode`: what a policy run does with its candidates.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateMode {
    /// Report what a `stub` run would do; change nothing (the default: nothing moves until
    /// the operator says so).
    #[default]
    DryRun,
    /// Copy to the store and verify (resident -> premigrated); free nothing.
    CopyOnly,
    /// Copy, verify, and free local data (-> stub).
    Stub,
}

impl MigrateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrateMode::DryRun => "dry-run",
            MigrateMode::CopyOnly => "copy-only",
            MigrateMode::Stub => "stub",
        }
    }
}

/// `policy.verify`: how a copy is proven before the file counts as premigrated.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// The store's checksum of what it received matches ours of what we read.
    #[default]
    Checksum,
    /// Also read the object back and compare checksums (twice the traffic).
    Readback,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::Checksum => "checksum",
            Verify::Readback => "readback",
        }
    }
}

/// `[recall]`: bringing stubs back, and what to do about archived objects.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecallConfig {
    pub on_archived: OnArchived,
    pub restore_tier: RestoreTier,
    /// How long the store keeps a restored copy readable, in days.
    pub restore_days: u32,
    /// With `on_archived = "wait"`: how long an open blocks for a restore.
    #[serde(deserialize_with = "de_duration")]
    pub wait_timeout: Duration,
    /// How often a pending restore is checked (HEAD).
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// How long an open waits for a stub's data before it fails with `EAGAIN` while the
    /// recall goes on (an NFS server then tells its client to retry, NFS4ERR_DELAY; SMB
    /// and NFS clients give up on a request that takes a minute or more). "0": no limit.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// `[[recall.rules]]`: who may recall what (`tier::rules`), first match wins.
    pub rules: Vec<super::rules::RecallRule>,
    /// The shipped rules after the admin's (indexers denied, virus scanners streamed).
    pub default_rules: bool,
    /// Budgets (none: no limit), for recalls started by reads: at once, and per minute per
    /// uid and in all (count and bytes). Over a budget a read waits (up to `timeout`) or
    /// gets EAGAIN at once (`over_budget`).
    pub max_concurrent: Option<u64>,
    pub per_uid_per_minute: Option<u64>,
    #[serde(deserialize_with = "de_opt_size")]
    pub per_uid_bytes_per_minute: Option<u64>,
    pub per_minute: Option<u64>,
    #[serde(deserialize_with = "de_opt_size")]
    pub bytes_per_minute: Option<u64>,
    pub over_budget: OverBudget,
}

/// `recall.over_budget`: what a read that would start a recall over a budget gets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OverBudget {
    /// It waits until the budget allows it, up to `recall.timeout`, then EAGAIN.
    #[default]
    Wait,
    /// EAGAIN at once.
    Eagain,
}

impl Default for RecallConfig {
    fn default() -> Self {
        RecallConfig {
            on_archived: OnArchived::Fail,
            restore_tier: RestoreTier::Standard,
            restore_days: 3,
            wait_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            rules: Vec::new(),
            default_rules: true,
            max_concurrent: None,
            per_uid_per_minute: None,
            per_uid_bytes_per_minute: None,
            per_minute: None,
            bytes_per_minute: None,
            over_budget: OverBudget::Wait,
        }
    }
}

/// `recall.on_archived`: an open of a stub whose object is archived and not restored.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OnArchived {
    /// Block the open until the restore is done and the data recalled, up to
    /// `recall.wait_timeout`.
    Wait,
    /// Fail the open at once (the errno is in docs/semantics.md); the restore and recall
    /// go on in the background. The default: SMB and NFS clients give up on a blocked
    /// open within a minute or so anyway, and archive restores take minutes to hours.
    #[default]
    Fail,
}

impl OnArchived {
    pub fn as_str(self) -> &'static str {
        match self {
            OnArchived::Wait => "wait",
            OnArchived::Fail => "fail",
        }
    }
}
