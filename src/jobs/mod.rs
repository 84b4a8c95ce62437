//! Background jobs of a mounted daemon, each a [`Worker`](crate::base::worker::Worker) on
//! the engine's one runner (`Tiering::workers`): the policy scheduler, the catalog backup
//! scheduler; the engine itself runs its tagger and restore pollers there. `coldtier jobs
//! workers` lists them with their status and last error.
//!
//! Layer: imports base, store, catalog and tier; nothing below imports it.

pub mod backup;
pub mod policy;
pub mod schedule;

use std::sync::Arc;

use crate::tier::context::Tiering;

/// Starts the daemon's scheduled workers.
pub fn start(t: &Arc<Tiering>) {
    t.workers
        .spawn(policy::PolicyScheduler { t: t.clone() }, false);
    t.workers
        .spawn(backup::BackupScheduler { t: t.clone() }, false);
}
