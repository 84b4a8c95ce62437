//! The daemon side of the control socket: accepts any local user's connections (socket
//! 0666 in a directory only root writes), reads one request per line, and hands it to a
//! `Handler` with the peer's credentials (SO_PEERCRED, SO_PEERGROUPS), which decides what
//! that user may ask.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::protocol::{ErrorBody, ErrorCode, Op, Progress, Reply, Request, PROTOCOL_VERSION};

/// The shortest time between two progress lines of one request.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Who sent a request (the peer credentials of the connection, taken by the kernel when
/// it connected: SO_PEERCRED, SO_PEERGROUPS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Peer {
    pub fn root() -> Peer {
        Peer {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A request as the handler gets it besides its op: who sent it, and `cancel`, set when
/// the client goes away (Ctrl-C, a killed client): a long request stops cleanly then.
pub struct Ctx {
    pub peer: Peer,
    pub cancel: crate::base::cancel::Cancel,
}

/// What the daemon does with a request. `progress` sends progress lines to the client.
/// The result is the op's reply type (`control::replies`) as JSON.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        op: Op,
        progress: &mut dyn FnMut(Progress),
        ctx: &Ctx,
    ) -> Result<serde_json::Value, ErrorBody>;
}

/// Watches `conn` while a request is handled: if the client hangs up, `cancel` is set.
/// Stops when `done` is set (checked every 100 ms).
fn watch_hangup(
    conn: &UnixStream,
    cancel: crate::base::cancel::Cancel,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let Ok(conn) = conn.try_clone() else { return };
    let _ = std::thread::Builder::new()
        .name("control-watch".into())
        .spawn(move || {
            use std::sync::atomic::Ordering;
            while !done.load(Ordering::SeqCst) {
                let mut p = libc::pollfd {
                    fd: conn.as_raw_fd(),
                    events: libc::POLLRDHUP,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for 100 ms.
                let n = unsafe { libc::poll(&mut p, 1, 100) };
                if n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                    if !done.load(Ordering::SeqCst) {
                        tracing::warn!("control: the client went away: cancelling its request");
                        cancel.cancel();
                    }
                    return;
                }
            }
        });
}

/// A bound control socket; removed from the filesystem on drop.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

fn peer(s: &UnixStream) -> Option<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid out pointers of the right size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    let mut groups = vec![0u32; 256];
    let mut len = (groups.len() * 4) as libc::socklen_t;
    // SAFETY: groups has room for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // Without the peer's groups (an old kernel), a user is judged by uid and gid alone.
    groups.truncate(if r == 0 { len as usize / 4 } else { 0 });
    Some(Peer {
        uid: cred.uid,
        gid: cred.gid,
        groups,
    })
}

impl Server {
    /// Binds the socket at `path` (its directory is made 0755, writable by root alone; a
    /// stale socket is replaced). The socket itself is 0666: any user may connect, and the
    /// handler decides by the peer's credentials what each may ask (root: everything; other
    /// users: the state and history of files they may read).
    pub fn bind(path: &Path) -> std::io::Result<Server> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        if path.exists() {
            // A live daemon would answer; a dead one left its socket behind.
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running daemon", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves connections on a background thread, one thread per connection, for the life
    /// of the process. Returns the socket path: the daemon removes it when it stops.
    pub fn spawn(self, handler: Arc<dyn Handler>) -> std::io::Result<PathBuf> {
        let listener = self.listener.try_clone()?;
        let path = self.path.clone();
        // The serving thread owns the socket from here on; do not unlink it on drop.
        std::mem::forget(self);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let h = handler.clone();
                    let _ = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || serve_conn(conn, &*h));
                }
            })?;
        Ok(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn send(w: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

fn serve_conn(conn: UnixStream, handler: &dyn Handler) {
    let Some(peer) = peer(&conn) else {
        return;
    };
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let reader = BufReader::new(conn);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::Error {
                id: 0,
                error: ErrorBody { code: ErrorCode::BadRequest, message: format!("bad request: {e}") },
            },
            Ok(r) if r.v != PROTOCOL_VERSION => Reply::Error {
                id: r.id,
                error: ErrorBody {
                    code: ErrorCode::BadRequest,
                    message: format!(
                        "protocol version {} is not supported by this daemon (it speaks {PROTOCOL_VERSION}); use the coldtier binary the daemon runs",
                        r.v
                    ),
                },
            },
            Ok(r) => {
                let id = r.id;
                let mut out = writer.try_clone();
                // At most ten progress lines a second (a recall of many small files would
                // otherwise send one per file); the final reply carries the totals. A line
                // that says how much there is to do always goes: the bar needs it.
                // The last line the throttle held back goes before the reply: a bar ends
                // where the work ended.
                let mut throttle = crate::base::progress::Throttle::new(PROGRESS_EVERY);
                let mut progress = |p: Progress| {
                    if let (Some(p), Ok(w)) = (throttle.offer(p), out.as_mut()) {
                        let _ = send(w, &Reply::progress(id, p));
                    }
                };
                let ctx = Ctx {
                    peer: peer.clone(),
                    cancel: crate::base::cancel::Cancel::new(),
                };
                let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                watch_hangup(&writer, ctx.cancel.clone(), done.clone());
                let r = handler.handle(r.op, &mut progress, &ctx);
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                if let (Some(p), Ok(w)) = (throttle.flush(), out.as_mut()) {
                    let _ = send(w, &Reply::progress(id, p));
                }
                match r {
                    Ok(result) => Reply::Done { id, result },
                    Err(error) => Reply::Error { id, error },
                }
            }
        };
        if send(&mut writer, &reply).is_err() {
            return;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
