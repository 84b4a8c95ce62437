//! The tier gate: one lock per inode number (sharded) that orders opens of a regular file
//! against the tiering steps that change it (stubbing, the end of a recall), and counts the
//! open handles and writers of each inode. A file is stubbed only with its gate held and
//! no handle open; an open never sees a half-made stub.

use std::collections::HashMap;

use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 256;

/// Open handles of one inode through the mount.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opens {
    pub handles: u32,
    pub writers: u32,
}

pub struct Gate {
    shards: Box<[Mutex<HashMap<u64, Opens>>]>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// The gate of one inode, held.
pub struct Held<'a> {
    ino: u64,
    map: MutexGuard<'a, HashMap<u64, Opens>>,
}

impl Held<'_> {
    pub fn opens(&self) -> Opens {
        self.map.get(&self.ino).copied().unwrap_or_default()
    }
    pub fn opened(&mut self, writer: bool) {
        let o = self.map.entry(self.ino).or_default();
        o.handles += 1;
        o.writers += writer as u32;
    }
    pub fn closed(&mut self, writer: bool) {
        if let Some(o) = self.map.get_mut(&self.ino) {
            o.handles = o.handles.saturating_sub(1);
            if writer {
                o.writers = o.writers.saturating_sub(1);
            }
            if o.handles == 0 {
                self.map.remove(&self.ino);
            }
        }
    }
}

impl Gate {
    /// Holds the gate of `ino` until the returned guard is dropped. Not reentrant.
    pub fn lock(&self, ino: u64) -> Held<'_> {
        let shard = (ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % SHARDS;
        Held {
            ino,
            map: self.shards[shard].lock(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_handles_and_writers_per_inode() {
        let g = Gate::default();
        {
            let mut h = g.lock(7);
            h.opened(false);
            h.opened(true);
        }
        assert_eq!(
            g.lock(7).opens(),
            Opens {
                handles: 2,
                writers: 1
            }
        );
        assert_eq!(g.lock(8).opens(), Opens::default());
        g.lock(7).closed(true);
        g.lock(7).closed(false);
        assert_eq!(g.lock(7).opens(), Opens::default());
    }
}
