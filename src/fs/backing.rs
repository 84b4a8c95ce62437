//! Every syscall on the backing tree: `*at()` calls relative to directory fds, O_PATH handles,
//! reopen through /proc/self/fd, xattrs, and the per-thread caller identity for creates.
//!
//! Nothing here allocates on the hot path (names are copied to a stack buffer) and nothing
//! here ever resolves an absolute path into the source tree: the mount may sit on top of it.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// A raw errno value from a failed syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub fn last() -> Self {
        Errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

pub type SysResult<T> = Result<T, Errno>;

fn cvt(r: libc::c_int) -> SysResult<libc::c_int> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

fn cvt_isize(r: isize) -> SysResult<usize> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

/// Copies `name` to a NUL-terminated stack buffer and calls `f` with it.
/// Names longer than NAME_MAX give ENAMETOOLONG, embedded NULs EINVAL.
pub fn with_name<T>(name: &OsStr, f: impl FnOnce(&CStr) -> SysResult<T>) -> SysResult<T> {
    let bytes = name.as_bytes();
    let mut buf = [0u8; 256];
    if bytes.len() > 255 {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let c = CStr::from_bytes_until_nul(&buf[..=bytes.len()]).map_err(|_| Errno(libc::EINVAL))?;
    if c.to_bytes().len() != bytes.len() {
        return Err(Errno(libc::EINVAL));
    }
    f(c)
}

/// "/proc/self/fd/N" for an fd, on the stack.
struct ProcPath {
    buf: [u8; 32],
}

impl ProcPath {
    fn new(fd: RawFd) -> Self {
        use std::io::Write;
        let mut buf = [0u8; 32];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        // 14 + 10 digits + NUL fits in 32 bytes.
        let _ = write!(cur, "/proc/self/fd/{fd}\0");
        ProcPath { buf }
    }
    fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).expect("proc path is NUL-terminated")
    }
    /// The same magic link for an `*at` call: ("N" relative to an fd of /proc/self/fd)
    /// when that directory could be opened, else (AT_FDCWD, the whole path). Resolving
    /// one name from there costs a fraction of the walk from the root, and every open of
    /// a file through the mount goes this way.
    fn at(&self) -> (RawFd, &CStr) {
        match proc_fd_dir() {
            Some(dir) => {
                let c = self.as_cstr();
                let rel = &c.to_bytes_with_nul()["/proc/self/fd/".len()..];
                (
                    dir,
                    CStr::from_bytes_with_nul(rel).expect("a suffix of a C string"),
                )
            }
            None => (libc::AT_FDCWD, self.as_cstr()),
        }
    }
}

const EMPTY: &CStr = c"";

/// The attributes coldtier needs from statx.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// Birth time, when the backing filesystem reports one.
    pub btime: Option<(i64, u32)>,
}

impl Stat {
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }

    fn from_statx(s: &libc::statx) -> Stat {
        let ts = |t: libc::statx_timestamp| (t.tv_sec, t.tv_nsec);
        Stat {
            dev: libc::makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            mode: s.stx_mode as u32,
            nlink: s.stx_nlink,
            uid: s.stx_uid,
            gid: s.stx_gid,
            rdev: encode_dev(s.stx_rdev_major, s.stx_rdev_minor),
            size: s.stx_size,
            blocks: s.stx_blocks,
            blksize: s.stx_blksize,
            atime: ts(s.stx_atime),
            mtime: ts(s.stx_mtime),
            ctime: ts(s.stx_ctime),
            btime: (s.stx_mask & libc::STATX_BTIME != 0).then(|| ts(s.stx_btime)),
        }
    }
}

/// The kernel's 32-bit `new_encode_dev` form that FUSE carries.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Decodes FUSE's 32-bit device number into a `dev_t` for mknod.
pub fn decode_dev(dev: u32) -> libc::dev_t {
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

const STATX_WANT: u32 = libc::STATX_BASIC_STATS | libc::STATX_BTIME;

fn statx_raw(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> SysResult<Stat> {
    let mut sx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: path is NUL-terminated, sx points to writable memory of the right size.
    cvt(unsafe { libc::statx(dirfd, path.as_ptr(), flags, STATX_WANT, sx.as_mut_ptr()) })?;
    // SAFETY: statx succeeded and filled the structure (it was zeroed before).
    Ok(Stat::from_statx(unsafe { &sx.assume_init() }))
}

/// lstat of `name` in directory `dir`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Stat> {
    with_name(name, |c| {
        statx_raw(dir.as_raw_fd(), c, libc::AT_SYMLINK_NOFOLLOW)
    })
}

/// stat of the object an fd (O_PATH or not) refers to, never following a symlink.
pub fn stat_fd(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    statx_raw(
        fd.as_raw_fd(),
        EMPTY,
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
    )
}

fn own(fd: libc::c_int) -> OwnedFd {
    // SAFETY: fd was just returned by a successful syscall and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An O_PATH handle on `name` in `dir` (never follows a final symlink).
pub fn open_path_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OwnedFd> {
    with_name(name, |c| {
        // SAFETY: c is NUL-terminated.
        let fd = cvt(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        Ok(own(fd))
    })
}

/// A kernel file handle (`struct file_handle`: 8-byte header + opaque bytes), persistent
/// across reboots on filesystems that support it, and stale once its inode is gone.
pub fn handle_of(fd: BorrowedFd<'_>) -> SysResult<Box<[u8]>> {
    const MAX_HANDLE_SZ: usize = 128;
    let mut buf = [0u8; 8 + MAX_HANDLE_SZ];
    buf[0..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf is a file_handle with handle_bytes set to the space after the header;
    // mount_id is a valid out pointer; EMPTY is NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    cvt_isize(r as isize)?;
    let n = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    Ok(buf[..8 + n.min(MAX_HANDLE_SZ)].into())
}

/// Opens an object by its file handle (needs CAP_DAC_READ_SEARCH; the daemon is root).
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle: &[u8],
    flags: libc::c_int,
) -> SysResult<OwnedFd> {
    // SAFETY: handle holds a complete file_handle produced by handle_of.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            handle.as_ptr(),
            flags | libc::O_CLOEXEC,
        )
    };
    let fd = cvt_isize(r as isize)?;
    Ok(own(fd as libc::c_int))
}

/// Current soft limit on open files.
pub fn nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur
    } else {
        1024
    }
}

/// Opens a directory given by path (before mounting: the backing root).
/// An access-time rule for [`open_dir_with_atime`] (mount(8)'s names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtimeRule {
    NoAtime,
    RelAtime,
    StrictAtime,
}

/// Directory `path` as the root of a detached bind mount of it (with the mounts below it)
/// that follows `rule` for access times: every file opened through the returned fd — by
/// the daemon, and by the kernel's passthrough, which reads through the daemon's file —
/// updates atime by `rule`, whatever the source's own mount says. open_tree(2) and
/// mount_setattr(2) (Linux 5.12), as root. The mount goes away with its last fd.
pub fn open_dir_with_atime(path: &std::path::Path, rule: AtimeRule) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: c is NUL-terminated; the flags are open_tree's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: match rule {
            AtimeRule::RelAtime => 0,
            AtimeRule::NoAtime => 0x10,
            AtimeRule::StrictAtime => 0x20,
        },
        attr_clr: MOUNT_ATTR_ATIME_MASK,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH names `fd` itself; `attr` is
    // a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: c is NUL-terminated.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(own(fd))
}

/// Opens the object behind an O_PATH fd for I/O with `flags`, via its /proc/self/fd magic link.
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> SysResult<OwnedFd> {
    let r = at_proc(fd, |dir, name| {
        // SAFETY: name is NUL-terminated.
        cvt(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) })
    })?;
    Ok(own(r))
}

/// Opens (and with O_CREAT creates) `name` in `dir`.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: libc::c_int,
    mode: u32,
) -> SysResult<OwnedFd> {
    with_name(name, |c| {
        // SAFETY: c is NUL-terminated.
        let fd = cvt(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        Ok(own(fd))
    })
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    // SAFETY: c is NUL-terminated.
    with_name(name, |c| {
        cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) }).map(drop)
    })
}

pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u32) -> SysResult<()> {
    with_name(name, |c| {
        // SAFETY: c is NUL-terminated.
        cvt(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, decode_dev(rdev)) }).map(drop)
    })
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    let t = std::ffi::CString::new(target.as_bytes()).map_err(|_| Errno(libc::EINVAL))?;
    with_name(name, |c| {
        // SAFETY: both strings are NUL-terminated.
        cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
    })
}

/// Hard link of the object behind an O_PATH fd (needs CAP_DAC_READ_SEARCH: the daemon is root).
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    with_name(name, |c| {
        // SAFETY: strings are NUL-terminated.
        cvt(unsafe {
            libc::linkat(
                fd.as_raw_fd(),
                EMPTY.as_ptr(),
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        })
        .map(drop)
    })
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> SysResult<()> {
    // SAFETY: c is NUL-terminated.
    with_name(name, |c| {
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
    })
}

pub fn rename_at(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
    flags: u32,
) -> SysResult<()> {
    with_name(oldname, |o| {
        with_name(newname, |n| {
            // SAFETY: strings are NUL-terminated.
            cvt(unsafe {
                libc::renameat2(
                    olddir.as_raw_fd(),
                    o.as_ptr(),
                    newdir.as_raw_fd(),
                    n.as_ptr(),
                    flags,
                )
            })
            .map(drop)
        })
    })
}

/// Target of the symlink behind an O_PATH fd.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for its whole length.
    let n = cvt_isize(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    at_proc(fd, |dir, name| {
        // SAFETY: name is NUL-terminated.
        cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) })
    })
    .map(drop)
}

pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> SysResult<()> {
    let u = uid.unwrap_or(u32::MAX);
    let g = gid.unwrap_or(u32::MAX);
    // SAFETY: EMPTY is NUL-terminated.
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            u,
            g,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn truncate_path_fd(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    let p = ProcPath::new(fd.as_raw_fd());
    // SAFETY: path is NUL-terminated.
    cvt(unsafe { libc::truncate(p.as_cstr().as_ptr(), size as libc::off_t) }).map(drop)
}

/// Asks the kernel to start reading the whole file into the page cache (a hint: its
/// failure changes nothing, so it is not reported).
pub fn will_need(fd: BorrowedFd<'_>) {
    // SAFETY: plain syscall on a valid fd.
    unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
}

/// A time to set: a value, the current time, or leave unchanged.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Omit,
    Now,
    At(i64, u32),
}

impl SetTime {
    fn timespec(self) -> libc::timespec {
        match self {
            SetTime::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            SetTime::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            SetTime::At(s, ns) => libc::timespec {
                tv_sec: s,
                tv_nsec: ns as i64,
            },
        }
    }
}

/// utimensat on the object behind an O_PATH fd; symlinks themselves are changed, not followed.
pub fn utimens_fd(
    fd: BorrowedFd<'_>,
    is_symlink: bool,
    atime: SetTime,
    mtime: SetTime,
) -> SysResult<()> {
    let ts = [atime.timespec(), mtime.timespec()];
    if is_symlink {
        // SAFETY: EMPTY is NUL-terminated, ts has two elements.
        return cvt(unsafe {
            libc::utimensat(
                fd.as_raw_fd(),
                EMPTY.as_ptr(),
                ts.as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop);
    }
    at_proc(fd, |dir, name| {
        // SAFETY: name is NUL-terminated, ts has two elements.
        cvt(unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), 0) })
    })
    .map(drop)
}

/// futimens(2): the times of a file opened for I/O (not O_PATH: [`utimens_fd`] takes
/// those), without the /proc/self/fd walk [`utimens_fd`] makes.
pub fn futimens(fd: BorrowedFd<'_>, atime: SetTime, mtime: SetTime) -> SysResult<()> {
    let ts = [atime.timespec(), mtime.timespec()];
    // SAFETY: ts has two elements.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// getxattrat(2) (Linux 6.13): the same number on every architecture coldtier builds for.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SYS_GETXATTRAT: libc::c_long = 464;

/// listxattrat(2) (Linux 6.13, with getxattrat): the same number on every architecture.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SYS_LISTXATTRAT: libc::c_long = 465;

/// `struct xattr_args` of getxattrat(2).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// An O_PATH fd of /proc/self/fd, for the `*at` calls of [`ProcPath::at`]. `None` if /proc
/// is not there. Kept with the pid it was opened by: /proc/self is resolved when it is
/// opened, so a child after fork (daemonizing) must open its own.
fn proc_fd_dir() -> Option<RawFd> {
    // SAFETY: getpid has no preconditions.
    proc_fd_dir_of(unsafe { libc::getpid() } as u32)
}

/// [`proc_fd_dir`] for a caller that knows its pid (`getpid` once per use).
fn proc_fd_dir_of(pid: u32) -> Option<RawFd> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // pid << 32 | fd; 0 = not opened yet.
    static DIR: AtomicU64 = AtomicU64::new(0);
    let cur = DIR.load(Ordering::Acquire);
    if cur != 0 && (cur >> 32) as u32 == pid {
        return Some(cur as u32 as RawFd);
    }
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let new = (u64::from(pid) << 32) | u64::from(fd as u32);
    match DIR.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
        // The parent's fd, if one was inherited across fork, is left alone: its number
        // may have been closed and reused since.
        Ok(_) => Some(fd),
        Err(won) => {
            // Another thread opened one first: use that.
            // SAFETY: our fresh fd, never shared.
            unsafe { libc::close(fd) };
            ((won >> 32) as u32 == pid).then_some(won as u32 as RawFd)
        }
    }
}

/// getxattrat(2) answered ENOSYS or EPERM once: not used again.
static GETXATTRAT_MISSING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// getxattrat(dir, path, 0, name); `None` when the call is not available (callers skip it
/// once [`GETXATTRAT_MISSING`] is set).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn getxattrat_raw(
    dir: RawFd,
    path: &CStr,
    name: &CStr,
    buf: &mut [u8],
) -> Option<SysResult<usize>> {
    let args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
        flags: 0,
    };
    // SAFETY: the path and name are NUL-terminated; args points at a live struct of the
    // size passed, whose value buffer is writable for `size` bytes.
    let r = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir,
            path.as_ptr(),
            0 as libc::c_uint,
            name.as_ptr(),
            &args as *const XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    xattrat_outcome(r)
}

/// The result of a getxattrat/listxattrat call: `None` (and remembered) when the call is
/// not available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn xattrat_outcome(r: libc::c_long) -> Option<SysResult<usize>> {
    if r >= 0 {
        return Some(Ok(r as usize));
    }
    let e = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    match e {
        // An older kernel, or (EPERM: reading a trusted.* attribute is never refused with
        // EPERM, without the capability it just is not there) a seccomp filter that does
        // not know the call, e.g. an allow-list: the old way answers, from now on.
        libc::ENOSYS | libc::EPERM => {
            GETXATTRAT_MISSING.store(true, std::sync::atomic::Ordering::Relaxed);
            None
        }
        _ => Some(Err(Errno(e))),
    }
}

/// listxattrat(dir, path, 0); `None` when the call is not available (the *xattrat calls
/// came in one release: one flag remembers that they are missing).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn listxattrat_raw(dir: RawFd, path: &CStr, buf: &mut [u8]) -> Option<SysResult<usize>> {
    // SAFETY: the path is NUL-terminated; buf is writable for its length.
    let r = unsafe {
        libc::syscall(
            SYS_LISTXATTRAT,
            dir,
            path.as_ptr(),
            0 as libc::c_uint,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    xattrat_outcome(r)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn listxattrat_raw(_: RawFd, _: &CStr, _: &mut [u8]) -> Option<SysResult<usize>> {
    None
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn getxattrat_raw(_: RawFd, _: &CStr, _: &CStr, _: &mut [u8]) -> Option<SysResult<usize>> {
    None
}

/// A per-thread fd number of our own through which [`at_proc`] (reopen, chmod, utimens,
/// the stub probe) reaches any fd's inode as `/proc/self/fd/<slot>`: the proc entry of a number looked up before
/// is found in the dentry cache, where each new fd number (the inode table holds one per
/// inode, all different) costs an entry made for it (measured over 15,000 O_PATH fds: a
/// probe ~8 us against ~4 us, a reopen ~10 us against ~7 us). Between uses the slot holds
/// the /proc/self/fd directory, not the last file (whose inode it would keep alive).
/// Closed when the thread ends.
struct Slot {
    pid: u32,
    fd: RawFd,
    name: [u8; 12],
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: getpid has no preconditions; the slot is this thread's own fd.
        if unsafe { libc::getpid() } as u32 == self.pid {
            unsafe { libc::close(self.fd) };
        }
    }
}

thread_local! {
    static SLOT: std::cell::RefCell<Option<Slot>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f(dir, name)` with `fd` reachable as `name` in `dir` (this thread's [`Slot`] in
/// /proc/self/fd); `None` when the slot cannot be used.
fn with_slot<T>(fd: BorrowedFd<'_>, f: impl FnOnce(RawFd, &CStr) -> T) -> Option<T> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let dir = proc_fd_dir_of(pid)?;
    SLOT.try_with(|cell| {
        // Never nested (`f` does not come back here); if it were, the old way answers.
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.as_ref().is_none_or(|s| s.pid != pid) {
            if let Some(mut stale) = slot.take() {
                stale.pid = 0; // the parent's number: not ours to close
            }
            // SAFETY: duplicates our own fd to the lowest free number.
            let n = unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) };
            if n < 0 {
                return None;
            }
            let mut name = [0u8; 12];
            let digits = n.to_string();
            name[..digits.len()].copy_from_slice(digits.as_bytes());
            *slot = Some(Slot { pid, fd: n, name });
        }
        let s = slot.as_ref()?;
        // SAFETY: replaces what our own slot number refers to.
        if unsafe { libc::dup3(fd.as_raw_fd(), s.fd, libc::O_CLOEXEC) } < 0 {
            return None;
        }
        let num = CStr::from_bytes_until_nul(&s.name).expect("NUL-terminated");
        let r = f(dir, num);
        // SAFETY: as above; the slot lets go of the file.
        unsafe { libc::dup3(dir, s.fd, libc::O_CLOEXEC) };
        Some(r)
    })
    .ok()
    .flatten()
}

/// Runs `f(dir, name)` on the `/proc/self/fd` magic link of `fd` as an `*at` pair:
/// through this thread's [`Slot`] when it can, else by the fd's own number
/// ([`ProcPath::at`]).
fn at_proc<T>(fd: BorrowedFd<'_>, mut f: impl FnMut(RawFd, &CStr) -> T) -> T {
    if let Some(r) = with_slot(fd, &mut f) {
        return r;
    }
    let p = ProcPath::new(fd.as_raw_fd());
    let (dir, name) = p.at();
    f(dir, name)
}

/// getxattr of any fd, O_PATH ones included (fgetxattr refuses those).
pub fn getxattr_fd(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    if !GETXATTRAT_MISSING.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(r) = at_proc(fd, |dir, num| getxattrat_raw(dir, num, name, buf)) {
            return r;
        }
    }
    let p = ProcPath::new(fd.as_raw_fd());
    // SAFETY: strings NUL-terminated; buf writable for buf.len() bytes (may be 0 for a size query).
    cvt_isize(unsafe {
        libc::getxattr(
            p.as_cstr().as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// setxattr of any fd: fsetxattr, or for an O_PATH fd (which it refuses with EBADF)
/// through its /proc/self/fd link.
pub fn setxattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> SysResult<()> {
    // SAFETY: name NUL-terminated; value readable for its length.
    match cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    }) {
        Err(Errno(libc::EBADF)) => {}
        r => return r.map(drop),
    }
    let p = ProcPath::new(fd.as_raw_fd());
    // SAFETY: strings NUL-terminated; value readable for its length.
    cvt(unsafe {
        libc::setxattr(
            p.as_cstr().as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// listxattr of any fd, O_PATH ones included (flistxattr refuses those).
pub fn listxattr_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    if !GETXATTRAT_MISSING.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(r) = at_proc(fd, |dir, num| listxattrat_raw(dir, num, buf)) {
            return r;
        }
    }
    let p = ProcPath::new(fd.as_raw_fd());
    // SAFETY: path NUL-terminated; buf writable for its length.
    cvt_isize(unsafe { libc::listxattr(p.as_cstr().as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// removexattr of any fd: fremovexattr, or for an O_PATH fd (which it refuses with
/// EBADF) through its /proc/self/fd link.
pub fn removexattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    // SAFETY: name NUL-terminated.
    match cvt(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) }) {
        Err(Errno(libc::EBADF)) => {}
        r => return r.map(drop),
    }
    let p = ProcPath::new(fd.as_raw_fd());
    // SAFETY: strings NUL-terminated.
    cvt(unsafe { libc::removexattr(p.as_cstr().as_ptr(), name.as_ptr()) }).map(drop)
}

/// FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR: `_IOR/_IOW('X', 31/32, struct fsxattr)` (28 bytes).
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// chattr +i, +a (linux/fs.h).
pub const FS_IMMUTABLE_FL: u32 = 0x10;
pub const FS_APPEND_FL: u32 = 0x20;

/// The file attribute flags (chattr) of a file (FS_IOC_GETFLAGS; an O_PATH fd is opened
/// again for it); 0 on a file system without them.
pub fn file_flags(fd: BorrowedFd<'_>) -> SysResult<u32> {
    let get = |fd: BorrowedFd<'_>| {
        let mut f: libc::c_int = 0;
        // SAFETY: the ioctl writes one int through the pointer (the kernel's own size for
        // FS_IOC_GETFLAGS, whatever its _IOR says).
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut f) }).map(|_| f)
    };
    let got = match get(fd) {
        Err(Errno(libc::EBADF)) => get(std::os::fd::AsFd::as_fd(&reopen(
            fd,
            libc::O_RDONLY | libc::O_NONBLOCK,
        )?)),
        r => r,
    };
    match got {
        Ok(f) => Ok(f as u32),
        Err(Errno(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Whether the file attribute ioctl `cmd` with `input` sets immutable or append-only.
pub fn fileattr_locks(cmd: u32, input: &[u8]) -> bool {
    let word = |i: &[u8]| {
        i.get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    if cmd == libc::FS_IOC_SETFLAGS as u32 {
        word(input).is_some_and(|f| f & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0)
    } else if cmd == FS_IOC_FSSETXATTR {
        // struct fsxattr: fsx_xflags first; FS_XFLAG_IMMUTABLE 0x8, FS_XFLAG_APPEND 0x10.
        word(input).is_some_and(|f| f & (0x8 | 0x10) != 0)
    } else {
        false
    }
}

/// The file attribute ioctls chattr, lsattr and xfs_io use, on `fd` (an open file or
/// directory, not O_PATH): `cmd` with `input` (SET: 4 or 28 bytes), answering `out_size`
/// bytes. Others: ENOTTY.
pub fn fileattr_ioctl(
    fd: BorrowedFd<'_>,
    cmd: u32,
    input: &[u8],
    out_size: usize,
) -> SysResult<Vec<u8>> {
    let get_flags = libc::FS_IOC_GETFLAGS as u32;
    let set_flags = libc::FS_IOC_SETFLAGS as u32;
    let mut buf = [0u8; 28];
    let want_in = match cmd {
        c if c == get_flags || c == FS_IOC_FSGETXATTR => 0,
        c if c == set_flags => 4,
        FS_IOC_FSSETXATTR => 28,
        _ => return Err(Errno(libc::ENOTTY)),
    };
    if input.len() < want_in {
        return Err(Errno(libc::EINVAL));
    }
    buf[..want_in].copy_from_slice(&input[..want_in]);
    // SAFETY: every one of these ioctls reads or writes at most 28 bytes (an int for the
    // flags, struct fsxattr otherwise) through the pointer, which has 28.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::Ioctl, buf.as_mut_ptr()) })?;
    let n = match cmd {
        c if c == get_flags => 4,
        FS_IOC_FSGETXATTR => 28,
        _ => 0,
    };
    Ok(buf[..n.min(out_size)].to_vec())
}

pub fn fstatfs(fd: BorrowedFd<'_>) -> SysResult<libc::statvfs> {
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: s is writable; fd valid. fstatvfs works on O_PATH fds.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), s.as_mut_ptr()) })?;
    // SAFETY: filled by the successful call.
    Ok(unsafe { s.assume_init() })
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> SysResult<usize> {
    // SAFETY: buf writable for its length.
    cvt_isize(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> SysResult<usize> {
    // SAFETY: buf readable for its length.
    cvt_isize(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    // SAFETY: plain syscalls on a valid fd.
    cvt(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

/// syncfs(2): everything written to the filesystem that holds `fd` on disk.
pub fn syncfs(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// Waits for the writeback of `fd`'s data under way and reports an error of its
/// writeback since the file was opened (sync_file_range SYNC_FILE_RANGE_WAIT_AFTER): after
/// a [`syncfs`], what the file's own fdatasync would report, without its flush.
pub fn writeback_error(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WAIT_AFTER) })
        .map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// The data extents of the first `size` bytes of an open file, as (offset, length), in
/// order (SEEK_DATA / SEEK_HOLE). A filesystem without hole support answers one extent.
pub fn data_extents(fd: BorrowedFd<'_>, size: u64) -> SysResult<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < size {
        let data = match lseek(fd, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(Errno(libc::ENXIO)) => break,
            Err(e) => return Err(e),
        };
        if data >= size {
            break;
        }
        let hole = match lseek(fd, data as i64, libc::SEEK_HOLE) {
            Ok(h) => (h as u64).min(size),
            Err(Errno(libc::ENXIO)) => size,
            Err(e) => return Err(e),
        };
        if hole <= data {
            break;
        }
        out.push((data, hole - data));
        off = hole;
    }
    Ok(out)
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: u64,
    flags: u32,
) -> SysResult<usize> {
    let mut oi = off_in as libc::loff_t;
    let mut oo = off_out as libc::loff_t;
    // SAFETY: the offsets are valid pointers to locals; fds valid.
    cvt_isize(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut oi,
            fd_out.as_raw_fd(),
            &mut oo,
            len as usize,
            flags,
        )
    })
}

/// Reads raw `linux_dirent64` records into `buf`; 0 at end of directory.
pub fn getdents(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: buf writable for its length; fd is an open directory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    cvt_isize(r as isize)
}

/// One parsed directory record.
pub struct DirRecord<'a> {
    pub ino: u64,
    pub off: i64,
    pub kind: u8,
    pub name: &'a OsStr,
    pub reclen: usize,
}

/// Calls `f` for every entry of the open directory `fd` but `.` and `..`, reading it to
/// its end with `getdents` into `buf` (kept by the caller between directories).
pub fn for_each_dirent(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    mut f: impl FnMut(&DirRecord<'_>),
) -> SysResult<()> {
    loop {
        let n = getdents(fd, buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut pos = 0;
        while pos < n {
            let Some(r) = parse_dirent(&buf[pos..n]) else {
                break;
            };
            pos += r.reclen;
            if r.name != "." && r.name != ".." {
                f(&r);
            }
        }
    }
}

/// Parses the `linux_dirent64` at the start of `buf`.
pub fn parse_dirent(buf: &[u8]) -> Option<DirRecord<'_>> {
    if buf.len() < 19 {
        return None;
    }
    let ino = u64::from_ne_bytes(buf[0..8].try_into().ok()?);
    let off = i64::from_ne_bytes(buf[8..16].try_into().ok()?);
    let reclen = u16::from_ne_bytes(buf[16..18].try_into().ok()?) as usize;
    let kind = buf[18];
    if reclen < 19 || reclen > buf.len() {
        return None;
    }
    let name_bytes = &buf[19..reclen];
    let end = name_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(name_bytes.len());
    Some(DirRecord {
        ino,
        off,
        kind,
        name: OsStr::from_bytes(&name_bytes[..end]),
        reclen,
    })
}

thread_local! {
    /// Whether this thread has its own umask (its fs_struct unshared from the process).
    static PRIVATE_UMASK: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The daemon's own umask: what it creates for itself is root's alone.
pub const DAEMON_UMASK: libc::mode_t = 0o077;

/// The umask for the daemon process: [`DAEMON_UMASK`] where its request threads can each
/// have a umask of their own (unshare(CLONE_FS)), so that objects created for callers get
/// exactly their mode; else 0 (the daemon then gives its own files explicit modes only).
pub fn daemon_umask() -> libc::mode_t {
    let private = std::thread::spawn(|| {
        // SAFETY: unsharing CLONE_FS affects only this short-lived thread.
        unsafe { libc::unshare(libc::CLONE_FS) == 0 }
    })
    .join()
    .unwrap_or(false);
    if private {
        DAEMON_UMASK
    } else {
        tracing::warn!("threads cannot have a umask of their own (unshare(CLONE_FS) refused): the daemon runs with umask 0 and gives its own files explicit modes");
        0
    }
}

fn thread_has_private_umask() -> bool {
    PRIVATE_UMASK.with(|c| match c.get() {
        Some(v) => v,
        None => {
            // SAFETY: unsharing CLONE_FS gives this thread its own cwd/root/umask; the
            // daemon never relies on a shared cwd.
            let ok = unsafe { libc::unshare(libc::CLONE_FS) } == 0;
            c.set(Some(ok));
            ok
        }
    })
}

/// Applies a permission mask to a mode, keeping the file type bits.
pub fn masked(mode: u32, mask: u32) -> u32 {
    (mode & libc::S_IFMT) | (mode & mask & 0o7777)
}

/// Runs `f` with this thread's filesystem uid/gid set to the caller's, so that objects it
/// creates belong to the caller (the kernel applies setgid-directory inheritance itself).
/// The daemon sets SECBIT_NO_SETUID_FIXUP at start, so the switch keeps its capabilities.
///
/// `umask`: the caller's umask when the kernel left it to us (FUSE_DONT_MASK). It is set
/// as this thread's umask, so the backing filesystem applies it exactly as for a local
/// create (ignored under a default ACL); `f` gets the permission mask to apply to the mode
/// itself, which is all bits except where the thread cannot have its own umask.
pub fn as_caller<T>(uid: u32, gid: u32, umask: Option<u32>, f: impl FnOnce(u32) -> T) -> T {
    let (mask, set_umask) = if thread_has_private_umask() {
        // The kernel applied the caller's umask itself (None), or left it to us: this
        // thread's own umask is exactly what the caller's would be, whatever the daemon's
        // (0077: its own files are private).
        // SAFETY: umask only changes this thread's (unshared) umask.
        unsafe { libc::umask(umask.unwrap_or(0) & 0o777) };
        (0o7777, true)
    } else {
        // No private umask (unshare refused): the process umask is 0 then
        // (`daemon_umask`), and the caller's is applied to the mode by hand.
        (umask.map_or(0o7777, |u| !u & 0o7777), false)
    };
    // Root's calls run with the daemon's own credentials (fsuid 0, fsgid 0) as they are:
    // each setfsuid/setfsgid makes (and frees) a credential set even when nothing changes.
    let switch = uid != 0 || gid != 0;
    if switch {
        // SAFETY: setfsuid/setfsgid only change this thread's filesystem credentials.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
    }
    let r = f(mask);
    // SAFETY: as above; back to root and a zero umask.
    unsafe {
        if switch {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
        if set_umask {
            libc::umask(DAEMON_UMASK);
        }
    }
    r
}

/// Keeps capabilities across the per-thread fsuid switches of [`as_caller`]. Call before
/// spawning threads (securebits are inherited).
pub fn keep_caps_on_fsuid_switch() -> io::Result<()> {
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    // SAFETY: prctl with integer arguments.
    let cur = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if cur < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            cur as libc::c_ulong | SECBIT_NO_SETUID_FIXUP,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises RLIMIT_NOFILE to its hard limit (the inode table holds one O_PATH fd per live inode).
pub fn raise_nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid out pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            // Root may raise the hard limit up to fs.nr_open.
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(rl.rlim_max);
            let want = libc::rlimit {
                rlim_cur: nr_open.max(rl.rlim_max),
                rlim_max: nr_open.max(rl.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
    rl.rlim_cur
}

/// Opens `rel` (a relative path, no `..` escape, no symlink anywhere on the way) below
/// the directory `root` with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): the tiering
/// layer's way to reach a file by the path the catalog or a CLI request names, which can
/// neither leave the source tree nor be redirected by a symlink. Empty `rel`: `root` itself.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &std::path::Path,
    flags: libc::c_int,
) -> SysResult<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        rel
    };
    let c = std::ffi::CString::new(rel.as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: c is NUL-terminated and `how` is a valid open_how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(own(r as RawFd))
}

/// The path the kernel knows for an open fd (readlink of /proc/self/fd/N): with the mount
/// on its own source, the backing path, which is the same string as the mount's path.
pub fn fd_path(fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// fgetxattr(2): one call for an fd opened for reading or writing; EBADF for an `O_PATH`
/// one (which [`getxattr_fd`] reaches through /proc instead, at four calls).
fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: name NUL-terminated; buf writable for buf.len() bytes (may be 0).
    cvt_isize(unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// listxattr of an fd opened for reading or writing in one call (flistxattr); an `O_PATH`
/// fd (EBADF) goes the way [`listxattr_fd`] does.
pub fn flistxattr(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: buf writable for buf.len() bytes.
    let r =
        cvt_isize(unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) });
    match r {
        Err(Errno(libc::EBADF)) => listxattr_fd(fd, buf),
        r => r,
    }
}

/// getxattr of a whole value: `None` when the attribute is not there. Tiering reads its
/// records through fds opened for reading or writing, which fgetxattr takes in one call;
/// an `O_PATH` fd goes the way [`getxattr_fd`] does.
pub fn getxattr_all(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 512];
    let mut opath = false;
    let mut get = |buf: &mut [u8]| {
        if !opath {
            match fgetxattr(fd, name, buf) {
                Err(Errno(libc::EBADF)) => opath = true,
                r => return r,
            }
        }
        getxattr_fd(fd, name, buf)
    };
    loop {
        match get(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno(libc::ENODATA)) => return Ok(None),
            Err(Errno(libc::ERANGE)) if buf.len() < 65536 => {
                let n = get(&mut [])?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// For each `(path, mode)` (paths relative to `root`, `mode` as for access(2): R_OK,
/// X_OK ...), whether the user `uid`, `gid`, `groups` may access it so, as the kernel
/// decides (mode bits, ACLs, every directory on the way). A child process takes exactly
/// those credentials (and none of the daemon's capabilities) and asks `faccessat`; the
/// daemon itself never changes its own.
pub fn access_as(
    root: BorrowedFd<'_>,
    uid: u32,
    gid: u32,
    groups: &[u32],
    paths: &[(std::path::PathBuf, i32)],
) -> io::Result<Vec<bool>> {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child needs is made before the fork: after it, only raw syscalls.
    let cpaths: Vec<CString> = paths
        .iter()
        .map(|(p, _)| {
            let b = p.as_os_str().as_bytes();
            CString::new(if b.is_empty() { b"." } else { b })
        })
        .collect::<Result<_, _>>()?;
    let modes: Vec<i32> = paths.iter().map(|(_, m)| *m).collect();
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut out = vec![0u8; paths.len()];
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (rd, wr) = (fds[0], fds[1]);
    let root_fd = root.as_raw_fd();
    // SAFETY: the child runs only async-signal-safe raw syscalls on memory prepared above,
    // then _exit; it never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; every pointer refers to memory owned by the parent's frame,
        // which the child has its own copy of.
        unsafe {
            libc::close(rd);
            // Securebits back to the default, so that leaving uid 0 drops every
            // capability (the daemon keeps them across fsuid switches otherwise).
            let ok = libc::prctl(libc::PR_SET_SECUREBITS, 0, 0, 0, 0) == 0
                && libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0;
            let mut res = [0u8; 1];
            for (i, p) in cpaths.iter().enumerate() {
                res[0] = (ok && libc::faccessat(root_fd, p.as_ptr(), modes[i], 0) == 0) as u8;
                if libc::write(wr, res.as_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(wr) };
    if pid < 0 {
        // SAFETY: closing the read end we own.
        unsafe { libc::close(rd) };
        return Err(io::Error::last_os_error());
    }
    // SAFETY: rd is the read end we own; File takes it over.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(rd) };
    let read = std::io::Read::read_exact(&mut f, &mut out);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read?;
    Ok(out.into_iter().map(|b| b == 1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// getxattr_fd reads through O_PATH fds, from any thread, and the per-thread slot it
    /// goes through holds /proc/self/fd between probes, never the file probed.
    #[test]
    fn getxattr_of_o_path_fds_lets_go_of_the_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a readable value.
        let set =
            unsafe { libc::setxattr(c.as_ptr(), c"user.t".as_ptr(), b"v1".as_ptr().cast(), 2, 0) };
        if set != 0 {
            // A filesystem without user xattrs under the temp dir: nothing to read.
            assert_eq!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EOPNOTSUPP)
            );
            return;
        }
        let fd = open_dir_path(d.path()).unwrap();
        let f = open_path_at(fd.as_fd(), OsStr::new("f")).unwrap();
        let read = |f: BorrowedFd<'_>| {
            let mut buf = [0u8; 16];
            let n = getxattr_fd(f, c"user.t", &mut buf).unwrap();
            buf[..n].to_vec()
        };
        assert_eq!(read(f.as_fd()), b"v1");
        assert_eq!(
            getxattr_fd(f.as_fd(), c"user.none", &mut [0u8; 8]),
            Err(Errno(libc::ENODATA))
        );
        let mut names = [0u8; 64];
        let n = listxattr_fd(f.as_fd(), &mut names).unwrap();
        assert!(
            names[..n].split(|&b| b == 0).any(|x| x == b"user.t"),
            "{:?}",
            &names[..n]
        );
        assert_eq!(
            listxattr_fd(f.as_fd(), &mut [0u8; 2]),
            Err(Errno(libc::ERANGE))
        );
        let slot = SLOT.with(|s| s.borrow().as_ref().map(|s| s.fd));
        if let Some(slot) = slot {
            let link = std::fs::read_link(format!("/proc/self/fd/{slot}")).unwrap();
            assert!(link.ends_with("fd"), "the slot holds {link:?}");
        }
        let raw = f.as_raw_fd();
        let other = std::thread::spawn(move || {
            // SAFETY: f outlives the thread (joined below).
            read(unsafe { BorrowedFd::borrow_raw(raw) })
        });
        assert_eq!(other.join().unwrap(), b"v1");
    }

    #[test]
    fn dev_encoding_round_trips() {
        for (maj, min) in [(0u32, 0u32), (8, 1), (259, 3), (4095, 1_000_000)] {
            let enc = encode_dev(maj, min);
            let d = decode_dev(enc);
            assert_eq!((libc::major(d), libc::minor(d)), (maj, min));
        }
    }

    #[test]
    fn names_are_checked() {
        let long = OsStr::from_bytes(&[b'a'; 256]);
        assert_eq!(with_name(long, |_| Ok(())), Err(Errno(libc::ENAMETOOLONG)));
        assert_eq!(
            with_name(OsStr::from_bytes(b"a\0b"), |_| Ok(())),
            Err(Errno(libc::EINVAL))
        );
        let ok = with_name(OsStr::from_bytes(&[b'x'; 255]), |c| Ok(c.to_bytes().len()));
        assert_eq!(ok, Ok(255));
    }

    #[test]
    fn proc_path_formats() {
        assert_eq!(
            ProcPath::new(123).as_cstr().to_bytes(),
            b"/proc/self/fd/123"
        );
    }
}
