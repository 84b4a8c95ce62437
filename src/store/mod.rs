//! Object stores: the `ObjectStore` trait that migrate and recall use, `StoreError`
//! {kind, transient}, the checksums (ours, and the form each store reports), key rules, and
//! the `[store]` configuration. Backends: `s3` (the only file that names aws-sdk-s3), `posix`
//! (a directory, like Lustre's lhsmtool_posix) and `memory` (the fake, with failure
//! injection). One conformance suite (`conformance`, tests only) runs against all three.
//!
//! docs/store.md has the contract in prose: error kinds, checksum forms per server,
//! timeouts and retries, measurements.

/// `[limits] upload_bwlimit`: every upload of the mount's S3 store takes its bytes from
/// here before they are sent.
pub static UPLOAD_BW: crate::base::throttle::Bucket = crate::base::throttle::Bucket::new();
/// `[limits] download_bwlimit`: every download takes its bytes from here as they arrive.
pub static DOWNLOAD_BW: crate::base::throttle::Bucket = crate::base::throttle::Bucket::new();

pub mod chunks;
pub mod counting;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod posix;
mod quickack;
pub mod s3;
mod s3_lean;
mod s3_stream;
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryStore;
pub use posix::PosixStore;
pub use s3::S3Store;

/// What every store call returns: a boxed future, so `ObjectStore` stays object-safe and
/// usable as `Arc<dyn ObjectStore>` from tokio tasks.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// An object store. `Send + Sync`; share it as `Arc<dyn ObjectStore>`.
///
/// Keys are the store-relative keys coldtier makes (`<file id>/<content version>`); the
/// store adds its configured prefix. Every call validates its key with [`validate_key`].
pub trait ObjectStore: Send + Sync {
    /// One line for logs: "s3://bucket/prefix at http://127.0.0.1:9000", "posix:/srv/objects".
    fn describe(&self) -> String;

    /// Uploads `req.size` bytes of `req.body`: a file, read with pread from offset 0 (never
    /// through the file position; streamed, never whole in memory), or bytes in memory,
    /// sent as they are; computing our checksum as it reads. S3 uploads above the part size go multipart, parts in parallel; a
    /// failed multipart upload is aborted. A source that is shorter than `size` fails.
    fn put(&self, req: PutRequest) -> StoreFuture<'_, PutResult>;

    /// What the store says of one object (one version of it, if given), with the checksum
    /// it reports and the restore state of archived storage classes.
    fn head<'a>(&'a self, key: &'a str, version_id: Option<&'a str>)
        -> StoreFuture<'a, ObjectMeta>;

    /// Streams the object into `dest` with pwrite at offsets `0..size` (never the file
    /// position), computing `checksum` of what was written; with no `dest`, only the
    /// checksum of what arrived (a read-back check). `expected_size` must be the
    /// object's size, else `ChecksumMismatch`. An archived, not restored object fails with
    /// `InvalidObjectState`. Does not fsync `dest`: the caller does, before trusting it.
    fn get<'a>(&'a self, req: GetRequest<'a>) -> StoreFuture<'a, GetResult>;

    /// Bytes `[start, start + len)` (`range`) of an object of `size` bytes, handed to
    /// `sink` in order as they arrive, in chunks (a bulk recall's pack span kept in memory,
    /// with no file between the network and the members, which check their own bytes).
    /// S3: the chunks of one ranged GET as the HTTP client gives them. Other stores: the
    /// range through [`ObjectStore::get`] into an anonymous file, then in one chunk.
    fn get_range_chunks<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        size: u64,
        (start, len): (u64, u64),
        sink: &'a (dyn Fn(bytes::Bytes) + Send + Sync),
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let tmp = tempfile_in_tmp()
                .map_err(|e| StoreError::io("a temporary file for a range", &e))?;
            self.get(GetRequest {
                key,
                version_id,
                dest: Some(&tmp),
                expected_size: size,
                checksum: ChecksumAlgo::Crc32c,
                extents: None,
                range: Some((start, len)),
                dest_base: start,
                progress: None,
            })
            .await?;
            let mut v = vec![0u8; len as usize];
            read_exact_at(&tmp, &mut v, 0)?;
            sink(bytes::Bytes::from(v));
            Ok(())
        })
    }

    /// Asks for a temporary copy of an archived object for `days` days. Never fails
    /// because a restore is already under way or done: says so instead.
    fn restore<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        days: u32,
        tier: RestoreTier,
    ) -> StoreFuture<'a, RestoreOutcome>;

    /// Deletes one object (one version, if given). Deleting what is not there succeeds.
    fn delete<'a>(&'a self, key: &'a str, version_id: Option<&'a str>) -> StoreFuture<'a, ()>;

    /// Every object whose key starts with `prefix` (a plain string prefix, "" for all),
    /// sorted by key; paginated internally.
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ListEntry>>;

    /// The object's tags (the state coldtier keeps on it).
    fn get_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, BTreeMap<String, String>>;

    /// Replaces the object's tags.
    fn set_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        tags: BTreeMap<String, String>,
    ) -> StoreFuture<'a, ()>;

    /// Removes every version of `key`, and on S3 also its delete markers and unfinished
    /// multipart uploads: for an object whose version is not known (an upload that failed
    /// or was cut off by a crash). Removing what is not there succeeds.
    fn purge<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    /// Where this store keeps its objects, for a copy made on the server by another store
    /// of the same kind on the same endpoint ([`ObjectStore::copy_from`]); None: its
    /// objects cannot be copied that way.
    fn copy_source(&self) -> Option<CopySource> {
        None
    }

    /// Copies object `key` (version `version_id`, `size` bytes) of the store `from`
    /// describes into this store under the same key, on the server: the data never passes
    /// through us (S3: CopyObject, with this store's storage class, SSE and checksum
    /// algorithm `algo`, the source's metadata, no tags). None: not possible here (another
    /// endpoint or kind, an object too large for one CopyObject); the caller streams it.
    fn copy_from<'a>(
        &'a self,
        from: &'a CopySource,
        key: &'a str,
        version_id: Option<&'a str>,
        size: u64,
        algo: ChecksumAlgo,
    ) -> Option<StoreFuture<'a, CopyResult>> {
        let _ = (from, key, version_id, size, algo);
        None
    }

    /// Moves one object (version) to `class` on the server (S3: CopyObject onto the same
    /// key with the new class; the data never passes through us), keeping its metadata and
    /// tags. Returns the id of the version that now holds the data: on a versioned bucket
    /// a new one (the old version is deleted), else `version_id` as given. Used to archive
    /// a copy that was proven by reading it back, on a store whose checksums prove nothing.
    fn set_storage_class<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        class: StorageClass,
    ) -> StoreFuture<'a, Option<String>>;

    /// Whether this store refuses an upload whose body does not match the checksum sent
    /// with it, so that its answer (and its HEAD) proves what it stored. Finds out by
    /// trying: `key` is a probe key of the caller's (see [`check`]); any object made is
    /// deleted again. A store that cannot be probed (the posix store: its "answer" is our
    /// own code's) says false, and copies to it are proven by reading them back.
    fn validates_checksums<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;

    /// Whether the answer to a multipart upload proves what was stored (a checksum of the
    /// whole object that `PutResult::proven_by` accepts), found by one small multipart
    /// upload under `key` (deleted again). [`check`] asks only a store that validates its
    /// single PUTs. An S3 store that finds its multipart answers prove nothing sends
    /// objects up to 5 GiB in one streamed PUT from then on, proven by its answer, instead
    /// of parts that would each be read back. Stores without multipart uploads: true.
    fn multipart_proven<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(true) })
    }
}

/// What [`check`] found out about a store at mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCheck {
    /// The store refused a body that did not match its checksum: its word on what it
    /// stored is proof. Otherwise every copy is read back before a file is stubbed.
    pub validates_checksums: bool,
    /// Asked only of a store that validates: whether a multipart upload's answer proves it
    /// too ([`ObjectStore::multipart_proven`]). `Some(false)`: large objects go in one PUT.
    pub multipart_proven: Option<bool>,
}

/// Checks that a store can be used (the bucket exists, the credentials may PUT, GET and
/// DELETE under the prefix) and whether its checksums can be trusted. `nonce` makes the
/// probe keys unique (`probe/<nonce>` and `probe/<nonce>-bad`); what is put is deleted.
pub async fn check(store: &dyn ObjectStore, nonce: &str) -> Result<StoreCheck, StoreError> {
    let key = format!("{PROBE_PREFIX}/{nonce}");
    let body = format!("coldtier store check {nonce}\n").into_bytes();
    let put = store
        .put(probe_request(&key, &body)?)
        .await
        .map_err(|e| e.context("PUT of a probe object"))?;
    let got = store
        .get(GetRequest {
            key: &key,
            version_id: put.version_id.as_deref(),
            dest: None,
            expected_size: body.len() as u64,
            checksum: put.checksum.algo,
            extents: None,
            range: None,
            dest_base: 0,
            progress: None,
        })
        .await
        .map_err(|e| e.context("GET of the probe object"));
    let deleted = store
        .delete(&key, put.version_id.as_deref())
        .await
        .map_err(|e| e.context("DELETE of the probe object"));
    let got = got?;
    deleted?;
    if got.checksum != put.checksum {
        return Err(StoreError::new(
            StoreErrorKind::ChecksumMismatch,
            format!(
                "the probe object read back as {}, it was put as {}: something between coldtier and the store changes data",
                got.checksum, put.checksum
            ),
        ));
    }
    let validates_checksums = store
        .validates_checksums(&format!("{key}-bad"))
        .await
        .map_err(|e| e.context("checksum probe"))?;
    let multipart_proven = if validates_checksums {
        Some(
            store
                .multipart_proven(&format!("{key}-multipart"))
                .await
                .map_err(|e| e.context("multipart probe"))?,
        )
    } else {
        None
    };
    Ok(StoreCheck {
        validates_checksums,
        multipart_proven,
    })
}

/// The key segment of the probe objects [`check`] puts (and deletes again).
pub const PROBE_PREFIX: &str = "probe";

/// The upload of a probe object: `body` under `key`, STANDARD, without metadata or tags.
pub(crate) fn probe_request(key: &str, body: &[u8]) -> Result<PutRequest, StoreError> {
    Ok(PutRequest {
        key: key.to_string(),
        body: probe_file(body)?.into(),
        size: body.len() as u64,
        storage_class: Some(StorageClass::Standard),
        metadata: BTreeMap::new(),
        tags: BTreeMap::new(),
        checksum: None,
        extents: None,
    })
}

/// An unlinked temporary file holding `body`: what a PutRequest reads.
pub(crate) fn probe_file(body: &[u8]) -> Result<File, StoreError> {
    let f = tempfile_in_tmp().map_err(|e| StoreError::io("a temporary file for the probe", &e))?;
    f.write_all_at(body, 0)
        .map_err(|e| StoreError::io("a temporary file for the probe", &e))?;
    Ok(f)
}

/// An anonymous file (`memfd`): no name anywhere, gone when closed.
fn tempfile_in_tmp() -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: the name is NUL-terminated; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"coldtier-probe".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Builds the store the configuration names.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Ok(match config {
        StoreConfig::S3(c) => Arc::new(S3Store::new(c).await?),
        StoreConfig::Posix(c) => Arc::new(PosixStore::new(c)?),
    })
}

// ---------------------------------------------------------------------------------------
// Requests and results

/// One upload.
#[derive(Debug)]
pub struct PutRequest {
    pub key: String,
    /// The source: a file, read with pread at offsets `0..size` (pass `file.try_clone()`),
    /// or bytes in memory.
    pub body: PutBody,
    pub size: u64,
    /// `None`: the store's configured class.
    pub storage_class: Option<StorageClass>,
    /// The object's genealogy. Keys: lowercase `[a-z0-9-]`; values: any UTF-8 (the S3
    /// store percent-encodes what HTTP headers cannot carry and decodes it again in `head`).
    pub metadata: BTreeMap<String, String>,
    /// State tags; see [`validate_tags`] for S3's limits.
    pub tags: BTreeMap<String, String>,
    /// `None`: the store's configured algorithm.
    pub checksum: Option<ChecksumAlgo>,
    /// A sparse file: only these extents are read, back to back (`size` is then their
    /// total, [`Extents::data_len`]).
    pub extents: Option<Extents>,
}

/// The bytes of an upload.
#[derive(Debug)]
pub enum PutBody {
    /// A file, read with pread at offsets `0..size` (through the request's extents, if any).
    File(File),
    /// Bytes already in memory (a pack built in memory): sent as they are, no copy read.
    /// Never with extents.
    Memory(bytes::Bytes),
}

impl From<File> for PutBody {
    fn from(f: File) -> Self {
        PutBody::File(f)
    }
}

impl PutBody {
    /// Another handle on the same bytes (a dup of the file; the same buffer).
    pub fn try_clone(&self) -> std::io::Result<PutBody> {
        Ok(match self {
            PutBody::File(f) => PutBody::File(f.try_clone()?),
            PutBody::Memory(b) => PutBody::Memory(b.clone()),
        })
    }

    /// Reads object bytes `off..off + buf.len()` (of the file seen through `extents`).
    pub(crate) fn read_mapped(
        &self,
        extents: Option<&Extents>,
        buf: &mut [u8],
        off: u64,
    ) -> Result<(), StoreError> {
        match self {
            PutBody::File(f) => read_mapped(f, extents, buf, off),
            PutBody::Memory(_) if extents.is_some() => Err(StoreError::new(
                StoreErrorKind::Other,
                "a body in memory has no extents",
            )),
            PutBody::Memory(b) => {
                let end = usize::try_from(off)
                    .ok()
                    .and_then(|o| o.checked_add(buf.len()).map(|e| (o, e)))
                    .filter(|&(_, e)| e <= b.len());
                let Some((o, e)) = end else {
                    return Err(StoreError::new(
                        StoreErrorKind::Other,
                        format!(
                            "read of {} bytes at {off} past the end of a {}-byte body",
                            buf.len(),
                            b.len()
                        ),
                    ));
                };
                buf.copy_from_slice(&b[o..e]);
                Ok(())
            }
        }
    }
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq)]
pub struct PutResult {
    pub key: String,
    /// `None` on an unversioned bucket.
    pub version_id: Option<String>,
    pub etag: Option<String>,
    /// Our checksum of the whole object, from the bytes we read and sent (what the
    /// catalog keeps and what a recall's `GetResult::checksum` must equal).
    pub checksum: Checksum,
    /// Our checksum in the form the store reports it: the whole-object value for a single
    /// PUT, the composite `<base64>-<parts>` for an S3 multipart upload.
    pub expected: ReportedChecksum,
    /// What the store said it stored, in its answer to the upload (None if it said nothing).
    pub reported: Option<ReportedChecksum>,
    /// 1 for a single PUT, else the number of parts.
    pub parts: u32,
    /// The CRC32C of each chunk of what was sent, for an object of more than one chunk
    /// ([`chunks`]).
    pub chunks: Option<chunks::ChunkSums>,
}

impl PutResult {
    /// Whether `reported` (what a store says it holds) is our checksum of what we sent,
    /// in either form a store may report for it: the COMPOSITE `<base64>-<parts>` of an
    /// S3 multipart upload ([`PutResult::expected`]), or the FULL_OBJECT value, which is
    /// our whole-object checksum (S3 has both types for the CRCs; moto 5.2.5 reports the
    /// full-object CRC of a multipart upload). Whether the store's word is proof at all is
    /// another matter: see [`ObjectStore::validates_checksums`].
    pub fn proven_by(&self, reported: &ReportedChecksum) -> bool {
        reported.matches(&self.expected)
            || (reported.algo == self.checksum.algo
                && reported.value == self.checksum.base64()
                && reported.parts.is_none_or(|n| n == self.parts))
    }
}

/// Where an S3 store's objects are, for a server-side copy ([`ObjectStore::copy_source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    /// None: AWS itself (the region's endpoint).
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
}

/// What a server-side copy made ([`ObjectStore::copy_from`]).
#[derive(Debug, Clone)]
pub struct CopyResult {
    /// The copy's version (`None` on an unversioned bucket).
    pub version_id: Option<String>,
    /// The checksum the server says the copy has: in its CopyObject answer, else on a HEAD
    /// of the copy (None if it says nothing).
    pub reported: Option<ReportedChecksum>,
}

/// One download.
#[derive(Debug)]
pub struct GetRequest<'a> {
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    /// Written with pwrite at offsets `0..expected_size`; None: the bytes are only hashed
    /// (a read-back check needs no space the size of the object).
    pub dest: Option<&'a File>,
    pub expected_size: u64,
    /// The algorithm the object was stored with (its `PutResult::checksum.algo`).
    pub checksum: ChecksumAlgo,
    /// An object made from a sparse file: its bytes go to these extents of `dest` (which
    /// the caller has made as large as the file: the rest stays holes).
    pub extents: Option<&'a Extents>,
    /// Only bytes `[start, start + len)` of the object (one ranged GET), written to `dest`
    /// at `start` (not with `extents`) and hashed by themselves: a chunk of a streaming
    /// recall. `expected_size` is still the whole object's.
    pub range: Option<(u64, u64)>,
    /// With `range`: the offset in the object whose byte lands at 0 in `dest` (a range is
    /// written at `start - dest_base`): a pack member's bytes into its own file, which
    /// starts at the member's offset in the pack. 0 otherwise.
    pub dest_base: u64,
    /// With `range` and `dest`: told, as the bytes are written to `dest` in order, the
    /// offset in `dest` below which the range's bytes are written (the first, `start -
    /// dest_base`, before any), so that a reader may take a prefix before the rest has
    /// come. Stores that do not tell it write the whole range before they return.
    pub progress: Option<&'a tokio::sync::watch::Sender<u64>>,
}

impl<'a> GetRequest<'a> {
    /// The whole object (`expected_size` bytes), into `dest` at 0 (or only hashed).
    pub fn whole(
        key: &'a str,
        version_id: Option<&'a str>,
        dest: Option<&'a File>,
        expected_size: u64,
        checksum: ChecksumAlgo,
    ) -> Self {
        GetRequest {
            key,
            version_id,
            dest,
            expected_size,
            checksum,
            extents: None,
            range: None,
            dest_base: 0,
            progress: None,
        }
    }
}

/// What a download wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GetResult {
    pub bytes: u64,
    /// Our checksum of the bytes received (and written to `dest`, if any).
    pub checksum: Checksum,
    pub version_id: Option<String>,
}

/// What the store says of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub storage_class: StorageClass,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    /// The checksum the store reports (S3: HEAD with checksum mode enabled).
    pub checksum: Option<ReportedChecksum>,
    pub metadata: BTreeMap<String, String>,
    pub restore: RestoreStatus,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub storage_class: StorageClass,
}

/// Whether an object can be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreStatus {
    /// Readable: not in an archive class.
    NotArchived,
    /// In GLACIER / DEEP_ARCHIVE (or an archive tier): needs `restore` before `get`.
    Archived,
    /// A restore was asked for and is not done yet.
    InProgress,
    /// A temporary copy is readable until `expiry` (the store's text, e.g. an HTTP date).
    Restored { expiry: Option<String> },
}

impl RestoreStatus {
    pub fn readable(&self) -> bool {
        matches!(
            self,
            RestoreStatus::NotArchived | RestoreStatus::Restored { .. }
        )
    }
}

/// What `restore` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    Started,
    AlreadyInProgress,
    AlreadyRestored,
    /// The object is not in an archive class: it is readable as it is.
    NotArchived,
}

/// The S3 RestoreObject tier of an archived object (`recall.restore_tier`; the names,
/// in the config too, are S3's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum RestoreTier {
    /// Minutes; costs most; not offered for DEEP_ARCHIVE.
    Expedited,
    /// Hours.
    #[default]
    Standard,
    /// Many hours; costs least.
    Bulk,
}

impl RestoreTier {
    /// The value S3 expects.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreTier::Expedited => "Expedited",
            RestoreTier::Standard => "Standard",
            RestoreTier::Bulk => "Bulk",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// What kind of failure; callers decide on `kind` and `transient`, never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No such object (or version).
    NotFound,
    /// Credentials refused or permission missing.
    AccessDenied,
    /// Archived and not restored: `restore` first.
    InvalidObjectState,
    /// The store cannot be reached (connection refused, timeout, DNS, unmounted root).
    Unreachable,
    /// The store asks us to slow down (503 SlowDown, 429).
    Throttled,
    /// Data does not match its checksum or size (the store refused our upload's checksum,
    /// or an object's size is not the expected one).
    ChecksumMismatch,
    /// The configuration is wrong (no such bucket, bad storage class, unsupported feature).
    InvalidConfig,
    /// A bad argument: key, metadata or tags that break the rules.
    InvalidArgument,
    Other,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreErrorKind::NotFound => "not found",
            StoreErrorKind::AccessDenied => "access denied",
            StoreErrorKind::InvalidObjectState => "archived, not restored",
            StoreErrorKind::Unreachable => "unreachable",
            StoreErrorKind::Throttled => "throttled",
            StoreErrorKind::ChecksumMismatch => "checksum mismatch",
            StoreErrorKind::InvalidConfig => "invalid configuration",
            StoreErrorKind::InvalidArgument => "invalid argument",
            StoreErrorKind::Other => "error",
        })
    }
}

/// A store failure. `transient`: the same call may succeed later (retry with backoff).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({kind}, {})", if *.transient { "transient" } else { "permanent" })]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub transient: bool,
    pub message: String,
    /// The errno of a local I/O failure (reading the source, writing the destination),
    /// so that a full disk reaches the reader as `ENOSPC`/`EDQUOT`, not as a store error.
    pub errno: Option<i32>,
}

impl StoreError {
    /// An error of `kind`, transient as that kind usually is.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        let transient = matches!(
            kind,
            StoreErrorKind::Unreachable | StoreErrorKind::Throttled
        );
        StoreError {
            kind,
            transient,
            message: message.into(),
            errno: None,
        }
    }
    pub fn transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(StoreErrorKind::NotFound, format!("{what}: no such object"))
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::InvalidArgument, message)
    }
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::InvalidConfig, message)
    }
    /// A local I/O failure (reading the source, writing the destination, the posix store).
    pub fn io(context: impl fmt::Display, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => StoreErrorKind::NotFound,
            K::PermissionDenied => StoreErrorKind::AccessDenied,
            K::TimedOut | K::NotConnected | K::ConnectionRefused | K::ConnectionReset => {
                StoreErrorKind::Unreachable
            }
            _ => match e.raw_os_error() {
                Some(libc::ESTALE | libc::EHOSTDOWN | libc::EHOSTUNREACH | libc::ENOTCONN) => {
                    StoreErrorKind::Unreachable
                }
                _ => StoreErrorKind::Other,
            },
        };
        let transient = kind == StoreErrorKind::Unreachable
            || matches!(
                e.raw_os_error(),
                Some(libc::EIO | libc::ENOSPC | libc::EDQUOT | libc::EINTR | libc::EAGAIN)
            );
        StoreError {
            kind,
            transient,
            message: format!("{context}: {e}"),
            errno: e.raw_os_error(),
        }
    }
    pub fn is(&self, kind: StoreErrorKind) -> bool {
        self.kind == kind
    }
    /// The same error, its message prefixed with what was being done.
    pub fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

// ---------------------------------------------------------------------------------------
// Storage classes

/// An S3 storage class. Unknown names read back from a store are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum StorageClass {
    #[default]
    Standard,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    GlacierIr,
    /// S3 Glacier Flexible Retrieval: needs a restore.
    Glacier,
    /// Needs a restore (hours).
    DeepArchive,
    ReducedRedundancy,
    Other(String),
}

impl StorageClass {
    pub fn as_str(&self) -> &str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
            StorageClass::ReducedRedundancy => "REDUCED_REDUNDANCY",
            StorageClass::Other(s) => s,
        }
    }
    /// Whether objects of this class must be restored before they can be read.
    pub fn is_archive(&self) -> bool {
        matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }
    /// The class a store reports (unknown names kept).
    pub fn from_reported(s: &str) -> Self {
        s.parse()
            .unwrap_or_else(|_| StorageClass::Other(s.to_string()))
    }
}

impl FromStr for StorageClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "STANDARD" => StorageClass::Standard,
            "STANDARD_IA" => StorageClass::StandardIa,
            "ONEZONE_IA" => StorageClass::OnezoneIa,
            "INTELLIGENT_TIERING" => StorageClass::IntelligentTiering,
            "GLACIER_IR" => StorageClass::GlacierIr,
            "GLACIER" => StorageClass::Glacier,
            "DEEP_ARCHIVE" => StorageClass::DeepArchive,
            "REDUCED_REDUNDANCY" => StorageClass::ReducedRedundancy,
            _ => {
                return Err(format!(
                    "unknown storage class `{s}` (STANDARD, STANDARD_IA, ONEZONE_IA, \
                     INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE, REDUCED_REDUNDANCY)"
                ))
            }
        })
    }
}

impl TryFrom<String> for StorageClass {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Checksums

/// A checksum algorithm S3 knows. CRC64NVME is left out: S3 only does it as a full-object
/// checksum and moto computes it only with awscrt installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgo {
    #[default]
    Crc32c,
    Crc32,
    Sha1,
    Sha256,
}

impl ChecksumAlgo {
    /// The S3 name (`x-amz-checksum-<lowercase name>`).
    pub fn s3_name(self) -> &'static str {
        match self {
            ChecksumAlgo::Crc32c => "CRC32C",
            ChecksumAlgo::Crc32 => "CRC32",
            ChecksumAlgo::Sha1 => "SHA1",
            ChecksumAlgo::Sha256 => "SHA256",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgo::Crc32c => "crc32c",
            ChecksumAlgo::Crc32 => "crc32",
            ChecksumAlgo::Sha1 => "sha1",
            ChecksumAlgo::Sha256 => "sha256",
        }
    }
    pub fn is_crc(self) -> bool {
        matches!(self, ChecksumAlgo::Crc32c | ChecksumAlgo::Crc32)
    }
    fn crc_algorithm(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            ChecksumAlgo::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            ChecksumAlgo::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            _ => None,
        }
    }
}

impl FromStr for ChecksumAlgo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "crc32c" => Ok(ChecksumAlgo::Crc32c),
            "crc32" => Ok(ChecksumAlgo::Crc32),
            "sha1" => Ok(ChecksumAlgo::Sha1),
            "sha256" => Ok(ChecksumAlgo::Sha256),
            _ => Err(format!(
                "unknown checksum `{s}` (crc32c, crc32, sha1, sha256)"
            )),
        }
    }
}

impl fmt::Display for ChecksumAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A checksum of some bytes: the raw digest (CRCs big-endian, as S3 sends them).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    pub algo: ChecksumAlgo,
    pub value: Vec<u8>,
}

impl Checksum {
    /// [`Checksum::of`] `data`, given its CRC32C `crc` (already computed on the way, by
    /// [`chunks::ChunkSummer::update_crc`]): no second pass over the bytes for CRC32C.
    pub fn of_crc32c_or(algo: ChecksumAlgo, crc: u32, data: &[u8]) -> Self {
        match algo {
            ChecksumAlgo::Crc32c => Checksum::crc32c(crc),
            _ => Checksum::of(algo, data),
        }
    }

    /// The CRC32C checksum whose value is `crc`.
    pub fn crc32c(crc: u32) -> Self {
        Checksum {
            algo: ChecksumAlgo::Crc32c,
            value: crc.to_be_bytes().to_vec(),
        }
    }

    pub fn of(algo: ChecksumAlgo, data: &[u8]) -> Self {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finalize()
    }
    /// The base64 form S3 uses in `x-amz-checksum-*` headers.
    pub fn base64(&self) -> String {
        b64(&self.value)
    }
    /// Parses the `algo:base64` form of `Display`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, v) = s
            .split_once(':')
            .ok_or_else(|| format!("checksum `{s}` is not `algo:base64`"))?;
        let algo: ChecksumAlgo = a.parse()?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|e| format!("checksum `{s}`: {e}"))?;
        Ok(Checksum { algo, value })
    }
    /// This whole-object checksum in the form a store reports for a single PUT.
    pub fn reported(&self) -> ReportedChecksum {
        ReportedChecksum {
            algo: self.algo,
            value: self.base64(),
            parts: None,
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.base64())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A checksum as a store reports it: `value` is base64; `parts` is `Some(n)` for S3's
/// composite checksum of a multipart upload (`<base64>-<n>`: the checksum of the
/// concatenated raw part checksums), `None` for a whole-object checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedChecksum {
    pub algo: ChecksumAlgo,
    pub value: String,
    pub parts: Option<u32>,
}

impl ReportedChecksum {
    /// Parses a header value such as `AAAAAA==` or `AAAAAA==-3`.
    pub fn parse(algo: ChecksumAlgo, s: &str) -> Self {
        if let Some((v, n)) = s.rsplit_once('-') {
            if let Ok(n) = n.parse::<u32>() {
                return ReportedChecksum {
                    algo,
                    value: v.to_string(),
                    parts: Some(n),
                };
            }
        }
        ReportedChecksum {
            algo,
            value: s.to_string(),
            parts: None,
        }
    }
    /// Like for like: same algorithm and value, and the same part count where both say
    /// one (moto's HEAD leaves the `-<n>` off a composite checksum; its GET keeps it).
    pub fn matches(&self, other: &ReportedChecksum) -> bool {
        self.algo == other.algo
            && self.value == other.value
            && match (self.parts, other.parts) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for ReportedChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parts {
            Some(n) => write!(f, "{}:{}-{n}", self.algo, self.value),
            None => write!(f, "{}:{}", self.algo, self.value),
        }
    }
}

/// What S3 reports for a COMPOSITE multipart upload made of parts with these checksums:
/// the checksum (same algorithm) of the concatenated raw part checksums, `-<parts>`.
pub fn composite_checksum(algo: ChecksumAlgo, parts: &[Checksum]) -> ReportedChecksum {
    let mut h = Hasher::new(algo);
    for p in parts {
        debug_assert_eq!(p.algo, algo);
        h.update(&p.value);
    }
    ReportedChecksum {
        algo,
        value: h.finalize().base64(),
        parts: Some(parts.len() as u32),
    }
}

/// The CRC of `a ++ b` from the CRCs of `a` and of `b` (`b_len` bytes long); `None` for
/// algorithms that cannot be combined (SHA).
pub fn combine_crc(a: &Checksum, b: &Checksum, b_len: u64) -> Option<Checksum> {
    let alg = a.algo.crc_algorithm()?;
    if a.algo != b.algo {
        return None;
    }
    let x = u32::from_be_bytes(a.value.as_slice().try_into().ok()?) as u64;
    let y = u32::from_be_bytes(b.value.as_slice().try_into().ok()?) as u64;
    let c = crc_fast::checksum_combine(alg, x, y, b_len) as u32;
    Some(Checksum {
        algo: a.algo,
        value: c.to_be_bytes().to_vec(),
    })
}

/// An incremental checksum.
pub struct Hasher {
    algo: ChecksumAlgo,
    inner: HasherInner,
}

enum HasherInner {
    Crc(crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algo: ChecksumAlgo) -> Self {
        use sha2::Digest as _;
        let inner = match algo {
            ChecksumAlgo::Crc32c | ChecksumAlgo::Crc32 => {
                HasherInner::Crc(crc_fast::Digest::new(algo.crc_algorithm().unwrap()))
            }
            ChecksumAlgo::Sha1 => HasherInner::Sha1(sha1::Sha1::new()),
            ChecksumAlgo::Sha256 => HasherInner::Sha256(sha2::Sha256::new()),
        };
        Hasher { algo, inner }
    }
    pub fn algo(&self) -> ChecksumAlgo {
        self.algo
    }
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        match &mut self.inner {
            HasherInner::Crc(d) => d.update(data),
            HasherInner::Sha1(d) => d.update(data),
            HasherInner::Sha256(d) => d.update(data),
        }
    }
    pub fn finalize(self) -> Checksum {
        use sha2::Digest as _;
        let value = match self.inner {
            HasherInner::Crc(d) => (d.finalize() as u32).to_be_bytes().to_vec(),
            HasherInner::Sha1(d) => d.finalize().to_vec(),
            HasherInner::Sha256(d) => d.finalize().to_vec(),
        };
        Checksum {
            algo: self.algo,
            value,
        }
    }
}

/// The base64 MD5 of `data` (a `Content-MD5` header value).
pub fn content_md5(data: &[u8]) -> String {
    use md5::Digest as _;
    b64(&md5::Md5::digest(data))
}

// ---------------------------------------------------------------------------------------
// Keys, metadata, tags

/// Longest key we accept (S3 allows 1024 bytes with the prefix).
pub const MAX_KEY_LEN: usize = 900;

/// coldtier's key rules, the same on every store: 1..=900 bytes of UTF-8 without NUL or
/// control characters; `/`-separated components, none empty, none starting with `.` (so no
/// `.` or `..`, and the posix store's temporary and `.meta.json` names cannot collide),
/// none ending in `.meta.json`; no leading or trailing `/`.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |why: &str| Err(StoreError::invalid_argument(format!("key {key:?}: {why}")));
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 900 bytes");
    }
    if key.chars().any(|c| c.is_control()) {
        return bad("contains NUL or a control character");
    }
    for comp in key.split('/') {
        if comp.is_empty() {
            return bad("has an empty component (leading, trailing or double `/`)");
        }
        if comp.starts_with('.') {
            return bad("has a component starting with `.`");
        }
        if comp.ends_with(posix::META_SUFFIX) {
            return bad("has a component ending in `.meta.json`");
        }
    }
    Ok(())
}

/// A list prefix: like a key, but may be empty or end with `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let p = prefix.strip_suffix('/').unwrap_or(prefix);
    if p.is_empty() {
        if prefix.is_empty() {
            return Ok(());
        }
        return Err(StoreError::invalid_argument("list prefix \"/\""));
    }
    validate_key(p)
}

/// Metadata keys are lowercase `[a-z0-9-]` (S3 lowercases them anyway).
pub fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), StoreError> {
    for k in metadata.keys() {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(StoreError::invalid_argument(format!(
                "metadata key {k:?}: use lowercase a-z, 0-9 and -"
            )));
        }
    }
    Ok(())
}

/// S3's tag rules: at most 10; keys 1..=128 and values 0..=256 characters of letters,
/// digits, space and `+ - = . _ : / @`.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
    if tags.len() > 10 {
        return Err(StoreError::invalid_argument("more than 10 tags"));
    }
    let ok = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || " +-=._:/@".contains(c))
    };
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 || !ok(k) || !ok(v) {
            return Err(StoreError::invalid_argument(format!(
                "tag {k:?}={v:?} breaks S3's tag rules"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Configuration

/// `[store]`: where objects go. `kind = "s3"` or `kind = "posix"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // one per mount, read once: boxing buys nothing
pub enum StoreConfig {
    S3(S3Config),
    Posix(PosixConfig),
}

/// What the tiering engine sizes its uploads by (parsed here once: the engine never
/// re-reads the raw `[store]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// Requests in flight per store (`store.concurrency`).
    pub concurrency: usize,
    /// Bytes per multipart part (`store.part_size`).
    pub part_size: u64,
    /// The class uploads get (`store.storage_class`).
    pub storage_class: StorageClass,
    /// The checksum uploads are sent with (`store.checksum`): also what a pack's members
    /// are each summed with.
    pub checksum: ChecksumAlgo,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            concurrency: 4,
            part_size: DEFAULT_PART_SIZE,
            storage_class: StorageClass::Standard,
            checksum: ChecksumAlgo::Crc32c,
        }
    }
}

impl StoreConfig {
    /// The upload limits this store config sets (a posix store has no concurrency or part
    /// size of its own: the defaults).
    pub fn upload_limits(&self) -> UploadLimits {
        match self {
            StoreConfig::S3(c) => UploadLimits {
                concurrency: c.concurrency.clamp(1, 64),
                part_size: c.part_size.max(1),
                storage_class: c.storage_class.clone(),
                checksum: c.checksum,
            },
            StoreConfig::Posix(c) => UploadLimits {
                storage_class: c.storage_class.clone(),
                checksum: c.checksum,
                ..UploadLimits::default()
            },
        }
    }

    /// The key prefix of the store's objects ("" for none).
    pub fn prefix(&self) -> &str {
        match self {
            StoreConfig::S3(c) => &c.prefix,
            StoreConfig::Posix(_) => "",
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Posix(PosixConfig::default())
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), StoreError> {
        match self {
            StoreConfig::S3(c) => c.validate(),
            StoreConfig::Posix(c) => c.validate(),
        }
    }
}

/// Whether an upload's body is signed (SigV4's payload hash, a SHA-256 of every byte sent)
/// or sent as `UNSIGNED-PAYLOAD`. Either way the body carries our checksum in a signed
/// header, and the copy is proven by that checksum (the server's check, or a read-back),
/// never by the payload hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadSigning {
    /// Signed where the body crosses a network that TLS does not protect: a plain `http://`
    /// endpoint on another host, or a plain-http one reached through a proxy. Unsigned over
    /// `https://` (TLS authenticates every byte, through a proxy too) and to a loopback
    /// address without a proxy (the bytes never leave the host).
    #[default]
    Auto,
    /// Always signed: a server that refuses `UNSIGNED-PAYLOAD`.
    Always,
    /// Never signed: a plain-http endpoint on a network the admin trusts; what guards the
    /// body then is the checksum only, which catches damage, not a forger.
    Never,
}

/// When the S3 client adds checksums to requests and checks them on responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestChecksum {
    /// The SDK's default. coldtier always sends its own precomputed checksum headers.
    #[default]
    WhenSupported,
    /// Only where the operation requires one: garage needs this over plain http.
    WhenRequired,
}

/// `[store]` with `kind = "s3"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// e.g. "http://127.0.0.1:9000"; none: AWS's endpoint for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key with a `/` (no leading or trailing `/`).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`): for local servers.
    pub path_style: bool,
    /// The class `put` uses unless told otherwise.
    pub storage_class: StorageClass,
    pub checksum: ChecksumAlgo,
    pub request_checksum: RequestChecksum,
    /// Whether upload bodies are signed (`auto`: see [`PayloadSigning`]).
    pub payload_signing: PayloadSigning,
    /// Also send Content-MD5 on each PUT and part (servers that ignore x-amz-checksum-*
    /// but check Content-MD5 then verify the upload; costs an MD5 pass).
    pub content_md5: bool,
    /// Server-side encryption: "AES256", "aws:kms" or "aws:kms:dsse".
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Multipart part size in bytes (5 MiB ..= 5 GiB); objects up to this size go in one
    /// PUT. Raised for objects that would need more than 10,000 parts. Memory per upload
    /// is about `part_size * concurrency`.
    #[serde(deserialize_with = "crate::base::units::de_size")]
    pub part_size: u64,
    /// Parts in flight per upload (a download of a large object has twice as many ranges
    /// in flight, and the store at most four times as many for all downloads: docs/store.md
    /// "Memory").
    pub concurrency: usize,
    /// Static credentials; none: the standard AWS chain (environment, profile files, ...).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
    /// A profile of ~/.aws/config for the standard chain.
    pub profile: Option<String>,
    /// Time to open a connection, e.g. "3s".
    pub connect_timeout: String,
    /// Time from sending an upload (PUT, UploadPart: its body included, so keep it above
    /// the time one part takes to upload) until the response headers.
    pub read_timeout: String,
    /// Time from sending any other request (GET, HEAD, DELETE, tagging, listing,
    /// RestoreObject) until the response headers: a server that accepts and then hangs
    /// is given up on after this, per attempt.
    pub first_byte_timeout: String,
    /// A request or response body that moves no byte for this long is given up on.
    pub stall_timeout: String,
    /// Attempts per request, the first included (the SDK's standard retry mode).
    pub max_attempts: u32,
    /// Keys per ListObjectsV2 page (1..=1000).
    pub list_page_size: i32,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: false,
            storage_class: StorageClass::Standard,
            checksum: ChecksumAlgo::Crc32c,
            request_checksum: RequestChecksum::WhenSupported,
            payload_signing: PayloadSigning::Auto,
            content_md5: false,
            sse: None,
            sse_kms_key_id: None,
            part_size: DEFAULT_PART_SIZE,
            concurrency: 4,
            access_key: None,
            secret_key: None,
            session_token: None,
            profile: None,
            connect_timeout: "3s".into(),
            read_timeout: "60s".into(),
            first_byte_timeout: "10s".into(),
            stall_timeout: "20s".into(),
            max_attempts: 3,
            list_page_size: 1000,
        }
    }
}

/// 16 MiB: S3's smallest part is 5 MiB; 16 MiB parts reach 156 GiB in 10,000 parts before
/// the size is raised, and keep an upload's memory at 64 MiB with 4 in flight.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;

/// Whether `endpoint` (lower case, `scheme://[user@]host[:port][/...]`) names a loopback
/// address: `localhost`, 127.0.0.0/8 or ::1, as a literal.
fn endpoint_is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl S3Config {
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: String| Err(StoreError::invalid_config(format!("[store] {m}")));
        if self.bucket.is_empty() {
            return bad("bucket: required for kind = \"s3\"".into());
        }
        if self.region.is_empty() {
            return bad("region: empty".into());
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return bad(format!(
                "prefix {:?}: no leading or trailing `/`",
                self.prefix
            ));
        }
        if !self.prefix.is_empty() {
            validate_key(&self.prefix).map_err(|e| StoreError::invalid_config(e.message))?;
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return bad(format!(
                "part_size {}: between 5 MiB and 5 GiB",
                self.part_size
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            return bad(format!("concurrency {}: 1 to 64", self.concurrency));
        }
        if let Some(sse) = &self.sse {
            if !["AES256", "aws:kms", "aws:kms:dsse"].contains(&sse.as_str()) {
                return bad(format!("sse {sse:?}: AES256, aws:kms or aws:kms:dsse"));
            }
        }
        if self.sse_kms_key_id.is_some()
            && !matches!(self.sse.as_deref(), Some(s) if s.starts_with("aws:kms"))
        {
            return bad("sse_kms_key_id needs sse = \"aws:kms\"".into());
        }
        if self.access_key.is_some() != self.secret_key.is_some() {
            return bad("access_key and secret_key go together".into());
        }
        if let StorageClass::Other(s) = &self.storage_class {
            return bad(format!("storage_class {s:?}: unknown"));
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return bad(format!("max_attempts {}: 1 to 10", self.max_attempts));
        }
        if !(1..=1000).contains(&self.list_page_size) {
            return bad(format!("list_page_size {}: 1 to 1000", self.list_page_size));
        }
        self.connect_timeout()?;
        self.read_timeout()?;
        self.first_byte_timeout()?;
        self.stall_timeout()?;
        Ok(())
    }
    /// Whether uploads sign their bodies ([`PayloadSigning`]); `proxy_in_env`: an
    /// `http_proxy` or `all_proxy` is set, which the SDK's client honours.
    pub fn signs_payload(&self, proxy_in_env: bool) -> bool {
        match self.payload_signing {
            PayloadSigning::Always => true,
            PayloadSigning::Never => false,
            PayloadSigning::Auto => match self.endpoint.as_deref() {
                // AWS's own endpoints are https.
                None => false,
                Some(ep) => {
                    let lower = ep.to_ascii_lowercase();
                    if lower.starts_with("https://") {
                        false
                    } else {
                        proxy_in_env || !endpoint_is_loopback(&lower)
                    }
                }
            },
        }
    }

    pub fn first_byte_timeout(&self) -> Result<Duration, StoreError> {
        positive(&self.first_byte_timeout, "first_byte_timeout")
    }
    pub fn stall_timeout(&self) -> Result<Duration, StoreError> {
        positive(&self.stall_timeout, "stall_timeout")
    }
    pub fn connect_timeout(&self) -> Result<Duration, StoreError> {
        crate::base::units::parse_duration(&self.connect_timeout)
            .map_err(|e| StoreError::invalid_config(format!("[store] connect_timeout: {e}")))
    }
    pub fn read_timeout(&self) -> Result<Duration, StoreError> {
        crate::base::units::parse_duration(&self.read_timeout)
            .map_err(|e| StoreError::invalid_config(format!("[store] read_timeout: {e}")))
    }
}

/// A duration key of `[store]` that must not be zero.
fn positive(v: &str, key: &str) -> Result<Duration, StoreError> {
    match crate::base::units::parse_duration(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(StoreError::invalid_config(format!(
            "[store] {key}: must be more than 0"
        ))),
        Err(e) => Err(StoreError::invalid_config(format!("[store] {key}: {e}"))),
    }
}

/// `[store]` with `kind = "posix"`: objects as files under `root`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosixConfig {
    pub root: PathBuf,
    /// The class recorded for objects unless `put` says otherwise.
    pub storage_class: StorageClass,
    pub checksum: ChecksumAlgo,
    /// Emulate archive classes: GLACIER and DEEP_ARCHIVE objects need `restore`, which
    /// completes after `restore_delay`. Off: every object is readable.
    pub emulate_archive: bool,
    pub restore_delay: String,
}

impl Default for PosixConfig {
    fn default() -> Self {
        PosixConfig {
            root: PathBuf::from("/var/lib/coldtier/objects"),
            storage_class: StorageClass::Standard,
            checksum: ChecksumAlgo::Crc32c,
            emulate_archive: false,
            restore_delay: "0s".into(),
        }
    }
}

impl PosixConfig {
    pub fn validate(&self) -> Result<(), StoreError> {
        if !self.root.is_absolute() {
            return Err(StoreError::invalid_config(format!(
                "[store] root {}: must be an absolute path",
                self.root.display()
            )));
        }
        self.restore_delay()?;
        Ok(())
    }
    pub fn restore_delay(&self) -> Result<Duration, StoreError> {
        crate::base::units::parse_duration(&self.restore_delay)
            .map_err(|e| StoreError::invalid_config(format!("[store] restore_delay: {e}")))
    }
}

// ---------------------------------------------------------------------------------------
// Shared I/O helpers for the backends

/// Where the bytes of an object made from a sparse file sit in it: the file's data
/// extents, as (offset, length), in order, not overlapping; the object holds their bytes
/// back to back, and the file's other ranges are holes (zeros). The object's size is
/// [`Extents::data_len`]; the file's is kept apart (the stub record's `size`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Extents(pub Vec<(u64, u64)>);

impl Extents {
    /// The bytes the extents hold: the object's size.
    pub fn data_len(&self) -> u64 {
        self.0.iter().map(|e| e.1).sum()
    }

    /// The file offset of object byte `off`, and how many object bytes follow it
    /// contiguously in the file (to the end of its extent). None past the end.
    pub fn locate(&self, off: u64) -> Option<(u64, u64)> {
        let mut base = 0u64;
        for &(start, len) in &self.0 {
            if off < base + len {
                let into = off - base;
                return Some((start + into, len - into));
            }
            base += len;
        }
        None
    }

    /// Whether the extents are in order, do not overlap, are not empty and end within
    /// `file_size`.
    pub fn valid_for(&self, file_size: u64) -> bool {
        let mut end = 0u64;
        for &(start, len) in &self.0 {
            if len == 0 || start < end {
                return false;
            }
            match start.checked_add(len) {
                Some(e) if e <= file_size => end = e,
                _ => return false,
            }
        }
        true
    }
}

/// Reads object bytes `off..off + buf.len()` of `file` seen through `extents` (dense
/// when None).
pub(crate) fn read_mapped(
    file: &File,
    extents: Option<&Extents>,
    buf: &mut [u8],
    off: u64,
) -> Result<(), StoreError> {
    let Some(ext) = extents else {
        return read_exact_at(file, buf, off);
    };
    let mut done = 0usize;
    while done < buf.len() {
        let (at, avail) = ext.locate(off + done as u64).ok_or_else(|| {
            StoreError::new(StoreErrorKind::Other, "read past the end of the extents")
        })?;
        let n = (avail.min((buf.len() - done) as u64)) as usize;
        read_exact_at(file, &mut buf[done..done + n], at)?;
        done += n;
    }
    Ok(())
}

/// Writes object bytes at object offset `off` into `file` seen through `extents`.
pub(crate) fn write_mapped(
    file: &File,
    extents: Option<&Extents>,
    buf: &[u8],
    off: u64,
) -> Result<(), StoreError> {
    let Some(ext) = extents else {
        return write_all_at(file, buf, off);
    };
    let mut done = 0usize;
    while done < buf.len() {
        let (at, avail) = ext.locate(off + done as u64).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::ChecksumMismatch,
                "the object is longer than its extents",
            )
        })?;
        let n = (avail.min((buf.len() - done) as u64)) as usize;
        write_all_at(file, &buf[done..done + n], at)?;
        done += n;
    }
    Ok(())
}

/// A destination file and how object offsets map onto it.
#[derive(Debug)]
pub(crate) struct Dest {
    pub file: File,
    pub extents: Option<Extents>,
}

impl Dest {
    pub(crate) fn write_all_at(&self, buf: &[u8], off: u64) -> Result<(), StoreError> {
        write_mapped(&self.file, self.extents.as_ref(), buf, off)
    }

    /// `parts`, back to back, at `off`: the body chunks of a GET as the HTTP client gave
    /// them, written without first being copied into one buffer (pwritev; through the
    /// extents piece by piece).
    pub(crate) fn write_parts_at(
        &self,
        parts: &[bytes::Bytes],
        off: u64,
    ) -> Result<(), StoreError> {
        if self.extents.is_some() {
            let mut at = off;
            for p in parts {
                self.write_all_at(p, at)?;
                at += p.len() as u64;
            }
            return Ok(());
        }
        pwritev_all(&self.file, parts, off)
    }
}

/// Reads exactly `buf.len()` bytes at `offset` with pread; a short file is an error
/// (the source changed under us).
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), StoreError> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(StoreError::new(
                    StoreErrorKind::Other,
                    format!(
                        "source file ended at {} bytes, before the size given: it changed while being copied",
                        offset + done as u64
                    ),
                )
                .transient(true))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::io("reading the source file", &e)),
        }
    }
    Ok(())
}

/// Writes all of `parts`, back to back, at `offset` with pwritev (at most `IOV_MAX` slices
/// a call; a short write goes on from where it stopped).
pub(crate) fn pwritev_all(
    file: &File,
    parts: &[bytes::Bytes],
    offset: u64,
) -> Result<(), StoreError> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    const IOV_MAX: usize = 1024;
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    let mut at = offset;
    while !bufs.is_empty() {
        let n = bufs.len().min(IOV_MAX);
        let off = libc::off_t::try_from(at)
            .map_err(|_| StoreError::new(StoreErrorKind::Other, "offset out of range"))?;
        // SAFETY: IoSlice is ABI-compatible with iovec; the n slices are live borrows.
        let r = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                n as libc::c_int,
                off,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(StoreError::io("writing the destination file", &e));
        }
        if r == 0 {
            let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
            return Err(StoreError::io("writing the destination file", &e));
        }
        at += r as u64;
        IoSlice::advance_slices(&mut bufs, r as usize);
    }
    Ok(())
}

/// Writes all of `buf` at `offset` with pwrite.
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> Result<(), StoreError> {
    file.write_all_at(buf, offset)
        .map_err(|e| StoreError::io("writing the destination file", &e))
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::new(
            StoreErrorKind::Other,
            format!("blocking task failed: {e}"),
        )),
    }
}

/// Checksums of `dest` bytes `0..size`, read back with pread (used where the bytes arrived
/// in parallel ranges and the algorithm cannot be combined).
pub fn checksum_file(file: &File, size: u64, algo: ChecksumAlgo) -> Result<Checksum, StoreError> {
    checksum_mapped(file, None, size, algo)
}

/// Object bytes `0..size` of `file` seen through `extents` (see [`Extents`]), hashed.
pub fn checksum_mapped(
    file: &File,
    extents: Option<&Extents>,
    size: u64,
    algo: ChecksumAlgo,
) -> Result<Checksum, StoreError> {
    let mut h = Hasher::new(algo);
    let mut buf = vec![0u8; (8 << 20).min(size as usize).max(1)];
    let mut off = 0u64;
    while off < size {
        let n = buf.len().min((size - off) as usize);
        read_mapped(file, extents, &mut buf[..n], off).map_err(|e| {
            StoreError::new(
                e.kind,
                format!("reading the file to hash it: {}", e.message),
            )
        })?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize())
}

/// The size-mismatch error of `get`.
pub(crate) fn size_mismatch(key: &str, actual: u64, expected: u64) -> StoreError {
    StoreError::new(
        StoreErrorKind::ChecksumMismatch,
        format!("{key}: object is {actual} bytes, expected {expected}"),
    )
}
