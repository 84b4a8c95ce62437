//! The passthrough backing ids registered on the mount's FUSE connection, by node, kept in
//! a file that outlives the daemon (on the runtime tmpfs), so that the next daemon on the
//! same connection (restart without unmount) can use them.
//!
//! Why: the kernel attaches one backing file to a FUSE inode while a passthrough file of
//! it is open, and refuses another (fs/fuse/iomode.c: EBUSY, which open(2) reports as
//! EIO). After a restart, files the kernel holds open from before still have the previous
//! daemon's backing file attached; an open of the same inode through the new daemon must
//! name the same backing id. Backing ids belong to the connection, not to the daemon
//! process, so they stay valid across the restart.
//!
//! The file is a fixed table of 16-byte slots (node id, backing id), open addressing with
//! linear probing, mapped shared: every registration is in it before the kernel hears of
//! it, every removal before the id is closed, so a daemon killed at any moment leaves a
//! table whose ids are all registered. Writers are one daemon at a time (the next starts
//! when the previous is dead or has handed over); a slot is written id first, node second.
//! The next daemon takes the table over: an id it finds is used by the opens of its node
//! (adopted; given back, not closed, when the daemon's last file of it closes, since files
//! the kernel opened before the restart may still use it), and closed when the kernel
//! forgets the node (no file of it can be open then). Sparse: only touched pages take
//! memory.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Slots in the table (1 Mi: 16 MiB of address space, sparse).
const SLOTS: usize = 1 << 20;
/// How far a probe goes before the table counts as full for that node.
const PROBES: usize = 256;
const EMPTY: u64 = 0;
const GONE: u64 = u64::MAX;
/// The "id" of a node whose files this daemon opened without passthrough (the kernel's
/// cached I/O mode): the next daemon must not open it with passthrough while files the
/// kernel opened before the restart may be open (fs/fuse/iomode.c refuses the mix: EIO).
pub const CACHED: u32 = u32::MAX;

pub struct BackingIds {
    slots: &'static [[AtomicU64; 2]],
    _file: File,
    /// Serializes this daemon's writers.
    write: Mutex<()>,
    /// Ids a previous daemon registered, not yet used or closed by this one.
    inherited: Mutex<HashMap<u64, u32>>,
    warned_full: std::sync::atomic::AtomicBool,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Sync for BackingIds {}
unsafe impl Send for BackingIds {}

impl BackingIds {
    /// Opens (creating it, mode 0600) the table at `path`. `fresh`: a new connection,
    /// whatever is in the file is from an earlier mount and is dropped; otherwise the ids
    /// in it were registered on this connection by the previous daemon and are taken over.
    pub fn open(path: &Path, fresh: bool) -> io::Result<BackingIds> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        let len = (SLOTS * 16) as u64;
        if fresh {
            file.set_len(0)?;
        }
        file.set_len(len)?;
        // SAFETY: a shared read-write mapping of a file we hold, `len` bytes long; it is
        // never unmapped (the table lives as long as the daemon), so 'static holds.
        let slots = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            std::slice::from_raw_parts(p as *const [AtomicU64; 2], SLOTS)
        };
        let mut inherited = HashMap::new();
        if !fresh {
            for s in slots {
                let node = s[0].load(Ordering::Acquire);
                if node != EMPTY && node != GONE {
                    inherited.insert(node, s[1].load(Ordering::Acquire) as u32);
                }
            }
        }
        Ok(BackingIds {
            slots,
            _file: file,
            write: Mutex::new(()),
            inherited: Mutex::new(inherited),
            warned_full: Default::default(),
        })
    }

    /// The ids taken over from the previous daemon and not yet used or closed.
    pub fn inherited(&self) -> usize {
        self.inherited.lock().len()
    }

    fn home(node: u64) -> usize {
        (node.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 44) as usize % SLOTS
    }

    /// Records that `node`'s files use backing `id` (before the kernel is told).
    pub fn record(&self, node: u64, id: u32) {
        let _w = self.write.lock();
        let home = Self::home(node);
        let mut free = None;
        for i in 0..PROBES {
            let s = &self.slots[(home + i) % SLOTS];
            match s[0].load(Ordering::Acquire) {
                n if n == node => {
                    s[1].store(id as u64, Ordering::Release);
                    return;
                }
                EMPTY => {
                    free.get_or_insert(s);
                    break;
                }
                GONE => {
                    free.get_or_insert(s);
                }
                _ => {}
            }
        }
        match free {
            Some(s) => {
                s[1].store(id as u64, Ordering::Release);
                s[0].store(node, Ordering::Release);
            }
            None => {
                if !self.warned_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "passthrough id table full: a file open across a daemon restart may \
                         fail to open again (EIO) until its earlier opens close"
                    );
                }
            }
        }
    }

    /// This daemon opens a file of `node` without passthrough (before the kernel hears of
    /// it): marked [`CACHED`] unless the node has a slot already. The mark goes when the
    /// kernel forgets the node ([`BackingIds::forget_mark`]).
    pub fn mark_cached(&self, node: u64) {
        let home = Self::home(node);
        for i in 0..PROBES {
            match self.slots[(home + i) % SLOTS][0].load(Ordering::Acquire) {
                n if n == node => return,
                EMPTY => break,
                _ => {}
            }
        }
        self.record(node, CACHED);
    }

    /// The kernel forgot `node`: this daemon's [`CACHED`] mark for it goes.
    pub fn forget_mark(&self, node: u64) {
        self.remove(node, CACHED);
    }

    /// Whether the previous daemon opened files of `node` without passthrough: opens of it
    /// must not use passthrough until the kernel forgets it.
    pub fn cached_before(&self, node: u64) -> bool {
        self.inherited.lock().get(&node) == Some(&CACHED)
    }

    /// `node` no longer uses backing `id` (before the id is closed).
    pub fn remove(&self, node: u64, id: u32) {
        let _w = self.write.lock();
        let home = Self::home(node);
        for i in 0..PROBES {
            let s = &self.slots[(home + i) % SLOTS];
            match s[0].load(Ordering::Acquire) {
                n if n == node => {
                    if s[1].load(Ordering::Acquire) == id as u64 {
                        s[0].store(GONE, Ordering::Release);
                    }
                    return;
                }
                EMPTY => return,
                _ => {}
            }
        }
    }

    /// The previous daemon's id for `node`, for this daemon's first open of it: from now
    /// on it is this daemon's (its slot stays).
    pub fn adopt(&self, node: u64) -> Option<u32> {
        let mut inh = self.inherited.lock();
        match inh.get(&node) {
            Some(&CACHED) | None => None,
            Some(_) => inh.remove(&node),
        }
    }

    /// An adopted id this daemon no longer uses: back to the taken-over ones (files opened
    /// before the restart may still use it).
    pub fn give_back(&self, node: u64, id: u32) {
        self.inherited.lock().insert(node, id);
    }

    /// The kernel forgot `node`: a previous daemon's id for it that this daemon never used
    /// is taken out of the table and returned, for the caller to close.
    pub fn forgotten(&self, node: u64) -> Option<u32> {
        let id = self.inherited.lock().remove(&node)?;
        self.remove(node, id);
        (id != CACHED).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_into_the_next_table_and_are_adopted_or_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.backing");
        let t = BackingIds::open(&path, true).unwrap();
        for n in 2..2_000u64 {
            t.record(n, n as u32 + 7);
        }
        t.remove(5, 12);
        t.remove(6, 999); // another id: kept
        t.record(8, 1); // replaced
        drop(t);
        let next = BackingIds::open(&path, false).unwrap();
        assert_eq!(next.inherited(), 1_997);
        assert_eq!(next.adopt(5), None);
        assert_eq!(next.adopt(6), Some(13));
        assert_eq!(next.adopt(8), Some(1));
        assert_eq!(next.adopt(8), None, "adopted once");
        assert_eq!(next.forgotten(9), Some(16));
        assert_eq!(next.forgotten(9), None);
        drop(next);
        // Adopted ids stay for the daemon after; forgotten ones are gone.
        let third = BackingIds::open(&path, false).unwrap();
        assert_eq!(third.adopt(6), Some(13));
        assert_eq!(third.adopt(9), None);
        drop(third);
        let fresh = BackingIds::open(&path, true).unwrap();
        assert_eq!(fresh.inherited(), 0);
    }

    #[test]
    fn nodes_opened_without_passthrough_are_marked_for_the_next_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.backing");
        let t = BackingIds::open(&path, true).unwrap();
        t.record(3, 42);
        t.mark_cached(3); // has a passthrough id: left as it is
        t.mark_cached(4);
        t.mark_cached(5);
        t.forget_mark(5);
        drop(t);
        let next = BackingIds::open(&path, false).unwrap();
        assert!(next.cached_before(4));
        assert!(!next.cached_before(3) && !next.cached_before(5));
        assert_eq!(next.adopt(4), None, "a mark is no id to adopt");
        assert!(
            next.cached_before(4),
            "and stays until the kernel forgets the node"
        );
        assert_eq!(next.adopt(3), Some(42));
        assert_eq!(next.forgotten(4), None, "nothing to close for a mark");
        assert!(!next.cached_before(4));
    }

    #[test]
    fn colliding_nodes_and_removed_slots_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let t = BackingIds::open(&dir.path().join("t"), true).unwrap();
        // Nodes with the same home slot.
        let home = BackingIds::home(3);
        let same: Vec<u64> = (4..5_000_000u64)
            .filter(|n| BackingIds::home(*n) == home)
            .take(3)
            .collect();
        assert_eq!(same.len(), 3);
        t.record(3, 30);
        for (i, n) in same.iter().enumerate() {
            t.record(*n, i as u32 + 40);
        }
        t.remove(3, 30);
        t.record(same[2], 99); // found past the removed slot, replaced in place
        drop(t);
        let next = BackingIds::open(&dir.path().join("t"), false).unwrap();
        assert_eq!(next.inherited(), 3);
        assert_eq!(next.adopt(same[2]), Some(99));
        assert_eq!(next.adopt(3), None);
    }
}
