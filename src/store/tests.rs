//! The conformance suite on each backend (memory fake, posix directory, S3 on a real moto
//! server and on a real 3-node garage cluster), and unit tests of checksums, keys and
//! configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::conformance::{data, get_all, get_part, put_req, run_all, Harness};
use super::testing::{GarageCluster, MotoServer};
use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn conformance_memory() {
    runtime().block_on(async {
        let store = MemoryStore::new()
            .with_restore_delay(Duration::from_secs(1))
            .into_arc();
        let dead = MemoryStore::new().into_arc();
        dead.set_unreachable(true);
        let s2 = store.clone();
        run_all(Harness {
            name: "memory",
            store,
            unreachable: dead,
            corrupt: Box::new(move |k| assert!(s2.corrupt(k), "no object {k}")),
            before_restore: Box::new(|| {}),
            archives: true,
            part_size: None,
            validates: true,
            storage_classes: true,
            tagging: true,
            versions_named: true,
        })
        .await
    });
}

fn posix_harness(emulate: bool) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = PosixConfig {
        root: dir.path().join("objects"),
        emulate_archive: emulate,
        restore_delay: "1s".into(),
        ..PosixConfig::default()
    };
    let store = Arc::new(PosixStore::new(&cfg).expect("posix store"));
    // A store whose root went away (a share that is no longer mounted).
    let gone_cfg = PosixConfig {
        root: dir.path().join("gone"),
        ..cfg.clone()
    };
    let gone = Arc::new(PosixStore::new(&gone_cfg).expect("posix store"));
    std::fs::remove_file(gone_cfg.root.join(posix::MARKER)).unwrap();
    let s2 = store.clone();
    let h = Harness {
        name: if emulate { "posix+archive" } else { "posix" },
        store,
        unreachable: gone,
        corrupt: Box::new(move |k| {
            let p = s2.data_path(k).unwrap();
            let mut v = std::fs::read(&p).unwrap();
            let i = v.len() / 2;
            v[i] ^= 0x5a;
            std::fs::write(&p, v).unwrap();
        }),
        before_restore: Box::new(|| {}),
        archives: emulate,
        part_size: None,
        validates: false,
        storage_classes: true,
        tagging: true,
        versions_named: true,
    };
    (h, dir)
}

#[test]
fn conformance_posix() {
    let (h, _dir) = posix_harness(false);
    runtime().block_on(run_all(h));
}

#[test]
fn conformance_posix_emulating_archive() {
    let (h, _dir) = posix_harness(true);
    runtime().block_on(run_all(h));
}

/// How long moto keeps a restore "in progress" (see `MotoServer::set_restore_seconds`).
const MOTO_RESTORE_SECS: u64 = 2;

/// A port on 127.0.0.1 that the kernel just handed out and nobody holds.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn s3_harness(moto: &Arc<MotoServer>, cfg: S3Config, name: &'static str) -> Harness {
    let store = Arc::new(S3Store::new(&cfg).await.expect("s3 store"));
    let dead = unreachable_s3(&cfg).await;
    let m = moto.clone();
    let (bucket, prefix) = (cfg.bucket.clone(), cfg.prefix.clone());
    Harness {
        name,
        store,
        unreachable: dead,
        corrupt: Box::new(move |k| {
            let full = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}/{k}")
            };
            let mut v = m.raw_get(&bucket, &full).unwrap();
            let i = v.len() / 2;
            v[i] ^= 0x5a;
            m.raw_put(&bucket, &full, &v).unwrap();
        }),
        // moto shows a new archived object as restored for MOTO_RESTORE_SECS after its
        // creation; a restore asked for after that is in progress for that long.
        before_restore: Box::new(|| {
            std::thread::sleep(Duration::from_millis(MOTO_RESTORE_SECS * 1000 + 300))
        }),
        archives: true,
        part_size: Some(cfg.part_size),
        // moto 5.2.5 stores whatever checksum it is sent, unchecked.
        validates: false,
        storage_classes: true,
        tagging: true,
        versions_named: true,
    }
}

fn start_moto() -> Arc<MotoServer> {
    match MotoServer::start() {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("cannot run the S3 conformance tests: {e}"),
    }
}

/// The suite on a versioned bucket with a key prefix, SDK checksum defaults.
#[test]
fn conformance_s3_moto_versioned() {
    let moto = start_moto();
    moto.create_bucket("coldtier-versioned", true).unwrap();
    moto.set_restore_seconds(MOTO_RESTORE_SECS).unwrap();
    let cfg = S3Config {
        prefix: "pfx/coldtier".into(),
        part_size: MIN_PART_SIZE,
        list_page_size: 7,
        ..moto.s3_config("coldtier-versioned")
    };
    runtime().block_on(async {
        let h = s3_harness(&moto, cfg, "s3-moto-versioned").await;
        run_all(h).await
    });
    eprintln!("moto resident memory at the end: {:?} KiB", moto.rss_kib());
}

/// The suite on an unversioned bucket without prefix, checksums "when required" (what
/// garage needs) and Content-MD5 on every PUT and part.
#[test]
fn conformance_s3_moto_unversioned_when_required() {
    let moto = start_moto();
    moto.create_bucket("coldtier-plain", false).unwrap();
    moto.set_restore_seconds(MOTO_RESTORE_SECS).unwrap();
    let cfg = S3Config {
        part_size: MIN_PART_SIZE,
        list_page_size: 5,
        request_checksum: RequestChecksum::WhenRequired,
        content_md5: true,
        concurrency: 2,
        ..moto.s3_config("coldtier-plain")
    };
    runtime().block_on(async {
        let h = s3_harness(&moto, cfg, "s3-moto-when-required").await;
        run_all(h).await
    });
}

/// A store for the same server and bucket as `cfg`, whose backend cannot be reached
/// (nothing listens on a port the kernel just picked and released).
async fn unreachable_s3(cfg: &S3Config) -> Arc<S3Store> {
    let port = free_port();
    let dead_cfg = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        connect_timeout: "2s".into(),
        read_timeout: "5s".into(),
        max_attempts: 2,
        ..cfg.clone()
    };
    Arc::new(S3Store::new(&dead_cfg).await.expect("s3 store"))
}

/// Starts a 3-node garage cluster in `dir`, or fails saying how to install garage.
fn start_garage(dir: &std::path::Path) -> GarageCluster {
    GarageCluster::start(dir)
        .unwrap_or_else(|e| panic!("cannot run the garage conformance test: {e}"))
}

async fn garage_harness(store: Arc<S3Store>, cfg: S3Config, name: &'static str) -> Harness {
    let c2 = cfg.clone();
    Harness {
        name,
        store,
        unreachable: unreachable_s3(&cfg).await,
        // Overwrites the object (its metadata kept) with one byte flipped, through S3:
        // garage checks the hash of each block it stores, so damage on its disks would be
        // refused or repaired from another node, never served.
        corrupt: Box::new(move |k| {
            let (cfg, k) = (c2.clone(), k.to_string());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let s = S3Store::new(&cfg).await.unwrap();
                    let head = s.head(&k, None).await.unwrap();
                    let (_, mut v) = get_all(&s, &k, None, head.size, ChecksumAlgo::Crc32c)
                        .await
                        .unwrap();
                    let i = v.len() / 2;
                    v[i] ^= 0x5a;
                    let mut req = put_req(&k, &v, ChecksumAlgo::Crc32c).unwrap();
                    req.metadata = head.metadata;
                    s.put(req).await.unwrap();
                })
            })
            .join()
            .unwrap()
        }),
        before_restore: Box::new(|| {}),
        // No storage classes, so nothing is ever archived, and no RestoreObject.
        archives: false,
        part_size: Some(cfg.part_size),
        // garage 2.x refuses a body that does not match the x-amz-checksum-* sent with it.
        validates: true,
        storage_classes: false,
        tagging: false,
        versions_named: false,
    }
}

/// The suite on a 3-node garage cluster (replication factor 3), through node 0's S3 API:
/// on a bucket with a key prefix and checksums "when required", and on one without prefix
/// with the SDK's default checksum setting and Content-MD5. garage has no storage
/// classes, no restore, no object tagging and no versioning (see the Harness fields); it
/// validates the checksums it is sent, and checks SigV4 signatures: the lean GETs (one
/// request objects) pass.
#[test]
fn conformance_garage() {
    let dir = tempfile::tempdir().unwrap();
    let garage = start_garage(dir.path());
    eprintln!("garage cluster: {}", garage.version);
    garage.create_bucket("coldtier-garage").unwrap();
    garage.create_bucket("coldtier-garage-plain").unwrap();
    let cfg = S3Config {
        prefix: "pfx/coldtier".into(),
        part_size: MIN_PART_SIZE,
        list_page_size: 7,
        ..garage.s3_config("coldtier-garage")
    };
    let lean_gets_pass = |store: &S3Store| {
        let served = store.lean_gets().expect("an endpoint: the lean GET is on");
        assert!(served > 0, "no GET took the lean path");
        assert!(!store.lean_refused(), "garage refused a lean GET");
    };
    runtime().block_on(async {
        let store = Arc::new(S3Store::new(&cfg).await.expect("s3 store"));
        run_all(garage_harness(store.clone(), cfg, "s3-garage").await).await;
        lean_gets_pass(&store);
    });
    let cfg = S3Config {
        part_size: MIN_PART_SIZE,
        list_page_size: 5,
        request_checksum: RequestChecksum::WhenSupported,
        content_md5: true,
        concurrency: 2,
        ..garage.s3_config("coldtier-garage-plain")
    };
    runtime().block_on(async {
        let store = Arc::new(S3Store::new(&cfg).await.expect("s3 store"));
        run_all(garage_harness(store.clone(), cfg, "s3-garage-when-supported").await).await;
        lean_gets_pass(&store);
    });
    drop(garage);
}

#[test]
fn s3_missing_bucket_is_invalid_config() {
    let moto = start_moto();
    runtime().block_on(async {
        let store = S3Store::new(&moto.s3_config("no-such-bucket"))
            .await
            .unwrap();
        let e = store.head("k", None).await.unwrap_err();
        // HEAD has no body: a missing bucket looks like a missing key.
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e}");
        let e = store.list("").await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::InvalidConfig, "{e}");
        assert!(!e.transient);
    });
}

/// A one-request object comes through the lean GET (no SDK orchestration): keys with
/// characters that need encoding, a given version, and a store left on after a missing key;
/// a size that does not match, and an object above part_size, go through the SDK.
#[test]
fn s3_small_gets_take_the_lean_path() {
    let moto = start_moto();
    moto.create_bucket("coldtier-lean", true).unwrap();
    let cfg = S3Config {
        prefix: "pfx é+1/x".into(),
        part_size: MIN_PART_SIZE,
        ..moto.s3_config("coldtier-lean")
    };
    runtime().block_on(async {
        let store = S3Store::new(&cfg).await.unwrap();
        let served = || {
            store
                .lean_gets()
                .expect("the lean GET is on with an endpoint")
        };
        assert_eq!(served(), 0);
        let get = |key: &'static str, version: Option<String>, size: u64| {
            let store = store.clone();
            async move {
                get_all(&store, key, version.as_deref(), size, ChecksumAlgo::Crc32c).await
            }
        };
        let key = "dir é/ü 100%+x=y&z;(a)*!.bin";
        let v1 = data(70_001, 1);
        let put = |bytes: &[u8]| put_req(key, bytes, ChecksumAlgo::Crc32c).unwrap();
        let p1 = store.put(put(&v1)).await.unwrap();
        let v2 = data(70_001, 2);
        let p2 = store.put(put(&v2)).await.unwrap();
        assert_ne!(p1.version_id, p2.version_id, "a versioned bucket");

        let (g, back) = get(key, None, v2.len() as u64).await.unwrap();
        assert_eq!(back, v2);
        assert_eq!(g.checksum, p2.checksum);
        assert_eq!(g.version_id, p2.version_id);
        assert_eq!(served(), 1);
        let (g, back) = get(key, p1.version_id.clone(), v1.len() as u64)
            .await
            .unwrap();
        assert_eq!(back, v1, "the version asked for");
        assert_eq!(g.version_id, p1.version_id);
        assert_eq!(served(), 2);

        let e = get("no/such/key", None, 10).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e}");
        let e = get(key, None, v2.len() as u64 + 1).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::ChecksumMismatch, "{e}");
        assert_eq!(
            served(),
            2,
            "answers other than the expected 200 go to the SDK"
        );
        get(key, None, v2.len() as u64).await.unwrap();
        assert_eq!(served(), 3, "still on after a missing key");

        // Above part_size: ranged GETs through the SDK.
        let big = data(MIN_PART_SIZE as usize + 1, 3);
        store
            .put(put_req("big", &big, ChecksumAlgo::Crc32c).unwrap())
            .await
            .unwrap();
        let (_, back) = get("big", None, big.len() as u64).await.unwrap();
        assert!(back == big, "big object differs");
        assert_eq!(served(), 3);

        // A range (a stream's chunk, a pack member): lean too, its bytes, hashed by
        // themselves, of the version asked for.
        let size = big.len() as u64;
        for (start, len) in [(0, 4096), (size - 1, 1), (1_000_000, 3_000_000)] {
            let (g, back) = get_range_of(&store, "big", None, (start, len), size)
                .await
                .unwrap();
            let want = &big[start as usize..(start + len) as usize];
            assert!(back == want, "range {start}+{len} differs");
            assert_eq!(g.checksum, Checksum::of(ChecksumAlgo::Crc32c, want));
        }
        assert_eq!(served(), 6);
        let (_, back) = get_range_of(&store, key, p1.version_id.as_deref(), (10, 100), 70_001)
            .await
            .unwrap();
        assert_eq!(back, &v1[10..110], "the version asked for");
        assert_eq!(served(), 7);
        // An object of another size than expected: not taken (the SDK's answer fails).
        let e = get_range_of(&store, "big", None, (0, 10), size + 1)
            .await
            .unwrap_err();
        assert_eq!(served(), 7, "{e}");
        // On an http:// endpoint, the quick-ACK client: it asked for ACKs as it read.
        assert!(store.lean_quickacks().unwrap() > 0);
    });
    // Without an explicit endpoint (AWS), every GET goes through the SDK.
    let aws = S3Config {
        endpoint: None,
        ..moto.s3_config("coldtier-lean")
    };
    runtime().block_on(async {
        assert_eq!(S3Store::new(&aws).await.unwrap().lean_gets(), None);
    });
}

/// Bytes `[start, start + len)` of an object of `size` bytes, through `GetRequest::range`.
async fn get_range_of(
    s: &S3Store,
    key: &str,
    version: Option<&str>,
    range: (u64, u64),
    size: u64,
) -> Result<(GetResult, Vec<u8>), StoreError> {
    get_part(s, key, version, size, ChecksumAlgo::Crc32c, Some(range)).await
}

/// A server-side copy between two buckets of one s3s-fs: the bytes arrive, the checksum
/// the server gives for the copy (on a HEAD: s3s-fs leaves it out of the CopyObject answer)
/// is ours; a store on another endpoint (the same server named otherwise) does not try.
#[test]
fn s3s_fs_copies_between_its_buckets_on_the_server() {
    let root = tempfile::tempdir().unwrap();
    let server = super::testing::S3sServer::start(root.path()).unwrap_or_else(|e| panic!("{e}"));
    server.create_bucket("ssc-a").unwrap();
    server.create_bucket("ssc-b").unwrap();
    let a_cfg = S3Config {
        prefix: "pa".into(),
        ..server.s3_config("ssc-a")
    };
    let b_cfg = S3Config {
        prefix: "pb/x".into(),
        ..server.s3_config("ssc-b")
    };
    runtime().block_on(async {
        let a = S3Store::new(&a_cfg).await.unwrap();
        let b = S3Store::new(&b_cfg).await.unwrap();
        let key = "data/é 1/obj";
        let bytes = data(300_001, 9);
        let put = a
            .put(put_req(key, &bytes, ChecksumAlgo::Crc32c).unwrap())
            .await
            .unwrap();
        let src = a.copy_source().unwrap();
        let copy = b
            .copy_from(
                &src,
                key,
                put.version_id.as_deref(),
                300_001,
                ChecksumAlgo::Crc32c,
            )
            .expect("same endpoint: a server-side copy")
            .await
            .unwrap();
        let reported = copy.reported.expect("the server's checksum of the copy");
        assert!(
            put.proven_by(&reported),
            "{reported:?} against {}",
            put.checksum
        );
        let (_, back) = get_all(&b, key, None, 300_001, ChecksumAlgo::Crc32c)
            .await
            .unwrap();
        assert!(back == bytes, "the copy differs");
        assert!(
            root.path().join("ssc-b/pb/x/data/é 1/obj").exists(),
            "the copy under the target's prefix"
        );
        let elsewhere = S3Config {
            endpoint: Some(format!("http://localhost:{}", server.port)),
            ..b_cfg.clone()
        };
        let other = S3Store::new(&elsewhere).await.unwrap();
        assert!(other
            .copy_from(&src, key, None, 300_001, ChecksumAlgo::Crc32c)
            .is_none());
        let big = S3Store::new(&b_cfg).await.unwrap();
        assert!(big
            .copy_from(&src, key, None, (5 << 30) + 1, ChecksumAlgo::Crc32c)
            .is_none());
    });
}

/// s3s-fs checks SigV4 signatures (moto does not): the lean GET's pass it, for a key and a
/// prefix that need encoding too, and a request it refuses (wrong secret) turns the lean
/// path off and fails through the SDK with the server's error.
#[test]
fn lean_get_signatures_pass_a_server_that_checks_them() {
    let root = tempfile::tempdir().unwrap();
    let server = super::testing::S3sServer::start(root.path()).unwrap_or_else(|e| panic!("{e}"));
    server.create_bucket("lean-sig").unwrap();
    let (port, key_id, secret) = (server.port, server.key_id.clone(), server.secret.clone());
    let (key_id, secret) = (key_id.as_str(), secret.as_str());
    let cfg = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        bucket: "lean-sig".into(),
        prefix: "pfx é+1/x".into(),
        path_style: true,
        access_key: Some(key_id.into()),
        secret_key: Some(secret.into()),
        max_attempts: 1,
        ..S3Config::default()
    };
    let key = "dir é/ü 100%+x=y&z;(a)*!.bin";
    let bytes = data(70_001, 4);
    let get = |store: S3Store| async move {
        get_all(&store, key, None, 70_001, ChecksumAlgo::Crc32c).await
    };
    runtime().block_on(async {
        let store = S3Store::new(&cfg).await.unwrap();
        let put = store
            .put(put_req(key, &bytes, ChecksumAlgo::Crc32c).unwrap())
            .await
            .unwrap();
        let (g, back) = get(store.clone()).await.unwrap();
        assert!(back == bytes, "data differs");
        assert_eq!(g.checksum, put.checksum);
        assert_eq!(store.lean_gets(), Some(1), "served by the lean GET");
        // A ranged lean GET's signature (the range header signed) passes too.
        let (_, part) = get_range_of(&store, key, None, (70_000, 1), 70_001)
            .await
            .unwrap();
        assert_eq!(part, &bytes[70_000..]);
        assert_eq!(store.lean_gets(), Some(2), "a range served by the lean GET");
        // The store check: s3s-fs checks the checksum a PUT is sent with.
        let c = check(&store, "s3s").await.unwrap();
        eprintln!("s3s-fs store check: {c:?}");
        assert!(c.validates_checksums, "{c:?}");

        let wrong = S3Config {
            secret_key: Some("not-the-secret".into()),
            ..cfg.clone()
        };
        let store = S3Store::new(&wrong).await.unwrap();
        let e = get(store.clone()).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::AccessDenied, "{e}");
        assert_eq!(store.lean_gets(), Some(0));
        assert!(
            store.lean_refused(),
            "a refused lean GET turns the lean path off"
        );
    });
}

/// s3s-fs validates the checksum of a single PUT but reports none for a multipart object:
/// the store check finds that out, and an object above the part size then goes in one
/// streamed PUT whose answer proves it (before the check: parts, unproven). A file that
/// changed between the hashing pass and the body is refused, whether the checksum or
/// (signed bodies) only the payload hash gives it away. A sparse file goes
/// as its data extents, and comes back to them. Both with bodies signed (`always`) and
/// unsigned (`auto` on a loopback endpoint): s3s-fs checks the payload hash of a signed one.
#[test]
fn s3s_fs_large_objects_go_in_one_streamed_put_its_answer_proves() {
    let root = tempfile::tempdir().unwrap();
    let server = super::testing::S3sServer::start(root.path()).unwrap_or_else(|e| panic!("{e}"));
    for signing in [PayloadSigning::Always, PayloadSigning::Auto] {
        one_streamed_put_on_s3s_fs(&server, signing);
    }
}

fn one_streamed_put_on_s3s_fs(server: &super::testing::S3sServer, signing: PayloadSigning) {
    let bucket = format!("one-put-{signing:?}").to_lowercase();
    server.create_bucket(&bucket).unwrap();
    let cfg = S3Config {
        payload_signing: signing,
        endpoint: Some(server.endpoint.clone()),
        bucket,
        prefix: "p".into(),
        path_style: true,
        access_key: Some(server.key_id.clone()),
        secret_key: Some(server.secret.clone()),
        part_size: MIN_PART_SIZE,
        max_attempts: 1,
        ..S3Config::default()
    };
    let size = 2 * MIN_PART_SIZE as usize + 12_345;
    let bytes = data(size, 11);
    runtime().block_on(async {
        let store = S3Store::new(&cfg).await.unwrap();
        assert_eq!(
            store.signs_payload(),
            signing == PayloadSigning::Always,
            "a loopback endpoint gets unsigned bodies unless told otherwise"
        );
        let before = store
            .put(put_req("before", &bytes, ChecksumAlgo::Crc32c).unwrap())
            .await
            .unwrap();
        assert_eq!(before.parts, 3, "multipart before the store check");
        assert!(
            !before
                .reported
                .as_ref()
                .is_some_and(|r| before.proven_by(r)),
            "s3s-fs proves no multipart upload: {:?}",
            before.reported
        );
        let c = check(&store, "n").await.unwrap();
        assert_eq!(
            (c.validates_checksums, c.multipart_proven),
            (true, Some(false)),
            "{c:?}"
        );
        let left = store.list(&format!("{PROBE_PREFIX}/")).await.unwrap();
        assert!(left.is_empty(), "probe objects left behind: {left:?}");
        let put = store
            .put(put_req("after", &bytes, ChecksumAlgo::Crc32c).unwrap())
            .await
            .unwrap();
        assert_eq!(put.parts, 1, "one PUT after the check");
        assert!(
            put.proven_by(
                put.reported
                    .as_ref()
                    .expect("s3s-fs answers a PUT with its checksum")
            ),
            "{put:?}"
        );
        assert!(put.chunks.is_some(), "chunk sums from the hashing pass");
        let (got, back) = get_all(&store, "after", None, size as u64, ChecksumAlgo::Crc32c)
            .await
            .unwrap();
        assert!(back == bytes, "data differs");
        assert_eq!(got.checksum, put.checksum);

        // A sparse file: its data extents, back to back, in one streamed PUT, and back to
        // the same extents.
        let m = 1u64 << 20;
        let (a, b) = (data(6 << 20, 13), data((6 << 20) + 7, 14));
        let src = tempfile::tempfile().unwrap();
        src.set_len(40 * m).unwrap();
        src.write_all_at(&a, 0).unwrap();
        src.write_all_at(&b, 20 * m).unwrap();
        let extents = Extents(vec![(0, a.len() as u64), (20 * m, b.len() as u64)]);
        let mut req = put_req("sparse", b"", ChecksumAlgo::Crc32c).unwrap();
        req.body = src.into();
        req.size = extents.data_len();
        req.extents = Some(extents.clone());
        let put = store.put(req).await.unwrap();
        assert_eq!(put.parts, 1, "one PUT for the extents");
        assert!(put.proven_by(put.reported.as_ref().unwrap()), "{put:?}");
        let dest = tempfile::tempfile().unwrap();
        dest.set_len(40 * m).unwrap();
        let mut req = GetRequest::whole(
            "sparse",
            None,
            Some(&dest),
            extents.data_len(),
            ChecksumAlgo::Crc32c,
        );
        req.extents = Some(&extents);
        let got = store.get(req).await.unwrap();
        assert_eq!(got.checksum, put.checksum);
        let (mut a2, mut b2) = (vec![0u8; a.len()], vec![0u8; b.len()]);
        dest.read_exact_at(&mut a2, 0).unwrap();
        dest.read_exact_at(&mut b2, 20 * m).unwrap();
        assert!(a2 == a && b2 == b, "the extents' bytes differ");

        // Changed between the passes: hashed as A, sent as B.
        let other = data(size, 12);
        // Unsigned, the checksum is the only guard: a body changed to match the checksum
        // sent (not a thing coldtier does) would pass.
        let cases: &[(&str, bool)] = match signing {
            PayloadSigning::Always => &[("changed", false), ("changed-sha", true)],
            _ => &[("changed", false)],
        };
        for &(key, crc_of_b) in cases {
            let f = super::conformance::source(&bytes).unwrap();
            let src = Arc::new(Dest {
                file: f.try_clone().unwrap(),
                extents: None,
            });
            let mut hashed = super::s3_stream::hash_file(
                &src,
                size as u64,
                ChecksumAlgo::Crc32c,
                false,
                store.signs_payload(),
            )
            .unwrap();
            f.write_all_at(&other, 0).unwrap();
            if crc_of_b {
                hashed.checksum = Checksum::of(ChecksumAlgo::Crc32c, &other);
            }
            let e = store
                .send_streamed(
                    key.into(),
                    &BTreeMap::new(),
                    BTreeMap::new(),
                    (src, size as u64),
                    store.full_key(key),
                    StorageClass::Standard,
                    hashed,
                )
                .await
                .unwrap_err();
            eprintln!("{key}: {e}");
            if store.signs_payload() {
                // The payload hash is checked as the body arrives: nothing is stored.
                let gone = store.head(key, None).await.unwrap_err();
                assert_eq!(gone.kind, StoreErrorKind::NotFound, "{key}: {gone}");
            } else {
                // The checksum is checked at the end: s3s-fs refuses the PUT and keeps the
                // body (docs/store.md), which a failed upload leaves to gc as any.
                assert!(e.to_string().contains("checksum"), "{key}: {e}");
            }
        }
    });
}

// --- unit tests -------------------------------------------------------------------------

/// A GET's body chunks are written as they came, with pwritev: more slices than one call
/// takes (IOV_MAX), empty ones among them, at an offset; through extents, each piece to
/// its place.
#[test]
fn body_parts_are_written_back_to_back() {
    let whole = data(3000 * 37 + 5, 21);
    let mut parts = Vec::new();
    let mut at = 0;
    for i in 0..3000usize {
        let n = [0, 1, 37, 73][i % 4].min(whole.len() - at);
        parts.push(bytes::Bytes::copy_from_slice(&whole[at..at + n]));
        at += n;
    }
    parts.push(bytes::Bytes::copy_from_slice(&whole[at..]));
    let dest = Dest {
        file: tempfile::tempfile().unwrap(),
        extents: None,
    };
    dest.write_parts_at(&parts, 4096).unwrap();
    let mut back = vec![0u8; whole.len()];
    dest.file.read_exact_at(&mut back, 4096).unwrap();
    assert!(back == whole, "pwritev: data differs");
    assert_eq!(
        dest.file.metadata().unwrap().len(),
        4096 + whole.len() as u64
    );

    // Extents: object bytes [0, 100) at 0, the rest at 1 MiB.
    let sparse = Dest {
        file: tempfile::tempfile().unwrap(),
        extents: Some(Extents(vec![(0, 100), (1 << 20, whole.len() as u64 - 100)])),
    };
    sparse.write_parts_at(&parts, 0).unwrap();
    let mut head = vec![0u8; 100];
    sparse.file.read_exact_at(&mut head, 0).unwrap();
    let mut tail = vec![0u8; whole.len() - 100];
    sparse.file.read_exact_at(&mut tail, 1 << 20).unwrap();
    assert!(
        head == whole[..100] && tail == whole[100..],
        "extents: data differs"
    );
}

#[test]
fn checksum_known_values() {
    let c = Checksum::of(ChecksumAlgo::Crc32c, b"123456789");
    assert_eq!(c.value, 0xE306_9283u32.to_be_bytes());
    let c = Checksum::of(ChecksumAlgo::Crc32, b"123456789");
    assert_eq!(c.value, 0xCBF4_3926u32.to_be_bytes());
    assert_eq!(c.to_string(), "crc32:y/Q5Jg==");
    assert_eq!(Checksum::parse("crc32:y/Q5Jg==").unwrap(), c);
    let s = Checksum::of(ChecksumAlgo::Sha256, b"");
    assert_eq!(s.base64(), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
}

#[test]
fn crc_combine_equals_whole() {
    let d = data(1_000_003, 5);
    for algo in [ChecksumAlgo::Crc32c, ChecksumAlgo::Crc32] {
        let (a, b) = d.split_at(333_333);
        let c = combine_crc(
            &Checksum::of(algo, a),
            &Checksum::of(algo, b),
            b.len() as u64,
        );
        assert_eq!(c.unwrap(), Checksum::of(algo, &d));
    }
    let s = Checksum::of(ChecksumAlgo::Sha256, b"x");
    assert!(combine_crc(&s, &s, 1).is_none());
}

#[test]
fn composite_is_checksum_of_part_checksums() {
    let parts = [b"aaaa".as_slice(), b"bbbb", b"cc"];
    let sums: Vec<Checksum> = parts
        .iter()
        .map(|p| Checksum::of(ChecksumAlgo::Sha256, p))
        .collect();
    let mut cat = Vec::new();
    for s in &sums {
        cat.extend_from_slice(&s.value);
    }
    let c = composite_checksum(ChecksumAlgo::Sha256, &sums);
    assert_eq!(c.parts, Some(3));
    assert_eq!(c.value, Checksum::of(ChecksumAlgo::Sha256, &cat).base64());
    let reported = ReportedChecksum::parse(ChecksumAlgo::Sha256, &format!("{}-3", c.value));
    assert_eq!(reported, c);
    // moto's HEAD leaves off the part count: still the same checksum.
    assert!(ReportedChecksum::parse(ChecksumAlgo::Sha256, &c.value).matches(&c));
    let wrong = ReportedChecksum::parse(ChecksumAlgo::Sha256, &format!("{}-4", c.value));
    assert!(!wrong.matches(&c));
}

#[test]
fn keys_stay_inside() {
    for ok in ["a", "a/b", "7/3f2a", "prefix/file-id/v1.2", "é/ü"] {
        validate_key(ok).unwrap();
    }
    for bad in [
        "",
        "/a",
        "a/",
        "a//b",
        "..",
        "a/..",
        "./a",
        "a/.x",
        "a\0b",
        "a/b.meta.json",
    ] {
        assert_eq!(
            validate_key(bad).unwrap_err().kind,
            StoreErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    validate_prefix("").unwrap();
    validate_prefix("a/").unwrap();
    validate_prefix("a/b").unwrap();
    assert!(validate_prefix("/").is_err());
    assert!(validate_prefix("../").is_err());
}

/// Upload bodies are signed where the wire is unprotected: plain http to another host, or
/// through a proxy; not over https (TLS) or to a loopback address. `always` and `never` say
/// so whatever the endpoint; a bad value is refused by name.
#[test]
fn payload_signing_follows_the_wire() {
    let cfg = |signing: &str, endpoint: Option<&str>| {
        let ep = endpoint.map_or(String::new(), |e| format!("endpoint = \"{e}\"\n"));
        let c: S3Config = toml::from_str(&format!(
            "bucket = \"b\"\n{ep}payload_signing = \"{signing}\"\n"
        ))
        .unwrap();
        c
    };
    for (endpoint, signed) in [
        (None, false),
        (Some("https://s3.example.com"), false),
        (Some("HTTPS://10.0.0.5:9000"), false),
        (Some("http://127.0.0.1:9000"), false),
        (Some("http://127.9.0.1"), false),
        (Some("http://localhost:9000/"), false),
        (Some("http://[::1]:9000"), false),
        (Some("http://user@127.0.0.1:9000"), false),
        (Some("http://10.0.0.5:9000"), true),
        (Some("http://s3.lan"), true),
        (Some("http://localhost.example.com:9000"), true),
        (Some("http://127.0.0.1.example.com"), true),
        (Some("http://[::2]:9000"), true),
        (Some("http://127.0.0.1@evil.example.com"), true),
    ] {
        assert_eq!(
            cfg("auto", endpoint).signs_payload(false),
            signed,
            "{endpoint:?}"
        );
        // Through a proxy, plain http is signed whatever the host; https is TLS inside.
        let https = endpoint.is_none_or(|e| e.to_lowercase().starts_with("https"));
        assert_eq!(
            cfg("auto", endpoint).signs_payload(true),
            !https,
            "{endpoint:?}"
        );
        for proxy in [false, true] {
            assert!(cfg("always", endpoint).signs_payload(proxy), "{endpoint:?}");
            assert!(!cfg("never", endpoint).signs_payload(proxy), "{endpoint:?}");
        }
    }
    assert_eq!(S3Config::default().payload_signing, PayloadSigning::Auto);
    let e = toml::from_str::<S3Config>("bucket = \"b\"\npayload_signing = \"sometimes\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sometimes") || e.contains("payload_signing"),
        "{e}"
    );
}

#[test]
fn store_config_parses_both_kinds() {
    #[derive(serde::Deserialize)]
    struct Top {
        store: StoreConfig,
    }
    let t: Top = toml::from_str(
        r#"
        [store]
        kind = "s3"
        endpoint = "http://127.0.0.1:9000"
        bucket = "cold"
        prefix = "share1"
        path_style = true
        storage_class = "DEEP_ARCHIVE"
        checksum = "sha256"
        request_checksum = "when_required"
        sse = "AES256"
        part_size = "32MiB"
        concurrency = 8
        "#,
    )
    .unwrap();
    let StoreConfig::S3(c) = &t.store else {
        panic!("not s3")
    };
    assert_eq!(c.part_size, 32 << 20);
    assert_eq!(c.storage_class, StorageClass::DeepArchive);
    assert_eq!(c.checksum, ChecksumAlgo::Sha256);
    assert_eq!(c.request_checksum, RequestChecksum::WhenRequired);
    assert_eq!(c.region, "us-east-1");
    t.store.validate().unwrap();

    let t: Top = toml::from_str("[store]\nkind = \"posix\"\nroot = \"/srv/objects\"\n").unwrap();
    assert!(
        matches!(&t.store, StoreConfig::Posix(p) if p.root == std::path::Path::new("/srv/objects"))
    );
    t.store.validate().unwrap();

    for bad in [
        "[store]\nkind = \"s3\"\nbucket = \"b\"\nbogus = 1\n",
        "[store]\nkind = \"s3\"\nbucket = \"b\"\nstorage_class = \"COLD\"\n",
        "[store]\nkind = \"s3\"\nbucket = \"b\"\nchecksum = \"md5\"\n",
        "[store]\nkind = \"tape\"\n",
        "[store]\nkind = \"posix\"\nroot = \"/x\"\nbucket = \"b\"\n",
    ] {
        assert!(toml::from_str::<Top>(bad).is_err(), "accepted: {bad}");
    }
    for (bad, what) in [
        ("[store]\nkind = \"s3\"\n", "bucket"),
        (
            "[store]\nkind = \"s3\"\nbucket = \"b\"\npart_size = \"1MiB\"\n",
            "part_size",
        ),
        (
            "[store]\nkind = \"s3\"\nbucket = \"b\"\nprefix = \"/x\"\n",
            "prefix",
        ),
        (
            "[store]\nkind = \"s3\"\nbucket = \"b\"\nsse = \"rot13\"\n",
            "sse",
        ),
        (
            "[store]\nkind = \"s3\"\nbucket = \"b\"\naccess_key = \"a\"\n",
            "secret_key",
        ),
        ("[store]\nkind = \"posix\"\nroot = \"relative\"\n", "root"),
    ] {
        let t: Top = toml::from_str(bad).unwrap();
        let e = t.store.validate().unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::InvalidConfig);
        assert!(e.message.contains(what), "{e}");
    }
}

#[test]
fn part_size_grows_for_huge_objects() {
    let rt = runtime();
    let store = rt
        .block_on(S3Store::new(&S3Config {
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            access_key: Some("a".into()),
            secret_key: Some("s".into()),
            ..S3Config::default()
        }))
        .unwrap();
    assert_eq!(store.part_size_for(1 << 30), DEFAULT_PART_SIZE);
    let huge = 1u64 << 40; // 1 TiB
    let ps = store.part_size_for(huge);
    assert!(
        huge.div_ceil(ps) <= MAX_PARTS && ps % (1 << 20) == 0,
        "{ps}"
    );
}

#[test]
fn memory_fail_next_injects() {
    runtime().block_on(async {
        let m = MemoryStore::new();
        m.fail_next(2, StoreErrorKind::Throttled);
        for _ in 0..2 {
            let e = m.list("").await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Throttled);
            assert!(e.transient);
        }
        assert!(m.list("").await.unwrap().is_empty());
    });
}

#[test]
fn posix_refuses_foreign_nonempty_root() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("somefile"), b"x").unwrap();
    let e = PosixStore::new(&PosixConfig {
        root: dir.path().to_path_buf(),
        ..PosixConfig::default()
    })
    .err()
    .expect("refused");
    assert_eq!(e.kind, StoreErrorKind::InvalidConfig);
    let _ = BTreeMap::<String, String>::new();
}

/// A server that accepts connections and never answers: the first-byte timeout ends each
/// attempt of a request without a body (an upload's is `read_timeout`), and the call
/// fails `Unreachable` in about attempts x that timeout.
#[test]
fn s3_silent_server_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    runtime().block_on(async {
        let store = S3Store::new(&S3Config {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            bucket: "b".into(),
            path_style: true,
            access_key: Some("a".into()),
            secret_key: Some("s".into()),
            read_timeout: "1s".into(),
            first_byte_timeout: "1s".into(),
            max_attempts: 2,
            ..S3Config::default()
        })
        .await
        .unwrap();
        let t0 = std::time::Instant::now();
        let e = store.head("k", None).await.unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind, StoreErrorKind::Unreachable, "{e}");
        assert!(e.transient);
        assert!(took < Duration::from_secs(10), "took {took:?}");
        eprintln!("silent server: failed in {took:?}: {e}");
    });
    drop(silent);
}

/// Throughput of one 64 MiB object (put, then get) with crc32c and sha256, against moto
/// started here, or the server at COLDTIER_BENCH_ENDPOINT (bucket COLDTIER_BENCH_BUCKET,
/// created beforehand). `cargo test --release --lib store::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_put_get_64mib() {
    let size: usize = std::env::var("COLDTIER_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
        << 20;
    let (moto, cfg) = match std::env::var("COLDTIER_BENCH_ENDPOINT") {
        Ok(ep) => (
            None,
            S3Config {
                endpoint: Some(ep),
                bucket: std::env::var("COLDTIER_BENCH_BUCKET").unwrap_or("bench".into()),
                path_style: true,
                access_key: std::env::var("AWS_ACCESS_KEY_ID").ok().or(Some("a".into())),
                secret_key: std::env::var("AWS_SECRET_ACCESS_KEY")
                    .ok()
                    .or(Some("s".into())),
                ..S3Config::default()
            },
        ),
        Err(_) => {
            let m = start_moto();
            m.create_bucket("bench", false).unwrap();
            let c = m.s3_config("bench");
            (Some(m), c)
        }
    };
    let bytes = data(size, 1);
    let mut src = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut src, &bytes).unwrap();
    runtime().block_on(async {
        for (part_size, concurrency) in [(16u64 << 20, 4usize), (64 << 20, 1)] {
            let cfg = S3Config {
                part_size,
                concurrency,
                ..cfg.clone()
            };
            let store = S3Store::new(&cfg).await.unwrap();
            for algo in [ChecksumAlgo::Crc32c, ChecksumAlgo::Sha256] {
                let key = format!("bench/{algo}");
                let t0 = std::time::Instant::now();
                let put = store
                    .put(PutRequest {
                        key: key.clone(),
                        body: src.try_clone().unwrap().into(),
                        size: size as u64,
                        storage_class: None,
                        metadata: BTreeMap::new(),
                        tags: BTreeMap::new(),
                        checksum: Some(algo),
                        extents: None,
                    })
                    .await
                    .unwrap();
                let tput = t0.elapsed();
                let dest = tempfile::tempfile().unwrap();
                let t0 = std::time::Instant::now();
                let got = store
                    .get(GetRequest {
                        key: &key,
                        version_id: put.version_id.as_deref(),
                        dest: Some(&dest),
                        expected_size: size as u64,
                        checksum: algo,
                        extents: None,
                        range: None,
                        dest_base: 0,
                        progress: None,
                    })
                    .await
                    .unwrap();
                let tget = t0.elapsed();
                assert_eq!(got.checksum, put.checksum);
                let mib = size as f64 / (1 << 20) as f64;
                eprintln!(
                    "bench {} MiB {algo} part_size={}MiB concurrency={concurrency}: put {:.0} MiB/s ({} parts, {:.2}s), get {:.0} MiB/s ({:.2}s); server rss {:?} KiB",
                    size >> 20,
                    part_size >> 20,
                    mib / tput.as_secs_f64(),
                    put.parts,
                    tput.as_secs_f64(),
                    mib / tget.as_secs_f64(),
                    tget.as_secs_f64(),
                    moto.as_ref().and_then(|m| m.rss_kib()),
                );
                store.delete(&key, None).await.unwrap();
            }
        }
    });
}

/// The memory fake as the servers it stands for: one that validates refuses a damaged
/// upload; one that does not stores it and echoes the checksum it was sent, which is why
/// its word proves nothing.
#[test]
fn memory_store_emulates_validating_and_trusting_servers() {
    runtime().block_on(async {
        let m = MemoryStore::new();
        m.set_corrupt_puts(true);
        let body = b"some bytes to damage";
        let req = put_req("v/1", body, ChecksumAlgo::Crc32c).unwrap();
        let e = m.put(req).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::ChecksumMismatch, "{e}");
        // The store check at mount sees the damage either way.
        let e = check(&m, "n").await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::ChecksumMismatch, "{e}");
        m.set_corrupt_puts(false);
        assert!(check(&m, "n").await.unwrap().validates_checksums);
        m.set_corrupt_puts(true);
        m.set_validates(false);
        let e = check(&m, "n").await.unwrap_err();
        assert!(e.message.contains("changes data"), "{e}");
        let req = put_req("v/2", body, ChecksumAlgo::Crc32c).unwrap();
        let put = m.put(req).await.unwrap();
        assert!(put.proven_by(put.reported.as_ref().unwrap()), "echoed");
        let (got, bytes) = get_all(&m, "v/2", None, body.len() as u64, put.checksum.algo)
            .await
            .unwrap();
        assert_ne!(got.checksum, put.checksum, "stored damaged");
        assert_ne!(bytes, body, "stored damaged");
        m.set_corrupt_puts(false);
        assert!(!check(&m, "n").await.unwrap().validates_checksums);
    });
}

/// A multipart copy is proven by either form of checksum a store may report: the
/// COMPOSITE `<b64>-<n>` or the FULL_OBJECT value (moto 5.2.5's), never by another one.
#[test]
fn put_results_accept_composite_and_full_object_checksums() {
    let parts = [
        Checksum::of(ChecksumAlgo::Crc32c, b"part one"),
        Checksum::of(ChecksumAlgo::Crc32c, b"part two"),
    ];
    let whole = combine_crc(&parts[0], &parts[1], 8).unwrap();
    assert_eq!(
        whole,
        Checksum::of(ChecksumAlgo::Crc32c, b"part onepart two")
    );
    let put = PutResult {
        key: "k".into(),
        version_id: None,
        etag: None,
        checksum: whole.clone(),
        expected: composite_checksum(ChecksumAlgo::Crc32c, &parts),
        reported: None,
        parts: 2,
        chunks: None,
    };
    let composite = put.expected.clone();
    assert!(put.proven_by(&composite));
    assert!(put.proven_by(&ReportedChecksum {
        parts: None,
        ..composite.clone()
    }));
    assert!(put.proven_by(&whole.reported()));
    assert!(put.proven_by(&ReportedChecksum {
        parts: Some(2),
        ..whole.reported()
    }));
    let other = Checksum::of(ChecksumAlgo::Crc32c, b"part onepart twO");
    assert!(!put.proven_by(&other.reported()));
    assert!(!put.proven_by(&ReportedChecksum {
        parts: Some(3),
        ..whole.reported()
    }));
    let sha = Checksum::of(ChecksumAlgo::Sha256, b"part onepart two");
    assert!(!put.proven_by(&sha.reported()));
}
