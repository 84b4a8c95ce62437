//! The inode table: FUSE inode numbers (the backing inode numbers, stable across restarts),
//! generations, kernel lookup counts, and how to reach each backing inode again.
//!
//! Each live inode keeps an O_PATH fd while the fd budget allows (the cheapest way back to
//! it, and it pins the inode number), and always a kernel file handle: past the budget the
//! inode is reopened from its handle for each operation (`open_by_handle_at`), so the mount
//! serves any number of cached inodes under any RLIMIT_NOFILE.
//!
//! With a [`HandleStore`], every node id handed to the kernel is remembered with its
//! object's file handle, and a node id the table does not hold (the kernel kept it longer
//! than the daemon: an NFS handle after a cache drop, a remount, a restart) is resolved
//! from the store again ([`InodeTable::resolve`]): the same file, or ESTALE when it is
//! gone, never another one.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::backing::{self, Errno, Stat, SysResult};

pub const ROOT_INO: u64 = 1;

/// (dev, ino) of objects on other devices -> allocated number, and the next number.
type ForeignMap = (HashMap<(u64, u64), u64>, u64);

/// Inode numbers of objects on another device than the root (submounts inside the source)
/// are allocated from this range, since their backing numbers could collide.
pub const FOREIGN_BASE: u64 = 1 << 63;

/// How to reach a backing inode.
pub enum Anchor {
    /// An O_PATH fd (counts against the fd budget).
    Fd(OwnedFd),
    /// A file handle, reopened on use.
    Handle(Box<[u8]>),
}

/// One live inode: what the kernel knows by number.
pub struct Inode<B> {
    pub ino: u64,
    pub generation: u64,
    /// File type bits (S_IFMT) of the backing object; never changes for an inode.
    pub kind: u32,
    anchor: Anchor,
    mount_fd: Arc<OwnedFd>,
    /// The file opened for I/O (and registered for passthrough), shared by all opens.
    pub open_file: Mutex<Weak<B>>,
    /// Tiering's cached view of a regular file: [`MARK_UNKNOWN`], [`MARK_PLAIN`] or the
    /// logical size of a stub. Read from the backing xattr once, under the tier gate, and
    /// reset to unknown by the tiering code whenever it changes the xattr.
    pub tier_mark: AtomicU64,
    /// With a stub mark: the stub record's mtime (ns), what the file shows.
    pub tier_mtime: std::sync::atomic::AtomicI64,
    /// Until when (ns on the overlay's monotonic clock; 0: not known) the file is known to
    /// have no xattrs visible through the mount: learned from the listing the stub probe
    /// reads, dropped by a setxattr through the mount.
    pub no_xattrs_until: AtomicU64,
    /// A digest of the attributes last sent to the kernel for this inode (by a lookup, a
    /// getattr or a listing) and when (ns on the overlay's clock; 0: never): a listing
    /// need not send them again while the kernel's copy is fresh
    /// (`OverlayFs::readdirplus`).
    pub told: AtomicU64,
    pub told_at: AtomicU64,
    /// Handles open for writing through kernel passthrough: while there are any, the
    /// backing file can change without the daemon hearing of it (a shared mapping's
    /// writes), and the kernel is told not to cache the attributes.
    pub passthrough_writers: std::sync::atomic::AtomicU32,
}

/// [`Inode::tier_mark`]: not read yet.
pub const MARK_UNKNOWN: u64 = u64::MAX;
/// [`Inode::tier_mark`]: not a stub (its data is local).
pub const MARK_PLAIN: u64 = u64::MAX - 1;

/// A usable fd for an inode: borrowed from the table, or opened from the handle for one use.
pub enum InodeFd<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for InodeFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Borrowed(b) => *b,
            InodeFd::Owned(o) => o.as_fd(),
        }
    }
}

impl<B> Inode<B> {
    /// An fd on the backing object (O_PATH, never following a symlink).
    pub fn fd(&self) -> SysResult<InodeFd<'_>> {
        match &self.anchor {
            Anchor::Fd(fd) => Ok(InodeFd::Borrowed(fd.as_fd())),
            Anchor::Handle(h) => {
                match backing::open_by_handle(self.mount_fd.as_fd(), h, libc::O_PATH) {
                    Ok(fd) => Ok(InodeFd::Owned(fd)),
                    Err(Errno(libc::ENOENT)) => Err(Errno(libc::ESTALE)),
                    Err(e) => Err(e),
                }
            }
        }
    }
    pub fn is_symlink(&self) -> bool {
        self.kind == libc::S_IFLNK
    }
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
    pub fn holds_fd(&self) -> bool {
        matches!(self.anchor, Anchor::Fd(_))
    }
}

/// Where node ids and their objects' file handles are remembered across the table's life
/// (the daemon keeps them in `catalog::handles`).
pub trait HandleStore: Send + Sync {
    /// Node id `ino` names the object with file `handle` (may be recorded later, batched).
    fn remember(&self, ino: u64, handle: &[u8]);
    /// The handle recorded for `ino`.
    fn recall(&self, ino: u64) -> Option<Box<[u8]>>;
    /// Makes what is remembered for `ino` durable now (before a file handle of it goes to
    /// the kernel: an open handle cannot be looked up again, it must resolve after a crash).
    fn settle(&self, ino: u64);
}

struct Slot<B> {
    inode: Arc<Inode<B>>,
    nlookup: u64,
}

const SHARDS: usize = 64;

/// Maps FUSE inode numbers to live inodes. Sharded to keep lookups from different
/// threads off each other's locks.
pub struct InodeTable<B> {
    root: Arc<Inode<B>>,
    root_backing_ino: u64,
    root_dev: u64,
    mount_fd: Arc<OwnedFd>,
    shards: Vec<Mutex<HashMap<u64, Slot<B>>>>,
    foreign: Mutex<ForeignMap>,
    fd_budget: usize,
    fds_held: AtomicUsize,
    handles: std::sync::OnceLock<Arc<dyn HandleStore>>,
}

/// Generation reported to the kernel: the birth time where the filesystem has one (stable
/// across restarts, different for a reused inode number), else a hash of the file handle
/// (which embeds the filesystem's own generation), else 0.
pub fn generation_of(st: &Stat, handle: Option<&[u8]>) -> u64 {
    match (st.btime, handle) {
        (Some((s, ns)), _) => (s as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ns as u64),
        (None, Some(h)) => {
            // FNV-1a: small, stable across releases (unlike std's hasher).
            h.iter().fold(0xcbf2_9ce4_8422_2325u64, |acc, &b| {
                (acc ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
        }
        (None, None) => 0,
    }
}

impl<B> InodeTable<B> {
    /// `fd_budget`: how many O_PATH fds the table may hold (0 = derived from RLIMIT_NOFILE).
    pub fn new(root_fd: OwnedFd, root_stat: &Stat, fd_budget: usize) -> SysResult<Self> {
        // open_by_handle_at wants a real (non-O_PATH) fd on the backing filesystem.
        let mount_fd = Arc::new(backing::reopen(
            root_fd.as_fd(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?);
        let fd_budget = if fd_budget > 0 {
            fd_budget
        } else {
            let limit = backing::nofile_limit() as usize;
            limit.saturating_sub((limit / 4).max(256))
        };
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            generation: 0,
            kind: libc::S_IFDIR,
            anchor: Anchor::Fd(root_fd),
            mount_fd: mount_fd.clone(),
            open_file: Mutex::new(Weak::new()),
            tier_mark: AtomicU64::new(MARK_UNKNOWN),
            tier_mtime: std::sync::atomic::AtomicI64::new(0),
            no_xattrs_until: AtomicU64::new(0),
            told: AtomicU64::new(0),
            told_at: AtomicU64::new(0),
            passthrough_writers: Default::default(),
        });
        Ok(InodeTable {
            root,
            root_backing_ino: root_stat.ino,
            root_dev: root_stat.dev,
            mount_fd,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            foreign: Mutex::new((HashMap::new(), FOREIGN_BASE)),
            fd_budget,
            fds_held: AtomicUsize::new(0),
            handles: std::sync::OnceLock::new(),
        })
    }

    /// Remembers node ids from now on, and resolves unknown ones from `store`.
    pub fn set_handle_store(&self, store: Arc<dyn HandleStore>) {
        let _ = self.handles.set(store);
    }

    /// The file handle of the source's root (what a handle store is bound to).
    /// [`HandleStore::settle`] for `ino`, when there is a store.
    pub fn settle(&self, ino: u64) {
        if let Some(store) = self.handles.get() {
            store.settle(ino);
        }
    }

    pub fn root_handle(&self) -> SysResult<Box<[u8]>> {
        backing::handle_of(self.root.fd()?.as_fd())
    }

    /// The live inode `ino`, or, if the table does not hold it, the object a
    /// [`HandleStore`] remembers for it, taken into the table with one reference (the
    /// kernel may hold more: its FORGET then takes the count to zero early, and the next
    /// use resolves it again). ESTALE when nothing is known of `ino` or its object is gone
    /// (deleted, or its number reused by another object).
    pub fn resolve(&self, ino: u64) -> SysResult<Arc<Inode<B>>> {
        if let Some(i) = self.get(ino) {
            return Ok(i);
        }
        Ok(self.revive(ino)?.0)
    }

    /// [`InodeTable::resolve`] for an inode the table does not hold: opens it from the
    /// store's handle and inserts it with one reference. Returns the stat too.
    pub fn revive(&self, ino: u64) -> SysResult<(Arc<Inode<B>>, Stat)> {
        let store = self.handles.get().ok_or(Errno(libc::ESTALE))?;
        let handle = store.recall(ino).ok_or(Errno(libc::ESTALE))?;
        let fd = match backing::open_by_handle(self.mount_fd.as_fd(), &handle, libc::O_PATH) {
            Ok(fd) => fd,
            Err(Errno(libc::ENOENT | libc::ESTALE)) => return Err(Errno(libc::ESTALE)),
            Err(e) => return Err(e),
        };
        let st = backing::stat_fd(fd.as_fd())?;
        if self.map_ino(st.dev, st.ino) != ino {
            return Err(Errno(libc::ESTALE));
        }
        let (inode, _) = self.insert_or_ref(ino, &st, fd)?;
        Ok((inode, st))
    }

    fn shard(&self, ino: u64) -> &Mutex<HashMap<u64, Slot<B>>> {
        &self.shards[(ino as usize) % SHARDS]
    }

    pub fn root_dev(&self) -> u64 {
        self.root_dev
    }

    /// The FUSE inode number for a backing (dev, ino): the backing number itself, with the
    /// root's number and 1 swapped (FUSE's root is always 1).
    pub fn map_ino(&self, dev: u64, ino: u64) -> u64 {
        if dev != self.root_dev {
            let mut f = self.foreign.lock();
            if let Some(&n) = f.0.get(&(dev, ino)) {
                return n;
            }
            let n = f.1;
            f.1 += 1;
            f.0.insert((dev, ino), n);
            return n;
        }
        if ino == self.root_backing_ino {
            ROOT_INO
        } else if ino == ROOT_INO {
            self.root_backing_ino
        } else {
            ino
        }
    }

    /// The live inode `ino`, if the kernel holds it.
    pub fn get(&self, ino: u64) -> Option<Arc<Inode<B>>> {
        if ino == ROOT_INO {
            return Some(self.root.clone());
        }
        self.shard(ino).lock().get(&ino).map(|s| s.inode.clone())
    }

    /// Counts one more kernel reference to `ino` if it is live and is the same object
    /// (`generation`; None accepts any); returns it.
    pub fn get_and_ref(&self, ino: u64, generation: Option<u64>) -> Option<Arc<Inode<B>>> {
        if ino == ROOT_INO {
            return Some(self.root.clone());
        }
        let mut shard = self.shard(ino).lock();
        let slot = shard.get_mut(&ino)?;
        if generation.is_some_and(|g| g != slot.inode.generation) {
            return None;
        }
        slot.nlookup += 1;
        Some(slot.inode.clone())
    }

    /// Builds the anchor for a freshly opened O_PATH fd: the fd itself within the budget
    /// (and always for other devices, whose handles need their own mount fd), else only its
    /// file handle (the fd is handed back). Returns the handle too when the generation must
    /// come from it.
    fn anchor_for(&self, fd: OwnedFd, st: &Stat) -> (Anchor, Option<OwnedFd>, Option<Box<[u8]>>) {
        let foreign = st.dev != self.root_dev;
        let over_budget = self.fds_held.load(Ordering::Relaxed) >= self.fd_budget;
        let remember = self.handles.get().is_some();
        let handle = if !foreign && (over_budget || st.btime.is_none() || remember) {
            backing::handle_of(fd.as_fd()).ok()
        } else {
            None
        };
        match handle {
            Some(h) if over_budget => (Anchor::Handle(h.clone()), Some(fd), Some(h)),
            h => {
                self.fds_held.fetch_add(1, Ordering::Relaxed);
                (Anchor::Fd(fd), None, h)
            }
        }
    }

    /// Inserts the object behind `fd` with one reference. If the number is already live
    /// with the same generation, references that one. If it is live with another generation,
    /// the backing number was reused: the new object takes the slot and the references add
    /// up (the kernel forgets the old object's references under the same number).
    ///
    /// Returns the inode, and `fd` back when the table did not keep it (a live inode took
    /// the reference, or the inode is anchored by its handle): the caller may still use it
    /// for what it does next instead of reopening the inode from its handle.
    pub fn insert_or_ref(
        &self,
        ino: u64,
        st: &Stat,
        fd: OwnedFd,
    ) -> SysResult<(Arc<Inode<B>>, Option<OwnedFd>)> {
        if ino == ROOT_INO {
            return Ok((self.root.clone(), Some(fd)));
        }
        let (anchor, spare, handle) = self.anchor_for(fd, st);
        let generation = generation_of(st, handle.as_deref());
        let mut shard = self.shard(ino).lock();
        if let Some(slot) = shard.get_mut(&ino) {
            if slot.inode.generation == generation {
                slot.nlookup += 1;
                let inode = slot.inode.clone();
                drop(shard);
                let spare = match anchor {
                    Anchor::Fd(fd) => {
                        self.fds_held.fetch_sub(1, Ordering::Relaxed);
                        Some(fd)
                    }
                    Anchor::Handle(_) => spare,
                };
                return Ok((inode, spare));
            }
        }
        let inode = Arc::new(Inode {
            ino,
            generation,
            kind: st.file_type(),
            anchor,
            mount_fd: self.mount_fd.clone(),
            open_file: Mutex::new(Weak::new()),
            tier_mark: AtomicU64::new(MARK_UNKNOWN),
            tier_mtime: std::sync::atomic::AtomicI64::new(0),
            no_xattrs_until: AtomicU64::new(0),
            told: AtomicU64::new(0),
            told_at: AtomicU64::new(0),
            passthrough_writers: Default::default(),
        });
        let nlookup = match shard.remove(&ino) {
            Some(old) => {
                self.release_anchor(&old.inode);
                old.nlookup + 1
            }
            None => 1,
        };
        shard.insert(
            ino,
            Slot {
                inode: inode.clone(),
                nlookup,
            },
        );
        drop(shard);
        if let (Some(store), Some(h)) = (self.handles.get(), handle.as_deref()) {
            store.remember(ino, h);
        }
        Ok((inode, spare))
    }

    fn release_anchor(&self, inode: &Inode<B>) {
        if inode.holds_fd() {
            self.fds_held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops `n` kernel references; the inode (and its fd) goes when none remain.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut shard = self.shard(ino).lock();
        if let Some(slot) = shard.get_mut(&ino) {
            slot.nlookup = slot.nlookup.saturating_sub(n);
            if slot.nlookup == 0 {
                if let Some(old) = shard.remove(&ino) {
                    self.release_anchor(&old.inode);
                }
            }
        }
    }

    /// Number of live inodes (root excluded).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// O_PATH fds currently held.
    pub fn fds_held(&self) -> usize {
        self.fds_held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(budget: usize) -> (tempfile::TempDir, InodeTable<()>) {
        let dir = tempfile::tempdir().unwrap();
        let fd = backing::open_dir_path(dir.path()).unwrap();
        let st = backing::stat_fd(fd.as_fd()).unwrap();
        (dir, InodeTable::new(fd, &st, budget).unwrap())
    }

    fn add(t: &InodeTable<()>, name: &str) -> (u64, Arc<Inode<()>>) {
        let root = t.get(ROOT_INO).unwrap();
        let rfd = root.fd().unwrap();
        let fd = backing::open_path_at(rfd.as_fd(), name.as_ref()).unwrap();
        let st = backing::stat_fd(fd.as_fd()).unwrap();
        let ino = t.map_ino(st.dev, st.ino);
        (ino, t.insert_or_ref(ino, &st, fd).unwrap().0)
    }

    #[test]
    fn root_and_one_swap() {
        let (_d, t) = table(0);
        let dev = t.root_dev();
        assert_eq!(t.map_ino(dev, t.root_backing_ino), ROOT_INO);
        assert_eq!(t.map_ino(dev, ROOT_INO), t.root_backing_ino);
        assert_eq!(t.map_ino(dev, 12345), 12345);
    }

    #[test]
    fn foreign_devices_get_distinct_stable_numbers() {
        let (_d, t) = table(0);
        let a = t.map_ino(t.root_dev() + 1, 5);
        let b = t.map_ino(t.root_dev() + 2, 5);
        assert_ne!(a, b);
        assert!(a >= FOREIGN_BASE && b >= FOREIGN_BASE);
        assert_eq!(t.map_ino(t.root_dev() + 1, 5), a);
    }

    #[test]
    fn lookup_counts() {
        let (d, t) = table(0);
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let (ino, i1) = add(&t, "f");
        let (_, i2) = add(&t, "f");
        assert!(Arc::ptr_eq(&i1, &i2));
        assert!(t.get_and_ref(ino, Some(i1.generation)).is_some());
        assert!(t.get_and_ref(ino, Some(i1.generation ^ 1)).is_none());
        t.forget(ino, 2);
        assert!(t.get(ino).is_some());
        t.forget(ino, 1);
        assert!(t.get(ino).is_none());
        assert_eq!(t.fds_held(), 0);
        t.forget(ROOT_INO, 10);
        assert!(t.get(ROOT_INO).is_some());
    }

    #[test]
    fn past_the_budget_inodes_are_reached_by_handle() {
        let (d, t) = table(2);
        for i in 0..5 {
            std::fs::write(d.path().join(format!("f{i}")), format!("{i}")).unwrap();
        }
        let inodes: Vec<_> = (0..5).map(|i| add(&t, &format!("f{i}")).1).collect();
        assert_eq!(t.fds_held(), 2);
        assert_eq!(inodes.iter().filter(|i| i.holds_fd()).count(), 2);
        for i in &inodes {
            let st = backing::stat_fd(i.fd().unwrap().as_fd()).unwrap();
            assert_eq!(st.ino, i.ino);
        }
        // A deleted inode reached by handle is stale, not some other file.
        let last = &inodes[4];
        assert!(!last.holds_fd());
        std::fs::remove_file(d.path().join("f4")).unwrap();
        assert_eq!(last.fd().err(), Some(Errno(libc::ESTALE)));
    }
}
