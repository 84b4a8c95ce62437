//! Streaming recall: a stub whose record carries chunk sums (`store::chunks`) is fetched as
//! chunks, with up to [`FETCHERS`] ranged GETs at once, straight into its backing file. Each
//! chunk is checked against its sum as it lands; from then on readers get its bytes, while
//! the rest follows. A read of a chunk not there yet moves it to the front of the queue, and
//! the chunks after it follow it (a reader that seeks, then reads on). When every chunk is
//! there the whole object's checksum is checked and the file becomes premigrated as after
//! any recall (`recall::recall_steps`); a chunk that does not match its sum, or a GET that
//! fails, fails every reader of the file with the recall's errno (EIO), and the file stays
//! a stub. Readers never get a byte that was not verified: the rule is in
//! docs/semantics.md ("Reading a stub").

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::task::JoinSet;

use crate::fs::backing;
use crate::store::{ChecksumAlgo, GetRequest, ObjectStore, StoreError, StoreErrorKind};
use crate::tier::model::stub::StubRecord;

/// Ranged GETs in flight per streaming recall.
pub const FETCHERS: usize = 8;

/// What each piece must hash to.
enum Expect {
    /// The CRC32C of each piece (the record's chunk sums: `ChunkSums::pieces`).
    Pieces(Vec<u32>),
    /// One chunk, the whole object: the record's checksum (a transient stream of a file
    /// without chunk sums).
    Whole(ChecksumAlgo, String),
}

/// A transient stream of a file without chunk sums holds the whole object, up to this.
pub const TRANSIENT_WHOLE_MAX: u64 = 64 << 20;
/// Chunks a transient stream keeps (the oldest go beyond): 64 MiB of 4 MiB chunks.
const TRANSIENT_KEEP: usize = 16;

/// One stub being streamed back (into its backing file: a recall), or read without a recall
/// (into an anonymous memory file: a transient stream, `stream` rule).
pub struct Stream {
    total: u64,
    /// Where the file's bytes are in the object, and the object's size: (0, total) but
    /// for a pack member (its offset in the pack, the pack's size).
    origin: (u64, u64),
    /// The pieces fetched and checked one by one: (start, length), in order, end to end.
    pieces: Vec<(u64, u64)>,
    expect: Expect,
    /// A transient stream: chunks fetched on demand only, the oldest forgotten.
    transient: bool,
    /// The recall's file: chunks are written to it, readers read verified chunks from it.
    file: File,
    state: Mutex<State>,
    landed: Condvar,
    /// Readers hold it shared while they read; a failure takes it before the file is
    /// emptied, so that no reader gets bytes of a file being made a stub again.
    io: RwLock<()>,
    /// The errno every reader gets once the recall failed (0: it has not).
    failed: AtomicI32,
}

#[derive(Default)]
struct State {
    done: Vec<bool>,
    started: Vec<bool>,
    /// Chunks readers wait for, first first.
    wanted: VecDeque<usize>,
    /// Where the next chunk nobody asked for is taken from.
    cursor: usize,
    left: usize,
    /// GETs sent, in order (chunk numbers): for `coldtier recalls` and the tests' logs.
    sent: usize,
    /// A transient stream: whether a fetcher runs, the chunks in the order they landed,
    /// bytes fetched, and when it was last read.
    fetching: bool,
    landed_order: VecDeque<usize>,
    fetched: u64,
    last_read: Option<Instant>,
}

/// What a read of a stub being streamed gets.
pub enum StreamRead {
    /// The bytes (verified).
    Data(Vec<u8>),
    /// Not there yet: wait for chunks `first..=last`.
    Wait(usize, usize),
}

impl Stream {
    /// A stream for `rec`, if it can be streamed: its record has chunk sums and its object
    /// holds the file's bytes as they are (not a sparse file's extents).
    pub fn for_record(rec: &StubRecord, file: File) -> Option<Arc<Stream>> {
        Self::chunked(rec, file, false)
    }

    /// A stream of `rec`'s pieces (its chunk sums), if it has valid ones and its object
    /// holds the file's bytes as they are.
    fn chunked(rec: &StubRecord, file: File, transient: bool) -> Option<Arc<Stream>> {
        let sums = rec.chunks.as_ref()?;
        if rec.extents.is_some() || !sums.valid_for(rec.size) {
            return None;
        }
        let (pieces, sums) = split(sums.pieces(rec.size));
        Some(Stream::new(
            rec.size,
            pieces,
            Expect::Pieces(sums),
            file,
            transient,
        ))
    }

    /// A transient stream of `rec` into `file` (an anonymous memory file): its chunk sums,
    /// or, without them, the whole object as one chunk if it is small enough.
    pub fn transient(rec: &StubRecord, file: File) -> Option<Arc<Stream>> {
        if rec.extents.is_some() {
            return None;
        }
        match &rec.chunks {
            Some(sums) if sums.valid_for(rec.size) => Self::chunked(rec, file, true),
            _ if rec.size <= TRANSIENT_WHOLE_MAX && rec.size > 0 => {
                let algo: ChecksumAlgo = rec.checksum_algo.parse().ok()?;
                let mut s = Stream::new(
                    rec.size,
                    vec![(0, rec.size)],
                    Expect::Whole(algo, rec.checksum.clone()),
                    file,
                    true,
                );
                if let Some(p) = &rec.pack {
                    Arc::get_mut(&mut s).expect("new").origin = (p.offset, p.pack_size);
                }
                Some(s)
            }
            _ => None,
        }
    }

    fn new(
        total: u64,
        pieces: Vec<(u64, u64)>,
        expect: Expect,
        file: File,
        transient: bool,
    ) -> Arc<Stream> {
        let n = pieces.len();
        Arc::new(Stream {
            total,
            origin: (0, total),
            pieces,
            expect,
            transient,
            file,
            state: Mutex::new(State {
                done: vec![false; n],
                started: vec![false; n],
                left: n,
                ..State::default()
            }),
            landed: Condvar::new(),
            io: RwLock::new(()),
            failed: AtomicI32::new(0),
        })
    }

    pub fn chunks(&self) -> usize {
        self.pieces.len()
    }

    /// Bytes `[start, start + len)` of piece `i`.
    fn range(&self, i: usize) -> (u64, u64) {
        self.pieces[i]
    }

    /// Bytes verified and in the file so far.
    pub fn bytes_done(&self) -> u64 {
        let st = self.state.lock();
        (0..st.done.len())
            .filter(|&i| st.done[i])
            .map(|i| self.range(i).1)
            .sum()
    }

    /// Bytes fetched from the store so far (a transient stream: all it ever fetched).
    pub fn bytes_fetched(&self) -> u64 {
        self.state.lock().fetched
    }

    /// The object's size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When a transient stream was last read (None: never).
    pub fn last_read(&self) -> Option<Instant> {
        self.state.lock().last_read
    }

    fn span(&self, off: u64, len: u64) -> Option<(usize, usize, u64)> {
        let end = off.saturating_add(len).min(self.total);
        if off >= end {
            return None;
        }
        let a = self.pieces.partition_point(|&(s, l)| s + l <= off);
        let b = self.pieces.partition_point(|&(s, _)| s < end) - 1;
        Some((a, b, end))
    }

    /// Chunks `a..=b` go to the front of the queue, in order.
    fn want_chunks(st: &mut State, a: usize, b: usize) {
        for i in (a..=b).rev() {
            if !st.started[i] {
                st.wanted.retain(|&w| w != i);
                st.wanted.push_front(i);
            }
        }
    }

    /// The chunks of `len` bytes at `off` are fetched first (the read that starts a recall).
    pub fn want(&self, off: u64, len: u64) {
        if let Some((a, b, _)) = self.span(off, len) {
            Self::want_chunks(&mut self.state.lock(), a, b);
        }
    }

    /// A read of `len` bytes at `off`: the bytes if their chunks are there, else which
    /// chunks to wait for (moved to the front of the queue).
    pub fn read(&self, off: u64, len: u64) -> Result<StreamRead, i32> {
        self.check()?;
        let Some((a, b, end)) = self.span(off, len) else {
            return Ok(StreamRead::Data(Vec::new()));
        };
        {
            let mut st = self.state.lock();
            st.last_read = Some(Instant::now());
            if !(a..=b).all(|i| st.done[i]) {
                Self::want_chunks(&mut st, a, b);
                return Ok(StreamRead::Wait(a, b));
            }
        }
        let _reading = self.io.read();
        self.check()?;
        let mut buf = vec![0u8; (end - off) as usize];
        let mut got = 0;
        while got < buf.len() {
            match backing::pread(self.file.as_fd(), &mut buf[got..], off + got as u64) {
                Ok(0) => return Err(libc::EIO), // verified bytes cannot be missing
                Ok(n) => got += n,
                Err(e) => return Err(e.0),
            }
        }
        Ok(StreamRead::Data(buf))
    }

    /// Whether the recall failed (its readers got the errno).
    pub fn has_failed(&self) -> bool {
        self.check().is_err()
    }

    fn check(&self) -> Result<(), i32> {
        match self.failed.load(Ordering::Acquire) {
            0 => Ok(()),
            e => Err(e),
        }
    }

    /// Waits until chunks `a..=b` are there (Ok), the recall failed (its errno), or
    /// `limit` passed (EAGAIN; the recall goes on).
    pub fn wait(&self, a: usize, b: usize, limit: Option<Duration>) -> Result<(), i32> {
        let deadline = limit.map(|d| Instant::now() + d);
        let mut st = self.state.lock();
        loop {
            self.check()?;
            if (a..=b).all(|i| st.done[i]) {
                return Ok(());
            }
            match deadline {
                None => self.landed.wait(&mut st),
                Some(d) => {
                    if self.landed.wait_until(&mut st, d).timed_out() {
                        self.check()?;
                        return if (a..=b).all(|i| st.done[i]) {
                            Ok(())
                        } else {
                            Err(libc::EAGAIN)
                        };
                    }
                }
            }
        }
    }

    /// The next chunk to fetch: one a reader waits for, else the next after the last one
    /// taken, wrapping around; None when every chunk is taken.
    fn next_chunk(&self) -> Option<usize> {
        let mut st = self.state.lock();
        while let Some(i) = st.wanted.pop_front() {
            if !st.started[i] {
                st.started[i] = true;
                st.cursor = i + 1;
                st.sent += 1;
                return Some(i);
            }
        }
        if self.transient {
            // On demand only: a fetcher with nothing wanted stops (under the lock, so a
            // reader that queues a chunk after this starts another).
            st.fetching = false;
            return None;
        }
        let n = st.started.len();
        let from = st.cursor.min(n);
        let i = (from..n).chain(0..from).find(|&i| !st.started[i])?;
        st.started[i] = true;
        st.cursor = i + 1;
        st.sent += 1;
        Some(i)
    }

    fn landed(&self, i: usize) {
        let mut st = self.state.lock();
        if !st.done[i] {
            st.done[i] = true;
            st.left -= 1;
            st.fetched += self.range(i).1;
            st.landed_order.push_back(i);
        }
        let evict = if self.transient && st.landed_order.len() > TRANSIENT_KEEP {
            st.landed_order.pop_front()
        } else {
            None
        };
        drop(st);
        self.landed.notify_all();
        if let Some(old) = evict {
            // No reader reads while its bytes go.
            let _w = self.io.write();
            let mut st = self.state.lock();
            st.done[old] = false;
            st.started[old] = false;
            st.left += 1;
            drop(st);
            let (start, len) = self.range(old);
            let _ = backing::fallocate(
                self.file.as_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                start,
                len,
            );
        }
    }

    /// A transient stream: starts a fetcher on the runtime `rt` unless one runs (it
    /// fetches the chunks readers want, then stops).
    pub fn ensure_fetching(
        self: &Arc<Self>,
        rt: &tokio::runtime::Handle,
        store: Arc<dyn ObjectStore>,
        key: &str,
        version_id: Option<&str>,
    ) {
        {
            let mut st = self.state.lock();
            if st.fetching || st.wanted.is_empty() {
                return;
            }
            st.fetching = true;
        }
        let me = self.clone();
        let (key, version_id) = (key.to_string(), version_id.map(str::to_string));
        rt.spawn(async move {
            if let Err(e) = me.fetch_loop(store, key, version_id).await {
                tracing::warn!("stream read: {e}");
                me.fail(libc::EIO);
            }
        });
    }

    /// Chunks not there are to be fetched again (a GET failed, or the object must be
    /// restored from an archive class first).
    fn forget_started(&self) {
        let mut st = self.state.lock();
        for i in 0..st.started.len() {
            if !st.done[i] {
                st.started[i] = false;
            }
        }
    }

    /// The recall failed with `errno`: every reader, waiting or to come, gets it. Returns
    /// once no reader is reading the file (it is emptied next).
    pub fn fail(&self, errno: i32) {
        self.failed.store(errno, Ordering::Release);
        self.landed.notify_all();
        drop(self.io.write());
    }

    /// Fetches every chunk not there yet, `FETCHERS` at a time, into the file; each one
    /// checked against its sum before readers see it. The first error stops the others.
    pub async fn fetch_all(
        self: &Arc<Self>,
        store: Arc<dyn ObjectStore>,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<(), StoreError> {
        // The first chunk (the one a reader waits for, normally) alone: its bytes do not
        // share the link with the others'.
        if let Some(i) = self.next_chunk() {
            if let Err(e) = self.fetch_one(i, &*store, key, version_id).await {
                self.forget_started();
                return Err(e);
            }
        }
        let mut set: JoinSet<Result<(), StoreError>> = JoinSet::new();
        for _ in 0..FETCHERS.min(self.chunks()) {
            let (me, store) = (self.clone(), store.clone());
            let (key, version_id) = (key.to_string(), version_id.map(str::to_string));
            set.spawn(async move { me.fetch_loop(store, key, version_id).await });
        }
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            let r = r.unwrap_or_else(|e| {
                Err(StoreError::new(
                    StoreErrorKind::Other,
                    format!("chunk fetcher: {e}"),
                ))
            });
            if let Err(e) = r {
                if first_err.is_none() {
                    set.abort_all();
                    first_err = Some(e);
                }
            }
        }
        match first_err {
            Some(e) => {
                self.forget_started();
                Err(e)
            }
            None if self.state.lock().left == 0 => Ok(()),
            None => Err(StoreError::new(
                StoreErrorKind::Other,
                format!("{key}: chunks missing after the fetch"),
            )),
        }
    }

    /// Takes chunks from the queue and fetches them until none is left; the first error
    /// ends it.
    async fn fetch_loop(
        self: &Arc<Self>,
        store: Arc<dyn ObjectStore>,
        key: String,
        version_id: Option<String>,
    ) -> Result<(), StoreError> {
        while let Some(i) = self.next_chunk() {
            if self.check().is_err() {
                break;
            }
            self.fetch_one(i, &*store, &key, version_id.as_deref())
                .await?;
        }
        Ok(())
    }

    /// Fetches chunk `i` into the file, checks it against its sum and marks it landed.
    async fn fetch_one(
        &self,
        i: usize,
        store: &dyn ObjectStore,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let (start, len) = self.range(i);
        tracing::debug!(chunk = i, "stream: GET");
        let algo = match &self.expect {
            Expect::Pieces(_) => ChecksumAlgo::Crc32c,
            Expect::Whole(a, _) => *a,
        };
        let got = store
            .get(GetRequest {
                key,
                version_id,
                dest: Some(&self.file),
                expected_size: self.origin.1,
                checksum: algo,
                extents: None,
                range: (len != self.origin.1).then_some((self.origin.0 + start, len)),
                dest_base: self.origin.0,
                progress: None,
            })
            .await?;
        let (ok, said, want) = match &self.expect {
            Expect::Pieces(sums) => {
                let v = &got.checksum.value;
                let sum = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                (
                    sum == sums[i],
                    format!("crc32c {sum:08x}"),
                    format!("{:08x}", sums[i]),
                )
            }
            Expect::Whole(_, c) => (
                got.checksum.base64() == *c,
                got.checksum.to_string(),
                c.clone(),
            ),
        };
        if got.bytes != len || !ok {
            return Err(StoreError::new(
                StoreErrorKind::ChecksumMismatch,
                format!(
                    "{key}: chunk {i} (bytes {start}+{len}) read back as {said}, the stub record says {want}"
                ),
            ));
        }
        if !self.transient {
            // Start writing the chunk back now (no wait): the fsync before the switch
            // then has little left to do.
            // SAFETY: a range of an fd this stream holds.
            unsafe {
                libc::sync_file_range(
                    std::os::fd::AsRawFd::as_raw_fd(&self.file),
                    start as i64,
                    len as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        self.landed(i);
        tracing::debug!(chunk = i, "stream: landed");
        Ok(())
    }

    /// The chunk sums combined: the object's CRC32C (what a crc32c record's checksum is).
    pub fn combined_crc32c(&self) -> crate::store::Checksum {
        let mut acc: Option<crate::store::Checksum> = None;
        let Expect::Pieces(sums) = &self.expect else {
            unreachable!("a recall's stream has chunk sums")
        };
        for (i, s) in sums.iter().enumerate() {
            let c = crate::store::Checksum {
                algo: ChecksumAlgo::Crc32c,
                value: s.to_be_bytes().to_vec(),
            };
            let len = self.range(i).1;
            acc = Some(match acc {
                None => c,
                Some(a) => crate::store::combine_crc(&a, &c, len).expect("crc32c combines"),
            });
        }
        acc.expect("two chunks or more")
    }

    /// GETs sent so far.
    pub fn sent(&self) -> usize {
        self.state.lock().sent
    }
}

/// (start, length) of each piece, and its sum.
fn split(p: Vec<(u64, u64, u32)>) -> (Vec<(u64, u64)>, Vec<u32>) {
    p.into_iter().map(|(s, l, c)| ((s, l), c)).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunks::ChunkSums;

    fn stream(n: usize) -> Arc<Stream> {
        let log2 = crate::store::chunks::MIN_CHUNK_LOG2;
        let total = (n as u64) << log2;
        let sums = ChunkSums {
            log2,
            sums: vec![0; n],
            head: Vec::new(),
        };
        let (pieces, sums) = split(sums.pieces(total));
        Stream::new(
            total,
            pieces,
            Expect::Pieces(sums),
            tempfile::tempfile().unwrap(),
            false,
        )
    }

    #[test]
    fn a_read_elsewhere_jumps_the_queue_and_the_chunks_after_it_follow() {
        let s = stream(8);
        assert_eq!(s.next_chunk(), Some(0));
        // A reader at chunk 5 (and into 6): 5 then 6 next, then on from 7, then the rest.
        let c = 4u64 << 20;
        assert!(matches!(s.read(5 * c + 10, c), Ok(StreamRead::Wait(5, 6))));
        let order: Vec<usize> = std::iter::from_fn(|| s.next_chunk()).collect();
        assert_eq!(order, vec![5, 6, 7, 1, 2, 3, 4]);
        assert_eq!(s.sent(), 8);
    }

    #[test]
    fn readers_get_landed_chunks_and_a_failure_reaches_every_reader() {
        let s = stream(2);
        let c = 4usize << 20;
        backing::pwrite(s.file.as_fd(), &vec![7u8; c], 0).unwrap();
        assert!(matches!(s.read(0, 10), Ok(StreamRead::Wait(0, 0))));
        s.landed(0);
        match s.read(c as u64 - 4, 4) {
            Ok(StreamRead::Data(d)) => assert_eq!(d, vec![7u8; 4]),
            _ => panic!("chunk 0 landed"),
        }
        assert_eq!(s.wait(0, 0, None), Ok(()));
        assert_eq!(
            s.wait(1, 1, Some(Duration::from_millis(1))),
            Err(libc::EAGAIN)
        );
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait(1, 1, None))
        };
        s.fail(libc::EIO);
        assert_eq!(waiter.join().unwrap(), Err(libc::EIO));
        assert!(matches!(s.read(0, 10), Err(libc::EIO)));
    }
}
