//! The catalog's metrics: the time of write transactions, and the gauges the catalog
//! already knows (files and bytes per state, restores pending), read at scrape time and
//! never kept twice.

use std::fmt::Write as _;

use crate::base::metrics::{header, histogram, Histogram};

use super::{Catalog, FileState};

/// One write transaction of the catalog, the wait for the writer lock included.
pub static CATALOG_WRITE_SECONDS: Histogram = Histogram::new(&[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
]);

/// Renders the write histogram, and the per-state gauges of `catalog` when there is one.
pub fn render(out: &mut String, catalog: Option<&Catalog>) {
    histogram(
        out,
        "coldtier_catalog_write_duration_seconds",
        "Catalog write transactions, the wait for the writer included.",
        &CATALOG_WRITE_SECONDS,
    );
    let Some(cat) = catalog else {
        return;
    };
    let counts = match cat.state_counts() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("metrics: catalog: {e}");
            return;
        }
    };
    match cat.alert_facts() {
        Ok(f) => {
            let secs = |ns: i64| ns as f64 / 1e9;
            for (name, help, v) in [
                (
                    "coldtier_last_policy_run_timestamp_seconds",
                    "When the last policy run (migrate, scheduled, archive; not a dry run) ended; 0: never.",
                    secs(f.last_run_ns),
                ),
                (
                    "coldtier_last_policy_run_success_timestamp_seconds",
                    "When the last policy run that failed no file and reported no error ended; 0: never.",
                    secs(f.last_ok_run_ns),
                ),
                (
                    "coldtier_last_policy_run_failed_files",
                    "Files the last policy run failed.",
                    f.last_run_failed as f64,
                ),
                (
                    "coldtier_last_catalog_backup_timestamp_seconds",
                    "When the last catalog backup was made (CATALOG_BACKUP event); 0: never.",
                    secs(f.last_backup_ns),
                ),
            ] {
                header(out, name, "gauge", help);
                let _ = writeln!(out, "{name} {v}");
            }
        }
        Err(e) => tracing::warn!("metrics: catalog: {e}"),
    }
    let pending = counts
        .iter()
        .find(|c| c.state == FileState::RestorePending)
        .map_or(0, |c| c.files);
    header(
        out,
        "coldtier_restores_pending",
        "gauge",
        "Stubs whose archived object is being restored (state restore_pending).",
    );
    let _ = writeln!(out, "coldtier_restores_pending {pending}");
    header(
        out,
        "coldtier_files",
        "gauge",
        "Files the catalog tracks, by state.",
    );
    for c in &counts {
        let _ = writeln!(
            out,
            "coldtier_files{{state=\"{}\"}} {}",
            c.state.as_str(),
            c.files
        );
    }
    header(
        out,
        "coldtier_file_bytes",
        "gauge",
        "Bytes (file sizes) of the files the catalog tracks, by state.",
    );
    for c in &counts {
        let _ = writeln!(
            out,
            "coldtier_file_bytes{{state=\"{}\"}} {}",
            c.state.as_str(),
            c.bytes
        );
    }
}
