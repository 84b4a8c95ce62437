//! Restart without unmount (docs/architecture.md, "Restart without unmount"): the process
//! `coldtier mount` leaves running is a small supervisor. It holds what must outlive a
//! daemon (the source's root fd, the locks, and, once the daemon has mounted, a copy of
//! the `/dev/fuse` connection) and runs the daemon as a child process. When the daemon
//! dies with the mount still up (a crash, SIGKILL, the OOM killer), the supervisor starts
//! another that takes the connection over: the kernel queues clients' requests meanwhile
//! and sends again the ones the dead daemon had read (FUSE_NOTIFY_RESEND), so clients see
//! a pause, not an error. `coldtier restart MOUNTPOINT` (SIGUSR2 to the supervisor) hands
//! the mount over to a new daemon from the binary on disk (an upgrade) the same way, after
//! the old one has answered what it was serving.
//!
//! The daemon is the same binary, started as `coldtier mount --child`: what it inherits
//! is named in `COLDTIER_CHILD` (see [`ChildFds`]); it sends the supervisor its
//! connection over a Unix socket (SCM_RIGHTS) once it serves.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cli::args::MountArgs;

/// The environment variable that makes `coldtier mount --child` a daemon of a supervisor.
pub const CHILD_ENV: &str = "COLDTIER_CHILD";

/// The exit code of a daemon that handed its mount over (no unmount): the supervisor
/// starts the next one at once.
pub const HANDOVER_EXIT: i32 = 75;

/// Restarts after a crash allowed within [`RESTART_WINDOW`]; past that the supervisor
/// gives up (the mount then answers ENOTCONN, as without a supervisor).
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The descriptors a daemon inherits from its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFds {
    /// The source's root directory (O_PATH), opened before the first mount.
    pub root: RawFd,
    /// The daemon's end of the socket to the supervisor.
    pub sock: RawFd,
    /// The config text the mount started with (a memfd): used when the file no longer
    /// parses at a restart.
    pub config: RawFd,
    /// The start-up status pipe to `coldtier mount` (first daemon only).
    pub status: Option<RawFd>,
    /// The live `/dev/fuse` connection to take over, and what its INIT settled.
    pub fuse: Option<(RawFd, String)>,
}

impl ChildFds {
    pub fn encode(&self) -> String {
        let mut s = format!(
            "root={};sock={};config={}",
            self.root, self.sock, self.config
        );
        if let Some(f) = self.status {
            s.push_str(&format!(";status={f}"));
        }
        if let Some((f, neg)) = &self.fuse {
            s.push_str(&format!(";fuse={f};neg={neg}"));
        }
        s
    }

    pub fn decode(s: &str) -> Option<ChildFds> {
        let (mut root, mut sock, mut config, mut status, mut fuse, mut neg) =
            (None, None, None, None, None, None);
        for kv in s.split(';') {
            let (k, v) = kv.split_once('=')?;
            match k {
                "root" => root = Some(v.parse().ok()?),
                "sock" => sock = Some(v.parse().ok()?),
                "config" => config = Some(v.parse().ok()?),
                "status" => status = Some(v.parse().ok()?),
                "fuse" => fuse = Some(v.parse().ok()?),
                "neg" => neg = Some(v.to_string()),
                _ => return None,
            }
        }
        Some(ChildFds {
            root: root?,
            sock: sock?,
            config: config?,
            status,
            fuse: match (fuse, neg) {
                (Some(f), Some(n)) => Some((f, n)),
                (None, None) => None,
                _ => return None,
            },
        })
    }
}

/// Sends `fd` and a line of text over `sock` (SCM_RIGHTS).
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>, text: &str) -> std::io::Result<()> {
    let bytes = text.as_bytes();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data, zeroed then filled with pointers to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer has room for one cmsg carrying one fd (CMSG_SPACE above).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd.as_raw_fd());
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives what [`send_fd`] sent; `Ok(None)` at the end of the stream.
pub fn recv_fd(sock: &UnixStream) -> std::io::Result<Option<(OwnedFd, String)>> {
    let mut buf = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: as in send_fd.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers; MSG_CMSG_CLOEXEC makes the received fd CLOEXEC.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: the kernel filled the control buffer; CMSG_FIRSTHDR checks its length.
    let fd = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("no descriptor in the message"));
        }
        OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd))
    };
    let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    Ok(Some((fd, text)))
}

/// A memfd holding `text` (the config the mount started with), for the daemons.
pub fn text_fd(text: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: the name is NUL-terminated; MFD_CLOEXEC: inherited only where asked for.
    let fd = unsafe { libc::memfd_create(c"coldtier-config".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(text.as_bytes())?;
    Ok(f.into())
}

/// Reads a text [`text_fd`] holds (from its start; the fd is shared, never moved on).
pub fn read_text_fd(fd: BorrowedFd<'_>) -> std::io::Result<String> {
    let mut f = std::fs::File::from(fd.try_clone_to_owned()?);
    f.rewind()?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// What the supervisor needs to start daemons.
pub struct Plan {
    /// The binary to run (resolved at start: an upgrade replaces the file at this path).
    pub exe: PathBuf,
    /// `mount` arguments for the daemon (without `--child`).
    pub args: Vec<String>,
    /// The log filter (`COLDTIER_LOG`).
    pub log_filter: String,
    pub root: OwnedFd,
    pub config: OwnedFd,
    pub mountpoint: PathBuf,
    /// Start another daemon after a crash (`[mount] restart_on_crash`).
    pub restart_on_crash: bool,
}

/// The daemon's arguments: the mount's, resolved, so that a restart needs nothing else.
pub fn child_args(
    args: &MountArgs,
    source: &Path,
    mountpoint: &Path,
    log_file: Option<&Path>,
) -> Vec<String> {
    let mut v = vec![
        "mount".to_string(),
        source.display().to_string(),
        mountpoint.display().to_string(),
        "--child".into(),
    ];
    if let Some(c) = &args.config {
        let c = std::path::absolute(c).unwrap_or_else(|_| c.clone());
        v.push("--config".into());
        v.push(c.display().to_string());
    }
    if args.paused {
        v.push("--paused".into());
    }
    if !args.options.is_empty() {
        v.push("-o".into());
        v.push(args.options.join(","));
    }
    match log_file {
        Some(l) => {
            v.push("--log-file".into());
            v.push(l.display().to_string());
        }
        None => v.push("--foreground".into()),
    }
    v
}

/// Clears FD_CLOEXEC on `fd` (in the child, between fork and exec).
fn inherit(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd of this process.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of the daemon the supervisor runs now (0: none), for the signal thread.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Runs the supervisor until the mount ends; returns the exit code for `coldtier mount`.
/// `status`: the start-up pipe, handed to the first daemon.
pub fn supervise(plan: Plan, status: Option<std::fs::File>) -> i32 {
    // Before any other thread exists: every thread must have the forwarded signals blocked
    // (a thread that has not would take SIGUSR2 and end the process).
    let upgrade = Arc::new(std::sync::atomic::AtomicBool::new(false));
    forward_signals(upgrade.clone());
    let (mine, theirs) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("supervisor: socketpair: {e}");
            return 1;
        }
    };
    // The daemon's connection, as it last sent it.
    let conn: Arc<Mutex<Option<(OwnedFd, String)>>> = Arc::default();
    {
        let conn = conn.clone();
        let _ = std::thread::Builder::new()
            .name("supervisor-conn".into())
            .spawn(move || loop {
                match recv_fd(&mine) {
                    Ok(Some(c)) => *conn.lock() = Some(c),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!("supervisor: receiving the daemon's connection: {e}");
                        return;
                    }
                }
            });
    }
    let mut status = status;
    let mut crashes: Vec<Instant> = Vec::new();
    loop {
        let resume = conn.lock().as_ref().map(|(fd, neg)| {
            (
                fd.try_clone().expect("dup of the fuse connection"),
                neg.clone(),
            )
        });
        let child = match spawn(&plan, &theirs, status.take(), resume) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("supervisor: cannot start the daemon: {e}");
                return 1;
            }
        };
        let pid = child.id() as i32;
        CHILD.store(pid, Ordering::SeqCst);
        let st = wait(child);
        CHILD.store(0, Ordering::SeqCst);
        let has_conn = conn.lock().is_some();
        match (st.code(), st.signal()) {
            (Some(0), _) => return 0,
            (Some(HANDOVER_EXIT), _) if has_conn => {
                let why = if upgrade.swap(false, Ordering::SeqCst) {
                    "coldtier restart"
                } else {
                    "a handover"
                };
                tracing::info!(
                    pid,
                    "daemon handed the mount over ({why}): starting the next"
                );
                continue;
            }
            (code, sig) => {
                let what = match (code, sig) {
                    (Some(c), _) => format!("exited with status {c}"),
                    (_, Some(s)) => format!("was killed by signal {s}"),
                    _ => "ended".into(),
                };
                if !has_conn {
                    // It never served: a start-up failure, reported by the daemon itself.
                    return code.unwrap_or(1);
                }
                if !plan.restart_on_crash {
                    tracing::error!(
                        pid,
                        "daemon {what}; restart_on_crash is off: the mount is left dead"
                    );
                    return code.unwrap_or(1);
                }
                let now = Instant::now();
                crashes.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
                crashes.push(now);
                if crashes.len() > MAX_RESTARTS {
                    tracing::error!(
                        pid,
                        "daemon {what}, the {}th time in {} s: giving up (the mount is left dead; \
                         `coldtier mount` detaches it)",
                        crashes.len(),
                        RESTART_WINDOW.as_secs()
                    );
                    return 1;
                }
                tracing::error!(
                    pid,
                    "daemon {what}: starting another on the same connection (clients wait)"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Waits for `child` to end (EINTR-safe).
fn wait(mut child: std::process::Child) -> std::process::ExitStatus {
    loop {
        match child.wait() {
            Ok(st) => return st,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("supervisor: waiting for the daemon: {e}");
                return std::process::ExitStatus::from_raw(1 << 8);
            }
        }
    }
}

/// Starts a daemon: `plan.exe mount ... --child` with the descriptors it inherits.
fn spawn(
    plan: &Plan,
    sock: &UnixStream,
    status: Option<std::fs::File>,
    resume: Option<(OwnedFd, String)>,
) -> std::io::Result<std::process::Child> {
    let fds = ChildFds {
        root: plan.root.as_raw_fd(),
        sock: sock.as_raw_fd(),
        config: plan.config.as_raw_fd(),
        status: status.as_ref().map(|s| s.as_raw_fd()),
        fuse: resume.as_ref().map(|(f, n)| (f.as_raw_fd(), n.clone())),
    };
    let keep: Vec<RawFd> = [Some(fds.root), Some(fds.sock), Some(fds.config), fds.status]
        .into_iter()
        .flatten()
        .chain(fds.fuse.as_ref().map(|(f, _)| *f))
        .collect();
    let mut cmd = std::process::Command::new(&plan.exe);
    cmd.args(&plan.args)
        .env(CHILD_ENV, fds.encode())
        .env("COLDTIER_LOG", &plan.log_filter);
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl, prctl,
    // sigprocmask.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &keep {
                inherit(*fd)?;
            }
            // The daemon does not outlive its supervisor (systemd's SIGKILL of the main
            // process, an admin's kill -9): the pair lives and dies as one.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(status);
    drop(resume);
    Ok(child)
}

/// The supervisor's signals: SIGTERM, SIGINT and SIGHUP go to the daemon as they are
/// (unmount, reload); SIGUSR2 (`coldtier restart`) asks the daemon to hand over (SIGUSR1).
fn forward_signals(upgrade: Arc<std::sync::atomic::AtomicBool>) {
    // SAFETY: the set is initialised by sigemptyset before use.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR2] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let _ = std::thread::Builder::new()
        .name("supervisor-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: set holds the blocked signals; sig is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            let pid = CHILD.load(Ordering::SeqCst);
            if pid <= 0 {
                continue;
            }
            let to = if sig == libc::SIGUSR2 {
                upgrade.store(true, Ordering::SeqCst);
                tracing::info!("coldtier restart: asking the daemon to hand the mount over");
                libc::SIGUSR1
            } else {
                sig
            };
            // SAFETY: signalling the daemon this process started.
            unsafe { libc::kill(pid, to) };
        });
}

/// In the daemon: the descriptors from its supervisor (`COLDTIER_CHILD`), taken over.
pub struct Inherited {
    pub root: OwnedFd,
    pub sock: UnixStream,
    pub config_text: String,
    pub status: Option<std::fs::File>,
    pub resume: Option<(OwnedFd, String)>,
}

/// Takes the descriptors `COLDTIER_CHILD` names (once, at the daemon's start).
pub fn inherited() -> anyhow::Result<Inherited> {
    let v = std::env::var(CHILD_ENV)
        .map_err(|_| anyhow::anyhow!("--child is for the supervisor's daemon only"))?;
    let f = ChildFds::decode(&v).ok_or_else(|| anyhow::anyhow!("bad {CHILD_ENV}: {v}"))?;
    std::env::remove_var(CHILD_ENV);
    // SAFETY: the supervisor handed these descriptors to this process, one owner each.
    let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let config = own(f.config);
    let config_text = read_text_fd(config.as_fd())?;
    let set_cloexec = |fd: &OwnedFd| {
        // SAFETY: fcntl on an fd this process owns.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    };
    let root = own(f.root);
    set_cloexec(&root);
    let sock = own(f.sock);
    set_cloexec(&sock);
    let status = f.status.map(|fd| {
        let o = own(fd);
        set_cloexec(&o);
        std::fs::File::from(o)
    });
    let resume = f.fuse.map(|(fd, neg)| {
        let o = own(fd);
        set_cloexec(&o);
        (o, neg)
    });
    Ok(Inherited {
        root,
        sock: UnixStream::from(sock),
        config_text,
        status,
        resume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_fds_round_trip() {
        for f in [
            ChildFds {
                root: 3,
                sock: 4,
                config: 5,
                status: Some(6),
                fuse: None,
            },
            ChildFds {
                root: 3,
                sock: 4,
                config: 5,
                status: None,
                fuse: Some((9, "passthrough=1,acl=0".into())),
            },
        ] {
            assert_eq!(ChildFds::decode(&f.encode()), Some(f));
        }
        assert_eq!(ChildFds::decode("root=3"), None);
        assert_eq!(ChildFds::decode("root=3;sock=4;config=5;fuse=6"), None);
    }

    #[test]
    fn a_descriptor_and_its_text_cross_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = text_fd("hello").unwrap();
        send_fd(&a, t.as_fd(), "neg=1").unwrap();
        let (fd, text) = recv_fd(&b).unwrap().unwrap();
        assert_eq!(text, "neg=1");
        assert_eq!(read_text_fd(fd.as_fd()).unwrap(), "hello");
        drop(a);
        assert!(recv_fd(&b).unwrap().is_none());
    }
}
