//! Reconciliation and catalog protection on a real FUSE mount with a real moto S3 server:
//! `coldtier verify` (missing, corrupted and orphan objects, premigrated files changed
//! behind coldtier's back, clean mounts), `coldtier catalog backup` under a concurrent
//! write load, and `coldtier catalog rebuild` after the catalog is lost, with hostile
//! objects in the bucket.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::Value;

use common::{bin, coldtier, data, show};

#[path = "common/tier.rs"]
#[allow(dead_code)] // the harness serves tests/tiering.rs too
mod tier;

use tier::{bucket_keys, http_full, start_moto, Files, TierMount, PREFIX};

/// A tiering mount (tests/common/tier.rs: the base test config) with this file's checks.
struct T(TierMount);

impl std::ops::Deref for T {
    type Target = TierMount;
    fn deref(&self) -> &TierMount {
        &self.0
    }
}

impl std::ops::DerefMut for T {
    fn deref_mut(&mut self) -> &mut TierMount {
        &mut self.0
    }
}

impl T {
    /// A mount of `files` on a bucket of a moto server of its own; `catalog`: extra
    /// `[catalog]` keys (raw TOML values).
    fn new(bucket: &str, files: &[(&str, Vec<u8>)], catalog: &[(&str, &str)]) -> T {
        let files: Files = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.clone()))
            .collect();
        T(TierMount::new(&start_moto(), bucket, &files, |mut c| {
            for (k, v) in catalog {
                c = c.set("catalog", k, v);
            }
            c
        }))
    }

    fn migrate(&self, mode: &str) {
        self.migrate_ok(&["--mode", mode]);
    }

    /// A raw request for `key` that must succeed (2xx).
    fn http(&self, method: &str, key: &str, headers: &[(&str, &str)], body: &[u8]) {
        let (st, b) = self
            .moto()
            .http(method, &format!("/{}/{key}", self.bucket), headers, body)
            .unwrap();
        assert!(
            (200..300).contains(&st),
            "{method} {key}: {st} {}",
            String::from_utf8_lossy(&b)
        );
    }

    fn keys(&self) -> Vec<String> {
        bucket_keys(self.moto(), &self.bucket)
    }

    fn tags(&self, key: &str) -> String {
        let (_, _, body) = http_full(
            self.moto(),
            "GET",
            &format!("/{}/{key}?tagging", self.bucket),
        );
        String::from_utf8_lossy(&body).into_owned()
    }

    /// `coldtier catalog rebuild SRC --config C --json [extra]`.
    fn rebuild(&self, extra: &[&str]) -> (Output, Option<Value>) {
        let mut cmd = Command::new(bin());
        cmd.args(["catalog", "rebuild"])
            .arg(&self.src)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--json")
            .args(extra);
        let out = cmd.output().unwrap();
        let v = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).ok();
        (out, v)
    }
}

fn findings<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn has_finding(v: &Value, kind: &str, key: &str) -> bool {
    findings(v, kind).iter().any(|f| f["object_key"] == key)
}

/// Opens a copy of a catalog file (the copy may be changed by opening it).
fn open_copy(path: &Path, dir: &Path) -> coldtier::catalog::Catalog {
    let copy = dir.join(format!(
        "copy-{}.db",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(path, &copy).unwrap();
    coldtier::catalog::Catalog::open(&copy).unwrap()
}

// -------------------------------------------------------------------------------------------

#[test]
fn verify_is_clean_then_finds_missing_corrupted_orphan_and_changed() {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.bin", data(1, 20_000)),
        ("dir/b.bin", data(2, 12_000)),
        ("dir/c.bin", data(3, 9_000)),
        ("d.bin", data(4, 7_000)),
        ("p.bin", data(5, 6_000)),
    ];
    let t = T::new("verify", &files, &[("backup_schedule", "\"off\"")]);
    t.migrate("stub");
    // p.bin read back: premigrated.
    assert_eq!(std::fs::read(t.m("p.bin")).unwrap(), files[4].1);
    assert_eq!(t.status("p.bin")["state"], "premigrated");

    // Clean, quick and deep.
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["stubs"], 4, "{v}");
    assert_eq!(v["premigrated"], 1, "{v}");
    assert_eq!(v["objects_checked"], 5, "{v}");
    let (code, v) = t.verify(true);
    assert_eq!((code, &v["clean"]), (0, &Value::Bool(true)), "{v}");
    assert_eq!(v["objects_reread"], 5, "{v}");
    assert_eq!(v["bytes_reread"], 54_000, "{v}");
    // The text report says clean and exits 0.
    let text = t.ok(&["verify", &t.mnt_str()]);
    assert!(text.contains("clean"), "{text}");

    let key = |rel: &str| t.status(rel)["object_key"].as_str().unwrap().to_string();
    let (ka, kb, kc, kd, kp) = (
        key("a.bin"),
        key("dir/b.bin"),
        key("dir/c.bin"),
        key("d.bin"),
        key("p.bin"),
    );
    // a: object deleted behind coldtier's back.
    t.http("DELETE", &ka, &[], b"");
    // b: overwritten with other bytes of the same size, without coldtier's metadata.
    t.moto().raw_put(&t.bucket, &kb, &data(99, 12_000)).unwrap();
    // c: overwritten with other bytes and a perfect copy of coldtier's metadata: only a
    // read-back can tell.
    let meta_c: Vec<(String, String)> = {
        let (_, headers, _) = http_full(t.moto(), "HEAD", &format!("/{}/{kc}", t.bucket));
        headers
            .into_iter()
            .filter(|(k, _)| k.starts_with("x-amz-meta-"))
            .collect()
    };
    assert!(meta_c.len() >= 5, "{meta_c:?}");
    let hdrs: Vec<(&str, &str)> = meta_c
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    t.http("PUT", &kc, &hdrs, &data(98, 9_000));
    // Orphans: an object in coldtier's key space no one names, and a stray key.
    let orphan = format!("{PREFIX}/data/0123456789abcdef0123456789abcdef/0000000000000001");
    t.http("PUT", &orphan, &[], b"nobody's");
    let stray = format!("{PREFIX}/stray.txt");
    t.http("PUT", &stray, &[], b"stray");
    // d: deleted through the mount: its object stays for the retention: not an orphan.
    std::fs::remove_file(t.m("d.bin")).unwrap();
    // p: changed in the backing tree, behind coldtier's back.
    std::fs::write(t.src.join("p.bin"), b"changed without the mount").unwrap();

    let (code, v) = t.verify(false);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["clean"], false);
    assert!(has_finding(&v, "object_missing", &ka), "{v}");
    assert!(has_finding(&v, "object_metadata", &kb), "{v}");
    assert!(has_finding(&v, "orphan", &orphan), "{v}");
    assert!(has_finding(&v, "orphan", &stray), "{v}");
    assert!(has_finding(&v, "premigrated_changed", &kp), "{v}");
    let all: Vec<&Value> = v["findings"].as_array().unwrap().iter().collect();
    assert!(
        !all.iter().any(|f| f["object_key"] == kd),
        "the deleted file's object is retained, not an orphan: {v}"
    );
    assert!(v["retained"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        !all.iter().any(|f| f["object_key"] == kc),
        "quick verify cannot see c's forged content: {v}"
    );
    assert_eq!(all.len(), 5, "exactly the five problems: {v}");

    // --deep reads b and c back and sees both contents are wrong.
    let (code, v) = t.verify(true);
    assert_eq!(code, 1);
    assert!(has_finding(&v, "object_content", &kb), "{v}");
    assert!(has_finding(&v, "object_content", &kc), "{v}");

    // Each finding is an event; verify deleted nothing.
    let hist = t.ok(&["history", "--json", t.m("a.bin").to_str().unwrap()]);
    assert!(
        hist.contains("VERIFY_FINDING") && hist.contains("object_missing"),
        "{hist}"
    );
    let keys = t.keys();
    for k in [&orphan, &stray, &kb, &kc, &kd] {
        assert!(keys.contains(k), "{k} gone from the bucket: {keys:?}");
    }
    // The text report names each finding on its own line.
    let out = coldtier(&["verify", &t.mnt_str()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ORPHAN") && l.contains(&stray)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("OBJECT_MISSING") && l.contains("a.bin")),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("problems"),
        "{}",
        show(&out)
    );
}

#[test]
fn backups_under_a_concurrent_write_load_pass_integrity_check() {
    let names: Vec<String> = (0..10).map(|i| format!("f{i}.bin")).collect();
    let files: Vec<(&str, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), data(i as u64 + 10, 3000)))
        .collect();
    let t = T::new(
        "backup",
        &files,
        &[("backup_schedule", "\"off\""), ("backup_keep", "\"3d\"")],
    );
    let t = Arc::new(t);
    let dest = t.dir.path().join("manual");
    // The load: new files written through the mount and migrated, stubs read back, pins.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU32::new(0));
    let load = {
        let (t, stop, rounds) = (t.clone(), stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for j in 0..5 {
                    let p = t.m(&format!("load/{n}-{j}.bin"));
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, data(1000 + n as u64 * 10 + j, 2000)).unwrap();
                }
                t.migrate("stub");
                let f = t.m(&format!("f{}.bin", n % 10));
                let _ = std::fs::read(&f).unwrap();
                let _ = coldtier(&["pin", f.to_str().unwrap()]);
                let _ = coldtier(&["unpin", f.to_str().unwrap()]);
                n += 1;
                rounds.store(n, Ordering::Relaxed);
            }
        })
    };
    // Backups one after the other while the load runs (at least 3 rounds of it).
    let mut taken: Vec<Value> = Vec::new();
    let t0 = std::time::Instant::now();
    while taken.len() < 6 || rounds.load(Ordering::Relaxed) < 3 {
        assert!(t0.elapsed().as_secs() < 60, "the load is too slow");
        let mnt = t.mnt_str();
        let mut args = vec!["catalog", "backup", mnt.as_str(), "--json"];
        let d = dest.to_str().unwrap().to_string();
        if taken.len() % 2 == 0 {
            args.extend(["--to", d.as_str()]);
        }
        let out = t.ok(&args);
        taken.push(serde_json::from_str(out.trim()).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let events: Vec<u64> = taken
        .iter()
        .map(|b| b["events"].as_u64().unwrap())
        .collect();
    eprintln!(
        "{} backups during {} load rounds in {:.1}s; events per backup: {events:?}",
        taken.len(),
        rounds.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        events.last() > events.first(),
        "the catalog grew while the backups were taken: {events:?}"
    );

    let mut paths = Vec::new();
    for b in &taken {
        let p = PathBuf::from(b["local_path"].as_str().unwrap());
        assert!(b["errors"].as_array().unwrap().is_empty(), "{b}");
        assert!(b["events"].as_u64().unwrap() > 0, "{b}");
        paths.push((p, b.clone()));
    }
    // The managed backups went to the configured directory (beside the catalog) and the
    // bucket; "3d" retention keeps the newest of the (one) day: earlier ones are pruned.
    let managed: Vec<&(PathBuf, Value)> = paths
        .iter()
        .filter(|(_, b)| b["object_key"].is_string())
        .collect();
    assert!(managed.len() >= 3, "{}", managed.len());
    for (p, _) in &managed {
        assert!(
            p.starts_with(t.catalog.parent().unwrap().join("backups")),
            "{}",
            p.display()
        );
    }
    let last = managed.last().unwrap();
    let key = last.1["object_key"].as_str().unwrap();
    assert!(key.starts_with(&format!("{PREFIX}/catalog/")), "{key}");
    let from_bucket = t.moto().raw_get(&t.bucket, key).unwrap();
    assert_eq!(
        from_bucket,
        std::fs::read(&last.0).unwrap(),
        "the bucket copy is the same file"
    );
    let catalog_keys: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("{PREFIX}/catalog/")))
        .collect();
    assert_eq!(
        catalog_keys,
        vec![key.to_string()],
        "older bucket backups pruned"
    );
    assert!(!managed[0].0.exists(), "older local backups pruned");
    assert!(
        !last.1["pruned_store"].as_array().unwrap().is_empty(),
        "{}",
        last.1
    );
    // Every backup that is kept opens and passes integrity_check, and its hash chain holds.
    for (p, b) in paths.iter().filter(|(p, _)| p.exists()) {
        let c =
            rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "{}", p.display());
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "a backup is one self-contained file");
        let events: u64 = c
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events, b["events"].as_u64().unwrap());
        drop(c);
        let cat = open_copy(p, t.dir.path());
        assert_eq!(cat.verify_chain().unwrap(), events, "{}", p.display());
        assert_eq!(
            cat.last_event().unwrap().unwrap().hash,
            b["last_event_hash"].as_str().unwrap()
        );
    }
    // The live catalog recorded each backup (read in place: its latest commits are in the WAL).
    let live = rusqlite::Connection::open_with_flags(
        &t.catalog,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let recorded: u64 = live
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'CATALOG_BACKUP'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, taken.len() as u64);
    // --to s3: only the bucket (with its retention), nothing kept locally.
    let out = t.ok(&["catalog", "backup", &t.mnt_str(), "--to", "s3", "--json"]);
    let b: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(b["local_path"].is_null(), "{b}");
    let key = b["object_key"].as_str().unwrap().to_string();
    let catalog_keys: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("{PREFIX}/catalog/")))
        .collect();
    assert_eq!(catalog_keys, vec![key.clone()], "{b}");
    let bytes = t.moto().raw_get(&t.bucket, &key).unwrap();
    let copy = t.dir.path().join("from-bucket.db");
    std::fs::write(&copy, &bytes).unwrap();
    let c = rusqlite::Connection::open(&copy).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // A --to that cannot be a directory fails with the reason, and leaves nothing behind.
    let file = t.dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = coldtier(&[
        "catalog",
        "backup",
        &t.mnt_str(),
        "--to",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot create the backup directory"),
        "{}",
        show(&out)
    );
}

#[test]
fn rebuild_after_losing_the_catalog_brings_every_stub_back() {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.bin", data(11, 30_000)),
        ("dir/b.bin", data(12, 20_000)),
        ("dir/sub/c.bin", data(13, 10_000)),
        ("gone.bin", data(14, 5_000)),
        ("p.bin", data(15, 4_000)),
    ];
    let mut t = T::new("rebuild", &files, &[("backup_schedule", "\"off\"")]);
    t.migrate("stub");
    assert_eq!(std::fs::read(t.m("p.bin")).unwrap(), files[4].1);
    let gone_key = t.status("gone.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(t.m("gone.bin")).unwrap();
    // The deleted file's object is tagged "deleted" in the background.
    let t0 = std::time::Instant::now();
    while !t.tags(&gone_key).contains("deleted") {
        assert!(
            t0.elapsed().as_secs() < 20,
            "no deleted tag: {}",
            t.tags(&gone_key)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let before: BTreeMap<String, Value> = ["a.bin", "dir/b.bin", "dir/sub/c.bin", "p.bin"]
        .iter()
        .map(|r| (r.to_string(), t.status(r)))
        .collect();

    // Refused while the daemon serves the source.
    let (out, _) = t.rebuild(&["--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unmount"),
        "{}",
        show(&out)
    );

    t.umount();
    t.remove_catalog();
    let (out, v) = t.rebuild(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let v = v.unwrap();
    assert_eq!(v["stubs"], 3, "{v}");
    assert_eq!(v["premigrated"], 1, "{v}");
    assert_eq!(v["deleted_recorded"], 1, "{v}");
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");

    // Rows as they were: state, object, version, checksum.
    let cat = open_copy(&t.catalog, t.dir.path());
    for (rel, st) in &before {
        let row = cat
            .file_by_path(rel)
            .unwrap()
            .unwrap_or_else(|| panic!("{rel}: no row"));
        assert_eq!(row.state.as_str(), st["state"].as_str().unwrap(), "{rel}");
        assert_eq!(row.file_id, st["file_id"].as_str().unwrap(), "{rel}");
        assert_eq!(
            format!("{PREFIX}/{}", row.object_key.as_deref().unwrap()),
            st["object_key"].as_str().unwrap(),
            "{rel}"
        );
        assert_eq!(
            row.version_id.as_deref(),
            st["version_id"].as_str(),
            "{rel}"
        );
        assert_eq!(
            format!("{}:{}", row.checksum_algo.unwrap(), row.checksum.unwrap()),
            st["checksum"].as_str().unwrap(),
            "{rel}"
        );
        assert_eq!(row.size, st["size"].as_u64().unwrap(), "{rel}");
    }
    let kinds: Vec<String> = cat
        .events_since(0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "CATALOG_REBUILT").count(),
        5,
        "{kinds:?}"
    );
    assert_eq!(cat.verify_chain().unwrap() as usize, kinds.len());

    // A second rebuild does not overwrite the catalog without --force.
    let (out, _) = t.rebuild(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        show(&out)
    );

    // Mounted again: every stub reads back byte-identical; verify is clean (the deleted
    // file's object is retained for gc, not an orphan).
    t.remount();
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["retained"], 1, "{v}");
    for (rel, content) in &files {
        if *rel == "gone.bin" {
            continue;
        }
        assert_eq!(&std::fs::read(t.m(rel)).unwrap(), content, "{rel}");
    }
    for rel in ["a.bin", "dir/b.bin"] {
        assert_eq!(
            t.status(rel)["state"],
            "premigrated",
            "{rel} after its recall"
        );
    }
}

/// Every path below `dir` with its size and mtime (the catalog's own directory left out).
fn tree(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, (u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p,
                (
                    m.len(),
                    if m.is_dir() {
                        0
                    } else {
                        m.mtime_nsec() + m.mtime() * 1_000_000_000
                    },
                ),
            );
        }
    }
    out
}

#[test]
fn rebuild_skips_hostile_objects_and_writes_nothing_outside_source() {
    let files: Vec<(&str, Vec<u8>)> = vec![("a.bin", data(21, 8_000)), ("b.bin", data(22, 6_000))];
    let mut t = T::new("hostile", &files, &[("backup_schedule", "\"off\"")]);
    t.migrate("stub");
    let kb = t.status("b.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    let idb = t.status("b.bin")["file_id"].as_str().unwrap().to_string();
    let good = |path: &str, id: &str, size: &str| -> Vec<(String, String)> {
        vec![
            ("x-amz-meta-coldtier-path".into(), path.into()),
            ("x-amz-meta-coldtier-file-id".into(), id.into()),
            ("x-amz-meta-coldtier-size".into(), size.into()),
            (
                "x-amz-meta-coldtier-mtime-ns".into(),
                "1700000000000000000".into(),
            ),
            ("x-amz-meta-coldtier-mode".into(), "100644".into()),
            ("x-amz-meta-coldtier-uid".into(), "0".into()),
            ("x-amz-meta-coldtier-gid".into(), "0".into()),
            ("x-amz-tagging".into(), "coldtier-state=deleted".into()),
        ]
    };
    let put = |key: &str, h: Vec<(String, String)>, body: &[u8]| {
        let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        t.http("PUT", key, &hs, body);
    };
    let id = |n: u8| format!("{:032x}", 0xabc0 + n as u32);
    let key = |n: u8| format!("{PREFIX}/data/{}/00000000000000{n:02x}", id(n));
    // 1: a path that climbs out of SOURCE.
    put(&key(1), good("../../etc/passwd", &id(1), "5"), b"pwned");
    // 2: an absolute path.
    put(&key(2), good("/etc/shadow", &id(2), "5"), b"pwned");
    // 3: an absurd size.
    put(
        &key(3),
        good("x", &id(3), "99999999999999999999999"),
        b"pwned",
    );
    // 4: bad values.
    let mut h = good("x", &id(4), "5");
    h[3].1 = "yesterday".into();
    h[4].1 = "rwxr-xr-x".into();
    put(&key(4), h, b"pwned");
    // 5: a file id that is not one.
    put(&key(5), good("x", "../../etc", "5"), b"pwned");
    // 6: not a coldtier key at all.
    let odd = format!("{PREFIX}/data/not-an-id/x");
    put(&odd, good("x", &id(6), "5"), b"pwned");
    // 7: b's object replaced by one whose metadata does not match b's stub on disk.
    put(&kb, good("../../etc/passwd", &idb, "6000"), &data(0, 6000));
    // 8: a well-formed deleted object of a file that is gone: recorded for gc.
    let fine = key(8);
    put(&fine, good("old/report.pdf", &id(8), "5"), b"fine!");

    t.umount();
    t.remove_catalog();
    let passwd = std::fs::read("/etc/passwd").unwrap();
    // SOURCE/../../etc/passwd is <tmp>/etc/passwd.
    let climbed = t.dir.path().parent().unwrap().join("etc/passwd");
    let climbed_before = climbed.exists();
    let cat_dir = t.catalog.parent().unwrap().to_path_buf();
    let before = tree(t.dir.path(), &cat_dir);

    let (out, v) = t.rebuild(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "problems make exit 1: {}",
        show(&out)
    );
    let v = v.unwrap_or_else(|| panic!("{}", show(&out)));
    let problems: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let line = |k: &str| {
        problems
            .iter()
            .find(|p| p.contains(k))
            .unwrap_or_else(|| panic!("no report line for {k}: {problems:#?}"))
            .clone()
    };
    assert!(line(&key(1)).contains("escapes SOURCE"), "{problems:#?}");
    assert!(line(&key(2)).contains("absolute"), "{problems:#?}");
    assert!(line(&key(3)).contains("plausible size"), "{problems:#?}");
    assert!(line(&key(4)).contains("not a number"), "{problems:#?}");
    assert!(line(&key(5)).contains("32 hex"), "{problems:#?}");
    assert!(
        line(&odd).contains("not a coldtier object key"),
        "{problems:#?}"
    );
    let lb = line("b.bin");
    assert!(
        lb.starts_with("REJECTED") && lb.contains("does not match"),
        "{lb}"
    );
    assert_eq!(problems.len(), 7, "{problems:#?}");
    assert_eq!(v["stubs"], 1, "{v}");
    assert_eq!(v["deleted_recorded"], 1, "{v}");

    // Nothing written outside SOURCE but the catalog; /etc/passwd untouched.
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
    assert_eq!(
        tree(t.dir.path(), &cat_dir),
        before,
        "files changed outside the catalog"
    );
    assert_eq!(climbed.exists(), climbed_before, "{}", climbed.display());

    // The catalog holds no hostile path and no event for a rejected object.
    let cat = open_copy(&t.catalog, t.dir.path());
    let events = cat.events_since(0, 1000).unwrap();
    for e in &events {
        if let Some(p) = &e.path {
            assert!(
                !p.contains("..") && !p.starts_with('/'),
                "hostile path recorded: {e:?}"
            );
        }
    }
    let rebuilt_keys: Vec<String> = events
        .iter()
        .filter(|e| e.file_id.is_some())
        .filter_map(|e| e.detail["object_key"].as_str().map(str::to_string))
        .collect();
    for n in 1..=5 {
        let k = key(n);
        let k = k.strip_prefix(&format!("{PREFIX}/")).unwrap();
        assert!(!rebuilt_keys.iter().any(|r| r == k), "{k} recorded");
    }
    assert!(
        rebuilt_keys.iter().any(|r| format!("{PREFIX}/{r}") == fine),
        "{rebuilt_keys:?}"
    );
    assert!(
        cat.file_by_path("b.bin").unwrap().is_none(),
        "b.bin's record was rejected"
    );

    // The good stub recalls.
    t.remount();
    assert_eq!(std::fs::read(t.m("a.bin")).unwrap(), files[0].1);

    // verify on the rebuilt catalog: the hostile objects are orphans, b.bin has no row and
    // a wrong object, the deleted file's object is retained for gc.
    let (code, v) = t.verify(false);
    assert_eq!(code, 1, "{v}");
    for n in 1..=5 {
        assert!(
            has_finding(&v, "orphan", &key(n)),
            "{} not an orphan: {v}",
            key(n)
        );
    }
    assert!(has_finding(&v, "orphan", &odd), "{v}");
    assert!(has_finding(&v, "catalog_missing_row", &kb), "{v}");
    assert!(has_finding(&v, "object_metadata", &kb), "{v}");
    assert!(
        !v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["object_key"] == fine),
        "{v}"
    );
    assert_eq!(v["retained"], 1, "{v}");
}
