//! The mount's handle store (`fs::inodes::HandleStore`) over the node-handle map
//! (`catalog::handles`): node ids are remembered off the request path, by a writer thread
//! that commits them in batches (every 20 ms, or 4,096 at a time); a node id asked for
//! before its batch is committed is answered from the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::catalog::handles::HandleDb;
use crate::fs::inodes::HandleStore;

const BATCH: usize = 4096;
const EVERY: Duration = Duration::from_millis(20);

/// Node ids waiting for their batch.
#[derive(Default)]
struct Queue {
    pending: HashMap<u64, Box<[u8]>>,
    stop: bool,
}

pub struct Handles {
    db: Arc<HandleDb>,
    queue: Arc<(Mutex<Queue>, Condvar)>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Handles {
    /// Starts the writer over `db`.
    pub fn start(db: HandleDb) -> std::io::Result<Arc<Handles>> {
        let db = Arc::new(db);
        let queue: Arc<(Mutex<Queue>, Condvar)> = Arc::default();
        let (q, d) = (queue.clone(), db.clone());
        let writer = std::thread::Builder::new()
            .name("handles".into())
            .spawn(move || write_loop(&q, &d))?;
        Ok(Arc::new(Handles {
            db,
            queue,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Writes what is queued and stops the writer (at unmount).
    pub fn stop(&self) {
        self.queue.0.lock().stop = true;
        self.queue.1.notify_all();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
        if let Err(e) = self.db.checkpoint() {
            tracing::warn!("{e}");
        }
    }
}

fn write_loop(queue: &(Mutex<Queue>, Condvar), db: &HandleDb) {
    // Below the request threads: a listing's lookups come first on a busy machine, the
    // map's batches fill the idle moments (the queue answers `recall` meanwhile).
    // SAFETY: setpriority on this thread's own id (Linux: per-thread nice).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
    loop {
        let (batch, stop) = {
            let mut q = queue.0.lock();
            if q.pending.is_empty() && !q.stop {
                queue.1.wait(&mut q);
            }
            if q.pending.len() < BATCH && !q.stop {
                // Let a listing's lookups gather into one transaction.
                queue.1.wait_for(&mut q, EVERY);
            }
            (
                q.pending
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect::<Vec<_>>(),
                q.stop,
            )
        };
        if !batch.is_empty() {
            write_batch(queue, db, &batch);
        }
        if stop {
            return;
        }
    }
}

/// Commits `batch` and takes it out of the queue (both the writer and `settle` may write
/// the same entries: the write is idempotent).
fn write_batch(queue: &(Mutex<Queue>, Condvar), db: &HandleDb, batch: &[(u64, Box<[u8]>)]) {
    if let Err(e) = db.put_all(batch) {
        tracing::error!("node-handle map: {e}: these NFS handles may go stale");
    }
    // Out of the queue only once written (or failed: the queue does not grow without
    // bound): `recall` finds them in one or the other.
    let mut q = queue.0.lock();
    for (k, v) in batch {
        if q.pending.get(k) == Some(v) {
            q.pending.remove(k);
        }
    }
}

impl HandleStore for Handles {
    fn remember(&self, ino: u64, handle: &[u8]) {
        let mut q = self.queue.0.lock();
        q.pending.insert(ino, handle.into());
        // The first of a batch wakes the writer (which then gathers for a while); a full
        // batch cuts that short.
        if q.pending.len() == 1 || q.pending.len() >= BATCH {
            self.queue.1.notify_one();
        }
    }

    fn settle(&self, ino: u64) {
        // Everything queued goes with it: a listing's pending node ids in one transaction.
        let batch: Vec<(u64, Box<[u8]>)> = {
            let q = self.queue.0.lock();
            if !q.pending.contains_key(&ino) {
                return;
            }
            q.pending.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        write_batch(&self.queue, &self.db, &batch);
    }

    fn recall(&self, ino: u64) -> Option<Box<[u8]>> {
        if let Some(h) = self.queue.0.lock().pending.get(&ino) {
            return Some(h.clone());
        }
        match self.db.get(ino) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("node-handle map: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_handles_are_recalled_before_and_after_their_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db.handles");
        let h = Handles::start(HandleDb::open(&path, b"root").unwrap()).unwrap();
        for i in 0..10_000u64 {
            h.remember(i + 2, &i.to_le_bytes());
        }
        assert_eq!(h.recall(5).as_deref(), Some(&3u64.to_le_bytes()[..]));
        h.stop();
        let db = HandleDb::open(&path, b"root").unwrap();
        assert_eq!(db.len().unwrap(), 10_000);
        assert_eq!(
            db.get(10_001).unwrap().as_deref(),
            Some(&9_999u64.to_le_bytes()[..])
        );
        assert_eq!(db.get(1).unwrap(), None);
    }
}
