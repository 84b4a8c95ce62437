//! The man pages: one per command, named as the command is typed (`coldtier-catalog-rebuild`
//! is `coldtier catalog rebuild`), from the clap definitions plus EXIT STATUS, FILES,
//! ENVIRONMENT, EXAMPLES and SEE ALSO; and `coldtier.toml(5)`, made from the commented
//! example config (`systemd/coldtier.example.toml`, which the package installs as
//! `/etc/coldtier/coldtier.toml.example`), so the page and the example never disagree.

use clap_mangen::roff::{bold, italic, roman, Roff};

/// The commented example config: the source of `coldtier.toml(5)`.
const EXAMPLE_CONFIG: &str = include_str!("../../../systemd/coldtier.example.toml");

/// Where the package installs the example config (a conffile).
const EXAMPLE_PATH: &str = "/etc/coldtier/coldtier.toml.example";

/// One man page: its name (`coldtier-migrate`), section and roff text.
pub(crate) struct Page {
    pub name: String,
    pub section: &'static str,
    pub text: String,
}

impl Page {
    /// The file name: `coldtier-migrate.1`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.section)
    }

    /// How other pages name it: `coldtier-migrate(1)`.
    #[cfg(test)]
    pub fn reference(&self) -> String {
        format!("{}({})", self.name, self.section)
    }
}

/// Every page: coldtier(1), one per command and subcommand, coldtier.toml(5).
pub(crate) fn all(cmd: clap::Command) -> Vec<Page> {
    // `help` is a clap subcommand, not one of ours: no page, and no entry in SUBCOMMANDS.
    let mut cmd = without_help_subcommands(cmd);
    cmd.build();
    let mut pages = Vec::new();
    command_pages(&cmd, &mut Vec::new(), &mut pages);
    pages.push(config_page());
    pages
}

fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd.disable_help_subcommand(true);
    for n in names {
        cmd = cmd.mut_subcommand(n, without_help_subcommands);
    }
    cmd
}

fn command_pages(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Page>) {
    out.push(command_page(cmd, path));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        path.push(sub.get_name().to_string());
        command_pages(sub, path, out);
        path.pop();
    }
}

fn version() -> String {
    format!("coldtier {}", env!("CARGO_PKG_VERSION"))
}

/// `coldtier-catalog-rebuild`, as clap names the page of `coldtier catalog rebuild`.
fn page_name(path: &[String]) -> String {
    std::iter::once("coldtier")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("-")
}

fn command_page(cmd: &clap::Command, path: &[String]) -> Page {
    let name = page_name(path);
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.clone())
        .source(version())
        .manual("coldtier manual");
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut buf);
    let _ = man.render_name_section(&mut buf);
    let _ = man.render_synopsis_section(&mut buf);
    let _ = man.render_description_section(&mut buf);
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        let _ = man.render_options_section(&mut buf);
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        let _ = man.render_subcommands_section(&mut buf);
    }
    let key = path.join(" ");
    let extra = extra(&key);
    let mut r = Roff::new();
    exit_status(&mut r, &extra);
    files(&mut r, &extra);
    environment(&mut r, &extra);
    examples(&mut r, extra.examples);
    let mut see: Vec<String> = Vec::new();
    if !path.is_empty() {
        see.push(format!("{}(1)", page_name(&path[..path.len() - 1])));
    }
    see.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| {
        let mut p = path.to_vec();
        p.push(s.get_name().to_string());
        format!("{}(1)", page_name(&p))
    }));
    see.extend(extra.see_also.iter().map(|s| s.to_string()));
    see_also(&mut r, see);
    if path.is_empty() {
        r.control("SH", ["VERSION"]).text([roman(version())]);
    }
    let _ = r.to_writer(&mut buf);
    Page {
        name,
        section: "1",
        text: String::from_utf8_lossy(&buf).into_owned(),
    }
}

// ---- the sections clap does not write ------------------------------------------------

/// What a command's page says beyond its clap definition.
struct Extra {
    /// When it exits 0, 1, 2 (`None`: the general wording).
    ok: Option<&'static str>,
    failed: Option<&'static str>,
    bad: Option<&'static str>,
    files: &'static [(&'static str, &'static str)],
    env: &'static [(&'static str, &'static str)],
    /// (what it does, the command).
    examples: &'static [(&'static str, &'static str)],
    /// Pages besides coldtier(1)'s family (parent, subcommands), which are added.
    see_also: &'static [&'static str],
}

const F_CONFIG: (&str, &str) = (
    "/etc/coldtier/NAME.toml",
    "The configuration of one mount, coldtier.toml(5); the one the systemd unit \
     coldtier@NAME.service mounts with. Keep it mode 0600 if it holds S3 credentials.",
);
const F_EXAMPLE: (&str, &str) = (
    EXAMPLE_PATH,
    "Every configuration key with its default, explained (installed by the package; \
     copy it to /etc/coldtier/NAME.toml).",
);
const F_UNIT: (&str, &str) = (
    "/lib/systemd/system/coldtier@.service",
    "The systemd unit: one mount per instance, coldtier@NAME.service mounts with \
     /etc/coldtier/NAME.toml and fails to start (an assertion) when that file is missing.",
);
const F_HELPER: (&str, &str) = (
    "/usr/sbin/mount.fuse.coldtier",
    "The mount(8) helper for mount -t fuse.coldtier and /etc/fstab lines of type \
     fuse.coldtier: runs coldtier mount SOURCE MOUNTPOINT -o OPTIONS (the binary: \
     $COLDTIER_BIN, else coldtier beside the helper, else in PATH).",
);
const F_CATALOG: (&str, &str) = (
    "/var/lib/coldtier/NAME.db",
    "The SQLite catalog of a mount (catalog.path), NAME being the mount point escaped like \
     systemd-escape --path (/srv/share: srv-share). Beside it: NAME.db-wal and NAME.db-shm \
     (SQLite), NAME.db.lock (held by the daemon), NAME.db.handles (node ids handed to the \
     kernel), backups/ (catalog backups, catalog.backup_dir). All root's alone (0600, \
     directories 0700).",
);
const F_BACKUPS: (&str, &str) = (
    "/var/lib/coldtier/backups/",
    "Catalog backups (the default catalog.backup_dir: backups/ beside the catalog), \
     named NAME-YYYYMMDDTHHMMSS.mmmZ.db; in the bucket under PREFIX/catalog/.",
);
const F_SOCKET: (&str, &str) = (
    "/run/coldtier/HEX.sock",
    "The control socket of a mount's daemon (HEX: the mount point's bytes in hex). \
     Every command but mount, umount, restart, catalog rebuild, completions and manpage \
     finds the mount of its path and asks its daemon through it.",
);
const F_RUNTIME: (&str, &str) = (
    "/run/coldtier/mounts/HEX.pid",
    "The runtime record of a mount: the daemon's pid (line 1), source, mount point, the \
     supervisor's pid (line 4); beside it HEX.backing (the kernel passthrough \
     registrations handed to a restarted daemon).",
);
const F_LOCKS: (&str, &str) = (
    "/run/coldtier/locks/",
    "Locks on the sources (source-DEV-INO.lock): one daemon per source directory.",
);
const F_LOG: (&str, &str) = (
    "/var/log/coldtier/MOUNTPOINT.log",
    "The log of a daemon not in the foreground (the mount point with every character \
     other than a letter or digit as -, e.g. srv-share.log), unless --log-file says \
     otherwise. SIGHUP reopens it.",
);
const F_DOC: (&str, &str) = (
    "/usr/share/doc/coldtier/",
    "README.md and the guides: operations.md (running, monitoring, recovering), \
     semantics.md (what applications see), store.md (the object stores), catalog.md \
     (the catalog), architecture.md.",
);

const E_LOG: (&str, &str) = (
    "COLDTIER_LOG",
    "The log filter (tracing EnvFilter syntax: info, coldtier=debug ...), as --log, \
     which wins over it. Default: info.",
);
const E_AWS: (&str, &str) = (
    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, \
     AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE",
    "The standard AWS credential chain (these variables, then the shared config and \
     credentials files, web identity, ECS and EC2 instance metadata), used by an s3 store \
     whose [store] sets no access_key and secret_key. Under systemd, give them to the \
     unit in a drop-in (Environment= or EnvironmentFile=, a file of mode 0600).",
);
const E_NOTIFY: (&str, &str) = (
    "NOTIFY_SOCKET",
    "Set by systemd for a Type=notify service: the daemon sends READY=1 once the mount \
     serves and its control socket answers, STATUS= lines, and STOPPING=1 when it \
     unmounts. Unset: nothing is sent.",
);
const E_JOURNAL: (&str, &str) = (
    "JOURNAL_STREAM",
    "Set by systemd when stderr is the journal: each log line then carries its syslog \
     priority, so journalctl -p filters work.",
);
const E_CHILD: (&str, &str) = (
    "COLDTIER_CHILD",
    "Internal: set by a mount's supervisor for the daemon it starts (coldtier mount \
     --child). Never set it yourself.",
);

const E_CLIENT: &[(&str, &str)] = &[E_LOG];
const F_CLIENT: &[(&str, &str)] = &[F_SOCKET, F_RUNTIME];

fn extra(command: &str) -> Extra {
    let base = Extra {
        ok: None,
        failed: None,
        bad: None,
        files: F_CLIENT,
        env: E_CLIENT,
        examples: &[],
        see_also: &[],
    };
    match command {
        "" => Extra {
            files: &[
                F_CONFIG, F_EXAMPLE, F_CATALOG, F_LOG, F_SOCKET, F_RUNTIME, F_UNIT, F_HELPER,
                F_DOC,
            ],
            env: &[E_LOG, E_AWS, E_NOTIFY, E_JOURNAL],
            examples: &[
                (
                    "Start from the example config (set [mount], [store] and [policy]):",
                    "cp /etc/coldtier/coldtier.toml.example /etc/coldtier/srv-share.toml",
                ),
                (
                    "Mount /srv/share over itself; returns once the mount serves:",
                    "coldtier mount /srv/share --config /etc/coldtier/srv-share.toml",
                ),
                (
                    "Or run it under systemd (the config's name is the instance's):",
                    "systemctl enable --now coldtier@srv-share",
                ),
                (
                    "What a policy run would tier, then run it:",
                    "coldtier migrate /srv/share --dry-run; coldtier migrate /srv/share",
                ),
                (
                    "The tiering state of a tree, and a file's events:",
                    "coldtier status -r /srv/share/archive; coldtier history /srv/share/archive/old.bin",
                ),
                ("Unmount cleanly:", "coldtier umount /srv/share"),
            ],
            see_also: &["coldtier.toml(5)"],
            ..base
        },
        "mount" => Extra {
            ok: Some(
                "The mount serves (the command returns then). With --foreground: the daemon \
                 unmounted cleanly (SIGTERM, coldtier umount).",
            ),
            failed: Some(
                "The mount failed for another reason, or (with --foreground) the daemon \
                 stopped with an error; stderr (the journal, the log) says why.",
            ),
            bad: Some(
                "Bad input, nothing mounted: a missing or unreadable config file, an unknown \
                 key or a bad value (named), SOURCE missing or differing from mount.source, a \
                 mount point in use or inside another coldtier mount, an unknown -o option, \
                 no /dev/fuse, not root, or a store that fails its check (see --paused). \
                 The unit does not restart on it (RestartPreventExitStatus=2).",
            ),
            files: &[
                F_CONFIG, F_EXAMPLE, F_CATALOG, F_LOG, F_SOCKET, F_RUNTIME, F_LOCKS, F_UNIT,
                F_HELPER,
            ],
            env: &[E_LOG, E_AWS, E_NOTIFY, E_JOURNAL, E_CHILD],
            examples: &[
                (
                    "Mount /srv/share over itself with a config file:",
                    "coldtier mount /srv/share --config /etc/coldtier/srv-share.toml",
                ),
                (
                    "What the systemd unit runs (SOURCE and MOUNTPOINT from [mount]):",
                    "coldtier mount --foreground --config /etc/coldtier/srv-share.toml",
                ),
                (
                    "Mount while the store is down, tiering paused until coldtier resume:",
                    "coldtier mount /srv/share --config /etc/coldtier/srv-share.toml --paused",
                ),
                (
                    "Through mount(8) and the helper (an fstab line takes the same options):",
                    "mount -t fuse.coldtier /srv/share /srv/share -o config=/etc/coldtier/srv-share.toml,nosuid,nodev",
                ),
                (
                    "Under systemd:",
                    "systemctl enable --now coldtier@srv-share",
                ),
            ],
            see_also: &[
                "coldtier.toml(5)",
                "coldtier-umount(1)",
                "coldtier-restart(1)",
                "coldtier-mounts(1)",
                "coldtier-resume(1)",
            ],
        },
        "umount" => Extra {
            ok: Some("Unmounted, and the daemon has exited."),
            failed: Some(
                "The mount is busy (files are open: --lazy detaches it now), or the daemon \
                 did not exit within --timeout.",
            ),
            files: &[F_RUNTIME, F_LOG],
            examples: &[
                ("Unmount; refused while files are open:", "coldtier umount /srv/share"),
                (
                    "Detach now; the daemon exits when the last open file closes:",
                    "coldtier umount --lazy /srv/share",
                ),
                (
                    "A mount that systemd runs: prefer",
                    "systemctl stop coldtier@srv-share",
                ),
            ],
            see_also: &["coldtier-mount(1)"],
            ..base
        },
        "restart" => Extra {
            ok: Some("A new daemon, started from the binary on disk, serves the mount."),
            failed: Some(
                "The handover failed, or the new daemon did not serve within --timeout.",
            ),
            files: &[F_RUNTIME, F_LOG],
            examples: &[(
                "After installing a new coldtier binary (a package upgrade), without unmounting:",
                "coldtier restart /srv/share",
            )],
            see_also: &["coldtier-mount(1)", "coldtier-mounts(1)"],
            ..base
        },
        "migrate" => Extra {
            failed: Some(
                "A file failed (each is a WARN line in the log), the run was cancelled \
                 (coldtier jobs cancel), or the daemon did not answer.",
            ),
            examples: &[
                (
                    "What a stub run would do; changes nothing:",
                    "coldtier migrate /srv/share --dry-run",
                ),
                (
                    "Copy and verify only (files become premigrated, data stays local):",
                    "coldtier migrate /srv/share --mode copy-only",
                ),
                (
                    "Run the configured policy.mode on the whole mount:",
                    "coldtier migrate /srv/share",
                ),
                (
                    "The policy on one tree only:",
                    "coldtier migrate /srv/share/projects/old",
                ),
            ],
            see_also: &[
                "coldtier.toml(5)",
                "coldtier-jobs(1)",
                "coldtier-status(1)",
                "coldtier-release(1)",
            ],
            ..base
        },
        "status" => Extra {
            failed: Some("A path failed (one line on stderr each)."),
            examples: &[
                (
                    "The state, pin, size, storage class and object key of every file below a directory:",
                    "coldtier status -r /srv/share/projects",
                ),
                (
                    "One file, as JSON:",
                    "coldtier status --json /srv/share/big.iso",
                ),
            ],
            see_also: &["coldtier-ls(1)", "coldtier-find(1)", "coldtier-history(1)"],
            ..base
        },
        "pin" => Extra {
            failed: Some("A path failed (one line on stderr each)."),
            examples: &[(
                "Never free the data of a tree:",
                "coldtier pin -r /srv/share/projects/live",
            )],
            see_also: &["coldtier-unpin(1)", "coldtier-status(1)"],
            ..base
        },
        "unpin" => Extra {
            failed: Some("A path failed (one line on stderr each)."),
            examples: &[(
                "Let the policy tier a tree again:",
                "coldtier unpin -r /srv/share/projects/live",
            )],
            see_also: &["coldtier-pin(1)", "coldtier-status(1)"],
            ..base
        },
        "replicate" => Extra {
            failed: Some(
                "An object failed to copy (each one a line on stderr; the next run tries it \
                 again), the target does not exist, or the run was cancelled.",
            ),
            examples: &[
                (
                    "What the target `offsite` lacks; copies nothing:",
                    "coldtier replicate /srv/share --to offsite --dry-run",
                ),
                (
                    "Backfill it (archived objects are restored first; run again for them):",
                    "coldtier replicate /srv/share --to offsite",
                ),
            ],
            see_also: &["coldtier-replicas(1)", "coldtier.toml(5)", "coldtier-jobs(1)"],
            ..base
        },
        "replicas" => Extra {
            examples: &[
                (
                    "Per target: replicated, missing, the last run, the first missing files:",
                    "coldtier replicas /srv/share",
                ),
                (
                    "Every missing file of every target, as JSON lines:",
                    "coldtier replicas /srv/share --json",
                ),
            ],
            see_also: &["coldtier-replicate(1)"],
            ..base
        },
        "archive" => Extra {
            failed: Some(
                "A file failed, or a path named cannot be archived at all (a directory \
                 without -r, not a regular file). Files left alone by a pin, an exclude or \
                 a hard link are reported (left alone PATH: why) and are not failures.",
            ),
            examples: &[
                (
                    "Copy a finished project now, whatever its age and size:",
                    "coldtier archive -r /srv/share/projects/done",
                ),
                (
                    "Copy and stub two files now (as lfs hsm_archive and hsm_release):",
                    "coldtier archive --release /srv/share/big.iso /srv/share/old.tar",
                ),
                (
                    "What it would copy, leave alone and free; changes nothing:",
                    "coldtier archive -r --release --dry-run /srv/share/projects/done",
                ),
            ],
            see_also: &[
                "coldtier-migrate(1)",
                "coldtier-release(1)",
                "coldtier-pin(1)",
                "coldtier.toml(5)",
            ],
            ..base
        },
        "recall" => Extra {
            failed: Some("A path failed (one line on stderr each)."),
            examples: &[
                (
                    "Bring a tree's data back now (a bar of the stubs, then a summary):",
                    "coldtier recall -r /srv/share/archive/2019",
                ),
                (
                    "The same, one line per file:",
                    "coldtier recall -r -v /srv/share/archive/2019",
                ),
            ],
            see_also: &["coldtier-recalls(1)", "coldtier-status(1)"],
            ..base
        },
        "release" => Extra {
            failed: Some(
                "A path failed (one line on stderr each): pinned, open, immutable, changed \
                 since its copy, or without a verified copy.",
            ),
            examples: &[
                (
                    "Free a premigrated file's data now:",
                    "coldtier release /srv/share/big.iso",
                ),
                (
                    "What a release would free; changes nothing:",
                    "coldtier release --dry-run -r /srv/share/old",
                ),
            ],
            see_also: &["coldtier-migrate(1)", "coldtier-recall(1)"],
            ..base
        },
        "history" => Extra {
            examples: &[
                (
                    "Every event of a file, with the config version in force:",
                    "coldtier history /srv/share/big.iso",
                ),
                (
                    "As JSON lines:",
                    "coldtier history --json /srv/share/big.iso",
                ),
            ],
            see_also: &["coldtier-events(1)", "coldtier-config-show(1)"],
            ..base
        },
        "gc" => Extra {
            failed: Some("A deletion failed."),
            examples: &[
                (
                    "The objects whose retention has passed:",
                    "coldtier gc /srv/share --dry-run",
                ),
                ("Delete them:", "coldtier gc /srv/share"),
            ],
            see_also: &["coldtier.toml(5)", "coldtier-verify(1)"],
            ..base
        },
        "verify" => Extra {
            ok: Some("Clean: the records, the catalog and the bucket agree."),
            failed: Some(
                "Findings (each one also a VERIFY_FINDING event), or verify could not run \
                 (e.g. the bucket is unreachable).",
            ),
            examples: &[
                (
                    "Do the records, the catalog and the bucket agree (a HEAD per object)?",
                    "coldtier verify /srv/share",
                ),
                (
                    "Also read every object back and compare checksums:",
                    "coldtier verify /srv/share --deep",
                ),
                ("One JSON object:", "coldtier verify /srv/share --json"),
            ],
            see_also: &["coldtier-audit(1)", "coldtier-catalog-rebuild(1)"],
            ..base
        },
        "catalog" => Extra {
            files: &[F_CATALOG, F_BACKUPS, F_SOCKET],
            examples: &[
                (
                    "A consistent backup now, while the mount serves:",
                    "coldtier catalog backup /srv/share",
                ),
                (
                    "Rebuild a lost catalog from the files' records and the bucket (offline):",
                    "coldtier catalog rebuild /srv/share --config /etc/coldtier/srv-share.toml",
                ),
            ],
            ..base
        },
        "catalog backup" => Extra {
            ok: Some("The backup was taken (and uploaded, and older ones pruned)."),
            failed: Some(
                "The backup failed, or it was taken locally but the upload or the pruning \
                 failed (the output says which).",
            ),
            files: &[F_CATALOG, F_BACKUPS, F_SOCKET],
            examples: &[
                (
                    "To catalog.backup_dir and the bucket:",
                    "coldtier catalog backup /srv/share",
                ),
                ("The bucket only:", "coldtier catalog backup /srv/share --to s3"),
                (
                    "Only to this directory (never pruned):",
                    "coldtier catalog backup /srv/share --to /mnt/usb/coldtier",
                ),
            ],
            see_also: &["coldtier.toml(5)"],
            ..base
        },
        "catalog rebuild" => Extra {
            ok: Some("Rebuilt with no problem."),
            failed: Some("Rebuilt with problems (listed), or failed."),
            bad: Some(
                "Bad input, nothing written: a daemon serves SOURCE, the catalog file exists \
                 (--force moves it aside), or a bad config.",
            ),
            files: &[F_CONFIG, F_CATALOG],
            env: &[E_LOG, E_AWS],
            examples: &[
                ("Unmount first:", "coldtier umount /srv/share"),
                (
                    "Rebuild from the files' records and the bucket:",
                    "coldtier catalog rebuild /srv/share --config /etc/coldtier/srv-share.toml",
                ),
                (
                    "Mount again:",
                    "coldtier mount /srv/share --config /etc/coldtier/srv-share.toml",
                ),
            ],
            see_also: &["coldtier.toml(5)", "coldtier-verify(1)", "coldtier-umount(1)"],
        },
        "ls" => Extra {
            examples: &[(
                "A directory with each file's state and pin, sizes in KiB, MiB ...:",
                "coldtier ls -H /srv/share/archive",
            )],
            see_also: &["coldtier-status(1)", "coldtier-find(1)"],
            ..base
        },
        "find" => Extra {
            examples: &[
                (
                    "How many stubs have not been modified for a year, and their bytes:",
                    "coldtier find /srv/share --state stub --older-than 1y --count",
                ),
                (
                    "The biggest resident files:",
                    "coldtier find /srv/share --state resident --larger-than 10GiB",
                ),
                (
                    "ISO images at any depth below projects/, as JSON lines:",
                    "coldtier find /srv/share --path 'projects/*.iso' --json",
                ),
                (
                    "How many files are in packs, and their bytes:",
                    "coldtier find /srv/share --pack any --count",
                ),
            ],
            see_also: &["coldtier-ls(1)", "coldtier-stats(1)"],
            ..base
        },
        "stats" => Extra {
            examples: &[
                ("Files and bytes per state, space saved, estimated cost:", "coldtier stats /srv/share"),
                (
                    "Recalls by program and user over the last week, as JSON:",
                    "coldtier stats /srv/share --since 7d --json",
                ),
            ],
            see_also: &["coldtier.toml(5)", "coldtier-find(1)"],
            ..base
        },
        "events" => Extra {
            examples: &[
                (
                    "The recalls of the last day:",
                    "coldtier events /srv/share --since 24h --type RECALLED",
                ),
                (
                    "An incremental export for a SIEM (the last id shipped was 1200):",
                    "coldtier events /srv/share --after 1200 --json",
                ),
            ],
            see_also: &["coldtier-history(1)", "coldtier-audit(1)"],
            ..base
        },
        "jobs" => Extra {
            examples: &[("The last ten policy runs:", "coldtier jobs /srv/share --limit 10")],
            see_also: &["coldtier-migrate(1)"],
            ..base
        },
        "jobs cancel" => Extra {
            ok: Some("Cancelled (or the worker was idle: nothing to cancel, said so)."),
            failed: Some("--worker ID names no running worker, or no run could be cancelled."),
            examples: &[
                ("Stop the running policy run or gc:", "coldtier jobs cancel /srv/share"),
                (
                    "Stop what background worker 3 is doing:",
                    "coldtier jobs cancel /srv/share --worker 3",
                ),
            ],
            ..base
        },
        "jobs workers" => Extra {
            examples: &[(
                "The schedulers, the tagger and the restore pollers:",
                "coldtier jobs workers /srv/share",
            )],
            ..base
        },
        "mounts" => Extra {
            examples: &[
                ("Every coldtier mount on this machine:", "coldtier mounts"),
                ("One JSON object per mount:", "coldtier mounts --json"),
            ],
            see_also: &["coldtier-mount(1)"],
            ..base
        },
        "recalls" => Extra {
            examples: &[(
                "Recalls in flight, queued and waiting for a restore:",
                "coldtier recalls /srv/share",
            )],
            see_also: &["coldtier-recall(1)", "coldtier.toml(5)"],
            ..base
        },
        "recalls cancel" => Extra {
            examples: &[
                ("Stop recall 42:", "coldtier recalls cancel /srv/share 42"),
                (
                    "Stop every recall user 2000 started:",
                    "coldtier recalls cancel /srv/share --uid 2000",
                ),
                ("Stop them all:", "coldtier recalls cancel /srv/share --all"),
            ],
            ..base
        },
        "config" => Extra {
            examples: &[
                ("The versions the daemon ran with:", "coldtier config history /srv/share"),
                ("What changed from version 3 to 4:", "coldtier config diff /srv/share 3 4"),
            ],
            see_also: &["coldtier.toml(5)"],
            ..base
        },
        "config show" => Extra {
            examples: &[
                ("The config in force:", "coldtier config show /srv/share"),
                ("Version 3:", "coldtier config show /srv/share 3"),
            ],
            see_also: &["coldtier.toml(5)"],
            ..base
        },
        "config history" => Extra {
            examples: &[(
                "Number, time and SHA-256 of each version:",
                "coldtier config history /srv/share",
            )],
            see_also: &["coldtier.toml(5)"],
            ..base
        },
        "config diff" => Extra {
            examples: &[(
                "What changed from version 3 to 4:",
                "coldtier config diff /srv/share 3 4",
            )],
            see_also: &["coldtier.toml(5)"],
            ..base
        },
        "audit" => Extra {
            ok: Some("The event chain is intact (the head is printed: keep it somewhere else)."),
            failed: Some("The event chain is broken: the first broken link is named."),
            examples: &[("Check the event hash chain:", "coldtier audit /srv/share")],
            see_also: &["coldtier-events(1)", "coldtier-verify(1)"],
            ..base
        },
        "pause" => Extra {
            examples: &[(
                "No policy runs, gc or catalog uploads until resume (recalls go on):",
                "coldtier pause /srv/share",
            )],
            see_also: &["coldtier-resume(1)"],
            ..base
        },
        "resume" => Extra {
            ok: Some("The store check passed; tiering is resumed."),
            failed: Some("The store check failed: tiering stays paused."),
            examples: &[(
                "Check the store and resume tiering if it works:",
                "coldtier resume /srv/share",
            )],
            see_also: &["coldtier-pause(1)", "coldtier-mount(1)"],
            ..base
        },
        "completions" => Extra {
            files: &[
                (
                    "/usr/share/bash-completion/completions/coldtier",
                    "The bash completions the package installs.",
                ),
                (
                    "/usr/share/zsh/vendor-completions/_coldtier",
                    "The zsh completions the package installs.",
                ),
                (
                    "/usr/share/fish/vendor_completions.d/coldtier.fish",
                    "The fish completions the package installs.",
                ),
            ],
            examples: &[
                (
                    "Install the bash completions by hand (the package installs them):",
                    "coldtier completions bash > /etc/bash_completion.d/coldtier",
                ),
                (
                    "Try them in the running shell:",
                    "source <(coldtier completions bash)",
                ),
            ],
            see_also: &["coldtier-manpage(1)"],
            ..base
        },
        "manpage" => Extra {
            files: &[
                (
                    "/usr/share/man/man1/coldtier*.1.gz",
                    "The command pages the package installs.",
                ),
                (
                    "/usr/share/man/man5/coldtier.toml.5.gz",
                    "The configuration page the package installs.",
                ),
            ],
            examples: &[
                (
                    "Install every page by hand (the package installs them):",
                    "coldtier manpage --dir /usr/local/share/man",
                ),
                (
                    "Read a page without installing it:",
                    "coldtier manpage coldtier.toml | man -l -",
                ),
            ],
            see_also: &["coldtier-completions(1)", "coldtier.toml(5)"],
            ..base
        },
        _ => base,
    }
}

fn exit_status(r: &mut Roff, e: &Extra) {
    r.control("SH", ["EXIT STATUS"]);
    let rows = [
        ("0", e.ok.unwrap_or("Done.")),
        (
            "1",
            e.failed.unwrap_or(
                "The command failed (the message on stderr says why), e.g. the daemon did \
                 not answer.",
            ),
        ),
        (
            "2",
            e.bad.unwrap_or(
                "Bad input, nothing was done: one line on stderr names the problem (a path \
                 outside any coldtier mount, an unknown option or value).",
            ),
        ),
        ("101", "A bug (a panic): please report it with the message."),
    ];
    for (code, what) in rows {
        r.control("TP", []).text([bold(code)]).text([roman(what)]);
    }
}

fn files(r: &mut Roff, e: &Extra) {
    r.control("SH", ["FILES"]);
    for (path, what) in e.files {
        r.control("TP", [])
            .text([italic(*path)])
            .text([roman(*what)]);
    }
}

fn environment(r: &mut Roff, e: &Extra) {
    r.control("SH", ["ENVIRONMENT"]);
    for (var, what) in e.env {
        r.control("TP", []).text([bold(*var)]).text([roman(*what)]);
    }
}

fn examples(r: &mut Roff, examples: &[(&str, &str)]) {
    r.control("SH", ["EXAMPLES"]);
    for (what, command) in examples {
        r.control("PP", []).text([roman(*what)]);
        r.control("PP", [])
            .control("RS", ["4"])
            .control("nf", [])
            .text([bold(*command)])
            .control("fi", [])
            .control("RE", []);
    }
}

fn see_also(r: &mut Roff, mut pages: Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    pages.retain(|p| seen.insert(p.clone()));
    r.control("SH", ["SEE ALSO"]);
    let n = pages.len();
    for (i, p) in pages.iter().enumerate() {
        let (name, section) = p.split_once('(').unwrap_or((p, ""));
        r.text([
            bold(name),
            roman(format!("({section}{}", if i + 1 < n { "," } else { "" })),
        ]);
    }
}

// ---- coldtier.toml(5) ----------------------------------------------------------------

/// One key of the example config: its line(s) and the comment above it.
struct Key {
    /// `passthrough = true`, or for a key shown commented out, `# per_minute = 3000`.
    shown: String,
    doc: Vec<String>,
}

struct Table {
    name: String,
    keys: Vec<Key>,
}

/// The example config, read back: the header comment and each table's keys.
struct Parsed {
    header: Vec<String>,
    tables: Vec<Table>,
}

/// `# per_minute = 3000`: a key the example shows commented out.
fn commented_key(comment: &str) -> bool {
    let Some((name, _)) = comment.split_once(" = ") else {
        return false;
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_example(text: &str) -> Parsed {
    let mut header = Vec::new();
    let mut tables: Vec<Table> = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_end();
        if let Some(c) = t.strip_prefix('#') {
            let c = c.strip_prefix(' ').unwrap_or(c);
            if !tables.is_empty() && commented_key(c) {
                let key = Key {
                    shown: format!("# {c}"),
                    doc: std::mem::take(&mut doc),
                };
                tables.last_mut().expect("a table").keys.push(key);
            } else {
                doc.push(c.to_string());
            }
        } else if let Some(name) = t.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            if tables.is_empty() {
                header = std::mem::take(&mut doc);
            }
            tables.push(Table {
                name: name.to_string(),
                keys: Vec::new(),
            });
            doc.clear();
        } else if t.is_empty() {
            if tables.is_empty() {
                doc.push(String::new());
            }
        } else {
            // A key; an array or inline table may go on over several lines.
            let mut shown = t.to_string();
            let mut depth = brackets(t);
            while depth > 0 {
                let Some(more) = lines.next() else { break };
                depth += brackets(more);
                shown.push('\n');
                shown.push_str(more.trim_end());
            }
            let key = Key {
                shown,
                doc: std::mem::take(&mut doc),
            };
            if let Some(table) = tables.last_mut() {
                table.keys.push(key);
            }
        }
    }
    Parsed { header, tables }
}

/// Open minus closed brackets and braces outside strings.
fn brackets(line: &str) -> i32 {
    let mut depth = 0;
    let mut in_str = false;
    for c in line.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' | '{' if !in_str => depth += 1,
            ']' | '}' if !in_str => depth -= 1,
            '#' if !in_str => break,
            _ => {}
        }
    }
    depth
}

/// Comment lines as roff: running text is filled; indented lines (lists, tables of
/// values) keep their layout.
fn comment_text(r: &mut Roff, lines: &[String]) {
    let mut preformatted = false;
    for line in lines {
        if line.trim().is_empty() {
            if preformatted {
                r.control("fi", []);
                preformatted = false;
            }
            r.control("PP", []);
            continue;
        }
        let indented = line.starts_with("  ") || line.starts_with(" -");
        if indented != preformatted {
            r.control(if indented { "nf" } else { "fi" }, []);
            preformatted = indented;
        }
        r.text([roman(line.as_str())]);
    }
    if preformatted {
        r.control("fi", []);
    }
}

fn config_page() -> Page {
    let parsed = parse_example(EXAMPLE_CONFIG);
    let mut r = Roff::new();
    r.control(
        "TH",
        ["coldtier.toml", "5", "", &version(), "coldtier manual"],
    );
    r.control("SH", ["NAME"])
        .text([roman("coldtier.toml - configuration of a coldtier mount")]);
    r.control("SH", ["SYNOPSIS"])
        .text([italic("/etc/coldtier/NAME.toml")]);
    r.control("SH", ["DESCRIPTION"]);
    let header: Vec<String> = parsed
        .header
        .iter()
        .skip_while(|l| l.trim().is_empty())
        .cloned()
        .collect();
    comment_text(&mut r, &header);
    r.control("PP", []).text([roman(format!(
        "This page is made from the example config, {EXAMPLE_PATH}: the same text, every \
         key with its default (or, where its comment says so, an example value)."
    ))]);
    r.control("SH", ["KEYS"]);
    for table in &parsed.tables {
        r.control("SS", [format!("[{}]", table.name).as_str()]);
        for key in &table.keys {
            r.control("TP", []);
            let mut shown = key.shown.lines();
            r.text([bold(shown.next().unwrap_or_default())]);
            // The rest of an array over several lines, as written.
            let more: Vec<&str> = shown.collect();
            if !more.is_empty() {
                r.control("nf", []);
                for line in more {
                    r.text([bold(line)]);
                }
                r.control("fi", []);
            }
            comment_text(&mut r, &key.doc);
        }
    }
    r.control("SH", ["FILES"]);
    for (path, what) in [F_CONFIG, F_EXAMPLE, F_UNIT, F_DOC] {
        r.control("TP", []).text([italic(path)]).text([roman(what)]);
    }
    r.control("SH", ["EXAMPLES"]);
    r.text([roman(
        "A mount of /srv/share over itself that tiers files unused for 180 days and larger \
         than 1 MiB to an S3 bucket (credentials: the standard AWS chain), as \
         /etc/coldtier/srv-share.toml for coldtier@srv-share.service:",
    )]);
    r.control("PP", []).control("RS", ["4"]).control("nf", []);
    for line in QUICK_CONFIG.lines() {
        r.text([roman(line)]);
    }
    r.control("fi", []).control("RE", []);
    see_also(
        &mut r,
        [
            "coldtier(1)",
            "coldtier-mount(1)",
            "coldtier-config(1)",
            "coldtier-migrate(1)",
        ]
        .map(String::from)
        .to_vec(),
    );
    let mut buf = Vec::new();
    let _ = r.to_writer(&mut buf);
    Page {
        name: "coldtier.toml".into(),
        section: "5",
        text: String::from_utf8_lossy(&buf).into_owned(),
    }
}

/// The example of coldtier.toml(5) (the README's quick start says the same).
const QUICK_CONFIG: &str = r#"[mount]
source = "/srv/share"
[store]
kind = "s3"
bucket = "my-archive"
prefix = "share"
storage_class = "GLACIER"
[policy]
atime_older_than = "180d"
min_size = "1MiB"
mode = "stub"    # the default, "dry-run", moves nothing"#;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn pages() -> Vec<Page> {
        all(crate::cli::Cli::command())
    }

    fn section<'a>(text: &'a str, name: &str) -> &'a str {
        let head = if name.contains(' ') {
            format!(".SH \"{name}\"\n")
        } else {
            format!(".SH {name}\n")
        };
        let start = text
            .find(&head)
            .unwrap_or_else(|| panic!("no {name} section"));
        let rest = &text[start + head.len()..];
        &rest[..rest.find("\n.SH ").map_or(rest.len(), |e| e + 1)]
    }

    #[test]
    fn every_command_has_a_page_named_as_it_is_typed() {
        let names: Vec<String> = pages().iter().map(Page::file_name).collect();
        for n in [
            "coldtier.1",
            "coldtier-mount.1",
            "coldtier-migrate.1",
            "coldtier-catalog.1",
            "coldtier-catalog-backup.1",
            "coldtier-catalog-rebuild.1",
            "coldtier-jobs-cancel.1",
            "coldtier-jobs-workers.1",
            "coldtier-recalls-cancel.1",
            "coldtier-config-diff.1",
            "coldtier-completions.1",
            "coldtier-manpage.1",
            "coldtier.toml.5",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("help")),
            "clap's help subcommand gets no page: {names:?}"
        );
        let top = &pages()[0];
        assert!(top.text.contains(".TH coldtier 1"), "{}", top.text);
        assert!(
            !top.text.contains("coldtier\\-help"),
            "no help subcommand listed"
        );
        // Nested: the synopsis is the command as typed.
        let rebuild = pages()
            .into_iter()
            .find(|p| p.name == "coldtier-catalog-rebuild")
            .unwrap();
        assert!(
            rebuild.text.contains("coldtier catalog rebuild"),
            "{}",
            rebuild.text
        );
    }

    #[test]
    fn every_page_has_the_sections_and_see_also_names_only_pages_that_exist() {
        let all = pages();
        let refs: Vec<String> = all.iter().map(Page::reference).collect();
        for p in &all {
            for s in [
                "NAME",
                "SYNOPSIS",
                "DESCRIPTION",
                "FILES",
                "EXAMPLES",
                "SEE ALSO",
            ] {
                section(&p.text, s);
            }
            if p.section == "1" {
                for s in ["OPTIONS", "EXIT STATUS", "ENVIRONMENT"] {
                    section(&p.text, s);
                }
                let env = section(&p.text, "ENVIRONMENT");
                assert!(env.contains("COLDTIER_LOG"), "{}: {env}", p.name);
                let exit = section(&p.text, "EXIT STATUS");
                for code in ["0", "1", "2"] {
                    assert!(
                        exit.contains(&format!("\\fB{code}\\fR")),
                        "{}: {exit}",
                        p.name
                    );
                }
                assert!(
                    section(&p.text, "EXAMPLES").contains("\\fBcoldtier "),
                    "{}: examples run coldtier",
                    p.name
                );
            }
            let see = section(&p.text, "SEE ALSO");
            let named: Vec<String> = see
                .lines()
                .filter_map(|l| {
                    let name = l.strip_prefix("\\fB")?.split_once("\\fR")?;
                    let sect = name.1.trim_start_matches('(').split(')').next()?;
                    Some(format!("{}({sect})", name.0.replace("\\-", "-")))
                })
                .collect();
            assert!(!named.is_empty(), "{}: {see}", p.name);
            for n in &named {
                assert!(refs.contains(n), "{} names {n}, which is no page", p.name);
                assert_ne!(n, &p.reference(), "{} names itself", p.name);
            }
        }
        let mount = all.iter().find(|p| p.name == "coldtier-mount").unwrap();
        let env = section(&mount.text, "ENVIRONMENT");
        for v in ["NOTIFY_SOCKET", "JOURNAL_STREAM", "AWS_ACCESS_KEY_ID"] {
            assert!(env.contains(v), "{env}");
        }
    }

    #[test]
    fn the_config_page_shows_every_key_of_the_example_with_its_comment() {
        let page = config_page();
        let parsed = parse_example(EXAMPLE_CONFIG);
        let names: Vec<&str> = parsed.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fuse", "policy", "recall", "catalog", "costs", "store", "mount", "metrics",
                "limits", "pack"
            ]
        );
        // Every key line of the example (set or shown commented out) is on the page, in
        // the table it belongs to, with its comment's words.
        let mut n = 0;
        for table in &parsed.tables {
            let at = page
                .text
                .find(&format!(".SS [{}]", table.name))
                .unwrap_or_else(|| panic!("[{}]", table.name));
            let rest = &page.text[at + 4..];
            let body = &rest[..rest.find(".SS ").or(rest.find(".SH ")).unwrap()];
            for key in &table.keys {
                let name = key.shown.split(" = ").next().unwrap();
                assert!(
                    body.contains(&format!("\\fB{name} = ")),
                    "{name} of [{}]",
                    table.name
                );
                if let Some(first) = key.doc.first() {
                    // As roff writes it.
                    let roff = first
                        .replace('\\', "\\\\")
                        .replace('-', "\\-")
                        .replace('\'', "\\*(Aq");
                    assert!(body.contains(&roff), "{roff}");
                }
                n += 1;
            }
        }
        let in_file = EXAMPLE_CONFIG
            .lines()
            .filter(|l| {
                let l = l.trim_start_matches("# ");
                l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
            })
            .count();
        assert_eq!(
            n, in_file,
            "every key line of the example is a key on the page"
        );
        assert!(page.text.contains("passthrough = true"));
        assert!(page.text.contains("Request\\-handling threads"));
        // A list in a comment keeps its layout.
        assert!(page.text.contains(".nf\n"));
        // The multi-line rules array is shown whole.
        assert!(page.text.contains("action = \"defer\""), "{}", page.text);
    }

    /// The example with the keys it shows commented out put in: for `kind` "s3" all but
    /// those of a posix store, for "posix" those and the keys both kinds have.
    fn uncommented(kind: &str) -> String {
        let parsed = parse_example(EXAMPLE_CONFIG);
        let mut posix_only = Vec::new();
        let mut in_posix = false;
        for k in parsed.tables.iter().flat_map(|t| &t.keys) {
            // A key without a comment of its own shares the one above it.
            if let Some(first) = k.doc.first() {
                in_posix = first.starts_with("With kind = \"posix\"");
            }
            if in_posix {
                posix_only.push(k.shown.clone());
            }
        }
        const SHARED: [&str; 2] = ["# storage_class = ", "# checksum = "];
        EXAMPLE_CONFIG
            .lines()
            .map(|l| {
                let c = l.strip_prefix("# ").unwrap_or("");
                let posix = posix_only.iter().any(|p| p == l);
                let wanted = if kind == "posix" {
                    posix || SHARED.iter().any(|s| l.starts_with(s))
                } else {
                    !posix
                };
                match l {
                    "kind = \"s3\"" => format!("kind = \"{kind}\""),
                    "bucket = \"example-coldtier\"" if kind == "posix" => String::new(),
                    _ if commented_key(c) && wanted => c.to_string(),
                    _ => l.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_keys_the_example_shows_commented_out_are_valid_as_written() {
        let s3 = uncommented("s3");
        assert!(s3.contains("\nregion = \"us-east-1\""), "{s3}");
        assert!(s3.contains("\nper_minute = 3000"), "{s3}");
        let c = crate::config::Config::parse(&s3, "s3").unwrap();
        let Some(crate::store::StoreConfig::S3(store)) = c.store_config().unwrap() else {
            panic!("an s3 store")
        };
        // The values shown as defaults are the defaults.
        let d = crate::store::S3Config::default();
        assert_eq!(
            (
                store.region.as_str(),
                store.prefix.as_str(),
                store.path_style
            ),
            (d.region.as_str(), d.prefix.as_str(), d.path_style)
        );
        assert_eq!(
            (store.part_size, store.concurrency, store.max_attempts),
            (d.part_size, d.concurrency, d.max_attempts)
        );
        assert_eq!(
            (
                store.connect_timeout.as_str(),
                store.read_timeout.as_str(),
                store.first_byte_timeout.as_str(),
                store.stall_timeout.as_str(),
                store.list_page_size
            ),
            (
                d.connect_timeout.as_str(),
                d.read_timeout.as_str(),
                d.first_byte_timeout.as_str(),
                d.stall_timeout.as_str(),
                d.list_page_size
            )
        );
        assert_eq!(
            (
                store.storage_class,
                store.checksum,
                store.request_checksum,
                store.content_md5
            ),
            (
                d.storage_class,
                d.checksum,
                d.request_checksum,
                d.content_md5
            )
        );
        let posix = uncommented("posix");
        let c = crate::config::Config::parse(&posix, "posix").unwrap();
        let Some(crate::store::StoreConfig::Posix(store)) = c.store_config().unwrap() else {
            panic!("a posix store: {posix}")
        };
        assert_eq!(store, crate::store::PosixConfig::default());
    }

    #[test]
    fn the_quick_config_of_the_page_parses() {
        let c = crate::config::Config::parse(QUICK_CONFIG, "quick");
        assert!(c.is_ok(), "{:?}", c.err());
    }
}
