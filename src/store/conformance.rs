//! The one conformance suite every `ObjectStore` passes: the memory fake, the posix store
//! and the S3 store against a real moto server and a real garage cluster (store/tests.rs
//! runs it on each). A case failing does not stop the others; `run_all` panics at the end
//! naming every failure. What a backend legitimately lacks is a `Harness` capability, and
//! the cases then check what it does instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// What the suite needs to know about, and do to, one backend.
pub(crate) struct Harness {
    pub name: &'static str,
    pub store: Arc<dyn ObjectStore>,
    /// A store of the same kind whose backend cannot be reached.
    pub unreachable: Arc<dyn ObjectStore>,
    /// Flips a byte of the stored data of a key (latest version) behind the store's back.
    pub corrupt: Box<dyn Fn(&str) + Send + Sync>,
    /// Called between storing an archived object and asking for its restore.
    pub before_restore: Box<dyn Fn() + Send + Sync>,
    /// GLACIER and DEEP_ARCHIVE need a restore on this store.
    pub archives: bool,
    /// The store's multipart part size, if it uploads in parts.
    pub part_size: Option<u64>,
    /// What `validates_checksums` must find: whether the backend refuses an upload whose
    /// body does not match its checksum.
    pub validates: bool,
    /// The backend keeps the storage class an object is written (or copied) with. garage
    /// has no storage classes: every object is STANDARD whatever the PUT or CopyObject
    /// asked for.
    pub storage_classes: bool,
    /// Object tagging works. garage does not implement it: GetObjectTagging and
    /// PutObjectTagging answer 501 (the store says `InvalidConfig`, permanent), and the
    /// tags a PUT carries are accepted and dropped.
    pub tagging: bool,
    /// A version id a PUT returns is one the backend names again (HEAD, GET) and honours
    /// when asked for. garage has no versioning but answers PUT and CopyObject with its
    /// internal version uuid, which HEAD and GET never name and ignore when asked for
    /// (they serve the latest), and a CopyObject from a named version fails `NotFound`.
    /// Harmless to coldtier's recalls, whose keys are never rewritten with other content.
    pub versions_named: bool,
}

type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
type Case = for<'a> fn(&'a Harness) -> CaseFuture<'a>;

macro_rules! check {
    ($c:expr, $($m:tt)+) => {
        if !$c {
            return Err(format!("line {}: {}", line!(), format!($($m)+)));
        }
    };
}

/// Unwraps a store result or fails the case with the call's text.
macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Err(format!("line {}: {} failed: {e}", line!(), stringify!($e))),
        }
    };
}

/// Expects a store error of `kind`.
macro_rules! fails {
    ($e:expr, $kind:expr) => {
        match $e {
            Ok(_) => {
                return Err(format!(
                    "line {}: {} succeeded; expected {:?}",
                    line!(),
                    stringify!($e),
                    $kind
                ))
            }
            Err(e) => {
                if e.kind != $kind {
                    return Err(format!(
                        "line {}: {}: {e}; expected {:?}",
                        line!(),
                        stringify!($e),
                        $kind
                    ));
                }
                e
            }
        }
    };
}

pub(crate) async fn run_all(h: Harness) {
    let cases: Vec<(&str, Case)> = vec![
        ("round_trip_all_algorithms", |h| Box::pin(round_trip(h))),
        ("empty_object", |h| Box::pin(empty_object(h))),
        ("storage_class_kept", |h| Box::pin(storage_class_kept(h))),
        ("large_object_multipart", |h| Box::pin(large_object(h))),
        ("missing_object", |h| Box::pin(missing_object(h))),
        ("short_source_leaves_nothing", |h| Box::pin(short_source(h))),
        ("bad_keys_metadata_tags", |h| Box::pin(bad_arguments(h))),
        ("delete_idempotent", |h| Box::pin(delete(h))),
        ("list_prefix_and_pages", |h| Box::pin(list(h))),
        ("archive_restore_flow", |h| Box::pin(archive(h))),
        ("corruption_detected", |h| Box::pin(corruption(h))),
        ("wrong_expected_size", |h| Box::pin(wrong_size(h))),
        ("tags_replaced", |h| Box::pin(tags(h))),
        ("overwrite_new_version", |h| Box::pin(overwrite(h))),
        ("concurrent_tasks", |h| Box::pin(concurrent(h))),
        ("unreachable_fails_fast", |h| Box::pin(unreachable(h))),
        ("store_check_and_checksum_probe", |h| {
            Box::pin(store_check(h))
        }),
        ("storage_class_changed_on_the_server", |h| {
            Box::pin(class_changed(h))
        }),
        ("sparse_extents_round_trip", |h| Box::pin(sparse(h))),
        ("ranged_get_tells_its_progress", |h| Box::pin(progress(h))),
        ("ranged_get_in_chunks", |h| Box::pin(range_chunks(h))),
        ("body_in_memory", |h| Box::pin(memory_body(h))),
    ];
    let filter = std::env::var("COLDTIER_CONFORMANCE_CASE").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        let t0 = Instant::now();
        let r = case(&h).await;
        let ms = t0.elapsed().as_millis();
        match r {
            Ok(()) => eprintln!("conformance [{}] {name}: ok ({ms} ms)", h.name),
            Err(e) => {
                eprintln!("conformance [{}] {name}: FAILED ({ms} ms): {e}", h.name);
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "[{}] {} of {ran} conformance cases failed:\n{}",
        h.name,
        failures.len(),
        failures.join("\n")
    );
}

/// Deterministic bytes.
pub(crate) fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A temporary source file holding `bytes`.
pub(crate) fn source(bytes: &[u8]) -> Result<File, String> {
    let mut f = tempfile::tempfile().map_err(|e| e.to_string())?;
    f.write_all(bytes).map_err(|e| e.to_string())?;
    Ok(f)
}

pub(crate) fn put_req(key: &str, bytes: &[u8], algo: ChecksumAlgo) -> Result<PutRequest, String> {
    Ok(PutRequest {
        key: key.to_string(),
        body: source(bytes)?.into(),
        size: bytes.len() as u64,
        storage_class: None,
        metadata: BTreeMap::new(),
        tags: BTreeMap::new(),
        checksum: Some(algo),
        extents: None,
    })
}

/// Gets an object into a fresh temporary file; returns the result and the bytes.
pub(crate) async fn get_all(
    s: &dyn ObjectStore,
    key: &str,
    version: Option<&str>,
    size: u64,
    algo: ChecksumAlgo,
) -> Result<(GetResult, Vec<u8>), StoreError> {
    get_part(s, key, version, size, algo, None).await
}

/// Gets an object, or bytes `[start, start + len)` of it (`range`), into a fresh temporary
/// file; returns the result and the bytes.
pub(crate) async fn get_part(
    s: &dyn ObjectStore,
    key: &str,
    version: Option<&str>,
    size: u64,
    algo: ChecksumAlgo,
    range: Option<(u64, u64)>,
) -> Result<(GetResult, Vec<u8>), StoreError> {
    let dest = tempfile::tempfile().expect("tempfile");
    let r = s
        .get(GetRequest {
            key,
            version_id: version,
            dest: Some(&dest),
            expected_size: size,
            checksum: algo,
            extents: None,
            range,
            dest_base: range.map_or(0, |r| r.0),
            progress: None,
        })
        .await?;
    let mut v = vec![0u8; range.map_or(size, |r| r.1) as usize];
    read_exact_at(&dest, &mut v, 0)?;
    Ok((r, v))
}

/// Reads an object back without a destination (hashing only), as a verify does.
async fn hash_only(
    s: &dyn ObjectStore,
    key: &str,
    version: Option<&str>,
    size: u64,
    algo: ChecksumAlgo,
) -> Result<GetResult, StoreError> {
    s.get(GetRequest {
        key,
        version_id: version,
        dest: None,
        expected_size: size,
        checksum: algo,
        extents: None,
        range: None,
        dest_base: 0,
        progress: None,
    })
    .await
}

fn genealogy(path: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("path".to_string(), path.to_string()),
        ("file-id".to_string(), "42".to_string()),
        ("mtime".to_string(), "1700000000.123456789".to_string()),
        ("mode".to_string(), "100644".to_string()),
        ("uid".to_string(), "1000".to_string()),
        ("gid".to_string(), "1000".to_string()),
        ("config-version".to_string(), "3".to_string()),
    ])
}

/// A range handed over in chunks (a bulk recall's pack span in memory): the chunks, in
/// order, are exactly the range; a range outside the object is refused; a missing object
/// is NotFound.
async fn range_chunks(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/chunks";
    let bytes = data((3 << 20) + 17, 8);
    ok!(s.put(put_req(key, &bytes, ChecksumAlgo::Crc32c)?).await);
    let size = bytes.len() as u64;
    for (start, len) in [(0, size), (1, 1), (4095, (2 << 20) + 3), (size - 5, 5)] {
        let got = std::sync::Mutex::new(Vec::<u8>::new());
        let sink = |b: bytes::Bytes| got.lock().expect("lock").extend_from_slice(&b);
        ok!(s
            .get_range_chunks(key, None, size, (start, len), &sink)
            .await);
        let got = got.into_inner().expect("lock");
        check!(
            got == bytes[start as usize..(start + len) as usize],
            "{}: range {start}+{len}: {} bytes back, not the range's",
            h.name,
            got.len()
        );
    }
    let none = |_: bytes::Bytes| {};
    let e = s
        .get_range_chunks(key, None, size, (size - 1, 2), &none)
        .await;
    check!(e.is_err(), "{}: a range past the end was served", h.name);
    let e = s
        .get_range_chunks("conf/no-such", None, size, (0, 1), &none)
        .await;
    check!(
        e.as_ref()
            .is_err_and(|e| e.kind == StoreErrorKind::NotFound),
        "{}: a missing object: {:?}",
        h.name,
        e.err()
    );
    ok!(s.delete(key, None).await);
    Ok(())
}

/// A ranged GET told a progress sender: the offsets it tells only grow, end at the
/// range's end in the destination, and every byte below each was written by then (a
/// bulk recall copies pack members out of a span while the rest of it comes). The S3
/// store tells it; a store that does not writes the whole range before it returns.
async fn progress(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/progress";
    let bytes = data(9 << 20, 7);
    ok!(s.put(put_req(key, &bytes, ChecksumAlgo::Crc32c)?).await);
    let (start, len) = (1000u64, (9 << 20) - 3000);
    let dest = tempfile::tempfile().expect("tempfile");
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let reader = dest.try_clone().expect("dup");
    let want = bytes[start as usize..(start + len) as usize].to_vec();
    // Checks the prefix each told offset vouches for, as a span's reader would.
    let watcher = tokio::spawn(async move {
        let mut told = vec![0u64];
        while rx.changed().await.is_ok() {
            let at = *rx.borrow_and_update();
            let mut got = vec![0u8; at as usize];
            if read_exact_at(&reader, &mut got, 0).is_err() || got[..] != want[..at as usize] {
                return Err(format!("offset {at} told before its bytes were written"));
            }
            told.push(at);
        }
        Ok(told)
    });
    let r = s
        .get(GetRequest {
            key,
            version_id: None,
            dest: Some(&dest),
            expected_size: bytes.len() as u64,
            checksum: ChecksumAlgo::Crc32c,
            extents: None,
            range: Some((start, len)),
            dest_base: start,
            progress: Some(&tx),
        })
        .await;
    drop(tx);
    ok!(r);
    let told = watcher.await.map_err(|e| e.to_string())??;
    check!(
        told.windows(2).all(|w| w[0] <= w[1]),
        "offsets went back: {told:?}"
    );
    let last = *told.last().expect("the first");
    let tells = h.name.starts_with("s3");
    check!(
        last == len || (!tells && last == 0),
        "{}: last offset told {last}, the range is {len} bytes: {told:?}",
        h.name
    );
    let mut got = vec![0u8; len as usize];
    read_exact_at(&dest, &mut got, 0).map_err(|e| e.to_string())?;
    check!(
        got == bytes[start as usize..(start + len) as usize],
        "the range's bytes differ"
    );
    ok!(s.delete(key, None).await);
    Ok(())
}

async fn round_trip(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    for (i, algo) in [
        ChecksumAlgo::Crc32c,
        ChecksumAlgo::Sha256,
        ChecksumAlgo::Crc32,
        ChecksumAlgo::Sha1,
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("conf/roundtrip/{algo}");
        let bytes = data(100_003, i as u64);
        let meta = genealogy("/srv/share/dir é/ü 100%.txt");
        let tags = BTreeMap::from([
            ("coldtier-state".to_string(), "premigrated".to_string()),
            ("file-id".to_string(), "42".to_string()),
        ]);
        let mut req = put_req(&key, &bytes, algo)?;
        req.metadata = meta.clone();
        req.tags = tags.clone();
        let put = ok!(s.put(req).await);
        let ours = Checksum::of(algo, &bytes);
        check!(
            put.checksum == ours,
            "{algo}: put checksum {} != {ours}",
            put.checksum
        );
        check!(put.parts == 1, "{algo}: {} parts", put.parts);
        check!(
            put.expected == ours.reported(),
            "{algo}: expected {}",
            put.expected
        );
        if let Some(r) = &put.reported {
            check!(
                r.matches(&put.expected),
                "{algo}: store reported {r}, ours {}",
                put.expected
            );
        }
        let head = ok!(s.head(&key, put.version_id.as_deref()).await);
        check!(head.size == bytes.len() as u64, "head size {}", head.size);
        check!(head.metadata == meta, "metadata {:?}", head.metadata);
        check!(
            head.storage_class == StorageClass::Standard,
            "class {}",
            head.storage_class
        );
        check!(
            head.restore == RestoreStatus::NotArchived,
            "restore {:?}",
            head.restore
        );
        if h.versions_named {
            check!(
                head.version_id == put.version_id,
                "version {:?} vs {:?}",
                head.version_id,
                put.version_id
            );
        } else {
            check!(
                head.version_id.is_none(),
                "version {:?}: a store that names no version named one",
                head.version_id
            );
        }
        let hc = head.checksum.clone().ok_or("head reports no checksum")?;
        check!(
            hc.matches(&put.expected),
            "{algo}: head checksum {hc} != {}",
            put.expected
        );
        let (got, back) =
            ok!(get_all(s, &key, put.version_id.as_deref(), bytes.len() as u64, algo).await);
        check!(back == bytes, "{algo}: data differs");
        check!(got.bytes == bytes.len() as u64, "got {} bytes", got.bytes);
        check!(
            got.checksum == ours,
            "{algo}: get checksum {} != {ours}",
            got.checksum
        );
        let hashed =
            ok!(hash_only(s, &key, put.version_id.as_deref(), bytes.len() as u64, algo).await);
        check!(
            hashed == got,
            "{algo}: hash-only read {hashed:?} != download {got:?}"
        );
        if h.tagging {
            let t = ok!(s.get_tags(&key, put.version_id.as_deref()).await);
            check!(t == tags, "tags {t:?}");
        } else {
            let e = fails!(
                s.get_tags(&key, put.version_id.as_deref()).await,
                StoreErrorKind::InvalidConfig
            );
            check!(!e.transient, "no tagging is permanent: {e}");
        }
    }
    Ok(())
}

async fn empty_object(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/empty/0";
    let put = ok!(s.put(put_req(key, b"", ChecksumAlgo::Crc32c)?).await);
    let zero = Checksum::of(ChecksumAlgo::Crc32c, b"");
    check!(put.checksum == zero, "checksum {}", put.checksum);
    let head = ok!(s.head(key, None).await);
    check!(head.size == 0, "size {}", head.size);
    let (got, _) = ok!(get_all(s, key, None, 0, ChecksumAlgo::Crc32c).await);
    check!(got.bytes == 0 && got.checksum == zero, "got {got:?}");
    Ok(())
}

async fn storage_class_kept(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/class/ia";
    let bytes = data(1000, 7);
    let mut req = put_req(key, &bytes, ChecksumAlgo::Crc32c)?;
    req.storage_class = Some(StorageClass::StandardIa);
    ok!(s.put(req).await);
    // Without storage classes the object is simply STANDARD.
    let want = if h.storage_classes {
        StorageClass::StandardIa
    } else {
        StorageClass::Standard
    };
    let head = ok!(s.head(key, None).await);
    check!(head.storage_class == want, "class {}", head.storage_class);
    check!(
        head.restore == RestoreStatus::NotArchived,
        "restore {:?}",
        head.restore
    );
    let l = ok!(s.list("conf/class/").await);
    check!(l.len() == 1 && l[0].storage_class == want, "list {l:?}");
    Ok(())
}

async fn large_object(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let ps = h.part_size.unwrap_or(MIN_PART_SIZE);
    // Three parts, the last one short.
    let size = (3 * ps - 12_345) as usize;
    for (i, algo) in [ChecksumAlgo::Crc32c, ChecksumAlgo::Sha256]
        .into_iter()
        .enumerate()
    {
        let key = format!("conf/large/{algo}");
        let bytes = data(size, 100 + i as u64);
        let put = ok!(s.put(put_req(&key, &bytes, algo)?).await);
        let ours = Checksum::of(algo, &bytes);
        check!(
            put.checksum == ours,
            "{algo}: whole-object checksum {} != {ours}",
            put.checksum
        );
        if h.part_size.is_some() {
            check!(put.parts == 3, "{algo}: {} parts", put.parts);
            let parts: Vec<Checksum> = bytes
                .chunks(ps as usize)
                .map(|c| Checksum::of(algo, c))
                .collect();
            let composite = composite_checksum(algo, &parts);
            check!(composite.parts == Some(3), "composite {composite}");
            check!(
                put.expected == composite,
                "{algo}: expected {} != composite {composite}",
                put.expected
            );
        } else {
            check!(put.parts == 1, "{algo}: {} parts", put.parts);
            check!(
                put.expected == ours.reported(),
                "{algo}: expected {}",
                put.expected
            );
        }
        let r = put
            .reported
            .clone()
            .ok_or("the store reported no checksum for the upload")?;
        check!(
            r.matches(&put.expected),
            "{algo}: reported {r} != expected {}",
            put.expected
        );
        let head = ok!(s.head(&key, put.version_id.as_deref()).await);
        let hc = head.checksum.ok_or("head reports no checksum")?;
        check!(
            hc.matches(&put.expected),
            "{algo}: head {hc} != expected {}",
            put.expected
        );
        check!(head.size == size as u64, "size {}", head.size);
        let (got, back) = ok!(get_all(s, &key, put.version_id.as_deref(), size as u64, algo).await);
        check!(back == bytes, "{algo}: data differs");
        check!(
            got.checksum == ours,
            "{algo}: get checksum {} != {ours}",
            got.checksum
        );
        // Without a destination: CRC ranges still combine; other hashes take one stream.
        let hashed = ok!(hash_only(s, &key, put.version_id.as_deref(), size as u64, algo).await);
        check!(
            hashed.checksum == ours && hashed.bytes == size as u64,
            "{algo}: hash-only read {hashed:?}, ours {ours}"
        );
        ok!(s.delete(&key, put.version_id.as_deref()).await);
    }
    Ok(())
}

async fn missing_object(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/missing/nothing";
    let e = fails!(s.head(key, None).await, StoreErrorKind::NotFound);
    check!(!e.transient, "NotFound should be permanent: {e}");
    fails!(
        get_all(s, key, None, 10, ChecksumAlgo::Crc32c).await,
        StoreErrorKind::NotFound
    );
    // Without tagging the call fails as such before the key is looked at.
    let tag_err = if h.tagging {
        StoreErrorKind::NotFound
    } else {
        StoreErrorKind::InvalidConfig
    };
    fails!(s.get_tags(key, None).await, tag_err);
    fails!(
        s.restore(key, None, 1, RestoreTier::Standard).await,
        StoreErrorKind::NotFound
    );
    let l = ok!(s.list("conf/missing/").await);
    check!(l.is_empty(), "list {l:?}");
    Ok(())
}

async fn short_source(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let mut sizes = vec![(1000usize, 1500u64)];
    if let Some(ps) = h.part_size {
        // The source ends in the middle of the second part of a multipart upload.
        sizes.push(((ps + ps / 2) as usize, 3 * ps));
    }
    for (i, (have, claim)) in sizes.into_iter().enumerate() {
        let key = format!("conf/short/{i}");
        let bytes = data(have, 9);
        let mut req = put_req(&key, &bytes, ChecksumAlgo::Crc32c)?;
        req.size = claim;
        let e = match s.put(req).await {
            Ok(_) => {
                return Err(format!(
                    "put of {claim} bytes from a {have}-byte file succeeded"
                ))
            }
            Err(e) => e,
        };
        check!(e.kind == StoreErrorKind::Other && e.transient, "error {e}");
        fails!(s.head(&key, None).await, StoreErrorKind::NotFound);
    }
    let l = ok!(s.list("conf/short/").await);
    check!(l.is_empty(), "list {l:?}");
    Ok(())
}

/// A body in memory (a pack built in memory) goes as it is, in one PUT whatever its size
/// (above the part size too): the same object and checksum as from a file, byte-identical
/// on GET. A body shorter than the size asked is refused and leaves nothing.
async fn memory_body(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let size = h.part_size.unwrap_or(MIN_PART_SIZE) as usize + 12_345;
    let bytes = data(size, 4242);
    let key = "conf/memory/big";
    let mut req = put_req(key, b"", ChecksumAlgo::Crc32c)?;
    req.body = PutBody::Memory(bytes::Bytes::from(bytes.clone()));
    req.size = size as u64;
    let put = ok!(s.put(req).await);
    let ours = Checksum::of(ChecksumAlgo::Crc32c, &bytes);
    check!(put.checksum == ours, "checksum {} != {ours}", put.checksum);
    check!(
        put.parts == 1,
        "{} parts: a body in memory is one PUT",
        put.parts
    );
    if let Some(r) = &put.reported {
        check!(
            r.matches(&put.expected),
            "store reported {r}, ours {}",
            put.expected
        );
    }
    let (got, back) = ok!(get_all(
        s,
        key,
        put.version_id.as_deref(),
        size as u64,
        ChecksumAlgo::Crc32c
    )
    .await);
    check!(back == bytes, "the object's bytes differ from the body's");
    check!(got.checksum == ours, "GET checksum {}", got.checksum);
    let short = "conf/memory/short";
    let mut req = put_req(short, b"", ChecksumAlgo::Crc32c)?;
    req.body = PutBody::Memory(bytes::Bytes::from_static(b"only these bytes"));
    req.size = 1000;
    let e = match s.put(req).await {
        Ok(_) => return Err("a 16-byte body put as 1000 bytes succeeded".into()),
        Err(e) => e,
    };
    check!(e.kind == StoreErrorKind::Other, "error {e}");
    fails!(s.head(short, None).await, StoreErrorKind::NotFound);
    ok!(s.delete(key, put.version_id.as_deref()).await);
    Ok(())
}

async fn bad_arguments(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    for key in [
        "",
        "/abs",
        "../up",
        "a/../../up",
        "a/./b",
        "a//b",
        "a/",
        ".hidden",
        "a/.b",
        "nul\0x",
        "ctl\nx",
        "x.meta.json",
    ] {
        fails!(
            s.put(put_req(key, b"x", ChecksumAlgo::Crc32c)?).await,
            StoreErrorKind::InvalidArgument
        );
        fails!(s.head(key, None).await, StoreErrorKind::InvalidArgument);
        fails!(
            get_all(s, key, None, 1, ChecksumAlgo::Crc32c).await,
            StoreErrorKind::InvalidArgument
        );
        fails!(s.delete(key, None).await, StoreErrorKind::InvalidArgument);
    }
    let long = "k".repeat(MAX_KEY_LEN + 1);
    fails!(s.head(&long, None).await, StoreErrorKind::InvalidArgument);
    fails!(s.list("../").await, StoreErrorKind::InvalidArgument);
    let mut req = put_req("conf/bad/meta", b"x", ChecksumAlgo::Crc32c)?;
    req.metadata.insert("Upper_Case".into(), "v".into());
    fails!(s.put(req).await, StoreErrorKind::InvalidArgument);
    let mut req = put_req("conf/bad/tags", b"x", ChecksumAlgo::Crc32c)?;
    req.tags.insert("k".into(), "no\"quotes".into());
    fails!(s.put(req).await, StoreErrorKind::InvalidArgument);
    let l = ok!(s.list("conf/bad/").await);
    check!(l.is_empty(), "list {l:?}");
    Ok(())
}

async fn delete(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/delete/one";
    let put = ok!(s
        .put(put_req(key, b"to be deleted", ChecksumAlgo::Crc32c)?)
        .await);
    ok!(s.delete(key, put.version_id.as_deref()).await);
    fails!(s.head(key, None).await, StoreErrorKind::NotFound);
    ok!(s.delete(key, None).await);
    ok!(s.delete("conf/delete/never-was", None).await);
    let l = ok!(s.list("conf/delete/").await);
    check!(l.is_empty(), "list {l:?}");
    Ok(())
}

async fn list(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let mut want_a = Vec::new();
    for i in 0..23 {
        let key = format!("conf/list/a/{i:03}");
        ok!(s
            .put(put_req(&key, &data(i, i as u64), ChecksumAlgo::Crc32c)?)
            .await);
        want_a.push((key, i as u64));
    }
    for key in ["conf/list/b/x1", "conf/list/b/x2", "conf/list/ab"] {
        ok!(s.put(put_req(key, b"b", ChecksumAlgo::Crc32c)?).await);
    }
    let a = ok!(s.list("conf/list/a/").await);
    let got: Vec<(String, u64)> = a.iter().map(|e| (e.key.clone(), e.size)).collect();
    check!(got == want_a, "list a/: {got:?}");
    let a_str = ok!(s.list("conf/list/a").await);
    check!(
        a_str.len() == 24 && a_str[0].key == "conf/list/a/000" && a_str[23].key == "conf/list/ab",
        "string prefix: {:?}",
        a_str.iter().map(|e| &e.key).collect::<Vec<_>>()
    );
    let all = ok!(s.list("conf/list/").await);
    check!(all.len() == 26, "{} under conf/list/", all.len());
    check!(all.windows(2).all(|w| w[0].key < w[1].key), "not sorted");
    let none = ok!(s.list("conf/list/zzz/").await);
    check!(none.is_empty(), "list zzz: {none:?}");
    let b = ok!(s.list("conf/list/b/x").await);
    check!(b.len() == 2, "list b/x: {b:?}");
    for e in all {
        ok!(s.delete(&e.key, None).await);
    }
    // A listing may lag the deletes it follows on a replicated backend (garage's 3-node
    // cluster once listed a key deleted a moment before, CI 2026-12-06): the deletes must
    // show within 20 s; a store whose listing never catches up fails.
    let mut after = ok!(s.list("conf/list/").await);
    for _ in 0..100 {
        if after.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        after = ok!(s.list("conf/list/").await);
    }
    check!(after.is_empty(), "after delete: {after:?}");
    Ok(())
}

async fn archive(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/archive/glacier";
    let bytes = data(5000, 11);
    let algo = ChecksumAlgo::Crc32c;
    let mut req = put_req(key, &bytes, algo)?;
    req.storage_class = Some(StorageClass::Glacier);
    let put = ok!(s.put(req).await);
    let v = put.version_id.as_deref();
    let head = ok!(s.head(key, v).await);
    let want = if h.storage_classes {
        StorageClass::Glacier
    } else {
        StorageClass::Standard
    };
    check!(head.storage_class == want, "class {}", head.storage_class);
    if !h.archives {
        check!(
            head.restore == RestoreStatus::NotArchived,
            "restore {:?}",
            head.restore
        );
        ok!(get_all(s, key, v, bytes.len() as u64, algo).await);
        let r = ok!(s.restore(key, v, 1, RestoreTier::Standard).await);
        check!(r == RestoreOutcome::NotArchived, "restore {r:?}");
        return Ok(());
    }
    check!(
        head.restore == RestoreStatus::Archived,
        "restore {:?}",
        head.restore
    );
    let e = fails!(
        get_all(s, key, v, bytes.len() as u64, algo).await,
        StoreErrorKind::InvalidObjectState
    );
    check!(!e.transient, "InvalidObjectState should be permanent: {e}");
    (h.before_restore)();
    let r = ok!(s.restore(key, v, 1, RestoreTier::Bulk).await);
    check!(r == RestoreOutcome::Started, "first restore: {r:?}");
    let head = ok!(s.head(key, v).await);
    check!(
        head.restore == RestoreStatus::InProgress,
        "after restore: {:?}",
        head.restore
    );
    let r = ok!(s.restore(key, v, 1, RestoreTier::Bulk).await);
    check!(
        r == RestoreOutcome::AlreadyInProgress,
        "second restore: {r:?}"
    );
    fails!(
        get_all(s, key, v, bytes.len() as u64, algo).await,
        StoreErrorKind::InvalidObjectState
    );
    let t0 = Instant::now();
    loop {
        let head = ok!(s.head(key, v).await);
        match head.restore {
            RestoreStatus::Restored { .. } => break,
            RestoreStatus::InProgress if t0.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            other => return Err(format!("waiting for the restore: {other:?}")),
        }
    }
    let (got, back) = ok!(get_all(s, key, v, bytes.len() as u64, algo).await);
    check!(
        back == bytes && got.checksum == put.checksum,
        "restored data differs"
    );
    let r = ok!(s.restore(key, v, 1, RestoreTier::Bulk).await);
    check!(
        r == RestoreOutcome::AlreadyRestored,
        "restore when restored: {r:?}"
    );
    // DEEP_ARCHIVE is archived too; a STANDARD object needs no restore.
    let mut req = put_req("conf/archive/deep", b"deep", algo)?;
    req.storage_class = Some(StorageClass::DeepArchive);
    ok!(s.put(req).await);
    let head = ok!(s.head("conf/archive/deep", None).await);
    check!(
        head.storage_class == StorageClass::DeepArchive && head.restore == RestoreStatus::Archived,
        "deep: {} {:?}",
        head.storage_class,
        head.restore
    );
    ok!(s.put(put_req("conf/archive/standard", b"std", algo)?).await);
    let r = ok!(s
        .restore("conf/archive/standard", None, 1, RestoreTier::Standard)
        .await);
    check!(
        r == RestoreOutcome::NotArchived,
        "restore of STANDARD: {r:?}"
    );
    Ok(())
}

async fn corruption(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/corrupt/one";
    let bytes = data(65_536, 13);
    let algo = ChecksumAlgo::Crc32c;
    let put = ok!(s.put(put_req(key, &bytes, algo)?).await);
    (h.corrupt)(key);
    match get_all(s, key, None, bytes.len() as u64, algo).await {
        Ok((got, back)) => {
            check!(
                back != bytes,
                "data did not change: the corruption hook did nothing"
            );
            check!(
                got.checksum != put.checksum,
                "corrupted data has the stored checksum"
            );
        }
        Err(e) => check!(e.kind == StoreErrorKind::ChecksumMismatch, "get: {e}"),
    }
    match hash_only(s, key, None, bytes.len() as u64, algo).await {
        Ok(got) => check!(
            got.checksum != put.checksum,
            "hash-only read of corrupted data has the stored checksum"
        ),
        Err(e) => check!(
            e.kind == StoreErrorKind::ChecksumMismatch,
            "hash-only get: {e}"
        ),
    }
    Ok(())
}

async fn wrong_size(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/size/one";
    let bytes = data(4096, 17);
    ok!(s.put(put_req(key, &bytes, ChecksumAlgo::Crc32c)?).await);
    for size in [4095, 4097] {
        fails!(
            get_all(s, key, None, size, ChecksumAlgo::Crc32c).await,
            StoreErrorKind::ChecksumMismatch
        );
        fails!(
            hash_only(s, key, None, size, ChecksumAlgo::Crc32c).await,
            StoreErrorKind::ChecksumMismatch
        );
    }
    Ok(())
}

async fn tags(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/tags/one";
    let mut req = put_req(key, b"tagged", ChecksumAlgo::Crc32c)?;
    req.tags
        .insert("coldtier-state".into(), "premigrated".into());
    let put = ok!(s.put(req).await);
    let v = put.version_id.as_deref();
    let new = BTreeMap::from([
        ("coldtier-state".to_string(), "stub".to_string()),
        ("superseded-by".to_string(), "7/2 x:y@z+=_.-".to_string()),
    ]);
    if !h.tagging {
        // The PUT with tags was accepted; every tagging call fails, permanently.
        for e in [
            fails!(
                s.set_tags(key, v, new.clone()).await,
                StoreErrorKind::InvalidConfig
            ),
            fails!(s.get_tags(key, v).await, StoreErrorKind::InvalidConfig),
            fails!(
                s.set_tags(key, v, BTreeMap::new()).await,
                StoreErrorKind::InvalidConfig
            ),
        ] {
            check!(!e.transient, "no tagging is permanent: {e}");
        }
        return Ok(());
    }
    ok!(s.set_tags(key, v, new.clone()).await);
    let t = ok!(s.get_tags(key, v).await);
    check!(t == new, "tags {t:?}");
    ok!(s.set_tags(key, v, BTreeMap::new()).await);
    let t = ok!(s.get_tags(key, v).await);
    check!(t.is_empty(), "tags after clearing {t:?}");
    Ok(())
}

async fn overwrite(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/overwrite/one";
    let one = data(3000, 21);
    let two = data(2000, 22);
    let p1 = ok!(s.put(put_req(key, &one, ChecksumAlgo::Crc32c)?).await);
    let p2 = ok!(s.put(put_req(key, &two, ChecksumAlgo::Crc32c)?).await);
    if p1.version_id.is_some() {
        check!(p1.version_id != p2.version_id, "same version id twice");
    }
    let head = ok!(s.head(key, None).await);
    let named = if h.versions_named {
        p2.version_id.clone()
    } else {
        None
    };
    check!(
        head.size == 2000 && head.version_id == named,
        "head {head:?}"
    );
    let (got, back) =
        ok!(get_all(s, key, p2.version_id.as_deref(), 2000, ChecksumAlgo::Crc32c).await);
    check!(
        back == two && got.checksum == p2.checksum,
        "latest data differs"
    );
    if !h.versions_named && p1.version_id.is_some() {
        // The first PUT's version id is not honoured: asking for it gets the latest.
        let (_, back) =
            ok!(get_all(s, key, p1.version_id.as_deref(), 2000, ChecksumAlgo::Crc32c).await);
        check!(back == two, "a GET of an unnamed version got other data");
    }
    Ok(())
}

async fn concurrent(h: &Harness) -> Result<(), String> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8u64 {
        let store = h.store.clone();
        set.spawn(async move {
            let key = format!("conf/concurrent/{i}");
            let bytes = data(10_000 + i as usize, 30 + i);
            let put = store
                .put(put_req(&key, &bytes, ChecksumAlgo::Crc32c)?)
                .await
                .map_err(|e| e.to_string())?;
            let (got, back) = get_all(
                &*store,
                &key,
                put.version_id.as_deref(),
                bytes.len() as u64,
                ChecksumAlgo::Crc32c,
            )
            .await
            .map_err(|e| e.to_string())?;
            if back != bytes || got.checksum != put.checksum {
                return Err(format!("{key}: data differs"));
            }
            Ok::<_, String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let l = ok!(h.store.list("conf/concurrent/").await);
    check!(l.len() == 8, "{} listed", l.len());
    Ok(())
}

async fn unreachable(h: &Harness) -> Result<(), String> {
    let s = &*h.unreachable;
    let t0 = Instant::now();
    let e = fails!(
        s.head("conf/unreachable/x", None).await,
        StoreErrorKind::Unreachable
    );
    check!(e.transient, "Unreachable should be transient: {e}");
    let e = fails!(
        s.put(put_req("conf/unreachable/x", b"x", ChecksumAlgo::Crc32c)?)
            .await,
        StoreErrorKind::Unreachable
    );
    check!(e.transient, "put: {e}");
    fails!(s.list("conf/").await, StoreErrorKind::Unreachable);
    let took = t0.elapsed();
    check!(
        took < Duration::from_secs(20),
        "three calls to an unreachable store took {took:?}"
    );
    eprintln!(
        "conformance [{}] unreachable: 3 calls failed in {took:?}: {e}",
        h.name
    );
    Ok(())
}

/// `check` puts, reads back and deletes a probe object, finds out whether the backend
/// validates checksums, and leaves nothing behind; against an unreachable backend it
/// fails as `Unreachable`.
async fn store_check(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let c = ok!(check(s, "conformance-1").await);
    check!(
        c.validates_checksums == h.validates,
        "validates_checksums = {}, expected {}",
        c.validates_checksums,
        h.validates
    );
    // Every store here that validates proves its multipart uploads too (garage with the
    // COMPOSITE checksum; the memory store has none); s3s-fs, which does not, has its own
    // test. Not asked of a store that does not validate.
    check!(
        c.multipart_proven == h.validates.then_some(true),
        "multipart_proven = {:?} (validates: {})",
        c.multipart_proven,
        h.validates
    );
    // Every probe object is gone. garage's listing may still name a multipart object for a
    // moment after its DELETE succeeded (its HEAD already says 404), so what a listing
    // names is asked again by HEAD, which must not find it.
    for entry in ok!(s.list(&format!("{PROBE_PREFIX}/")).await) {
        let gone = s.head(&entry.key, None).await;
        check!(
            gone.as_ref()
                .is_err_and(|e| e.kind == StoreErrorKind::NotFound),
            "probe object left behind: {} ({:?})",
            entry.key,
            gone.map(|m| m.size)
        );
    }
    let e = fails!(
        check(&*h.unreachable, "conformance-2").await,
        StoreErrorKind::Unreachable
    );
    check!(e.message.contains("probe"), "error names the probe: {e}");
    Ok(())
}

/// `set_storage_class` moves an object to another class where it is (no data through
/// us): the class changes, data, metadata and tags stay, and the version it names is the
/// one that holds the data (the old one is gone on a versioned bucket).
async fn class_changed(h: &Harness) -> Result<(), String> {
    let s = &*h.store;
    let key = "conf/class/moved";
    let bytes = data(4321, 11);
    let mut req = put_req(key, &bytes, ChecksumAlgo::Crc32c)?;
    req.storage_class = Some(StorageClass::Standard);
    req.metadata
        .insert("coldtier-file-id".into(), "f-\u{e9}".into());
    req.tags.insert("coldtier-state".into(), "live".into());
    let put = ok!(s.put(req).await);
    let to = if h.archives {
        StorageClass::Glacier
    } else {
        StorageClass::StandardIa
    };
    let mut from = put.version_id.as_deref();
    if !h.versions_named && from.is_some() {
        // A copy from the version the PUT named fails (that version is no name the store
        // knows); from the latest it works.
        fails!(
            s.set_storage_class(key, from, to.clone()).await,
            StoreErrorKind::NotFound
        );
        from = None;
    }
    let v = ok!(s.set_storage_class(key, from, to.clone()).await);
    check!(
        put.version_id.is_none() || v.is_some(),
        "a versioned store names the new version"
    );
    let head = ok!(s.head(key, v.as_deref()).await);
    let want = if h.storage_classes {
        to.clone()
    } else {
        StorageClass::Standard
    };
    check!(head.storage_class == want, "class {}", head.storage_class);
    check!(head.size == bytes.len() as u64, "size {}", head.size);
    check!(
        head.metadata.get("coldtier-file-id").map(String::as_str) == Some("f-\u{e9}"),
        "metadata {:?}",
        head.metadata
    );
    // (moto refuses tagging calls on archived objects; AWS does not.)
    if !h.archives && h.tagging {
        let tags = ok!(s.get_tags(key, v.as_deref()).await);
        check!(
            tags.get("coldtier-state").map(String::as_str) == Some("live"),
            "tags {tags:?}"
        );
    }
    if let (Some(old), Some(new), true) =
        (put.version_id.as_deref(), v.as_deref(), h.versions_named)
    {
        if old != new {
            fails!(s.head(key, Some(old)).await, StoreErrorKind::NotFound);
        }
    }
    if !h.archives {
        let (_, back) = ok!(get_all(
            s,
            key,
            v.as_deref(),
            bytes.len() as u64,
            ChecksumAlgo::Crc32c
        )
        .await);
        check!(back == bytes, "data changed");
    }
    Ok(())
}

/// A put with extents reads only them, back to back; a get with the same extents writes
/// the object's bytes back where they were, leaving the rest of the file as holes.
async fn sparse(h: &Harness) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let s = &*h.store;
    const M: u64 = 1 << 20;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("src"))
        .map_err(|e| e.to_string())?;
    let (a, b) = (data(70_000, 21), data(30_000, 22));
    src.set_len(40 * M).map_err(|e| e.to_string())?;
    src.write_all_at(&a, 0).map_err(|e| e.to_string())?;
    src.write_all_at(&b, 30 * M).map_err(|e| e.to_string())?;
    let extents = Extents(vec![(0, a.len() as u64), (30 * M, b.len() as u64)]);
    let mut req = put_req("conf/sparse", b"", ChecksumAlgo::Crc32c)?;
    req.body = src.try_clone().map_err(|e| e.to_string())?.into();
    req.size = extents.data_len();
    req.extents = Some(extents.clone());
    let put = ok!(s.put(req).await);
    let mut body = a.clone();
    body.extend_from_slice(&b);
    check!(
        put.checksum == Checksum::of(ChecksumAlgo::Crc32c, &body),
        "the object is the extents' bytes back to back"
    );
    let head = ok!(s.head("conf/sparse", put.version_id.as_deref()).await);
    check!(head.size == body.len() as u64, "object size {}", head.size);
    let dest = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("dest"))
        .map_err(|e| e.to_string())?;
    dest.set_len(40 * M).map_err(|e| e.to_string())?;
    let got = ok!(s
        .get(GetRequest {
            key: "conf/sparse",
            version_id: put.version_id.as_deref(),
            dest: Some(&dest),
            expected_size: body.len() as u64,
            checksum: ChecksumAlgo::Crc32c,
            extents: Some(&extents),
            range: None,
            dest_base: 0,
            progress: None,
        })
        .await);
    check!(got.checksum == put.checksum, "checksum of what was written");
    let back = std::fs::read(dir.path().join("dest")).map_err(|e| e.to_string())?;
    let want = std::fs::read(dir.path().join("src")).map_err(|e| e.to_string())?;
    check!(back == want, "the file came back as it was");
    use std::os::unix::fs::MetadataExt;
    let blocks = dest.metadata().map_err(|e| e.to_string())?.blocks() * 512;
    check!(blocks < 4 * M, "holes stay holes: {blocks} bytes allocated");
    Ok(())
}
