//! The FUSE adapter: the only file that names fuser. Each method turns a kernel request into
//! an OverlayFs call and its result into a reply; errno mapping lives here, decisions don't.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno as FErrno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use super::backing::{Errno, SetTime, Stat};
use super::backing_ids::BackingIds;
use super::config::Readdirplus;
use super::overlay::{
    Caller, Entry, Listed, OpenOutcome, Opened, OverlayFs, ReadStep, SetAttr, Waiter, XattrReply,
};
use crate::fs::metrics::{self, FuseOp};

/// Attribute and entry cache lifetimes handed to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    pub attr: Duration,
    pub entry: Duration,
}

/// A file's passthrough registration on the connection, recorded by node in the table the
/// next daemon reads (`fs::backing_ids`): in it before the kernel hears of it, out of it
/// before it is closed.
pub struct Backing {
    id: std::mem::ManuallyDrop<BackingId>,
    raw: u32,
    node: u64,
    table: Option<Arc<BackingIds>>,
    /// Taken over from the previous daemon: files the kernel opened before the restart
    /// may still use it when this daemon's last one closes, so it is then given back to
    /// the table (closed when the kernel forgets the node), not closed.
    adopted: bool,
}

impl Backing {
    /// `id`, registered for `node`'s files.
    fn new(
        id: BackingId,
        raw: u32,
        node: u64,
        table: Option<&Arc<BackingIds>>,
        adopted: bool,
    ) -> Backing {
        if let (Some(t), false) = (table, adopted) {
            t.record(node, raw);
        }
        Backing {
            id: std::mem::ManuallyDrop::new(id),
            raw,
            node,
            table: table.cloned(),
            adopted,
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        match (&self.table, self.adopted) {
            (Some(t), true) => {
                t.give_back(self.node, self.raw);
                // SAFETY: taken out once, here; the id stays registered (the table has it).
                let id = unsafe { std::mem::ManuallyDrop::take(&mut self.id) };
                let _ = id.into_raw();
            }
            (table, _) => {
                if let Some(t) = table {
                    t.remove(self.node, self.raw);
                }
                // SAFETY: dropped once, here (closes the id on the connection).
                unsafe { std::mem::ManuallyDrop::drop(&mut self.id) };
            }
        }
    }
}

/// Registers `fd` of node `node` for passthrough, or, for a node whose files the previous
/// daemon registered (restart without unmount), takes that registration over: the kernel
/// accepts one backing file per inode while earlier opens of it are open.
/// [`register`] for an open.
fn open_registered(
    reply: &ReplyOpen,
    ids: Option<&Arc<BackingIds>>,
    node: u64,
    fd: BorrowedFd<'_>,
) -> std::io::Result<Backing> {
    register(
        node,
        fd,
        ids,
        |fd| reply.open_backing(fd),
        // SAFETY: an id registered on this connection, owned by the Backing.
        |raw| unsafe { reply.wrap_backing(raw) },
    )
}

/// [`register`] for a create (or tmpfile).
fn created_registered(
    reply: &ReplyCreate,
    ids: Option<&Arc<BackingIds>>,
    node: u64,
    fd: BorrowedFd<'_>,
) -> std::io::Result<Backing> {
    register(
        node,
        fd,
        ids,
        |fd| reply.open_backing(fd),
        // SAFETY: an id registered on this connection, owned by the Backing.
        |raw| unsafe { reply.wrap_backing(raw) },
    )
}

fn register(
    node: u64,
    fd: BorrowedFd<'_>,
    table: Option<&Arc<BackingIds>>,
    open: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    wrap: impl FnOnce(u32) -> BackingId,
) -> std::io::Result<Backing> {
    if table.is_some_and(|t| t.cached_before(node)) {
        // Files the kernel opened before the restart without passthrough may be open.
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    if let Some(raw) = table.and_then(|t| t.adopt(node)) {
        return Ok(Backing::new(wrap(raw), raw, node, table, true));
    }
    let raw = open(fd)?.into_raw();
    Ok(Backing::new(wrap(raw), raw, node, table, false))
}

pub struct FuseAdapter {
    fs: Arc<OverlayFs<Backing>>,
    /// The connection's passthrough ids by node, kept for the next daemon.
    ids: Option<Arc<BackingIds>>,
    /// A copy of the connection's fd (set once the session is up).
    dev: Arc<std::sync::OnceLock<std::os::fd::OwnedFd>>,
    ttl: Ttls,
    readdirplus: Readdirplus,
    served: Arc<Serving>,
    negotiated: Arc<parking_lot::Mutex<Option<Negotiated>>>,
}

/// What the INIT exchange settled that the daemon acts on: a daemon that takes the
/// connection over (restart without unmount) gets no INIT and sets itself up from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// Kernel passthrough of resident files' I/O.
    pub passthrough: bool,
    /// POSIX ACLs enforced by the kernel, the umask left to the daemon.
    pub acl: bool,
}

impl Negotiated {
    /// "passthrough=1,acl=1": how it travels to the next daemon.
    pub fn encode(&self) -> String {
        format!(
            "passthrough={},acl={}",
            u8::from(self.passthrough),
            u8::from(self.acl)
        )
    }

    pub fn decode(s: &str) -> Option<Negotiated> {
        let mut n = Negotiated::default();
        for kv in s.split(',') {
            match kv.split_once('=')? {
                ("passthrough", v) => n.passthrough = v == "1",
                ("acl", v) => n.acl = v == "1",
                _ => return None,
            }
        }
        Some(n)
    }
}

impl FuseAdapter {
    /// The reply to a create or tmpfile: the entry and the open handle (with passthrough
    /// when the file got it).
    fn reply_created(
        &self,
        r: crate::fs::backing::SysResult<(Entry, Opened<Backing>)>,
        reply: ReplyCreate,
    ) {
        match r {
            Ok((e, o)) => {
                mark_cached(self.ids.as_ref(), e.ino, &o);
                let a = attr(e.ino, &e.stat);
                let g = Generation(e.generation);
                match &o.file.backing {
                    Some(b) => reply.created_passthrough(
                        &self.ttl.entry,
                        &a,
                        g,
                        FileHandle(o.fh),
                        PASSTHROUGH_OPEN,
                        &b.id,
                    ),
                    None => reply.created(
                        &self.ttl.entry,
                        &a,
                        g,
                        FileHandle(o.fh),
                        FopenFlags::empty(),
                    ),
                }
            }
            Err(e) => reply.error(err(e)),
        }
    }
    pub fn new(
        fs: Arc<OverlayFs<Backing>>,
        ttl: Ttls,
        readdirplus: Readdirplus,
        ids: Option<Arc<BackingIds>>,
    ) -> Self {
        FuseAdapter {
            fs,
            ids,
            dev: Arc::default(),
            ttl,
            readdirplus,
            served: Arc::default(),
            negotiated: Arc::default(),
        }
    }

    /// How long the kernel may keep node `ino`'s attributes (none while they are volatile:
    /// `OverlayFs::attrs_volatile`).
    fn attr_ttl(&self, ino: u64) -> Duration {
        if self.fs.attrs_volatile(ino) {
            Duration::ZERO
        } else {
            self.ttl.attr
        }
    }

    /// Closes passthrough id `raw` on the connection.
    fn close_backing(&self, raw: u32) {
        let Some(dev) = self.dev.get() else {
            return tracing::debug!("passthrough id {raw} left open: no connection fd");
        };
        // FUSE_DEV_IOC_BACKING_CLOSE: _IOW(229, 2, uint32_t).
        const BACKING_CLOSE: libc::c_ulong = (1 << 30) | (4 << 16) | (229 << 8) | 2;
        // SAFETY: the ioctl reads one u32 through the pointer, on the connection's fd.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), BACKING_CLOSE, &raw as *const u32) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!("closing passthrough id {raw}: {e}");
        }
    }

    /// Where the daemon puts a copy of the connection's fd once the session is up (for
    /// closing passthrough ids outside a reply).
    pub fn connection_slot(&self) -> Arc<std::sync::OnceLock<std::os::fd::OwnedFd>> {
        self.dev.clone()
    }

    /// What INIT settled, once it has (shared: read it after the session is mounted).
    pub fn negotiated(&self) -> Arc<parking_lot::Mutex<Option<Negotiated>>> {
        self.negotiated.clone()
    }

    /// Sets the overlay up as a previous daemon's INIT settled it (the connection is taken
    /// over: no INIT comes).
    pub fn resume_as(&self, n: Negotiated) {
        if n.acl {
            self.fs.set_apply_umask(true);
        }
        if !n.passthrough && self.fs.passthrough_enabled() {
            self.fs
                .disable_passthrough("the connection was set up without FUSE_PASSTHROUGH");
        }
        *self.negotiated.lock() = Some(n);
    }

    /// What a handover (`Serving::drain`) waits on.
    pub fn serving(&self) -> Arc<Serving> {
        self.served.clone()
    }

    /// Counts a request in, unless the daemon is handing over: then the request is left
    /// unanswered (its reply forgotten, not dropped: a dropped reply sends EIO), and the
    /// kernel sends it again to the next daemon (FUSE_NOTIFY_RESEND).
    fn enter(&self) -> Option<Served> {
        let s = &self.served;
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        if s.draining.load(Ordering::SeqCst) {
            s.leave();
            return None;
        }
        Some(Served(s.clone()))
    }
}

/// The requests a daemon is serving, and whether it is handing the mount over to the next
/// daemon (restart without unmount).
#[derive(Default)]
pub struct Serving {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    idle: (parking_lot::Mutex<()>, parking_lot::Condvar),
}

impl Serving {
    fn leave(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _g = self.idle.0.lock();
            self.idle.1.notify_all();
        }
    }

    /// Stops taking requests (the ones that arrive from now on wait for the next daemon)
    /// and waits, up to `limit`, for those being served to be answered. False if some are
    /// still being served at the limit (a recall a request waits for, on a thread of its
    /// own: the kernel sends that request again to the next daemon).
    pub fn drain(&self, limit: Duration) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + limit;
        let mut g = self.idle.0.lock();
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if self.idle.1.wait_until(&mut g, deadline).timed_out() {
                return self.in_flight.load(Ordering::SeqCst) == 0;
            }
        }
        true
    }
}

/// One request being served (dropped when it is answered or handed on to a thread).
struct Served(Arc<Serving>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.leave();
    }
}

fn err(e: Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

fn time(t: (i64, u32)) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::new(t.0 as u64, t.1)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.0.unsigned_abs()) + Duration::from_nanos(t.1 as u64)
    }
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dtype(d: u8) -> FileType {
    match d {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn attr(ino: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.size,
        blocks: st.blocks,
        atime: time(st.atime),
        mtime: time(st.mtime),
        ctime: time(st.ctime),
        crtime: st.btime.map(time).unwrap_or(UNIX_EPOCH),
        kind: kind(st.mode),
        perm: (st.mode & 0o7777) as u16,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: st.rdev,
        blksize: st.blksize,
        flags: 0,
    }
}

/// `struct fuse_statx_out` (include/uapi/linux/fuse.h, 7.39: 288 bytes) for node `ino`
/// with attributes `st`: the basic stats as getattr gives them, and the birth time where the
/// backing file system has one.
fn statx_out(ino: u64, st: &Stat, ttl: &Duration) -> Vec<u8> {
    const STATX_BASIC_STATS: u32 = 0x7ff;
    const STATX_BTIME: u32 = 0x800;
    let mut b = Vec::with_capacity(288);
    let u16_ = |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_le_bytes());
    let u32_ = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
    let u64_ = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_le_bytes());
    let time = |b: &mut Vec<u8>, (s, ns): (i64, u32)| {
        b.extend_from_slice(&s.to_le_bytes());
        b.extend_from_slice(&ns.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes());
    };
    // fuse_statx_out: attr_valid, attr_valid_nsec, flags, spare[2].
    u64_(&mut b, ttl.as_secs());
    u32_(&mut b, ttl.subsec_nanos());
    u32_(&mut b, 0);
    u64_(&mut b, 0);
    u64_(&mut b, 0);
    // fuse_statx.
    let mask = STATX_BASIC_STATS | if st.btime.is_some() { STATX_BTIME } else { 0 };
    u32_(&mut b, mask);
    u32_(&mut b, st.blksize);
    u64_(&mut b, 0); // attributes
    u32_(&mut b, st.nlink);
    u32_(&mut b, st.uid);
    u32_(&mut b, st.gid);
    u16_(&mut b, st.mode as u16);
    u16_(&mut b, 0);
    u64_(&mut b, ino);
    u64_(&mut b, st.size);
    u64_(&mut b, st.blocks);
    u64_(&mut b, 0); // attributes_mask
    time(&mut b, st.atime);
    time(&mut b, st.btime.unwrap_or((0, 0)));
    time(&mut b, st.ctime);
    time(&mut b, st.mtime);
    u32_(&mut b, libc::major(st.rdev as libc::dev_t));
    u32_(&mut b, libc::minor(st.rdev as libc::dev_t));
    u32_(&mut b, 0); // dev: the kernel gives the mount's own
    u32_(&mut b, 0);
    b.resize(288, 0); // __spare2
    b
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos()),
            // fuser 0.18 decodes a kernel time (secs < 0, nsecs) as EPOCH - (|secs|, nsecs)
            // (its system_time_from_time); undo exactly that to recover the kernel's value.
            // tests/mount.rs `times_match_native` checks pre-1970 times against native.
            Err(e) => SetTime::At(
                -(e.duration().as_secs() as i64),
                e.duration().subsec_nanos(),
            ),
        },
    })
}

fn requester(req: &Request) -> crate::fs::privs::Requester {
    crate::fs::privs::Requester {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask,
    }
}

impl FuseAdapter {
    fn reply_entry(&self, r: Result<Entry, Errno>, reply: ReplyEntry) {
        match r {
            Ok(e) => {
                reply.entry_with_ttls(
                    &self.attr_ttl(e.ino),
                    &self.ttl.entry,
                    &attr(e.ino, &e.stat),
                    Generation(e.generation),
                );
                // An entry and its attributes, both fresh now (a getattr reply refreshes
                // only the attributes: not recorded).
                self.fs.told(e.ino, &e.stat);
            }
            Err(e) => reply.error(err(e)),
        }
    }
}

fn reply_empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_xattr(r: Result<XattrReply, Errno>, reply: ReplyXattr) {
    match r {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(err(e)),
    }
}

/// Open flags of a passthrough file: no FLUSH at each close (the kernel does its I/O on the
/// backing file, so the mount's page cache holds nothing to write back, and the daemon's
/// flush has nothing to do): one round trip less per close. Locks are the kernel's own and
/// are released at close without it. Files served by the daemon keep FLUSH (shared mmap
/// writes are written back at close, and their errors reported there).
const PASSTHROUGH_OPEN: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// Marks `node` as opened without passthrough in the table the next daemon reads, before
/// the kernel hears of such an open ([`BackingIds::mark_cached`]).
fn mark_cached(ids: Option<&Arc<BackingIds>>, node: u64, o: &Opened<Backing>) {
    if let (Some(t), None) = (ids, &o.file.backing) {
        t.mark_cached(node);
    }
}

fn reply_opened(o: Opened<Backing>, reply: ReplyOpen) {
    match &o.file.backing {
        Some(b) => reply.opened_passthrough(FileHandle(o.fh), PASSTHROUGH_OPEN, &b.id),
        None => reply.opened(FileHandle(o.fh), FopenFlags::empty()),
    }
}

/// Runs the data operation `op` on handles `fhs` once their data is local: at once, or, for
/// a file opened as a stub (its data not fetched at open), on a thread of its own after
/// the recall, so that a long download never holds one of the few request threads.
fn with_data<R: Send + 'static>(
    fs: &Arc<OverlayFs<Backing>>,
    fhs: &[u64],
    reply: R,
    fail: fn(R, Errno),
    op: impl FnOnce(&OverlayFs<Backing>, R) + Send + 'static,
) {
    let mut waits = Vec::new();
    for &fh in fhs {
        match fs.needs_data(fh) {
            Ok(Some(w)) => waits.push(w),
            Ok(None) => {}
            Err(e) => return fail(reply, e),
        }
    }
    if waits.is_empty() {
        return op(fs, reply);
    }
    let fs = fs.clone();
    let fhs = fhs.to_vec();
    let spawned = std::thread::Builder::new()
        .name("data-wait".into())
        .spawn(move || {
            for w in waits {
                if let Err(e) = w() {
                    return fail(reply, e);
                }
            }
            // The data is local now (or made a stub again meanwhile: then it waits again,
            // on this thread).
            for fh in fhs {
                match fs.needs_data(fh) {
                    Ok(None) => {}
                    Ok(Some(w)) => {
                        if let Err(e) = w() {
                            return fail(reply, e);
                        }
                    }
                    Err(e) => return fail(reply, e),
                }
            }
            op(&fs, reply)
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a thread to wait for a recall: {e}");
    }
}

/// Waits for a stub's bytes, then reads again; a few rounds at most (each wait ends with
/// the bytes there, or with the recall's error).
fn read_after_wait(
    fs: &OverlayFs<Backing>,
    fh: u64,
    offset: u64,
    size: u32,
    who: crate::fs::privs::Requester,
    mut wait: Waiter,
    reply: ReplyData,
) {
    for _ in 0..8 {
        if let Err(e) = wait() {
            return reply.error(err(e));
        }
        match fs.read_step(fh, offset, size, who) {
            Ok(ReadStep::Data(d)) => return reply.data(&d),
            Ok(ReadStep::Wait(w)) => wait = w,
            Err(e) => return reply.error(err(e)),
        }
    }
    tracing::warn!(fh, "a read gave up: its bytes kept needing a recall");
    reply.error(err(Errno(libc::EAGAIN)));
}

/// Waits for what the open waits for (a recall), then opens again; a few rounds at most
/// (the file could be stubbed again in between).
fn open_after_wait(
    fs: &OverlayFs<Backing>,
    ids: Option<&Arc<BackingIds>>,
    ino: u64,
    flags: i32,
    who: crate::fs::privs::Requester,
    mut wait: Waiter,
    reply: ReplyOpen,
) {
    for _ in 0..4 {
        if let Err(e) = wait() {
            return reply.error(err(e));
        }
        match fs.open(ino, flags, who, |node, fd| {
            open_registered(&reply, ids, node, fd)
        }) {
            Ok(OpenOutcome::Opened(o)) => {
                mark_cached(ids, ino, &o);
                return reply_opened(o, reply);
            }
            Ok(OpenOutcome::Wait(w)) => wait = w,
            Err(e) => return reply.error(err(e)),
        }
    }
    tracing::warn!(ino, "open gave up: the file kept needing a recall");
    reply.error(err(Errno(libc::EAGAIN)));
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        let wanted = InitFlags::FUSE_HAS_IOCTL_DIR
            | InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_ASYNC_DIO
            // open(O_TRUNC) arrives as one OPEN with O_TRUNC: truncating a stub then
            // needs no recall (without it the kernel opens first and truncates after).
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        let _ = config.add_capabilities(wanted & caps);
        // Without READDIRPLUS_AUTO the kernel asks for attributes with every listing: a walk
        // that lists then stats (find, ls -l, du, Samba) costs no LOOKUP round trip per entry.
        if self.readdirplus == Readdirplus::Auto {
            let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO & caps);
        }
        // POSIX ACLs: the kernel enforces them (with default_permissions) and leaves the
        // umask to us, so that a default ACL on the parent can override it as on ext4.
        let acl = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        let mut negotiated = Negotiated::default();
        if caps.contains(acl) && config.add_capabilities(acl).is_ok() {
            self.fs.set_apply_umask(true);
            negotiated.acl = true;
        } else {
            tracing::warn!("kernel lacks FUSE_POSIX_ACL: ACLs are stored but not enforced");
        }
        if self.fs.passthrough_enabled() {
            if caps.contains(InitFlags::FUSE_PASSTHROUGH) {
                let _ = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH);
                let _ = config.set_max_stack_depth(1);
                negotiated.passthrough = true;
                tracing::info!("kernel passthrough enabled for resident files");
            } else {
                self.fs
                    .disable_passthrough("kernel did not offer FUSE_PASSTHROUGH");
            }
        }
        *self.negotiated.lock() = Some(negotiated);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        metrics::fuse_request(FuseOp::Lookup);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        self.reply_entry(self.fs.lookup(parent.0, name), reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // Handing over: the next daemon starts with no references to forget.
        if let Some(_served) = self.enter() {
            self.fs.forget(ino.0, nlookup);
            // A previous daemon's passthrough id for it that this one never used: no file
            // of the node can be open once the kernel forgot it.
            if let Some(t) = self.ids.as_ref() {
                if let Some(raw) = t.forgotten(ino.0) {
                    self.close_backing(raw);
                }
                t.forget_mark(ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        metrics::fuse_request(FuseOp::Getattr);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        match self.fs.getattr(ino.0) {
            Ok(e) => reply.attr(&self.attr_ttl(e.ino), &attr(e.ino, &e.stat)),
            Err(e) => reply.error(err(e)),
        }
    }

    /// statx, for what getattr does not carry: the birth time (`statx_out`).
    fn statx(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        _flags: u32,
        _mask: u32,
        reply: ReplyData,
    ) {
        metrics::fuse_request(FuseOp::Getattr);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        match self.fs.getattr(ino.0) {
            Ok(e) => reply.data(&statx_out(e.ino, &e.stat, &self.attr_ttl(e.ino))),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        metrics::fuse_request(FuseOp::Setattr);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Some(f) = fh {
            if let Err(e) = self.fs.revive_handle(f.0, ino.0, libc::O_RDWR) {
                return reply.error(err(e));
            }
        }
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            fh: fh.map(|f| f.0),
            who: requester(req),
        };
        match self.fs.setattr(ino.0, a) {
            Ok(e) => reply.attr(&self.attr_ttl(e.ino), &attr(e.ino, &e.stat)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        metrics::fuse_request(FuseOp::Readlink);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        metrics::fuse_request(FuseOp::Mknod);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        self.reply_entry(
            self.fs
                .mknod(parent.0, name, mode, rdev, caller(req, umask)),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        metrics::fuse_request(FuseOp::Mkdir);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        self.reply_entry(
            self.fs.mkdir(parent.0, name, mode, caller(req, umask)),
            reply,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        metrics::fuse_request(FuseOp::Unlink);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        reply_empty(self.fs.unlink(parent.0, name), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        metrics::fuse_request(FuseOp::Rmdir);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        reply_empty(self.fs.rmdir(parent.0, name), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        metrics::fuse_request(FuseOp::Symlink);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        self.reply_entry(
            self.fs
                .symlink(parent.0, link_name, target.as_os_str(), caller(req, 0)),
            reply,
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Rename);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        reply_empty(
            self.fs
                .rename(parent.0, name, newparent.0, newname, flags.bits()),
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        metrics::fuse_request(FuseOp::Link);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        self.reply_entry(self.fs.link(ino.0, newparent.0, newname), reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        metrics::fuse_request(FuseOp::Open);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        let who = requester(req);
        match self.fs.open(ino.0, flags.0, who, |node, fd| {
            open_registered(&reply, self.ids.as_ref(), node, fd)
        }) {
            Ok(OpenOutcome::Opened(o)) => {
                mark_cached(self.ids.as_ref(), ino.0, &o);
                reply_opened(o, reply)
            }
            Ok(OpenOutcome::Wait(w)) => {
                // A stub: its recall may take long (a Glacier restore: hours), so it is
                // waited for on its own thread, never on one of the few request threads.
                let fs = self.fs.clone();
                let ids = self.ids.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("open-wait".into())
                        .spawn(move || {
                            open_after_wait(&fs, ids.as_ref(), ino.0, flags.0, who, w, reply)
                        });
                if let Err(e) = spawned {
                    tracing::error!("cannot start a thread to wait for a recall: {e}");
                }
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        metrics::fuse_request(FuseOp::Read);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, flags.0) {
            return reply.error(err(e));
        }
        let who = requester(req);
        match self.fs.read_step(fh.0, offset, size, who) {
            Ok(ReadStep::Data(d)) => reply.data(&d),
            Ok(ReadStep::Wait(w)) => {
                // A stub's bytes on their way: waited for on a thread of its own, never on
                // one of the few request threads.
                let fs = self.fs.clone();
                let spawned = std::thread::Builder::new()
                    .name("read-wait".into())
                    .spawn(move || read_after_wait(&fs, fh.0, offset, size, who, w, reply));
                if let Err(e) = spawned {
                    tracing::error!("cannot start a thread to wait for a recall: {e}");
                }
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        metrics::fuse_request(FuseOp::Write);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, flags.0) {
            return reply.error(err(e));
        }
        let who = requester(req);
        // The request's buffer is borrowed: copied only when the write must wait.
        match self.fs.needs_data(fh.0) {
            Ok(None) => match self.fs.write(fh.0, offset, data, who) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(err(e)),
            },
            Ok(Some(_)) => {
                let data = data.to_vec();
                with_data(
                    &self.fs,
                    &[fh.0],
                    reply,
                    |r, e| r.error(err(e)),
                    move |fs, reply| match fs.write(fh.0, offset, &data, who) {
                        Ok(n) => reply.written(n),
                        Err(e) => reply.error(err(e)),
                    },
                );
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Flush);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        // A previous daemon's handle: nothing of it is buffered here, nothing to flush.
        if !self.fs.has_handle(fh.0) {
            return reply.ok();
        }
        reply_empty(self.fs.flush(fh.0), reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Release);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Fsync);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, libc::O_RDONLY) {
            return reply.error(err(e));
        }
        reply_empty(self.fs.fsync(fh.0, datasync), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        metrics::fuse_request(FuseOp::Opendir);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        metrics::fuse_request(FuseOp::Readdir);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, libc::O_RDONLY) {
            return reply.error(err(e));
        }
        let r = self.fs.readdir(fh.0, offset as i64, |ino, off, d, name| {
            reply.add(INodeNo(ino), off as u64, dtype(d), name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        metrics::fuse_request(FuseOp::Readdirplus);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, libc::O_RDONLY) {
            return reply.error(err(e));
        }
        let dot = FileAttr {
            ino,
            kind: FileType::Directory,
            ..attr(ino.0, &Stat::default())
        };
        let r = self
            .fs
            .readdirplus(fh.0, offset as i64, |name, off, entry| match entry {
                Listed::Node(e) => {
                    // One timeout for the entry and the attributes here: none for a file
                    // whose attributes are volatile.
                    let ttl = match self.fs.attrs_volatile(e.ino) {
                        true => Duration::ZERO,
                        false => self.ttl.entry,
                    };
                    let full = reply.add(
                        INodeNo(e.ino),
                        off as u64,
                        name,
                        &ttl,
                        &attr(e.ino, &e.stat),
                        Generation(e.generation),
                    );
                    if !full {
                        metrics::READDIRPLUS_ENTRIES.inc();
                        self.fs.told(e.ino, &e.stat);
                    }
                    full
                }
                Listed::Known { ino, kind: k } => {
                    let full = reply.add_name_only(
                        off as u64,
                        name,
                        &FileAttr {
                            kind: kind(k),
                            ..attr(ino, &Stat::default())
                        },
                    );
                    if !full {
                        metrics::READDIRPLUS_NAME_ONLY.inc();
                    }
                    full
                }
                Listed::Dot => reply.add(
                    INodeNo(0),
                    off as u64,
                    name,
                    &Duration::ZERO,
                    &dot,
                    Generation(0),
                ),
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Releasedir);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Fsyncdir);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, libc::O_RDONLY) {
            return reply.error(err(e));
        }
        reply_empty(self.fs.fsync(fh.0, datasync), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        metrics::fuse_request(FuseOp::Statfs);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Setxattr);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        let who = requester(req);
        reply_empty(self.fs.setxattr_as(ino.0, name, value, flags, who), reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        metrics::fuse_request(FuseOp::Getxattr);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        reply_xattr(self.fs.getxattr(ino.0, name, size), reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        metrics::fuse_request(FuseOp::Listxattr);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        reply_xattr(self.fs.listxattr(ino.0, size), reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        metrics::fuse_request(FuseOp::Removexattr);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        reply_empty(self.fs.removexattr(ino.0, name), reply);
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        metrics::fuse_request(FuseOp::Ioctl);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, libc::O_RDONLY) {
            return reply.error(err(e));
        }
        match self
            .fs
            .fileattr_ioctl(fh.0, cmd, in_data, out_size as usize)
        {
            Ok(out) => reply.ioctl(0, &out),
            Err(e) => reply.error(err(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        metrics::fuse_request(FuseOp::Access);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        reply_empty(self.fs.access(ino.0), reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        metrics::fuse_request(FuseOp::Create);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        let r = self.fs.create(
            parent.0,
            name,
            mode,
            flags,
            caller(req, umask),
            |node, fd| created_registered(&reply, self.ids.as_ref(), node, fd),
        );
        self.reply_created(r, reply);
    }

    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        metrics::fuse_request(FuseOp::Create);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        let r = self
            .fs
            .tmpfile(parent.0, mode, caller(req, umask), |node, fd| {
                created_registered(&reply, self.ids.as_ref(), node, fd)
            });
        self.reply_created(r, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        metrics::fuse_request(FuseOp::Fallocate);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, libc::O_RDWR) {
            return reply.error(err(e));
        }
        let who = requester(req);
        with_data(
            &self.fs,
            &[fh.0],
            reply,
            |r, e| r.error(err(e)),
            move |fs, reply| reply_empty(fs.fallocate(fh.0, offset, length, mode, who), reply),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        metrics::fuse_request(FuseOp::Lseek);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self.fs.revive_handle(fh.0, ino.0, libc::O_RDONLY) {
            return reply.error(err(e));
        }
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        metrics::fuse_request(FuseOp::CopyFileRange);
        let Some(_served) = self.enter() else {
            return std::mem::forget(reply);
        };
        if let Err(e) = self
            .fs
            .revive_handle(fh_in.0, ino_in.0, libc::O_RDONLY)
            .and_then(|()| self.fs.revive_handle(fh_out.0, ino_out.0, libc::O_RDWR))
        {
            return reply.error(err(e));
        }
        // Copying from a stub reads it: the recall rules apply as to a read.
        if let Err(e) = self.fs.check_copy_source(fh_in.0, requester(req)) {
            return reply.error(err(e));
        }
        let flags = flags.bits() as u32;
        with_data(
            &self.fs,
            &[fh_in.0, fh_out.0],
            reply,
            |r, e| r.error(err(e)),
            move |fs, reply| match fs
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len, flags)
            {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(err(e)),
            },
        );
    }
}

/// The FUSE session of a mount (fuser stays behind this file).
pub struct Session(fuser::Session<FuseAdapter>);

/// Unmounts a [`Session`] from another thread (a termination signal).
pub struct Unmounter(fuser::SessionUnmounter);

impl Session {
    /// Mounts `adapter` at `mountpoint` (the kernel lists it as `coldtier:SOURCE`) with
    /// `threads` request threads; on `blkdev` (`mount.fsid`), as `fuseblk` (listed as the
    /// block device).
    pub fn mount(
        adapter: FuseAdapter,
        mountpoint: &Path,
        source: &Path,
        threads: usize,
        flags: &[String],
        blkdev: Option<&Path>,
    ) -> std::io::Result<Session> {
        let mut config = mount_config(source, threads, flags);
        if let Some(dev) = blkdev {
            config.mount_options.push(fuser::MountOption::BlockDevice(
                dev.to_string_lossy().into_owned(),
            ));
        }
        fuser::Session::new(adapter, mountpoint, &config).map(Session)
    }

    /// Takes over the live connection `fd` of a previous daemon of this mount (restart
    /// without unmount): `adapter` set up with [`FuseAdapter::resume_as`]; then asks the
    /// kernel to send again the requests the previous daemon read and never answered
    /// (FUSE_NOTIFY_RESEND, Linux 6.9; on an older kernel those requests wait forever).
    pub fn resume(
        adapter: FuseAdapter,
        fd: std::os::fd::OwnedFd,
        source: &Path,
        threads: usize,
    ) -> std::io::Result<Session> {
        // The mount exists: its options are the ones it was made with.
        let config = mount_config(source, threads, &[]);
        let acl = config.acl;
        let s = fuser::Session::resume(adapter, fd, acl, config)?;
        if let Err(e) = notify_resend(std::os::fd::AsFd::as_fd(&s)) {
            tracing::warn!(
                "FUSE_NOTIFY_RESEND refused ({e}): requests the previous daemon had read \
                 are not answered (the kernel is older than 6.9?)"
            );
        }
        Ok(Session(s))
    }

    /// The `/dev/fuse` connection (the supervisor keeps a copy across daemon restarts).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.0)
    }

    /// What the overlay calls to drop the kernel's cached attributes of an inode.
    pub fn invalidator(&self) -> Box<dyn Fn(u64) + Send + Sync> {
        attr_invalidator(self.0.notifier())
    }

    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.0.unmount_callable())
    }

    /// Serves requests until the file system is unmounted.
    pub fn run(self) -> std::io::Result<()> {
        self.0.run()
    }
}

impl Unmounter {
    pub fn unmount(&mut self) -> std::io::Result<()> {
        self.0.unmount()
    }
}

/// FUSE_NOTIFY_RESEND: the kernel queues again every request this connection's daemon
/// read without answering, marked as resent.
fn notify_resend(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    // struct fuse_out_header { u32 len; i32 error (the notify code); u64 unique (0) }
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&16u32.to_ne_bytes());
    h[4..8].copy_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    // SAFETY: h is a complete fuse_out_header; fd is the open /dev/fuse connection.
    let n = unsafe {
        libc::write(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            h.as_ptr().cast(),
            h.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The standard mount options `coldtier mount -o` applies to the mount.
pub const MOUNT_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "noatime",
    "atime",
    "relatime",
    "strictatime",
    "sync",
    "async",
    "dirsync",
];

/// Mount options for the session: allow_other + default_permissions, like a real share;
/// `flags` (of [`MOUNT_FLAGS`], a later one overriding an earlier one) on top of rw, suid,
/// dev, exec and the kernel's default relatime.
pub fn mount_config(source: &Path, threads: usize, flags: &[String]) -> fuser::Config {
    use fuser::MountOption as O;
    let (mut ro, mut suid, mut dev, mut exec) = (false, true, true, true);
    let (mut noatime, mut sync, mut dirsync) = (false, false, false);
    for f in flags {
        match f.as_str() {
            "ro" | "rw" => ro = f == "ro",
            "nosuid" | "suid" => suid = f == "suid",
            "nodev" | "dev" => dev = f == "dev",
            "noexec" | "exec" => exec = f == "exec",
            "noatime" | "atime" | "relatime" | "strictatime" => noatime = f == "noatime",
            "sync" | "async" => sync = f == "sync",
            "dirsync" => dirsync = true,
            _ => {}
        }
    }
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        O::FSName(format!(
            "coldtier:{}",
            String::from_utf8_lossy(source.as_os_str().as_bytes())
        )),
        O::CUSTOM("subtype=coldtier".into()),
        O::DefaultPermissions,
        if dev { O::Dev } else { O::NoDev },
        if suid { O::Suid } else { O::NoSuid },
        if ro { O::RO } else { O::RW },
        if exec { O::Exec } else { O::NoExec },
    ];
    if noatime {
        c.mount_options.push(O::NoAtime);
    }
    if sync {
        c.mount_options.push(O::Sync);
    }
    if dirsync {
        c.mount_options.push(O::DirSync);
    }
    c.acl = fuser::SessionACL::All;
    c.n_threads = Some(threads.max(1));
    // Every thread reads the one /dev/fuse fd the supervisor also holds: a request a
    // crashed daemon had read is then still queued on a live device and is sent again to
    // the next daemon (FUSE_NOTIFY_RESEND). Per-thread clones (FUSE_DEV_IOC_CLONE) die
    // with the daemon, and the kernel fails their requests with ECONNABORTED.
    c.clone_fd = false;
    c
}

/// Tells the kernel to drop its cached attributes of an inode (the tiering layer changed
/// what a file shows: a stub's blocks, a recalled file's). Attributes only: no page cache
/// range, so it never waits for I/O on the inode.
pub fn attr_invalidator(n: fuser::Notifier) -> Box<dyn Fn(u64) + Send + Sync> {
    Box::new(move |ino| {
        if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!(ino, "attribute invalidation: {e}");
            }
        }
    })
}
