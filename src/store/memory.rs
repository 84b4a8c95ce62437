//! The in-memory fake `ObjectStore` for tests: same contract as the real stores (the
//! conformance suite says so), plus failure injection: unreachable, the next N calls
//! failing with a chosen kind, a flipped byte, archive classes with a restore delay; and
//! GETs held at the door, counted in flight (how many a caller sends at once).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::*;

#[derive(Clone)]
struct Obj {
    data: Bytes,
    version_id: String,
    storage_class: StorageClass,
    checksum: Checksum,
    metadata: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    /// When a restore was asked for.
    restore_requested: Option<Instant>,
}

/// An in-memory object store.
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Obj>>,
    default_class: StorageClass,
    default_checksum: ChecksumAlgo,
    restore_delay: Duration,
    unreachable: AtomicBool,
    /// Whether uploads are checked against their checksum (see `set_validates`).
    validates: AtomicBool,
    /// Uploads arrive with one byte flipped (see `set_corrupt_puts`).
    corrupt_puts: AtomicBool,
    fail_next: Mutex<Option<(u32, StoreErrorKind)>>,
    versions: AtomicU64,
    /// Calls made (for tests that count them).
    pub calls: AtomicU64,
    /// GETs in flight, and the most there were at once.
    pub gets_in_flight: AtomicU64,
    pub gets_in_flight_max: AtomicU64,
    /// While set, each GET waits for a permit of it before it reads ([`MemoryStore::hold_gets`]).
    held_gets: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

/// A GET counted in flight until dropped.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            objects: Mutex::new(BTreeMap::new()),
            default_class: StorageClass::Standard,
            default_checksum: ChecksumAlgo::Crc32c,
            restore_delay: Duration::from_secs(1),
            unreachable: AtomicBool::new(false),
            validates: AtomicBool::new(true),
            corrupt_puts: AtomicBool::new(false),
            fail_next: Mutex::new(None),
            versions: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            gets_in_flight: AtomicU64::new(0),
            gets_in_flight_max: AtomicU64::new(0),
            held_gets: Mutex::new(None),
        }
    }
    /// From now on each GET waits (counted in flight) for a permit of the semaphore
    /// returned: the test lets them through with `add_permits`.
    pub fn hold_gets(&self) -> Arc<tokio::sync::Semaphore> {
        let s = Arc::new(tokio::sync::Semaphore::new(0));
        *self.held_gets.lock() = Some(s.clone());
        s
    }
    /// How long a restore stays in progress.
    pub fn with_restore_delay(mut self, d: Duration) -> Self {
        self.restore_delay = d;
        self
    }
    pub fn into_arc(self) -> Arc<Self> {
        Arc::new(self)
    }
    /// Every call fails with `Unreachable` (transient) while set.
    pub fn set_unreachable(&self, on: bool) {
        self.unreachable.store(on, Ordering::SeqCst);
    }
    /// Whether the store checks an upload against the checksum sent with it (a real S3
    /// does; moto does not). Not checking, it reports the checksum it was sent.
    pub fn set_validates(&self, on: bool) {
        self.validates.store(on, Ordering::SeqCst);
    }
    /// Uploads arrive with one byte flipped (damage in transit): a validating store
    /// refuses them (`ChecksumMismatch`), another one stores the damaged bytes.
    pub fn set_corrupt_puts(&self, on: bool) {
        self.corrupt_puts.store(on, Ordering::SeqCst);
    }
    /// The next `n` calls fail with `kind` (transient as that kind usually is).
    pub fn fail_next(&self, n: u32, kind: StoreErrorKind) {
        *self.fail_next.lock() = Some((n, kind));
    }
    /// Flips one byte of the stored data (keeping its recorded checksum): bit rot.
    pub fn corrupt(&self, key: &str) -> bool {
        let mut objs = self.objects.lock();
        match objs.get_mut(key) {
            Some(o) if !o.data.is_empty() => {
                let mut v = o.data.to_vec();
                let i = v.len() / 2;
                v[i] ^= 0x5a;
                o.data = Bytes::from(v);
                true
            }
            _ => false,
        }
    }
    /// Makes every restore in progress complete now.
    pub fn finish_restores(&self) {
        let delay = self.restore_delay;
        for o in self.objects.lock().values_mut() {
            if let Some(t) = o.restore_requested.as_mut() {
                *t = Instant::now().checked_sub(delay).unwrap_or(*t);
            }
        }
    }
    pub fn len(&self) -> usize {
        self.objects.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn enter(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Unreachable,
                "memory store: unreachable (injected)",
            ));
        }
        let mut f = self.fail_next.lock();
        if let Some((n, kind)) = *f {
            *f = if n > 1 { Some((n - 1, kind)) } else { None };
            return Err(StoreError::new(
                kind,
                format!("memory store: {kind} (injected)"),
            ));
        }
        Ok(())
    }

    fn restore_status(&self, o: &Obj) -> RestoreStatus {
        if !o.storage_class.is_archive() {
            return RestoreStatus::NotArchived;
        }
        match o.restore_requested {
            None => RestoreStatus::Archived,
            Some(t) if t.elapsed() < self.restore_delay => RestoreStatus::InProgress,
            Some(_) => RestoreStatus::Restored { expiry: None },
        }
    }

    fn lookup(&self, key: &str, version_id: Option<&str>) -> Result<Obj, StoreError> {
        validate_key(key)?;
        let objs = self.objects.lock();
        match objs.get(key) {
            Some(o) if version_id.is_none_or(|v| v == o.version_id) => Ok(o.clone()),
            _ => Err(StoreError::not_found(key)),
        }
    }
}

impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn put(&self, req: PutRequest) -> StoreFuture<'_, PutResult> {
        Box::pin(async move {
            self.enter()?;
            validate_key(&req.key)?;
            validate_metadata(&req.metadata)?;
            validate_tags(&req.tags)?;
            let algo = req.checksum.unwrap_or(self.default_checksum);
            let size = req.size;
            let body = req.body;
            let extents = req.extents;
            let (mut data, checksum) = blocking(move || {
                let mut v = vec![0u8; size as usize];
                body.read_mapped(extents.as_ref(), &mut v, 0)?;
                let c = Checksum::of(algo, &v);
                Ok((v, c))
            })
            .await?;
            let chunks = {
                let mut cs = super::chunks::ChunkSummer::new(size);
                cs.update(&data);
                cs.finish()
            };
            if self.corrupt_puts.load(Ordering::SeqCst) && !data.is_empty() {
                let i = data.len() / 2;
                data[i] ^= 0x01;
                if self.validates.load(Ordering::SeqCst) {
                    return Err(StoreError::new(
                        StoreErrorKind::ChecksumMismatch,
                        format!(
                            "memory store: {}: body does not match its checksum",
                            req.key
                        ),
                    )
                    .transient(true));
                }
            }
            let version_id = format!("m{}", self.versions.fetch_add(1, Ordering::Relaxed) + 1);
            let obj = Obj {
                data: Bytes::from(data),
                version_id: version_id.clone(),
                storage_class: req
                    .storage_class
                    .unwrap_or_else(|| self.default_class.clone()),
                checksum: checksum.clone(),
                metadata: req.metadata,
                tags: req.tags,
                restore_requested: None,
            };
            self.objects.lock().insert(req.key.clone(), obj);
            Ok(PutResult {
                key: req.key,
                version_id: Some(version_id),
                etag: None,
                expected: checksum.reported(),
                reported: Some(checksum.reported()),
                checksum,
                parts: 1,
                chunks,
            })
        })
    }

    fn head<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, ObjectMeta> {
        Box::pin(async move {
            self.enter()?;
            let o = self.lookup(key, version_id)?;
            Ok(ObjectMeta {
                key: key.to_string(),
                size: o.data.len() as u64,
                restore: self.restore_status(&o),
                storage_class: o.storage_class,
                version_id: Some(o.version_id),
                etag: None,
                checksum: Some(o.checksum.reported()),
                metadata: o.metadata,
            })
        })
    }

    fn get<'a>(&'a self, req: GetRequest<'a>) -> StoreFuture<'a, GetResult> {
        Box::pin(async move {
            self.enter()?;
            let now = self.gets_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.gets_in_flight_max.fetch_max(now, Ordering::SeqCst);
            let _in_flight = InFlight(&self.gets_in_flight);
            let held = self.held_gets.lock().clone();
            if let Some(s) = held {
                s.acquire()
                    .await
                    .map_err(|_| {
                        StoreError::new(StoreErrorKind::Other, "memory store: GETs closed")
                    })?
                    .forget();
            }
            let o = self.lookup(req.key, req.version_id)?;
            if !self.restore_status(&o).readable() {
                return Err(StoreError::new(
                    StoreErrorKind::InvalidObjectState,
                    format!("{}: archived ({}), not restored", req.key, o.storage_class),
                ));
            }
            if o.data.len() as u64 != req.expected_size {
                return Err(size_mismatch(
                    req.key,
                    o.data.len() as u64,
                    req.expected_size,
                ));
            }
            let dest = req
                .dest
                .map(File::try_clone)
                .transpose()
                .map_err(|e| StoreError::io("dup of the destination", &e))?;
            let algo = req.checksum;
            let (data, at, extents) = match req.range {
                Some((s, l)) if l > 0 && s + l <= o.data.len() as u64 && req.dest_base <= s => (
                    o.data.slice(s as usize..(s + l) as usize),
                    s - req.dest_base,
                    None,
                ),
                Some((s, l)) => {
                    return Err(StoreError::invalid_argument(format!(
                        "{}: range {s}+{l} outside the object",
                        req.key
                    )))
                }
                None => (o.data.clone(), 0, req.extents.cloned()),
            };
            let bytes = data.len() as u64;
            let checksum = blocking(move || {
                if let Some(dest) = &dest {
                    write_mapped(dest, extents.as_ref(), &data, at)?;
                }
                Ok(Checksum::of(algo, &data))
            })
            .await?;
            Ok(GetResult {
                bytes,
                checksum,
                version_id: Some(o.version_id),
            })
        })
    }

    fn restore<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        _days: u32,
        _tier: RestoreTier,
    ) -> StoreFuture<'a, RestoreOutcome> {
        Box::pin(async move {
            self.enter()?;
            let o = self.lookup(key, version_id)?;
            Ok(match self.restore_status(&o) {
                RestoreStatus::NotArchived => RestoreOutcome::NotArchived,
                RestoreStatus::InProgress => RestoreOutcome::AlreadyInProgress,
                RestoreStatus::Restored { .. } => RestoreOutcome::AlreadyRestored,
                RestoreStatus::Archived => {
                    if let Some(o) = self.objects.lock().get_mut(key) {
                        o.restore_requested = Some(Instant::now());
                    }
                    RestoreOutcome::Started
                }
            })
        })
    }

    fn delete<'a>(&'a self, key: &'a str, version_id: Option<&'a str>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.enter()?;
            validate_key(key)?;
            let mut objs = self.objects.lock();
            if objs
                .get(key)
                .is_some_and(|o| version_id.is_none_or(|v| v == o.version_id))
            {
                objs.remove(key);
            }
            Ok(())
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ListEntry>> {
        Box::pin(async move {
            self.enter()?;
            validate_prefix(prefix)?;
            Ok(self
                .objects
                .lock()
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, o)| ListEntry {
                    key: k.clone(),
                    size: o.data.len() as u64,
                    etag: None,
                    storage_class: o.storage_class.clone(),
                })
                .collect())
        })
    }

    fn get_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, BTreeMap<String, String>> {
        Box::pin(async move {
            self.enter()?;
            Ok(self.lookup(key, version_id)?.tags)
        })
    }

    fn set_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        tags: BTreeMap<String, String>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.enter()?;
            validate_tags(&tags)?;
            self.lookup(key, version_id)?;
            if let Some(o) = self.objects.lock().get_mut(key) {
                o.tags = tags;
            }
            Ok(())
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
        Box::pin(async move {
            self.enter()?;
            validate_key(key)?;
            self.lookup(key, version_id)?;
            let v = format!("m{}", self.versions.fetch_add(1, Ordering::Relaxed) + 1);
            if let Some(o) = self.objects.lock().get_mut(key) {
                o.storage_class = class;
                o.version_id = v.clone();
                o.restore_requested = None;
            }
            Ok(Some(v))
        })
    }

    fn validates_checksums<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.enter()?;
            validate_key(key)?;
            Ok(self.validates.load(Ordering::SeqCst))
        })
    }
}
