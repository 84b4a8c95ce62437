//! Command-line definitions of the reporting commands (clap derive only; no logic here).

use std::path::PathBuf;

use clap::{Args, Subcommand};

const STATES: [&str; 5] = [
    "resident",
    "premigrated",
    "stub",
    "recalling",
    "restore_pending",
];

#[derive(Debug, Args)]
pub struct LsArgs {
    /// A directory (or file) inside a coldtier mount; default: the current directory.
    pub dir: Option<PathBuf>,
    /// Show entries whose names start with `.` too.
    #[arg(short, long)]
    pub all: bool,
    /// Sizes in KiB, MiB, GiB ...
    #[arg(short = 'H', long)]
    pub human: bool,
    /// One JSON object per entry and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Only files in this state (repeat or separate with commas for several).
    #[arg(long, value_delimiter = ',', value_parser = STATES)]
    pub state: Vec<String>,
    /// Only files not modified for this long, e.g. "90d", "12h", "2w".
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Only files larger than this, e.g. "100MiB", "1GB", 4096.
    #[arg(long, value_name = "SIZE")]
    pub larger_than: Option<String>,
    /// Only paths matching this glob, relative to the mount point (or absolute inside
    /// it); `*` and `?` also match `/`, `[...]` a set: "projects/*.iso".
    #[arg(long, value_name = "GLOB")]
    pub path: Option<String>,
    /// Only pinned files.
    #[arg(long)]
    pub pinned: bool,
    /// Print only how many files match and their bytes.
    #[arg(long)]
    pub count: bool,
    /// At most this many files.
    #[arg(long)]
    pub limit: Option<u64>,
    /// One JSON object per file and line (with --count: one object).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Only events at or after this time: "2026-11-30", "2026-11-30T08:00:00Z" (UTC), or a
    /// duration ago: "24h", "7d".
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events of this type (STUBBED, RECALLED, ...; repeat or separate with commas).
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Only events of this file, or of anything below this directory (the file may be
    /// gone: the path is not looked up).
    #[arg(long, value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Only events after this event id (resume an export where the last one stopped).
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub after: i64,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// One JSON object per event and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    /// The mount point (or any path inside the mount).
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,
    /// The newest this many runs (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// One JSON object per run and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Stop the running policy run or gc cleanly: the files under way are finished, no
    /// other is started.
    Cancel(JobsCancelArgs),
}

#[derive(Debug, Args)]
pub struct JobsCancelArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Only if this job is the one running.
    #[arg(long)]
    pub id: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a config version (default: the one in force); secrets are redacted.
    Show {
        /// The mount point (or any path inside the mount).
        mountpoint: PathBuf,
        /// The version number (see `config history`).
        version: Option<i64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the config versions: number, time, SHA-256.
    History {
        /// The mount point (or any path inside the mount).
        mountpoint: PathBuf,
        /// One JSON object per version and line.
        #[arg(long)]
        json: bool,
    },
    /// Show what changed between two config versions.
    Diff {
        /// The mount point (or any path inside the mount).
        mountpoint: PathBuf,
        /// The older version.
        from: i64,
        /// The newer version.
        to: i64,
        /// Print one JSON object with the changed lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Write coldtier.1 and one coldtier-COMMAND.1 per command into this directory
    /// (default: print coldtier.1 to stdout).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
