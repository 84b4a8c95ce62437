//! Packs: the small files of a policy run gathered into one object (docs/architecture.md
//! "Packs").
//!
//! A pack is a POSIX pax tar (`tar -tf`, `tar -xf` open it without coldtier): each member
//! a pax extended header (its path, mtime to the nanosecond, uid, gid) and a ustar header,
//! then its bytes, padded to 512; two zero blocks at the end. Its member index (JSON) is a
//! second, small object beside it, always STANDARD (readable without a restore). The order
//! of a pack's steps keeps every file readable at each point:
//! 1. the members are read into an unnamed local file (each summed on the way: a
//!    member's checksum is its own);
//! 2. the upload intent, then the pack and its index are uploaded and proven like any
//!    copy (the store's checksum, or a read-back);
//! 3. the pack's row and its PACKED event, durable, before any file names it;
//! 4. each member, if unchanged since it was read, gets its copy record naming the pack,
//!    its offset and its own checksum (COPIED, VERIFIED), and with a stub run is stubbed
//!    like any file. A member that changed meanwhile is left resident (its bytes in the
//!    pack are dead).
//!
//! A crash before 3 leaves no file naming the pack (the intent's FAILED lets gc delete
//! it); after it, each member is resident, premigrated or a stub, each readable. gc
//! deletes a pack (and its index) once no file names it.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::context::{ns_of, StepError, Tiering};
use super::migrate::{refuse_unchangeable, Outcome};
use super::record::{fill_from_record, Change, Transition};
use crate::catalog::{EventKind, FileRow, FileState, ObjectRef, PackRow};
use crate::fs::backing::{self, Stat};
use crate::store::{Checksum, ChecksumAlgo, Hasher, PutBody, PutRequest, StorageClass};
use crate::tier::marks;
use crate::tier::policy::{FileFacts, Plan};
use crate::tier::state::Action;
use crate::tier::stub::{
    new_file_id, pack_index_key, pack_key, PackRef, StubRecord, PACK_PREFIX, STUB_VERSION,
};

/// One file's outcome in a policy run.
pub(super) type Done = (FileFacts, Plan, Result<Outcome, StepError>);

/// A file a policy run selected, and what it does with it.
pub type Selected = (FileFacts, Plan);

/// The format name and version an index object carries.
pub const INDEX_FORMAT: &str = "coldtier-pack-index";
pub const INDEX_VERSION: u64 = 1;

const BLOCK: u64 = 512;

/// The bytes a member of `size` bytes takes in a pack at most: its two headers (the pax
/// one of at most a few blocks for a long path), its data, its padding.
pub fn member_footprint(size: u64) -> u64 {
    4 * BLOCK + size.div_ceil(BLOCK) * BLOCK
}

/// The least that `members` members whose data fill `blocks` 512-byte blocks take in a
/// pack: each one's pax header, its pax records (a block; a long path may take more) and
/// its ustar header, and its data in whole blocks; and the archive's end (two blocks).
pub fn live_footprint(members: u64, blocks: u64) -> u64 {
    (members * 3 + blocks + 2) * BLOCK
}

/// A pax tar written into a file at increasing offsets, or into memory.
pub struct TarWriter {
    out: TarOut,
    pos: u64,
    count: u64,
}

/// Where a [`TarWriter`] writes.
enum TarOut {
    File(File),
    Memory(Vec<u8>),
}

fn octal(field: &mut [u8], v: u64) {
    // `len - 1` digits and a NUL; a value that does not fit is left 0 (pax has it).
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() == digits {
        field[..digits].copy_from_slice(s.as_bytes());
    } else {
        field[..digits].fill(b'0');
    }
    field[digits] = 0;
}

fn ustar_header(
    name: &[u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    kind: u8,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode & 0o7777));
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// One pax record: `"<len> <key>=<value>\n"`, `len` counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 3 + key.len() + value.len(); // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl TarWriter {
    fn with(out: TarOut) -> Self {
        TarWriter {
            out,
            pos: 0,
            count: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        match &mut self.out {
            TarOut::File(f) => std::os::unix::fs::FileExt::write_all_at(f, b, self.pos)?,
            TarOut::Memory(v) => v.extend_from_slice(b),
        }
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let r = self.pos % BLOCK;
        if r != 0 {
            self.put(&vec![0u8; (BLOCK - r) as usize])?;
        }
        Ok(())
    }

    /// Adds member `m` (its path, size, mtime, mode, uid, gid; not its offset and
    /// checksum, which this finds) with the bytes of `src` from `src_off`, summed with
    /// `algo`. Returns the data's offset, its checksum and whether all `m.size` bytes were
    /// there (a file that shrank meanwhile is padded with zeros: the archive stays whole,
    /// the member is dead).
    pub fn add(
        &mut self,
        m: &IndexMember,
        src: &File,
        src_off: u64,
        algo: ChecksumAlgo,
    ) -> std::io::Result<(u64, Checksum, bool)> {
        let (secs, nsec) = (
            m.mtime_ns.div_euclid(1_000_000_000),
            m.mtime_ns.rem_euclid(1_000_000_000),
        );
        let mut pax = pax_record("path", m.path.as_bytes());
        pax.extend(pax_record("mtime", format!("{secs}.{nsec:09}").as_bytes()));
        pax.extend(pax_record("uid", m.uid.to_string().as_bytes()));
        pax.extend(pax_record("gid", m.gid.to_string().as_bytes()));
        pax.extend(pax_record("size", m.size.to_string().as_bytes()));
        self.count += 1;
        let xname = format!("PaxHeaders/{}", self.count);
        let mtime = secs.max(0) as u64;
        self.put(&ustar_header(
            xname.as_bytes(),
            0o644,
            0,
            0,
            pax.len() as u64,
            mtime,
            b'x',
        ))?;
        self.put(&pax)?;
        self.pad()?;
        self.put(&ustar_header(
            m.path.as_bytes(),
            u32::from_str_radix(&m.mode, 8).unwrap_or(0o644),
            u64::from(m.uid),
            u64::from(m.gid),
            m.size,
            mtime,
            b'0',
        ))?;
        let offset = self.pos;
        let mut h = Hasher::new(algo);
        const CHUNK: usize = 256 << 10;
        // In memory, the member's bytes are read straight into the tar's buffer.
        let mut buf = match self.out {
            TarOut::File(_) => vec![0u8; CHUNK.min(m.size.max(1) as usize)],
            TarOut::Memory(_) => Vec::new(),
        };
        let mut off = 0u64;
        let mut whole = true;
        while off < m.size {
            let want = CHUNK.min((m.size - off) as usize);
            let dst: &mut [u8] = match &mut self.out {
                TarOut::File(_) => &mut buf[..want],
                TarOut::Memory(v) => {
                    let at = v.len();
                    v.resize(at + want, 0);
                    &mut v[at..]
                }
            };
            let n = if whole {
                let n = loop {
                    match std::os::unix::fs::FileExt::read_at(src, dst, src_off + off) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        r => break r?,
                    }
                };
                whole = n > 0;
                n
            } else {
                0
            };
            // A file that shrank meanwhile: the rest of the member is zeros.
            let n = if n == 0 {
                dst.fill(0);
                want
            } else {
                n
            };
            h.update(&dst[..n]);
            match &mut self.out {
                TarOut::File(_) => self.put(&buf[..n])?,
                TarOut::Memory(v) => {
                    v.truncate(v.len() - want + n);
                    self.pos += n as u64;
                }
            }
            off += n as u64;
        }
        self.pad()?;
        Ok((offset, h.finalize(), whole))
    }

    /// Ends the archive (two zero blocks); its size, and its bytes to upload.
    pub fn finish(mut self) -> std::io::Result<(u64, PutBody)> {
        self.put(&[0u8; 1024])?;
        Ok(match self.out {
            TarOut::File(f) => (self.pos, PutBody::File(f)),
            TarOut::Memory(v) => (self.pos, PutBody::Memory(bytes::Bytes::from(v))),
        })
    }
}

/// How many members of a proven pack are finished (copy record, stub) at once. A member's
/// stub waits on the disk (its record synced before its data is freed: an inode write, a
/// cache flush and, on a filesystem mounted `discard`, a discard), and one member after
/// another left a CPU idle for the last third of a packed migrate; 4 at once took it from
/// 0.667 to 0.621 s (2,000 files of 64 KiB on this project's test VM, means of six; 2 at
/// once 0.624 s, 8 0.604 s against 0.600 s for 4: docs/benchmarks.md).
const MEMBER_FINISHERS: usize = 4;

/// Members opened ahead of their reading, each with a hint to the kernel to read it in
/// ([`backing::will_need`]): the disk then has many reads at once, where a member read
/// after another waits for each. 2,000 cold files of 64 KiB on this project's test VM:
/// 0.09-0.12 s read with hints 32 files ahead, 0.28-0.38 s one after another
/// (docs/benchmarks.md, "Members read ahead").
struct ReadAhead {
    rels: std::vec::IntoIter<PathBuf>,
    opened: VecDeque<Result<File, StepError>>,
}

/// How many members are opened and hinted ahead of the one being read.
const READ_AHEAD: usize = 32;

impl ReadAhead {
    fn new(rels: impl Iterator<Item = PathBuf>) -> ReadAhead {
        ReadAhead {
            rels: rels.collect::<Vec<_>>().into_iter(),
            opened: VecDeque::with_capacity(READ_AHEAD + 1),
        }
    }

    /// The next member, opened (an open is as of now or up to `READ_AHEAD` members ago:
    /// what the reading then checks is the file that fd is).
    fn next(&mut self, t: &Tiering) -> Result<File, StepError> {
        while self.opened.len() <= READ_AHEAD {
            let Some(rel) = self.rels.next() else { break };
            let f = t.open_to_copy(&rel);
            if let Ok(f) = &f {
                backing::will_need(f.as_fd());
            }
            self.opened.push_back(f);
        }
        self.opened
            .pop_front()
            .expect("one member opened per member read")
    }
}

/// A file read into a pack, waiting for the pack to be proven.
struct Member {
    facts: FileFacts,
    plan: Plan,
    d: Data,
}

/// What a member's reading found.
struct Data {
    path: String,
    file: File,
    node: u64,
    st0: Stat,
    id: String,
    new_id: bool,
    row: FileRow,
    offset: u64,
    checksum: Checksum,
    /// Its entry in the pack's index.
    entry: IndexMember,
}

/// The index object of a pack: what `catalog rebuild` and a person read.
fn index_json(
    pack_id: &str,
    key: &str,
    size: u64,
    put_sum: &Checksum,
    members: &[&IndexMember],
) -> serde_json::Value {
    json!({
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "pack_id": pack_id,
        "object_key": key,
        "size": size,
        "checksum": put_sum.to_string(),
        "members": members,
    })
}

/// A file's index entry, before its bytes are in a pack (offset and checksum unset).
fn entry_of(path: &str, id: &str, st: &Stat) -> IndexMember {
    IndexMember {
        path: path.to_string(),
        file_id: id.to_string(),
        offset: 0,
        size: st.size,
        checksum: String::new(),
        mtime_ns: ns_of(st.mtime),
        mode: format!("{:o}", st.mode),
        uid: st.uid,
        gid: st.gid,
    }
}

impl Tiering {
    /// Copies (and with `stub`, stubs) the files of `items` as one pack. Every file gets
    /// its outcome.
    pub(super) async fn migrate_pack(
        &self,
        items: Vec<(FileFacts, Plan)>,
        stub: bool,
    ) -> Vec<Done> {
        let _in_flight = crate::tier::metrics::MIGRATIONS_IN_FLIGHT.track();
        let mut done = Vec::with_capacity(items.len());
        let algo = self.settings().uploads.checksum;
        // A pack of at most a part (the default target) is built in memory: it goes in one
        // PUT from there, and takes no space on the source (which may be full: the reason
        // to tier). A larger one is built in a temporary file on the source and read back
        // part by part, so memory stays near a part per upload slot.
        let planned = items
            .iter()
            .map(|(f, _)| member_footprint(f.size))
            .sum::<u64>()
            + 1024;
        let mut tar = match self.pack_writer(planned) {
            Ok(t) => t,
            Err(e) => {
                return items
                    .into_iter()
                    .map(|(f, p)| (f, p, Err(e.clone())))
                    .collect()
            }
        };
        let mut members = Vec::with_capacity(items.len());
        let mut ahead = ReadAhead::new(items.iter().map(|(f, _)| f.rel_path.clone()));
        for (i, (facts, plan)) in items.into_iter().enumerate() {
            let file = ahead.next(self);
            match self.read_member(file, &facts.rel_path, &mut tar, algo) {
                Ok(Some(d)) => members.push(Member { facts, plan, d }),
                Ok(None) => done.push((facts, plan, Ok(Outcome::Skipped))),
                Err(e) => done.push((facts, plan, Err(e))),
            }
            if i == 0 {
                // The next members are open already (`ReadAhead`), not yet read.
                self.failpoint("pack-after-first-member");
            }
        }
        if members.is_empty() {
            return done;
        }
        let fail_all = |members: Vec<Member>, e: StepError, done: &mut Vec<Done>| {
            for m in members {
                done.push((m.facts, m.plan, Err(e.clone())));
            }
        };
        let (size, body) = match tar.finish() {
            Ok(s) => s,
            Err(e) => {
                fail_all(
                    members,
                    StepError::new(libc::EIO, format!("writing the pack: {e}")),
                    &mut done,
                );
                return done;
            }
        };
        let entries: Vec<&IndexMember> = members.iter().map(|m| &m.d.entry).collect();
        let proven = self
            .upload_pack(&body, size, &entries, &members[0].d.row, algo, None)
            .await;
        drop(entries);
        let proven = match proven {
            Ok(p) => p,
            Err(e) => {
                fail_all(members, e, &mut done);
                return done;
            }
        };
        // The members are finished [`MEMBER_FINISHERS`] at once. Their records are
        // written together, in transactions of up to 256 members, and all before the
        // intent ends: until then a crash is put right from the pack's index
        // (`resolve_pack_upload`).
        let owed = super::record::Owed::default();
        let finishers = MEMBER_FINISHERS.min(members.len());
        let queue = parking_lot::Mutex::new(members.into_iter());
        let finished = parking_lot::Mutex::new(std::mem::take(&mut done));
        let finisher = || loop {
            let Some(m) = queue.lock().next() else {
                break;
            };
            let (facts, plan) = (m.facts.clone(), m.plan);
            let r = self
                .rt
                .block_on(self.finish_member(m, &proven, stub))
                .map(|(o, rec)| {
                    if let Some((row, change)) = rec {
                        self.owe(&owed, row, change);
                    }
                    o
                });
            finished.lock().push((facts, plan, r));
            if owed.lock().len() >= 256 {
                self.record_owed(&owed);
            }
        };
        // On threads of their own: this one runs the pack's future (`block_on`) and
        // cannot run another inside it.
        std::thread::scope(|s| {
            for _ in 0..finishers {
                s.spawn(finisher);
            }
        });
        let done = finished.into_inner();
        self.failpoint("pack-before-records");
        self.record_owed(&owed);
        // Every member recorded (lazily: the run's end syncs): the intent ends with them.
        if let Err(e) = self.catalog.end_upload(&proven.key) {
            tracing::error!("catalog: {e}");
        }
        done
    }

    /// A tar for a pack of about `planned` bytes: in memory when that is within
    /// `store.part_size` (one PUT from there; no space taken on the source, which may be
    /// full), else in an unnamed file on the source, read back part by part so that memory
    /// stays near a part per upload slot.
    pub(super) fn pack_writer(&self, planned: u64) -> Result<TarWriter, StepError> {
        Ok(if planned <= self.settings().uploads.part_size {
            TarWriter::with(TarOut::Memory(Vec::with_capacity(planned as usize)))
        } else {
            TarWriter::with(TarOut::File(self.unnamed_file()?))
        })
    }

    /// Appends `rel` (opened: `file`) to `tar` if it can be packed.
    fn read_member(
        &self,
        file: Result<File, StepError>,
        rel: &Path,
        tar: &mut TarWriter,
        algo: ChecksumAlgo,
    ) -> Result<Option<Data>, StepError> {
        let file = file?;
        let st0 = backing::stat_fd(file.as_fd())?;
        // Grown past the largest member since the scan: it gets an object of its own
        // at the next run (a pack is built in memory, and a member is never split).
        if st0.file_type() != libc::S_IFREG
            || st0.nlink != 1
            || st0.size == 0
            || st0.size > self.settings().pack.max_member_size
        {
            return Ok(None);
        }
        // A file of a tree being tiered mostly has none of coldtier's xattrs: one call
        // says so, instead of asking for each record and then the id.
        let marked = marks::present(file.as_fd()).is_none_or(marks::Present::any);
        if marked
            && (marks::record(file.as_fd(), marks::STUB)?.is_some()
                || marks::record(file.as_fd(), marks::COPY)?.is_some())
        {
            return Ok(None);
        }
        refuse_unchangeable(file.as_fd())?;
        let node = self.node_id(&st0);
        let path = rel.to_string_lossy().into_owned();
        let (id, new_id, row) = self.identity(&file, &path, st0.ino, marked)?;
        let mut entry = entry_of(&path, &id, &st0);
        let (offset, checksum, whole) = tar
            .add(&entry, &file, 0, algo)
            .map_err(|e| StepError::new(libc::EIO, format!("reading {path} into a pack: {e}")))?;
        if !whole {
            return Err(StepError::new(
                libc::EAGAIN,
                "changed while it was being copied (shorter than it was)",
            ));
        }
        entry.offset = offset;
        entry.checksum = checksum.to_string();
        Ok(Some(Data {
            path,
            file,
            node,
            st0,
            id,
            new_id,
            row,
            offset,
            checksum,
            entry,
        }))
    }

    /// Uploads the pack (`body`, `size` bytes) and its index, proves both, records the pack.
    pub(super) async fn upload_pack(
        &self,
        body: &PutBody,
        size: u64,
        members: &[&IndexMember],
        first: &FileRow,
        algo: ChecksumAlgo,
        repack_of: Option<&str>,
    ) -> Result<Proven, StepError> {
        let store = self.store()?;
        let pack_id = new_file_id().map_err(|e| StepError::new(libc::EIO, e.to_string()))?;
        let key = pack_key(PACK_PREFIX, &pack_id);
        let index_key = pack_index_key(PACK_PREFIX, &pack_id);
        let config_version = self.catalog.config_version_in_force();
        let wanted = self.configured_class();
        let archive_after = !self.store_validates() && wanted.is_archive();
        let metadata = BTreeMap::from([
            ("coldtier-pack-id".to_string(), pack_id.clone()),
            (
                "coldtier-pack-members".to_string(),
                members.len().to_string(),
            ),
            ("coldtier-pack-format".to_string(), "pax-tar".to_string()),
            (
                "coldtier-config-version".to_string(),
                config_version.to_string(),
            ),
            ("coldtier-host".to_string(), self.host.clone()),
        ]);
        let tags = BTreeMap::from([("coldtier-state".to_string(), "live".to_string())]);
        // The pack is the catalog's before it exists (its intent, under its first
        // member's path): a crash leaves an intent the next start ends with FAILED.
        self.catalog.begin_upload(&key, &pack_id, &first.path)?;
        self.failpoint("pack-after-intent");
        let fail = |msg: String, version: Option<&str>| {
            self.failed_event(first, &msg, Some((&key, version)));
            if let Err(e) = self.catalog.end_upload(&key) {
                tracing::error!("catalog: {e}");
            }
            StepError::new(libc::EIO, msg)
        };
        let put = store
            .put(PutRequest {
                key: key.clone(),
                body: body
                    .try_clone()
                    .map_err(|e| StepError::new(libc::EIO, e.to_string()))?,
                size,
                storage_class: archive_after.then_some(StorageClass::Standard),
                metadata: metadata.clone(),
                tags: tags.clone(),
                checksum: Some(algo),
                extents: None,
            })
            .await;
        let mut put = put.map_err(|e| fail(format!("PUT {}: {e}", self.full_key(&key)), None))?;
        self.failpoint("pack-after-put");
        crate::tier::metrics::migrated(size);
        let verified = self
            .verify(&key, put.version_id.as_deref(), size, &put)
            .await;
        let verified = match (verified, archive_after) {
            (Ok(_), true) => self.archive_proven(&key, size, &mut put, wanted).await,
            (v, _) => v,
        };
        let (class, how) = verified.map_err(|m| fail(m, put.version_id.as_deref()))?;
        self.tag_whole_checksum(&key, &put).await;
        // The index: STANDARD always (a rebuild reads it without a restore).
        let index =
            serde_json::to_vec_pretty(&index_json(&pack_id, &key, size, &put.checksum, members))
                .expect("json");
        let index_size = index.len() as u64;
        let iput = store
            .put(PutRequest {
                key: index_key.clone(),
                body: PutBody::Memory(index.into()),
                size: index_size,
                storage_class: Some(StorageClass::Standard),
                metadata: BTreeMap::from([("coldtier-pack-id".to_string(), pack_id.clone())]),
                tags,
                checksum: Some(algo),
                extents: None,
            })
            .await
            .map_err(|e| {
                fail(
                    format!("PUT {}: {e}", self.full_key(&index_key)),
                    put.version_id.as_deref(),
                )
            })?;
        let iverified = self
            .verify(&index_key, iput.version_id.as_deref(), index_size, &iput)
            .await;
        if let Err(m) = iverified {
            return Err(fail(m, put.version_id.as_deref()));
        }
        self.failpoint("pack-after-index");
        let row = PackRow {
            object_key: key.clone(),
            pack_id: pack_id.clone(),
            version_id: put.version_id.clone(),
            size,
            members: members.len() as u64,
            checksum_algo: put.checksum.algo.name().to_string(),
            checksum: put.checksum.base64(),
            storage_class: class.clone(),
            index_key: index_key.clone(),
            repack_of: repack_of.map(str::to_string),
        };
        let detail = json!({
            "object_key": key,
            "version_id": put.version_id,
            "bytes": size,
            "members": members.len(),
            "checksum": put.checksum.to_string(),
            "verify": how,
            "storage_class": class,
            "index_key": index_key,
            "parts": put.parts,
            "repack_of": repack_of,
        });
        let catalog = self.catalog.clone();
        let r2 = row.clone();
        tokio::task::spawn_blocking(move || catalog.record_pack(&r2, detail))
            .await
            .map_err(|e| StepError::new(libc::EIO, format!("catalog task: {e}")))??;
        self.failpoint("pack-after-record");
        // policy.copies: the whole pack to the replicas, from the local copy.
        let obj = ObjectRef {
            file_id: pack_id.clone(),
            path: first.path.clone(),
            object_key: key.clone(),
            version_id: put.version_id.clone(),
            file_size: size,
            checksum_algo: row.checksum_algo.clone(),
            checksum: row.checksum.clone(),
        };
        if let Err(e) = self.copy_pack_to_replicas(body, &obj, algo, metadata).await {
            // Its members stay premigrated (their stub refuses without the copies).
            tracing::error!(key = %self.full_key(&key), "policy.copies: {}", e.message);
        }
        Ok(Proven {
            pack_id,
            key,
            version_id: put.version_id,
            size,
            class,
            how,
            algo,
            config_version,
        })
    }

    /// A member of a proven pack: its copy record (if unchanged), its stub, and the
    /// catalog records it owes (written by the caller with the other members').
    async fn finish_member(
        &self,
        m: Member,
        p: &Proven,
        stub: bool,
    ) -> Result<(Outcome, Option<(FileRow, Change)>), StepError> {
        let Data {
            path,
            file,
            node,
            st0,
            id,
            new_id,
            mut row,
            offset,
            checksum,
            ..
        } = m.d;
        let rec = StubRecord {
            version: STUB_VERSION,
            file_id: id.clone(),
            object_key: p.key.clone(),
            version_id: p.version_id.clone(),
            size: st0.size,
            mtime_ns: ns_of(st0.mtime),
            ctime_ns: ns_of(st0.ctime),
            ino: st0.ino,
            checksum_algo: p.algo.name().to_string(),
            checksum: checksum.base64(),
            md5: None,
            storage_class: p.class.clone(),
            config_version: p.config_version,
            content_mtime_ns: None,
            extents: None,
            chunks: None,
            pack: Some(PackRef {
                id: p.pack_id.clone(),
                offset,
                pack_size: p.size,
            }),
        };
        row.size = st0.size;
        row.mtime_ns = ns_of(st0.mtime);
        row.ctime_ns = ns_of(st0.ctime);
        row.ino = st0.ino;
        self.claim_path(&id, &path);
        let copied = (
            row.clone(),
            EventKind::Copied,
            json!({
                "object_key": p.key,
                "version_id": p.version_id,
                "bytes": st0.size,
                "checksum": checksum.to_string(),
                "pack_id": p.pack_id,
                "offset": offset,
            }),
        );
        let direct = self.stubs_directly(stub, new_id);
        let Some(ctime) = self.set_copy_record(node, &file, (&st0, new_id), &rec, direct)? else {
            let msg = "changed while it was being copied (its bytes in the pack are not used)"
                .to_string();
            self.failed_event(&row, &msg, Some((&p.key, p.version_id.as_deref())));
            return Err(StepError::new(libc::EAGAIN, msg));
        };
        fill_from_record(&mut row, &rec);
        row.ctime_ns = ctime;
        row.state = crate::tier::state::transition(row.state, row.pinned, Action::CopyVerified)
            .ok()
            .and_then(|t| t.next)
            .unwrap_or(FileState::Premigrated);
        let verified = json!({
            "object_key": p.key,
            "version_id": p.version_id,
            "checksum": checksum.to_string(),
            "verify": p.how,
            "storage_class": p.class,
            "pack_id": p.pack_id,
        });
        let expect = (row.size, row.mtime_ns, row.ctime_ns);
        let items = vec![copied, (row, EventKind::Verified, verified)];
        if !stub {
            return Ok((
                Outcome::Copied,
                Some((row_of(&items), Change::none().after(items))),
            ));
        }
        // Straight to the stub or not was decided with the copy (`direct`): a reload that
        // raises policy.copies meanwhile counts from the next pack on.
        if !direct {
            if let Err(e) = self.ensure_copies(&file, &rec, &path).await {
                self.catalog.transition_batch_with(&items, false)?;
                return Err(e);
            }
        }
        self.stub_step_owing(node, &file, &rec, expect, Action::Stub, (items, direct))
    }
}

/// The row of the last of `items` (a file's transitions): what a change made only of
/// them is recorded against.
fn row_of(items: &[Transition]) -> FileRow {
    items.last().expect("a member's copy records").0.clone()
}

impl Proven {
    /// A pack the catalog has (its row), as a target to switch members to.
    pub(super) fn of_row(row: &PackRow, config_version: i64) -> Option<Proven> {
        Some(Proven {
            pack_id: row.pack_id.clone(),
            key: row.object_key.clone(),
            version_id: row.version_id.clone(),
            size: row.size,
            class: row.storage_class.clone(),
            how: "recorded",
            algo: row.checksum_algo.parse().ok()?,
            config_version,
        })
    }
}

/// A pack uploaded, proven and recorded.
pub(super) struct Proven {
    pub(super) pack_id: String,
    pub(super) key: String,
    pub(super) version_id: Option<String>,
    pub(super) size: u64,
    pub(super) class: String,
    how: &'static str,
    algo: ChecksumAlgo,
    config_version: i64,
}

/// The bytes `[start, end)` of one version of a pack, fetched once for the many members a
/// bulk recall wants ([`Tiering::prefetch_packs`]), or read ahead for a member's reader.
pub struct PackSpan {
    data: SpanData,
    start: u64,
    end: u64,
    /// A bulk recall's span: the members still to take their bytes from it. The last one
    /// lets the span go (its memory), not the end of the whole recall. 0: not counted.
    left: std::sync::atomic::AtomicU64,
}

/// Where a span's bytes are.
enum SpanData {
    /// A file holding them at 0.
    File(File),
    /// In memory, as the store handed them over: (offset in the span, chunk), in order.
    /// No copy between the network and the members (a span up to [`MAX_MEMORY_SPAN`]).
    Memory(parking_lot::Mutex<Vec<(u64, bytes::Bytes)>>),
}

impl PackSpan {
    /// Bytes `[at, at + len)` of the span (offsets in the span): slices of its chunks, or
    /// read from its file. None if they are not all there.
    fn bytes(&self, at: u64, len: u64) -> std::io::Result<Option<Vec<bytes::Bytes>>> {
        match &self.data {
            SpanData::File(f) => {
                use std::os::unix::fs::FileExt;
                let mut v = vec![0u8; len as usize];
                f.read_exact_at(&mut v, at)?;
                Ok(Some(vec![bytes::Bytes::from(v)]))
            }
            SpanData::Memory(chunks) => {
                let chunks = chunks.lock();
                // The last chunk that starts at or before `at`, and on from it.
                let first = chunks.partition_point(|(o, _)| *o <= at).saturating_sub(1);
                let mut out = Vec::new();
                let mut have = 0u64;
                for (o, c) in &chunks[first..] {
                    let (lo, hi) = (at + have, at + len);
                    if have == len || *o > lo {
                        break;
                    }
                    let from = (lo - o) as usize;
                    let to = ((hi - o) as usize).min(c.len());
                    if from >= to {
                        continue;
                    }
                    out.push(c.slice(from..to));
                    have += (to - from) as u64;
                }
                Ok((have == len).then_some(out))
            }
        }
    }
}

/// A pack's key and version id.
pub type PackVersion = (String, Option<String>);

/// A pack span a bulk recall wants: being fetched, fetched, or not to be had (its members
/// fetch their own ranges).
#[derive(Clone)]
pub enum SpanState {
    /// Coming: the span's file holds its bytes below the offset (in the file) the
    /// receiver tells, written in order as they arrive.
    Pending(std::sync::Arc<PackSpan>, tokio::sync::watch::Receiver<u64>),
    Ready(std::sync::Arc<PackSpan>),
    Failed,
}

/// Pack spans of bulk recalls, by pack version; dropped with the [`PackLease`] that
/// asked for them.
pub type PackCache = parking_lot::Mutex<
    std::collections::HashMap<PackVersion, tokio::sync::watch::Receiver<SpanState>>,
>;

/// The spans a bulk recall fetched: forgotten when it is dropped.
pub struct PackLease<'a> {
    t: &'a Tiering,
    keys: Vec<PackVersion>,
    wave: usize,
}

impl PackLease<'_> {
    /// How many of its spans are fetched side by side: the slots over the most a span
    /// takes (spans of up to a part: [`Tiering::span_concurrency`]).
    pub fn wave(&self) -> usize {
        self.wave
    }
}

impl Drop for PackLease<'_> {
    fn drop(&mut self) {
        let mut c = self.t.pack_spans.lock();
        for k in &self.keys {
            c.remove(k);
        }
    }
}

/// The most bytes a bulk recall fetches of one pack at once.
const MAX_SPAN: u64 = 1 << 30;
/// Spans up to this size are kept in memory; larger ones in an unnamed file of the
/// backing filesystem.
const MAX_MEMORY_SPAN: u64 = 64 << 20;
/// The members waiting on a span in memory hear of its progress this often (each
/// telling wakes every one of them).
const SPAN_PROGRESS: u64 = 1 << 20;

impl Tiering {
    /// Before a bulk recall of `members` (records of stubs): the packs two or more of them
    /// are members of are fetched once each, as one GET of the span that covers those
    /// members, in the background ([`Tiering::span_concurrency`] at once); the members' recalls wait
    /// for their pack's span and copy their bytes from it (each still checked against its
    /// own checksum), so that the first packs' members are recalled while the others
    /// arrive. A pack whose GET fails is left out: its members fetch their own ranges.
    pub fn prefetch_packs(&self, members: &[StubRecord]) -> PackLease<'_> {
        let mut lease = PackLease {
            t: self,
            keys: Vec::new(),
            wave: self.span_concurrency(),
        };
        // (first offset, end, members, pack size) of each pack version, in the order the
        // members come (the order they are recalled in).
        let mut groups: Vec<(PackVersion, (u64, u64, u64, u64))> = Vec::new();
        let mut at: std::collections::HashMap<PackVersion, usize> = Default::default();
        for r in members {
            let Some(p) = &r.pack else { continue };
            let k = (r.object_key.clone(), r.version_id.clone());
            let i = *at.entry(k.clone()).or_insert_with(|| {
                groups.push((k, (u64::MAX, 0, 0, p.pack_size)));
                groups.len() - 1
            });
            let g = &mut groups[i].1;
            g.0 = g.0.min(p.offset);
            g.1 = g.1.max(p.offset + r.size);
            g.2 += 1;
        }
        let Ok(store) = self.store() else {
            return lease;
        };
        // In part-size slots, as a policy run's uploads: a span takes one per part it
        // spans, so the spans in flight hold about as much as the packs a run builds.
        let slots = self.span_concurrency();
        let part = self.settings().uploads.part_size.max(1);
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(slots));
        let need_of = |start: u64, end: u64| (end - start).div_ceil(part).clamp(1, slots as u64);
        for ((key, version), (start, end, n, pack_size)) in groups {
            if n < 2 || end - start > MAX_SPAN {
                continue;
            }
            let need = need_of(start, end);
            lease.wave = lease.wave.min((slots as u64 / need).max(1) as usize);
            let data = if end - start <= MAX_MEMORY_SPAN {
                SpanData::Memory(Default::default())
            } else {
                match self.unnamed_file() {
                    Ok(f) => SpanData::File(f),
                    Err(_) => break,
                }
            };
            let span = std::sync::Arc::new(PackSpan {
                data,
                start,
                end,
                left: n.into(),
            });
            let (upto, upto_rx) = tokio::sync::watch::channel(0u64);
            let (tx, rx) = tokio::sync::watch::channel(SpanState::Pending(span.clone(), upto_rx));
            let k = (key.clone(), version.clone());
            self.pack_spans.lock().insert(k.clone(), rx);
            lease.keys.push(k);
            let (store, sem, me) = (store.clone(), sem.clone(), self.arc());
            self.rt.spawn(async move {
                let _permit = sem.acquire_many_owned(need as u32).await;
                // Nobody waits any more (the bulk recall ended early): nothing to fetch.
                if tx.is_closed() {
                    return;
                }
                let got = match &span.data {
                    SpanData::File(file) => store
                        .get(crate::store::GetRequest {
                            key: &key,
                            version_id: version.as_deref(),
                            dest: Some(file),
                            expected_size: pack_size,
                            checksum: ChecksumAlgo::Crc32c,
                            extents: None,
                            range: (end - start != pack_size).then_some((start, end - start)),
                            dest_base: start,
                            progress: Some(&upto),
                        })
                        .await
                        .map(drop),
                    SpanData::Memory(chunks) => {
                        // The members waiting are told every SPAN_PROGRESS bytes (and at
                        // the end), not at every chunk.
                        let told = std::sync::atomic::AtomicU64::new(0);
                        let sink = |b: bytes::Bytes| {
                            let total = {
                                let mut c = chunks.lock();
                                let at = c.last().map_or(0, |(o, b)| o + b.len() as u64);
                                let n = b.len() as u64;
                                c.push((at, b));
                                at + n
                            };
                            let last = told.load(std::sync::atomic::Ordering::Relaxed);
                            if total - last >= SPAN_PROGRESS || total == end - start {
                                told.store(total, std::sync::atomic::Ordering::Relaxed);
                                upto.send_replace(total);
                            }
                        };
                        store
                            .get_range_chunks(
                                &key,
                                version.as_deref(),
                                pack_size,
                                (start, end - start),
                                &sink,
                            )
                            .await
                    }
                };
                drop(upto);
                let state = match got {
                    Ok(_) => SpanState::Ready(span),
                    Err(e) => {
                        tracing::warn!(key = %me.full_key(&key), "prefetch of a pack for a bulk recall: {e}");
                        SpanState::Failed
                    }
                };
                let _ = tx.send(state);
            });
        }
        lease
    }

    /// The pack spans [`Tiering::prefetch_packs`] fetches at once, in the order their
    /// members first come: 4 x `store.concurrency` spans of up to a part each (a larger
    /// one counts as one per part), the packs a policy run builds at once. With one
    /// wave of 4 instead, 2,000 x 64 KiB in 9 packs on s3s-fs took 0.65 s against 0.59 s
    /// (means of five; the server spent more CPU on fewer streams: docs/benchmarks.md).
    pub fn span_concurrency(&self) -> usize {
        super::migrate::run_slots(&self.settings().uploads)
    }

    /// Waits until the span a bulk recall is fetching of `rec`'s pack (if any) holds
    /// `rec`'s bytes (they come in order: the first members need not wait for the rest),
    /// is all there, or has failed.
    pub(super) async fn span_fetched(&self, rec: &StubRecord) {
        let k = (rec.object_key.clone(), rec.version_id.clone());
        let Some(mut rx) = self.pack_spans.lock().get(&k).cloned() else {
            return;
        };
        let pending = match &*rx.borrow() {
            SpanState::Pending(span, upto) => Some((span.clone(), upto.clone())),
            _ => None,
        };
        if let Some((span, mut upto)) = pending {
            if let Some(need) = span_need(&span, rec) {
                // The span's fetch drops its sender when it ends (either way).
                if upto.wait_for(|v| *v >= need).await.is_ok() {
                    return;
                }
            }
        }
        let _ = rx.wait_for(|s| !matches!(s, SpanState::Pending(..))).await;
    }

    /// A member's bytes from a pack span a bulk recall fetched, into `dest` at 0, hashed:
    /// None if no span holds them.
    pub(super) fn member_from_span(
        &self,
        rec: &StubRecord,
        dest: &File,
        algo: ChecksumAlgo,
    ) -> Option<Result<crate::store::GetResult, crate::store::StoreError>> {
        let p = rec.pack.as_ref()?;
        let k = (rec.object_key.clone(), rec.version_id.clone());
        let covers = |s: &PackSpan| p.offset >= s.start && p.offset + rec.size <= s.end;
        let bulk = self
            .pack_spans
            .lock()
            .get(&k)
            .and_then(|rx| match &*rx.borrow() {
                SpanState::Ready(s) if covers(s) => Some(s.clone()),
                SpanState::Pending(s, upto)
                    if span_need(s, rec).is_some_and(|need| *upto.borrow() >= need) =>
                {
                    Some(s.clone())
                }
                _ => None,
            });
        let from_bulk = bulk.is_some();
        let span = match bulk {
            Some(s) => s,
            None => {
                let ra = self.pack_readahead.lock();
                ra.iter()
                    .rev()
                    .find(|(key, s, at)| *key == k && at.elapsed() < READAHEAD_KEEP && covers(s))
                    .map(|(_, s, _)| s.clone())?
            }
        };
        let io =
            |e: std::io::Error| crate::store::StoreError::io("a member from its pack's span", &e);
        // A MiB at a time from a span's file; a span in memory in one go (its chunks).
        let step = match span.data {
            SpanData::File(_) => 1 << 20,
            SpanData::Memory(_) => rec.size.max(1),
        };
        let mut h = Hasher::new(algo);
        let mut off = 0u64;
        while off < rec.size {
            let n = step.min(rec.size - off);
            let parts = match span.bytes(p.offset - span.start + off, n) {
                Ok(Some(parts)) => parts,
                Ok(None) => return None,
                Err(e) => return Some(Err(io(e))),
            };
            for b in &parts {
                h.update(b);
            }
            if let Err(e) = crate::store::pwritev_all(dest, &parts, off) {
                return Some(Err(e));
            }
            off += n;
        }
        // The span's last member done: its bytes go (a bulk recall of many packs holds the
        // spans of those it is working on, not of every pack it has recalled from).
        if from_bulk && span.left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let mut spans = self.pack_spans.lock();
            let same = spans.get(&k).is_some_and(|rx| match &*rx.borrow() {
                SpanState::Ready(s) | SpanState::Pending(s, _) => std::sync::Arc::ptr_eq(s, &span),
                _ => false,
            });
            if same {
                spans.remove(&k);
            }
        }
        Some(Ok(crate::store::GetResult {
            bytes: rec.size,
            checksum: h.finalize(),
            version_id: rec.version_id.clone(),
        }))
    }
}

/// The offset in `span`'s file below which `rec`'s bytes are: None if the span does not
/// hold them.
fn span_need(span: &PackSpan, rec: &StubRecord) -> Option<u64> {
    let p = rec.pack.as_ref()?;
    (p.offset >= span.start && p.offset + rec.size <= span.end)
        .then(|| p.offset - span.start + rec.size)
}

/// A member's first read fetches this much of its pack from its offset on (at least the
/// member): the members after it, read next by `cat *`, `cp -r`, a backup or a scanner
/// going through a directory in order, are then served from it ...
pub const READAHEAD: u64 = 1 << 20;
/// ... and a read just past the end of such a span (the reader goes on in order) fetches
/// twice as much as that span held, up to this (as the kernel's read-ahead grows on a
/// sequential reader): a pack read in order costs a few GETs, not one per MiB ...
pub const MAX_READAHEAD: u64 = 8 << 20;
/// ... kept for this long, at most this many spans and this many bytes (in memory).
const READAHEAD_KEEP: std::time::Duration = std::time::Duration::from_secs(30);
const READAHEAD_SPANS: usize = 16;
const READAHEAD_BYTES: u64 = 64 << 20;

/// Spans read ahead for members' recalls: (pack version, span, when fetched), oldest
/// first.
pub type Readahead = parking_lot::Mutex<ReadaheadSpans>;

/// The spans of [`Readahead`].
pub type ReadaheadSpans =
    std::collections::VecDeque<(PackVersion, std::sync::Arc<PackSpan>, std::time::Instant)>;

impl Tiering {
    /// A member's recall without a span that holds it: one ranged GET (of `store`,
    /// version `version_id`) of its bytes and, while the pack has more, of up to
    /// [`READAHEAD`] bytes from its offset, kept in memory for the members after it; its
    /// bytes into `dest`, hashed. None: not a member, or the GET is only its own (the
    /// caller asks for it).
    pub(super) async fn member_read_ahead(
        &self,
        store: &dyn crate::store::ObjectStore,
        version_id: Option<&str>,
        rec: &StubRecord,
        dest: &File,
        algo: ChecksumAlgo,
    ) -> Option<Result<crate::store::GetResult, crate::store::StoreError>> {
        let p = rec.pack.as_ref()?;
        // The primary's version only (a replica's spans would be keyed by another).
        if version_id != rec.version_id.as_deref() {
            return None;
        }
        let key = (rec.object_key.clone(), rec.version_id.clone());
        let want = self.readahead_for(&key, p.offset);
        let end = p.pack_size.min(p.offset + rec.size.max(want));
        if end - p.offset <= rec.size {
            return None;
        }
        let file = super::readers::anon_file(c"coldtier-readahead").ok()?;
        let got = store
            .get(crate::store::GetRequest {
                key: &rec.object_key,
                version_id,
                dest: Some(&file),
                expected_size: p.pack_size,
                checksum: ChecksumAlgo::Crc32c,
                extents: None,
                range: Some((p.offset, end - p.offset)),
                dest_base: p.offset,
                progress: None,
            })
            .await;
        if let Err(e) = got {
            return Some(Err(e));
        }
        {
            let mut ra = self.pack_readahead.lock();
            ra.retain(|(_, _, at)| at.elapsed() < READAHEAD_KEEP);
            let bytes =
                |ra: &ReadaheadSpans| ra.iter().map(|(_, s, _)| s.end - s.start).sum::<u64>();
            while !ra.is_empty()
                && (ra.len() >= READAHEAD_SPANS || bytes(&ra) + (end - p.offset) > READAHEAD_BYTES)
            {
                ra.pop_front();
            }
            ra.push_back((
                key,
                std::sync::Arc::new(PackSpan {
                    data: SpanData::File(file),
                    start: p.offset,
                    end,
                    left: 0.into(),
                }),
                std::time::Instant::now(),
            ));
        }
        self.member_from_span(rec, dest, algo)
    }

    /// How much of pack version `key` a member's read at `offset` fetches ahead:
    /// [`READAHEAD`], or twice the span before it when the member goes on from that span
    /// (it starts inside the span and ends past it, or starts at most [`READAHEAD`] after
    /// its end), up to [`MAX_READAHEAD`].
    fn readahead_for(&self, key: &PackVersion, offset: u64) -> u64 {
        let ra = self.pack_readahead.lock();
        ra.iter()
            .rev()
            .filter(|(k, s, at)| {
                k == key
                    && at.elapsed() < READAHEAD_KEEP
                    && s.start <= offset
                    && offset <= s.end + READAHEAD
            })
            .map(|(_, s, _)| ((s.end - s.start) * 2).min(MAX_READAHEAD))
            .next()
            .unwrap_or(READAHEAD)
    }
}

impl Tiering {
    /// Forgets every span held of `key` (a read of it failed or did not match: a replica
    /// is read next, never these bytes again).
    pub(super) fn forget_pack_spans(&self, key: &str) {
        self.pack_spans.lock().retain(|(k, _), _| k != key);
        self.pack_readahead.lock().retain(|((k, _), _, _)| k != key);
    }
}

/// The longest index object read (about 40 MB holds the index of a pack of the most
/// members `pack.max_files` allows, with long paths).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// A pack's member index, as read from the bucket (untrusted until [`parse_index`] has
/// checked it).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackIndex {
    pub format: String,
    pub version: u64,
    pub pack_id: String,
    pub object_key: String,
    pub size: u64,
    pub checksum: String,
    pub members: Vec<IndexMember>,
}

/// One member in a [`PackIndex`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IndexMember {
    pub path: String,
    pub file_id: String,
    pub offset: u64,
    pub size: u64,
    pub checksum: String,
    pub mtime_ns: i64,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
}

/// Parses and checks the index of pack `pack_id` (`key`, `pack_size` bytes as the store
/// says): its format and version, its id, key and size, a checksum of a known form, and
/// every member: a file id, a path that stays inside SOURCE, a range inside the pack
/// (ranges in order, not overlapping), a checksum, a mode. Anything else: rejected with
/// the reason.
pub fn parse_index(
    bytes: &[u8],
    pack_id: &str,
    key: &str,
    pack_size: u64,
) -> Result<PackIndex, String> {
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(format!("{} bytes: larger than any index", bytes.len()));
    }
    let ix: PackIndex = serde_json::from_slice(bytes).map_err(|e| format!("not an index: {e}"))?;
    if ix.format != INDEX_FORMAT || ix.version != INDEX_VERSION {
        return Err(format!(
            "format {} version {} is not {INDEX_FORMAT} {INDEX_VERSION}",
            ix.format.escape_debug(),
            ix.version
        ));
    }
    if ix.pack_id != pack_id || ix.object_key != key {
        return Err(format!(
            "it names pack {} ({}), not {pack_id}",
            ix.pack_id.escape_debug(),
            ix.object_key.escape_debug()
        ));
    }
    if ix.size != pack_size {
        return Err(format!(
            "it says {} bytes, the pack is {pack_size}",
            ix.size
        ));
    }
    Checksum::parse(&ix.checksum).map_err(|e| format!("its checksum: {e}"))?;
    let mut end = 0u64;
    for m in &ix.members {
        let what = || format!("member {}", m.path.escape_debug());
        check_member_path(&m.path).map_err(|e| format!("{}: path {e}", what()))?;
        if !crate::tier::stub::is_valid_file_id(&m.file_id) {
            return Err(format!("{}: file id is not 32 hex digits", what()));
        }
        if m.size == 0
            || m.offset < end
            || m.offset.checked_add(m.size).is_none_or(|e| e > pack_size)
        {
            return Err(format!(
                "{}: {}+{} is not a range of its own inside the pack",
                what(),
                m.offset,
                m.size
            ));
        }
        end = m.offset + m.size;
        let c = Checksum::parse(&m.checksum).map_err(|e| format!("{}: {e}", what()))?;
        if c.algo.name().is_empty() {
            return Err(format!("{}: checksum", what()));
        }
        if u32::from_str_radix(&m.mode, 8).is_err() {
            return Err(format!("{}: mode is not octal", what()));
        }
    }
    Ok(ix)
}

/// Reads the index object of pack `pack_id` (at `pack_key`, `pack_size` bytes) from
/// `store` and checks it ([`parse_index`]).
pub async fn fetch_index(
    store: &dyn crate::store::ObjectStore,
    pack_key: &str,
    pack_id: &str,
    pack_size: u64,
) -> Result<PackIndex, String> {
    let (prefix, _) = crate::tier::stub::parse_pack_key(pack_key).ok_or("not a pack key")?;
    let key = pack_index_key(prefix, pack_id);
    let meta = store
        .head(&key, None)
        .await
        .map_err(|e| format!("HEAD {key}: {e}"))?;
    if meta.size > MAX_INDEX_BYTES {
        return Err(format!("{key}: {} bytes: larger than any index", meta.size));
    }
    let f = super::readers::anon_file(c"coldtier-index").map_err(|e| format!("memfd: {e}"))?;
    let algo = meta
        .checksum
        .as_ref()
        .map_or(ChecksumAlgo::Crc32c, |c| c.algo);
    store
        .get(crate::store::GetRequest::whole(
            &key,
            None,
            Some(&f),
            meta.size,
            algo,
        ))
        .await
        .map_err(|e| format!("GET {key}: {e}"))?;
    let mut bytes = vec![0u8; meta.size as usize];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut bytes, 0)
        .map_err(|e| format!("{key}: {e}"))?;
    parse_index(&bytes, pack_id, pack_key, pack_size).map_err(|e| format!("{key}: {e}"))
}

/// A member's path in an index: relative, inside SOURCE, no NUL. Unlike object metadata
/// (HTTP headers), an index holds any other character a file name may have: a macOS
/// `Icon\r` on an SMB share is a file like any other.
fn check_member_path(p: &str) -> Result<(), String> {
    if p.contains('\0') {
        return Err(format!("`{}` has a NUL", p.escape_debug()));
    }
    crate::tier::rebuild::check_meta_path(&p.replace(|c: char| c.is_control(), "?"))
}

/// Whether index member `m` is the member record `rec` describes.
pub fn member_matches(m: &IndexMember, rec: &StubRecord) -> Result<(), String> {
    let p = rec.pack.as_ref().ok_or("not a pack member")?;
    let want = format!("{}:{}", rec.checksum_algo, rec.checksum);
    if m.file_id != rec.file_id {
        return Err(format!(
            "the index says file {}, the stub {}",
            m.file_id, rec.file_id
        ));
    }
    if (m.offset, m.size) != (p.offset, rec.size) {
        return Err(format!(
            "the index has it at {}+{}, the stub at {}+{}",
            m.offset, m.size, p.offset, rec.size
        ));
    }
    if m.checksum != want {
        return Err(format!(
            "the index says checksum {}, the stub {want}",
            m.checksum
        ));
    }
    if m.mtime_ns != rec.content_mtime() {
        return Err(format!(
            "the index says mtime {}, the stub {}",
            m.mtime_ns,
            rec.content_mtime()
        ));
    }
    Ok(())
}

/// Splits the files a run selected into packs (of at most `target` bytes of footprint and
/// `max_files` files, in the order given) and the rest.
pub fn plan_packs(
    selected: Vec<Selected>,
    cfg: &super::config::PackConfig,
) -> (Vec<Vec<Selected>>, Vec<Selected>) {
    let mut packs: Vec<Vec<Selected>> = Vec::new();
    let mut rest = Vec::new();
    let (mut cur, mut bytes) = (Vec::new(), 0u64);
    for (f, plan) in selected {
        let packable =
            cfg.enabled && plan != Plan::Stub && f.size > 0 && f.size <= cfg.max_member_size;
        if !packable {
            rest.push((f, plan));
            continue;
        }
        let fp = member_footprint(f.size);
        if !cur.is_empty() && (bytes + fp > cfg.target_size || cur.len() as u64 >= cfg.max_files) {
            packs.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += fp;
        cur.push((f, plan));
    }
    if !cur.is_empty() {
        packs.push(cur);
    }
    (packs, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime of two workers, as the daemon's.
    fn test_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A test pack of 3,000 bytes.
    fn test_pack() -> Vec<u8> {
        (0..3000u32).map(|i| (i % 251) as u8).collect()
    }

    /// Puts `pack` as `key` into `store`: its version.
    fn put_pack(
        rt: &tokio::runtime::Runtime,
        store: &crate::store::memory::MemoryStore,
        key: &str,
        pack: &[u8],
    ) -> Option<String> {
        use crate::store::ObjectStore;
        rt.block_on(store.put(PutRequest {
            key: key.into(),
            body: PutBody::Memory(bytes::Bytes::copy_from_slice(pack)),
            size: pack.len() as u64,
            storage_class: None,
            metadata: BTreeMap::new(),
            tags: BTreeMap::new(),
            checksum: Some(ChecksumAlgo::Crc32c),
            extents: None,
        }))
        .unwrap()
        .version_id
    }

    /// The stub record of the member of `pack` (object `key`, version `version_id`) at
    /// `offset`, `size` bytes long, with file id `id`.
    fn member_of(
        (key, version_id, pack): (&str, &Option<String>, &[u8]),
        id: String,
        offset: u64,
        size: u64,
    ) -> StubRecord {
        StubRecord {
            version: STUB_VERSION,
            file_id: id,
            object_key: key.into(),
            version_id: version_id.clone(),
            size,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: offset,
            checksum_algo: "crc32c".into(),
            checksum: Checksum::of(
                ChecksumAlgo::Crc32c,
                &pack[offset as usize..(offset + size) as usize],
            )
            .base64(),
            md5: None,
            storage_class: "STANDARD".into(),
            config_version: 1,
            content_mtime_ns: None,
            extents: None,
            chunks: None,
            pack: Some(crate::tier::stub::PackRef {
                id: key.into(),
                offset,
                pack_size: pack.len() as u64,
            }),
        }
    }

    /// A bulk recall's span lets go of its bytes when its last member has copied them out,
    /// not when the recall ends; each member gets its own bytes.
    #[test]
    fn a_span_goes_once_its_last_member_has_its_bytes() {
        use crate::store::ObjectStore;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let rt = test_runtime();
        let store = Arc::new(crate::store::memory::MemoryStore::new());
        let pack = test_pack();
        let version = put_pack(&rt, &store, "packs/p.tar", &pack);
        let store: Arc<dyn ObjectStore> = store;
        let t = super::super::context::test_tiering(dir.path(), Some(store), &rt);
        let member = |offset: u64, size: u64| {
            member_of(
                ("packs/p.tar", &version, &pack),
                format!("{offset:032x}"),
                offset,
                size,
            )
        };
        let members = [member(512, 700), member(1536, 900), member(2560, 300)];
        let lease = t.prefetch_packs(&members);
        let k = ("packs/p.tar".to_string(), version.clone());
        for (i, m) in members.iter().enumerate() {
            rt.block_on(t.span_fetched(m));
            assert!(
                t.pack_spans.lock().contains_key(&k),
                "member {i}: the span is there until its last member has its bytes"
            );
            let dest = tempfile::tempfile().unwrap();
            let got = t
                .member_from_span(m, &dest, ChecksumAlgo::Crc32c)
                .expect("the span holds the member")
                .unwrap();
            assert_eq!(got.checksum.base64(), m.checksum, "member {i}");
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut &dest, &mut back).unwrap();
            let off = m.pack.as_ref().unwrap().offset as usize;
            assert_eq!(back, &pack[off..off + m.size as usize], "member {i}");
        }
        assert!(
            !t.pack_spans.lock().contains_key(&k),
            "the last member let the span go"
        );
        drop(lease);
    }

    /// A bulk recall fetches its packs' spans in the policy run's slots: 4 x
    /// `store.concurrency` spans of up to a part at once, a span of more than a part taking
    /// one slot per part. Six packs, the GETs held at the store: as many spans as fit go at
    /// once (4; 2 when each span is two parts), never more, and all of them arrive; the
    /// lease says so (the bulk recall orders its members by that wave).
    #[test]
    fn pack_spans_are_fetched_in_part_sized_slots() {
        use crate::store::ObjectStore;
        use std::sync::atomic::Ordering::SeqCst;
        use std::sync::Arc;
        for (part, most) in [(1u64 << 20, 4u64), (1000, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let rt = test_runtime();
            let mem = Arc::new(crate::store::memory::MemoryStore::new());
            let pack = test_pack();
            let mut members = Vec::new();
            for p in 0..6 {
                let key = format!("packs/p{p}.tar");
                let version = put_pack(&rt, &mem, &key, &pack);
                // Two members: a span from 512 to 2436, 1924 bytes.
                for (offset, size) in [(512u64, 700u64), (1536, 900)] {
                    let id = format!("{p:016x}{offset:016x}");
                    members.push(member_of((&key, &version, &pack), id, offset, size));
                }
            }
            let store: Arc<dyn ObjectStore> = mem.clone();
            let t = super::super::context::test_tiering(dir.path(), Some(store), &rt);
            let mut settings = (*t.settings()).clone();
            settings.uploads.concurrency = 1;
            settings.uploads.part_size = part;
            t.set_settings(settings);
            assert_eq!(t.span_concurrency(), 4);
            let gate = mem.hold_gets();
            let lease = t.prefetch_packs(&members);
            assert_eq!(
                lease.wave() as u64,
                most,
                "part {part}: the packs fetched side by side"
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while mem.gets_in_flight.load(SeqCst) < most {
                assert!(
                    std::time::Instant::now() < deadline,
                    "part {part}: the spans never went"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            gate.add_permits(1000);
            for m in &members {
                rt.block_on(t.span_fetched(m));
                let dest = tempfile::tempfile().unwrap();
                let got = t
                    .member_from_span(m, &dest, ChecksumAlgo::Crc32c)
                    .expect("the span holds the member")
                    .unwrap();
                assert_eq!(got.checksum.base64(), m.checksum);
            }
            assert_eq!(mem.gets_in_flight_max.load(SeqCst), most, "part {part}");
            assert_eq!(mem.gets_in_flight.load(SeqCst), 0);
            drop(lease);
        }
    }

    /// A span in memory gives any range of its bytes from the chunks that hold it (within
    /// one chunk, across several, on their edges), and nothing for bytes not yet there.
    #[test]
    fn a_span_in_memory_gives_its_ranges_from_its_chunks() {
        let whole: Vec<u8> = (0..40u8).collect();
        let mut chunks = Vec::new();
        let mut at = 0usize;
        for n in [3usize, 5, 1, 10, 7] {
            chunks.push((at as u64, bytes::Bytes::copy_from_slice(&whole[at..at + n])));
            at += n;
        }
        let span = PackSpan {
            data: SpanData::Memory(parking_lot::Mutex::new(chunks)),
            start: 100,
            end: 140,
            left: 0.into(),
        };
        for lo in 0..=at {
            for hi in lo..=at {
                let parts = span.bytes(lo as u64, (hi - lo) as u64).unwrap();
                let got: Vec<u8> = parts
                    .unwrap_or_else(|| panic!("{lo}..{hi}"))
                    .iter()
                    .flat_map(|b| b.iter().copied())
                    .collect();
                assert_eq!(got, whole[lo..hi], "{lo}..{hi}");
            }
        }
        // Past what has come (26 bytes of 40): not there.
        assert!(span.bytes(20, 7).unwrap().is_none());
        assert!(span.bytes(26, 1).unwrap().is_none());
    }

    fn facts(name: &str, size: u64) -> Selected {
        let t = std::time::UNIX_EPOCH;
        let f = FileFacts {
            rel_path: name.into(),
            size,
            atime: t,
            mtime: t,
            ctime: t,
            state: crate::catalog::FileState::Resident,
            pinned: false,
            is_regular: true,
            nlink: 1,
        };
        (f, Plan::CopyThenStub)
    }

    #[test]
    fn packs_fill_to_their_target_and_count_and_leave_large_and_premigrated_files_alone() {
        let cfg = super::super::config::PackConfig {
            enabled: true,
            max_member_size: 1000,
            target_size: 3 * member_footprint(1000),
            max_files: 4,
            repack_below: 0.5,
        };
        let mut sel: Vec<Selected> = (0..7).map(|i| facts(&format!("s{i}"), 1000)).collect();
        sel.push(facts("big", 1001));
        sel.push(facts("empty", 0));
        let mut pre = facts("pre", 10);
        pre.1 = Plan::Stub;
        sel.push(pre);
        let tiny: Vec<Selected> = (0..6).map(|i| facts(&format!("t{i}"), 1)).collect();
        sel.extend(tiny);
        let (packs, rest) = plan_packs(sel, &cfg);
        let sizes: Vec<usize> = packs.iter().map(Vec::len).collect();
        // 7 of 1000 bytes: 3 + 3 + 1, the last then filled with tiny ones up to the target
        // (a member's footprint counts its headers and padding).
        assert_eq!(sizes, [3, 3, 3, 3, 1]);
        let names: Vec<String> = rest
            .iter()
            .map(|(f, _)| f.rel_path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["big", "empty", "pre"]);
        let few = super::super::config::PackConfig {
            max_files: 2,
            ..cfg
        };
        let tiny: Vec<Selected> = (0..5).map(|i| facts(&format!("t{i}"), 1)).collect();
        let (packs, _) = plan_packs(tiny, &few);
        assert_eq!(packs.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let off = super::super::config::PackConfig::default();
        let (packs, rest) = plan_packs(vec![facts("a", 1)], &off);
        assert!(packs.is_empty() && rest.len() == 1, "off by default");
    }

    #[test]
    fn hostile_indexes_are_rejected_with_a_reason() {
        let id = "0123456789abcdef0123456789abcdef";
        let key = format!("packs/{id}.tar");
        let good = json!({
            "format": INDEX_FORMAT, "version": 1, "pack_id": id, "object_key": key,
            "size": 10240, "checksum": "crc32c:AAAAAA==",
            "members": [
                {"path": "a/b", "file_id": id, "offset": 1536, "size": 10,
                 "checksum": "crc32c:AAAAAA==", "mtime_ns": 1, "mode": "100644", "uid": 0, "gid": 0},
                {"path": "c", "file_id": id, "offset": 3072, "size": 100,
                 "checksum": "crc32c:AAAAAA==", "mtime_ns": 1, "mode": "100644", "uid": 0, "gid": 0}
            ]
        });
        let parse = |v: &serde_json::Value| parse_index(v.to_string().as_bytes(), id, &key, 10240);
        assert_eq!(parse(&good).unwrap().members.len(), 2);
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let bad: Vec<(&str, Edit)> = vec![
            ("format", Box::new(|v| v["format"] = json!("tar"))),
            (
                "names pack",
                Box::new(|v| v["pack_id"] = json!("fedcba9876543210fedcba9876543210")),
            ),
            ("bytes", Box::new(|v| v["size"] = json!(20000))),
            (
                "path",
                Box::new(|v| v["members"][0]["path"] = json!("../../etc/passwd")),
            ),
            (
                "path",
                Box::new(|v| v["members"][0]["path"] = json!("/abs")),
            ),
            (
                "file id",
                Box::new(|v| v["members"][1]["file_id"] = json!("x")),
            ),
            (
                "range",
                Box::new(|v| v["members"][1]["offset"] = json!(10200)),
            ),
            (
                "range",
                Box::new(|v| v["members"][1]["offset"] = json!(1540)),
            ),
            ("range", Box::new(|v| v["members"][0]["size"] = json!(0))),
            (
                "checksum",
                Box::new(|v| v["members"][0]["checksum"] = json!("nope")),
            ),
            ("mode", Box::new(|v| v["members"][0]["mode"] = json!("9x"))),
            ("unknown field", Box::new(|v| v["extra"] = json!(1))),
        ];
        for (why, f) in bad {
            let mut v = good.clone();
            f(&mut v);
            let e = parse(&v).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        assert!(parse_index(b"\xff not json", id, &key, 10240).is_err());
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for v in ["", "a", &"x".repeat(90), &"y".repeat(95), &"z".repeat(1000)] {
            let r = pax_record("path", v.as_bytes());
            let (len, _) = std::str::from_utf8(&r).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{v:?}");
        }
    }

    #[test]
    fn ustar_headers_carry_a_valid_checksum() {
        let h = ustar_header(b"a/b.txt", 0o100640, 1000, 1000, 12345, 1_700_000_000, b'0');
        let stored = u64::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut c = h;
        c[148..156].fill(b' ');
        assert_eq!(stored, c.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(&h[124..136], b"00000030071\0");
        assert_eq!(&h[100..108], b"0000640\0");
    }
}
