//! coldtier: a FUSE overlay over a file share that tiers cold files to S3 (library part;
//! the binary in main.rs only parses the command line and calls in here).

pub mod catalog;
pub mod cli;
pub mod cli_reports;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fs;
pub mod inspect;
pub mod mountinfo;
pub mod progress;
pub mod store;
pub mod tier;

use std::path::Path;

/// Sets up tracing: to stderr in the foreground (journald shows it), else to the log file.
pub fn init_logging(filter: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("bad log filter `{filter}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
