//! `coldtier catalog backup`: a consistent snapshot of the catalog, taken by the daemon
//! while the mount serves. (`catalog rebuild` runs offline, in this process: main.rs
//! dispatches it to the daemon module.)

use anyhow::anyhow;

use super::args::CatalogBackupArgs;
use super::output::print_json_line;
use super::request::{call, client_for};
use super::BadInput;
use crate::base::units::human_bytes;
use crate::control::protocol::Op;

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
    let r = call(&mut c, Op::CatalogBackup { to })?;
    if a.json {
        print_json_line(&r);
    } else {
        println!(
            "catalog backup {}: {} ({} files, {} events, head event {})",
            r["file"].as_str().unwrap_or(""),
            human_bytes(r["bytes"].as_u64().unwrap_or(0)),
            r["files"],
            r["events"],
            r["last_event_id"]
        );
        if let Some(p) = r["local_path"].as_str() {
            println!("  local: {p}");
        }
        if let Some(k) = r["object_key"].as_str() {
            println!("  store: {k}");
        }
        for k in ["pruned_local", "pruned_store"] {
            for p in r[k].as_array().into_iter().flatten() {
                println!("  pruned: {}", p.as_str().unwrap_or(""));
            }
        }
    }
    let errors = r["errors"].as_array().map_or(0, |v| v.len());
    if errors > 0 {
        for e in r["errors"].as_array().into_iter().flatten() {
            eprintln!("  error: {}", e.as_str().unwrap_or(""));
        }
        return Err(anyhow!(
            "the backup is taken locally, but {errors} steps failed"
        ));
    }
    Ok(())
}
