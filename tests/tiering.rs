//! Integration tests of tiering: migrate (dry-run, copy-only, stub), recall, pins, rename,
//! delete and gc, Glacier restores, a corrupted object, an unreachable store, and crash
//! safety. Each test runs a real coldtier FUSE mount whose store is a real moto S3 server
//! that the test starts itself (tests/common/tier.rs).

mod common;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coldtier::store::testing::MotoServer;
use common::sh;
use serde_json::Value;
use tier::*;

const MIB: usize = 1 << 20;

fn blocks(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .blocks()
}

/// `du -sk PATH` in KiB.
fn du_k(p: &Path) -> u64 {
    let (ok, out, err) = sh(&format!("du -sk '{}'", p.display()));
    assert!(ok, "du {}: {err}", p.display());
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du output: {out}"))
}

/// An object key is `<prefix>/.../<file id: 32 hex>/<version: 16 hex>`; returns (file id,
/// version). (The exact layout the spec gives is checked by [`assert_spec_key_layout`].)
fn split_key(key: &str) -> (String, String) {
    let parts: Vec<&str> = key.split('/').collect();
    assert!(
        parts.len() >= 3 && parts[0] == PREFIX,
        "object key {key}: want {PREFIX}/.../<file id>/<version>"
    );
    let (id, version) = (parts[parts.len() - 2], parts[parts.len() - 1]);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        hex(id, 32),
        "object key {key}: file id is not 32 hex digits"
    );
    assert!(
        hex(version, 16),
        "object key {key}: version is not 16 hex digits"
    );
    (id.to_string(), version.to_string())
}

/// /tmp/tier-spec.md: "keys are <prefix>/<file id 32 hex>/<16 hex version>".
/// Data objects live under `data/` inside the store's prefix (docs/architecture.md,
/// "Objects"): `<prefix>/data/<file id>/<version>`.
fn assert_spec_key_layout(key: &str) {
    let (id, version) = split_key(key);
    assert_eq!(
        key,
        format!("{PREFIX}/data/{id}/{version}"),
        "object key layout: want <prefix>/data/<file id>/<version>"
    );
}

/// The paths a dry-run plans, each matched to one of the expected relative paths.
fn planned_paths(summary: &Value) -> Vec<String> {
    summary["files"]
        .as_array()
        .unwrap_or_else(|| panic!("dry-run summary without a files array: {summary}"))
        .iter()
        .map(|f| {
            f["path"]
                .as_str()
                .unwrap_or_else(|| panic!("planned file without path: {f}"))
                .to_string()
        })
        .collect()
}

fn matches_rel(path: &str, rel: &str) -> bool {
    path == rel || path.ends_with(&format!("/{rel}"))
}

// ------------------------------------------------------------------------------------------
// 1. Phases: dry-run, copy-only, stub

#[test]
fn migrate_dry_run_changes_nothing_copy_only_premigrates_and_stub_frees_space() {
    let moto = start_moto();
    let fs_ = files(&[
        ("a.bin", 300 * 1024),
        ("dir/b.bin", 64 * 1024),
        ("dir/c.txt", 5000),
    ]);
    let t = TierMount::new(&moto, "phases", &fs_, |c| c);
    // Owners, modes and nanosecond times a stub must keep.
    std::os::unix::fs::chown(t.m("dir/b.bin"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(t.m("dir/b.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    set_times(&t.m("a.bin"), 1_500_000_000, 123_456_789);
    let before: BTreeMap<&str, Shown> = fs_
        .iter()
        .map(|(r, _)| (r.as_str(), shown(&t.m(r))))
        .collect();
    for (rel, _) in &fs_ {
        assert!(blocks(&t.m(rel)) > 0, "{rel}: resident file without blocks");
    }
    let du_before = du_k(&t.mnt);
    let du_src_before = du_k(&t.src);

    // Dry run: reports the three candidates, changes nothing.
    let v = t.migrate_ok(&["--dry-run"]);
    assert_eq!(v["mode"].as_str(), Some("dry-run"), "summary: {v}");
    assert_eq!(v["candidates"].as_u64(), Some(3), "summary: {v}");
    assert_eq!(v["copied"].as_u64(), Some(0), "summary: {v}");
    assert_eq!(v["stubbed"].as_u64(), Some(0), "summary: {v}");
    let planned = planned_paths(&v);
    assert_eq!(planned.len(), 3, "planned files: {planned:?}");
    for (rel, _) in &fs_ {
        assert_eq!(
            planned.iter().filter(|p| matches_rel(p, rel)).count(),
            1,
            "{rel} not planned exactly once: {planned:?}"
        );
    }
    assert_eq!(t.objects(), Vec::<String>::new(), "dry-run put objects");
    for (rel, content) in &fs_ {
        assert_eq!(t.state(rel), "resident", "{rel} after dry-run");
        assert_bytes(
            &format!("backing {rel} after dry-run"),
            &fs::read(t.s(rel)).unwrap(),
            content,
        );
        assert_eq!(
            xattr(&t.s(rel), STUB_XATTR),
            None,
            "{rel}: stub xattr after dry-run"
        );
        assert_eq!(
            shown(&t.m(rel)),
            before[rel.as_str()],
            "{rel}: attributes after dry-run"
        );
    }

    // Copy-only: every file premigrated, its object in the bucket with its genealogy,
    // the data still local.
    let v = t.migrate_ok(&["--mode", "copy-only"]);
    assert_eq!(v["copied"].as_u64(), Some(3), "summary: {v}");
    assert_eq!(v["stubbed"].as_u64(), Some(0), "summary: {v}");
    let mut keys = BTreeMap::new();
    for (rel, content) in &fs_ {
        let st = t.status(rel);
        assert_eq!(st["state"].as_str(), Some("premigrated"), "{rel}: {st}");
        assert_eq!(
            st["storage_class"].as_str(),
            Some("STANDARD"),
            "{rel}: {st}"
        );
        let key = st["object_key"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel}: {st}"))
            .to_string();
        let (file_id, _) = split_key(&key);
        if let Some(id) = st["file_id"].as_str() {
            assert_eq!(id, file_id, "{rel}: file_id vs object key {key}");
        }
        let obj = moto.raw_get(&t.bucket, &key).unwrap();
        assert_bytes(&format!("object of {rel}"), &obj, content);
        let meta = object_metadata(&moto, &t.bucket, &key);
        let name = rel.rsplit('/').next().unwrap();
        assert!(
            meta.values().any(|v| v.contains(name)),
            "{rel}: no original path in the object's metadata: {meta:?}"
        );
        assert!(
            meta.values().any(|v| v.contains(&file_id)),
            "{rel}: no file id in the object's metadata: {meta:?}"
        );
        assert!(
            meta.values().any(|v| v == &content.len().to_string()),
            "{rel}: no size in the object's metadata: {meta:?}"
        );
        assert_bytes(
            &format!("backing {rel} when premigrated"),
            &fs::read(t.s(rel)).unwrap(),
            content,
        );
        assert!(
            blocks(&t.s(rel)) > 0,
            "{rel}: premigrated backing file without blocks"
        );
        assert!(
            blocks(&t.m(rel)) > 0,
            "{rel}: premigrated file shows no blocks through the mount"
        );
        assert_eq!(
            shown(&t.m(rel)),
            before[rel.as_str()],
            "{rel}: attributes when premigrated"
        );
        keys.insert(rel.clone(), key);
    }
    let mut want: Vec<String> = keys.values().cloned().collect();
    want.sort();
    assert_eq!(t.objects(), want, "bucket after copy-only");

    // Stub: same attributes through the mount, no blocks; the backing file is empty and
    // carries the stub record; the copies are reused.
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["stubbed"].as_u64(), Some(3), "summary: {v}");
    for (rel, _) in &fs_ {
        let st = t.status(rel);
        assert_eq!(st["state"].as_str(), Some("stub"), "{rel}: {st}");
        assert_eq!(
            st["object_key"].as_str(),
            Some(keys[rel].as_str()),
            "{rel}: object key changed by stubbing: {st}"
        );
        assert_eq!(
            shown(&t.m(rel)),
            before[rel.as_str()],
            "{rel}: attributes of the stub through the mount"
        );
        let b = fs::symlink_metadata(t.s(rel)).unwrap();
        assert_eq!(b.len(), 0, "{rel}: backing stub not empty");
        // At most one block for the xattrs (ext4 keeps a large one outside the inode).
        assert!(
            b.blocks() * 512 <= 4096,
            "{rel}: backing stub holds {} blocks",
            b.blocks()
        );
        let rec = xattr(&t.s(rel), STUB_XATTR);
        assert!(
            rec.as_ref().is_some_and(|r| !r.is_empty()),
            "{rel}: backing stub has no {STUB_XATTR}"
        );
    }
    assert_eq!(t.objects(), want, "bucket after stub");
    // 300 + 64 + 8 KiB of data were freed (directories keep their blocks; each stub may
    // take one 4 KiB block for its xattrs).
    let du_src_after = du_k(&t.src);
    assert!(
        du_src_after + 348 <= du_src_before,
        "du of the backing tree: {du_src_before} KiB before, {du_src_after} KiB after stubbing"
    );
    // Through the mount, at once (these files' attributes were looked at just before).
    for (rel, _) in &fs_ {
        assert_eq!(
            blocks(&t.m(rel)),
            0,
            "{rel}: the stub shows blocks through the mount right after stubbing"
        );
    }
    let du_after = du_k(&t.mnt);
    assert!(
        du_after + 360 <= du_before,
        "du through the mount: {du_before} KiB before, {du_after} KiB after stubbing"
    );
    for key in keys.values() {
        assert_spec_key_layout(key);
    }
}

// ------------------------------------------------------------------------------------------
// 2. Recall on read

/// A clean unmount leaves the catalog whole in its one file: a copy of `catalog.db` alone
/// (as an admin would take) holds every event, and the WAL beside it is empty.
#[test]
fn a_clean_unmount_leaves_the_catalog_in_one_file() {
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 10 * 1024), ("b.bin", 10 * 1024)]);
    let mut t = TierMount::new(&moto, "checkpoint", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let events = t.history("a.bin").len() + t.history("b.bin").len();
    assert!(events >= 6, "{events} events");
    t.umount();
    let wal = t.catalog.with_extension("db-wal");
    let wal_len = fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "{} left with {wal_len} bytes", wal.display());
    let copy = t.dir.path().join("copy.db");
    fs::copy(&t.catalog, &copy).unwrap();
    let cat = coldtier::catalog::Catalog::open(&copy).unwrap();
    let chain = cat.verify_chain().unwrap();
    assert!(
        chain as usize >= events,
        "the copy holds {chain} events, the mount showed {events} for two files"
    );
    t.mount_with_env(&[]);
}

/// A small file's recall records RECALL_STARTED together with its outcome; while it is
/// in flight, `status` says `recalling` all the same (from the recalls in flight), and the
/// history then shows RECALL_STARTED before RECALLED.
#[test]
fn a_recall_in_flight_shows_recalling_and_records_both_events() {
    let moto = start_moto();
    let fs_ = files(&[("small.bin", 64 * 1024)]);
    let mut t = TierMount::new(&moto, "inflight", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    t.umount();
    // The recall waits after its truncate until `go` exists.
    let go = t.dir.path().join("go");
    let fp = format!("recall-after-truncate:hold={}", go.display());
    t.mount_with_env(&[(FAILPOINT_ENV, fp.as_str())]);
    let path = t.m("small.bin");
    let reader = std::thread::spawn(move || fs::read(path));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut states = Vec::new();
    while Instant::now() < deadline {
        let s = t.state("small.bin");
        let seen = s == "recalling";
        states.push(s);
        if seen {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::write(&go, b"").unwrap();
    let data = reader.join().unwrap().expect("read of the stub");
    assert_eq!(
        states.last().map(String::as_str),
        Some("recalling"),
        "states seen during the recall: {states:?}"
    );
    assert_bytes("read of the stub", &data, &fs_[0].1);
    assert_eq!(t.state("small.bin"), "premigrated", "after the recall");
    let kinds = kinds_of(&t.history("small.bin"));
    assert_eq!(
        only(&kinds, &["STUBBED", "RECALL_STARTED", "RECALLED"]),
        ["STUBBED", "RECALL_STARTED", "RECALLED"],
        "history: {kinds:?}"
    );
}

/// A stubbed file with an object of its own keeps its record inside the inode (the compact
/// form, no `id` or `copy` xattr beside it): the stub costs no block, and a recall brings
/// back the bytes and the `id` xattr. A file whose record has no compact form (a large
/// object with chunk sums) keeps the full one and its `id`.
#[test]
fn a_small_stub_costs_no_block_and_recalls_with_its_identity() {
    let moto = start_moto();
    let fs_ = files(&[
        ("a.bin", 8 * 1024),
        ("d/b.bin", 65_536),
        ("big.bin", 9 << 20),
    ]);
    let t = TierMount::new(&moto, "compactown", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let id_of = |rel: &str| t.status(rel)["file_id"].as_str().unwrap().to_string();
    for rel in ["a.bin", "d/b.bin"] {
        assert_eq!(t.state(rel), "stub", "{rel}");
        let b = t.s(rel);
        let rec = xattr(&b, "trusted.coldtier.stub").expect("a stub record");
        assert_eq!(
            rec[0],
            3,
            "{rel}: the compact form of an own object ({} bytes)",
            rec.len()
        );
        assert!(rec.len() <= 56, "{rel}: {} bytes", rec.len());
        assert_eq!(xattr(&b, "trusted.coldtier.id"), None, "{rel}");
        assert_eq!(xattr(&b, "trusted.coldtier.copy"), None, "{rel}");
        let md = fs::symlink_metadata(&b).unwrap();
        assert_eq!(
            (md.len(), md.blocks()),
            (0, 0),
            "{rel}: a stub without a block"
        );
    }
    let big = xattr(&t.s("big.bin"), "trusted.coldtier.stub").unwrap();
    assert_eq!(big[0], 1, "chunk sums keep the full form");
    assert!(xattr(&t.s("big.bin"), "trusted.coldtier.id").is_some());

    let ids: Vec<String> = ["a.bin", "d/b.bin"].iter().map(|r| id_of(r)).collect();
    for (i, rel) in ["a.bin", "d/b.bin"].iter().enumerate() {
        let body = &fs_.iter().find(|(r, _)| r == rel).unwrap().1;
        assert_bytes(rel, &read_ok(&t.m(rel)), body);
        assert_eq!(t.state(rel), "premigrated", "{rel}");
        assert_eq!(
            xattr(&t.s(rel), "trusted.coldtier.id"),
            Some(ids[i].as_bytes().to_vec()),
            "{rel}: the id xattr is back"
        );
        assert_eq!(id_of(rel), ids[i], "{rel}: the same identity");
    }
    // Released again (premigrated -> stub) and recalled by `coldtier recall`: the same.
    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(xattr(&t.s("a.bin"), "trusted.coldtier.stub").unwrap()[0], 3);
    let out = t.cli(&["recall", "-r", t.mnt_str().as_str()]);
    assert!(out.status.success(), "{}", show(&out));
    assert_bytes("a.bin", &fs::read(t.s("a.bin")).unwrap(), &fs_[0].1);
    assert_eq!(id_of("a.bin"), ids[0]);
}

#[test]
fn reading_a_stub_recalls_it_byte_identical_with_the_full_history() {
    let moto = start_moto();
    let fs_ = files(&[("big.bin", 512 * 1024), ("other.bin", 10 * 1024)]);
    let t = TierMount::new(&moto, "recall", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(t.state("big.bin"), "stub");
    let shown_stub = shown(&t.m("big.bin"));

    let out = t.dir.path().join("cat.out");
    let (ok, _, err) = sh(&format!(
        "cat '{}' > '{}'",
        t.m("big.bin").display(),
        out.display()
    ));
    assert!(ok, "cat of a stub failed: {err}\n{}", t.daemon_log_tail());
    assert_bytes("cat of the stub", &fs::read(&out).unwrap(), &fs_[0].1);
    assert_eq!(t.state("big.bin"), "premigrated", "after the recall");
    assert_bytes(
        "std::fs::read after the recall",
        &read_ok(&t.m("big.bin")),
        &fs_[0].1,
    );
    assert_bytes(
        "backing file after the recall",
        &fs::read(t.s("big.bin")).unwrap(),
        &fs_[0].1,
    );
    assert_eq!(
        shown(&t.m("big.bin")),
        shown_stub,
        "attributes changed by the recall"
    );
    assert!(blocks(&t.m("big.bin")) > 0, "recalled file shows no blocks");
    assert_eq!(
        t.state("other.bin"),
        "stub",
        "a file nobody opened was recalled"
    );

    let events = t.history("big.bin");
    let kinds = kinds_of(&events);
    assert_eq!(
        only(
            &kinds,
            &[
                "COPIED",
                "VERIFIED",
                "STUBBED",
                "RECALL_STARTED",
                "RECALLED"
            ]
        ),
        [
            "COPIED",
            "VERIFIED",
            "STUBBED",
            "RECALL_STARTED",
            "RECALLED"
        ],
        "history: {kinds:?}"
    );
    let mut last_id = 0;
    let mut last_time = 0;
    for e in &events {
        let cv = e["config_version"]
            .as_i64()
            .unwrap_or_else(|| panic!("event without config_version: {e}"));
        assert!(cv >= 1, "event with config_version {cv}: {e}");
        let id = e["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("event without id: {e}"));
        let time = e["time_ns"]
            .as_i64()
            .unwrap_or_else(|| panic!("event without time_ns: {e}"));
        assert!(id > last_id, "event ids not increasing: {events:?}");
        assert!(time >= last_time, "event times going back: {events:?}");
        last_id = id;
        last_time = time;
    }
}

/// `verify = "readback"` reads every object back (a multipart one in ranges) and hashes it
/// as it arrives: the daemon runs with a TMPDIR that does not exist, where a read-back into
/// a temporary file could not start (an object can be larger than any temporary space).
#[test]
fn readback_verify_hashes_each_object_as_it_arrives_and_needs_no_temporary_space() {
    let moto = start_moto();
    let fs_ = files(&[("small.bin", 100 * 1024), ("big.bin", 12 << 20)]);
    let mut t = TierMount::new(&moto, "readback", &fs_, |c| {
        c.set("policy", "verify", &q("readback"))
            .set("store", "part_size", &q("5MiB"))
    });
    t.umount();
    t.mount_with_env(&[("TMPDIR", "/nonexistent/coldtier-no-tmp")]);
    let before = settled_requests(&moto);
    t.migrate_ok(&["--mode", "stub"]);
    let after = settled_requests(&moto);
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel}\n{}", t.daemon_log_tail());
        let events = t.history(rel);
        let verified: Vec<&Value> = events.iter().filter(|e| e["kind"] == "VERIFIED").collect();
        assert_eq!(verified.len(), 1, "{rel}: {events:?}");
        assert_eq!(
            verified[0]["detail"]["verify"], "read-back",
            "{rel}: {}",
            verified[0]
        );
        let key = t.object_key(rel);
        let gets = data_gets(&after[before.len()..], "readback", Some(&key));
        let want = if rel == "big.bin" { 3 } else { 1 };
        assert_eq!(gets, want, "{rel}: GETs of {key} during the migrate");
    }
    assert_all_read_back(&t, &fs_);
}

// ------------------------------------------------------------------------------------------
// 3. Single flight

#[test]
fn concurrent_openers_of_a_stub_share_one_recall() {
    let moto = start_moto();
    let fs_ = files(&[("shared.bin", 1024 * 1024)]);
    let t = TierMount::new(&moto, "single", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let key = t.object_key("shared.bin");
    let gets_before = data_gets(&settled_requests(&moto), &t.bucket, Some(&key));

    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let path = t.m("shared.bin");
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            let p = path.clone();
            std::thread::spawn(move || {
                b.wait();
                fs::read(&p)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let got = h
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("reader {i}: {e}\n{}", t.daemon_log_tail()));
        assert_bytes(&format!("reader {i}"), &got, &fs_[0].1);
    }
    let kinds = t.kinds("shared.bin");
    assert_eq!(count(&kinds, "RECALL_STARTED"), 1, "history: {kinds:?}");
    assert_eq!(count(&kinds, "RECALLED"), 1, "history: {kinds:?}");
    let gets = data_gets(&settled_requests(&moto), &t.bucket, Some(&key)) - gets_before;
    assert_eq!(
        gets, 1,
        "GETs of {key} at the server for {n} concurrent openers"
    );
    assert_eq!(t.state("shared.bin"), "premigrated");
}

// ------------------------------------------------------------------------------------------
// 4. O_TRUNC

#[test]
fn o_trunc_open_of_a_stub_needs_no_recall() {
    let moto = start_moto();
    let fs_ = files(&[("f.bin", 200 * 1024), ("g.bin", 4096)]);
    let mut t = TierMount::new(&moto, "otrunc", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let gets_before = data_gets(&settled_requests(&moto), &t.bucket, None);

    let new = data(99, 3000);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(t.m("f.bin"))
            .unwrap_or_else(|e| panic!("O_TRUNC open of a stub: {e}\n{}", t.daemon_log_tail()));
        assert_eq!(f.metadata().unwrap().len(), 0, "fstat after O_TRUNC");
        assert_eq!(
            fs::metadata(t.m("f.bin")).unwrap().len(),
            0,
            "stat after O_TRUNC"
        );
        f.write_all(&new).unwrap();
    }
    assert_bytes("after O_TRUNC and a write", &read_ok(&t.m("f.bin")), &new);
    assert_eq!(t.state("f.bin"), "resident");
    let gets = data_gets(&settled_requests(&moto), &t.bucket, None) - gets_before;
    assert_eq!(gets, 0, "O_TRUNC of a stub sent GETs to S3");
    let kinds = t.kinds("f.bin");
    assert_eq!(count(&kinds, "RECALL_STARTED"), 0, "history: {kinds:?}");
    assert_eq!(t.state("g.bin"), "stub", "the other stub");
    assert_bytes("backing file", &fs::read(t.s("f.bin")).unwrap(), &new);

    // It stays a plain resident file after a restart (no stub record left behind).
    t.umount();
    t.remount();
    assert_eq!(t.state("f.bin"), "resident", "after remount");
    assert_bytes("after remount", &read_ok(&t.m("f.bin")), &new);
    let gets = data_gets(&settled_requests(&moto), &t.bucket, None) - gets_before;
    assert_eq!(
        gets, 0,
        "reading the truncated file after a remount sent GETs"
    );
}

/// An open of a stub for writing fetches nothing; SEEK_DATA/SEEK_HOLE through it are
/// answered from the record; the first write brings the data back first (one GET), so the
/// file holds the old bytes with the new ones written over them, and then gives up the
/// copy when the writer closes.
#[test]
fn a_stub_opened_for_writing_is_fetched_at_the_first_write() {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let moto = start_moto();
    let fs_ = files(&[("f.bin", 200_000)]);
    let t = TierMount::new(&moto, "lazy-write", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let gets = || data_gets(&settled_requests(&moto), &t.bucket, None);
    let before = gets();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(t.m("f.bin"))
        .unwrap();
    // SAFETY: lseek on an open fd.
    let (data, hole) = unsafe {
        (
            libc::lseek(f.as_raw_fd(), 10, libc::SEEK_DATA),
            libc::lseek(f.as_raw_fd(), 10, libc::SEEK_HOLE),
        )
    };
    assert_eq!((data, hole), (10, 200_000));
    assert_eq!(gets(), before, "open and lseek fetched nothing");
    assert_eq!(t.state("f.bin"), "stub");
    f.write_all_at(b"NEW BYTES", 1000).unwrap();
    drop(f);
    assert_eq!(gets(), before + 1, "one GET, at the first write");
    let mut want = fs_[0].1.clone();
    want[1000..1009].copy_from_slice(b"NEW BYTES");
    assert_bytes("after the write", &read_ok(&t.m("f.bin")), &want);
    assert_eq!(
        t.wait_state("f.bin", "resident", Duration::from_secs(20)),
        "resident"
    );
    let kinds = t.kinds("f.bin");
    assert_eq!(
        only(&kinds, &["STUBBED", "RECALLED", "SUPERSEDED"]),
        ["STUBBED", "RECALLED", "SUPERSEDED"],
        "{kinds:?}"
    );
}

/// A sparse file (64 MiB with 1.5 MiB of data) is tiered as its data: the object holds
/// the data only, the run and its event say what was really freed, SEEK_DATA/SEEK_HOLE
/// answer from the record while it is a stub, and the recall recreates the holes
/// (allocated blocks as before, data where it was).
#[test]
fn sparse_files_keep_their_holes() {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    const M: u64 = 1 << 20;
    let moto = start_moto();
    let mut t = TierMount::new(&moto, "sparse", &Vec::new(), |c| c);
    let (a, b) = (data(3, M as usize), data(4, M as usize / 2));
    {
        let f = fs::File::create(t.m("holes.bin")).unwrap();
        f.set_len(64 * M).unwrap();
        f.write_all_at(&a, 8 * M).unwrap();
        f.write_all_at(&b, 40 * M).unwrap();
        f.sync_all().unwrap();
    }
    let want = fs::read(t.m("holes.bin")).unwrap();
    let allocated = blocks(&t.s("holes.bin")) * 512;
    assert!(allocated < 4 * M, "the test file is sparse: {allocated}");
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["stubbed"], 1, "{v}");
    // The data's blocks (and at most a block of extent tree), not the file's size.
    let freed = v["bytes_freed"].as_u64().unwrap();
    assert!(
        (M + M / 2..=allocated + 4096).contains(&freed),
        "the run says what was freed ({allocated} allocated): {v}"
    );
    let stubbed = t
        .history("holes.bin")
        .into_iter()
        .find(|e| e["kind"] == "STUBBED")
        .unwrap();
    assert_eq!(stubbed["detail"]["bytes_freed"], freed, "{stubbed}");
    let key = t.object_key("holes.bin");
    let key = key
        .strip_prefix(&format!("{PREFIX}/"))
        .unwrap_or(&key)
        .to_string();
    let key = format!("{PREFIX}/{key}");
    let object = moto.raw_get(&t.bucket, &key).unwrap();
    assert_eq!(object.len() as u64, M + M / 2, "only the data is stored");
    assert_eq!(fs::metadata(t.m("holes.bin")).unwrap().len(), 64 * M);
    // SEEK_DATA / SEEK_HOLE on the stub: from the record, no GET.
    let gets = data_gets(&settled_requests(&moto), &t.bucket, None);
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(t.m("holes.bin"))
            .unwrap();
        // SAFETY: lseek on an open fd.
        let seek = |off, w| unsafe { libc::lseek(f.as_raw_fd(), off, w) };
        assert_eq!(seek(0, libc::SEEK_DATA), 8 * M as i64);
        assert_eq!(seek(8 * M as i64, libc::SEEK_HOLE), 9 * M as i64);
        assert_eq!(seek(9 * M as i64, libc::SEEK_DATA), 40 * M as i64);
    }
    assert_eq!(data_gets(&settled_requests(&moto), &t.bucket, None), gets);
    assert_eq!(t.state("holes.bin"), "stub");
    // The recall brings the data back where it was, and only that.
    assert_bytes("after the recall", &read_ok(&t.m("holes.bin")), &want);
    let after = blocks(&t.s("holes.bin")) * 512;
    assert!(after < 4 * M, "holes recreated: {after} bytes allocated");
    {
        let f = fs::File::open(t.s("holes.bin")).unwrap();
        // SAFETY: lseek on an open fd.
        assert_eq!(
            unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) },
            8 * M as i64
        );
    }
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "{v}");
    // Released again (premigrated, no upload) and rebuilt from the bucket.
    t.ok(&["release", &t.ms("holes.bin")]);
    t.umount();
    t.remove_catalog();
    let out = t.cli(&[
        "catalog",
        "rebuild",
        t.src.to_str().unwrap(),
        "--config",
        t.config_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    t.remount();
    assert_bytes("after a rebuild", &read_ok(&t.m("holes.bin")), &want);
}

// ------------------------------------------------------------------------------------------
// 4b. Metadata changes keep the copy

/// rename, chmod, chown, an xattr, an ACL and times set through the mount change no data:
/// a premigrated file keeps its copy (the stub run uploads nothing again), a stub stays a
/// stub (GNU `touch` opens it for writing and writes nothing: no GET), and `verify` stays
/// clean. A write of the same size with the times put back is found by the content.
#[test]
fn metadata_changes_keep_the_copy_and_fetch_nothing() {
    let moto = start_moto();
    let fs_ = files(&[
        ("r.bin", 40_000),
        ("c.bin", 41_000),
        ("x.bin", 42_000),
        ("t.bin", 43_000),
        ("s.bin", 44_000),
        ("w.bin", 45_000),
    ]);
    let t = TierMount::new(&moto, "metadata", &fs_, |c| c);
    t.migrate_ok(&["--mode", "copy-only"]);
    let keys: BTreeMap<&str, String> = fs_
        .iter()
        .map(|(r, _)| (r.as_str(), t.object_key(r)))
        .collect();
    t.migrate_ok(&["--mode", "stub"]);
    // s.bin is a stub now; bring the others back to premigrated for the metadata changes.
    for rel in ["r.bin", "c.bin", "x.bin", "t.bin", "w.bin"] {
        read_ok(&t.m(rel));
    }
    fs::rename(t.m("r.bin"), t.m("renamed.bin")).unwrap();
    fs::set_permissions(t.m("c.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(t.m("c.bin"), Some(1234), Some(1234)).unwrap();
    let (ok, _, err) = sh(&format!(
        "setfattr -n user.DOSATTRIB -v 0x20 '{}' && setfacl -m u:65534:r '{}'",
        t.ms("x.bin"),
        t.ms("x.bin")
    ));
    assert!(ok, "{err}");
    let gets_before = data_gets(&settled_requests(&moto), &t.bucket, None);
    let (ok, _, err) = sh(&format!(
        "touch -d '2001-02-03 04:05:06' '{}' '{}'",
        t.ms("t.bin"),
        t.ms("s.bin")
    ));
    assert!(ok, "{err}");
    assert_eq!(
        data_gets(&settled_requests(&moto), &t.bucket, None),
        gets_before,
        "touch of a stub fetched its data"
    );
    assert_eq!(t.state("s.bin"), "stub", "touch leaves a stub a stub");
    assert_eq!(
        shown(&t.m("s.bin")).mtime,
        981_173_106,
        "the stub shows the new mtime"
    );
    // w.bin: written with bytes of the same size, its times put back (a change the times
    // do not show): the content tells.
    let old_w = fs::metadata(t.m("w.bin")).unwrap();
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(t.m("w.bin"))
            .unwrap();
        f.write_all(&vec![7u8; 45_000]).unwrap();
    }
    set_times(&t.m("w.bin"), old_w.mtime(), old_w.mtime_nsec());
    assert_eq!(
        t.wait_state("w.bin", "resident", Duration::from_secs(20)),
        "resident",
        "a same-size write is found by the content\n{}",
        t.daemon_log_tail()
    );

    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "verify after metadata changes: {v}");

    let data_puts = || {
        object_requests(&settled_requests(&moto), &t.bucket)
            .into_iter()
            .filter(|r| r.method == "PUT" && !r.query().contains("tagging"))
            .count()
    };
    let puts_before = data_puts();
    let v = t.migrate_ok(&["--mode", "stub"]);
    let puts = data_puts() - puts_before;
    assert_eq!(puts, 1, "only w.bin is uploaded again: {v}");
    for (rel, key) in [
        ("renamed.bin", &keys["r.bin"]),
        ("c.bin", &keys["c.bin"]),
        ("x.bin", &keys["x.bin"]),
        ("t.bin", &keys["t.bin"]),
        ("s.bin", &keys["s.bin"]),
    ] {
        assert_eq!(t.state(rel), "stub", "{rel}: {v}");
        assert_eq!(&t.object_key(rel), key, "{rel}: the same object");
        assert_eq!(
            count(&t.kinds(rel), "SUPERSEDED"),
            0,
            "{rel}: {:?}",
            t.kinds(rel)
        );
    }
    assert_ne!(t.object_key("w.bin"), keys["w.bin"], "w.bin copied again");
    let c = fs::metadata(t.m("c.bin")).unwrap();
    assert_eq!((c.mode() & 0o7777, c.uid(), c.gid()), (0o600, 1234, 1234));
    assert_eq!(shown(&t.m("t.bin")).mtime, 981_173_106);
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "verify after the stub run: {v}");
    // Each recalls byte-identical, with the times it was given.
    let mut want = fs_.clone();
    want.retain(|(r, _)| r != "r.bin" && r != "w.bin");
    want.push(("renamed.bin".into(), fs_[0].1.clone()));
    want.push(("w.bin".into(), vec![7u8; 45_000]));
    assert_all_read_back(&t, &want);
    assert_eq!(shown(&t.m("t.bin")).mtime, 981_173_106);
    assert_eq!(shown(&t.m("s.bin")).mtime, 981_173_106);
}

// ------------------------------------------------------------------------------------------
/// A copy proven when it was made may be gone from the bucket by the time the data would be
/// freed from it (a lifecycle rule, a person, another tool): a release and a stub run ask
/// the store first (a HEAD of the recorded version). The release is refused and the file
/// keeps its data; the stub run copies it again and stubs it from the new copy. For a file
/// of its own and for pack members.
#[test]
fn a_copy_gone_from_the_bucket_never_frees_data() {
    let moto = start_moto();
    let fs_ = files(&[("own.bin", 200 * 1024), ("m1.txt", 5000), ("m2.txt", 7000)]);
    let t = TierMount::new(&moto, "gonecopy", &fs_, |c| {
        c.set("pack", "enabled", "true")
            .set("pack", "max_member_size", &q("64KiB"))
    });
    t.migrate_ok(&["--mode", "copy-only"]);
    let old: BTreeMap<&str, String> = ["own.bin", "m1.txt", "m2.txt"]
        .into_iter()
        .map(|r| (r, t.object_key(r)))
        .collect();
    assert!(old["m1.txt"].ends_with(".tar"), "m1.txt is packed: {old:?}");
    assert_eq!(old["m1.txt"], old["m2.txt"]);
    for r in ["own.bin", "m1.txt", "m2.txt"] {
        assert_eq!(t.state(r), "premigrated", "{r}");
    }
    for k in [&old["own.bin"], &old["m1.txt"]] {
        moto.raw_delete(&t.bucket, k).unwrap();
    }

    // A dry run asks the store too, and changes nothing.
    let out = t.cli(&["release", "--dry-run", t.ms("own.bin").as_str()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not in the store any more")
            || String::from_utf8_lossy(&out.stderr).contains("not in the store any more"),
        "release --dry-run: {}",
        show(&out)
    );
    assert_eq!(t.state("own.bin"), "premigrated", "after the dry run");

    for r in ["own.bin", "m1.txt"] {
        let out = t.cli(&["release", t.ms(r).as_str()]);
        assert!(
            !out.status.success(),
            "release of {r}, whose copy is gone, succeeded: {}",
            show(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not in the store any more"),
            "release of {r}: {}",
            show(&out)
        );
        assert_eq!(t.state(r), "resident", "{r} after the refused release");
        let kinds = t.kinds(r);
        assert_eq!(
            only(&kinds, &["COPIED", "VERIFIED", "SUPERSEDED", "STUBBED"]),
            ["COPIED", "VERIFIED", "SUPERSEDED"],
            "history of {r}: {kinds:?}"
        );
    }
    // A bulk release (whose copies are asked for ahead, many at once) refuses m2.txt too,
    // and frees nothing.
    let out = t.cli(&["release", "-r", t.mnt_str().as_str()]);
    assert!(!out.status.success(), "release -r: {}", show(&out));
    assert_eq!(t.state("m2.txt"), "resident", "m2.txt after release -r");
    for (i, r) in ["own.bin", "m1.txt", "m2.txt"].iter().enumerate() {
        assert_bytes(r, &fs::read(t.s(r)).unwrap(), &fs_[i].1);
    }

    // A stub run: the three are copied again and stubbed from the new copies.
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["failed"], 0, "{v}");
    for (i, r) in ["own.bin", "m1.txt", "m2.txt"].iter().enumerate() {
        assert_eq!(t.state(r), "stub", "{r}");
        let k = t.object_key(r);
        assert_ne!(k, old[r], "{r} is stubbed from a new copy");
        assert_bytes(r, &read_ok(&t.m(r)), &fs_[i].1);
    }
    let kinds = t.kinds("m2.txt");
    assert_eq!(
        only(&kinds, &["VERIFIED", "SUPERSEDED", "STUBBED"]),
        ["VERIFIED", "SUPERSEDED", "VERIFIED", "STUBBED"],
        "history of m2.txt: {kinds:?}"
    );
}

// 5. Writes to premigrated files

#[test]
fn writing_a_premigrated_file_makes_it_resident_and_keeps_the_old_object() {
    let moto = start_moto();
    let fs_ = files(&[("w.bin", 100 * 1024), ("tr.bin", 50 * 1024)]);
    let t = TierMount::new(&moto, "supersede", &fs_, |c| c);
    t.migrate_ok(&["--mode", "copy-only"]);
    let kw = t.object_key("w.bin");
    let kt = t.object_key("tr.bin");
    assert_eq!(t.state("w.bin"), "premigrated");

    // A write.
    {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(t.m("w.bin"))
            .unwrap();
        f.write_all(b"appended").unwrap();
    }
    let mut new_w = fs_[0].1.clone();
    new_w.extend_from_slice(b"appended");
    // The copy is given up when the writer's last handle is released (the kernel sends
    // that after close returns).
    assert_eq!(
        t.wait_state("w.bin", "resident", Duration::from_secs(20)),
        "resident",
        "after a write"
    );
    let kinds = t.kinds("w.bin");
    assert_eq!(
        only(&kinds, &["COPIED", "VERIFIED", "SUPERSEDED"]),
        ["COPIED", "VERIFIED", "SUPERSEDED"],
        "history: {kinds:?}"
    );
    assert_bytes("after the write", &read_ok(&t.m("w.bin")), &new_w);
    assert_bytes(
        "the superseded object",
        &moto.raw_get(&t.bucket, &kw).unwrap(),
        &fs_[0].1,
    );

    // A truncate.
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(t.m("tr.bin"))
            .unwrap();
        f.set_len(1000).unwrap();
    }
    assert_eq!(t.state("tr.bin"), "resident", "after a truncate");
    let kinds = t.kinds("tr.bin");
    assert_eq!(count(&kinds, "SUPERSEDED"), 1, "history: {kinds:?}");
    assert_bytes(
        "after the truncate",
        &read_ok(&t.m("tr.bin")),
        &fs_[1].1[..1000],
    );
    assert_bytes(
        "the superseded object",
        &moto.raw_get(&t.bucket, &kt).unwrap(),
        &fs_[1].1,
    );

    // Copied again: same file id, a new content version; both objects kept. (The kernel
    // reports the last close of the writer asynchronously, so a run may still see it
    // open: a few runs are allowed.)
    let t0 = Instant::now();
    while t.state("w.bin") != "premigrated" && t0.elapsed() < Duration::from_secs(5) {
        t.migrate_ok(&["--mode", "copy-only"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(t.state("w.bin"), "premigrated", "copied again");
    let kw2 = t.object_key("w.bin");
    assert_ne!(kw2, kw, "a new content version must get a new key");
    assert_eq!(split_key(&kw2).0, split_key(&kw).0, "file id changed");
    assert_bytes(
        "the new object",
        &moto.raw_get(&t.bucket, &kw2).unwrap(),
        &new_w,
    );
    let objs = t.objects();
    for k in [&kw, &kw2, &kt] {
        assert!(objs.contains(k), "{k} missing from the bucket: {objs:?}");
    }
}

// ------------------------------------------------------------------------------------------
// 6. Rename, delete, gc

#[test]
fn rename_moves_nothing_and_delete_keeps_the_object_until_gc_after_retention() {
    let moto = start_moto();
    let fs_ = files(&[
        ("a.bin", 40 * 1024),
        ("c.bin", 20 * 1024),
        ("keep.bin", 10 * 1024),
    ]);
    let mut t = TierMount::new(&moto, "lifecycle", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let ka = t.object_key("a.bin");
    let kc = t.object_key("c.bin");
    let kk = t.object_key("keep.bin");
    let id_a = t.status("a.bin")["file_id"].as_str().map(str::to_string);

    // Rename: no request to S3, same object, same identity.
    let before = settled_requests(&moto).len();
    fs::create_dir(t.m("sub")).unwrap();
    fs::rename(t.m("a.bin"), t.m("sub/a2.bin")).unwrap();
    let st = t.status("sub/a2.bin");
    assert_eq!(st["state"].as_str(), Some("stub"), "renamed stub: {st}");
    assert_eq!(
        st["object_key"].as_str(),
        Some(ka.as_str()),
        "object key after rename: {st}"
    );
    if let Some(id) = &id_a {
        assert_eq!(
            st["file_id"].as_str(),
            Some(id.as_str()),
            "file id after rename: {st}"
        );
    }
    let reqs = settled_requests(&moto);
    assert_eq!(
        reqs.len(),
        before,
        "rename sent requests to S3: {:?}",
        &reqs[before..]
    );
    assert_bytes("renamed stub", &read_ok(&t.m("sub/a2.bin")), &fs_[0].1);
    let kinds = t.kinds("sub/a2.bin");
    assert_eq!(
        only(&kinds, &["STUBBED", "RECALLED"]),
        ["STUBBED", "RECALLED"],
        "history after rename keeps the file's events: {kinds:?}"
    );

    // Delete: DELETED, object kept.
    let id_c = t.status("c.bin")["file_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| split_key(&kc).0);
    fs::remove_file(t.m("c.bin")).unwrap();
    let events_c = |t: &TierMount| -> Vec<String> {
        let p = t.ms("c.bin");
        let out = t.cli(&["history", "--json", p.as_str()]);
        if out.status.success() {
            kinds_of(&parse_lines(&String::from_utf8_lossy(&out.stdout)))
        } else {
            // History by path no longer finds a deleted file: read its events by file id.
            eprintln!(
                "history of a deleted path: {}; reading the catalog",
                show(&out)
            );
            t.catalog_events(&id_c)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        }
    };
    let kinds = events_c(&t);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("DELETED"),
        "events of the deleted stub: {kinds:?}"
    );
    let objs = t.objects();
    assert!(
        objs.contains(&kc),
        "object of a deleted stub removed at once: {objs:?}"
    );

    // gc before the retention has passed deletes nothing.
    t.ok(&["gc", t.mnt_str().as_str()]);
    let mut all = vec![ka.clone(), kc.clone(), kk.clone()];
    all.sort();
    assert_eq!(t.objects(), all, "gc within retention deleted objects");

    // With the daemon's clock ahead of the retention: dry-run deletes nothing, gc deletes
    // exactly the deleted file's object.
    t.umount();
    let skew = (2 * RETENTION_SECS).to_string();
    t.mount_with_env(&[(GC_SKEW_ENV, skew.as_str())]);
    t.ok(&["gc", t.mnt_str().as_str(), "--dry-run"]);
    assert_eq!(t.objects(), all, "gc --dry-run deleted objects");
    t.ok(&["gc", t.mnt_str().as_str()]);
    let mut rest = vec![ka.clone(), kk.clone()];
    rest.sort();
    assert_eq!(
        t.objects(),
        rest,
        "gc after retention: only the deleted file's object goes"
    );
    let kinds = events_c(&t);
    assert_eq!(
        count(&kinds, "OBJECT_DELETED"),
        1,
        "events of the deleted stub: {kinds:?}"
    );
    assert_bytes(
        "a live stub after gc",
        &read_ok(&t.m("keep.bin")),
        &fs_[2].1,
    );
    assert_bytes(
        "the renamed file after gc",
        &read_ok(&t.m("sub/a2.bin")),
        &fs_[0].1,
    );
}

/// A backing file copied with its xattrs outside the mount (`cp -a` as root, `rsync -X`, a
/// restore) carries the original's id and records, and is stubbed from the same object.
/// The catalog knows one file by that id: when the original is deleted through the mount,
/// gc past the retention keeps the object all the same (the copy's record names it) and
/// says so; the copy still reads back. `verify` names the shared id. Once the copy is
/// deleted too, gc deletes the object.
#[test]
fn gc_keeps_an_object_that_a_copied_backing_file_still_names() {
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 30 * 1024), ("h.bin", 20 * 1024)]);
    let mut t = TierMount::new(&moto, "gc-copied", &fs_, |c| c);
    t.migrate_ok(&["--mode", "copy-only"]);
    // A second name of a premigrated file shares its id too, and is no copy.
    fs::hard_link(t.m("h.bin"), t.m("h2.bin")).unwrap();
    let (a, b) = (t.s("a.bin"), t.s("b.bin"));
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -a: {}", show(&out));
    assert!(
        xattr(&b, "trusted.coldtier.copy").is_some(),
        "cp -a kept no record"
    );
    t.migrate_ok(&["--mode", "stub"]);
    let key = t.object_key("a.bin");
    assert_eq!(t.state("b.bin"), "stub");
    assert_eq!(t.object_key("b.bin"), key);
    // verify names the file that shares the other's id.
    let (code, v) = t.verify(false);
    assert_ne!(code, 0, "{v}");
    let shared: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "shared_id")
        .collect();
    assert_eq!(shared.len(), 1, "{v}");
    assert!(
        ["a.bin", "b.bin"].contains(&shared[0]["path"].as_str().unwrap()),
        "{v}"
    );
    fs::remove_file(t.m("a.bin")).unwrap();
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, &(RETENTION_SECS + 60).to_string())]);
    let gc = |t: &TierMount, dry: bool| -> Value {
        let mnt = t.mnt_str();
        let mut args = vec!["gc", mnt.as_str(), "--json"];
        if dry {
            args.push("--dry-run");
        }
        serde_json::from_str(t.ok(&args).trim()).unwrap()
    };
    for dry in [true, false] {
        let r = gc(&t, dry);
        assert_eq!(r["deleted"], serde_json::json!([]), "dry run {dry}: {r}");
        let kept = &r["kept_named_on_disk"];
        assert_eq!(kept.as_array().map(Vec::len), Some(1), "dry run {dry}: {r}");
        assert_eq!(kept[0]["path"], "b.bin", "{r}");
        assert!(
            kept[0]["object_key"].as_str().unwrap().ends_with(&key),
            "{r}"
        );
    }
    assert!(t.objects().contains(&key), "{:?}", t.objects());
    assert_bytes("the copy, after gc", &read_ok(&t.m("b.bin")), &fs_[0].1);
    // The copy gone as well: nothing names the object any more.
    fs::remove_file(t.m("b.bin")).unwrap();
    let r = gc(&t, false);
    assert_eq!(r["kept_named_on_disk"], serde_json::json!([]), "{r}");
    assert!(!t.objects().contains(&key), "{r}");
}

// ------------------------------------------------------------------------------------------
// 7. Pins

/// A pin that lands while the file's copy is in flight holds: a file already tracked is
/// copied but never stubbed, a new file's copy is discarded (the pin gave it its id), and
/// the copy's records never undo the pin. The pin lands after the upload (before the copy
/// is recorded on the file) or just before the stub step (which, for a new file, reads no
/// catalog row for the id its copy gave it: the ctime the pin moved and the id the pin
/// gave stop it), for a file of its own and for a pack member.
#[test]
fn a_pin_during_the_copy_is_kept_and_the_file_not_stubbed() {
    let moto = start_moto();
    for (packed, at) in [
        (false, "migrate-after-put"),
        (false, "migrate-before-stub"),
        (true, "pack-after-put"),
        (true, "migrate-before-stub"),
    ] {
        pin_during_the_copy(&moto, packed, at);
    }
}

fn pin_during_the_copy(moto: &Arc<MotoServer>, packed: bool, at: &str) {
    let fs_ = files(&[("known.bin", 30 * 1024), ("new.bin", 30 * 1024)]);
    let bucket = format!("pin-race-{packed}-{}", at.replace('-', ""));
    let mut t = TierMount::new(moto, &bucket, &fs_, |c| match packed {
        true => c.set("pack", "enabled", "true"),
        false => c,
    });
    // known.bin is tracked (an id and a row) before the run.
    t.ok(&["pin", t.ms("known.bin").as_str()]);
    t.ok(&["unpin", t.ms("known.bin").as_str()]);
    t.umount();
    // The run waits at `at` until the pin is done (the file `go` says so).
    let go = t.dir.path().join("go");
    let migrate = t.stub_run_paused_at(&format!("{at}:hold={}", go.display()));
    t.ok(&["pin", t.ms("known.bin").as_str(), t.ms("new.bin").as_str()]);
    fs::write(&go, b"").unwrap();
    let out = migrate.join().unwrap();
    for (rel, data) in &fs_ {
        let st = t.status(rel);
        assert_eq!(st["pinned"].as_bool(), Some(true), "{rel}: pin lost: {st}");
        assert_ne!(
            st["state"], "stub",
            "{rel}: a pinned file was stubbed: {st}"
        );
        assert_bytes(rel, &fs::read(t.s(rel)).unwrap(), data);
        assert!(
            !t.kinds(rel).contains(&"STUBBED".to_string()),
            "{rel} ({packed}, {at}): {:?}",
            t.kinds(rel)
        );
    }
    let why = format!("packed {packed}, pinned at {at}: {}", show(&out));
    assert_eq!(t.state("known.bin"), "premigrated", "{why}");
    assert_eq!(t.state("new.bin"), "resident", "{why}");
}

/// A stub run takes a file straight from its proven copy to its stub: nothing is written
/// on the file in between (no copy record, no id xattr), so that the stub record is the
/// file's only xattr write. The catalog still records the copy (COPIED, VERIFIED) before
/// STUBBED.
#[test]
fn a_stub_run_writes_no_copy_record_before_the_stub() {
    let moto = start_moto();
    for (packed, tracked) in [(false, false), (true, false), (false, true), (true, true)] {
        straight_to_stub(&moto, packed, tracked);
    }
}

/// [`a_stub_run_writes_no_copy_record_before_the_stub`] for a file of its own or (`packed`)
/// a pack member. A file `tracked` before the run (it has an id, here from a pin) keeps a
/// name at every step (invariant 2): it goes the way of a copy record, and keeps its id.
fn straight_to_stub(moto: &Arc<MotoServer>, packed: bool, tracked: bool) {
    let fs_ = files(&[("a.bin", 30 * 1024)]);
    let bucket = format!("direct-{packed}-{tracked}");
    let mut t = TierMount::new(moto, &bucket, &fs_, |c| match packed {
        true => c.set("pack", "enabled", "true"),
        false => c,
    });
    let id = tracked.then(|| {
        t.ok(&["pin", t.ms("a.bin").as_str()]);
        t.ok(&["unpin", t.ms("a.bin").as_str()]);
        t.status("a.bin")["file_id"].clone()
    });
    t.umount();
    // The run waits before the stub step until `go` exists.
    let go = t.dir.path().join("go");
    let migrate = t.stub_run_paused_at(&format!("migrate-before-stub:hold={}", go.display()));
    // Copied and proven, about to be stubbed: a new file is as it was; a tracked one has
    // its copy record beside its id.
    let backing = t.s("a.bin");
    assert_eq!(xattr(&backing, "trusted.coldtier.copy").is_some(), tracked);
    assert_eq!(xattr(&backing, "trusted.coldtier.id").is_some(), tracked);
    assert_eq!(xattr(&backing, STUB_XATTR), None);
    fs::write(&go, b"").unwrap();
    let out = migrate.join().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(t.state("a.bin"), "stub");
    assert!(xattr(&backing, STUB_XATTR).is_some());
    assert_eq!(xattr(&backing, "trusted.coldtier.copy"), None);
    let kinds = t.kinds("a.bin");
    let at = |k: &str| kinds.iter().position(|x| x == k);
    assert!(
        at("COPIED") < at("VERIFIED") && at("VERIFIED") < at("STUBBED") && at("COPIED").is_some(),
        "{kinds:?}"
    );
    let key = t.status("a.bin")["object_key"].to_string();
    assert_eq!(key.contains("packs/"), packed, "{key}");
    if let Some(id) = id {
        assert_eq!(t.status("a.bin")["file_id"], id);
    }
    assert_bytes("a.bin", &fs::read(t.m("a.bin")).unwrap(), &fs_[0].1);
}

/// A file held open through the mount during a stub run keeps its data: it is copied and
/// left premigrated (busy), its copy record written then (a stub run otherwise goes from the
/// copy straight to the stub record); once it is closed, the next run stubs it from that
/// copy, with no second upload.
#[test]
fn a_file_open_during_a_stub_run_stays_premigrated_and_is_stubbed_later_from_its_copy() {
    let moto = start_moto();
    let fs_ = files(&[("open.bin", 30 * 1024), ("other.bin", 30 * 1024)]);
    let t = TierMount::new(&moto, "busy", &fs_, |c| c);
    let held = fs::File::open(t.m("open.bin")).unwrap();
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["busy"].as_u64(), Some(1), "{v}");
    assert_eq!(t.state("open.bin"), "premigrated");
    assert_eq!(t.state("other.bin"), "stub");
    assert!(xattr(&t.s("open.bin"), "trusted.coldtier.copy").is_some());
    let key = t.status("open.bin")["object_key"].clone();
    assert!(key.is_string(), "{key}");
    drop(held);
    // The kernel sends RELEASE after close(2) returns: a run may still find it open.
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.state("open.bin") != "stub" {
        assert!(Instant::now() < deadline, "never stubbed after its close");
        t.migrate_ok(&["--mode", "stub"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(t.status("open.bin")["object_key"], key);
    let kinds = t.kinds("open.bin");
    assert_eq!(count(&kinds, "COPIED"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "STUBBED"), 1, "{kinds:?}");
    assert_bytes("open.bin", &fs::read(t.m("open.bin")).unwrap(), &fs_[0].1);
}

#[test]
fn pinned_files_are_never_released() {
    let moto = start_moto();
    let fs_ = files(&[("p.bin", 30 * 1024), ("q.bin", 30 * 1024)]);
    let t = TierMount::new(&moto, "pins", &fs_, |c| c);
    t.migrate_ok(&["--mode", "copy-only"]);
    t.ok(&["pin", t.ms("p.bin").as_str()]);
    assert_eq!(t.status("p.bin")["pinned"].as_bool(), Some(true));
    assert_eq!(t.status("q.bin")["pinned"].as_bool(), Some(false));
    assert!(
        t.kinds("p.bin").contains(&"PINNED".to_string()),
        "no PINNED event"
    );

    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(t.state("q.bin"), "stub", "unpinned file");
    assert_eq!(t.state("p.bin"), "premigrated", "a pinned file was stubbed");
    assert_bytes(
        "pinned backing file",
        &fs::read(t.s("p.bin")).unwrap(),
        &fs_[0].1,
    );

    let out = t.cli(&["release", t.ms("p.bin").as_str()]);
    assert!(
        !out.status.success(),
        "release of a pinned file succeeded: {}",
        show(&out)
    );
    assert_eq!(t.state("p.bin"), "premigrated", "release of a pinned file");
    assert_bytes(
        "pinned backing file after release",
        &fs::read(t.s("p.bin")).unwrap(),
        &fs_[0].1,
    );

    t.ok(&["unpin", t.ms("p.bin").as_str()]);
    assert_eq!(t.status("p.bin")["pinned"].as_bool(), Some(false));
    assert!(
        t.kinds("p.bin").contains(&"UNPINNED".to_string()),
        "no UNPINNED event"
    );
    t.ok(&["release", t.ms("p.bin").as_str()]);
    assert_eq!(t.state("p.bin"), "stub", "release after unpin");
    assert_eq!(
        fs::metadata(t.s("p.bin")).unwrap().len(),
        0,
        "released backing file"
    );
    assert_bytes("released file", &read_ok(&t.m("p.bin")), &fs_[0].1);
}

// ------------------------------------------------------------------------------------------
// 8. Corrupted object

#[test]
fn a_corrupted_object_fails_the_recall_with_eio_and_keeps_the_stub() {
    let moto = start_moto();
    let fs_ = files(&[("bad.bin", 64 * 1024), ("good.bin", 16 * 1024)]);
    let t = TierMount::new(&moto, "corrupt", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let key = t.object_key("bad.bin");
    // Same length, other bytes, behind coldtier's back.
    moto.raw_put(&t.bucket, &key, &data(12345, fs_[0].1.len()))
        .unwrap();

    for attempt in 1..=2 {
        let e = errno_of(
            fs::read(t.m("bad.bin")),
            "read of a stub whose object is corrupted",
        );
        assert_eq!(
            e,
            libc::EIO,
            "attempt {attempt}: errno {e}, want EIO\n{}",
            t.daemon_log_tail()
        );
        assert_eq!(t.state("bad.bin"), "stub", "attempt {attempt}");
        let b = fs::symlink_metadata(t.s("bad.bin")).unwrap();
        assert_eq!(
            b.len(),
            0,
            "attempt {attempt}: backing file not empty after a failed recall"
        );
        assert!(
            xattr(&t.s("bad.bin"), STUB_XATTR).is_some(),
            "attempt {attempt}: stub record gone"
        );
        assert_eq!(
            fs::metadata(t.m("bad.bin")).unwrap().len(),
            fs_[0].1.len() as u64,
            "size through the mount"
        );
    }
    // One recall attempt per read() (the kernel's retry of a failed page-cache read gets
    // the same error without another).
    let kinds = t.kinds("bad.bin");
    assert_eq!(count(&kinds, "RECALL_FAILED"), 2, "history: {kinds:?}");
    assert_eq!(count(&kinds, "RECALLED"), 0, "history: {kinds:?}");
    assert_bytes(
        "an intact stub beside it",
        &read_ok(&t.m("good.bin")),
        &fs_[1].1,
    );
}

// ------------------------------------------------------------------------------------------
// 10. Metadata operations never contact S3

#[test]
fn ls_stat_find_du_over_stubs_send_no_request_to_s3() {
    let moto = start_moto();
    let fs_ = files(&[
        ("d1/a.bin", 20 * 1024),
        ("d1/b.bin", 3000),
        ("d1/d2/c.bin", 50 * 1024),
        ("d1/d2/d3/e.bin", 1),
        ("top.bin", 9000),
    ]);
    let t = TierMount::new(&moto, "quiet", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel}");
    }
    let before = settled_requests(&moto);

    let mnt = t.mnt.display().to_string();
    for cmd in [
        format!("ls -lR '{mnt}'"),
        format!("ls -lsa '{mnt}/d1'"),
        format!("find '{mnt}' -type f -exec stat {{}} +"),
        format!("find '{mnt}' -type f -size +1k -newer '{mnt}/d1'"),
        format!("du -a '{mnt}'"),
        format!("du -s --apparent-size '{mnt}'"),
    ] {
        let (ok, _, err) = sh(&cmd);
        assert!(ok, "{cmd}: {err}");
    }
    let (ok, listing, err) = sh(&format!("find '{mnt}' -type f -printf '%s %b %P\\n'"));
    assert!(ok, "find -printf: {err}");
    let mut seen = BTreeMap::new();
    for l in listing.lines() {
        let mut it = l.splitn(3, ' ');
        let size: u64 = it.next().unwrap().parse().unwrap();
        let blocks: u64 = it.next().unwrap().parse().unwrap();
        seen.insert(it.next().unwrap().to_string(), (size, blocks));
    }
    let want: BTreeMap<String, (u64, u64)> = fs_
        .iter()
        .map(|(r, c)| (r.clone(), (c.len() as u64, 0)))
        .collect();
    assert_eq!(seen, want, "find over stubs: (size, blocks) by path");
    for (rel, _) in &fs_ {
        let p = cpath(&t.m(rel));
        // SAFETY: NUL-terminated path; the fd is closed right away.
        unsafe {
            assert_eq!(libc::access(p.as_ptr(), libc::R_OK), 0, "access {rel}");
            let fd = libc::open(p.as_ptr(), libc::O_PATH);
            assert!(fd >= 0, "open(O_PATH) {rel}");
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(fd, &mut st), 0, "fstat(O_PATH fd) {rel}");
            libc::close(fd);
            let mut buf = [0u8; 1024];
            let n = libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
            assert!(n >= 0, "listxattr {rel}");
        }
        assert_eq!(xattr(&t.m(rel), "user.nothing"), None, "getxattr {rel}");
    }

    let after = settled_requests(&moto);
    assert_eq!(
        after.len(),
        before.len(),
        "metadata operations sent requests to S3: {:?}",
        &after[before.len()..]
    );
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel} after ls/stat/find/du");
        assert_eq!(
            fs::symlink_metadata(t.s(rel)).unwrap().len(),
            0,
            "{rel}: backing file recalled"
        );
    }
}

/// An open of a stub fetches nothing: opened for reading (and for writing without O_TRUNC),
/// fstat, SEEK_DATA/SEEK_HOLE, flock and close send no request to the store; the first read
/// through such a handle recalls the file, and its bytes are right.
#[test]
fn opening_a_stub_without_reading_sends_no_get() {
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 70 * 1024), ("b.bin", 5000)]);
    let t = TierMount::new(&moto, "lazyopen", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let before = settled_requests(&moto);
    for (rel, body) in &fs_ {
        for write in [false, true] {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(t.m(rel))
                .unwrap();
            let fd = f.as_raw_fd();
            // SAFETY: calls on a descriptor this test holds.
            unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                assert_eq!(libc::fstat(fd, &mut st), 0, "fstat {rel}");
                assert_eq!(st.st_size as usize, body.len(), "{rel}");
                assert_eq!(libc::lseek(fd, 0, libc::SEEK_DATA), 0, "SEEK_DATA {rel}");
                assert_eq!(
                    libc::lseek(fd, 0, libc::SEEK_HOLE) as usize,
                    body.len(),
                    "SEEK_HOLE {rel}"
                );
                assert_eq!(libc::flock(fd, libc::LOCK_SH), 0, "flock {rel}");
            }
            drop(f);
        }
    }
    let after = settled_requests(&moto);
    assert_eq!(
        after.len(),
        before.len(),
        "opens without a read sent requests to S3: {:?}",
        &after[before.len()..]
    );
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel} after opens without a read");
    }
    // The first read through a handle opened before recalls, byte-identical.
    let (rel, body) = &fs_[0];
    let mut f = fs::File::open(t.m(rel)).unwrap();
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_bytes("read through a lazily opened stub", &got, body);
    assert_eq!(t.state(rel), "premigrated");
    assert_eq!(t.state(&fs_[1].0), "stub");
}

/// The first data access of a stub recalls it, whatever the path: mmap, copy_file_range (to
/// a file in the mount) and sendfile all see the bytes that were tiered.
#[test]
fn mmap_copy_file_range_and_sendfile_of_stubs_recall_them_byte_identical() {
    let moto = start_moto();
    let fs_ = files(&[("m.bin", 300_000), ("c.bin", 200_000), ("s.bin", 100_000)]);
    let t = TierMount::new(&moto, "dataops", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let body = |rel: &str| &fs_.iter().find(|(r, _)| r == rel).unwrap().1;

    // mmap, read through the mapping.
    let f = fs::File::open(t.m("m.bin")).unwrap();
    let len = body("m.bin").len();
    // SAFETY: a private read-only mapping of a file this test holds, unmapped below.
    let got = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let v = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        v
    };
    assert_bytes("mmap of a stub", &got, body("m.bin"));

    // copy_file_range into a new file in the mount.
    let src = fs::File::open(t.m("c.bin")).unwrap();
    let dst = fs::File::create(t.m("c.copy")).unwrap();
    let mut left = body("c.bin").len();
    while left > 0 {
        // SAFETY: two descriptors this test holds; null offsets use the file positions.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                left,
                0,
            )
        };
        assert!(
            n > 0,
            "copy_file_range: {}",
            std::io::Error::last_os_error()
        );
        left -= n as usize;
    }
    drop(dst);
    assert_bytes(
        "copy_file_range of a stub",
        &read_ok(&t.m("c.copy")),
        body("c.bin"),
    );

    // sendfile into a file outside the mount.
    let src = fs::File::open(t.m("s.bin")).unwrap();
    let out = tempfile::tempfile().unwrap();
    let mut left = body("s.bin").len();
    while left > 0 {
        // SAFETY: two descriptors this test holds; a null offset uses the file position.
        let n =
            unsafe { libc::sendfile(out.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
        left -= n as usize;
    }
    let mut got = Vec::new();
    let mut out = out;
    std::io::Seek::rewind(&mut out).unwrap();
    out.read_to_end(&mut got).unwrap();
    assert_bytes("sendfile of a stub", &got, body("s.bin"));

    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "premigrated", "{rel}");
    }
}

/// Sets (`add`) and clears (`remove`) file attribute flags of `p` (FS_IOC_SETFLAGS).
fn chattr(p: &Path, add: i32, remove: i32) -> std::io::Result<()> {
    let f = fs::File::open(p)?;
    let mut v: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int, FS_IOC_SETFLAGS reads one.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut v) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        v = (v | add) & !remove;
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &v) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An immutable or append-only file (chattr +i, +a) is never tiered: the run reports it
/// failed with the reason, uploads nothing for it and leaves it as it was; `release`
/// refuses a premigrated one; a stub cannot be made immutable or append-only (it could
/// never be recalled); cleared, the files tier as any other.
#[test]
fn immutable_and_append_only_files_are_never_tiered() {
    const APPEND: i32 = 0x20;
    const IMMUTABLE: i32 = 0x10;
    let moto = start_moto();
    let fs_ = files(&[("i.bin", 20_000), ("a.bin", 30_000), ("ok.bin", 10_000)]);
    let t = TierMount::new(&moto, "immutable", &fs_, |c| c);
    chattr(&t.m("i.bin"), IMMUTABLE, 0).unwrap();
    chattr(&t.m("a.bin"), APPEND, 0).unwrap();
    let (out, v) = t.migrate(&["--mode", "stub"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert_eq!(v["failed"], 2, "{v}");
    assert_eq!(v["stubbed"], 1, "{v}");
    let errors = v["errors"].to_string();
    assert!(
        errors.contains("immutable (chattr +i): not tiered"),
        "{errors}"
    );
    assert!(
        errors.contains("append-only (chattr +a): not tiered"),
        "{errors}"
    );
    assert_eq!(t.objects().len(), 1, "uploads: {:?}", t.objects());
    for rel in ["i.bin", "a.bin"] {
        assert_bytes(
            rel,
            &read_ok(&t.m(rel)),
            &fs_.iter().find(|(r, _)| r == rel).unwrap().1,
        );
        assert_eq!(xattr(&t.s(rel), STUB_XATTR), None, "{rel}");
    }
    // A stub cannot be made immutable or append-only.
    assert_eq!(t.state("ok.bin"), "stub");
    for flag in [IMMUTABLE, APPEND] {
        let e = chattr(&t.m("ok.bin"), flag, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }
    // Premigrated, then made immutable: release refuses.
    chattr(&t.m("a.bin"), 0, APPEND).unwrap();
    let (_, v) = t.migrate(&["--mode", "copy-only"]);
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(t.state("a.bin"), "premigrated");
    chattr(&t.m("a.bin"), IMMUTABLE, 0).unwrap();
    let out = t.cli(&["release", t.ms("a.bin").as_str()]);
    assert!(
        !out.status.success(),
        "release of an immutable file: {}",
        show(&out)
    );
    assert!(show(&out).contains("immutable"), "{}", show(&out));
    assert_eq!(t.state("a.bin"), "premigrated");
    // Cleared: tiered as any other file.
    chattr(&t.m("a.bin"), 0, IMMUTABLE).unwrap();
    chattr(&t.m("i.bin"), 0, IMMUTABLE).unwrap();
    t.migrate_ok(&["--mode", "stub"]);
    for (rel, body) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel}");
        assert_bytes(rel, &read_ok(&t.m(rel)), body);
    }
}

// ------------------------------------------------------------------------------------------
// 11. Glacier

/// Seconds moto keeps a restore "in progress" (and an object looks restored for that long
/// after its creation: see `MotoServer::set_restore_seconds`).
const RESTORE_SECS: u64 = 3;

/// Archived stubs: migrate with GLACIER, then wait until moto no longer treats the objects
/// as fresh, so that a restore really is in progress for `restore_secs`.
fn glacier_stubs(
    bucket: &str,
    fs_: &Files,
    restore_secs: u64,
    tweak: impl FnOnce(Config) -> Config,
) -> (Arc<MotoServer>, TierMount) {
    let moto = start_moto();
    moto.set_restore_seconds(restore_secs).unwrap();
    let t = TierMount::new(&moto, bucket, fs_, |c| {
        tweak(c.set("store", "storage_class", &q("GLACIER")))
    });
    t.migrate_ok(&["--mode", "stub"]);
    let migrated = Instant::now();
    for (rel, _) in fs_ {
        let st = t.status(rel);
        assert_eq!(st["state"].as_str(), Some("stub"), "{rel}: {st}");
        assert_eq!(st["storage_class"].as_str(), Some("GLACIER"), "{rel}: {st}");
    }
    let fresh = Duration::from_millis(restore_secs * 1000 + 500);
    if let Some(left) = fresh.checked_sub(migrated.elapsed()) {
        std::thread::sleep(left);
    }
    (moto, t)
}

#[test]
fn glacier_on_archived_fail_gives_eagain_once_restores_once_and_recalls_in_the_background() {
    let fs_ = files(&[("cold.bin", 64 * 1024)]);
    let (moto, t) = glacier_stubs("glacier-fail", &fs_, RESTORE_SECS, |c| {
        c.set("recall", "on_archived", &q("fail"))
    });
    let e = errno_of(fs::read(t.m("cold.bin")), "first open of an archived stub");
    assert_eq!(
        e,
        libc::EAGAIN,
        "errno {e}, want EAGAIN\n{}",
        t.daemon_log_tail()
    );
    assert_eq!(t.state("cold.bin"), "restore_pending");
    let e = errno_of(fs::read(t.m("cold.bin")), "second open of an archived stub");
    assert_eq!(e, libc::EAGAIN, "second open: errno {e}, want EAGAIN");
    let kinds = t.kinds("cold.bin");
    assert_eq!(count(&kinds, "RESTORE_REQUESTED"), 1, "history: {kinds:?}");

    let state = t.wait_state("cold.bin", "premigrated", Duration::from_secs(60));
    assert_eq!(
        state,
        "premigrated",
        "not recalled in the background\n{}",
        t.daemon_log_tail()
    );
    assert_bytes(
        "after the background recall",
        &read_ok(&t.m("cold.bin")),
        &fs_[0].1,
    );
    let kinds = t.kinds("cold.bin");
    assert_eq!(count(&kinds, "RESTORE_REQUESTED"), 1, "history: {kinds:?}");
    assert_eq!(
        only(&kinds, &["STUBBED", "RESTORE_REQUESTED", "RECALLED"]),
        ["STUBBED", "RESTORE_REQUESTED", "RECALLED"],
        "history: {kinds:?}"
    );
    assert_eq!(
        restore_posts(&settled_requests(&moto), &t.bucket),
        1,
        "RestoreObject requests at the server"
    );
}

#[test]
fn glacier_on_archived_wait_blocks_the_read_until_restored() {
    let fs_ = files(&[("cold.bin", 64 * 1024)]);
    let (moto, t) = glacier_stubs("glacier-wait", &fs_, RESTORE_SECS, |c| {
        c.set("recall", "on_archived", &q("wait"))
            .set("recall", "wait_timeout", &q("60s"))
    });
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            let p = t.m("cold.bin");
            std::thread::spawn(move || {
                b.wait();
                let t0 = Instant::now();
                (fs::read(&p), t0.elapsed())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (r, took) = h.join().unwrap();
        let got = r.unwrap_or_else(|e| panic!("opener {i}: {e}\n{}", t.daemon_log_tail()));
        assert_bytes(&format!("opener {i}"), &got, &fs_[0].1);
        assert!(
            took >= Duration::from_secs(1),
            "opener {i} did not wait for the restore: {took:?}"
        );
    }
    assert_eq!(t.state("cold.bin"), "premigrated");
    let kinds = t.kinds("cold.bin");
    assert_eq!(count(&kinds, "RESTORE_REQUESTED"), 1, "history: {kinds:?}");
    assert_eq!(
        only(&kinds, &["RESTORE_REQUESTED", "RECALLED"]),
        ["RESTORE_REQUESTED", "RECALLED"],
        "history: {kinds:?}"
    );
    assert_eq!(
        restore_posts(&settled_requests(&moto), &t.bucket),
        1,
        "RestoreObject requests at the server"
    );
}

#[test]
fn glacier_on_archived_wait_times_out_with_etimedout_and_never_restores_twice() {
    let fs_ = files(&[("cold.bin", 16 * 1024)]);
    let (moto, t) = glacier_stubs("glacier-timeout", &fs_, 4, |c| {
        c.set("recall", "on_archived", &q("wait"))
            .set("recall", "wait_timeout", &q("2s"))
    });
    let t0 = Instant::now();
    let e = errno_of(
        fs::read(t.m("cold.bin")),
        "open while the restore takes longer than wait_timeout",
    );
    let took = t0.elapsed();
    assert_eq!(
        e,
        libc::ETIMEDOUT,
        "errno {e}, want ETIMEDOUT\n{}",
        t.daemon_log_tail()
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(15),
        "ETIMEDOUT after {took:?} with wait_timeout 2s"
    );
    assert_eq!(
        fs::symlink_metadata(t.s("cold.bin")).unwrap().len(),
        0,
        "backing file"
    );
    assert!(
        xattr(&t.s("cold.bin"), STUB_XATTR).is_some(),
        "stub record gone"
    );

    // Later opens get the data once the restore is done, without a second restore.
    let t0 = Instant::now();
    let got = loop {
        match fs::read(t.m("cold.bin")) {
            Ok(b) => break b,
            Err(e) => {
                let n = e.raw_os_error();
                assert!(
                    n == Some(libc::ETIMEDOUT) || n == Some(libc::EAGAIN),
                    "later open: {e}"
                );
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "still {e} after 30 s"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    };
    assert_bytes("after the restore", &got, &fs_[0].1);
    let kinds = t.kinds("cold.bin");
    assert_eq!(count(&kinds, "RESTORE_REQUESTED"), 1, "history: {kinds:?}");
    assert_eq!(
        restore_posts(&settled_requests(&moto), &t.bucket),
        1,
        "RestoreObject requests at the server"
    );
}

// ------------------------------------------------------------------------------------------
// 12. Crash safety

const MIGRATE_FAILPOINTS: [&str; 6] = [
    "migrate-after-intent",
    "migrate-after-put",
    "migrate-after-verify",
    "migrate-before-stub",
    "migrate-after-stub-xattr",
    "migrate-after-truncate",
];
const RECALL_FAILPOINTS: [&str; 3] = [
    "recall-after-truncate",
    "recall-after-data",
    "recall-after-premig-xattr",
];

/// On the backing tree, after a crash: each file is either its full original content or a
/// stub (its record in place): never a shorter or altered file posing as complete.
fn assert_backing_consistent(t: &TierMount, files: &Files, fp: &str) {
    for (rel, content) in files {
        let p = t.s(rel);
        let got = fs::read(&p).unwrap();
        if got != *content {
            assert!(
                xattr(&p, STUB_XATTR).is_some(),
                "{fp}: backing {rel} is {} bytes (of {}) and not the original, with no stub record",
                got.len(),
                content.len()
            );
        }
    }
}

/// Runs `f` for each failpoint, catching its panics: the failpoints that failed, each with
/// its message (so that one run reports all of them).
fn failures_at(points: &[&str], f: impl Fn(&str)) -> Vec<String> {
    let mut failed = Vec::new();
    for fp in points {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(fp))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{fp}: {msg}"));
        }
    }
    failed
}

/// The daemon died at failpoint `fp`: the dead mount detached, the backing tree consistent.
fn died_at(t: &mut TierMount, fs_: &Files, fp: &str) {
    assert!(
        t.wait_dead(Duration::from_secs(15)),
        "{fp}: the daemon did not die at the failpoint (the mount still answers)\n{}",
        t.daemon_log_tail()
    );
    t.detach_dead();
    assert_backing_consistent(t, fs_, fp);
}

#[test]
fn a_crash_at_any_step_of_migrate_or_recall_leaves_every_file_readable() {
    let moto = start_moto();
    let fs_ = files(&[
        ("big.bin", 256 * 1024),
        ("small.bin", 3000),
        ("d/mid.bin", 40 * 1024),
    ]);
    // Every failpoint is tried; the failures of all of them are reported together.
    let points: Vec<&str> = MIGRATE_FAILPOINTS
        .iter()
        .chain(&RECALL_FAILPOINTS)
        .copied()
        .collect();
    let failed = failures_at(&points, |fp| crash_at(&moto, &fs_, fp));
    assert!(
        failed.is_empty(),
        "{} of {} failpoints failed:\n{}",
        failed.len(),
        MIGRATE_FAILPOINTS.len() + RECALL_FAILPOINTS.len(),
        failed.join("\n")
    );
}

/// One crash: the daemon dies at `fp` during a migrate (migrate-*) or during the recall
/// of a stub (recall-*); then it is remounted without the failpoint and checked.
fn crash_at(moto: &Arc<MotoServer>, fs_: &Files, fp: &str) {
    // The cold restart: the mount is left dead and mounted again.
    let mut t = TierMount::new(moto, &format!("crash-{fp}"), fs_, |c| {
        c.set("mount", "restart_on_crash", "false")
    });
    let migrate = fp.starts_with("migrate-");
    if !migrate {
        t.migrate_ok(&["--mode", "stub"]);
    }
    let shown_before: BTreeMap<String, Shown> = fs_
        .iter()
        .map(|(r, _)| (r.clone(), shown(&t.m(r))))
        .collect();
    t.umount();
    t.mount_with_env(&[(FAILPOINT_ENV, fp)]);
    if migrate {
        let out = t.cli(&["migrate", t.mnt_str().as_str(), "--mode", "stub"]);
        assert!(
            !out.status.success(),
            "{fp}: migrate succeeded although the daemon was to die: {}",
            show(&out)
        );
    } else {
        let r = fs::read(t.m("big.bin"));
        assert!(
            r.is_err(),
            "{fp}: the read succeeded although the daemon was to die"
        );
    }
    died_at(&mut t, fs_, fp);

    t.remount();
    let mut shown_after = BTreeMap::new();
    for (rel, _) in fs_ {
        let st = t.state(rel);
        assert!(
            ["resident", "premigrated", "stub"].contains(&st.as_str()),
            "{fp}: {rel} is {st} after restart"
        );
        shown_after.insert(rel.clone(), shown(&t.m(rel)));
    }
    assert_all_read_back(&t, fs_);
    // Attributes as shown right after the restart, before any recall.
    for (rel, _) in fs_ {
        assert_eq!(
            shown_after[rel], shown_before[rel],
            "{fp}: {rel}: attributes through the mount after the restart (left) vs before the crash (right)"
        );
    }
    if migrate {
        // Tiering goes on from there.
        t.migrate_ok(&["--mode", "stub"]);
        for (rel, _) in fs_ {
            assert_eq!(t.state(rel), "stub", "{fp}: {rel} after migrating again");
        }
        assert_all_read_back(&t, fs_);
        assert_bucket_is_exactly_what_is_referenced(&mut t, fs_, fp);
    } else {
        assert_eq!(
            t.state("big.bin"),
            "premigrated",
            "{fp}: after reading it again"
        );
    }
}

/// Many small stubs and a few that are not small or plain, for the bulk recall: 150 files
/// in three directories (more than two of its batches), one of 9 MiB (recalled by itself:
/// larger than a batch takes) and one sparse file.
fn bulk_files() -> Files {
    let mut spec: Vec<(String, usize)> = (0..150)
        .map(|i| (format!("d{}/f{i:03}.bin", i % 3), 1000 + 997 * i))
        .collect();
    spec.push(("big.bin".into(), 9 * MIB));
    let spec: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    files(&spec)
}

/// `coldtier recall -r` of many small stubs: each comes back byte-identical with one GET
/// of its object, and each file's history ends with RECALL_STARTED then RECALLED, the
/// large file included (which goes the way of a recall of one file).
#[test]
fn a_bulk_recall_gets_each_object_once_and_records_each_recall() {
    let moto = start_moto();
    let fs_ = bulk_files();
    let t = TierMount::new(&moto, "bulk", &fs_, |c| c);
    // A sparse file: its data extents only (recalled by itself too).
    let sparse = t.src.join("sparse.bin");
    {
        let f = fs::File::create(&sparse).unwrap();
        f.set_len(4 * MIB as u64).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[7u8; 70_000], MIB as u64).unwrap();
    }
    let sparse_body = fs::read(&sparse).unwrap();
    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(t.state("d0/f000.bin"), "stub");
    assert_eq!(t.state("sparse.bin"), "stub");
    let before = settled_requests(&moto);
    let out = t.ok(&["recall", "-r", "--json", t.mnt_str().as_str()]);
    let after = settled_requests(&moto);
    let gets = data_gets(&after, "bulk", None) - data_gets(&before, "bulk", None);
    // The sparse file is one GET too (its extents are one object).
    assert_eq!(
        gets,
        fs_.len() + 1,
        "one GET per object for {} stubs",
        fs_.len() + 1
    );
    let lines = parse_lines(&out);
    let recalled = lines
        .iter()
        .filter(|l| l["recalled"].as_bool() == Some(true))
        .count();
    assert_eq!(recalled, fs_.len() + 1, "{out}");
    for (rel, content) in &fs_ {
        assert_bytes(rel, &fs::read(t.s(rel)).unwrap(), content);
    }
    assert_bytes("sparse.bin", &fs::read(&sparse).unwrap(), &sparse_body);
    for rel in [
        "d0/f000.bin",
        "d1/f100.bin",
        "d2/f149.bin",
        "big.bin",
        "sparse.bin",
    ] {
        assert_eq!(t.state(rel), "premigrated", "{rel}");
        let kinds: Vec<String> = t
            .history(rel)
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            kinds[kinds.len() - 2..],
            ["RECALL_STARTED".to_string(), "RECALLED".to_string()],
            "{rel}: {kinds:?}"
        );
    }
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "verify after the bulk recall: {v}");
    // A second bulk recall finds nothing to do and fetches nothing.
    let out = t.ok(&["recall", "-r", "--json", t.mnt_str().as_str()]);
    assert!(
        parse_lines(&out)
            .iter()
            .all(|l| l["recalled"].as_bool() == Some(false)),
        "{out}"
    );
    assert_eq!(
        data_gets(&settled_requests(&moto), "bulk", None),
        data_gets(&after, "bulk", None)
    );
}

/// A recall that panics in a bulk recall (a bug's stand-in: failpoint `NAME:panic`) is a
/// failure of its file in the report, never a file missing from it, and leaves no recall
/// in flight behind it: the file stays a stub, and recalls once the daemon is healthy.
#[test]
fn a_panicking_recall_in_a_bulk_recall_is_reported_and_leaves_nothing_in_flight() {
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 3000), ("d/b.bin", 5000), ("d/c.bin", 7000)]);
    let mut t = TierMount::new(&moto, "bulk-panic", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    t.umount();
    t.mount_with_env(&[(FAILPOINT_ENV, "recall-after-truncate:panic")]);
    let out = t.cli(&["recall", "-r", "--json", t.mnt_str().as_str()]);
    assert!(!out.status.success(), "{}", show(&out));
    let lines = parse_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        lines.len(),
        fs_.len(),
        "one result per file: {}",
        show(&out)
    );
    for l in &lines {
        assert!(l["error"].is_string(), "a panicked recall reported as {l}");
    }
    let listed = t.ok(&["recalls", t.mnt_str().as_str(), "--json"]);
    assert!(
        parse_lines(&listed).is_empty(),
        "recalls left in flight: {listed}"
    );
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel}");
    }
    t.umount();
    t.mount_with_env(&[]);
    t.ok(&["recall", "-r", t.mnt_str().as_str()]);
    for (rel, content) in &fs_ {
        assert_bytes(rel, &fs::read(t.s(rel)).unwrap(), content);
    }
}

/// A kill at each step of a bulk recall, in the middle of a batch (`after=N`), and after a
/// batch's switches before its RECALLED records: after a restart every file reads back byte-identical, `verify` finds nothing, and a second
/// bulk recall brings back the rest, each file's history ending with RECALLED.
#[test]
fn a_kill_at_each_step_of_a_bulk_recall_leaves_every_file_readable() {
    let moto = start_moto();
    let fs_ = files(
        &(0..90)
            .map(|i| (format!("d{}/f{i:02}.bin", i % 2), 500 + 311 * i))
            .collect::<Vec<_>>()
            .iter()
            .map(|(p, n)| (p.as_str(), *n))
            .collect::<Vec<_>>(),
    );
    let points = [
        "recall-after-truncate:after=20",
        "recall-after-data:after=20",
        "recall-after-premig-xattr:after=20",
        // Files switched, the batch's RECALLED not written.
        "bulk-recall-before-records:after=1",
    ];
    let failed = failures_at(&points, |fp| bulk_crash_at(&moto, &fs_, fp));
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn bulk_crash_at(moto: &Arc<MotoServer>, fs_: &Files, fp: &str) {
    let name = fp.split(':').next().unwrap();
    let mut t = TierMount::new(moto, &format!("bulk-{name}"), fs_, |c| {
        c.set("mount", "restart_on_crash", "false")
    });
    t.migrate_ok(&["--mode", "stub"]);
    t.umount();
    t.mount_with_env(&[(FAILPOINT_ENV, fp)]);
    let out = t.cli(&["recall", "-r", t.mnt_str().as_str()]);
    assert!(
        !out.status.success(),
        "{fp}: the bulk recall succeeded although the daemon was to die: {}",
        show(&out)
    );
    died_at(&mut t, fs_, fp);
    t.remount();
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{fp}: verify after the restart: {v}");
    t.ok(&["recall", "-r", t.mnt_str().as_str()]);
    for (rel, content) in fs_ {
        assert_bytes(rel, &fs::read(t.s(rel)).unwrap(), content);
    }
    assert_all_read_back(&t, fs_);
    for rel in ["d0/f00.bin", "d1/f45.bin", "d0/f88.bin"] {
        assert_eq!(t.state(rel), "premigrated", "{fp}: {rel}");
        let h = t.history(rel);
        assert_eq!(
            h.last().and_then(|e| e["kind"].as_str()),
            Some("RECALLED"),
            "{fp}: {rel}: {h:?}"
        );
    }
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{fp}: verify after the second bulk recall: {v}");
}

// ------------------------------------------------------------------------------------------
// 13. JSON output

#[test]
fn status_and_history_json_have_the_documented_keys() {
    let moto = start_moto();
    let fs_ = files(&[("r.bin", 3072), ("s.bin", 20 * 1024), ("sub/x.bin", 5000)]);
    let t = TierMount::new(&moto, "json", &fs_, |c| {
        c.set("policy", "exclude", "[\"r.bin\"]")
    });
    t.migrate_ok(&["--mode", "stub"]);

    let keys = [
        "path",
        "state",
        "size",
        "pinned",
        "object_key",
        "storage_class",
    ];
    let r = t.status("r.bin");
    for k in keys {
        assert!(r.get(k).is_some(), "status --json lacks {k}: {r}");
    }
    assert_eq!(r["path"].as_str(), Some(t.ms("r.bin").as_str()), "{r}");
    assert_eq!(r["state"].as_str(), Some("resident"), "{r}");
    assert_eq!(r["size"].as_u64(), Some(3072), "{r}");
    assert_eq!(r["pinned"].as_bool(), Some(false), "{r}");
    assert!(
        r["object_key"].is_null(),
        "a never copied file has an object key: {r}"
    );

    let s = t.status("s.bin");
    for k in keys {
        assert!(s.get(k).is_some(), "status --json lacks {k}: {s}");
    }
    assert_eq!(s["path"].as_str(), Some(t.ms("s.bin").as_str()), "{s}");
    assert_eq!(s["state"].as_str(), Some("stub"), "{s}");
    assert_eq!(s["size"].as_u64(), Some(20 * 1024), "{s}");
    assert_eq!(s["pinned"].as_bool(), Some(false), "{s}");
    split_key(
        s["object_key"]
            .as_str()
            .unwrap_or_else(|| panic!("stub without object_key: {s}")),
    );
    assert_eq!(s["storage_class"].as_str(), Some("STANDARD"), "{s}");

    // Several paths: one line each, in order; -r: one line per file.
    let text = t.ok(&[
        "status",
        "--json",
        t.ms("s.bin").as_str(),
        t.ms("r.bin").as_str(),
    ]);
    let lines = parse_lines(&text);
    let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(
        paths,
        [t.ms("s.bin"), t.ms("r.bin")],
        "status of two paths: {text}"
    );
    let text = t.ok(&["status", "-r", "--json", t.mnt_str().as_str()]);
    let lines = parse_lines(&text);
    for (rel, content) in &fs_ {
        let l = lines
            .iter()
            .find(|l| l["path"].as_str() == Some(t.ms(rel).as_str()))
            .unwrap_or_else(|| panic!("status -r lacks {rel}: {text}"));
        for k in keys {
            assert!(l.get(k).is_some(), "status -r --json lacks {k}: {l}");
        }
        assert_eq!(l["size"].as_u64(), Some(content.len() as u64), "{l}");
    }

    let events = t.history("s.bin");
    assert!(events.len() >= 3, "history of a stub: {events:?}");
    let mut last = 0;
    for e in &events {
        for k in [
            "id",
            "time_ns",
            "kind",
            "path",
            "file_id",
            "config_version",
            "detail",
        ] {
            assert!(e.get(k).is_some(), "history --json line lacks {k}: {e}");
        }
        let id = e["id"].as_i64().unwrap_or_else(|| panic!("id: {e}"));
        assert!(id > last, "ids not increasing: {events:?}");
        last = id;
        if let Some(fid) = s["file_id"].as_str() {
            assert_eq!(
                e["file_id"].as_str(),
                Some(fid),
                "event of another file: {e}"
            );
        }
    }
    let plain = t.ok(&["history", t.ms("s.bin").as_str()]);
    assert!(plain.contains("STUBBED"), "plain history: {plain}");
    assert_spec_key_layout(s["object_key"].as_str().unwrap());
}

/// The catalog follows the name a hard-linked file keeps: after `ln f g; rm f` (or the
/// other name made behind the mount, in another directory) `find` and the events name
/// the name that is left, and the file reads back byte-identical through it.
#[test]
fn a_hard_linked_file_is_known_by_the_name_that_is_left() {
    let moto = start_moto();
    let fs_ = files(&[("a/f.bin", 30_000), ("b/h.bin", 31_000)]);
    let t = TierMount::new(&moto, "hardlinks", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let find = |state: &str| -> Vec<String> {
        parse_lines(&t.ok(&["find", &t.mnt_str(), "--state", state, "--json"]))
            .into_iter()
            .map(|r| r["path"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // Through the mount: ln, then rm of the first name.
    fs::hard_link(t.m("a/f.bin"), t.m("a/g.bin")).unwrap();
    fs::remove_file(t.m("a/f.bin")).unwrap();
    assert!(
        find("stub").iter().any(|p| p.ends_with("a/g.bin")),
        "{:?}",
        find("stub")
    );
    assert!(!find("stub").iter().any(|p| p.ends_with("a/f.bin")));
    let kinds = t.kinds("a/g.bin");
    assert!(kinds.contains(&"LINKED".to_string()), "{kinds:?}");
    assert_eq!(count(&kinds, "DELETED"), 0, "{kinds:?}");
    assert_eq!(t.state("a/g.bin"), "stub");
    // The other name made behind the mount, in another directory.
    fs::create_dir_all(t.s("c")).unwrap();
    fs::hard_link(t.s("b/h.bin"), t.s("c/k.bin")).unwrap();
    fs::remove_file(t.m("b/h.bin")).unwrap();
    let t0 = Instant::now();
    while !find("stub").iter().any(|p| p.ends_with("c/k.bin")) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}\n{}",
            find("stub"),
            t.daemon_log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_bytes("a/g.bin", &read_ok(&t.m("a/g.bin")), &fs_[0].1);
    assert_bytes("c/k.bin", &read_ok(&t.m("c/k.bin")), &fs_[1].1);
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{v}");
}

/// `coldtier jobs workers` lists the daemon's background workers (one runner: the policy
/// and catalog backup schedulers, the tagger), and `jobs cancel --worker` of an id no
/// worker has fails saying so, with exit code 1.
#[test]
fn jobs_workers_lists_the_background_workers_and_cancel_refuses_an_unknown_one() {
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 4096)]);
    let t = TierMount::new(&moto, "workers", &fs_, |c| c);
    let mnt = t.mnt_str();
    let out = t.ok(&["jobs", "workers", &mnt, "--json"]);
    let workers = parse_lines(&out);
    for name in ["policy scheduler", "catalog backup scheduler", "tagger"] {
        let w = workers
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("jobs workers --json lists no {name}: {out}"));
        assert_eq!(w["state"], "idle", "{w}");
        assert_eq!(w["errors"], 0, "{w}");
        assert!(w["id"].is_u64() && w["last_error"].is_null(), "{w}");
    }
    let text = t.ok(&["jobs", "workers", &mnt]);
    let head = text.lines().next().unwrap_or_default();
    for col in [
        "ID",
        "NAME",
        "STATE",
        "RUNS",
        "ERRORS",
        "LAST ERROR",
        "STATUS",
    ] {
        assert!(head.contains(col), "no {col} column: {text}");
    }
    assert!(text.contains("catalog backup scheduler"), "{text}");

    let unknown = workers
        .iter()
        .filter_map(|w| w["id"].as_u64())
        .max()
        .unwrap()
        + 1000;
    let out = t.cli(&["jobs", "cancel", &mnt, "--worker", &unknown.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no worker {unknown} is running")) && err.contains("jobs workers"),
        "{err}"
    );
    // An idle worker: nothing to stop, and it goes on.
    let tagger = workers.iter().find(|w| w["name"] == "tagger").unwrap()["id"]
        .as_u64()
        .unwrap();
    let text = t.ok(&["jobs", "cancel", &mnt, "--worker", &tagger.to_string()]);
    assert!(text.contains("tagger") && text.contains("idle"), "{text}");
    let again = parse_lines(&t.ok(&["jobs", "workers", &mnt, "--json"]));
    assert!(again.iter().any(|w| w["id"] == tagger), "{again:?}");
    // --worker and --id name two different things: bad input.
    let out = t.cli(&["jobs", "cancel", &mnt, "--worker", "1", "--id", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

// ------------------------------------------------------------------------------------------
// Last use under atime options

/// A tmpfs mounted over a directory for one test, lazily unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, opts: &str) -> Self {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "none"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs -o {opts} {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn atime_of(p: &Path) -> i64 {
    fs::metadata(p).unwrap().atime()
}

/// `noatime` on the coldtier mount holds against a backing file system that updates atime
/// on every read (strictatime): reads through the mount, passthrough ones included, move
/// no atime, as on a native noatime mount. The policy still sees those files as used: its
/// last use is the latest of atime, mtime and the last open through the mount the daemon
/// saw (`used` in the catalog), so an atime that never moves (this mount, or a backing file
/// system mounted noatime) does not make a file in use look cold.
#[test]
fn noatime_holds_through_the_mount_and_opens_still_count_as_uses() {
    let moto = start_moto();
    let mut t = TierMount::prepared(&moto, &moto.endpoint, "last-use", &vec![], |c| {
        c.set("policy", "atime_older_than", &q("30d"))
    });
    let backing = Tmpfs::mount(&t.src, "strictatime,mode=0755");
    let old = 1_700_000_000; // 2023, long before "30 days ago"
    for name in ["read-through-mount", "untouched", "read-natively"] {
        fs::write(t.src.join(name), vec![b'x'; 8192]).unwrap();
        set_times(&t.src.join(name), old, 0);
    }
    let out = t.try_mount(&[], &["-o", "noatime"]);
    assert!(out.status.success(), "mount -o noatime: {}", show(&out));

    // Natively, this backing file system moves atime at every read ...
    fs::read(t.src.join("read-natively")).unwrap();
    assert!(
        atime_of(&t.src.join("read-natively")) > old,
        "strictatime tmpfs kept atime"
    );
    // ... and through the noatime mount it does not (twice: the second open is served by
    // kernel passthrough from the same backing file).
    for _ in 0..2 {
        assert_eq!(
            fs::read(t.m("read-through-mount")).unwrap(),
            vec![b'x'; 8192]
        );
    }
    assert_eq!(
        atime_of(&t.src.join("read-through-mount")),
        old,
        "backing atime moved"
    );
    assert_eq!(
        atime_of(&t.m("read-through-mount")),
        old,
        "atime through the mount moved"
    );

    // The policy: only the file nobody used is a candidate.
    let v = t.migrate_ok(&["--dry-run"]);
    let planned = planned_paths(&v);
    assert_eq!(planned.len(), 1, "planned: {planned:?} (summary {v})");
    assert!(
        matches_rel(&planned[0], "untouched"),
        "planned: {planned:?}"
    );
    // The open is in the catalog: it counts after a remount too.
    t.umount();
    t.mount_with_env(&[]);
    let v = t.migrate_ok(&["--dry-run"]);
    let planned = planned_paths(&v);
    assert_eq!(
        planned.len(),
        1,
        "after a remount, planned: {planned:?} (summary {v})"
    );
    t.umount();
    drop(backing);
}

/// `strictatime` on the coldtier mount holds against a relatime backing file system: a read
/// through the mount moves an atime that is already later than mtime and ctime and recent,
/// which the backing file system's own relatime leaves (checked natively beside it).
#[test]
fn strictatime_holds_through_the_mount_over_a_relatime_source() {
    let moto = start_moto();
    let mut t = TierMount::prepared(&moto, &moto.endpoint, "strict-atime", &vec![], |c| c);
    let _backing = Tmpfs::mount(&t.src, "relatime,mode=0755");
    let atime_ns = |p: &Path| {
        let md = fs::metadata(p).unwrap();
        md.atime() as i128 * 1_000_000_000 + md.atime_nsec() as i128
    };
    let mut first = Vec::new();
    for name in ["native", "through-mount"] {
        fs::write(t.src.join(name), b"data").unwrap();
        // One read: atime is now later than mtime and ctime, and recent: relatime moves
        // it no more today.
        fs::read(t.src.join(name)).unwrap();
        first.push(atime_ns(&t.src.join(name)));
    }
    let out = t.try_mount(&[], &["-o", "strictatime"]);
    assert!(out.status.success(), "mount -o strictatime: {}", show(&out));
    // The clock moves on (tmpfs times have a tick's granularity).
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::read(t.src.join("native")).unwrap();
    assert_eq!(
        atime_ns(&t.src.join("native")),
        first[0],
        "relatime moved a recent atime"
    );
    fs::read(t.m("through-mount")).unwrap();
    assert!(
        atime_ns(&t.src.join("through-mount")) > first[1],
        "strictatime did not move atime"
    );
    t.umount();
}

/// `coldtier migrate PATH` with a path inside the mount runs the policy on that tree only
/// (a directory, or one file); the mount point runs it on everything.
#[test]
fn migrate_of_a_path_inside_the_mount_scans_that_tree_only() {
    let moto = start_moto();
    let fs_ = files(&[
        ("a/x.bin", 20_000),
        ("a/y.bin", 20_000),
        ("b/z.bin", 20_000),
        ("c.bin", 20_000),
    ]);
    let t = TierMount::new(&moto, "subtree", &fs_, |c| c);
    let run = |path: &str, extra: &[&str]| -> Value {
        let p = t.m(path);
        let mut args = vec!["migrate", p.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let out = t.cli(&args);
        assert!(out.status.success(), "{}", show(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = run("a", &["--mode", "stub"]);
    assert_eq!(
        (v["scanned"].as_u64(), v["stubbed"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    for (rel, want) in [
        ("a/x.bin", "stub"),
        ("a/y.bin", "stub"),
        ("b/z.bin", "resident"),
        ("c.bin", "resident"),
    ] {
        assert_eq!(t.state(rel), want, "{rel} after migrate a");
    }
    let v = run("b/z.bin", &["--dry-run"]);
    assert_eq!(
        (v["scanned"].as_u64(), v["candidates"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert!(matches_rel(&planned_paths(&v)[0], "b/z.bin"), "{v}");
    let v = run("", &["--mode", "stub"]);
    assert_eq!(
        v["stubbed"].as_u64(),
        Some(2),
        "the rest, from the mount point: {v}"
    );
    assert_eq!(t.state("c.bin"), "stub");
}

/// `coldtier release --dry-run` says what a release would do and changes nothing: a
/// premigrated file "would release" with the space it would free, a pinned one is
/// refused as a release would refuse it, a stub is "already a stub".
#[test]
fn release_dry_run_reports_and_changes_nothing() {
    let moto = start_moto();
    let fs_ = files(&[
        ("p.bin", 30 * 1024),
        ("q.bin", 30 * 1024),
        ("s.bin", 30 * 1024),
    ]);
    let t = TierMount::new(&moto, "release-dry", &fs_, |c| c);
    t.migrate_ok(&["--mode", "copy-only"]);
    t.ok(&["release", t.ms("s.bin").as_str()]);
    t.ok(&["pin", t.ms("p.bin").as_str()]);
    let out = t.cli(&["release", "--dry-run", "--json", "-r", t.mnt_str().as_str()]);
    assert!(
        !out.status.success(),
        "a pinned file is an error, as in a release: {}",
        show(&out)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |name: &str| -> Value {
        rows.iter()
            .find(|r| r["path"].as_str().unwrap_or("").ends_with(name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
    };
    let q = row("q.bin");
    assert_eq!(q["released"], false, "{q}");
    assert_eq!(q["note"], "would release", "{q}");
    assert!(q["bytes_freed"].as_u64().unwrap() >= 30 * 1024, "{q}");
    let p = row("p.bin");
    assert!(p["error"].as_str().unwrap_or("").contains("pinned"), "{p}");
    assert_eq!(row("s.bin")["note"], "already a stub");
    for (rel, want) in [
        ("p.bin", "premigrated"),
        ("q.bin", "premigrated"),
        ("s.bin", "stub"),
    ] {
        assert_eq!(t.state(rel), want, "{rel} after release --dry-run");
    }
    t.ok(&["release", t.ms("q.bin").as_str()]);
    assert_eq!(t.state("q.bin"), "stub");
}

/// `coldtier mounts --json`: every coldtier mount, with what its daemon says: source,
/// pid, version, config file and version in force, store, catalog.
#[test]
fn coldtier_mounts_lists_the_mount_and_its_daemon() {
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 1000)]);
    let t = TierMount::new(&moto, "mounts-list", &fs_, |c| c);
    let out = t.cli(&["mounts", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let me = rows
        .iter()
        .find(|r| r["mountpoint"].as_str() == Some(t.mnt.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} not listed: {rows:?}", t.mnt.display()));
    assert_eq!(me["state"], "serving", "{me}");
    assert_eq!(me["source"].as_str(), t.src.to_str(), "{me}");
    assert_eq!(me["config"].as_str(), t.config_path.to_str(), "{me}");
    assert_eq!(me["catalog"].as_str(), t.catalog.to_str(), "{me}");
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"), "{me}");
    assert!(me["config_version"].as_i64() >= Some(1), "{me}");
    assert!(
        me["store"].as_str().unwrap_or("").contains("mounts-list"),
        "{me}"
    );
    assert!(me["pid"].as_u64().is_some_and(|p| p > 1), "{me}");
    let text = String::from_utf8_lossy(&t.cli(&["mounts"]).stdout).to_string();
    assert!(
        text.contains(t.mnt.to_str().unwrap()) && text.contains("catalog"),
        "{text}"
    );
}

/// `coldtier archive` copies (and with `--release` stubs) what it is given whatever the
/// policy says of age and size (`lfs hsm_archive`/`hsm_release`): a policy that takes
/// nothing (ten years idle, 1 MiB at least) still lets the admin archive a tree and a small
/// file by hand; a pinned file and an excluded one stay as they are and are reported; a
/// file not named is not touched; a directory without -r is refused.
#[test]
fn archive_takes_named_files_whatever_their_age_and_reports_pins_and_excludes() {
    let moto = start_moto();
    let fs_ = files(&[
        ("d/a.bin", 20_000),
        ("d/b.bin", 20_000),
        ("d/sub/c.bin", 20_000),
        ("d/keep.log", 20_000),
        ("d/pinned.bin", 20_000),
        ("e.bin", 100),
        ("other.bin", 20_000),
    ]);
    let t = TierMount::new(&moto, "archive", &fs_, |c| {
        c.set("policy", "atime_older_than", &q("3650d"))
            .set("policy", "min_size", &q("1MiB"))
            .set("policy", "exclude", r#"["*.log"]"#)
    });
    t.ok(&["pin", t.ms("d/pinned.bin").as_str()]);
    let v = t.migrate_ok(&["--dry-run"]);
    assert_eq!(
        v["candidates"].as_u64(),
        Some(0),
        "the policy takes nothing: {v}"
    );
    let archive = |args: &[&str]| -> (bool, Value) {
        let mut a = vec!["archive", "--json"];
        a.extend_from_slice(args);
        let out = t.cli(&a);
        let v =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
        (out.status.success(), v)
    };
    let skipped = |v: &Value| -> Vec<(String, String)> {
        let mut s: Vec<(String, String)> = v["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["path"].as_str().unwrap().to_owned(),
                    k["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        s.sort();
        s
    };
    let pair = |p: &str, k: &str| (p.to_owned(), k.to_owned());

    // A directory without -r: refused (exit 1), nothing done.
    let (ok, v) = archive(&[t.ms("d").as_str()]);
    assert!(!ok, "{v}");
    assert_eq!(skipped(&v), vec![pair("d", "directory")], "{v}");
    assert_eq!(v["copied"].as_u64(), Some(0), "{v}");

    // A dry run: what would be copied, what is left alone and why.
    let (ok, v) = archive(&[
        "-r",
        "--dry-run",
        t.ms("d").as_str(),
        t.ms("e.bin").as_str(),
    ]);
    assert!(ok, "{v}");
    let mut planned = planned_paths(&v);
    planned.sort();
    assert_eq!(planned.len(), 4, "{v}");
    for (p, rel) in planned
        .iter()
        .zip(["d/a.bin", "d/b.bin", "d/sub/c.bin", "e.bin"])
    {
        assert!(matches_rel(p, rel), "{p} vs {rel}: {v}");
    }
    assert_eq!(
        skipped(&v),
        vec![
            pair("d/keep.log", "excluded"),
            pair("d/pinned.bin", "pinned")
        ],
        "{v}"
    );
    assert_eq!(
        v["bytes_to_free"].as_u64(),
        Some(0),
        "a copy frees nothing: {v}"
    );
    let (_, v) = archive(&["-r", "--dry-run", "--release", t.ms("d").as_str()]);
    assert!(
        v["bytes_to_free"].as_u64().unwrap() >= 3 * 20_000,
        "three stubs would free their blocks: {v}"
    );
    for rel in ["d/a.bin", "e.bin", "d/keep.log"] {
        assert_eq!(t.state(rel), "resident", "{rel} after dry runs");
    }

    // The copy.
    let (ok, v) = archive(&["-r", t.ms("d").as_str(), t.ms("e.bin").as_str()]);
    assert!(ok, "{v}");
    assert_eq!(
        (v["copied"].as_u64(), v["stubbed"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );
    assert_eq!(v["mode"], "copy-only", "{v}");
    for (rel, want) in [
        ("d/a.bin", "premigrated"),
        ("d/b.bin", "premigrated"),
        ("d/sub/c.bin", "premigrated"),
        ("e.bin", "premigrated"),
        ("d/keep.log", "resident"),
        ("d/pinned.bin", "resident"),
        ("other.bin", "resident"),
    ] {
        assert_eq!(t.state(rel), want, "{rel} after archive");
    }

    // --release of one file, then of the tree: stubs, the rest reported.
    let (ok, v) = archive(&["--release", t.ms("d/a.bin").as_str()]);
    assert!(ok, "{v}");
    assert_eq!(v["stubbed"].as_u64(), Some(1), "{v}");
    assert_eq!(t.state("d/a.bin"), "stub");
    let (ok, v) = archive(&["-r", "--release", t.ms("d").as_str()]);
    assert!(ok, "{v}");
    assert_eq!(v["stubbed"].as_u64(), Some(2), "{v}");
    assert_eq!(
        skipped(&v),
        vec![
            pair("d/a.bin", "already"),
            pair("d/keep.log", "excluded"),
            pair("d/pinned.bin", "pinned")
        ],
        "{v}"
    );
    assert!(v["bytes_freed"].as_u64().unwrap() >= 2 * 20_000, "{v}");
    for (rel, want) in [
        ("d/b.bin", "stub"),
        ("d/sub/c.bin", "stub"),
        ("e.bin", "premigrated"),
    ] {
        assert_eq!(t.state(rel), want, "{rel} after archive --release");
    }
    // Every byte comes back through the mount.
    for (rel, data) in fs_.iter() {
        assert_bytes(rel, &std::fs::read(t.m(rel)).unwrap(), data);
    }
    // The runs are jobs of their own kind.
    let jobs = t.ok(&["jobs", t.mnt_str().as_str()]);
    assert!(jobs.contains("archive"), "{jobs}");
    // A path that does not exist: refused with one line naming it (exit 2).
    let out = t.cli(&["archive", t.ms("nope.bin").as_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope.bin"),
        "{}",
        show(&out)
    );
}

/// `coldtier ARGS` on a pseudo-terminal (script(1)): what a user at a terminal sees,
/// stdout and stderr together, the progress bar included. Its exit status too.
fn on_tty(args: &[&str]) -> (bool, String) {
    let cmd = std::iter::once(common::bin().display().to_string())
        .chain(args.iter().map(|a| q(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What a user at a terminal sees: migrate's bar appears and ends full however fast the
/// run (204 small files); `recall -r` and `release -r` draw a bar of the files that need
/// the work only (not every file below the path) and end with a summary, per-file lines
/// with -v, nothing with -q.
#[test]
fn progress_bars_count_the_work_and_bulk_commands_end_with_a_summary() {
    let moto = start_moto();
    let names: Vec<String> = (0..204).map(|i| format!("d/f{i:03}.bin")).collect();
    let spec: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 2000)).collect();
    let fs_ = files(&spec);
    let t = TierMount::new(&moto, "bars", &fs_, |c| c);
    let mnt = t.mnt_str();
    let (ok, out) = on_tty(&["migrate", mnt.as_str(), "--mode", "copy-only"]);
    assert!(ok, "{out}");
    assert!(out.contains("[########################] 100%"), "{out}");
    assert!(out.contains("204/204 files"), "{out}");

    // Release three of them: the bar counts 204 premigrated files the first time...
    let d = t.ms("d");
    let (ok, out) = on_tty(&["release", "-r", d.as_str(), "--dry-run"]);
    assert!(ok, "{out}");
    assert!(out.contains("would release 204 files"), "{out}");
    for n in &names[..3] {
        t.ok(&["release", t.ms(n).as_str()]);
    }
    // ... and the recall of the tree counts the three stubs, not the 204 files.
    let (ok, out) = on_tty(&["recall", "-r", d.as_str()]);
    assert!(ok, "{out}");
    assert!(out.contains("3/3 files"), "{out}");
    assert!(
        out.contains("recalled 3 files (5.9 KiB), 201 local already, 0 failed"),
        "{out}"
    );
    assert!(
        !out.contains("recalled /"),
        "no line per file without -v: {out}"
    );

    for n in &names[..2] {
        t.ok(&["release", t.ms(n).as_str()]);
    }
    let (ok, out) = on_tty(&["recall", "-r", "-v", d.as_str()]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("recalled /").count(), 2, "{out}");
    assert_eq!(out.matches(": data is local already").count(), 202, "{out}");
    assert!(out.contains("recalled 2 files"), "{out}");

    t.ok(&["release", t.ms(&names[0]).as_str()]);
    let (ok, out) = on_tty(&["recall", "-r", "-q", d.as_str()]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "", "-q prints nothing: {out:?}");
    assert_eq!(t.state(&names[0]), "premigrated");
    // release -r: the summary says what it freed.
    let (ok, out) = on_tty(&["release", "-r", d.as_str()]);
    assert!(ok, "{out}");
    assert!(out.contains("204/204 files"), "{out}");
    assert!(out.contains("released 204 files (freed "), "{out}");
    // An error still reaches the user with -q, and the exit status says so.
    let (ok, out) = on_tty(&["recall", "-q", t.ms("d").as_str()]);
    assert!(!ok, "{out}");
    assert!(out.contains("is a directory (use -r)"), "{out}");
}

/// One object key, printed one way everywhere in text: the key as the bucket lists it
/// (the store's prefix included) in `status`, `find`, `history` and `events`; `--json` of
/// history and events keeps the detail as recorded (relative to the prefix, under the hash
/// chain). The jobs table fits 100 columns.
#[test]
fn object_keys_read_the_same_in_every_report_and_jobs_fits_100_columns() {
    let moto = start_moto();
    let fs_ = files(&[("k/a.bin", 30_000)]);
    let t = TierMount::new(&moto, "keys", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let key = t.status("k/a.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with(&format!("{PREFIX}/data/")), "{key}");
    let mnt = t.mnt_str();
    let status = t.ok(&["status", t.ms("k/a.bin").as_str()]);
    let find = t.ok(&["find", mnt.as_str(), "--state", "stub", "--json"]);
    let history = t.ok(&["history", t.ms("k/a.bin").as_str()]);
    let events = t.ok(&["events", mnt.as_str(), "--type", "STUBBED"]);
    for (what, text) in [
        ("status", &status),
        ("find", &find),
        ("history", &history),
        ("events", &events),
    ] {
        assert!(text.contains(&key), "{what} does not show {key}: {text}");
        let relative = format!("\"{}", key.strip_prefix(&format!("{PREFIX}/")).unwrap());
        assert!(
            !text.contains(&relative),
            "{what} shows a relative key: {text}"
        );
    }
    let json = t.ok(&["history", "--json", t.ms("k/a.bin").as_str()]);
    assert!(
        json.contains(&format!("\"object_key\":\"{}\"", &key[PREFIX.len() + 1..])),
        "{json}"
    );
    let jobs = t.ok(&["jobs", mnt.as_str()]);
    for l in jobs.lines() {
        assert!(l.chars().count() <= 100, "{l}");
    }
    assert!(
        jobs.lines().nth(1).is_some_and(|l| l.contains("migrate")),
        "{jobs}"
    );
}
