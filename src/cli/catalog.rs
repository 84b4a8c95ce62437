//! `coldtier catalog backup`: a consistent snapshot of the catalog, taken by the daemon
//! while the mount serves. (`catalog rebuild` runs offline, in this process: main.rs
//! dispatches it to the daemon module.)

use anyhow::anyhow;

use super::args::CatalogBackupArgs;
use super::output::print_json_line;
use super::request::{call_typed, client_for};
use super::BadInput;
use crate::base::units::human_bytes;
use crate::control::protocol::Op;
use crate::control::replies::BackupReport;

pub(super) fn backup(a: &CatalogBackupArgs) -> anyhow::Result<()> {
    let to = match a.to.as_deref() {
        None | Some("s3") => a.to.clone(),
        Some(d) => Some(
            std::path::absolute(d)
                .map_err(|e| BadInput(format!("--to {d}: {e}")))?
                .to_string_lossy()
                .into_owned(),
        ),
    };
    let mut c = client_for(&a.mountpoint)?;
    let r: BackupReport = call_typed(&mut c, Op::CatalogBackup { to })?;
    if a.json {
        print_json_line(&r);
    } else {
        println!(
            "catalog backup {}: {} ({} files, {} events, head event {})",
            r.file,
            human_bytes(r.bytes),
            r.files,
            r.events,
            r.last_event_id
        );
        if let Some(p) = &r.local_path {
            println!("  local: {p}");
        }
        if let Some(k) = &r.object_key {
            println!("  store: {k}");
        }
        for p in r.pruned_local.iter().chain(&r.pruned_store) {
            println!("  pruned: {p}");
        }
    }
    if !r.errors.is_empty() {
        for e in &r.errors {
            eprintln!("coldtier catalog backup: {e}");
        }
        return Err(anyhow!(
            "the backup is taken locally, but {} steps failed",
            r.errors.len()
        ));
    }
    Ok(())
}
