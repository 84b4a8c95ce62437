//! Command-line definitions (clap derive only; no logic lives here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Restart a mount's daemon without unmounting (after an upgrade of the binary):
    /// the running daemon answers what it serves and hands the connection to a new one
    /// started from the binary on disk; clients see a pause, not an error.
    Restart(RestartArgs),
    /// Run the tiering policy now (the daemon does the work) and wait for it.
    Migrate(MigrateArgs),
    /// Copy the files named to the store now (with --release, and stub them), whatever
    /// their age and size; pinned and excluded files are left alone and reported.
    Archive(ArchiveArgs),
    /// Show the tiering state of files: resident, premigrated, stub, recalling, restore_pending.
    Status(PathsArgs),
    /// Pin files: their data is never freed (pinning does not recall a stub).
    Pin(PathsArgs),
    /// Unpin files.
    Unpin(PathsArgs),
    /// Bring stubs' data back now (waits for it).
    Recall(RecallArgs),
    /// Free the local data of premigrated files now (they become stubs).
    Release(ReleaseArgs),
    /// Show every event of one file, with the config version in force.
    History(HistoryArgs),
    /// Delete the objects of deleted and superseded files whose retention has passed.
    Gc(GcArgs),
    /// Copy to a [[replica]] target every object it lacks (archived ones are restored
    /// first), verified there; resumable, idempotent.
    Replicate(ReplicateArgs),
    /// Per [[replica]] target: objects and bytes replicated and missing, the last run, and
    /// what is missing.
    Replicas(ReplicasArgs),
    /// Compare the catalog, the files' records and the bucket; report (never repair) what
    /// disagrees. Exit 1 when anything is wrong.
    Verify(VerifyArgs),
    /// Protect the catalog: back it up, or rebuild a lost one.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// List a directory like `ls -l`, with each file's tiering state (never recalls).
    Ls(LsArgs),
    /// Find tracked files in the catalog by state, age, size and path.
    Find(FindArgs),
    /// Files and bytes per state and storage class, space saved, estimated monthly cost.
    Stats(StatsArgs),
    /// The audit trail: events, filtered (JSON lines with --json, for a SIEM).
    Events(EventsArgs),
    /// Policy runs: start, end, files and bytes copied, stubbed, failed.
    Jobs(JobsArgs),
    /// Every coldtier mount on this machine: source, mount point, daemon pid, version,
    /// config file and version in force, store, catalog, metrics address.
    Mounts(MountsArgs),
    /// Recalls in flight, queued (deferred by a rule) and waiting for an archive restore:
    /// file, size, bytes done, who, since when; `recalls cancel` stops them.
    Recalls(RecallsArgs),
    /// The config versions the daemon has run with: show, history, diff.
    Config(ConfigArgs),
    /// Check the event hash chain end to end; exit 1 and name the first broken link.
    Audit(AuditArgs),
    /// Pause tiering on a mount: no policy runs, gc or catalog uploads until `resume`
    /// (recalls go on). For store maintenance.
    Pause(MountpointArgs),
    /// Check the store (bucket, credentials, whether it validates checksums) and resume
    /// tiering if it works.
    Resume(MountpointArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print a man page (roff), or write them all into a man directory tree.
    Manpage(ManpageArgs),
}

#[derive(Debug, clap::Args)]
pub struct MountpointArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Also read every object back and compare its content's checksum with the record.
    #[arg(long)]
    pub deep: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Take a consistent snapshot of the catalog now, while the mount serves.
    Backup(CatalogBackupArgs),
    /// Rebuild a lost catalog from the records on disk and the bucket (offline).
    Rebuild(CatalogRebuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct CatalogBackupArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Where to: a directory (only there, nothing pruned), or `s3` (the bucket only).
    /// Default: catalog.backup_dir and the bucket, with catalog.backup_keep's retention.
    #[arg(long, value_name = "DIR|s3")]
    pub to: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CatalogRebuildArgs {
    /// The source directory (the backing tree); no daemon may serve it.
    pub source: PathBuf,
    /// The mount's configuration file (its [store] and [catalog]).
    #[arg(long)]
    pub config: PathBuf,
    /// Where the source is mounted, if not on itself (names the default catalog path).
    #[arg(long)]
    pub mountpoint: Option<PathBuf>,
    /// Rebuild even though a catalog file exists (it is kept aside, never deleted).
    #[arg(long)]
    pub force: bool,
    /// Read this [[replica]] target instead of the [store] (its objects carry the same
    /// keys and metadata).
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The mount point (the whole mount), or a directory or file inside it (only that
    /// tree is scanned; pins and excludes hold as in a full run).
    pub mountpoint: PathBuf,
    /// Report what a stub run would do; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Override policy.mode for this run.
    #[arg(long, value_parser = ["dry-run", "copy-only", "stub"])]
    pub mode: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// Files (or, with -r, directories) inside a coldtier mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Recurse into directories.
    #[arg(short, long)]
    pub recursive: bool,
    /// Stub the files once their copies are verified (free their local data), as
    /// `release` does; without it they are only copied (premigrated).
    #[arg(long)]
    pub release: bool,
    /// Report what would be archived, left alone and freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub paths: PathsArgs,
    /// Report what would be released and the space it would free; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub out: BulkOutput,
}

#[derive(Debug, clap::Args)]
pub struct RecallArgs {
    #[command(flatten)]
    pub paths: PathsArgs,
    #[command(flatten)]
    pub out: BulkOutput,
}

/// What `recall` and `release` print: a progress bar (on a terminal) and a summary; one
/// line per file with -v; nothing but errors with -q.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BulkOutput {
    /// One line per file, as well as the summary.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print nothing but errors (no progress bar, no summary).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct PathsArgs {
    /// Files (or, with -r, directories) inside a coldtier mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Recurse into directories.
    #[arg(short, long)]
    pub recursive: bool,
    /// One JSON object per file and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// A file inside a coldtier mount.
    pub path: PathBuf,
    /// One JSON object per event and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplicateArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// The [[replica]] target, by name.
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// List what would be copied; copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplicasArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Print every file whose object a target lacks, not only the first 20.
    #[arg(long)]
    pub all: bool,
    /// One JSON object per target and line (with every missing file).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// The directory to serve (the backing tree); may be left out when the config file sets
    /// `mount.source`.
    pub source: Option<PathBuf>,
    /// Where to mount; defaults to `mount.mountpoint` of the config, else to SOURCE (the
    /// mount then hides the directory it serves).
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
    /// Mount even if the store cannot be reached or used, with tiering paused: no policy
    /// runs, gc or catalog uploads until `coldtier resume` finds the store working.
    /// Stubs are still recalled when the store answers. Without it, a store that fails
    /// its check at mount (missing bucket, wrong credentials, unreachable) is refused.
    #[arg(long)]
    pub paused: bool,
    /// Mount options, comma-separated (may repeat), as mount(8) and /etc/fstab give them:
    /// ro, rw, nosuid, suid, nodev, dev, noexec, exec, noatime, atime, relatime, sync,
    /// async, dirsync apply to the mount; config=FILE and paused are coldtier's own (as
    /// --config and --paused); defaults, auto, noauto, user, nouser, users, _netdev,
    /// nofail, comment=... and x-... are for mount(8) and systemd and are ignored.
    #[arg(short = 'o', long = "options", value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Internal: run as the daemon of a supervisor (`COLDTIER_CHILD` names what it
    /// inherits). Not for people.
    #[arg(long, hide = true)]
    pub child: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// The mount point of a coldtier mount.
    pub mountpoint: PathBuf,
    /// Seconds to wait for the new daemon to serve.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point of a coldtier mount.
    pub mountpoint: PathBuf,
    /// If the mount is busy, detach it now and let the daemon finish once the last open file closes.
    #[arg(long)]
    pub lazy: bool,
    /// Seconds to wait for the unmount (which waits for the daemon's answer) and then for
    /// the daemon to exit.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// If the daemon has not answered the unmount within --timeout seconds (it is stopped
    /// or hung), abort its FUSE connection: requests it has not answered fail, and data
    /// not yet handed to it (dirty pages of the mount) is lost.
    #[arg(long)]
    pub force: bool,
}

// ---- the reporting commands ----------------------------------------------------------

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
    /// Only members of packs: of any pack (`any`) or of the pack with this id (as
    /// `--json` shows in `pack_id`).
    #[arg(long, value_name = "ID|any")]
    pub pack: Option<String>,
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
    /// Recalls by program and user since this time: "2026-11-30", "2026-11-30T08:00:00Z"
    /// (UTC), or a duration ago: "24h" (the default), "7d".
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
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
    /// other is started. With --worker: cancel what that background worker is doing.
    Cancel(JobsCancelArgs),
    /// The daemon's background workers (policy and backup schedulers, tagger, restore
    /// pollers): state, runs, errors, last error, status.
    Workers(JobsWorkersArgs),
}

#[derive(Debug, Args)]
pub struct MountsArgs {
    /// One JSON object per mount and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RecallsArgs {
    #[command(subcommand)]
    pub command: Option<RecallsCommand>,
    /// The mount point (or any path inside the mount).
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,
    /// One JSON object per recall and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum RecallsCommand {
    /// Stop recalls cleanly: each file stays a stub (its readers get ECANCELED; a
    /// RECALL_FAILED event says it was cancelled); queued ones leave the queue.
    Cancel(RecallsCancelArgs),
}

#[derive(Debug, Args)]
pub struct RecallsCancelArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// The recall's ID (as `coldtier recalls` shows it).
    #[arg(required_unless_present_any = ["uid", "all"], conflicts_with_all = ["uid", "all"])]
    pub id: Option<u64>,
    /// Every recall this user started.
    #[arg(long, conflicts_with = "all")]
    pub uid: Option<u32>,
    /// Every recall.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct JobsCancelArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// Only if this job is the one running.
    #[arg(long)]
    pub id: Option<i64>,
    /// Cancel the piece of work this background worker is doing (its ID in `coldtier jobs
    /// workers`); the worker then waits for its next.
    #[arg(long, value_name = "ID", conflicts_with = "id")]
    pub worker: Option<u64>,
}

#[derive(Debug, Args)]
pub struct JobsWorkersArgs {
    /// The mount point (or any path inside the mount).
    pub mountpoint: PathBuf,
    /// One JSON object per worker and line.
    #[arg(long)]
    pub json: bool,
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
    /// The page to print: coldtier (the default), coldtier-COMMAND (coldtier-migrate,
    /// coldtier-catalog-rebuild ...) or coldtier.toml (the config file, section 5).
    #[arg(conflicts_with = "dir")]
    pub page: Option<String>,
    /// Write every page into this man tree instead: DIR/man1/coldtier.1, one
    /// DIR/man1/coldtier-COMMAND.1 per command, DIR/man5/coldtier.toml.5.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
