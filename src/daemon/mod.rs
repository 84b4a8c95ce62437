//! The daemon: checks the request, opens the backing tree, daemonizes, mounts, serves until
//! unmounted or signalled; and `umount`, which ends it cleanly.

pub mod handler;
pub mod handles;
pub mod metrics;
pub mod rebuild;
pub mod reports;
pub mod supervise;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::mountinfo;
use crate::catalog::Catalog;
use crate::cli::args::{MountArgs, UmountArgs};
use crate::config::Config;
use crate::fs::backing;
use crate::fs::backing_ids::BackingIds;
use crate::fs::fuse::{FuseAdapter, Negotiated, Ttls};
use crate::fs::overlay::{OverlayFs, OverlayOptions};
use crate::tier::context::Tiering;
use handler::{ConfigCell, Control};

/// A problem with what the user asked for: reported in one line, exit code 2, nothing mounted.
pub use crate::cli::BadInput;

pub(crate) fn bad(msg: impl Into<String>) -> anyhow::Error {
    BadInput(msg.into()).into()
}

const RUN_DIR: &str = "/run/coldtier/mounts";

/// The passthrough id table of the mount at `mountpoint` (`fs::backing_ids`).
fn backing_ids_path(mountpoint: &Path) -> PathBuf {
    record_path(mountpoint).with_extension("backing")
}

fn record_path(mountpoint: &Path) -> PathBuf {
    let hex: String = mountpoint
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Path::new(RUN_DIR).join(format!("{hex}.pid"))
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(bad(format!("coldtier {what} must run as root (it mounts with allow_other and serves every user's files)")));
    }
    Ok(())
}

fn check_dev_fuse() -> anyhow::Result<()> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad(
            "/dev/fuse does not exist: install fuse3 and load the module (modprobe fuse)",
        )),
        Err(e) => Err(bad(format!("cannot open /dev/fuse: {e}"))),
    }
}

fn canonical_dir(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let c = std::fs::canonicalize(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad(format!("{what} {} does not exist", path.display())),
        _ => bad(format!("{what} {}: {e}", path.display())),
    })?;
    if !c.is_dir() {
        return Err(bad(format!("{what} {} is not a directory", path.display())));
    }
    Ok(c)
}

/// Everything checked and opened before the daemon forks.
struct Prepared {
    source: PathBuf,
    mountpoint: PathBuf,
    config: Config,
    root: OwnedFd,
    /// `--paused`: mount with tiering paused, whatever the store check finds.
    paused: bool,
    /// The source's and the catalog's locks, held for the daemon's life.
    locks: Vec<crate::base::private::Lock>,
    /// The config file, read again on SIGHUP (none: the defaults, nothing to reload).
    config_path: Option<PathBuf>,
    /// `-o` options for the mount itself (nosuid, ro, ...).
    mount_flags: Vec<String>,
}

fn prepare(args: &MountArgs) -> anyhow::Result<Prepared> {
    require_root("mount")?;
    let config = match &args.config {
        Some(p) => Config::load(p).map_err(|e| bad(e.to_string()))?,
        None => Config::default(),
    };
    let (source_arg, mountpoint_arg) = mount_paths(args, &config)?;
    clear_dead_mount(mountpoint_arg.as_deref().unwrap_or(&source_arg));
    let source = canonical_dir(&source_arg, "SOURCE")?;
    let mountpoint = match &mountpoint_arg {
        Some(m) => canonical_dir(m, "MOUNTPOINT")?,
        None => source.clone(),
    };
    if let Some(listen) = &config.metrics.listen {
        // Checked again here (the config validated it): the daemon must never listen wider.
        crate::config::parse_metrics_listen(listen)
            .map_err(|m| bad(format!("metrics.listen: {m}")))?;
    }
    check_dev_fuse()?;
    let mounts =
        mountinfo::read().map_err(|e| anyhow::anyhow!("cannot read /proc/self/mountinfo: {e}"))?;
    if let Some(m) =
        mountinfo::containing(&mounts, &source).filter(|m| mountinfo::is_coldtier(&m.fstype))
    {
        return Err(bad(format!(
            "SOURCE {} is already a coldtier mount (mounted at {}); unmount it first",
            source.display(),
            m.mount_point.display()
        )));
    }
    // Each mount.fsid names one filesystem: nfs-ganesha skips a second filesystem with an
    // fsid it has seen, and its handles would go to the wrong one.
    if let Some(uuid) = config.mount.fsid_uuid() {
        if let Some(m) = mounts.iter().find(|m| {
            m.fstype == mountinfo::FS_TYPE_BLK
                && crate::fs::blockdev::uuid_of(Path::new(&m.source)).as_deref()
                    == Some(uuid.as_str())
        }) {
            return Err(bad(format!(
                "mount.fsid {uuid} already names the coldtier mount at {}: each mount needs a \
                 UUID of its own (uuidgen)",
                m.mount_point.display()
            )));
        }
    }
    if let Some(m) = mountinfo::at(&mounts, &mountpoint).filter(|m| m.fstype.starts_with("fuse")) {
        return Err(bad(format!(
            "MOUNTPOINT {} is in use by a {} mount ({})",
            mountpoint.display(),
            m.fstype,
            m.source
        )));
    }
    if let Some(m) =
        mountinfo::containing(&mounts, &mountpoint).filter(|m| mountinfo::is_coldtier(&m.fstype))
    {
        return Err(bad(format!(
            "MOUNTPOINT {} is inside the coldtier mount at {}",
            mountpoint.display(),
            m.mount_point.display()
        )));
    }
    if mountpoint != source && mountinfo::at(&mounts, &mountpoint).is_some() {
        return Err(bad(format!(
            "MOUNTPOINT {} is in use: something is already mounted there",
            mountpoint.display()
        )));
    }
    if let Some(pid) = read_record(&mountpoint).map(|r| r.0) {
        // A daemon whose mount is gone is on its way out (a plain umount returns before
        // its daemon has finished): wait for it, a while.
        let deadline = Instant::now() + EXITING_DAEMON_WAIT;
        while process_alive(pid) {
            if Instant::now() >= deadline || is_coldtier_mount(&mountpoint) {
                return Err(bad(format!(
                    "MOUNTPOINT {} is in use by coldtier daemon pid {pid}",
                    mountpoint.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // What the daemon keeps for itself lives in directories only root can write.
    let catalog = config.catalog_path(&mountpoint);
    if let Some(dir) = catalog.parent() {
        crate::base::private::ensure_private_dir(dir, "the catalog directory").map_err(bad)?;
    }
    crate::base::private::ensure_private_dir(
        &config.backup_dir(&mountpoint),
        "the catalog backup directory",
    )
    .map_err(bad)?;
    for (dir, what) in [
        (RUN_DIR, "the runtime directory"),
        (LOCK_DIR, "the lock directory"),
    ] {
        crate::base::private::ensure_private_dir(Path::new(dir), what).map_err(bad)?;
    }
    // One daemon per source and per catalog, for its whole life.
    let source_lock = take_lock(
        &source_lock_path(&source)?,
        &mountpoint,
        &format!("SOURCE {} is already served by", source.display()),
    )?;
    let catalog_lock = take_lock(
        &lock_path_of(&catalog),
        &mountpoint,
        &format!("the catalog {} is in use by", catalog.display()),
    )?;
    // Opened before mounting: the mount may hide this very directory. With an atime option
    // for the mount, through a private bind mount of the source that applies it.
    let root = match atime_rule(&args.options) {
        None => backing::open_dir_path(&source)
            .map_err(|e| bad(format!("cannot open SOURCE {}: {e}", source.display())))?,
        Some(rule) => backing::open_dir_with_atime(&source, rule).map_err(|e| {
            bad(format!(
                "cannot apply the atime option {rule:?} to SOURCE {} (a private bind mount of it): {e}",
                source.display()
            ))
        })?,
    };
    Ok(Prepared {
        source,
        mountpoint,
        config,
        root,
        paused: args.paused,
        locks: vec![source_lock, catalog_lock],
        config_path: args.config.clone(),
        mount_flags: args.options.clone(),
    })
}

/// The access-time rule the mount's options ask for (the last one given wins; `atime` is
/// mount(8)'s "the kernel's default", relatime), or `None` when none is given: then the
/// source's own mount decides.
fn atime_rule(flags: &[String]) -> Option<backing::AtimeRule> {
    flags.iter().rev().find_map(|f| match f.as_str() {
        "noatime" => Some(backing::AtimeRule::NoAtime),
        "atime" | "relatime" => Some(backing::AtimeRule::RelAtime),
        "strictatime" => Some(backing::AtimeRule::StrictAtime),
        _ => None,
    })
}

/// How long a new mount waits for the daemon of a mount that was just unmounted to exit.
const EXITING_DAEMON_WAIT: Duration = Duration::from_secs(15);

/// Directory of the locks that keep a source to one daemon.
const LOCK_DIR: &str = "/run/coldtier/locks";

/// The loop device of `mount.fsid`, if set (docs/architecture.md, "A filesystem id that
/// survives a remount"). The mount made on it holds it; dropping it lets it go.
fn fsid_device(config: &Config) -> std::io::Result<Option<crate::fs::blockdev::FsidDevice>> {
    let Some(uuid) = config.mount.fsid_uuid() else {
        return Ok(None);
    };
    crate::base::private::create_private_dir(Path::new(RUN_DIR))?;
    let dev = crate::fs::blockdev::attach(Path::new(RUN_DIR), &uuid).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("mount.fsid: cannot set up the loop device: {e}"),
        )
    })?;
    tracing::info!(fsid = %uuid, device = %dev.path.display(), "mounting as fuseblk for a stable filesystem id");
    Ok(Some(dev))
}

/// A note for the log when this host is a VM guest whose idle vCPUs halt at once (the
/// `haltpoll` cpuidle driver with `guest_halt_poll_ns` 0): every FUSE round trip that finds
/// the other vCPU idle then pays its wake-up (docs/operations.md, "Round trips on a virtual
/// machine").
fn halt_polling_note(driver: Option<String>, poll_ns: Option<String>) -> Option<String> {
    let driver = driver?;
    let poll_ns: u64 = poll_ns?.trim().parse().ok()?;
    (driver.trim() == "haltpoll" && poll_ns == 0).then(|| {
        "this VM's idle vCPUs halt at once (haltpoll guest_halt_poll_ns=0): each request \
         the kernel sends the daemon pays a vCPU wake-up (listings through Samba, a first \
         ls -l); docs/operations.md, \"Round trips on a virtual machine\""
            .to_string()
    })
}

/// Whether a coldtier mount sits at `path` now.
fn is_coldtier_mount(path: &Path) -> bool {
    mountinfo::read()
        .is_ok_and(|m| mountinfo::at(&m, path).is_some_and(|m| mountinfo::is_coldtier(&m.fstype)))
}

/// The lock of a source directory: named by its device and inode, so that two paths to
/// the same directory (a bind mount, a symlink) share it.
fn source_lock_path(source: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let m =
        std::fs::metadata(source).map_err(|e| bad(format!("SOURCE {}: {e}", source.display())))?;
    Ok(Path::new(LOCK_DIR).join(format!("source-{:x}-{:x}.lock", m.dev(), m.ino())))
}

/// The lock beside a catalog file (`<catalog>.lock`).
pub fn lock_path_of(catalog: &Path) -> PathBuf {
    let mut p = catalog.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes a lock for the daemon of `mountpoint`; if another daemon holds it, one line
/// naming that mount (`what` says what it holds). A daemon whose mount is gone is waited
/// for a while: it is exiting.
fn take_lock(
    path: &Path,
    mountpoint: &Path,
    what: &str,
) -> anyhow::Result<crate::base::private::Lock> {
    let label = mountpoint.display().to_string();
    let gone = |h: &crate::base::private::Holder| {
        !h.what.is_empty() && !is_coldtier_mount(Path::new(&h.what))
    };
    crate::base::private::lock(path, &label, EXITING_DAEMON_WAIT, &gone).map_err(|e| match e {
        Ok(h) => bad(format!(
            "{what} the coldtier mount at {} (daemon pid {}); unmount it first",
            if h.what.is_empty() { "?" } else { &h.what },
            h.pid
        )),
        Err(m) => bad(format!("cannot take the lock {}: {m}", path.display())),
    })
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn read_record(mountpoint: &Path) -> Option<(i32, String)> {
    let text = std::fs::read_to_string(record_path(mountpoint)).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    Some((pid, lines.next().unwrap_or("").to_string()))
}

/// The supervisor's pid in a mount's runtime record (0 or absent: none).
fn record_supervisor(mountpoint: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(record_path(mountpoint)).ok()?;
    text.lines()
        .nth(3)?
        .trim()
        .parse()
        .ok()
        .filter(|p: &i32| *p > 0)
}

fn write_record(p: &Prepared, supervised: bool) -> std::io::Result<()> {
    crate::base::private::create_private_dir(Path::new(RUN_DIR))?;
    let path = record_path(&p.mountpoint);
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::base::private::open_private(&tmp, false)?;
    // Line 4: the supervisor (`coldtier restart` signals it), when there is one.
    let supervisor = if supervised {
        // SAFETY: getppid cannot fail.
        unsafe { libc::getppid() }
    } else {
        0
    };
    f.write_all(
        format!(
            "{}\n{}\n{}\n{}\n",
            std::process::id(),
            p.source.display(),
            p.mountpoint.display(),
            supervisor
        )
        .as_bytes(),
    )?;
    std::fs::rename(tmp, path)
}

fn default_log_file(mountpoint: &Path) -> PathBuf {
    let name: String = mountpoint
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    PathBuf::from(format!(
        "/var/log/coldtier/{}.log",
        if name.is_empty() { "root".into() } else { name }
    ))
}

/// `coldtier mount`.
/// Mount options for mount(8) and systemd (`-o`), which coldtier ignores.
const IGNORED_OPTIONS: &[&str] = &[
    "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail",
];

/// Sorts the `-o` options: coldtier's own go into the arguments (config=FILE as --config,
/// paused as --paused), the ones for mount(8) and systemd are dropped, and the mount's own
/// ([`crate::fs::fuse::MOUNT_FLAGS`]) are left in `options`. An unknown one is an error
/// that names it.
fn with_mount_options(args: &MountArgs) -> anyhow::Result<MountArgs> {
    let mut a = args.clone();
    a.options.clear();
    for o in args
        .options
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        if let Some(file) = o.strip_prefix("config=") {
            match &a.config {
                Some(c) if c != Path::new(file) => {
                    return Err(bad(format!(
                        "-o config={file} and --config {} name different files",
                        c.display()
                    )))
                }
                _ => a.config = Some(PathBuf::from(file)),
            }
        } else if o == "paused" {
            a.paused = true;
        } else if crate::fs::fuse::MOUNT_FLAGS.contains(&o) {
            a.options.push(o.to_string());
        } else if !(IGNORED_OPTIONS.contains(&o)
            || o.starts_with("x-")
            || o.starts_with("comment="))
        {
            return Err(bad(format!(
                "unknown mount option `{o}` in -o (for the mount: {}; coldtier's: config=FILE, \
                 paused; ignored: {}, comment=..., x-...)",
                crate::fs::fuse::MOUNT_FLAGS.join(", "),
                IGNORED_OPTIONS.join(", ")
            )));
        }
    }
    Ok(a)
}

pub fn mount(args: &MountArgs, log_filter: &str) -> anyhow::Result<()> {
    let args = &with_mount_options(args)?;
    if args.child {
        return child(args, log_filter);
    }
    let prepared = prepare(args)?;
    if args.foreground {
        crate::base::logging::init_logging(log_filter, None)?;
        let code = supervise(prepared, args, log_filter, None, None);
        if code != 0 {
            // The daemon said why (stderr, the journal).
            std::process::exit(code);
        }
        return Ok(());
    }
    let log_file = args
        .log_file
        .clone()
        .unwrap_or_else(|| default_log_file(&prepared.mountpoint));
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other threads exist yet in this process; the child only continues in Rust code
    // that sets up its own state.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error().into()),
        0 => {
            drop(rd);
            let code = daemon_child(prepared, args, wr, &log_file, log_filter);
            std::process::exit(code);
        }
        _ => {
            drop(wr);
            let mut msg = String::new();
            std::fs::File::from(rd).read_to_string(&mut msg)?;
            match msg.strip_prefix("OK") {
                Some(_) => Ok(()),
                None => match msg.strip_prefix("ERR ") {
                    Some(e) => Err(bad(e.trim_end().to_string())),
                    None => Err(anyhow::anyhow!(
                        "the daemon exited during start-up; see {}",
                        log_file.display()
                    )),
                },
            }
        }
    }
}

fn daemon_child(
    prepared: Prepared,
    args: &MountArgs,
    wr: OwnedFd,
    log_file: &Path,
    log_filter: &str,
) -> i32 {
    let mut status = std::fs::File::from(wr);
    // The locks came with the fork; they now name this process.
    for l in &prepared.locks {
        let _ = crate::base::private::relabel(l, &prepared.mountpoint.display().to_string());
    }
    // SAFETY: setsid/chdir only affect this (single-threaded) child process.
    unsafe {
        libc::setsid();
        libc::chdir(c"/".as_ptr());
    }
    if let Some(dir) = log_file.parent().filter(|d| !d.exists()) {
        let _ = crate::base::private::create_private_dir(dir);
    }
    if let Err(e) = redirect_stdio(log_file) {
        let _ = write!(
            status,
            "ERR cannot open log file {}: {e}",
            log_file.display()
        );
        return 2;
    }
    if let Err(e) = crate::base::logging::init_logging(log_filter, Some(log_file)) {
        let _ = write!(status, "ERR cannot start logging: {e}");
        return 2;
    }
    supervise(prepared, args, log_filter, Some(log_file), Some(status))
}

/// Runs the supervisor over the prepared mount (docs: `supervise`): the daemon is a child
/// process, started again on the same connection if it dies with the mount up.
fn supervise(
    p: Prepared,
    args: &MountArgs,
    log_filter: &str,
    log_file: Option<&Path>,
    status: Option<std::fs::File>,
) -> i32 {
    let mut status = status;
    let fail = |status: &mut Option<std::fs::File>, m: String| {
        if let Some(s) = status.as_mut() {
            let _ = write!(s, "ERR {m}");
        }
        tracing::error!("{m}");
        1
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(&mut status, format!("cannot find the coldtier binary: {e}")),
    };
    let config = match supervise::text_fd(p.config.text()) {
        Ok(f) => f,
        Err(e) => return fail(&mut status, format!("cannot keep the config: {e}")),
    };
    let root = match p.root.try_clone() {
        Ok(r) => r,
        Err(e) => return fail(&mut status, format!("cannot keep the source root: {e}")),
    };
    let plan = supervise::Plan {
        exe,
        args: supervise::child_args(args, &p.source, &p.mountpoint, log_file),
        log_filter: log_filter.to_string(),
        root,
        config,
        mountpoint: p.mountpoint.clone(),
        restart_on_crash: p.config.mount.restart_on_crash,
    };
    // `p` (the locks above all) lives as long as the supervisor.
    let code = supervise::supervise(plan, status);
    drop(p);
    code
}

/// `coldtier mount --child`: the daemon a supervisor runs. It takes what the supervisor
/// kept (the source root, the connection to take over, if any) and serves.
fn child(args: &MountArgs, log_filter: &str) -> anyhow::Result<()> {
    let inh = supervise::inherited()?;
    match &args.log_file {
        Some(f) => crate::base::logging::init_logging(log_filter, Some(f))?,
        None => crate::base::logging::init_logging(log_filter, None)?,
    }
    let (Some(source), Some(mountpoint)) = (&args.source, &args.mountpoint) else {
        return Err(bad("--child needs SOURCE and MOUNTPOINT"));
    };
    let config = match &args.config {
        None => Config::default(),
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            // A restart must not fail on a config file broken since the mount.
            Err(e) => {
                tracing::error!("{e}; this daemon runs with the config the mount started with");
                Config::parse(&inh.config_text, &path.display().to_string())
                    .map_err(|e| anyhow::anyhow!("the mount's own config: {e}"))?
            }
        },
    };
    let p = Prepared {
        source: source.clone(),
        mountpoint: mountpoint.clone(),
        config,
        root: inh.root,
        paused: args.paused,
        locks: Vec::new(),
        config_path: args.config.clone(),
        mount_flags: args.options.clone(),
    };
    let link = Link {
        sock: inh.sock,
        resume: inh.resume,
    };
    serve(p, inh.status, Some(link))
}

/// A daemon's tie to its supervisor.
struct Link {
    sock: std::os::unix::net::UnixStream,
    /// The connection to take over (a restart), and what its INIT settled.
    resume: Option<(OwnedFd, String)>,
}

fn redirect_stdio(log_file: &Path) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new().read(true).open("/dev/null")?;
    let log = crate::base::private::open_private(log_file, true)?;
    // SAFETY: dup2 onto the standard descriptors of this process.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    Ok(())
}

/// Blocks the termination signals in this thread (and the threads it spawns later), so that
/// only the signal thread receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// SIGUSR1 from the supervisor (`coldtier restart`): hands the mount over to the next
/// daemon without unmounting. New requests are left for the next daemon (the kernel sends
/// them again), the ones being served are answered first (up to 30 s), the background
/// workers stop, the node-handle map and the catalog's lazy records reach the disk; a
/// policy run or gc under way stops where it is (its steps are crash-safe, as for a
/// crash). Then the process exits with [`supervise::HANDOVER_EXIT`].
fn hand_over(
    serving: &crate::fs::fuse::Serving,
    t: &Tiering,
    handles: Option<&handles::Handles>,
    mountpoint: &Path,
) -> ! {
    tracing::info!("handing the mount over to the next daemon");
    crate::base::notify::status("handing the mount over to a new daemon");
    if !serving.drain(Duration::from_secs(30)) {
        tracing::warn!(
            "requests still wait (for recalls) after 30 s: the next daemon answers them"
        );
    }
    t.workers.stop();
    if let Some(h) = handles {
        h.stop();
    }
    if let Err(e) = t.catalog.sync() {
        tracing::error!("catalog: {e}");
    }
    let _ = std::fs::remove_file(crate::control::socket_path(mountpoint));
    tracing::info!("mount handed over");
    std::process::exit(supervise::HANDOVER_EXIT)
}

/// Unmounts `mountpoint`: normally, or, when files are still open, by detaching it so that
/// the daemon finishes once the last one closes. In this process, as long as it takes: the
/// daemon's own unmount (it answers the kernel itself), and the detach of a dead mount.
fn unmount_path(mountpoint: &Path, lazy_if_busy: bool) -> Result<bool, std::io::Error> {
    match unmount_via(mountpoint, lazy_if_busy, |c, flags| Ok(umount2(c, flags))) {
        Unmount::Done(r) => r,
        Unmount::Waiting(_) => unreachable!("an unmount in this process is waited for"),
    }
}

/// What an unmount came to: done (`Ok(true)`: detached, busy), or still waiting, in the
/// child process `pid`, for a daemon that does not answer.
enum Unmount {
    Done(Result<bool, std::io::Error>),
    Waiting(libc::pid_t),
}

/// [`unmount_path`], giving up waiting after `wait` (`Waiting`): the kernel's unmount
/// waits, uninterruptibly, for the daemon's answer to FUSE_DESTROY on a `fuseblk` mount
/// (and, on any mount, to the writes of data it still holds), which a stopped or hung
/// daemon never gives; the command must not hang with it.
fn unmount_bounded(mountpoint: &Path, lazy_if_busy: bool, wait: Duration) -> Unmount {
    unmount_via(mountpoint, lazy_if_busy, |c, flags| {
        umount2_bounded(c, flags, wait)
    })
}

/// The unmount with `call` (an umount2: `Ok(result)`, or `Err(pid)` of a child still
/// waiting): normally, then detached if busy and `lazy_if_busy`.
fn unmount_via(
    mountpoint: &Path,
    lazy_if_busy: bool,
    call: impl Fn(&std::ffi::CStr, libc::c_int) -> Result<std::io::Result<()>, libc::pid_t>,
) -> Unmount {
    let c = match CString::new(mountpoint.as_os_str().as_bytes()) {
        Ok(c) => c,
        Err(e) => return Unmount::Done(Err(e.into())),
    };
    match call(&c, 0) {
        Ok(Ok(())) => Unmount::Done(Ok(false)),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::EBUSY) && lazy_if_busy => {
            match call(&c, libc::MNT_DETACH) {
                Ok(r) => Unmount::Done(r.map(|()| true)),
                Err(pid) => Unmount::Waiting(pid),
            }
        }
        Ok(Err(e)) => Unmount::Done(Err(e)),
        Err(pid) => Unmount::Waiting(pid),
    }
}

/// umount2(`path`, `flags`) here.
fn umount2(path: &std::ffi::CStr, flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// umount2(`path`, `flags`) in a child process, waited for up to `wait`: `Ok(result)` when
/// it returned, `Err(pid)` of the child that still waits in the kernel (it ends when the
/// daemon answers or the connection is aborted). If fork fails, the call runs here.
fn umount2_bounded(
    path: &std::ffi::CStr,
    flags: libc::c_int,
    wait: Duration,
) -> Result<std::io::Result<()>, libc::pid_t> {
    // The child's stdin, stdout and stderr: it may outlive this command (waiting for the
    // daemon), and must not keep a pipe of the caller's open meanwhile.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok();
    // SAFETY: the child calls only dup2, close_range, umount2 and _exit, all
    // async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Ok(umount2(path, flags));
    }
    if pid == 0 {
        // SAFETY: as above; errno is this thread's.
        unsafe {
            if let Some(n) = &null {
                for fd in 0..3 {
                    libc::dup2(std::os::fd::AsRawFd::as_raw_fd(n), fd);
                }
            }
            // Nothing else of this process's stays open in the child.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            let code = if libc::umount2(path.as_ptr(), flags) == 0 {
                0
            } else {
                (*libc::__errno_location()).clamp(1, 255)
            };
            libc::_exit(code)
        }
    }
    match wait_child(pid, wait) {
        Some(Ok(status)) => Ok(match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
            (true, 0) => Ok(()),
            (true, e) => Err(std::io::Error::from_raw_os_error(e)),
            (false, _) => Err(std::io::Error::other(format!(
                "the unmount's process ended with status {status}"
            ))),
        }),
        Some(Err(e)) => Ok(Err(e)),
        None => Err(pid),
    }
}

/// Waits up to `wait` for our child `pid` to end: its wait status, an error of waitpid,
/// or None if it still runs.
fn wait_child(pid: libc::pid_t, wait: Duration) -> Option<std::io::Result<libc::c_int>> {
    let deadline = Instant::now() + wait;
    loop {
        let mut status = 0;
        // SAFETY: our own child; status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(Ok(status));
        }
        if r < 0 {
            return Some(Err(std::io::Error::last_os_error()));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `/sys/fs/fuse/connections/<conn>`, mounting the fusectl filesystem there first if the
/// connection is not listed (it is not mounted everywhere).
fn fuse_connection_dir(conn: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new("/sys/fs/fuse/connections");
    if !dir.join(conn).exists() {
        let (src, target) = (c"fusectl", c"/sys/fs/fuse/connections");
        // SAFETY: NUL-terminated strings; no data.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(anyhow::anyhow!(
                    "mounting fusectl on {}: {e}",
                    dir.display()
                ));
            }
        }
    }
    Ok(dir.join(conn))
}

fn serve(p: Prepared, mut status: Option<std::fs::File>, link: Option<Link>) -> anyhow::Result<()> {
    let report = |status: &mut Option<std::fs::File>, msg: &str| {
        if let Some(s) = status.as_mut() {
            let _ = s.write_all(msg.as_bytes());
        }
    };
    let sigset = block_signals();
    // What the daemon creates for itself is root's alone (umask 0077); objects created
    // for callers get their exact mode from the request thread's own umask
    // (`backing::as_caller`).
    let umask = backing::daemon_umask();
    // SAFETY: umask only affects this process.
    unsafe { libc::umask(umask) };
    if let Err(e) = backing::keep_caps_on_fsuid_switch() {
        report(&mut status, &format!("ERR cannot set securebits: {e}"));
        return Err(e.into());
    }
    let nofile = backing::raise_nofile_limit();
    let overlay = OverlayFs::new(
        p.root.as_fd().try_clone_to_owned()?,
        OverlayOptions {
            passthrough: p.config.fuse.passthrough,
            inode_fds: p.config.fuse.inode_fds,
            no_xattrs_ttl: p.config.fuse.attr_timeout(),
            attr_fresh: p
                .config
                .fuse
                .attr_timeout()
                .min(p.config.fuse.entry_timeout()),
        },
    )?;
    if !p.config.fuse.passthrough {
        tracing::info!("passthrough disabled by configuration; file I/O is served by the daemon");
    }
    let overlay = Arc::new(overlay);
    let ttl = Ttls {
        attr: p.config.fuse.attr_timeout(),
        entry: p.config.fuse.entry_timeout(),
    };
    let (runtime, tiering, config_cell, handles) = match start_tiering(&p, &overlay) {
        Ok(t) => t,
        Err(e) => {
            report(&mut status, &format!("ERR {e:#}"));
            return Err(e);
        }
    };
    let metrics_addr = match start_metrics(&p, &tiering) {
        Ok(a) => a,
        Err(e) => {
            report(&mut status, &format!("ERR {e:#}"));
            return Err(e);
        }
    };
    let (sock, resume) = match link {
        Some(l) => (Some(l.sock), l.resume),
        None => (None, None),
    };
    let resumed = resume.is_some();
    // Passthrough ids by node, for the daemon after this one on the same connection
    // (a supervised mount only: without a supervisor the connection dies with us).
    let ids = match sock.is_some() {
        true => match BackingIds::open(&backing_ids_path(&p.mountpoint), !resumed) {
            Ok(t) => {
                if resumed && t.inherited() > 0 {
                    tracing::info!(
                        ids = t.inherited(),
                        "taking over the previous daemon's passthrough registrations"
                    );
                }
                Some(Arc::new(t))
            }
            Err(e) => {
                tracing::warn!("passthrough id table: {e}: files open across a restart may not open again until closed");
                None
            }
        },
        false => None,
    };
    let adapter = FuseAdapter::new(overlay.clone(), ttl, p.config.fuse.readdirplus, ids);
    let negotiated = adapter.negotiated();
    let serving = adapter.serving();
    let connection = adapter.connection_slot();
    let threads = p.config.fuse.threads();
    let session = match resume {
        Some((fd, neg)) => {
            adapter.resume_as(Negotiated::decode(&neg).unwrap_or_default());
            tracing::info!("taking over the mount's connection from the previous daemon");
            crate::fs::fuse::Session::resume(adapter, fd, &p.source, threads)
        }
        // The loop device (mount.fsid) is held until the mount holds it.
        None => fsid_device(&p.config).and_then(|dev| {
            crate::fs::fuse::Session::mount(
                adapter,
                &p.mountpoint,
                &p.source,
                threads,
                &p.mount_flags,
                dev.as_ref().map(|d| d.path.as_path()),
            )
        }),
    };
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            report(
                &mut status,
                &format!("ERR cannot mount at {}: {e}", p.mountpoint.display()),
            );
            return Err(anyhow::anyhow!("mount failed: {e}"));
        }
    };
    overlay.set_invalidator(session.invalidator());
    match session.fd().try_clone_to_owned() {
        Ok(fd) => {
            let _ = connection.set(fd);
        }
        Err(e) => tracing::warn!("cannot keep a copy of the connection fd: {e}"),
    }
    // The supervisor keeps a copy of the connection: the next daemon takes it over.
    if let Some(sock) = &sock {
        let neg = negotiated.lock().unwrap_or_default().encode();
        if let Err(e) = supervise::send_fd(sock, session.fd(), &neg) {
            tracing::error!("cannot hand the connection to the supervisor: {e}");
        }
    }
    if let Some(note) = halt_polling_note(
        std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver").ok(),
        std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns").ok(),
    ) {
        tracing::info!("{note}");
    }
    if let Err(e) = write_record(&p, sock.is_some()) {
        tracing::warn!("cannot write runtime record under {RUN_DIR}: {e}");
    }
    tracing::info!(
        source = %p.source.display(),
        mountpoint = %p.mountpoint.display(),
        threads,
        nofile,
        "{}",
        if resumed {
            "coldtier serving again (restart without unmount)"
        } else {
            "coldtier mounted"
        }
    );
    report(&mut status, "OK\n");
    drop(status);
    // The mount and the control socket are up: systemd may start what depends on them.
    crate::base::notify::notify(&format!(
        "READY=1\nSTATUS=serving {} at {}{}",
        p.source.display(),
        p.mountpoint.display(),
        metrics_addr.map_or(String::new(), |a| format!(
            "; metrics on http://{a}/metrics"
        ))
    ));

    let mp = p.mountpoint.clone();
    let mut unmounter = session.unmounter();
    let reload_from = p.config_path.clone();
    let t_signals = tiering.clone();
    let config_signals = config_cell.clone();
    let handles_signals = handles.clone();
    let supervised = sock.is_some();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigset holds the blocked termination signals; sig is a valid out pointer.
            if unsafe { libc::sigwait(&sigset, &mut sig) } != 0 {
                continue;
            }
            if sig == libc::SIGHUP {
                // logrotate's `postrotate kill -HUP`, `systemctl reload`: never an unmount.
                if let Err(e) = crate::base::logging::reopen_log() {
                    tracing::error!("cannot reopen the log file: {e}");
                }
                reload(reload_from.as_deref(), &t_signals, &config_signals);
                continue;
            }
            if sig == libc::SIGUSR1 {
                if !supervised {
                    tracing::warn!("SIGUSR1 (hand over) ignored: no supervisor to take over");
                    continue;
                }
                hand_over(&serving, &t_signals, handles_signals.as_deref(), &mp);
            }
            tracing::info!(signal = sig, "termination signal: unmounting");
            crate::base::notify::notify("STOPPING=1\nSTATUS=unmounting");
            // fuser's own unmount first (clears its state), then a detach if files are open;
            // a daemon that took the connection over has no fuser mount: the path then.
            let unmounted = unmounter.unmount().is_ok() && !is_coldtier_mount(&mp);
            if !unmounted {
                match unmount_path(&mp, true) {
                    Ok(true) => {
                        crate::base::notify::status(
                            "mount busy: detached; serving open files until they close",
                        );
                        tracing::warn!("mount busy: detached; serving open files until they close")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!("unmount failed: {e}"),
                }
            }
        })?;

    let result = session.run();
    crate::base::notify::notify("STOPPING=1\nSTATUS=unmounted; finishing");
    // A daemon slow to finish (a long checkpoint, many workers): tests pause it here.
    crate::base::failpoint::hit("exit-after-unmount");
    let _ = std::fs::remove_file(record_path(&p.mountpoint));
    let _ = std::fs::remove_file(backing_ids_path(&p.mountpoint));
    let _ = std::fs::remove_file(crate::control::socket_path(&p.mountpoint));
    let catalog = tiering.catalog.clone();
    tiering.flush_usage();
    tiering.workers.stop();
    drop(tiering);
    if let Some(h) = &handles {
        h.stop();
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    match catalog.checkpoint() {
        Ok(true) => {}
        Ok(false) => tracing::warn!("catalog: another process reads it; its WAL is kept"),
        Err(e) => tracing::error!("catalog: {e}"),
    }
    tracing::info!(
        live_inodes = overlay.live_inodes(),
        inode_fds = overlay.inode_fds_held(),
        daemon_reads = overlay
            .daemon_reads
            .load(std::sync::atomic::Ordering::Relaxed),
        daemon_writes = overlay
            .daemon_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        "coldtier unmounted"
    );
    result.map_err(|e| anyhow::anyhow!("FUSE session ended with an error: {e}"))
}

/// SIGHUP: reads the config file again and puts in force what may change while mounted
/// (policy, recall, catalog retention and backups, costs, the store's credentials and
/// other settings, checked like at mount), recorded as a new config version; what cannot
/// change is named in the log and kept. A file that does not parse changes nothing.
pub fn reload(path: Option<&Path>, t: &Tiering, config: &ConfigCell) {
    let Some(path) = path else {
        tracing::info!("reload: no config file (the defaults are in force): nothing to read");
        return;
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload failed, the config in force stays: {e}");
            return;
        }
    };
    let old = config.read().clone();
    let (mut new, kept) = old.reloaded(new);
    if !kept.is_empty() {
        tracing::warn!(
            "reload: cannot change while mounted, kept as mounted until the next mount: {}",
            kept.join(", ")
        );
    }
    if new.store != old.store {
        match new.store_config() {
            Ok(Some(cfg)) => {
                let opened = t.rt.block_on(async {
                    let s = crate::store::open(&cfg).await?;
                    let c = check_store(&*s).await?;
                    Ok::<_, crate::store::StoreError>((s, c))
                });
                match opened {
                    Ok((s, c)) => {
                        t.set_store(crate::store::counting::count_errors(s));
                        t.set_store_validates(c.validates_checksums);
                        log_store_check(&c);
                    }
                    Err(e) => {
                        tracing::error!(
                            "reload: the new [store] settings fail their check ({e}); the store in force stays"
                        );
                        new.store = old.store.clone();
                        new.note("the [store] above failed its check at reload: the [store] in force is the one of the version before");
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!("reload: [store]: {e}"),
        }
    }
    match t.catalog.record_config(&new.recorded_text()) {
        Ok(v) => {
            t.set_settings(new.tier_settings(&t.mountpoint));
            *config.write() = Arc::new(new);
            tracing::info!(config_version = v.version, "config reloaded");
        }
        Err(e) => tracing::error!(
            "reload: cannot record the config version, the config in force stays: {e}"
        ),
    }
}

/// What `start_tiering` started: the engine's runtime, the engine, the config in force and
/// the node-handle map (if it could be opened).
type Started = (
    tokio::runtime::Runtime,
    Arc<Tiering>,
    ConfigCell,
    Option<Arc<handles::Handles>>,
);

/// Remembers the node ids the mount hands out with their file handles, beside the catalog
/// (`catalog::handles`), so that NFS handles outlive cache drops, remounts and restarts.
/// Without it (the map cannot be opened) the mount still serves, with handles that go
/// stale once the kernel drops an inode.
fn remember_handles<B: Send + Sync + 'static>(
    catalog: &Path,
    overlay: &Arc<OverlayFs<B>>,
) -> Option<Arc<handles::Handles>> {
    let path = crate::catalog::handles::path_for(catalog);
    let opened = overlay
        .root_handle()
        .map_err(|e| format!("the source root has no file handle ({e:?})"))
        .and_then(|root| {
            crate::catalog::handles::HandleDb::open(&path, &root).map_err(|e| e.to_string())
        })
        .and_then(|db| handles::Handles::start(db).map_err(|e| e.to_string()));
    match opened {
        Ok(h) => {
            overlay.set_handle_store(h.clone());
            Some(h)
        }
        Err(e) => {
            tracing::warn!(
                "node-handle map {}: {e}: NFS handles of files the kernel no longer caches \
                 will be stale",
                path.display()
            );
            None
        }
    }
}

/// Opens the catalog (recording the config version in force), the store, the tiering
/// engine and its control socket, and installs the overlay's tiering hooks. Runs before
/// the mount serves anything, so that no stub is ever served without its records.
fn start_tiering<B: Send + Sync + 'static>(
    p: &Prepared,
    overlay: &Arc<OverlayFs<B>>,
) -> anyhow::Result<Started> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coldtier-tier")
        .enable_all()
        .build()?;
    let path = p.config.catalog_path(&p.mountpoint);
    let catalog = Arc::new(
        Catalog::open(&path).map_err(|e| anyhow::anyhow!("catalog {}: {e}", path.display()))?,
    );
    let handles = remember_handles(&path, overlay);
    // Versions an older coldtier recorded with their credentials in clear lose them now.
    match catalog.redact_config_texts(crate::config::redact_secrets) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            versions = n,
            "catalog: credentials found in recorded config versions were redacted; backups \
             taken before this may still hold them: rotate those credentials"
        ),
        Err(e) => tracing::error!("catalog: cannot redact old config versions: {e}"),
    }
    let version = catalog.record_config(&p.config.recorded_text())?;
    let store_cfg = p.config.store_config().map_err(|e| anyhow::anyhow!(e))?;
    let (store, prefix) = match &store_cfg {
        None => (None, String::new()),
        Some(c) => {
            let s = rt
                .block_on(crate::store::open(c))
                .map_err(|e| anyhow::anyhow!("store: {e}"))?;
            let s = crate::store::counting::count_errors(s);
            (Some(s), c.prefix().to_string())
        }
    };
    let described = store.as_ref().map(|s| s.describe());
    let checked = store.as_ref().map(|s| {
        rt.block_on(check_store(&**s))
            .map_err(|e| format!("store {}: {e}", described.as_deref().unwrap_or_default()))
    });
    if let Some(Err(e)) = &checked {
        if !p.paused {
            return Err(bad(format!(
                "{e}; fix [store] (or the credentials), or mount with --paused to start with tiering paused"
            )));
        }
    }
    let t = Tiering::new(
        p.config.tier_settings(&p.mountpoint),
        catalog,
        store,
        prefix,
        p.source.clone(),
        p.mountpoint.clone(),
        p.root.try_clone()?,
        rt.handle().clone(),
        overlay.gate(),
    )?;
    // The replica targets: opened, not checked (an unreachable one fails only the
    // replication and fallbacks that use it, never the mount).
    let mut replicas = Vec::new();
    for r in p.config.replica_configs().map_err(|e| anyhow::anyhow!(e))? {
        let s = rt
            .block_on(crate::store::open(&r.store))
            .map_err(|e| anyhow::anyhow!("replica {}: {e}", r.name))?;
        tracing::info!(replica = %r.name, store = %s.describe(), "replica target");
        replicas.push((r.name, crate::store::counting::count_errors(s)));
    }
    t.set_replicas(replicas);
    match checked {
        Some(Ok(c)) => {
            t.set_store_validates(c.validates_checksums);
            log_store_check(&c);
        }
        Some(Err(e)) => {
            tracing::error!("{e}; tiering paused until `coldtier resume` finds the store working")
        }
        None => {}
    }
    if p.paused {
        t.set_paused(true);
        tracing::warn!("tiering paused (mounted with --paused): no policy runs, gc or catalog uploads until `coldtier resume`");
    }
    t.set_mount(overlay.clone());
    overlay.set_tier_hooks(t.clone());
    t.resume();
    let socket = crate::control::socket_path(&p.mountpoint);
    let server = crate::control::server::Server::bind(&socket)
        .map_err(|e| anyhow::anyhow!("control socket {}: {e}", socket.display()))?;
    let config: ConfigCell = Arc::new(parking_lot::RwLock::new(Arc::new(p.config.clone())));
    server.spawn(Arc::new(Control {
        t: t.clone(),
        config: config.clone(),
        config_path: p.config_path.clone(),
    }))?;
    crate::jobs::start(&t);
    // Last opens reach the catalog once a minute (and before each scan, and at unmount).
    let weak = Arc::downgrade(&t);
    rt.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let Some(t) = weak.upgrade() else { break };
            let _ = tokio::task::spawn_blocking(move || t.flush_usage()).await;
        }
    });
    if p.config.metrics.listen.is_some() {
        // `coldtier_store_up` stays true while nothing calls the store: a LIST of a prefix
        // that holds nothing, once a minute (an empty answer is the store up, and not an
        // error in `coldtier_store_errors_total` as a HEAD's "not found" would be).
        let weak = Arc::downgrade(&t);
        rt.spawn(async move {
            loop {
                let Some(t) = weak.upgrade() else { break };
                if let Some(store) = t.store_opt() {
                    // No object has this prefix (data keys are hashes).
                    let key = format!("{}/coldtier-probe/", crate::tier::context::KEY_PREFIX);
                    drop(t);
                    let _ = tokio::time::timeout(STORE_PROBE_TIMEOUT, store.list(&key)).await;
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
    }
    tracing::info!(
        config_version = version.version,
        catalog = %path.display(),
        store = described.as_deref().unwrap_or("none ([store] not configured)"),
        "tiering ready"
    );
    Ok((rt, t, config, handles))
}

/// How long the metrics' store probe may take before it counts for nothing.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the store check at mount may take, retries included.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// [`crate::store::check`] with a deadline and a probe key of this daemon's own.
pub async fn check_store(
    store: &dyn crate::store::ObjectStore,
) -> Result<crate::store::StoreCheck, crate::store::StoreError> {
    let nonce = format!(
        "{:x}-{:x}",
        crate::catalog::system_now_ns(),
        std::process::id()
    );
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, crate::store::check(store, &nonce)).await {
        Ok(r) => r,
        Err(_) => Err(crate::store::StoreError::new(
            crate::store::StoreErrorKind::Unreachable,
            format!("no answer within {} s", STORE_CHECK_TIMEOUT.as_secs()),
        )),
    }
}

/// One line saying how copies will be proven.
pub fn log_store_check(c: &crate::store::StoreCheck) {
    if c.validates_checksums {
        tracing::info!("store check passed; the store refuses uploads that do not match their checksum: its checksums prove each copy");
        if c.multipart_proven == Some(false) {
            tracing::info!("the store's answer to a multipart upload proves nothing: objects up to 5 GiB go in one PUT, which its answer proves");
        }
    } else {
        tracing::warn!("store check passed, but the store does not refuse an upload that does not match its checksum: every copy is read back and compared before its file is stubbed (twice the traffic)");
    }
}

/// SOURCE and MOUNTPOINT: from the command line, else from `[mount]` of the config. Both
/// given and different: refused (the config may name a catalog of another mount).
fn mount_paths(args: &MountArgs, config: &Config) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let same = |a: &Path, b: &Path| {
        a == b
            || std::fs::canonicalize(a)
                .ok()
                .zip(std::fs::canonicalize(b).ok())
                .is_some_and(|(x, y)| x == y)
    };
    let m = &config.mount;
    let source = match (&args.source, &m.source) {
        (Some(a), Some(c)) if !same(a, c) => {
            return Err(bad(format!(
                "SOURCE {} differs from mount.source {} in the config file: give one of them",
                a.display(),
                c.display()
            )))
        }
        (Some(a), _) => a.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => {
            return Err(bad(
                "no SOURCE: give it on the command line or set mount.source in the config file",
            ))
        }
    };
    let mountpoint = match (&args.mountpoint, &m.mountpoint) {
        (Some(a), Some(c)) if !same(a, c) => {
            return Err(bad(format!(
            "MOUNTPOINT {} differs from mount.mountpoint {} in the config file: give one of them",
            a.display(),
            c.display()
        )))
        }
        (Some(a), _) => Some(a.clone()),
        // A config mount point comes with a config source, which SOURCE matched above.
        (None, Some(c)) => Some(c.clone()),
        (None, None) => None,
    };
    Ok((source, mountpoint))
}

/// A coldtier mount at `path` whose daemon died (the kernel answers ENOTCONN) serves
/// nothing and blocks a new mount: detach it, so that a restart (`Restart=on-failure`)
/// mounts again. A mount whose daemon lives is never touched.
fn clear_dead_mount(path: &Path) {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(d) => d.join(path),
            Err(_) => return,
        }
    };
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return;
    };
    let Ok(parent) = std::fs::canonicalize(parent) else {
        return;
    };
    let abs = parent.join(name);
    match std::fs::symlink_metadata(&abs) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {}
        _ => return,
    }
    let Ok(mounts) = mountinfo::read() else {
        return;
    };
    if mountinfo::at(&mounts, &abs).is_none_or(|m| !mountinfo::is_coldtier(&m.fstype)) {
        return;
    }
    match unmount_path(&abs, true) {
        Ok(_) => eprintln!(
            "coldtier: detached the dead mount at {} (its daemon had exited)",
            abs.display()
        ),
        Err(e) => eprintln!(
            "coldtier: cannot detach the dead mount at {}: {e}",
            abs.display()
        ),
    }
}

/// Starts the metrics endpoint if `[metrics] listen` asks for it; its address.
fn start_metrics(p: &Prepared, t: &Arc<Tiering>) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(listen) = &p.config.metrics.listen else {
        return Ok(None);
    };
    let addr = crate::config::parse_metrics_listen(listen)
        .map_err(|m| bad(format!("metrics.listen: {m}")))?;
    crate::daemon::metrics::set_catalog(t.catalog.clone());
    let bound = crate::daemon::metrics::serve(addr).map_err(|e| {
        bad(format!(
            "metrics.listen: cannot listen on {addr}: {e} (choose another port)"
        ))
    })?;
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    Ok(Some(bound))
}

/// `coldtier umount`.
/// `coldtier restart`: asks the mount's supervisor (SIGUSR2) to hand the mount over to a
/// new daemon started from the binary on disk, and waits until the new one serves.
pub fn restart(args: &crate::cli::args::RestartArgs) -> anyhow::Result<()> {
    require_root("restart")?;
    let mp = std::fs::canonicalize(&args.mountpoint)
        .map_err(|e| bad(format!("{}: {e}", args.mountpoint.display())))?;
    if !is_coldtier_mount(&mp) {
        return Err(bad(format!("{} is not a coldtier mount", mp.display())));
    }
    let Some((old, _)) = read_record(&mp) else {
        return Err(anyhow::anyhow!(
            "{}: no runtime record under {RUN_DIR}: cannot find its daemon",
            mp.display()
        ));
    };
    let Some(sup) = record_supervisor(&mp).filter(|p| process_alive(*p)) else {
        return Err(anyhow::anyhow!(
            "the daemon of {} (pid {old}) runs without a supervisor (started by an older \
             coldtier?): it cannot be restarted without unmounting",
            mp.display()
        ));
    };
    // SAFETY: signalling the supervisor of this mount, which root started.
    if unsafe { libc::kill(sup, libc::SIGUSR2) } != 0 {
        return Err(anyhow::anyhow!(
            "cannot signal the supervisor pid {sup}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        if let Some((new, _)) = read_record(&mp) {
            if new != old && process_alive(new) && std::fs::metadata(&mp).is_ok() {
                eprintln!(
                    "{}: daemon pid {old} handed the mount over to pid {new}",
                    mp.display()
                );
                return Ok(());
            }
        }
        if !process_alive(sup) {
            return Err(anyhow::anyhow!(
                "the supervisor pid {sup} exited during the restart; see the mount's log"
            ));
        }
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!(
                "no new daemon serves {} after {}s; see the mount's log",
                mp.display(),
                args.timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn umount(args: &UmountArgs) -> anyhow::Result<()> {
    require_root("umount")?;
    let given = if args.mountpoint.is_absolute() {
        args.mountpoint.clone()
    } else {
        std::env::current_dir()?.join(&args.mountpoint)
    };
    // A dead daemon leaves a mount whose stat fails (ENOTCONN): fall back to the path as given.
    let mp = std::fs::canonicalize(&given).unwrap_or(given);
    let mounts = mountinfo::read()?;
    let conn = match mountinfo::at(&mounts, &mp) {
        Some(m) if mountinfo::is_coldtier(&m.fstype) => m.fuse_connection(),
        _ => return Err(bad(format!("{} is not a coldtier mount", mp.display()))),
    };
    let pid = read_record(&mp).map(|r| r.0);
    let wait = Duration::from_secs(args.timeout);
    let outcome = match unmount_bounded(&mp, args.lazy, wait) {
        Unmount::Waiting(child) if args.force => {
            let conn = conn.ok_or_else(|| {
                anyhow::anyhow!("{}: no FUSE connection found to abort", mp.display())
            })?;
            eprintln!(
                "{}: daemon {} has not answered the unmount in {}s: aborting FUSE connection {conn}",
                mp.display(),
                pid.map_or("?".to_string(), |p| p.to_string()),
                args.timeout
            );
            let abort = fuse_connection_dir(&conn)?.join("abort");
            std::fs::write(&abort, "1")
                .map_err(|e| anyhow::anyhow!("aborting FUSE connection {conn}: {e}"))?;
            if !matches!(wait_child(child, Duration::from_secs(10)), Some(Ok(_))) {
                return Err(anyhow::anyhow!(
                    "{}: the unmount still waits after aborting FUSE connection {conn}",
                    mp.display()
                ));
            }
            // The daemon, stopped or hung, is not waited for: it finds its connection gone
            // (ENODEV) and exits when it runs again.
            eprintln!("{}: unmounted (FUSE connection aborted)", mp.display());
            return Ok(());
        }
        Unmount::Waiting(_) => {
            let abort = conn
                .as_deref()
                .and_then(|c| fuse_connection_dir(c).ok())
                .map_or("/sys/fs/fuse/connections/<id>/abort".into(), |d| {
                    d.join("abort").display().to_string()
                });
            return Err(anyhow::anyhow!(
                "{mp}: the unmount waits for daemon {pid}, which has not answered in {t}s \
                 (stopped or hung); the mount is detached, and the unmount completes when the \
                 daemon answers. To end it now: echo 1 > {abort} \
                 (requests the daemon has not answered fail; data not yet handed to it is \
                 lost), or next time coldtier umount --force",
                mp = mp.display(),
                pid = pid.map_or("?".to_string(), |p| p.to_string()),
                t = args.timeout,
            ));
        }
        Unmount::Done(r) => r,
    };
    let detached = match outcome {
        Ok(true) => {
            eprintln!("{}: busy, detached; the daemon finishes when the last open file closes", mp.display());
            true
        }
        Ok(false) => false,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(anyhow::anyhow!(
                "{} is busy (files are open or a process has its working directory there); close them or use --lazy",
                mp.display()
            ))
        }
        Err(e) => return Err(anyhow::anyhow!("cannot unmount {}: {e}", mp.display())),
    };
    if let Some(pid) = pid.filter(|_| !detached) {
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        while process_alive(pid) {
            if Instant::now() > deadline {
                return Err(anyhow::anyhow!(
                    "unmounted, but daemon pid {pid} has not exited after {}s",
                    args.timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::halt_polling_note;

    #[test]
    fn the_halt_polling_note_is_for_haltpoll_guests_that_halt_at_once() {
        let s = |v: &str| Some(v.to_string());
        assert!(halt_polling_note(s("haltpoll\n"), s("0\n")).is_some());
        for (driver, ns) in [
            (s("haltpoll\n"), s("200000\n")),
            (s("intel_idle\n"), s("0\n")),
            (s("haltpoll\n"), None),
            (None, s("0\n")),
            (s("haltpoll\n"), s("junk\n")),
        ] {
            assert_eq!(
                halt_polling_note(driver.clone(), ns.clone()),
                None,
                "{driver:?} {ns:?}"
            );
        }
    }
}
