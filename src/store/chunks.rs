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

/// Computes the chunk sums of an object from its bytes, given in order. Each byte is
/// hashed once: the sum of a chunk, of a head block and of the bytes of one `update_crc`
/// are combined from the sums of the pieces between their boundaries (CRC combination).
pub struct ChunkSummer {
    log2: u8,
    total: u64,
    seen: u64,
    /// The sum of the current chunk so far.
    cur: Crc,
    sums: Vec<u32>,
    /// The sum of the current head block so far.
    head_cur: Crc,
    head: Vec<u32>,
    /// The sum of every byte given so far.
    whole: Crc,
}

/// A CRC32C and the length of the bytes it covers.
#[derive(Clone, Copy, Default)]
struct Crc {
    sum: u32,
    len: u64,
}

impl Crc {
    /// The sum of these bytes followed by `next`'s.
    fn then(self, next: Crc) -> Crc {
        let sum = if self.len == 0 {
            next.sum
        } else {
            multmodp(x8nmodp(next.len), self.sum) ^ next.sum
        };
        Crc {
            sum,
            len: self.len + next.len,
        }
    }
}

impl ChunkSummer {
    pub fn new(total: u64) -> Self {
        ChunkSummer {
            log2: chunk_log2_for(total),
            total,
            seen: 0,
            cur: Crc::default(),
            sums: Vec::new(),
            head_cur: Crc::default(),
            head: Vec::new(),
            whole: Crc::default(),
        }
    }

    /// The CRC32C of every byte given so far.
    pub fn crc32c(&self) -> u32 {
        self.whole.sum
    }

    pub fn update(&mut self, data: &[u8]) {
        self.update_crc(data);
    }

    /// [`ChunkSummer::update`], returning the CRC32C of `data` (the same as
    /// [`crc32c`]`(data)`, without hashing its bytes again).
    pub fn update_crc(&mut self, mut data: &[u8]) -> u32 {
        let chunk = 1u64 << self.log2;
        let block = chunk / HEAD_BLOCKS as u64;
        let mut all = Crc::default();
        while !data.is_empty() {
            // Up to the next chunk end, and inside the first chunk the next block end.
            let mut room = (chunk - self.seen % chunk) as usize;
            if self.seen < chunk {
                room = room.min((block - self.seen % block) as usize);
            }
            let n = room.min(data.len());
            let piece = Crc {
                sum: crc32c(&data[..n]),
                len: n as u64,
            };
            all = all.then(piece);
            self.cur = self.cur.then(piece);
            if self.seen < chunk {
                self.head_cur = self.head_cur.then(piece);
            }
            self.seen += n as u64;
            data = &data[n..];
            if self.seen <= chunk && self.seen % block == 0 {
                self.head.push(std::mem::take(&mut self.head_cur).sum);
            }
            if self.seen % chunk == 0 {
                self.close_chunk();
            }
        }
        self.whole = self.whole.then(all);
        all.sum
    }

    fn close_chunk(&mut self) {
        self.sums.push(std::mem::take(&mut self.cur).sum);
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

/// CRC-32C's polynomial, bit-reflected.
const POLY: u32 = 0x82f6_3b78;

/// `a * b` modulo the polynomial (both bit-reflected, x^0 in the top bit), as zlib's
/// `multmodp`: the product that shifts a CRC past bytes without reading them.
fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
}

/// `x^(8 n)` modulo the polynomial: a CRC multiplied by it is shifted past `n` bytes
/// (zlib's `x2nmodp(n, 3)`). About 64 products at most, where crc-fast's
/// `checksum_combine` squares 32x32 bit matrices (30 µs a call, measured in a profile).
fn x8nmodp(mut n: u64) -> u32 {
    static X2N: std::sync::OnceLock<[u32; 32]> = std::sync::OnceLock::new();
    let x2n = X2N.get_or_init(|| {
        let mut t = [0u32; 32];
        let mut p = 1u32 << 30; // x^1
        for e in t.iter_mut() {
            *e = p;
            p = multmodp(p, p);
        }
        t
    });
    let mut k = 3usize;
    let mut p = 1u32 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(x2n[k & 31], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The CRC32C of `data` as a chunk sum.
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
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
    fn combined_sums_are_the_sums_of_the_concatenation() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 253) as u8).collect();
        for split in [0usize, 1, 2, 7, 64, 255, 4096, 4999, 5000] {
            for end in [split, split + 1, 5000] {
                let end = end.min(5000);
                let (a, b) = (&data[..split], &data[split..end]);
                let a = Crc {
                    sum: crc32c(a),
                    len: a.len() as u64,
                };
                let b = Crc {
                    sum: crc32c(b),
                    len: b.len() as u64,
                };
                assert_eq!(a.then(b).sum, crc32c(&data[..end]), "{split} {end}");
                assert_eq!(a.then(b).len, end as u64);
            }
        }
    }

    #[test]
    fn sums_match_each_chunk_however_the_bytes_are_fed() {
        // CRC-32C (Castagnoli, iSCSI): its check value, and the hasher's.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let mut h = crate::store::Hasher::new(crate::store::ChecksumAlgo::Crc32c);
        h.update(b"123456789");
        assert_eq!(h.finalize().value, 0xe306_9283u32.to_be_bytes());
        let chunk = 1usize << MIN_CHUNK_LOG2;
        let data: Vec<u8> = (0..2 * chunk + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for piece in [1000usize, 300_007, chunk, chunk + 1, data.len()] {
            let mut s = ChunkSummer::new(data.len() as u64);
            for p in data.chunks(piece) {
                // The sum of each update, combined from its pieces, is its own CRC32C.
                assert_eq!(s.update_crc(p), crc32c(p), "{piece}");
            }
            assert_eq!(s.crc32c(), crc32c(&data), "{piece}");
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
