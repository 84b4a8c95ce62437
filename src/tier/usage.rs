//! Last opens: the daemon sees every open of a file through the mount, whatever the backing
//! file system's atime options and the mount's own; it notes them (to the hour) and the
//! policy counts them as uses (`FileFacts::last_use`). Noted in memory at open (one map
//! lookup), written to the catalog's `used` table in one transaction a minute, before each
//! policy scan and at unmount.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A file's open is noted again only this long after the last note (like relatime's day,
/// shorter: the policy's ages are days).
pub const GRANULARITY: Duration = Duration::from_secs(3600);

/// Beyond this many remembered files, the notes older than [`GRANULARITY`] are forgotten
/// (they are in the catalog; forgetting one costs one more note).
const REMEMBERED_MAX: usize = 1 << 20;

#[derive(Default)]
pub struct Usage {
    /// Backing inode number -> when its open was last noted (ns).
    noted: Mutex<HashMap<u64, i64>>,
    /// Notes not yet in the catalog.
    pending: Mutex<Vec<(u64, i64)>>,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Usage {
    /// Notes an open of backing inode `ino` at `now` (ns); true if it was noted (not
    /// within [`GRANULARITY`] of the last note).
    pub fn note(&self, ino: u64, now: i64) -> bool {
        let g = GRANULARITY.as_nanos() as i64;
        let mut noted = self.noted.lock();
        if noted.get(&ino).is_some_and(|&t| now - t < g) {
            return false;
        }
        if noted.len() >= REMEMBERED_MAX {
            noted.retain(|_, t| now - *t < g);
        }
        noted.insert(ino, now);
        drop(noted);
        self.pending.lock().push((ino, now));
        true
    }

    /// The notes not yet in the catalog (taken: give them back with [`Usage::put_back`]
    /// if they cannot be written).
    pub fn take(&self) -> Vec<(u64, i64)> {
        std::mem::take(&mut *self.pending.lock())
    }

    pub fn put_back(&self, mut batch: Vec<(u64, i64)>) {
        let mut p = self.pending.lock();
        batch.append(&mut p);
        *p = batch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_is_noted_once_an_hour() {
        let u = Usage::default();
        let h = GRANULARITY.as_nanos() as i64;
        assert!(u.note(7, 1000));
        assert!(!u.note(7, 1000 + h - 1));
        assert!(u.note(8, 1000));
        assert!(u.note(7, 1000 + h));
        assert_eq!(u.take(), vec![(7, 1000), (8, 1000), (7, 1000 + h)]);
        assert!(u.take().is_empty());
        u.put_back(vec![(9, 5)]);
        assert_eq!(u.take(), vec![(9, 5)]);
    }
}
