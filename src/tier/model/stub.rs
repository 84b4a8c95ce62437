//! The stub record: what a stubbed backing file carries in its `trusted.coldtier.stub`
//! xattr (and the catalog in its row), its strict versioned encoding, object keys and
//! file ids. No I/O except the kernel's random source for [`new_file_id`].
//!
//! # Why a hand-rolled binary encoding (and not JSON)
//! * **Size.** The record sits in an xattr on every stub. ext4 keeps small xattrs in the
//!   inode and others in one extra block; XFS keeps an inode's attributes inline only while
//!   they fit in the inode's literal area (a few hundred bytes). Binary stores the file id
//!   and MD5 as raw bytes and the object key as just its prefix plus an 8-byte content
//!   version (the rest of the key *is* the file id): a typical record is ~200 bytes, against
//!   ~450 for JSON with field names.
//! * **Strict by construction.** There is exactly one encoding of each record (no key
//!   order, whitespace, escapes, number forms or duplicate keys to normalise), so
//!   `encode(decode(b)) == b` for every accepted `b`; and every field is mandatory, so any
//!   truncation fails. JSON would need extra checks for each of those.
//! * **The object key cannot name another file's object** (invariant 5): it is rebuilt from
//!   the record's own file id, never stored whole.
//! * It is read on the hot path (getattr of a stub shows the real size): decoding is a few
//!   bounds checks, no allocation besides the strings.
//!
//! The cost is that `getfattr` shows bytes, not text: `coldtier` itself prints stubs.
//!
//! # Encoding, version 1 (all integers big-endian)
//! ```text
//! u8      version = 1
//! u8      flags: bit 0 = version_id present, bit 1 = md5 present; other bits 0
//! [16]    file id (the 128 bits its 32 hex digits spell)
//! u64     content version (the last part of the object key)
//! u64     size              (at most i64::MAX: a file larger than off_t can hold is absurd)
//! i64     mtime_ns
//! i64     ctime_ns          (of the backing file when it was stubbed)
//! u64     ino               (not 0)
//! i64     config_version    (not negative)
//! str     object key prefix
//! str     checksum_algo
//! str     checksum
//! [16]    md5               (if flags bit 1)
//! str     version_id        (if flags bit 0)
//! str     storage_class
//! i64     content_mtime_ns  (if flags bit 2: the mtime the object's content had, when
//!                           the file's times were set through the mount since its copy)
//! u8      extents count     (if flags bit 3: a sparse file; 1..=MAX_EXTENTS)
//! [count] (u64 offset, u64 length) of each data extent, in order, within `size`
//! u8      chunk log2        (if flags bit 4: chunk sums; the chunk size of
//!                           `store::chunks::chunk_log2_for(object size)`)
//! [n]     u32 CRC32C of each chunk of the object, n = object size / chunk size rounded
//!                           up (2..=256)
//! [16]    u32 CRC32C of each sixteenth of the first chunk (if flags bit 5, with bit 4)
//! [16]    pack id           (if flags bit 6: a member of a pack, docs/architecture.md
//!                           "Packs"; the content version is then 0, the prefix that of
//!                           the pack's key, and neither extents nor chunk sums are set)
//! u64     offset            (of the member's data in the pack object)
//! u64     pack size         (the pack object's size)
//! ```
//! A stub record has a compact form too when it fits (version 2 for a pack member, 3 for a
//! file with a whole object of its own), short enough to stay inside a 256-byte ext4
//! inode: [`StubRecord::encode_compact`].
//!
//! `str` is a u8 length (1..=255) then that many bytes, in the field's character set (no
//! NUL and no control characters in any of them). Nothing may follow the last field. A
//! version 2 would get a new version byte; this decoder rejects it rather than guess.

use std::fmt;

pub use crate::store::chunks::ChunkSums;
pub use crate::store::Extents;

/// The xattr on a stubbed backing file that holds its encoded [`StubRecord`]. The
/// `trusted.` namespace needs CAP_SYS_ADMIN to read or write: users can neither see nor
/// forge it (invariant 5).
pub const STUB_XATTR: &str = "trusted.coldtier.stub";

/// The only encoding version this build writes and reads.
pub const STUB_VERSION: u8 = 1;

/// Longer input is rejected before parsing (an encoding is at most ~2.6 KiB by
/// construction: 66 fixed bytes, an MD5, five strings of at most 1 + 255 bytes, the
/// extents and the chunk sums; a record without chunk sums, ~1.6 KiB).
pub const MAX_ENCODED_LEN: usize = 3072;

const FLAG_VERSION_ID: u8 = 1;
const FLAG_MD5: u8 = 2;
const FLAG_CONTENT_MTIME: u8 = 4;
const FLAG_EXTENTS: u8 = 8;
const FLAG_CHUNKS: u8 = 16;
const FLAG_HEAD: u8 = 32;
const FLAG_PACK: u8 = 64;

/// The most extents a record (and an object's metadata) keeps for a sparse file: holes
/// are merged into the data around them beyond that ([`sparse_extents`]), so an odd file
/// costs a little more to store, never a record that does not fit.
pub const MAX_EXTENTS: usize = 16;
const FIXED_LEN: usize = 2 + 16 + 6 * 8;
const _: () = assert!(
    FIXED_LEN
        + 16
        + 5 * 256
        + 8
        + 1
        + 16 * MAX_EXTENTS
        + 1
        + 4 * crate::store::chunks::MAX_CHUNKS
        + 4 * crate::store::chunks::HEAD_BLOCKS
        + 32
        <= MAX_ENCODED_LEN
);

/// Where a stub's data is and what it was: one record per stubbed file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StubRecord {
    /// Encoding version; [`STUB_VERSION`].
    pub version: u8,
    /// 32 lower-case hex digits ([`new_file_id`]).
    pub file_id: String,
    /// `<prefix>/<file_id>/<content version>` ([`object_key`]), for this record's file id.
    pub object_key: String,
    /// The store's version id of the object, if the bucket is versioned.
    pub version_id: Option<String>,
    /// Logical size in bytes (what stat shows through the mount).
    pub size: u64,
    pub mtime_ns: i64,
    /// ctime of the backing file when it was stubbed (after the truncate and the xattr
    /// write): a later change of ctime means someone touched the stub behind our back.
    pub ctime_ns: i64,
    /// Inode number of the backing file.
    pub ino: u64,
    /// e.g. `sha256`, `crc64nvme`: lower-case letters, digits, `-`, `_`.
    pub checksum_algo: String,
    /// The checksum in the algorithm's usual text form (hex or base64): printable ASCII.
    pub checksum: String,
    /// MD5 of the content as 32 lower-case hex digits, when the store gave one.
    pub md5: Option<String>,
    /// e.g. `STANDARD`, `GLACIER`, `DEEP_ARCHIVE`: upper-case letters, digits, `_`.
    pub storage_class: String,
    /// The catalog's config version in force when the file was stubbed.
    pub config_version: i64,
    /// The mtime the object's content had (its `coldtier-mtime-ns` metadata), when the
    /// file's times were set through the mount since the copy (`touch`): `mtime_ns` is
    /// then the file's new mtime. None: the same as `mtime_ns`.
    pub content_mtime_ns: Option<i64>,
    /// A sparse file: where its data extents are; the object holds only their bytes
    /// (`size` stays the file's size). None: the object holds all `size` bytes.
    pub extents: Option<Extents>,
    /// The CRC32C of each chunk of the object (an object of more than one chunk copied by
    /// this version): lets a recall verify and serve chunks as they arrive. None: the
    /// whole object is verified at once (records of older copies, one-chunk objects).
    pub chunks: Option<ChunkSums>,
    /// A member of a pack (small files gathered into one object): the object is the
    /// pack's ([`pack_key`]) and the file's bytes are `[offset, offset + size)` of it;
    /// `checksum` is the member's own. None: the object is the file's alone.
    pub pack: Option<PackRef>,
}

/// Where a packed file's bytes are: one member of one pack object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackRef {
    /// 32 lower-case hex digits, like a file id.
    pub id: String,
    /// Of the member's data in the pack object.
    pub offset: u64,
    /// The pack object's size.
    pub pack_size: u64,
}

/// The first segment of pack keys, inside the store's prefix: `packs/<pack id>.tar` (the
/// pack, a POSIX pax tar) and `packs/<pack id>.index.json` (its member index).
pub const PACK_PREFIX: &str = "packs";

/// The first segment of the keys of files' own objects, inside the store's prefix:
/// `data/<file id>/<content version>` ([`object_key`]).
pub const DATA_PREFIX: &str = "data";

/// The key of pack `pack_id` under `prefix`.
pub fn pack_key(prefix: &str, pack_id: &str) -> String {
    format!("{prefix}/{pack_id}.tar")
}

/// The key of the member index of pack `pack_id` under `prefix`.
pub fn pack_index_key(prefix: &str, pack_id: &str) -> String {
    format!("{prefix}/{pack_id}.index.json")
}

/// `(prefix, pack id)` of a key [`pack_key`] makes.
pub fn parse_pack_key(key: &str) -> Option<(&str, &str)> {
    let (prefix, name) = key.rsplit_once('/')?;
    let id = name.strip_suffix(".tar")?;
    (check_prefix(prefix).is_ok() && is_valid_file_id(id)).then_some((prefix, id))
}

/// Why a stub record cannot be decoded, or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StubError {
    #[error("stub record is empty")]
    Empty,
    #[error("stub record has unknown version {0} (this build reads version {STUB_VERSION})")]
    UnknownVersion(u8),
    #[error("stub record is {0} bytes, more than the {MAX_ENCODED_LEN} allowed")]
    TooLong(usize),
    #[error("stub record is truncated (in field `{0}`)")]
    Truncated(&'static str),
    #[error("stub record has {0} bytes of trailing garbage")]
    TrailingBytes(usize),
    #[error("stub record has unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("stub record field `{field}`: {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
}

fn bad(field: &'static str, problem: impl Into<String>) -> StubError {
    StubError::BadField {
        field,
        problem: problem.into(),
    }
}

/// The extents to keep for a file whose data extents (SEEK_DATA/SEEK_HOLE) are `data`, of
/// `size` bytes: None for a file without holes worth keeping (the object then holds all
/// of it). Holes shorter than [`MIN_HOLE`] are kept as data (zeros), and so are the
/// shortest holes beyond [`MAX_EXTENTS`] extents.
pub fn sparse_extents(data: &[(u64, u64)], size: u64) -> Option<Extents> {
    let mut v: Vec<(u64, u64)> = Vec::with_capacity(data.len());
    for &(o, l) in data.iter().filter(|e| e.1 > 0) {
        match v.last_mut() {
            Some(last) if o.saturating_sub(last.0 + last.1) < MIN_HOLE => {
                last.1 = o + l - last.0;
            }
            _ => v.push((o, l)),
        }
    }
    while v.len() > MAX_EXTENTS {
        // Merge across the shortest hole.
        let i = (1..v.len())
            .min_by_key(|&i| v[i].0 - (v[i - 1].0 + v[i - 1].1))
            .expect("more than one extent");
        let (o, l) = v.remove(i);
        v[i - 1].1 = o + l - v[i - 1].0;
    }
    let data_len: u64 = v.iter().map(|e| e.1).sum();
    // Worth it only when the holes free something real.
    if v.is_empty() || size - data_len.min(size) < MIN_HOLE {
        return None;
    }
    Some(Extents(v))
}

/// Holes shorter than this are stored as data (zeros): a hole frees whole blocks, and a
/// record cannot list thousands of them.
pub const MIN_HOLE: u64 = 64 * 1024;

/// Extents as the object's `coldtier-extents` metadata: `offset+length` pairs in hex,
/// comma-separated.
pub fn extents_to_meta(e: &Extents) -> String {
    e.0.iter()
        .map(|(o, l)| format!("{o:x}+{l:x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `coldtier-extents` metadata (untrusted input: strict), checked against the
/// file's `size`.
pub fn extents_from_meta(s: &str, size: u64) -> Result<Extents, String> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let (o, l) = part
            .split_once('+')
            .ok_or_else(|| format!("`{}` is not offset+length", part.escape_debug()))?;
        let hex = |x: &str| {
            (!x.is_empty() && x.len() <= 16 && x.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(x, 16).ok())
                .flatten()
                .ok_or_else(|| format!("`{}` is not a hex number", x.escape_debug()))
        };
        v.push((hex(o)?, hex(l)?));
        if v.len() > MAX_EXTENTS {
            return Err(format!("more than {MAX_EXTENTS} extents"));
        }
    }
    let e = Extents(v);
    if !e.valid_for(size) {
        return Err("extents out of order, overlapping, empty or past the size".into());
    }
    Ok(e)
}

/// The object key of content version `content_version` of file `file_id`:
/// `<prefix>/<file_id>/<16 lower-case hex digits>`. Keyed by identity, not path, so a
/// rename moves nothing. The fixed-width hex makes the store's lexicographic listing of
/// `<prefix>/<file_id>/` come out oldest first. Content versions must be unique per file
/// id and never reused (a reused one would overwrite a superseded object still under
/// retention); migrate uses the copy's start time in ns since the epoch.
pub fn object_key(prefix: &str, file_id: &str, content_version: u64) -> String {
    format!("{prefix}/{file_id}/{content_version:016x}")
}

/// The parts of an object key: `(prefix, file_id, content_version)`, if `key` has the
/// shape [`object_key`] makes, with a valid prefix and file id.
pub fn parse_object_key(key: &str) -> Option<(&str, &str, u64)> {
    let (rest, version) = key.rsplit_once('/')?;
    let (prefix, file_id) = rest.rsplit_once('/')?;
    if version.len() != 16 || !is_lower_hex(version) {
        return None;
    }
    let version = u64::from_str_radix(version, 16).ok()?;
    (check_prefix(prefix).is_ok() && is_valid_file_id(file_id))
        .then_some((prefix, file_id, version))
}

/// True for 32 lower-case hex digits, the form [`new_file_id`] makes.
pub fn is_valid_file_id(id: &str) -> bool {
    id.len() == 32 && is_lower_hex(id)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks an object key prefix: 1..=255 bytes of UTF-8 without control characters or `\`,
/// made of `/`-separated segments none of which is empty, `.` or `..` (a prefix must map to
/// a safe relative path in the posix store, and `a//b` keys are a classic S3 footgun).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 255 {
        return Err(format!("must be 1 to 255 bytes, not {}", prefix.len()));
    }
    if let Some(c) = prefix.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(format!("must not contain {c:?}"));
    }
    if prefix
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "`{prefix}` has an empty, `.` or `..` segment (or a leading or trailing `/`)"
        ));
    }
    Ok(())
}

/// A new random file id: 128 bits from the kernel (getrandom(2), else /dev/urandom), as 32
/// lower-case hex digits.
pub fn new_file_id() -> std::io::Result<String> {
    let mut buf = [0u8; 16];
    crate::base::random::fill(&mut buf)?;
    Ok(hex::encode(buf))
}

/// The characters a string field may hold.
#[derive(Clone, Copy)]
enum Charset {
    /// [`check_prefix`].
    Prefix,
    /// `a-z 0-9 - _`
    Algo,
    /// `A-Z 0-9 _`
    Class,
    /// Printable ASCII without space (hex, base64, S3 version ids).
    Graphic,
}

fn check_str(field: &'static str, s: &str, charset: Charset) -> Result<(), StubError> {
    if s.is_empty() || s.len() > 255 {
        return Err(bad(
            field,
            format!("must be 1 to 255 bytes, not {}", s.len()),
        ));
    }
    let ok = |f: fn(u8) -> bool| s.bytes().all(f);
    let fine = match charset {
        Charset::Prefix => return check_prefix(s).map_err(|p| bad(field, p)),
        Charset::Algo => ok(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_')),
        Charset::Class => ok(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_')),
        Charset::Graphic => ok(|b| b.is_ascii_graphic()),
    };
    if fine {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{s:?} has a character not allowed here"),
        ))
    }
}

impl StubRecord {
    /// Checks every field; [`StubRecord::encode`] and [`StubRecord::decode`] both do.
    pub fn validate(&self) -> Result<(), StubError> {
        self.parts().map(|_| ())
    }

    /// The object key's prefix and content version, after checking everything.
    fn parts(&self) -> Result<(&str, u64), StubError> {
        if self.version != STUB_VERSION {
            return Err(StubError::UnknownVersion(self.version));
        }
        if !is_valid_file_id(&self.file_id) {
            return Err(bad("file_id", "must be 32 lower-case hex digits"));
        }
        if let Some(p) = &self.pack {
            return self.pack_parts(p);
        }
        let (prefix, key_id, content_version) =
            parse_object_key(&self.object_key).ok_or_else(|| {
                bad(
                    "object_key",
                    format!(
                        "`{}` is not <prefix>/<file id>/<16 hex digits>",
                        self.object_key
                    ),
                )
            })?;
        if key_id != self.file_id {
            return Err(bad(
                "object_key",
                format!(
                    "`{}` is not an object of file {}",
                    self.object_key, self.file_id
                ),
            ));
        }
        check_str("object_key", prefix, Charset::Prefix)?;
        self.check_common()?;
        Ok((prefix, content_version))
    }

    /// [`StubRecord::parts`] of a pack member: its key is the pack's, its bytes a range of
    /// the pack, whole (no extents, no chunk sums).
    fn pack_parts(&self, p: &PackRef) -> Result<(&str, u64), StubError> {
        let (prefix, id) = parse_pack_key(&self.object_key).ok_or_else(|| {
            bad(
                "object_key",
                format!("`{}` is not <prefix>/<pack id>.tar", self.object_key),
            )
        })?;
        if id != p.id {
            return Err(bad(
                "pack",
                format!("pack {} is not the one `{}` names", p.id, self.object_key),
            ));
        }
        check_str("object_key", prefix, Charset::Prefix)?;
        if self.extents.is_some() || self.chunks.is_some() {
            return Err(bad("pack", "a member has neither extents nor chunk sums"));
        }
        if p.offset
            .checked_add(self.size)
            .is_none_or(|end| end > p.pack_size)
        {
            return Err(bad(
                "pack",
                format!(
                    "member {}+{} outside a pack of {} bytes",
                    p.offset, self.size, p.pack_size
                ),
            ));
        }
        self.check_common()?;
        Ok((prefix, 0))
    }

    /// The checks of every record, whatever its object.
    fn check_common(&self) -> Result<(), StubError> {
        if self.size > i64::MAX as u64 {
            return Err(bad(
                "size",
                format!("{} is larger than any file", self.size),
            ));
        }
        if self.ino == 0 {
            return Err(bad("ino", "0 is no inode number"));
        }
        if self.config_version < 0 {
            return Err(bad("config_version", "must not be negative"));
        }
        check_str("checksum_algo", &self.checksum_algo, Charset::Algo)?;
        check_str("checksum", &self.checksum, Charset::Graphic)?;
        if let Some(md5) = &self.md5 {
            if md5.len() != 32 || !is_lower_hex(md5) {
                return Err(bad("md5", "must be 32 lower-case hex digits"));
            }
        }
        if let Some(v) = &self.version_id {
            check_str("version_id", v, Charset::Graphic)?;
        }
        check_str("storage_class", &self.storage_class, Charset::Class)?;
        if self.content_mtime_ns == Some(self.mtime_ns) {
            // Kept only where it differs: one encoding per record.
            return Err(bad("content_mtime_ns", "equals mtime_ns"));
        }
        if let Some(e) = &self.extents {
            if e.0.is_empty() || e.0.len() > MAX_EXTENTS {
                return Err(bad("extents", format!("1 to {MAX_EXTENTS} of them")));
            }
            if !e.valid_for(self.size) {
                return Err(bad(
                    "extents",
                    "must be in order, not empty, not overlapping and within the size",
                ));
            }
        }
        if let Some(c) = &self.chunks {
            if !c.valid_for(self.object_size()) {
                return Err(bad(
                    "chunks",
                    "must have the chunk size and count of the object's size, two or more",
                ));
            }
        }
        Ok(())
    }

    /// The size of the object: the file's, or the bytes of its data extents.
    pub fn object_size(&self) -> u64 {
        self.extents.as_ref().map_or(self.size, Extents::data_len)
    }

    /// The mtime of the content the object holds.
    pub fn content_mtime(&self) -> i64 {
        self.content_mtime_ns.unwrap_or(self.mtime_ns)
    }

    /// Sets the file's mtime, keeping the object's content mtime.
    pub fn set_mtime(&mut self, mtime_ns: i64) {
        let content = self.content_mtime();
        self.mtime_ns = mtime_ns;
        self.content_mtime_ns = (content != mtime_ns).then_some(content);
    }

    /// The object key's content version.
    pub fn content_version(&self) -> Option<u64> {
        parse_object_key(&self.object_key).map(|(_, _, v)| v)
    }

    /// The record's canonical encoding, after [`StubRecord::validate`]: a record that could
    /// not be decoded again is never written.
    pub fn encode(&self) -> Result<Vec<u8>, StubError> {
        let (prefix, content_version) = self.parts()?;
        let mut out = Vec::with_capacity(256);
        let mut flags = 0;
        if self.version_id.is_some() {
            flags |= FLAG_VERSION_ID;
        }
        if self.md5.is_some() {
            flags |= FLAG_MD5;
        }
        if self.content_mtime_ns.is_some() {
            flags |= FLAG_CONTENT_MTIME;
        }
        if self.extents.is_some() {
            flags |= FLAG_EXTENTS;
        }
        if let Some(c) = &self.chunks {
            flags |= FLAG_CHUNKS;
            if !c.head.is_empty() {
                flags |= FLAG_HEAD;
            }
        }
        if self.pack.is_some() {
            flags |= FLAG_PACK;
        }
        out.push(self.version);
        out.push(flags);
        out.extend_from_slice(&hex::decode(&self.file_id).expect("validated hex"));
        out.extend_from_slice(&content_version.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.mtime_ns.to_be_bytes());
        out.extend_from_slice(&self.ctime_ns.to_be_bytes());
        out.extend_from_slice(&self.ino.to_be_bytes());
        out.extend_from_slice(&self.config_version.to_be_bytes());
        fn put(out: &mut Vec<u8>, s: &str) {
            out.push(s.len() as u8); // validated: 1..=255
            out.extend_from_slice(s.as_bytes());
        }
        put(&mut out, prefix);
        put(&mut out, &self.checksum_algo);
        put(&mut out, &self.checksum);
        if let Some(md5) = &self.md5 {
            out.extend_from_slice(&hex::decode(md5).expect("validated hex"));
        }
        if let Some(v) = &self.version_id {
            put(&mut out, v);
        }
        put(&mut out, &self.storage_class);
        if let Some(m) = self.content_mtime_ns {
            out.extend_from_slice(&m.to_be_bytes());
        }
        if let Some(e) = &self.extents {
            out.push(e.0.len() as u8); // validated: 1..=MAX_EXTENTS
            for (o, l) in &e.0 {
                out.extend_from_slice(&o.to_be_bytes());
                out.extend_from_slice(&l.to_be_bytes());
            }
        }
        if let Some(c) = &self.chunks {
            out.push(c.log2);
            for v in c.sums.iter().chain(&c.head) {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        if let Some(p) = &self.pack {
            out.extend_from_slice(&hex::decode(&p.id).expect("validated hex"));
            out.extend_from_slice(&p.offset.to_be_bytes());
            out.extend_from_slice(&p.pack_size.to_be_bytes());
        }
        Ok(out)
    }

    /// Decodes and checks a record. Rejects unknown versions and flags, truncated input,
    /// trailing bytes, overlong input, absurd sizes and any field outside its character
    /// set, so a decoded record always re-encodes to the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<StubRecord, StubError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(StubError::TooLong(bytes.len()));
        }
        let mut r = Reader { rest: bytes };
        let version = *bytes.first().ok_or(StubError::Empty)?;
        if version != STUB_VERSION {
            return Err(StubError::UnknownVersion(version));
        }
        r.take(1, "version")?;
        let flags = r.take(1, "flags")?[0];
        if flags
            & !(FLAG_VERSION_ID
                | FLAG_MD5
                | FLAG_CONTENT_MTIME
                | FLAG_EXTENTS
                | FLAG_CHUNKS
                | FLAG_HEAD
                | FLAG_PACK)
            != 0
            || (flags & FLAG_HEAD != 0 && flags & FLAG_CHUNKS == 0)
        {
            return Err(StubError::UnknownFlags(flags));
        }
        let file_id = hex::encode(r.take(16, "file_id")?);
        let content_version = r.u64("object_key")?;
        let size = r.u64("size")?;
        let mtime_ns = r.u64("mtime_ns")? as i64;
        let ctime_ns = r.u64("ctime_ns")? as i64;
        let ino = r.u64("ino")?;
        let config_version = r.u64("config_version")? as i64;
        let prefix = r.str("object_key")?;
        let checksum_algo = r.str("checksum_algo")?;
        let checksum = r.str("checksum")?;
        let md5 = if flags & FLAG_MD5 != 0 {
            Some(hex::encode(r.take(16, "md5")?))
        } else {
            None
        };
        let version_id = if flags & FLAG_VERSION_ID != 0 {
            Some(r.str("version_id")?)
        } else {
            None
        };
        let storage_class = r.str("storage_class")?;
        let content_mtime_ns = if flags & FLAG_CONTENT_MTIME != 0 {
            Some(r.u64("content_mtime_ns")? as i64)
        } else {
            None
        };
        let extents = if flags & FLAG_EXTENTS != 0 {
            let n = r.take(1, "extents")?[0] as usize;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push((r.u64("extents")?, r.u64("extents")?));
            }
            Some(Extents(v))
        } else {
            None
        };
        let chunks = if flags & FLAG_CHUNKS != 0 {
            let log2 = r.take(1, "chunks")?[0];
            // The count follows from the object's size: only a valid log2 gives a sane one.
            if !(crate::store::chunks::MIN_CHUNK_LOG2..=crate::store::chunks::MAX_CHUNK_LOG2)
                .contains(&log2)
            {
                return Err(bad("chunks", format!("chunk size 2^{log2}")));
            }
            let obj = extents.as_ref().map_or(size, Extents::data_len);
            let n = obj.div_ceil(1u64 << log2);
            if n > crate::store::chunks::MAX_CHUNKS as u64 {
                return Err(bad("chunks", format!("{n} chunks")));
            }
            let mut sums = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let b = r.take(4, "chunks")?;
                sums.push(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            let mut head = Vec::new();
            if flags & FLAG_HEAD != 0 {
                for _ in 0..crate::store::chunks::HEAD_BLOCKS {
                    let b = r.take(4, "chunks")?;
                    head.push(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            Some(ChunkSums { log2, sums, head })
        } else {
            None
        };
        let pack = if flags & FLAG_PACK != 0 {
            let id = hex::encode(r.take(16, "pack")?);
            Some(PackRef {
                id,
                offset: r.u64("pack")?,
                pack_size: r.u64("pack")?,
            })
        } else {
            None
        };
        if !r.rest.is_empty() {
            return Err(StubError::TrailingBytes(r.rest.len()));
        }
        check_str("object_key", &prefix, Charset::Prefix)?;
        let key = match &pack {
            Some(_) if content_version != 0 => {
                return Err(bad("object_key", "a pack member's content version is 0"))
            }
            Some(p) => pack_key(&prefix, &p.id),
            None => object_key(&prefix, &file_id, content_version),
        };
        let rec = StubRecord {
            version,
            object_key: key,
            file_id,
            version_id,
            size,
            mtime_ns,
            ctime_ns,
            ino,
            checksum_algo,
            checksum,
            md5,
            storage_class,
            config_version,
            content_mtime_ns,
            extents,
            chunks,
            pack,
        };
        rec.validate()?;
        Ok(rec)
    }
}

/// The first byte of the compact encoding of a pack member's stub record (docs/
/// architecture.md "Compact stub records"): what a 256-byte ext4 inode can hold.
pub const COMPACT_VERSION: u8 = 2;

/// The first byte of the compact encoding of the stub record of a file with an object of
/// its own.
pub const COMPACT_OWN_VERSION: u8 = 3;

/// The longest compact record written: an xattr named `trusted.coldtier.stub` with a value
/// of at most 56 bytes is kept inside a 256-byte ext4 inode (when no other xattr is there);
/// a longer one would cost the stub a block, which the full encoding does as well.
pub const COMPACT_MAX_LEN: usize = 56;

/// Storage classes a compact record names by their index (4 bits).
const COMPACT_CLASSES: [&str; 11] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// Checksum algorithms a compact record names by their index (4 bits), with the length of
/// their raw value.
const COMPACT_ALGOS: [(&str, usize); 4] =
    [("crc32c", 4), ("crc32", 4), ("sha1", 20), ("sha256", 32)];

/// Tar's block: members' data start on it and packs are a whole number of them, so a compact
/// record keeps offsets and sizes in blocks (two bytes fewer each).
const TAR_BLOCK: u64 = 512;

/// What a compact record leaves to the backing file itself, read when the record is: its
/// ctime (the full record's is the one before its own xattr write, which no check
/// compares) and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    pub ctime_ns: i64,
    pub ino: u64,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Reader<'_> {
    /// An unsigned LEB128 number in its shortest form (one encoding per record: a longer
    /// form of the same number is rejected).
    fn varint(&mut self, field: &'static str) -> Result<u64, StubError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.take(1, field)?[0];
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(bad(field, "number too large"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(bad(field, "number not in its shortest form"));
                }
                return Ok(v);
            }
        }
        Err(bad(field, "number too large"))
    }
}

impl StubRecord {
    /// The compact encoding of a stub record, when it has one: a record of an unversioned
    /// bucket, without an MD5 or a content mtime of its own, whose storage class and
    /// checksum algorithm have a code, in at most [`COMPACT_MAX_LEN`] bytes, and either a
    /// pack member (under [`PACK_PREFIX`], offsets in whole tar blocks) or a file whose
    /// object (under [`DATA_PREFIX`]) holds all its bytes, checked whole (no extents, no
    /// chunk sums). Everything else keeps the full encoding ([`StubRecord::encode`]).
    ///
    /// ```text
    /// u8      version = 2 (a pack member)     u8      version = 3 (an object of its own)
    /// [16]    file id                         [16]    file id
    /// [16]    pack id                         u64     content version (of the object key)
    /// varint  offset / 512                    varint  size
    /// varint  size
    /// varint  pack size / 512
    /// then, both:
    /// u8      storage class code << 4 | checksum algorithm code
    /// [n]     raw checksum        (n: 4 for crc32c and crc32, 20 for sha1, 32 for sha256)
    /// i64     mtime_ns
    /// ```
    /// `varint` is unsigned LEB128 in its shortest form, the fixed-width numbers big-endian.
    /// Not kept, taken from the file when the record is read ([`FileFacts`]): ctime and
    /// inode number. Not kept at all: the config version (0 in a decoded record; the
    /// catalog's events carry it).
    pub fn encode_compact(&self) -> Option<Vec<u8>> {
        if self.version_id.is_some() || self.md5.is_some() || self.content_mtime_ns.is_some() {
            return None;
        }
        let (prefix, content_version) = self.parts().ok()?;
        let class = COMPACT_CLASSES
            .iter()
            .position(|c| *c == self.storage_class)?;
        let algo = COMPACT_ALGOS
            .iter()
            .position(|(a, _)| *a == self.checksum_algo)?;
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &self.checksum)
                .ok()?;
        // Only a canonical base64 of a value of the algorithm's length comes back the same.
        if raw.len() != COMPACT_ALGOS[algo].1
            || base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw)
                != self.checksum
        {
            return None;
        }
        let mut out = Vec::with_capacity(COMPACT_MAX_LEN);
        match &self.pack {
            Some(p) => {
                if prefix != PACK_PREFIX
                    || p.offset % TAR_BLOCK != 0
                    || p.pack_size % TAR_BLOCK != 0
                {
                    return None;
                }
                out.push(COMPACT_VERSION);
                out.extend_from_slice(&hex::decode(&self.file_id).expect("validated hex"));
                out.extend_from_slice(&hex::decode(&p.id).expect("validated hex"));
                put_varint(&mut out, p.offset / TAR_BLOCK);
                put_varint(&mut out, self.size);
                put_varint(&mut out, p.pack_size / TAR_BLOCK);
            }
            None => {
                // The object holds all `size` bytes, checked whole.
                if prefix != DATA_PREFIX || self.extents.is_some() || self.chunks.is_some() {
                    return None;
                }
                out.push(COMPACT_OWN_VERSION);
                out.extend_from_slice(&hex::decode(&self.file_id).expect("validated hex"));
                out.extend_from_slice(&content_version.to_be_bytes());
                put_varint(&mut out, self.size);
            }
        }
        out.push(((class as u8) << 4) | algo as u8);
        out.extend_from_slice(&raw);
        out.extend_from_slice(&self.mtime_ns.to_be_bytes());
        (out.len() <= COMPACT_MAX_LEN).then_some(out)
    }

    /// Whether `bytes` are a compact encoding (its version byte only: which decoder takes
    /// them, [`StubRecord::decode_compact`] or [`StubRecord::decode`]).
    pub fn is_compact_encoding(bytes: &[u8]) -> bool {
        matches!(
            bytes.first(),
            Some(&(COMPACT_VERSION | COMPACT_OWN_VERSION))
        )
    }

    /// Whether `bytes` look like the full encoding of a pack member's record (its version
    /// and flag bytes only: a cheap filter before decoding).
    pub fn is_full_member_encoding(bytes: &[u8]) -> bool {
        matches!(bytes, [STUB_VERSION, flags, ..] if flags & FLAG_PACK != 0)
    }

    /// Decodes and checks a compact record ([`StubRecord::encode_compact`]) of a file whose
    /// ctime and inode number are `facts`. As strict as [`StubRecord::decode`]: whatever
    /// it accepts encodes back to the same bytes.
    pub fn decode_compact(bytes: &[u8], facts: FileFacts) -> Result<StubRecord, StubError> {
        if bytes.len() > COMPACT_MAX_LEN {
            return Err(StubError::TooLong(bytes.len()));
        }
        let mut r = Reader { rest: bytes };
        let version = *bytes.first().ok_or(StubError::Empty)?;
        if version != COMPACT_VERSION && version != COMPACT_OWN_VERSION {
            return Err(StubError::UnknownVersion(version));
        }
        r.take(1, "version")?;
        let file_id = hex::encode(r.take(16, "file_id")?);
        let (object_key, size, pack) = if version == COMPACT_VERSION {
            let pack_id = hex::encode(r.take(16, "pack")?);
            let offset = r.varint("pack")?;
            let size = r.varint("size")?;
            let pack_blocks = r.varint("pack")?;
            let (offset, pack_size) = match (
                offset.checked_mul(TAR_BLOCK),
                pack_blocks.checked_mul(TAR_BLOCK),
            ) {
                (Some(o), Some(p)) => (o, p),
                _ => return Err(bad("pack", "offset or pack size out of range")),
            };
            let key = pack_key(PACK_PREFIX, &pack_id);
            let pack = PackRef {
                id: pack_id,
                offset,
                pack_size,
            };
            (key, size, Some(pack))
        } else {
            let content_version = r.u64("object_key")?;
            let size = r.varint("size")?;
            (
                object_key(DATA_PREFIX, &file_id, content_version),
                size,
                None,
            )
        };
        let code = r.take(1, "storage_class")?[0];
        let class = COMPACT_CLASSES
            .get(usize::from(code >> 4))
            .ok_or_else(|| bad("storage_class", format!("unknown code {}", code >> 4)))?;
        let (algo, len) = COMPACT_ALGOS
            .get(usize::from(code & 0xf))
            .ok_or_else(|| bad("checksum_algo", format!("unknown code {}", code & 0xf)))?;
        let raw = r.take(*len, "checksum")?;
        let mtime_ns = r.u64("mtime_ns")? as i64;
        if !r.rest.is_empty() {
            return Err(StubError::TrailingBytes(r.rest.len()));
        }
        let rec = StubRecord {
            version: STUB_VERSION,
            object_key,
            file_id,
            version_id: None,
            size,
            mtime_ns,
            ctime_ns: facts.ctime_ns,
            ino: facts.ino,
            checksum_algo: (*algo).to_string(),
            checksum: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw),
            md5: None,
            storage_class: (*class).to_string(),
            config_version: 0,
            content_mtime_ns: None,
            extents: None,
            chunks: None,
            pack,
        };
        rec.validate()?;
        Ok(rec)
    }
}

impl fmt::Display for StubRecord {
    /// One line for logs and `coldtier` output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stub v{} file {} object {}{} size {} mtime_ns {} ctime_ns {} ino {} {} {}{} class {} config v{}",
            self.version,
            self.file_id,
            self.object_key,
            self.version_id
                .as_deref()
                .map(|v| format!(" version {v}"))
                .unwrap_or_default(),
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.ino,
            self.checksum_algo,
            self.checksum,
            self.md5
                .as_deref()
                .map(|m| format!(" md5 {m}"))
                .unwrap_or_default(),
            self.storage_class,
            self.config_version,
        )
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], StubError> {
        if self.rest.len() < n {
            return Err(StubError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, StubError> {
        let b = self.take(8, field)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn str(&mut self, field: &'static str) -> Result<String, StubError> {
        let len = self.take(1, field)?[0] as usize;
        if len == 0 {
            return Err(bad(field, "is empty"));
        }
        let b = self.take(len, field)?;
        let s = std::str::from_utf8(b).map_err(|_| bad(field, "is not UTF-8"))?;
        if s.contains('\0') {
            return Err(bad(field, "contains a NUL byte"));
        }
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn sample() -> StubRecord {
        StubRecord {
            version: 1,
            file_id: ID.into(),
            object_key: object_key("coldtier/share1", ID, 0x17f0_0000_0000_0001),
            version_id: Some("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY".into()),
            size: 123_456_789,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_100_000_000_001,
            ino: 1_234_567,
            checksum_algo: "sha256".into(),
            checksum: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            md5: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            storage_class: "DEEP_ARCHIVE".into(),
            config_version: 7,
            content_mtime_ns: None,
            extents: None,
            chunks: None,
            pack: None,
        }
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn string(&mut self, alphabet: &[u8], min: u64, max: u64) -> String {
            let len = min + self.below(max - min + 1);
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len() as u64) as usize] as char)
                .collect()
        }
        fn hex(&mut self, len: u64) -> String {
            self.string(b"0123456789abcdef", len, len)
        }
    }

    const GRAPHIC: &[u8] =
        b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

    fn random_record(rng: &mut Rng) -> StubRecord {
        let file_id = rng.hex(32);
        let segs = 1 + rng.below(3);
        let prefix = (0..segs)
            .map(|_| rng.string(b"abcXYZ019-_.=+~", 1, 20))
            .map(|s| if s == "." || s == ".." { "x".into() } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let prefix = if rng.below(10) == 0 {
            "préfixe/ünïcode".to_string()
        } else {
            prefix
        };
        StubRecord {
            version: 1,
            object_key: object_key(&prefix, &file_id, rng.next()),
            file_id,
            version_id: (rng.below(2) == 0).then(|| rng.string(GRAPHIC, 1, 255)),
            size: rng.next() >> (1 + rng.below(63)),
            mtime_ns: rng.next() as i64,
            ctime_ns: rng.next() as i64,
            ino: rng.next().max(1),
            checksum_algo: rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789-_", 1, 16),
            checksum: rng.string(GRAPHIC, 1, 255),
            md5: (rng.below(2) == 0).then(|| rng.hex(32)),
            storage_class: rng.string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", 1, 30),
            config_version: (rng.next() >> 1) as i64 >> rng.below(63),
            content_mtime_ns: None,
            extents: None,
            chunks: None,
            pack: None,
        }
        .with_content_mtime(rng)
    }

    impl StubRecord {
        fn with_content_mtime(mut self, rng: &mut Rng) -> Self {
            if rng.below(3) == 0 {
                let m = self.mtime_ns;
                self.set_mtime(rng.next() as i64);
                assert_eq!(self.content_mtime(), m);
            }
            if rng.below(3) == 0 && self.size > 1000 {
                let n = 1 + rng.below(MAX_EXTENTS as u64) as usize;
                let step = self.size / (n as u64 + 1);
                self.extents = Some(Extents(
                    (0..n as u64)
                        .map(|i| (i * step, 1 + rng.below(step.max(2) - 1)))
                        .collect(),
                ));
            }
            let obj = self.object_size();
            let log2 = crate::store::chunks::chunk_log2_for(obj);
            if rng.below(2) == 0 && obj > 1 << log2 && obj.div_ceil(1 << log2) <= 256 {
                let n = obj.div_ceil(1 << log2);
                let head = if rng.below(2) == 0 {
                    (0..crate::store::chunks::HEAD_BLOCKS)
                        .map(|_| rng.next() as u32)
                        .collect()
                } else {
                    Vec::new()
                };
                self.chunks = Some(ChunkSums {
                    log2,
                    sums: (0..n).map(|_| rng.next() as u32).collect(),
                    head,
                });
            }
            self
        }
    }

    /// A member of a 16 MiB pack as the pack step writes it: crc32c, STANDARD, unversioned.
    fn member() -> StubRecord {
        let pid = "fedcba9876543210fedcba9876543210";
        StubRecord {
            version: STUB_VERSION,
            file_id: ID.into(),
            object_key: pack_key(PACK_PREFIX, pid),
            version_id: None,
            size: 65_536,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_100_000_000_001,
            ino: 1_234_567,
            checksum_algo: "crc32c".into(),
            checksum: "yZRlqg==".into(),
            md5: None,
            storage_class: "STANDARD".into(),
            config_version: 7,
            content_mtime_ns: None,
            extents: None,
            chunks: None,
            pack: Some(PackRef {
                id: pid.into(),
                offset: 15 * 1024 * 1024 + 512,
                pack_size: 16 * 1024 * 1024,
            }),
        }
    }

    const FACTS: FileFacts = FileFacts {
        ctime_ns: 1_700_000_200_000_000_002,
        ino: 42,
    };

    /// `b`, the compact form of `r`, decodes to `r` but for what it leaves to the file
    /// (ctime, ino) and the config version, and encodes back to `b`; the full decoder does
    /// not take it.
    fn compact_round_trips(r: &StubRecord, b: &[u8]) {
        let d = StubRecord::decode_compact(b, FACTS).unwrap();
        let mut want = r.clone();
        want.ctime_ns = FACTS.ctime_ns;
        want.ino = FACTS.ino;
        want.config_version = 0;
        assert_eq!(d, want);
        assert_eq!(d.encode_compact().unwrap(), b);
        assert_eq!(StubRecord::decode(b), Err(StubError::UnknownVersion(b[0])));
    }

    #[test]
    fn a_member_record_has_a_compact_form_that_fits_an_ext4_inode() {
        let r = member();
        let b = r.encode_compact().expect("compact");
        assert_eq!(b.len(), 55, "{b:02x?}");
        assert_eq!(r.encode().unwrap().len(), 129);
        assert!(StubRecord::is_full_member_encoding(&r.encode().unwrap()));
        assert!(!StubRecord::is_full_member_encoding(&b));
        assert!(!StubRecord::is_full_member_encoding(
            &sample().encode().unwrap()
        ));
        compact_round_trips(&r, &b);
        // Nor does the compact decoder take a full record.
        assert_eq!(
            StubRecord::decode_compact(&r.encode().unwrap(), FACTS),
            Err(StubError::TooLong(r.encode().unwrap().len()))
        );
        // Every class and algorithm with a code round-trips.
        for class in COMPACT_CLASSES {
            for (algo, len) in COMPACT_ALGOS {
                let mut m = r.clone();
                m.storage_class = class.into();
                m.checksum_algo = algo.into();
                m.checksum = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    vec![0xa5; len],
                );
                match m.encode_compact() {
                    Some(b) => {
                        let d = StubRecord::decode_compact(&b, FACTS).unwrap();
                        assert_eq!((d.storage_class, d.checksum), (m.storage_class, m.checksum));
                    }
                    // sha1 and sha256 are too long for the inode: the full form then.
                    None => assert!(len > 4, "{class} {algo}"),
                }
            }
        }
    }

    /// A small file with an object of its own as migrate writes it: crc32c, STANDARD,
    /// unversioned, no MD5.
    fn own() -> StubRecord {
        StubRecord {
            object_key: object_key(DATA_PREFIX, ID, 0x187e_a7b0_8bc9_c787),
            version_id: None,
            size: 65_536,
            checksum_algo: "crc32c".into(),
            checksum: "yZRlqg==".into(),
            md5: None,
            storage_class: "STANDARD".into(),
            ..sample()
        }
    }

    #[test]
    fn a_record_of_an_own_object_has_a_compact_form_that_fits_an_ext4_inode() {
        let r = own();
        let b = r.encode_compact().expect("compact");
        assert_eq!((b[0], b.len()), (COMPACT_OWN_VERSION, 41), "{b:02x?}");
        assert!(b.len() <= COMPACT_MAX_LEN);
        assert_eq!(r.encode().unwrap().len(), 96);
        compact_round_trips(&r, &b);
        // The largest size still fits.
        let mut big = r.clone();
        big.size = u64::MAX >> 1;
        let bb = big.encode_compact().expect("compact");
        assert!(bb.len() <= COMPACT_MAX_LEN, "{}", bb.len());
        assert_eq!(
            StubRecord::decode_compact(&bb, FACTS).unwrap().size,
            big.size
        );
    }

    #[test]
    fn own_object_records_without_a_compact_form_keep_the_full_one() {
        type Change = Box<dyn Fn(&mut StubRecord)>;
        let cases: Vec<(&str, Change)> = vec![
            ("versioned", Box::new(|r| r.version_id = Some("v1".into()))),
            (
                "md5",
                Box::new(|r| r.md5 = Some("d41d8cd98f00b204e9800998ecf8427e".into())),
            ),
            ("touched", Box::new(|r| r.set_mtime(1))),
            ("too long", Box::new(|r| r.checksum_algo = "sha256".into())),
            (
                "another prefix",
                Box::new(|r| r.object_key = object_key("coldtier/share1", ID, 1)),
            ),
            (
                "sparse",
                Box::new(|r| r.extents = Some(Extents(vec![(0, 10)]))),
            ),
            (
                "chunk sums",
                Box::new(|r| {
                    r.size = 8 << 20;
                    r.chunks = Some(ChunkSums {
                        log2: 22,
                        sums: vec![1, 2],
                        head: Vec::new(),
                    })
                }),
            ),
        ];
        for (what, change) in cases {
            let mut r = own();
            change(&mut r);
            r.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.encode_compact(), None, "{what}");
        }
    }

    #[test]
    fn the_compact_decoder_is_strict_on_own_objects() {
        let b = own().encode_compact().unwrap();
        compact_refuses_cuts_and_trailing_bytes(&b);
        // The size 65,536 is 0x80 0x80 0x04 after the id and the content version; written
        // longer, the same number is refused.
        assert_eq!(&b[25..28], &[0x80, 0x80, 0x04]);
        compact_refuses_a_longer_varint(&b, 25..28, "size");
        // A member's version byte on an own object's bytes is not taken.
        let mut x = b.clone();
        x[0] = COMPACT_VERSION;
        assert!(StubRecord::decode_compact(&x, FACTS).is_err());
    }

    #[test]
    fn records_without_a_compact_form_keep_the_full_one() {
        type Change = Box<dyn Fn(&mut StubRecord)>;
        let cases: Vec<(&str, Change)> = vec![
            ("not a member", Box::new(|r| *r = sample())),
            ("versioned", Box::new(|r| r.version_id = Some("v1".into()))),
            (
                "md5",
                Box::new(|r| r.md5 = Some("d41d8cd98f00b204e9800998ecf8427e".into())),
            ),
            ("touched", Box::new(|r| r.set_mtime(1))),
            (
                "unknown class",
                Box::new(|r| r.storage_class = "FANCY".into()),
            ),
            (
                "odd offset",
                Box::new(|r| r.pack.as_mut().unwrap().offset += 1),
            ),
            (
                "odd pack size",
                Box::new(|r| r.pack.as_mut().unwrap().pack_size -= 1),
            ),
            (
                "base64 not canonical",
                Box::new(|r| r.checksum = "yZRlqh==".into()),
            ),
            ("too long", Box::new(|r| r.checksum_algo = "sha256".into())),
            (
                "another prefix",
                Box::new(|r| {
                    let id = r.pack.as_ref().unwrap().id.clone();
                    r.object_key = pack_key("elsewhere/packs", &id);
                }),
            ),
        ];
        for (what, change) in cases {
            let mut r = member();
            change(&mut r);
            assert_eq!(r.encode_compact(), None, "{what}");
        }
    }

    /// Every truncation of the compact record `b`, and `b` with a byte more, are refused.
    fn compact_refuses_cuts_and_trailing_bytes(b: &[u8]) {
        for n in 0..b.len() {
            assert!(StubRecord::decode_compact(&b[..n], FACTS).is_err(), "{n}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(
            StubRecord::decode_compact(&long, FACTS),
            Err(StubError::TrailingBytes(1))
        );
    }

    /// The varint at `at` in the compact record `b`, written a byte longer (the same
    /// number), is refused as a bad `field`: one encoding per record.
    fn compact_refuses_a_longer_varint(b: &[u8], at: std::ops::Range<usize>, field: &str) {
        let mut longer = b[..at.end - 1].to_vec();
        longer.extend_from_slice(&[b[at.end - 1] | 0x80, 0x00]);
        longer.extend_from_slice(&b[at.end..]);
        match StubRecord::decode_compact(&longer, FACTS) {
            Err(StubError::BadField { field: f, .. }) => assert_eq!(f, field),
            other => panic!("a longer varint at {at:?}: {other:?}"),
        }
    }

    #[test]
    fn the_compact_decoder_is_strict() {
        let b = member().encode_compact().unwrap();
        compact_refuses_cuts_and_trailing_bytes(&b);
        // The offset 15 MiB + 512 = 30721 blocks: 0x81 0xf0 0x01. Written longer, the same
        // number is refused (one encoding per record).
        assert_eq!(&b[33..36], &[0x81, 0xf0, 0x01]);
        compact_refuses_a_longer_varint(&b, 33..36, "pack");
        // Unknown class and algorithm codes, a range outside the pack.
        let code = 36 + 3 + 3;
        for bad_code in [0xb1, 0x04] {
            let mut x = b.clone();
            x[code] = bad_code;
            assert!(
                StubRecord::decode_compact(&x, FACTS).is_err(),
                "{bad_code:#x}"
            );
        }
        let mut x = b.clone();
        x[36..39].copy_from_slice(&[0x80, 0x80, 0x7f]); // ~2 MiB: past the pack's end
        assert!(matches!(
            StubRecord::decode_compact(&x, FACTS),
            Err(StubError::BadField { field: "pack", .. })
        ));
    }

    #[test]
    fn a_pack_member_round_trips_and_names_only_its_pack() {
        let pid = "fedcba9876543210fedcba9876543210";
        let mut r = sample();
        r.md5 = None;
        r.object_key = pack_key("coldtier/share1/packs", pid);
        r.size = 4096;
        r.pack = Some(PackRef {
            id: pid.into(),
            offset: 1536,
            pack_size: 10240,
        });
        let b = r.encode().unwrap();
        assert_eq!(StubRecord::decode(&b).unwrap(), r);
        assert_eq!(
            parse_pack_key(&r.object_key),
            Some(("coldtier/share1/packs", pid))
        );
        // A record whose key names another pack, a range outside the pack, or a member
        // with extents is refused.
        let mut other = r.clone();
        other.object_key = pack_key("coldtier/share1/packs", ID);
        assert!(other.encode().is_err());
        let mut outside = r.clone();
        outside.pack.as_mut().unwrap().offset = 8000;
        assert!(outside.encode().is_err());
        let mut sparse = r.clone();
        sparse.extents = Some(Extents(vec![(0, 10)]));
        assert!(sparse.encode().is_err());
        // Truncated anywhere in the pack part: refused.
        for n in b.len() - 32..b.len() {
            assert!(StubRecord::decode(&b[..n]).is_err());
        }
    }

    #[test]
    fn sparse_files_keep_their_big_holes_in_at_most_max_extents() {
        const M: u64 = 1 << 20;
        // No holes, or holes too small to matter: no extents.
        assert_eq!(sparse_extents(&[(0, 10 * M)], 10 * M), None);
        assert_eq!(sparse_extents(&[(0, M), (M + 4096, M)], 2 * M + 4096), None);
        // 1 MiB of data in a 1 GiB file.
        let e = sparse_extents(&[(0, M / 2), (512 * M, M / 2)], 1024 * M).unwrap();
        assert_eq!(e.0, vec![(0, M / 2), (512 * M, M / 2)]);
        assert_eq!(e.data_len(), M);
        // Holes under MIN_HOLE become data.
        let e = sparse_extents(&[(0, 10), (100, 10), (10 * M, 10)], 20 * M).unwrap();
        assert_eq!(e.0, vec![(0, 110), (10 * M, 10)]);
        // A file with holes everywhere keeps MAX_EXTENTS extents, merged across the
        // shortest holes.
        let many: Vec<(u64, u64)> = (0..100u64)
            .map(|i| (i * M + (i % 7) * 4096, 4096))
            .collect();
        let e = sparse_extents(&many, 101 * M).unwrap();
        assert_eq!(e.0.len(), MAX_EXTENTS);
        assert!(e.valid_for(101 * M));
        for (o, l) in &many {
            assert!(
                e.0.iter().any(|(eo, el)| o >= eo && o + l <= eo + el),
                "{o} lost"
            );
        }
        // Metadata form round-trips; hostile forms are refused.
        assert_eq!(extents_from_meta(&extents_to_meta(&e), 101 * M).unwrap(), e);
        for bad in [
            "",
            "1+",
            "+1",
            "x+1",
            "10+10,5+1",
            "0+0",
            "0+ffffffffffffffff",
            "0+10,10+10000000000000000",
            "-1+2",
        ] {
            assert!(extents_from_meta(bad, 1000).is_err(), "{bad:?} accepted");
        }
        let too_many = (0..17)
            .map(|i| format!("{:x}+1", i * 10))
            .collect::<Vec<_>>()
            .join(",");
        assert!(extents_from_meta(&too_many, 1000).is_err());
    }

    #[test]
    fn sample_round_trips_and_is_compact() {
        let r = sample();
        let b = r.encode().unwrap();
        assert_eq!(StubRecord::decode(&b).unwrap(), r);
        assert!(b.len() < 256, "{} bytes", b.len());
        let min = StubRecord {
            version_id: None,
            md5: None,
            ..sample()
        };
        let b = min.encode().unwrap();
        assert_eq!(StubRecord::decode(&b).unwrap(), min);
        assert_eq!(r.content_version(), Some(0x17f0_0000_0000_0001));
    }

    /// The exact bytes of a small record: pins the format, so a change of encoding is a
    /// deliberate act (a new version), not an accident.
    #[test]
    fn encoding_is_pinned() {
        let r = StubRecord {
            version: 1,
            file_id: ID.into(),
            object_key: object_key("p", ID, 2),
            version_id: None,
            size: 3,
            mtime_ns: -1,
            ctime_ns: 5,
            ino: 6,
            checksum_algo: "a".into(),
            checksum: "b".into(),
            md5: Some("000102030405060708090a0b0c0d0e0f".into()),
            storage_class: "S".into(),
            config_version: 7,
            content_mtime_ns: None,
            extents: None,
            chunks: None,
            pack: None,
        };
        let want = "0102\
            0123456789abcdef0123456789abcdef\
            0000000000000002\
            0000000000000003\
            ffffffffffffffff\
            0000000000000005\
            0000000000000006\
            0000000000000007\
            0170\
            0161\
            0162\
            000102030405060708090a0b0c0d0e0f\
            0153";
        assert_eq!(hex::encode(r.encode().unwrap()), want);
        // Times set through the mount since the copy: the content's mtime follows.
        let mut t = r.clone();
        t.set_mtime(9);
        assert_eq!((t.mtime_ns, t.content_mtime()), (9, -1));
        let b = hex::encode(t.encode().unwrap());
        assert_eq!(&b[2..4], "06", "flags");
        assert!(b.ends_with("0153ffffffffffffffff"), "{b}");
        t.set_mtime(-1);
        assert_eq!(t, r, "back to the content's mtime: the field goes");
        let bad = StubRecord {
            content_mtime_ns: Some(-1),
            ..r
        };
        assert!(bad.encode().is_err(), "kept only where it differs");
    }

    #[test]
    fn random_records_round_trip_canonically() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..5000 {
            let r = random_record(&mut rng);
            let b = r.encode().unwrap_or_else(|e| panic!("#{i} {r:?}: {e}"));
            assert!(b.len() <= MAX_ENCODED_LEN);
            let d = StubRecord::decode(&b).unwrap_or_else(|e| panic!("#{i} {r:?}: {e}"));
            assert_eq!(d, r);
            assert_eq!(d.encode().unwrap(), b);
        }
    }

    #[test]
    fn every_truncation_fails() {
        let mut rng = Rng(42);
        let mut records = vec![sample()];
        records.extend((0..200).map(|_| random_record(&mut rng)));
        for r in records {
            let b = r.encode().unwrap();
            for n in 0..b.len() {
                assert!(
                    StubRecord::decode(&b[..n]).is_err(),
                    "prefix of {n}/{} bytes decoded",
                    b.len()
                );
            }
        }
        assert_eq!(StubRecord::decode(&[]), Err(StubError::Empty));
        assert_eq!(
            StubRecord::decode(&[1, 0, 1]),
            Err(StubError::Truncated("file_id"))
        );
    }

    #[test]
    fn trailing_garbage_fails() {
        let mut b = sample().encode().unwrap();
        b.push(0);
        assert_eq!(StubRecord::decode(&b), Err(StubError::TrailingBytes(1)));
        b.extend_from_slice(b"more");
        assert_eq!(StubRecord::decode(&b), Err(StubError::TrailingBytes(5)));
    }

    #[test]
    fn unknown_version_and_flags_fail() {
        let mut b = sample().encode().unwrap();
        for v in [0u8, 2, 0x7b, 255] {
            b[0] = v;
            assert_eq!(StubRecord::decode(&b), Err(StubError::UnknownVersion(v)));
        }
        b[0] = 1;
        b[1] |= 128;
        assert_eq!(StubRecord::decode(&b), Err(StubError::UnknownFlags(131)));
        // JSON (what a future or foreign writer might try) is no version 1 record.
        assert_eq!(
            StubRecord::decode(br#"{"version":1}"#),
            Err(StubError::UnknownVersion(b'{'))
        );
        let r = StubRecord {
            version: 2,
            ..sample()
        };
        assert_eq!(r.encode(), Err(StubError::UnknownVersion(2)));
    }

    #[test]
    fn overlong_input_fails_before_parsing() {
        let mut b = sample().encode().unwrap();
        b.resize(MAX_ENCODED_LEN + 1, b'x');
        assert_eq!(
            StubRecord::decode(&b),
            Err(StubError::TooLong(MAX_ENCODED_LEN + 1))
        );
    }

    fn field_of(e: StubError) -> &'static str {
        match e {
            StubError::BadField { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn bad_fields_are_rejected_by_encode_and_named() {
        type Breaker = Box<dyn Fn(&mut StubRecord)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("file_id", Box::new(|r| r.file_id = ID.to_uppercase())),
            ("file_id", Box::new(|r| r.file_id = ID[..31].into())),
            (
                "file_id",
                Box::new(|r| r.file_id = format!("{}\0", &ID[..31])),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = format!("p/{ID}/1")),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("p", &"f".repeat(32), 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = format!("{ID}/0000000000000001")),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("a//b", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("/a", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("a/../b", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("a/./b", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("a\0b", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("a\nb", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key("a\\b", ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = object_key(&"x".repeat(256), ID, 1)),
            ),
            (
                "object_key",
                Box::new(|r| r.object_key = format!("p/{ID}/000000000000000A")),
            ),
            ("size", Box::new(|r| r.size = i64::MAX as u64 + 1)),
            ("size", Box::new(|r| r.size = u64::MAX)),
            ("ino", Box::new(|r| r.ino = 0)),
            ("config_version", Box::new(|r| r.config_version = -1)),
            (
                "checksum_algo",
                Box::new(|r| r.checksum_algo = String::new()),
            ),
            (
                "checksum_algo",
                Box::new(|r| r.checksum_algo = "SHA256".into()),
            ),
            (
                "checksum_algo",
                Box::new(|r| r.checksum_algo = "sha\x00256".into()),
            ),
            ("checksum", Box::new(|r| r.checksum = String::new())),
            ("checksum", Box::new(|r| r.checksum = "ab cd".into())),
            ("checksum", Box::new(|r| r.checksum = "ab\0cd".into())),
            ("checksum", Box::new(|r| r.checksum = "x".repeat(256))),
            (
                "md5",
                Box::new(|r| r.md5 = Some("D41D8CD98F00B204E9800998ECF8427E".into())),
            ),
            ("md5", Box::new(|r| r.md5 = Some("d41d".into()))),
            (
                "version_id",
                Box::new(|r| r.version_id = Some(String::new())),
            ),
            (
                "version_id",
                Box::new(|r| r.version_id = Some("v\x001".into())),
            ),
            (
                "storage_class",
                Box::new(|r| r.storage_class = "glacier".into()),
            ),
            (
                "storage_class",
                Box::new(|r| r.storage_class = String::new()),
            ),
        ];
        for (field, break_it) in cases {
            let mut r = sample();
            break_it(&mut r);
            let e = r.encode().unwrap_err();
            assert_eq!(field_of(e.clone()), field, "{r:?}: {e}");
            assert_eq!(r.validate(), Err(e));
        }
        // The largest legal size is fine.
        let r = StubRecord {
            size: i64::MAX as u64,
            ..sample()
        };
        assert_eq!(StubRecord::decode(&r.encode().unwrap()).unwrap(), r);
    }

    /// Forged bytes (valid framing, bad content) are rejected by decode too.
    #[test]
    fn decode_checks_contents() {
        let good = sample().encode().unwrap();
        // size: bytes 26..34
        let mut b = good.clone();
        b[26] = 0x80;
        assert_eq!(field_of(StubRecord::decode(&b).unwrap_err()), "size");
        // ino: bytes 50..58
        let mut b = good.clone();
        b[50..58].fill(0);
        assert_eq!(field_of(StubRecord::decode(&b).unwrap_err()), "ino");
        // The prefix "coldtier/share1" starts at 67 (length byte at 66).
        let mut b = good.clone();
        assert_eq!(&b[67..75], b"coldtier");
        b[67] = 0;
        assert_eq!(field_of(StubRecord::decode(&b).unwrap_err()), "object_key");
        let mut b = good.clone();
        b[67..70].copy_from_slice(b"../");
        assert_eq!(field_of(StubRecord::decode(&b).unwrap_err()), "object_key");
        let mut b = good.clone();
        b[67] = 0xff;
        assert_eq!(field_of(StubRecord::decode(&b).unwrap_err()), "object_key");
        // A zero-length string.
        let mut b = good.clone();
        b[66] = 0;
        assert!(StubRecord::decode(&b).is_err());
    }

    #[test]
    fn random_bytes_never_panic_and_anything_accepted_is_canonical() {
        let mut rng = Rng(7);
        let good = sample().encode().unwrap();
        let mut accepted = 0;
        for i in 0..200_000 {
            let b: Vec<u8> = if i % 2 == 0 {
                // Pure noise, with a plausible first byte half the time.
                let len = rng.below(300) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if !b.is_empty() && rng.below(2) == 0 {
                    b[0] = 1;
                }
                b
            } else {
                // A valid record with a few bytes flipped, cut or added.
                let mut b = good.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] ^= 1 << rng.below(8);
                }
                match rng.below(4) {
                    0 => b.truncate(rng.below(b.len() as u64) as usize),
                    1 => b.push(rng.next() as u8),
                    _ => {}
                }
                b
            };
            if let Ok(r) = StubRecord::decode(&b) {
                accepted += 1;
                assert_eq!(r.encode().unwrap(), b, "accepted bytes are not canonical");
            }
        }
        // Bit flips in numbers and in-charset letters still decode: that is expected.
        assert!(accepted > 0);
    }

    #[test]
    fn random_compact_bytes_never_panic_and_anything_accepted_is_canonical() {
        let mut rng = Rng(11);
        // Both compact forms: a member's and an own object's.
        let good = [
            (member().encode_compact().unwrap(), COMPACT_VERSION),
            (own().encode_compact().unwrap(), COMPACT_OWN_VERSION),
        ];
        let mut accepted = [0, 0];
        for i in 0..200_000 {
            let (good, version) = &good[(i / 2) % 2];
            let mut b = if i % 2 == 0 {
                (0..rng.below(70)).map(|_| rng.next() as u8).collect()
            } else {
                good.clone()
            };
            if !b.is_empty() {
                b[0] = *version;
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] ^= 1 << rng.below(8);
                }
            }
            if let Ok(r) = StubRecord::decode_compact(&b, FACTS) {
                accepted[usize::from(r.pack.is_none())] += 1;
                assert_eq!(
                    r.encode_compact(),
                    Some(b),
                    "accepted bytes are not canonical"
                );
            }
        }
        assert!(accepted[0] > 0 && accepted[1] > 0, "{accepted:?}");
    }

    #[test]
    fn object_keys() {
        assert_eq!(
            object_key("ct/a", ID, 255),
            format!("ct/a/{ID}/00000000000000ff")
        );
        let k = object_key("ct/a", ID, u64::MAX);
        assert_eq!(parse_object_key(&k), Some(("ct/a", ID, u64::MAX)));
        assert_eq!(parse_object_key(&format!("{ID}/00000000000000ff")), None);
        assert_eq!(parse_object_key(&format!("x/{ID}/ff")), None);
        assert_eq!(parse_object_key(&format!("x/{ID}/00000000000000FF")), None);
        assert_eq!(parse_object_key("x/abc/00000000000000ff"), None);
        assert_eq!(parse_object_key(&format!("x//{ID}/00000000000000ff")), None);
        // Lexicographic order of keys is the order of content versions.
        let mut keys: Vec<String> = [300u64, 2, 1 << 40, 17]
            .iter()
            .map(|v| object_key("p", ID, *v))
            .collect();
        keys.sort();
        let versions: Vec<u64> = keys
            .iter()
            .map(|k| parse_object_key(k).unwrap().2)
            .collect();
        assert_eq!(versions, [2, 17, 300, 1 << 40]);
    }

    #[test]
    fn prefixes() {
        for ok in ["a", "coldtier/share1", "a.b/c-d_e", "ünï", ".hidden/x"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        for no in [
            "", "/", "a/", "/a", "a//b", ".", "..", "a/../b", "a\tb", "a\\b",
        ] {
            assert!(check_prefix(no).is_err(), "{no:?}");
        }
    }

    #[test]
    fn file_ids_are_random_hex() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_file_id().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert!(is_valid_file_id(id), "{id}");
        }
        assert!(!is_valid_file_id(&ID.to_uppercase()));
        assert!(!is_valid_file_id(&ID[1..]));
    }

    #[test]
    fn display_is_one_line() {
        let s = sample().to_string();
        assert!(!s.contains('\n'));
        assert!(s.contains(ID) && s.contains("DEEP_ARCHIVE") && s.contains("md5 d41d"));
    }
}
