//! Command-line definitions (clap derive only; no logic lives here).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "coldtier",
    version,
    about = "Tier cold files of a share to S3, recall them transparently"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "coldtier=debug".
    #[arg(long, global = true, env = "COLDTIER_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount the overlay over SOURCE (at MOUNTPOINT, by default on SOURCE itself).
    Mount(MountArgs),
    /// Unmount a coldtier mount cleanly, waiting for its daemon to finish.
    Umount(UmountArgs),
}

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The directory to serve (the backing tree).
    pub source: PathBuf,
    /// Where to mount; defaults to SOURCE (the mount then hides the directory it serves).
    pub mountpoint: Option<PathBuf>,
    /// Configuration file (TOML). Every key has a default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stay in the foreground (for systemd and debugging); logs go to stderr.
    #[arg(long)]
    pub foreground: bool,
    /// Log file for the daemon when not in the foreground.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point of a coldtier mount.
    pub mountpoint: PathBuf,
    /// If the mount is busy, detach it now and let the daemon finish once the last open file closes.
    #[arg(long)]
    pub lazy: bool,
    /// Seconds to wait for the daemon to exit after the unmount.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}
