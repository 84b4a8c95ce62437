//! Chunk sums: the CRC32C of each fixed-size chunk of an object's bytes, computed while the
//! object is uploaded (the bytes are read once, in order, by every store's `put`) and kept
//! in the file's stub record. A recall fetches chunks with ranged GETs, in any order, and
//! can verify each one by itself and serve it to readers at once, before the whole object
//! has arrived (docs/architecture.md, "Streaming recall").
//!
//! The chunk size is a power of two, at least [`MIN_CHUNK_LOG2`] (4 MiB), and grows with the
//! object so that there are at most [`MAX_CHUNKS`] chunks: the record stays small (4 bytes a
//! chunk, 1 KiB at most). An object of one chunk needs no sums: its whole-object checksum
//! verifies it.

use super::{ChecksumAlgo, Hasher};

/// 4 MiB: the smallest chunk.
pub const MIN_CHUNK_LOG2: u8 = 22;
/// The largest chunk the encoding accepts (1 TiB): a 256 TiB object.
pub const MAX_CHUNK_LOG2: u8 = 40;
/// The most chunks an object is cut into.
pub const MAX_CHUNKS: usize = 256;

/// The first chunk is also cut into this many head blocks, each with its own sum: a reader
/// of the start of a file (`file`, a player, a thumbnailer) gets its bytes after one head
/// block (256 KiB of a 4 MiB chunk), not the whole first chunk.
pub const HEAD_BLOCKS: usize = 16;

/// The CRC32C of each chunk of an object, in order, and of each head block of its first
/// chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkSums {
    /// The chunk size is `1 << log2` bytes (the last chunk may be shorter).
    pub log2: u8,
    pub sums: Vec<u32>,
    /// [`HEAD_BLOCKS`] sums of the first chunk's blocks of `chunk / HEAD_BLOCKS` bytes;
    /// empty in records written before they existed.
    pub head: Vec<u32>,
}

/// The chunk size (as log2) for an object of `len` bytes.
pub fn chunk_log2_for(len: u64) -> u8 {
    let mut l = MIN_CHUNK_LOG2;
    while l < MAX_CHUNK_LOG2 && len.div_ceil(1u64 << l) > MAX_CHUNKS as u64 {
        l += 1;
    }
    l
}

impl ChunkSums {
    pub fn chunk(&self) -> u64 {
        1u64 << self.log2
    }

    /// Whether these sums describe an object of `len` bytes: the chunk size it would get
    /// and one sum per chunk, more than one chunk.
    pub fn valid_for(&self, len: u64) -> bool {
        self.log2 == chunk_log2_for(len)
            && (2..=MAX_CHUNKS).contains(&self.sums.len())
            && self.sums.len() as u64 == len.div_ceil(self.chunk())
            && (self.head.is_empty() || self.head.len() == HEAD_BLOCKS)
    }

    /// Bytes `[start, start + len)` of chunk `i` of an object of `total` bytes.
    pub fn range(&self, i: usize, total: u64) -> (u64, u64) {
        let start = i as u64 * self.chunk();
        (start, self.chunk().min(total - start))
    }

    /// The pieces a recall fetches and checks one by one, in order, with their sums: the
    /// head blocks of the first chunk (when the record has them), then the other chunks.
    pub fn pieces(&self, total: u64) -> Vec<(u64, u64, u32)> {
        let mut v = Vec::with_capacity(self.sums.len() + self.head.len());
        let first = if self.head.is_empty() {
            0
        } else {
            let b = self.chunk() / HEAD_BLOCKS as u64;
            v.extend(
                self.head
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (i as u64 * b, b, s)),
            );
            1
        };
        for i in first..self.sums.len() {
            let (start, len) = self.range(i, total);
            v.push((start, len, self.sums[i]));
        }
        v
    }
}

/// Computes the chunk sums of an object from its bytes, given in order.
pub struct ChunkSummer {
    log2: u8,
    total: u64,
    seen: u64,
    cur: Hasher,
    sums: Vec<u32>,
    head_cur: Hasher,
    head: Vec<u32>,
}

impl ChunkSummer {
    pub fn new(total: u64) -> Self {
        ChunkSummer {
            log2: chunk_log2_for(total),
            total,
            seen: 0,
            cur: Hasher::new(ChecksumAlgo::Crc32c),
            sums: Vec::new(),
            head_cur: Hasher::new(ChecksumAlgo::Crc32c),
            head: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        let chunk = 1u64 << self.log2;
        let block = chunk / HEAD_BLOCKS as u64;
        while !data.is_empty() {
            // Up to the next chunk end, and inside the first chunk the next block end.
            let mut room = (chunk - self.seen % chunk) as usize;
            if self.seen < chunk {
                room = room.min((block - self.seen % block) as usize);
            }
            let n = room.min(data.len());
            self.cur.update(&data[..n]);
            if self.seen < chunk {
                self.head_cur.update(&data[..n]);
            }
            self.seen += n as u64;
            data = &data[n..];
            if self.seen <= chunk && self.seen % block == 0 {
                let h = std::mem::replace(&mut self.head_cur, Hasher::new(ChecksumAlgo::Crc32c));
                let v = h.finalize().value;
                self.head.push(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            }
            if self.seen % chunk == 0 {
                self.close_chunk();
            }
        }
    }

    fn close_chunk(&mut self) {
        let h = std::mem::replace(&mut self.cur, Hasher::new(ChecksumAlgo::Crc32c));
        let v = h.finalize().value;
        self.sums.push(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    }

    /// The sums, if the object had more than one chunk and every byte was given.
    pub fn finish(mut self) -> Option<ChunkSums> {
        if self.seen != self.total {
            return None;
        }
        if self.seen % (1u64 << self.log2) != 0 {
            self.close_chunk();
        }
        let s = ChunkSums {
            log2: self.log2,
            sums: self.sums,
            head: self.head,
        };
        s.valid_for(self.total).then_some(s)
    }
}

/// The CRC32C of `data` as a chunk sum.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut h = Hasher::new(ChecksumAlgo::Crc32c);
    h.update(data);
    let v = h.finalize().value;
    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_grow_to_keep_at_most_256_chunks() {
        assert_eq!(chunk_log2_for(0), 22);
        assert_eq!(chunk_log2_for(1 << 30), 22); // 1 GiB: 256 chunks of 4 MiB
        assert_eq!(chunk_log2_for((1 << 30) + 1), 23);
        assert_eq!(chunk_log2_for(100 << 30), 29);
    }

    #[test]
    fn sums_match_each_chunk_however_the_bytes_are_fed() {
        let chunk = 1usize << MIN_CHUNK_LOG2;
        let data: Vec<u8> = (0..2 * chunk + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for piece in [1000usize, chunk, chunk + 1, data.len()] {
            let mut s = ChunkSummer::new(data.len() as u64);
            for p in data.chunks(piece) {
                s.update(p);
            }
            let sums = s.finish().expect("three chunks");
            assert_eq!(sums.log2, MIN_CHUNK_LOG2);
            let b = chunk / HEAD_BLOCKS;
            assert_eq!(
                sums.head,
                (0..HEAD_BLOCKS)
                    .map(|i| crc32c(&data[i * b..(i + 1) * b]))
                    .collect::<Vec<_>>()
            );
            let pieces = sums.pieces(data.len() as u64);
            assert_eq!(pieces.len(), HEAD_BLOCKS + 2);
            assert_eq!(pieces[1], (b as u64, b as u64, sums.head[1]));
            assert_eq!(
                pieces[HEAD_BLOCKS],
                (chunk as u64, chunk as u64, sums.sums[1])
            );
            assert_eq!(
                sums.sums,
                vec![
                    crc32c(&data[..chunk]),
                    crc32c(&data[chunk..2 * chunk]),
                    crc32c(&data[2 * chunk..])
                ]
            );
            assert!(sums.valid_for(data.len() as u64));
            assert_eq!(sums.range(2, data.len() as u64), (2 * chunk as u64, 12345));
        }
        // One chunk or less: no sums; bytes missing: none either.
        let mut s = ChunkSummer::new(chunk as u64);
        s.update(&data[..chunk]);
        assert_eq!(s.finish(), None);
        let mut s = ChunkSummer::new(data.len() as u64);
        s.update(&data[..10]);
        assert_eq!(s.finish(), None);
    }
}
