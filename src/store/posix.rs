//! The directory-backed store (kind = "posix"), like Lustre's lhsmtool_posix: each object
//! is a file `<root>/<key>`, its metadata (genealogy, storage class, checksum, tags,
//! version) is JSON beside it in `<root>/<key>.meta.json`. Written to a temporary name,
//! fsynced, renamed, directory fsynced. `<root>/.coldtier-store` marks the root: while it
//! is missing (share not mounted) every call fails `Unreachable`. Keys never leave the root
//! (`validate_key` refuses `..`, `.`, absolute paths, NUL). Archive classes can be
//! emulated (`emulate_archive`, `restore_delay`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// Suffix of the metadata file beside each object.
pub const META_SUFFIX: &str = ".meta.json";
/// The file that marks a directory as a coldtier posix store.
pub const MARKER: &str = ".coldtier-store";

const COPY_BUF: usize = 4 << 20;

/// The metadata file of one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    format: u32,
    key: String,
    size: u64,
    version_id: String,
    storage_class: String,
    /// `algo:base64` of the whole object.
    checksum: String,
    metadata: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    /// Nanoseconds since the epoch when a restore was asked for (archive emulation).
    #[serde(default)]
    restore_requested_ns: Option<i64>,
}

/// A directory-backed object store.
pub struct PosixStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    default_class: StorageClass,
    default_checksum: ChecksumAlgo,
    emulate_archive: bool,
    restore_delay: Duration,
    counter: AtomicU64,
}

impl PosixStore {
    /// Opens the store at `config.root`. A root that does not exist, or is an empty
    /// directory, is made a store (directory and marker created); a non-empty directory
    /// without the marker is refused.
    pub fn new(config: &PosixConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let root = config.root.clone();
        let marker = root.join(MARKER);
        if !marker.exists() {
            let empty = match fs::read_dir(&root) {
                Ok(mut d) => d.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir_all(&root).map_err(|e| {
                        StoreError::io(format!("creating store root {}", root.display()), &e)
                    })?;
                    true
                }
                Err(e) => {
                    return Err(StoreError::io(
                        format!("reading store root {}", root.display()),
                        &e,
                    ))
                }
            };
            if !empty {
                return Err(StoreError::invalid_config(format!(
                    "[store] root {}: not empty and not a coldtier store (no {MARKER})",
                    root.display()
                )));
            }
            write_durably(&marker, b"coldtier posix object store, format 1\n")
                .map_err(|e| StoreError::io(format!("creating {}", marker.display()), &e))?;
        }
        Ok(PosixStore {
            inner: Arc::new(Inner {
                root,
                default_class: config.storage_class.clone(),
                default_checksum: config.checksum,
                emulate_archive: config.emulate_archive,
                restore_delay: config.restore_delay()?,
                counter: AtomicU64::new(0),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file holding an object's data (tests use it to corrupt one).
    pub fn data_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.inner.root.join(key))
    }

    /// Runs `f` on a blocking thread after checking the root is there.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.check_root()?;
            f(&inner)
        })
        .await
    }
}

fn now_ns() -> i64 {
    crate::base::time::system_now_ns()
}

impl Inner {
    fn check_root(&self) -> Result<(), StoreError> {
        match fs::symlink_metadata(self.root.join(MARKER)) {
            Ok(_) => Ok(()),
            Err(e) => Err(StoreError::new(
                StoreErrorKind::Unreachable,
                format!(
                    "posix store {}: {MARKER} missing ({e}): root removed or share not mounted",
                    self.root.display()
                ),
            )),
        }
    }

    fn paths(&self, key: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        validate_key(key)?;
        let data = self.root.join(key);
        let meta = self.root.join(format!("{key}{META_SUFFIX}"));
        Ok((data, meta))
    }

    fn read_meta(&self, key: &str, version_id: Option<&str>) -> Result<Meta, StoreError> {
        let (_, meta_path) = self.paths(key)?;
        let text = match fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Err(StoreError::not_found(key))
            }
            Err(e) => {
                return Err(StoreError::io(
                    format!("reading {}", meta_path.display()),
                    &e,
                ))
            }
        };
        let meta: Meta = serde_json::from_slice(&text).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("{}: bad metadata file: {e}", meta_path.display()),
            )
        })?;
        if version_id.is_some_and(|v| v != meta.version_id) {
            return Err(StoreError::new(
                StoreErrorKind::NotFound,
                format!("{key}: no version {}", version_id.unwrap_or_default()),
            ));
        }
        Ok(meta)
    }

    fn write_meta(&self, key: &str, meta: &Meta) -> Result<(), StoreError> {
        let (_, meta_path) = self.paths(key)?;
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("metadata: {e}")))?;
        let tmp = self.temp_path(&meta_path);
        let r = write_durably(&tmp, &json).and_then(|_| fs::rename(&tmp, &meta_path));
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(
                format!("writing {}", meta_path.display()),
                &e,
            ));
        }
        fsync_parent(&meta_path)
    }

    fn restore_status(&self, meta: &Meta) -> RestoreStatus {
        let class = StorageClass::from_reported(&meta.storage_class);
        if !self.emulate_archive || !class.is_archive() {
            return RestoreStatus::NotArchived;
        }
        match meta.restore_requested_ns {
            None => RestoreStatus::Archived,
            Some(t) if now_ns() < t + self.restore_delay.as_nanos() as i64 => {
                RestoreStatus::InProgress
            }
            Some(_) => RestoreStatus::Restored { expiry: None },
        }
    }

    fn temp_path(&self, target: &Path) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = target
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        target.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
    }

    fn new_version(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{:x}-{n:x}", now_ns(), std::process::id())
    }

    fn put(&self, req: PutRequest) -> Result<PutResult, StoreError> {
        validate_metadata(&req.metadata)?;
        validate_tags(&req.tags)?;
        let (data_path, _) = self.paths(&req.key)?;
        let algo = req.checksum.unwrap_or(self.default_checksum);
        if let Some(dir) = data_path.parent() {
            fs::create_dir_all(dir).map_err(|e| {
                let mut err = StoreError::io(format!("creating {}", dir.display()), &e);
                if e.raw_os_error() == Some(libc::ENOTDIR)
                    || e.kind() == std::io::ErrorKind::AlreadyExists
                {
                    err.kind = StoreErrorKind::InvalidArgument;
                    err.message = format!("{}: a prefix of it is an object (posix store)", req.key);
                }
                err
            })?;
        }
        let tmp = self.temp_path(&data_path);
        let copied = (|| {
            let out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), &e))?;
            // A CRC32C checksum is the chunk sums' whole sum: the bytes are hashed once.
            let mut h = (algo != ChecksumAlgo::Crc32c).then(|| Hasher::new(algo));
            let mut cs = super::chunks::ChunkSummer::new(req.size);
            let mut buf = vec![0u8; COPY_BUF.min(req.size as usize).max(1)];
            let mut off = 0u64;
            while off < req.size {
                let n = buf.len().min((req.size - off) as usize);
                req.body
                    .read_mapped(req.extents.as_ref(), &mut buf[..n], off)?;
                if let Some(h) = h.as_mut() {
                    h.update(&buf[..n]);
                }
                cs.update(&buf[..n]);
                write_all_at(&out, &buf[..n], off)?;
                off += n as u64;
            }
            out.sync_all()
                .map_err(|e| StoreError::io(format!("fsync {}", tmp.display()), &e))?;
            let checksum = match h {
                Some(h) => h.finalize(),
                None => Checksum::crc32c(cs.crc32c()),
            };
            Ok((checksum, cs.finish()))
        })();
        let (checksum, chunks) = match copied {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let meta = Meta {
            format: 1,
            key: req.key.clone(),
            size: req.size,
            version_id: self.new_version(),
            storage_class: req
                .storage_class
                .unwrap_or_else(|| self.default_class.clone())
                .to_string(),
            checksum: checksum.to_string(),
            metadata: req.metadata,
            tags: req.tags,
            restore_requested_ns: None,
        };
        // Data first, then its metadata: a crash in between leaves new data with the old
        // metadata, which a checksum check catches. Keys name content versions, so an
        // object is normally written once.
        if let Err(e) = fs::rename(&tmp, &data_path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(
                format!("renaming to {}", data_path.display()),
                &e,
            ));
        }
        self.write_meta(&req.key, &meta)?;
        Ok(PutResult {
            key: req.key,
            version_id: Some(meta.version_id),
            etag: None,
            expected: checksum.reported(),
            reported: Some(checksum.reported()),
            checksum,
            parts: 1,
            chunks,
        })
    }

    fn head(&self, key: &str, version_id: Option<&str>) -> Result<ObjectMeta, StoreError> {
        let meta = self.read_meta(key, version_id)?;
        // The data file itself, not only its metadata: an object whose data went (or
        // shrank) behind the store's back is reported as it is.
        let (data, _) = self.paths(key)?;
        let size = match fs::metadata(&data) {
            Ok(m) => m.len(),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Err(StoreError::not_found(key))
            }
            Err(e) => return Err(StoreError::io(format!("stat of {}", data.display()), &e)),
        };
        let checksum = Checksum::parse(&meta.checksum).map(|c| c.reported()).ok();
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            storage_class: StorageClass::from_reported(&meta.storage_class),
            restore: self.restore_status(&meta),
            version_id: Some(meta.version_id),
            etag: None,
            checksum,
            metadata: meta.metadata,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn get(
        &self,
        key: &str,
        version_id: Option<&str>,
        dest: Option<&File>,
        expected_size: u64,
        algo: ChecksumAlgo,
        extents: Option<&Extents>,
        range: Option<(u64, u64, u64)>,
    ) -> Result<GetResult, StoreError> {
        let meta = self.read_meta(key, version_id)?;
        if !self.restore_status(&meta).readable() {
            return Err(StoreError::new(
                StoreErrorKind::InvalidObjectState,
                format!("{key}: archived ({}), not restored", meta.storage_class),
            ));
        }
        let (data_path, _) = self.paths(key)?;
        let src = File::open(&data_path)
            .map_err(|e| StoreError::io(format!("opening {}", data_path.display()), &e))?;
        let actual = src
            .metadata()
            .map_err(|e| StoreError::io(format!("stat {}", data_path.display()), &e))?
            .len();
        if actual != expected_size {
            return Err(size_mismatch(key, actual, expected_size));
        }
        if dest.is_none() {
            // A read-back check: read what is on the disk (or the server behind it), not
            // the pages the put left in the cache (they are clean: the put synced them).
            // SAFETY: fadvise on an open fd.
            unsafe { libc::posix_fadvise(src.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        let (first, end, base, extents) = match range {
            Some((s, l, b)) if l > 0 && s + l <= actual && b <= s => (s, s + l, b, None),
            Some((s, l, _)) => {
                return Err(StoreError::invalid_argument(format!(
                    "{key}: range {s}+{l} outside an object of {actual} bytes"
                )))
            }
            None => (0, actual, 0, extents),
        };
        let mut h = Hasher::new(algo);
        let mut buf = vec![0u8; COPY_BUF.min((end - first) as usize).max(1)];
        let mut off = first;
        while off < end {
            let n = buf.len().min((end - off) as usize);
            read_exact_at(&src, &mut buf[..n], off)
                .map_err(|e| StoreError::new(e.kind, format!("{key}: {}", e.message)))?;
            h.update(&buf[..n]);
            if let Some(dest) = dest {
                write_mapped(dest, extents, &buf[..n], off - base)?;
            }
            off += n as u64;
        }
        Ok(GetResult {
            bytes: actual,
            checksum: h.finalize(),
            version_id: Some(meta.version_id),
        })
    }

    fn restore(&self, key: &str, version_id: Option<&str>) -> Result<RestoreOutcome, StoreError> {
        let mut meta = self.read_meta(key, version_id)?;
        Ok(match self.restore_status(&meta) {
            RestoreStatus::NotArchived => RestoreOutcome::NotArchived,
            RestoreStatus::InProgress => RestoreOutcome::AlreadyInProgress,
            RestoreStatus::Restored { .. } => RestoreOutcome::AlreadyRestored,
            RestoreStatus::Archived => {
                meta.restore_requested_ns = Some(now_ns());
                self.write_meta(key, &meta)?;
                RestoreOutcome::Started
            }
        })
    }

    fn delete(&self, key: &str, version_id: Option<&str>) -> Result<(), StoreError> {
        let (data_path, meta_path) = self.paths(key)?;
        match self.read_meta(key, version_id) {
            Ok(_) => {}
            Err(e) if e.kind == StoreErrorKind::NotFound => {
                // No such object or version. Data without metadata (a crash between the
                // two renames of a put) is removed when no version was named.
                if version_id.is_some() {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
        for p in [&meta_path, &data_path] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
                Err(e) => return Err(StoreError::io(format!("removing {}", p.display()), &e)),
            }
        }
        match fsync_parent(&data_path) {
            Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(()),
            r => r?,
        }
        // Remove directories left empty, up to the root.
        let mut dir = data_path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError> {
        validate_prefix(prefix)?;
        // Walk from the deepest directory the prefix names completely.
        let start_rel = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if start_rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(start_rel)
        };
        let mut out = Vec::new();
        let mut stack = vec![(start, start_rel.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), &e)),
            };
            for ent in rd {
                let ent =
                    ent.map_err(|e| StoreError::io(format!("listing {}", dir.display()), &e))?;
                let name = ent.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let key = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let ft = ent
                    .file_type()
                    .map_err(|e| StoreError::io(format!("stat {}", ent.path().display()), &e))?;
                if ft.is_dir() {
                    // Descend only where keys under it can still match the prefix.
                    let sub = format!("{key}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        stack.push((ent.path(), key));
                    }
                    continue;
                }
                if let Some(k) = key.strip_suffix(META_SUFFIX) {
                    if !k.starts_with(prefix) {
                        continue;
                    }
                    if let Ok(meta) = self.read_meta(k, None) {
                        out.push(ListEntry {
                            key: k.to_string(),
                            size: meta.size,
                            etag: None,
                            storage_class: StorageClass::from_reported(&meta.storage_class),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn set_tags(
        &self,
        key: &str,
        version_id: Option<&str>,
        tags: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        validate_tags(&tags)?;
        let mut meta = self.read_meta(key, version_id)?;
        meta.tags = tags;
        self.write_meta(key, &meta)
    }
}

/// Creates `path` (which must not exist) with `data`, fsynced.
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn fsync_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(format!("fsync {}", dir.display()), &e))?;
    }
    Ok(())
}

impl ObjectStore for PosixStore {
    fn describe(&self) -> String {
        format!("posix:{}", self.inner.root.display())
    }

    fn put(&self, req: PutRequest) -> StoreFuture<'_, PutResult> {
        Box::pin(async move {
            validate_key(&req.key)?;
            self.run(move |s| s.put(req)).await
        })
    }

    fn head<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, ObjectMeta> {
        let (key, version) = (key.to_string(), version_id.map(str::to_string));
        Box::pin(async move { self.run(move |s| s.head(&key, version.as_deref())).await })
    }

    fn get<'a>(&'a self, req: GetRequest<'a>) -> StoreFuture<'a, GetResult> {
        Box::pin(async move {
            let dest = req
                .dest
                .map(File::try_clone)
                .transpose()
                .map_err(|e| StoreError::io("dup of the destination", &e))?;
            let (key, version) = (req.key.to_string(), req.version_id.map(str::to_string));
            let (size, algo) = (req.expected_size, req.checksum);
            let extents = req.extents.cloned();
            let range = req.range.map(|(s, l)| (s, l, req.dest_base));
            self.run(move |s| {
                s.get(
                    &key,
                    version.as_deref(),
                    dest.as_ref(),
                    size,
                    algo,
                    extents.as_ref(),
                    range,
                )
            })
            .await
        })
    }

    fn restore<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        _days: u32,
        _tier: RestoreTier,
    ) -> StoreFuture<'a, RestoreOutcome> {
        let (key, version) = (key.to_string(), version_id.map(str::to_string));
        Box::pin(async move { self.run(move |s| s.restore(&key, version.as_deref())).await })
    }

    fn delete<'a>(&'a self, key: &'a str, version_id: Option<&'a str>) -> StoreFuture<'a, ()> {
        let (key, version) = (key.to_string(), version_id.map(str::to_string));
        Box::pin(async move { self.run(move |s| s.delete(&key, version.as_deref())).await })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ListEntry>> {
        let prefix = prefix.to_string();
        Box::pin(async move { self.run(move |s| s.list(&prefix)).await })
    }

    fn get_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, BTreeMap<String, String>> {
        let (key, version) = (key.to_string(), version_id.map(str::to_string));
        Box::pin(async move {
            self.run(move |s| Ok(s.read_meta(&key, version.as_deref())?.tags))
                .await
        })
    }

    fn set_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        tags: BTreeMap<String, String>,
    ) -> StoreFuture<'a, ()> {
        let (key, version) = (key.to_string(), version_id.map(str::to_string));
        Box::pin(async move {
            self.run(move |s| s.set_tags(&key, version.as_deref(), tags))
                .await
        })
    }

    fn purge<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.delete(key, None)
    }

    fn set_storage_class<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        class: StorageClass,
    ) -> StoreFuture<'a, Option<String>> {
        let (key, version) = (key.to_string(), version_id.map(str::to_string));
        Box::pin(async move {
            self.run(move |s| {
                let mut meta = s.read_meta(&key, version.as_deref())?;
                meta.storage_class = class.to_string();
                meta.restore_requested_ns = None;
                s.write_meta(&key, &meta)?;
                Ok(Some(meta.version_id))
            })
            .await
        })
    }

    /// Never: the checksum a posix store "reports" is computed by our own code from the
    /// bytes it wrote, which proves nothing about what reached the disk (or the NFS server
    /// behind the directory). Copies are read back instead, past the page cache.
    fn validates_checksums<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            validate_key(key)?;
            Ok(false)
        })
    }
}
