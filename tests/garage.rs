//! Tiering against a distributed store: a real coldtier FUSE mount whose store is a 3-node
//! garage cluster on 127.0.0.1 (replication factor 3, one zone per node) that each test
//! starts itself (`coldtier::store::testing::GarageCluster`) and stops on drop. Migrate,
//! recall (one PUT and multipart objects, a sparse file), verify and verify --deep,
//! corrupted and deleted objects, a catalog rebuilt from the bucket, and a recall with one
//! node of the three down. scripts/lib/garage.sh installs garage (scripts/test.sh does);
//! without it these tests fail and say how.

mod common;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use coldtier::store::testing::GarageCluster;
use coldtier::store::{ChecksumAlgo, GetRequest, ObjectStore, PutRequest, S3Store};
use serde_json::Value;
use tier::*;

/// The part size the mounts use: files above it go up in several parts.
const PART: usize = 5 << 20;

/// A garage cluster in a temp dir of its own (removed after the cluster stops).
struct Garage {
    cluster: GarageCluster,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Garage {
    type Target = GarageCluster;
    fn deref(&self) -> &GarageCluster {
        &self.cluster
    }
}

/// Starts a 3-node cluster, or fails the test saying how to install garage.
fn start_garage() -> Garage {
    let dir = tempfile::Builder::new()
        .prefix("coldtier-garage")
        .tempdir()
        .unwrap();
    let cluster = GarageCluster::start(dir.path())
        .unwrap_or_else(|e| panic!("cannot start the garage cluster: {e}"));
    eprintln!("{}", cluster.version);
    Garage { cluster, _dir: dir }
}

/// A coldtier mount of `files` whose store is bucket `bucket` (created now) on the
/// cluster, through node 0's S3 API with the cluster's key, request checksums "when
/// required" (the setting DESIGN.md gives for garage; conformance_garage shows coldtier's
/// uploads pass with the SDK default too) and 5 MiB parts.
fn mount(g: &Garage, bucket: &str, files: &Files) -> TierMount {
    g.create_bucket(bucket)
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
    let (key, secret) = (g.key_id.clone(), g.secret_key().to_string());
    TierMount::at_endpoint(&g.endpoint, bucket, files, |c| {
        c.set("store", "access_key", &q(&key))
            .set("store", "secret_key", &q(&secret))
            .set("store", "request_checksum", &q("when_required"))
            .set("store", "part_size", &q("5MiB"))
    })
}

/// The mount's bucket, as coldtier's own S3 store sees it (keys relative to PREFIX).
fn store_of(g: &Garage, t: &TierMount) -> (tokio::runtime::Runtime, S3Store) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The mounts' part size: an object rewritten here above it is multipart again.
    let cfg = coldtier::store::S3Config {
        prefix: PREFIX.into(),
        part_size: PART as u64,
        ..g.s3_config(&t.bucket)
    };
    let store = rt.block_on(S3Store::new(&cfg)).unwrap();
    (rt, store)
}

/// A full object key (`status`'s object_key) relative to the prefix.
fn rel_key(full: &str) -> String {
    full.strip_prefix(&format!("{PREFIX}/"))
        .unwrap_or_else(|| panic!("{full} is not under {PREFIX}/"))
        .to_string()
}

/// The data objects in the bucket (relative keys).
fn data_objects(rt: &tokio::runtime::Runtime, s: &S3Store) -> BTreeSet<String> {
    rt.block_on(s.list("data/"))
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

/// Replaces an object behind coldtier's back with `bytes` (same key, its metadata kept),
/// as silent damage or a stray writer would.
fn overwrite(rt: &tokio::runtime::Runtime, s: &S3Store, key: &str, bytes: &[u8]) {
    rt.block_on(async {
        let head = s.head(key, None).await.unwrap();
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        s.put(PutRequest {
            key: key.to_string(),
            body: f.into(),
            size: bytes.len() as u64,
            storage_class: None,
            metadata: head.metadata,
            tags: BTreeMap::new(),
            checksum: Some(ChecksumAlgo::Crc32c),
            extents: None,
        })
        .await
        .unwrap();
    });
}

/// Reads an object back (hashing only): its crc32c, base64.
fn object_crc(rt: &tokio::runtime::Runtime, s: &S3Store, key: &str, size: u64) -> String {
    rt.block_on(s.get(GetRequest {
        key,
        version_id: None,
        dest: None,
        expected_size: size,
        checksum: ChecksumAlgo::Crc32c,
        extents: None,
        range: None,
        dest_base: 0,
        progress: None,
    }))
    .unwrap()
    .checksum
    .base64()
}

fn findings<'a>(v: &'a Value, kind: &str) -> Vec<&'a str> {
    v["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("verify report without findings: {v}"))
        .iter()
        .filter(|f| f["kind"] == kind)
        .filter_map(|f| f["object_key"].as_str())
        .collect()
}

/// Writes a 64 MiB file through the mount with data at 8 MiB (1 MiB) and 40 MiB
/// (512 KiB), holes elsewhere; returns its content.
fn write_sparse(t: &TierMount, rel: &str) -> Vec<u8> {
    const M: u64 = 1 << 20;
    let f = fs::File::create(t.m(rel)).unwrap();
    f.set_len(64 * M).unwrap();
    f.write_all_at(&data(3, M as usize), 8 * M).unwrap();
    f.write_all_at(&data(4, M as usize / 2), 40 * M).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let alloc = fs::metadata(t.s(rel)).unwrap().blocks() * 512;
    assert!(alloc < 4 * M, "the test file is sparse: {alloc} bytes");
    fs::read(t.m(rel)).unwrap()
}

/// The `verify` detail of each file's VERIFIED event (how its copy was proven).
fn proofs(t: &TierMount, files: &Files) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(rel, _)| {
            let h = t.history(rel);
            let e = h
                .iter()
                .find(|e| e["kind"] == "VERIFIED")
                .unwrap_or_else(|| panic!("{rel}: no VERIFIED event: {h:?}"));
            (
                rel.clone(),
                e["detail"]["verify"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn assert_stubbed(t: &TierMount, files: &Files) {
    for (rel, _) in files {
        assert_eq!(t.state(rel), "stub", "{rel}");
        let b = fs::symlink_metadata(t.s(rel)).unwrap();
        assert_eq!(b.len(), 0, "{rel}: backing stub not empty");
        // At most one block for the xattrs.
        assert!(
            b.blocks() * 512 <= 4096,
            "{rel}: backing stub holds {} blocks",
            b.blocks()
        );
        assert_eq!(
            fs::symlink_metadata(t.m(rel)).unwrap().blocks(),
            0,
            "{rel}: the stub shows blocks through the mount"
        );
    }
}

/// migrate stubs every file (blocks freed, one object each, each copy proven by the
/// checksum garage validated on upload), reads through the mount bring them back
/// byte-identical (one PUT, three parts, a sparse file with its holes), verify and
/// verify --deep are clean, after the catalog is lost `catalog rebuild` from the records
/// and the bucket brings every stub back, and gc past the retention deletes exactly a
/// deleted file's object (with the version id garage named at upload, which it ignores).
#[test]
fn garage_cluster_tiers_recalls_verifies_and_rebuilds() {
    let g = start_garage();
    let mut fs_ = files(&[
        ("small.txt", 5000),
        ("dir/mid.bin", 300 * 1024),
        ("dir/big.bin", 2 * PART + 12_345),
    ]);
    let mut t = mount(&g, "tier", &fs_);
    let holes = write_sparse(&t, "holes.bin");
    fs_.push(("holes.bin".into(), holes));
    let (rt, store) = store_of(&g, &t);

    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["stubbed"].as_u64(), Some(4), "summary: {v}");
    assert_stubbed(&t, &fs_);
    // garage refuses an upload whose body does not match its checksum (the store check
    // at mount finds that out): its answer to the upload proves each copy, no read-back.
    let p = proofs(&t, &fs_);
    for (rel, how) in &p {
        assert_eq!(how, "checksum (upload answer)", "{rel}: {p:?}");
    }
    let keys: BTreeSet<String> = fs_.iter().map(|(r, _)| rel_key(&t.object_key(r))).collect();
    assert_eq!(data_objects(&rt, &store), keys, "one object per file");
    // The sparse file's object holds its data only.
    let hk = rel_key(&t.object_key("holes.bin"));
    let head = rt.block_on(store.head(&hk, None)).unwrap();
    assert_eq!(head.size, 3 << 19, "the sparse file's object: {head:?}");

    assert_all_read_back(&t, &fs_);
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "premigrated", "{rel} after its recall");
    }
    let alloc = fs::metadata(t.s("holes.bin")).unwrap().blocks() * 512;
    assert!(alloc < 4 << 20, "holes recreated: {alloc} bytes allocated");

    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "verify: {v}");
    assert_eq!(v["clean"], true, "{v}");
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep: {v}");
    assert_eq!(v["clean"], true, "{v}");

    // Released again (no upload: the copies are kept), then the catalog is lost.
    let mut args = vec!["release".to_string()];
    args.extend(fs_.iter().map(|(r, _)| t.ms(r)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.ok(&args);
    assert_stubbed(&t, &fs_);
    let before: BTreeMap<String, Value> =
        fs_.iter().map(|(r, _)| (r.clone(), t.status(r))).collect();
    t.umount();
    t.remove_catalog();
    let out = t.cli(&[
        "catalog",
        "rebuild",
        t.src.to_str().unwrap(),
        "--config",
        t.config_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", common::show(&out));
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(r["stubs"], 4, "{r}");
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");
    t.remount();
    for (rel, st) in &before {
        let now = t.status(rel);
        for k in ["state", "object_key", "checksum", "size", "file_id"] {
            assert_eq!(now[k], st[k], "{rel}: {k} after the rebuild");
        }
    }
    assert_all_read_back(&t, &fs_);
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep after the rebuild: {v}");

    // gc past the retention deletes exactly a deleted file's object.
    let gone = rel_key(&t.object_key("small.txt"));
    fs::remove_file(t.m("small.txt")).unwrap();
    t.umount();
    let skew = (2 * RETENTION_SECS).to_string();
    t.mount_with_env(&[(GC_SKEW_ENV, skew.as_str())]);
    t.ok(&["gc", &t.mnt_str()]);
    let mut left = keys.clone();
    left.remove(&gone);
    assert_eq!(data_objects(&rt, &store), left, "after gc");
    assert_all_read_back(&t, &fs_[1..].to_vec());
}

/// Objects damaged or deleted behind coldtier's back: verify finds the deleted one and
/// the changed one-PUT object (garage reports the checksum of what it holds);
/// verify --deep also finds the changed multipart object (its whole-object checksum would
/// be in an object tag, and garage has no object tagging). A recall of a damaged object
/// fails with EIO and leaves the stub.
#[test]
fn verify_on_garage_finds_corrupted_and_deleted_objects() {
    let g = start_garage();
    let fs_ = files(&[
        ("a.bin", 64 * 1024),
        ("b.bin", 32 * 1024),
        ("c.bin", 8 * 1024),
        ("big.bin", PART + 4321),
    ]);
    let t = mount(&g, "damage", &fs_);
    let (rt, store) = store_of(&g, &t);
    t.migrate_ok(&["--mode", "stub"]);
    assert_stubbed(&t, &fs_);
    let full: BTreeMap<&str, String> = fs_
        .iter()
        .map(|(r, _)| (r.as_str(), t.object_key(r)))
        .collect();
    let (ka, kb, kbig) = (
        rel_key(&full["a.bin"]),
        rel_key(&full["b.bin"]),
        rel_key(&full["big.bin"]),
    );
    // Same sizes, other bytes.
    overwrite(&rt, &store, &ka, &data(900, 64 * 1024));
    overwrite(&rt, &store, &kbig, &data(901, PART + 4321));
    rt.block_on(store.delete(&kb, None)).unwrap();
    assert_ne!(
        object_crc(&rt, &store, &ka, 64 * 1024),
        t.status("a.bin")["checksum"]
            .as_str()
            .unwrap()
            .trim_start_matches("crc32c:"),
        "the overwrite changed the object"
    );

    let (code, v) = t.verify(false);
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        findings(&v, "object_missing"),
        [full["b.bin"].as_str()],
        "{v}"
    );
    assert_eq!(
        findings(&v, "object_checksum"),
        [full["a.bin"].as_str()],
        "{v}"
    );
    let all = v["findings"].as_array().unwrap();
    assert!(
        !all.iter()
            .any(|f| f["object_key"] == full["c.bin"].as_str()),
        "c.bin is intact: {v}"
    );
    // The changed multipart object passes the quick verify: its whole-object checksum
    // could not be tagged, and the report says so.
    assert!(
        v["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.starts_with("big.bin: cannot read the object's tags"))),
        "{v}"
    );

    let (code, v) = t.verify(true);
    assert_eq!(code, 1, "{v}");
    let mut bad = findings(&v, "object_content");
    bad.sort();
    let mut want = vec![full["a.bin"].as_str(), full["big.bin"].as_str()];
    want.sort();
    assert_eq!(bad, want, "--deep reads both changed objects back: {v}");

    for rel in ["a.bin", "big.bin"] {
        let e = errno_of(fs::read(t.m(rel)), "read of a stub whose object changed");
        assert_eq!(e, libc::EIO, "{rel}: errno {e}\n{}", t.daemon_log_tail());
        // The failure is recorded before the reader hears of it: a stub at once; its
        // local bytes go just after.
        assert_eq!(t.state(rel), "stub", "{rel} after the failed recall");
        let t0 = Instant::now();
        while fs::metadata(t.s(rel)).unwrap().len() != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{rel}: backing never emptied"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_bytes("c.bin", &read_ok(&t.m("c.bin")), &fs_[2].1);
}

/// Polls node `i`'s view of the cluster until it says `want` (at most 60 s).
fn wait_health(g: &Garage, i: usize, want: &str) {
    let t0 = Instant::now();
    loop {
        let h = g.health(i);
        if h.as_deref() == Ok(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "node {i}: cluster health {h:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With replication factor 3 and consistency mode "consistent" (read and write quorums of
/// 2), a cluster with one node of three down ("degraded") still serves every recall, one
/// PUT and multipart objects alike, and takes new copies; verify --deep stays clean; the
/// node comes back and the cluster is healthy again.
#[test]
fn a_recall_succeeds_with_one_node_of_three_down() {
    let g = start_garage();
    let fs_ = files(&[("small.bin", 20 * 1024), ("big.bin", 2 * PART + 999)]);
    let t = mount(&g, "degraded", &fs_);
    t.migrate_ok(&["--mode", "stub"]);
    assert_stubbed(&t, &fs_);

    // Node 2 (not the one whose S3 API coldtier talks to) dies: the first recall comes
    // at once, whether or not the others have noticed yet; the second once node 0 says
    // the cluster is degraded.
    g.stop_node(2);
    assert!(!g.node_running(2));
    let t0 = Instant::now();
    assert_bytes("small.bin", &read_ok(&t.m("small.bin")), &fs_[0].1);
    eprintln!("recall right after the node died: {:?}", t0.elapsed());
    wait_health(&g, 0, "degraded");
    eprintln!("degraded after {:?}", t0.elapsed());
    assert_bytes("big.bin", &read_ok(&t.m("big.bin")), &fs_[1].1);
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "premigrated", "{rel} after its recall");
    }
    // New copies still reach a write quorum.
    let new: Files = vec![("new.bin".into(), data(77, PART + 5))];
    write_files(&t.mnt, &new);
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert!(v["stubbed"].as_u64().unwrap() >= 1, "summary: {v}");
    assert_stubbed(&t, &new);
    assert_all_read_back(&t, &new);
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep with a node down: {v}");

    g.restart_node(2).unwrap();
    wait_health(&g, 0, "healthy");
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep with every node back: {v}");
}

/// garage has no object tagging, so the object of a deleted file cannot be marked
/// "deleted" in the bucket: after the catalog is lost, `catalog rebuild` cannot tell it
/// from an object no one knows, reports it UNREFERENCED and records no deletion (on moto
/// it records one: tests/reconcile.rs), and verify then lists it as an orphan. Live files
/// are rebuilt as usual.
#[test]
fn a_rebuild_on_garage_reports_a_deleted_files_object_as_unreferenced() {
    let g = start_garage();
    let fs_ = files(&[("a.bin", 30_000), ("gone.bin", 5_000)]);
    let mut t = mount(&g, "rebuild", &fs_);
    t.migrate_ok(&["--mode", "stub"]);
    let gone = t.object_key("gone.bin");
    fs::remove_file(t.m("gone.bin")).unwrap();
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "the deleted file's object is retained: {v}");
    assert_eq!(v["retained"], 1, "{v}");
    t.umount();
    t.remove_catalog();
    let out = t.cli(&[
        "catalog",
        "rebuild",
        t.src.to_str().unwrap(),
        "--config",
        t.config_path.to_str().unwrap(),
        "--json",
    ]);
    // The catalog is rebuilt; the exit status says there were problems.
    assert_eq!(out.status.code(), Some(1), "{}", common::show(&out));
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(r["stubs"], 1, "{r}");
    assert_eq!(r["deleted_recorded"], 0, "{r}");
    let problems: Vec<&str> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(problems.len(), 1, "{r}");
    assert!(
        problems[0].starts_with(&format!("UNREFERENCED [{gone}]: tagged (no state tag)")),
        "{r}"
    );
    t.remount();
    let (code, v) = t.verify(false);
    assert_eq!(code, 1, "{v}");
    assert_eq!(findings(&v, "orphan"), [gone.as_str()], "{v}");
    assert_eq!(v["findings"].as_array().unwrap().len(), 1, "{v}");
    assert_bytes("a.bin", &read_ok(&t.m("a.bin")), &fs_[0].1);
}
