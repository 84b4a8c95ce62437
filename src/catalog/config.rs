//! `[catalog]`: the catalog's own config section (where it lives, how long superseded
//! objects stay, catalog backups).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::base::cron::{de_schedule, Schedule};
use crate::base::units::de_duration;

/// `[catalog]`: where the catalog lives and how long superseded objects stay.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// The SQLite file; none: [`default_catalog_path`] of the mount point.
    pub path: Option<PathBuf>,
    /// How long an object stays in the store after its file was deleted or changed,
    /// before `gc` may remove it.
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// When the daemon takes a catalog backup (cron, UTC); `None` ("off"): only on
    /// `coldtier catalog backup`.
    #[serde(deserialize_with = "de_schedule")]
    pub backup_schedule: Option<Schedule>,
    /// Where backups are kept on local disk; none: `backups/` beside the catalog file.
    pub backup_dir: Option<PathBuf>,
    /// How many backups to keep: the newest of each of the last N days, weeks and months
    /// that have one, e.g. "7d 4w 12m" (crate::catalog::backup::Keep).
    pub backup_keep: String,
}

/// The default `catalog.backup_schedule`: every night at 02:30 UTC (before the default
/// policy run at 03:00).
pub const DEFAULT_BACKUP_SCHEDULE: &str = "30 2 * * *";

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            path: None,
            retention: Duration::from_secs(30 * 86400),
            backup_schedule: Some(
                Schedule::parse(DEFAULT_BACKUP_SCHEDULE).expect("valid default backup schedule"),
            ),
            backup_dir: None,
            backup_keep: crate::catalog::backup::DEFAULT_KEEP.to_string(),
        }
    }
}
