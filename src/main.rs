//! coldtier: parse the command line, run it, turn the outcome into an exit code.

mod cli;
mod config;
mod daemon;
mod fs;
mod mountinfo;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

/// Sets up tracing: to stderr in the foreground (journald shows it), else to the log file.
pub(crate) fn init_logging(filter: &str, file: Option<&Path>) -> anyhow::Result<()> {
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

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match &cli.command {
        cli::Command::Mount(a) => daemon::mount(a, &cli.log),
        cli::Command::Umount(a) => daemon::umount(a),
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldtier: {e:#}");
            if e.downcast_ref::<daemon::BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
