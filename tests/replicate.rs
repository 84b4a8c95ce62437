//! Replication to `[[replica]]` targets (issue 16, part 2): a real coldtier mount whose
//! primary store is moto, with replicas of other kinds: s3s-fs and a 3-node garage
//! cluster (two other S3 implementations) and a posix directory. Backfill with a dry run, the report
//! before and after, idempotence, and recalls served by a replica when the primary lost
//! or corrupted the object.

mod common;
#[allow(dead_code)]
#[path = "common/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::fs;

use coldtier::store::testing::{GarageCluster, S3sServer};
use serde_json::Value;
use tier::*;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn replicate_backfills_each_target_once_reports_and_serves_recalls_the_primary_lost() {
    let moto = start_moto();
    let gdir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start(gdir.path())
        .unwrap_or_else(|e| panic!("cannot start the garage cluster: {e}"));
    garage.create_bucket("replica").unwrap();
    let sdir = tempfile::tempdir().unwrap();
    let s3s = S3sServer::start(sdir.path()).unwrap_or_else(|e| panic!("{e}"));
    s3s.create_bucket("s3s-replica").unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let fs_ = files(&[
        ("a.bin", 30_000),
        ("d/b.bin", 200_000),
        ("d/c.bin", 1),
        ("big.bin", 6 << 20),
    ]);
    let (endpoint, key_id, secret) = (
        garage.endpoint.clone(),
        garage.key_id.clone(),
        garage.secret_key().to_string(),
    );
    let posix_root = pdir.path().join("objects");
    let t = TierMount::new(&moto, "primary", &fs_, |c| {
        c.set("store", "part_size", &q("5MiB")).raw(&format!(
            "[[replica]]\nname = \"g\"\nkind = \"s3\"\nendpoint = {}\nregion = \"us-east-1\"\n\
             bucket = \"replica\"\nprefix = \"copy\"\npath_style = true\naccess_key = {}\n\
             secret_key = {}\nrequest_checksum = \"when_required\"\n\n\
             [[replica]]\nname = \"p\"\nkind = \"posix\"\nroot = {}\n\n\
             [[replica]]\nname = \"s\"\nkind = \"s3\"\nendpoint = {}\nregion = \"us-east-1\"\n\
             bucket = \"s3s-replica\"\nprefix = \"three\"\npath_style = true\naccess_key = {}\n\
             secret_key = {}\n",
            q(&endpoint),
            q(&key_id),
            q(&secret),
            q(posix_root.to_str().unwrap()),
            q(&s3s.endpoint),
            q(&s3s.key_id),
            q(&s3s.secret)
        ))
    });
    t.migrate_ok(&["--mode", "stub"]);
    let mnt = t.mnt_str();

    // Before: both targets lack all four objects.
    let targets = json_lines(&t.ok(&["replicas", mnt.as_str(), "--json"]));
    assert_eq!(targets.len(), 3, "{targets:?}");
    for r in &targets {
        assert_eq!(
            (r["objects"].as_u64(), r["missing"].as_u64()),
            (Some(4), Some(4)),
            "{r}"
        );
        assert_eq!(r["missing_paths"].as_array().unwrap().len(), 4, "{r}");
        assert!(r["last_job"].is_null(), "{r}");
    }
    let text = t.ok(&["replicas", mnt.as_str()]);
    assert!(text.contains("replicated 0 of 4 objects"), "{text}");
    assert!(text.contains("never replicated"), "{text}");
    assert!(!text.contains(&secret), "the report shows no secret");

    // A dry run names what it would copy and copies nothing.
    let v: Value = serde_json::from_str(&t.ok(&[
        "replicate",
        mnt.as_str(),
        "--to",
        "p",
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (v["missing"].as_u64(), v["copied"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );
    assert_eq!(v["paths"].as_array().unwrap().len(), 4, "{v}");
    assert!(!posix_root.join("t").exists() || fs::read_dir(posix_root.join("t")).is_err());

    // The backfill, to each target; then again: nothing left to do.
    for target in ["p", "g", "s"] {
        let v: Value =
            serde_json::from_str(&t.ok(&["replicate", mnt.as_str(), "--to", target, "--json"]))
                .unwrap();
        assert_eq!(
            (v["copied"].as_u64(), v["failed"].as_u64()),
            (Some(4), Some(0)),
            "{target}: {v}"
        );
        let again: Value =
            serde_json::from_str(&t.ok(&["replicate", mnt.as_str(), "--to", target, "--json"]))
                .unwrap();
        assert_eq!(
            (again["missing"].as_u64(), again["copied"].as_u64()),
            (Some(0), Some(0)),
            "{target} again: {again}"
        );
    }
    let targets = json_lines(&t.ok(&["replicas", mnt.as_str(), "--json"]));
    for r in &targets {
        assert_eq!(
            (
                r["replicated"].as_u64(),
                r["missing"].as_u64(),
                r["last_failed"].as_u64()
            ),
            (Some(4), Some(0), Some(0)),
            "{r}"
        );
        assert!(r["last_job"].is_i64(), "{r}");
    }
    // Each object is on the posix target under its key, byte for byte the primary's.
    let key = t.status("a.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    let rel = key.strip_prefix(&format!("{PREFIX}/")).unwrap();
    let primary = moto.raw_get("primary", &key).unwrap();
    let copy = fs::read(posix_root.join(rel)).unwrap_or_else(|e| {
        panic!(
            "{rel} not in the posix target ({e}): {:?}",
            fs::read_dir(&posix_root)
        )
    });
    assert_eq!(copy, primary);
    // verify checks every target: clean, then a copy gone from the posix target and one
    // changed there are found (the second only by --deep, which reads it back).
    let verify = |deep: bool| -> Value {
        let mut args = vec!["verify", mnt.as_str(), "--json"];
        if deep {
            args.push("--deep");
        }
        serde_json::from_slice(&t.cli(&args).stdout).unwrap()
    };
    let v = verify(true);
    assert_eq!(
        (v["clean"].as_bool(), v["replica_copies_checked"].as_u64()),
        (Some(true), Some(12)),
        "{v}"
    );
    let ckey = t.status("d/c.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    let crel = ckey
        .strip_prefix(&format!("{PREFIX}/"))
        .unwrap()
        .to_string();
    fs::rename(posix_root.join(&crel), pdir.path().join("aside")).unwrap();
    let bkey0 = t.status("d/b.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    let brel = bkey0
        .strip_prefix(&format!("{PREFIX}/"))
        .unwrap()
        .to_string();
    let mut changed = fs::read(posix_root.join(&brel)).unwrap();
    changed[100] ^= 1;
    fs::write(posix_root.join(&brel), &changed).unwrap();
    let kinds = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f["kind"].as_str().unwrap(),
                    f["path"].as_str().unwrap_or("")
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(kinds(&verify(false)), ["replica_missing d/c.bin"], "quick");
    assert_eq!(
        kinds(&verify(true)),
        ["replica_content d/b.bin", "replica_missing d/c.bin"],
        "deep"
    );
    fs::rename(pdir.path().join("aside"), posix_root.join(&crel)).unwrap();
    changed[100] ^= 1;
    fs::write(posix_root.join(&brel), &changed).unwrap();

    // Each copy is an event of the file's history.
    let h = t.ok(&["history", "--json", t.ms("a.bin").as_str()]);
    let replicated: Vec<Value> = json_lines(&h)
        .into_iter()
        .filter(|e| e["kind"] == "REPLICATED")
        .collect();
    assert_eq!(replicated.len(), 3, "{h}");

    // The primary loses a's object and corrupts b's: reads through the mount still get
    // every byte, from a replica, and the RECALLED events say so.
    let (st, _) = moto
        .http("DELETE", &format!("/primary/{key}"), &[], b"")
        .unwrap();
    assert_eq!(st, 204);
    let bkey = t.status("d/b.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    moto.raw_put("primary", &bkey, &vec![0x5a; 200_000])
        .unwrap();
    // big.bin is read as a stream (chunk sums): its chunks come from the replica.
    let gkey = t.status("big.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = moto
        .http("DELETE", &format!("/primary/{gkey}"), &[], b"")
        .unwrap();
    assert_eq!(st, 204);
    for (rel, data) in &fs_ {
        assert_bytes(rel, &fs::read(t.m(rel)).unwrap(), data);
    }
    for rel in ["a.bin", "d/b.bin", "big.bin"] {
        let h = t.ok(&["history", "--json", t.ms(rel).as_str()]);
        let recalled = json_lines(&h)
            .into_iter()
            .rfind(|e| e["kind"] == "RECALLED")
            .unwrap_or_else(|| panic!("no RECALLED for {rel}: {h}"));
        assert_eq!(recalled["detail"]["from_replica"], "g", "{rel}: {recalled}");
        assert!(
            recalled["detail"]["primary_error"].is_string(),
            "{recalled}"
        );
    }
    // A target that does not exist: a clear error naming the ones that do.
    let out = t.cli(&["replicate", mnt.as_str(), "--to", "nope"]);
    assert_eq!(out.status.code(), Some(2), "bad input: {}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no [[replica]] named `nope`") && err.contains("g, p, s"),
        "{err}"
    );
}

/// `policy.copies = 3`: a file is stubbed only once the primary and the first two replica
/// targets hold verified copies, which the policy run writes itself from the local file.
/// With the second target unreachable nothing is stubbed (each file stays premigrated,
/// failed, the copy on the first target kept and recorded) and a release by hand is
/// refused too; once the target answers, the next run stubs them.
#[test]
fn policy_copies_holds_stubbing_until_every_copy_is_verified() {
    let moto = start_moto();
    moto.create_bucket("second", false).unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let fs_ = files(&[("a.bin", 40_000), ("d/b.bin", 3_000)]);
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let replicas = |endpoint: &str| {
        format!(
            "[[replica]]\nname = \"local\"\nkind = \"posix\"\nroot = {}\n\n\
             [[replica]]\nname = \"second\"\nkind = \"s3\"\nendpoint = {}\nregion = \"us-east-1\"\n\
             bucket = \"second\"\nprefix = \"c2\"\npath_style = true\naccess_key = \"coldtier-test\"\n\
             secret_key = \"coldtier-test-secret\"\nconnect_timeout = \"2s\"\nmax_attempts = 1\n",
            q(pdir.path().join("objects").to_str().unwrap()),
            q(endpoint)
        )
    };
    let t = TierMount::new(&moto, "copies", &fs_, |c| {
        c.set("policy", "copies", "3").raw(&replicas(&dead))
    });
    let (out, v) = t.migrate(&["--mode", "stub"]);
    assert!(!out.status.success(), "{v}");
    assert_eq!(
        (v["stubbed"].as_u64(), v["failed"].as_u64()),
        (Some(0), Some(2)),
        "{v}"
    );
    assert!(v["errors"].to_string().contains("policy.copies = 3"), "{v}");
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "premigrated", "{rel}");
    }
    let out = t.cli(&["release", t.ms("a.bin").as_str()]);
    assert!(!out.status.success(), "a release needs the copies too");
    assert_eq!(t.state("a.bin"), "premigrated");
    // The first target got its copies, and keeps them.
    let reps = json_lines(&t.ok(&["replicas", t.mnt_str().as_str(), "--json"]));
    let local = reps.iter().find(|r| r["name"] == "local").unwrap();
    assert_eq!(local["replicated"].as_u64(), Some(2), "{local}");

    // The second target answers now (a reload may not change replicas: remount).
    let cfg = std::fs::read_to_string(&t.config_path)
        .unwrap()
        .replace(&dead, &moto.endpoint);
    std::fs::write(&t.config_path, cfg).unwrap();
    let mut t = t;
    t.umount();
    t.remount();
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["stubbed"].as_u64(), Some(2), "{v}");
    for (rel, data) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel}");
        let h = json_lines(&t.ok(&["history", "--json", t.ms(rel).as_str()]));
        let kinds: Vec<&str> = h.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        let stubbed = kinds.iter().rposition(|k| *k == "STUBBED").unwrap();
        assert_eq!(
            kinds[..stubbed]
                .iter()
                .filter(|k| **k == "REPLICATED")
                .count(),
            2,
            "{rel}: both copies before the stub: {kinds:?}"
        );
        assert_bytes(rel, &std::fs::read(t.m(rel)).unwrap(), data);
    }
}

/// A replication killed at each step (the daemon dies before a GET from the primary, and
/// after a PUT to the target not yet recorded) resumes: after a restart, the next run
/// copies what is not recorded (an object put but not recorded is found on the target,
/// read back there and recorded, not put again) and leaves the target complete and every
/// file readable.
#[test]
fn a_replication_killed_at_each_step_resumes_and_completes() {
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 20_000), ("b.bin", 30_000), ("c.bin", 5)]);
    for fp in ["replicate-before-get", "replicate-after-put"] {
        let pdir = tempfile::tempdir().unwrap();
        let mut t = TierMount::new(&moto, &format!("kill-{fp}"), &fs_, |c| {
            c.set("mount", "restart_on_crash", "false").raw(&format!(
                "[[replica]]\nname = \"p\"\nkind = \"posix\"\nroot = {}\n",
                q(pdir.path().join("objects").to_str().unwrap())
            ))
        });
        t.migrate_ok(&["--mode", "stub"]);
        t.umount();
        let mnt = t.mnt_str();
        t.dies_running(&[], fp, &["replicate", mnt.as_str(), "--to", "p"]);
        t.remount();
        let before = json_lines(&t.ok(&["replicas", t.mnt_str().as_str(), "--json"]));
        assert_eq!(
            before[0]["replicated"].as_u64(),
            Some(0),
            "{fp}: {before:?}"
        );
        let v: Value = serde_json::from_str(&t.ok(&[
            "replicate",
            t.mnt_str().as_str(),
            "--to",
            "p",
            "--json",
        ]))
        .unwrap();
        // Killed after a PUT, the target holds that object at least (others may have been
        // put beside it before the kill): found, not copied again.
        let (copied, found) = (v["copied"].as_u64().unwrap(), v["found"].as_u64().unwrap());
        assert_eq!(
            (copied + found, v["failed"].as_u64()),
            (3, Some(0)),
            "{fp}: {v}"
        );
        if fp == "replicate-after-put" {
            assert!(
                found >= 1,
                "{fp}: the object put before the kill is found: {v}"
            );
        } else {
            assert_eq!(found, 0, "{fp}: nothing was put before the kill: {v}");
        }
        let after = json_lines(&t.ok(&["replicas", t.mnt_str().as_str(), "--json"]));
        assert_eq!(after[0]["missing"].as_u64(), Some(0), "{fp}: {after:?}");
        for (rel, data) in &fs_ {
            assert_bytes(rel, &fs::read(t.m(rel)).unwrap(), data);
        }
    }
}

/// A backfill of archived objects (GLACIER on moto): the first run sends one RestoreObject
/// per object, all before any copying, copies none and reports them `restoring`; runs
/// after that send no second restore and copy each object once its restore is done.
#[test]
fn archived_objects_are_restored_first_once_each_then_copied() {
    let moto = start_moto();
    let restore_secs = 3;
    moto.set_restore_seconds(restore_secs).unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let fs_ = files(&[("x.bin", 10_000), ("y.bin", 20_000), ("z.bin", 30_000)]);
    let t = TierMount::new(&moto, "glacier-rep", &fs_, |c| {
        c.set("store", "storage_class", &q("GLACIER")).raw(&format!(
            "[[replica]]\nname = \"p\"\nkind = \"posix\"\nroot = {}\n",
            q(pdir.path().join("objects").to_str().unwrap())
        ))
    });
    t.migrate_ok(&["--mode", "stub"]);
    // moto treats an object as restored for restore_secs after its creation.
    std::thread::sleep(std::time::Duration::from_millis(restore_secs * 1000 + 500));
    let run = || -> Value {
        serde_json::from_str(&t.ok(&["replicate", t.mnt_str().as_str(), "--to", "p", "--json"]))
            .unwrap()
    };
    let v = run();
    assert_eq!(
        (
            v["restoring"].as_u64(),
            v["copied"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(restore_posts(&requests(&moto), "glacier-rep"), 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut copied = 0;
    while copied < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the restores never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        let v = run();
        assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
        copied += v["copied"].as_u64().unwrap();
    }
    assert_eq!(copied, 3);
    assert_eq!(
        restore_posts(&requests(&moto), "glacier-rep"),
        3,
        "one restore per object, whatever the number of runs"
    );
    let reps = json_lines(&t.ok(&["replicas", t.mnt_str().as_str(), "--json"]));
    assert_eq!(reps[0]["missing"].as_u64(), Some(0), "{reps:?}");
    let h = t.ok(&["history", "--json", t.ms("x.bin").as_str()]);
    let kinds: Vec<String> = json_lines(&h)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    let restore = kinds.iter().position(|k| k == "RESTORE_REQUESTED").unwrap();
    let replicated = kinds.iter().position(|k| k == "REPLICATED").unwrap();
    assert!(restore < replicated, "{kinds:?}");
}

/// gc deletes a deleted file's object on every replica target that holds it as well as on
/// the store (the copies first), after the retention only, and forgets the copies; a live
/// file's copies stay.
#[test]
fn gc_deletes_a_dead_objects_copies_on_the_targets_too() {
    let moto = start_moto();
    let pdir = tempfile::tempdir().unwrap();
    let root = pdir.path().join("objects");
    let fs_ = files(&[("keep.bin", 10_000), ("gone.bin", 20_000)]);
    let mut t = TierMount::new(&moto, "gc-rep", &fs_, |c| {
        c.raw(&format!(
            "[[replica]]\nname = \"p\"\nkind = \"posix\"\nroot = {}\n",
            q(root.to_str().unwrap())
        ))
    });
    t.migrate_ok(&["--mode", "stub"]);
    t.ok(&["replicate", t.mnt_str().as_str(), "--to", "p"]);
    let key = |rel: &str| -> String {
        let k = t.status(rel)["object_key"].as_str().unwrap().to_string();
        k.strip_prefix(&format!("{PREFIX}/")).unwrap().to_string()
    };
    let (kk, kg) = (key("keep.bin"), key("gone.bin"));
    assert!(root.join(&kg).exists());
    fs::remove_file(t.m("gone.bin")).unwrap();
    let gc = |t: &TierMount, dry: bool| -> Value {
        let mut a = vec!["gc", "--json"];
        let m = t.mnt_str();
        a.insert(1, m.as_str());
        if dry {
            a.push("--dry-run");
        }
        serde_json::from_str(&t.ok(&a)).unwrap()
    };
    let v = gc(&t, false);
    assert_eq!(
        v["deleted"].as_array().unwrap().len(),
        0,
        "within retention: {v}"
    );
    assert!(root.join(&kg).exists());
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, "7200")]);
    let v = gc(&t, true);
    assert_eq!(v["deleted"].as_array().unwrap().len(), 2, "dry run: {v}");
    assert!(root.join(&kg).exists(), "a dry run deletes nothing");
    let v = gc(&t, false);
    let targets: Vec<Option<&str>> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str())
        .collect();
    assert_eq!(
        targets,
        [Some("p"), None],
        "the copy first, then the store's: {v}"
    );
    assert!(!root.join(&kg).exists(), "the copy is gone");
    assert!(root.join(&kk).exists(), "a live file's copy stays");
    let reps = json_lines(&t.ok(&["replicas", t.mnt_str().as_str(), "--json"]));
    assert_eq!(
        (reps[0]["objects"].as_u64(), reps[0]["replicated"].as_u64()),
        (Some(1), Some(1)),
        "{reps:?}"
    );
    let v: Value =
        serde_json::from_slice(&t.cli(&["verify", t.mnt_str().as_str(), "--json"]).stdout).unwrap();
    assert_eq!(v["clean"], true, "{v}");
    assert_bytes("keep.bin", &fs::read(t.m("keep.bin")).unwrap(), &fs_[0].1);
}

/// A replication killed after its PUT to the target, before the REPLICATED that records
/// the copy, leaves a copy the catalog does not know of. Once the file is deleted and its
/// object past the retention, gc asks each target without a recorded copy for it by name
/// and deletes it there too: s3s-fs, which cannot list versions, loses its current one.
#[test]
fn gc_deletes_a_copy_that_a_replication_cut_short_left_unrecorded() {
    let moto = start_moto();
    let sdir = tempfile::tempdir().unwrap();
    let s3s = S3sServer::start(sdir.path()).unwrap_or_else(|e| panic!("{e}"));
    s3s.create_bucket("s3s-replica").unwrap();
    let fs_ = files(&[("x.bin", 20_000)]);
    let mut t = TierMount::new(&moto, "cut-rep", &fs_, |c| {
        c.set("mount", "restart_on_crash", "false").raw(&format!(
            "[[replica]]\nname = \"s\"\nkind = \"s3\"\nendpoint = {}\nregion = \"us-east-1\"\n\
             bucket = \"s3s-replica\"\nprefix = \"cut\"\npath_style = true\naccess_key = {}\n\
             secret_key = {}\n",
            q(&s3s.endpoint),
            q(&s3s.key_id),
            q(&s3s.secret)
        ))
    });
    t.migrate_ok(&["--mode", "stub"]);
    let key = t.object_key("x.bin");
    let rel = key.strip_prefix(&format!("{PREFIX}/")).unwrap().to_string();
    let on_target = sdir.path().join("s3s-replica/cut").join(&rel);
    t.umount();
    let mnt = t.mnt_str();
    t.dies_running(
        &[],
        "replicate-after-put",
        &["replicate", mnt.as_str(), "--to", "s"],
    );
    t.remount();
    assert!(
        on_target.exists(),
        "the copy reached s3s-fs: {}",
        on_target.display()
    );
    let reps = json_lines(&t.ok(&["replicas", t.mnt_str().as_str(), "--json"]));
    assert_eq!(reps[0]["replicated"].as_u64(), Some(0), "{reps:?}");

    fs::remove_file(t.m("x.bin")).unwrap();
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, &(RETENTION_SECS + 60).to_string())]);
    let v: Value = serde_json::from_str(&t.ok(&["gc", t.mnt_str().as_str(), "--json"])).unwrap();
    let deleted: Vec<(Option<&str>, Option<bool>)> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["target"].as_str(), d["unrecorded"].as_bool()))
        .collect();
    assert_eq!(
        deleted,
        [(Some("s"), Some(true)), (None, None)],
        "the target's copy, then the primary's: {v}"
    );
    assert!(
        !on_target.exists(),
        "the unrecorded copy is gone from s3s-fs"
    );
    assert!(!t.objects().contains(&key), "the primary's object is gone");
}

/// A catalog lost is rebuilt from the primary, recording the copies the replica target
/// holds; lost again with the store unreachable, it is rebuilt from the replica target
/// (`catalog rebuild --from NAME`): every stub is known again and reads back whole from
/// the replica (the primary is down).
#[test]
fn a_catalog_is_rebuilt_from_a_replica_target() {
    let moto = start_moto();
    let pdir = tempfile::tempdir().unwrap();
    let fs_ = files(&[("r1.bin", 12_000), ("d/r2.bin", 34_000)]);
    let mut t = TierMount::new(&moto, "rebuild-rep", &fs_, |c| {
        c.raw(&format!(
            "[[replica]]\nname = \"p\"\nkind = \"posix\"\nroot = {}\n",
            q(pdir.path().join("objects").to_str().unwrap())
        ))
    });
    t.migrate_ok(&["--mode", "stub"]);
    t.ok(&["replicate", t.mnt_str().as_str(), "--to", "p"]);
    t.umount();
    t.remove_catalog();
    let rebuild = |extra: &[&str]| {
        let mut a = vec![
            "catalog".to_string(),
            "rebuild".into(),
            t.src.to_str().unwrap().into(),
            "--config".into(),
            t.config_path.to_str().unwrap().into(),
            "--mountpoint".into(),
            t.mnt_str(),
            "--json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        t.cli(&a)
    };
    // From the primary, the rebuild lists the replica target too and records its copies
    // (else `policy.copies` would count none, and `replicate` would copy each again).
    let out = rebuild(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["replica_copies"].as_u64(), Some(2), "{v}");
    t.remove_catalog();
    let out = rebuild(&["--from", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no [[replica]] of that name (p)"), "{err}");
    let out = rebuild(&["--from", "p"]);
    assert!(out.status.success(), "{}", show(&out));
    // The primary is gone for good: reads come from the replica.
    let cfg = fs::read_to_string(&t.config_path).unwrap().replace(
        &moto.endpoint,
        &format!("http://127.0.0.1:{}", common::free_port()),
    );
    fs::write(&t.config_path, cfg).unwrap();
    let out = t.try_mount(&[], &["--paused"]);
    assert!(out.status.success(), "{}", show(&out));
    for (rel, data) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel} after the rebuild");
        assert_bytes(rel, &fs::read(t.m(rel)).unwrap(), data);
    }
    let reps = json_lines(&t.ok(&["replicas", t.mnt_str().as_str(), "--json"]));
    assert_eq!(
        reps[0]["missing"].as_u64(),
        Some(0),
        "the rebuild recorded the copies: {reps:?}"
    );
}

/// A target on the primary's own endpoint (another bucket of the same server): each object
/// is copied by the server (CopyObject), never through this host: no GET of the primary's
/// objects, one PUT (the copy) per object on the target, proven by a read-back there (moto's
/// word proves nothing), recorded as a server-side copy; the copies are byte-identical,
/// packs and a multipart object among them.
#[test]
fn a_target_on_the_primarys_endpoint_is_filled_by_server_side_copies() {
    let moto = start_moto();
    moto.create_bucket("ssc-copy", false).unwrap();
    let fs_ = files(&[
        ("a.bin", 30_000),
        ("d/b.bin", 200_000),
        ("big.bin", 6 << 20),
        ("small/x.txt", 700),
        ("small/y.txt", 900),
    ]);
    let t = TierMount::new(&moto, "ssc-primary", &fs_, |c| {
        c.set("store", "part_size", &q("5MiB"))
            .set("pack", "enabled", "true")
            .set("pack", "max_member_size", &q("1KiB"))
            .raw(&format!(
                "[[replica]]\nname = \"same\"\nkind = \"s3\"\nendpoint = {}\nregion = \"us-east-1\"\n\
                 bucket = \"ssc-copy\"\nprefix = \"c\"\npath_style = true\n\
                 access_key = \"coldtier-test\"\nsecret_key = \"coldtier-test-secret\"\n",
                q(&moto.endpoint)
            ))
    });
    t.migrate_ok(&["--mode", "stub"]);
    let mnt = t.mnt_str();
    let before = settled_requests(&moto).len();
    let v: Value =
        serde_json::from_str(&t.ok(&["replicate", mnt.as_str(), "--to", "same", "--json"]))
            .unwrap();
    // Three objects of their own and one pack of the two small files.
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );
    let reqs = settled_requests(&moto);
    let during = &reqs[before..];
    // Of the primary, only the pack's index is read (to check it before it is copied).
    let read: Vec<&str> = object_requests(during, "ssc-primary")
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path())
        .collect();
    assert!(
        read.len() == 1 && read[0].ends_with(".index.json"),
        "nothing but the pack index read from the primary: {read:?}"
    );
    let puts: Vec<&str> = object_requests(during, "ssc-copy")
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path())
        .collect();
    // The pack's index is small and streamed (it is read and checked first); the four
    // objects are server-side copies.
    assert_eq!(puts.len(), 5, "{puts:?}");
    assert_eq!(
        data_gets(during, "ssc-copy", None),
        5,
        "one read-back of each object and of the pack's index"
    );
    for (rel, _) in &fs_ {
        let key = t.status(rel)["object_key"].as_str().unwrap().to_string();
        let primary = moto.raw_get("ssc-primary", &key).unwrap();
        let rest = key.strip_prefix(&format!("{PREFIX}/")).unwrap();
        let copy = moto.raw_get("ssc-copy", &format!("c/{rest}")).unwrap();
        assert!(copy == primary, "{rel}: the copy differs from the primary");
    }
    // One REPLICATED event per object (a pack's in the history of one of its members).
    let replicated: Vec<Value> = fs_
        .iter()
        .flat_map(|(rel, _)| json_lines(&t.ok(&["history", "--json", t.ms(rel).as_str()])))
        .filter(|e| e["kind"] == "REPLICATED")
        .collect();
    assert_eq!(replicated.len(), 4, "{replicated:?}");
    for r in &replicated {
        assert_eq!(r["detail"]["how"], "server-side copy", "{r}");
        assert_eq!(r["detail"]["proof"], "readback", "{r}");
    }
    // verify asks the target about each copy once (HEAD): the pack's two members share one.
    let before = settled_requests(&moto).len();
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["replica_copies_checked"].as_u64(), Some(5), "{v}");
    let reqs = settled_requests(&moto);
    let heads: Vec<&str> = object_requests(&reqs[before..], "ssc-copy")
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path())
        .collect();
    assert_eq!(heads.len(), 4, "one HEAD per copy: {heads:?}");
    // The copies serve a recall when the primary loses an object.
    let key = t.status("d/b.bin")["object_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = moto
        .http("DELETE", &format!("/ssc-primary/{key}"), &[], b"")
        .unwrap();
    assert_eq!(st, 204);
    assert_all_read_back(&t, &fs_);
    let (code, v) = t.verify(true);
    assert_ne!(code, 0, "the primary lost an object: {v}");
}

/// A server that refuses a server-side copy (here the first CopyObject gets a 403, as from
/// credentials of the target that cannot read the primary's bucket): the object is
/// streamed instead, every later one to that target too, and nothing fails.
#[test]
fn a_refused_server_side_copy_falls_back_to_streaming() {
    let moto = start_moto();
    let proxy = faults::FaultProxy::start(&moto.endpoint);
    moto.create_bucket("ssr-copy", false).unwrap();
    let fs_ = files(&[("a.bin", 30_000), ("b.bin", 40_000), ("c.bin", 50_000)]);
    let endpoint = proxy.endpoint.clone();
    let mut t = TierMount::prepared(&moto, &endpoint, "ssr-primary", &fs_, |c| {
        c.raw(&format!(
            "[[replica]]\nname = \"same\"\nkind = \"s3\"\nendpoint = {}\nregion = \"us-east-1\"\n\
             bucket = \"ssr-copy\"\nprefix = \"c\"\npath_style = true\n\
             access_key = \"coldtier-test\"\nsecret_key = \"coldtier-test-secret\"\n",
            q(&endpoint)
        ))
    });
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    proxy.rules(serde_json::json!([{
        "method": "PUT", "path_contains": "/ssr-copy/c/data/", "action": "status",
        "status": 403, "code": "AccessDenied", "times": 1
    }]));
    let v: Value =
        serde_json::from_str(&t.ok(&["replicate", t.mnt_str().as_str(), "--to", "same", "--json"]))
            .unwrap();
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(3), Some(0)),
        "{v}"
    );
    let hows: Vec<String> = fs_
        .iter()
        .flat_map(|(rel, _)| json_lines(&t.ok(&["history", "--json", t.ms(rel).as_str()])))
        .filter(|e| e["kind"] == "REPLICATED")
        .map(|e| e["detail"]["how"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(hows.len(), 3, "{hows:?}");
    assert!(hows.iter().any(|h| h == "streamed"), "{hows:?}");
    assert!(
        t.daemon_log_tail().contains("server-side copy refused"),
        "{}",
        t.daemon_log_tail()
    );
    for (rel, data) in &fs_ {
        let key = t.status(rel)["object_key"].as_str().unwrap().to_string();
        let rest = key.strip_prefix(&format!("{PREFIX}/")).unwrap();
        let copy = moto.raw_get("ssr-copy", &format!("c/{rest}")).unwrap();
        assert!(copy == *data, "{rel}: the copy differs");
    }
}
