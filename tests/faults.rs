//! Faults, as an admin meets them: a store that damages uploads or downloads, answers
//! errors, hangs, or cannot be used at all; a full disk; the daemon killed at any point.
//! Each test runs a real coldtier mount whose store is moto behind the fault proxy
//! (tests/fault_proxy.py, driven through tests/common/faults.rs), and checks what the
//! application sees, what the files become, and what the catalog says.

mod common;
#[allow(dead_code)]
#[path = "common/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use coldtier::store::testing::MotoServer;
use faults::*;
use serde_json::json;
use tier::*;

/// A mount whose store is moto behind a fault proxy (no rules yet), mounted.
fn proxied(
    bucket: &str,
    fs_: &Files,
    tweak: impl FnOnce(Config) -> Config,
) -> (Arc<MotoServer>, FaultProxy, TierMount) {
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, bucket, fs_, tweak);
    t.mount_with_env(&[]);
    (moto, proxy, t)
}

/// Every file is resident, its backing bytes and its attributes as they were.
fn assert_untouched(t: &TierMount, fs_: &Files, before: &BTreeMap<&str, Shown>) {
    for (rel, content) in fs_ {
        assert_eq!(t.state(rel), "resident", "{rel}\n{}", t.daemon_log_tail());
        assert_bytes(
            &format!("backing {rel}"),
            &fs::read(t.s(rel)).unwrap(),
            content,
        );
        assert_eq!(
            xattr(&t.s(rel), "trusted.coldtier.stub"),
            None,
            "{rel}: stub record"
        );
        assert_eq!(shown(&t.m(rel)), before[rel.as_str()], "{rel}: attributes");
    }
}

fn attributes<'a>(t: &TierMount, fs_: &'a Files) -> BTreeMap<&'a str, Shown> {
    fs_.iter()
        .map(|(r, _)| (r.as_str(), shown(&t.m(r))))
        .collect()
}

// ------------------------------------------------------------------------------------------
// The proof of a copy

/// Through a proxy that flips a byte of every upload (single PUTs and multipart parts),
/// moto stores the damaged bytes and echoes the checksum it was sent: its word proves
/// nothing. The store check at mount finds that out, every copy is read back, and no file
/// is ever stubbed over a damaged object, whichever verify mode is configured.
#[test]
fn corrupt_upload_bodies_never_lead_to_a_stub() {
    for verify in ["checksum", "readback"] {
        let fs_ = files(&[("a.bin", 70_000), ("d/b.bin", 3_000), ("big.bin", 11 << 20)]);
        let (_moto, proxy, t) = proxied(&format!("corrupt-put-{verify}"), &fs_, |c| {
            c.set("policy", "verify", &q(verify))
                .set("store", "part_size", &q("5MiB"))
        });
        assert!(
            t.daemon_log_tail().contains("does not refuse an upload"),
            "the store check at mount says moto does not validate:\n{}",
            t.daemon_log_tail()
        );
        let stats = t.ok(&["stats", &t.mnt_str()]);
        assert!(
            stats.contains("copies are proven by reading them back"),
            "{stats}"
        );
        let before = attributes(&t, &fs_);
        proxy.rules(json!([on_data("PUT", "corrupt_request_body")]));
        let (out, v) = t.migrate(&["--mode", "stub"]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert_eq!(v["stubbed"], 0, "{v}");
        assert_eq!(v["failed"], 3, "{v}");
        assert!(
            proxy.applied("corrupt_request_body") >= 5,
            "every PUT and part damaged: {}",
            proxy.stats()["applied"]
        );
        // Each copy is found damaged: read back, or (moto computes a multipart object's
        // checksum from the parts it received) by the checksum moto reports for it.
        for e in v["errors"].as_array().unwrap() {
            let e = e.as_str().unwrap();
            assert!(
                e.contains("read back as") || e.contains("reports checksum"),
                "{v}"
            );
        }
        assert_untouched(&t, &fs_, &before);
        assert_all_read_back(&t, &fs_);
        // The damaged objects are named for gc (FAILED), never referenced.
        let kinds = t.kinds("a.bin");
        assert_eq!(count(&kinds, "FAILED"), 1, "{kinds:?}");
        assert_eq!(count(&kinds, "VERIFIED"), 0, "{kinds:?}");

        // Undamaged, the same run stubs them all, and each recalls byte-identical.
        proxy.reset();
        let v = t.migrate_ok(&["--mode", "stub"]);
        assert_eq!(v["stubbed"], 3, "{v}");
        for (rel, _) in &fs_ {
            assert_eq!(t.state(rel), "stub", "{rel}");
            let verified = t
                .history(rel)
                .into_iter()
                .find(|e| e["kind"] == "VERIFIED")
                .unwrap();
            assert_eq!(verified["detail"]["verify"], "read-back", "{verified}");
        }
        assert_all_read_back(&t, &fs_);
    }
}

/// Upload bodies are sent unsigned (`UNSIGNED-PAYLOAD`) to a loopback endpoint, the proxy
/// here, and signed (their SHA-256 in `x-amz-content-sha256`) with `payload_signing =
/// "always"`; single PUTs and multipart parts alike, and the copies are proven and stubbed
/// either way (moto: by reading them back).
#[test]
fn upload_bodies_are_signed_only_where_the_wire_needs_it() {
    for signing in ["auto", "always"] {
        let fs_ = files(&[("a.bin", 70_000), ("big.bin", 11 << 20)]);
        let (_moto, proxy, t) = proxied(&format!("signing-{signing}"), &fs_, |c| {
            c.set("store", "payload_signing", &q(signing))
                .set("store", "part_size", &q("5MiB"))
        });
        let v = t.migrate_ok(&["--mode", "stub"]);
        assert_eq!(v["stubbed"], 2, "{v}");
        let puts: Vec<(String, String)> = proxy.stats()["log"]
            .as_array()
            .unwrap()
            .iter()
            // Object bodies: PutObject and UploadPart (not PutObjectTagging's few bytes).
            .filter(|e| {
                e["method"] == "PUT"
                    && e["path"].as_str().unwrap().contains("/data/")
                    && !e["query"].as_str().unwrap_or("").contains("tagging")
            })
            .map(|e| {
                (
                    format!("{}?{}", e["path"], e["query"]),
                    e["payload"].as_str().unwrap_or("(none)").to_string(),
                )
            })
            .collect();
        let parts = puts
            .iter()
            .filter(|(p, _)| p.contains("partNumber="))
            .count();
        assert!(
            parts >= 3 && puts.len() > parts,
            "a single PUT and the parts of a multipart upload: {puts:?}"
        );
        for (what, payload) in &puts {
            let signed = payload.len() == 64 && payload.bytes().all(|b| b.is_ascii_hexdigit());
            match signing {
                "auto" => assert_eq!(payload, "UNSIGNED-PAYLOAD", "{what}"),
                _ => assert!(signed, "{what}: {payload}"),
            }
        }
        for (rel, content) in &fs_ {
            assert_eq!(t.state(rel), "stub", "{rel}");
            assert_bytes(rel, &fs::read(t.m(rel)).unwrap(), content);
        }
    }
}

/// A download damaged on the way fails the recall with EIO and leaves the stub as it was;
/// the next read, undamaged, recalls it byte-identical.
#[test]
fn a_corrupt_download_gives_eio_and_keeps_the_stub() {
    let fs_ = files(&[("f.bin", 50_000)]);
    let (_moto, proxy, t) = proxied("corrupt-get", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    proxy.rules(json!([on_data("GET", "corrupt_response_body")]));
    let e = errno_of(
        fs::read(t.m("f.bin")),
        "read of a stub whose download is damaged",
    );
    assert_eq!(e, libc::EIO);
    assert_eq!(t.state("f.bin"), "stub");
    assert_eq!(
        fs::metadata(t.s("f.bin")).unwrap().len(),
        0,
        "the stub stays empty"
    );
    assert!(t.kinds("f.bin").contains(&"RECALL_FAILED".to_string()));
    proxy.reset();
    assert_all_read_back(&t, &fs_);
    assert_eq!(t.state("f.bin"), "premigrated");
}

// ------------------------------------------------------------------------------------------
// A store that answers errors, or nothing

/// 503 SlowDown and 500 answers are retried (`store.max_attempts`): the recall succeeds.
#[test]
fn transient_errors_are_retried() {
    let fs_ = files(&[("f.bin", 20_000)]);
    let (_moto, proxy, t) = proxied("retried", &fs_, |c| c.set("store", "max_attempts", "3"));
    t.migrate_ok(&["--mode", "stub"]);
    proxy.rules(json!([
        {"method": "GET", "path_contains": "/data/", "action": "status", "status": 503, "times": 1},
        {"method": "GET", "path_contains": "/data/", "action": "status", "status": 500, "times": 1},
    ]));
    assert_all_read_back(&t, &fs_);
    assert_eq!(proxy.applied("status"), 2);
    assert_eq!(t.state("f.bin"), "premigrated");
}

/// A store that accepts requests and never answers: the open fails with EAGAIN after
/// `recall.timeout` (an NFS server turns that into "retry later") while the recall goes
/// on; the store's timeouts then end the recall (RECALL_FAILED), the stub stays; once the
/// store answers again the file reads back byte-identical.
#[test]
fn a_hung_store_fails_the_read_with_eagain_and_keeps_the_stub() {
    let fs_ = files(&[("f.bin", 30_000)]);
    let (_moto, proxy, t) = proxied("hung", &fs_, |c| {
        c.set("recall", "timeout", &q("2s"))
            .set("store", "first_byte_timeout", &q("3s"))
            .set("store", "max_attempts", "1")
    });
    t.migrate_ok(&["--mode", "stub"]);
    proxy.rules(json!([on_data("GET", "hang")]));
    let e = errno_of(
        fs::read(t.m("f.bin")),
        "read of a stub while the store hangs",
    );
    assert_eq!(e, libc::EAGAIN, "{}", t.daemon_log_tail());
    assert!(t.daemon_log_tail().contains("gave up waiting for a recall"));
    // The recall itself ends by the store's timeouts.
    let t0 = std::time::Instant::now();
    while !t.kinds("f.bin").contains(&"RECALL_FAILED".to_string()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the hung recall never ended\n{}",
            t.daemon_log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(proxy.applied("hang") >= 1);
    assert_eq!(t.state("f.bin"), "stub");
    assert_eq!(fs::metadata(t.s("f.bin")).unwrap().len(), 0);
    proxy.reset();
    assert_all_read_back(&t, &fs_);
}

/// A policy run against a store that fails every request fails (exit 1) and changes no
/// file: bytes, states, records and attributes as before.
#[test]
fn a_failing_store_fails_the_run_and_changes_no_file() {
    let fs_ = files(&[("x.bin", 40 * 1024), ("d/y.bin", 8 * 1024), ("z.bin", 100)]);
    let (_moto, proxy, t) = proxied("failing", &fs_, |c| c.set("store", "max_attempts", "1"));
    let before = attributes(&t, &fs_);
    proxy.rules(json!([{"method": "*", "action": "status", "status": 500}]));
    let (out, v) = t.migrate(&["--mode", "stub"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(v["failed"], 3, "{v}");
    assert_eq!(v["stubbed"], 0, "{v}");
    assert_eq!(v["copied"], 0, "{v}");
    assert!(t
        .daemon_log_tail()
        .contains("ERROR policy run finished with 3 failed files"));
    assert_eq!(
        t.daemon_log_tail()
            .matches("WARN policy run: file failed")
            .count(),
        3,
        "one WARN line per failed file"
    );
    assert_untouched(&t, &fs_, &before);
    proxy.reset();
    assert_all_read_back(&t, &fs_);
}

// ------------------------------------------------------------------------------------------
// The store check at mount

/// A store that cannot be used is refused at mount, in one line naming the problem, with
/// nothing mounted; `--paused` mounts anyway with tiering paused (policy runs refused,
/// files served); `coldtier resume` fails while the store still fails and resumes once it
/// works.
#[test]
fn an_unusable_store_is_refused_at_mount_unless_paused() {
    let fs_ = files(&[("a.bin", 10_000)]);
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, "check-at-mount", &fs_, |c| {
        c.set("store", "max_attempts", "1")
    });
    proxy
        .rules(json!([{"method": "*", "action": "status", "status": 403, "code": "AccessDenied"}]));
    let out = t.try_mount(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("AccessDenied") && err.contains("--paused"),
        "names the problem and the way out: {err}"
    );
    assert!(!is_mountpoint(&t.mnt), "nothing mounted");

    let out = t.try_mount(&[], &["--paused"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_all_read_back(&t, &fs_);
    let out = t.cli(&["migrate", &t.mnt_str(), "--mode", "stub"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("paused"),
        "{}",
        show(&out)
    );
    let out = t.cli(&["resume", &t.mnt_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stays paused"),
        "{}",
        show(&out)
    );

    proxy.reset();
    let out = t.ok(&["resume", &t.mnt_str()]);
    assert!(out.contains("resumed"), "{out}");
    assert_eq!(t.migrate_ok(&["--mode", "stub"])["stubbed"], 1);
    t.ok(&["pause", &t.mnt_str()]);
    let out = t.cli(&["migrate", &t.mnt_str(), "--mode", "stub"]);
    assert_eq!(out.status.code(), Some(1), "paused again: {}", show(&out));
    assert_all_read_back(&t, &fs_);
}

// ------------------------------------------------------------------------------------------
// The operator's traps

/// A second mount of the same source, or of another source with the same catalog, is
/// refused in one line naming the mount that holds it, and the first mount keeps its
/// config version in force. A mount right after a plain umount (its daemon still
/// finishing) waits for that daemon instead of being refused.
#[test]
fn one_daemon_per_source_and_per_catalog() {
    let fs_ = files(&[("a.bin", 10_000)]);
    let (moto, _proxy, mut t) = proxied("one-daemon", &fs_, |c| c);
    let mnt2 = t.dir.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let out = common::coldtier(&[
        "mount",
        t.src.to_str().unwrap(),
        mnt2.to_str().unwrap(),
        "--config",
        t.config_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already served by the coldtier mount at") && err.contains(&t.mnt_str()),
        "{err}"
    );
    assert!(!is_mountpoint(&mnt2));

    // Another source, the same catalog (the same config file).
    let src2 = t.dir.path().join("src2");
    fs::create_dir(&src2).unwrap();
    let out = common::coldtier(&[
        "mount",
        src2.to_str().unwrap(),
        mnt2.to_str().unwrap(),
        "--config",
        t.config_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the catalog") && err.contains("is in use by the coldtier mount at"),
        "{err}"
    );
    assert!(!is_mountpoint(&mnt2));
    let cfg = t.ok(&["config", "show", &t.mnt_str(), "--json"]);
    assert!(
        cfg.contains("\"version\":1"),
        "still version 1 in force: {cfg}"
    );

    // Unmount and mount again at once, many times: each mount waits for the last daemon.
    for _ in 0..3 {
        let (ok, _, err) = common::sh(&format!("umount '{}'", t.mnt_str()));
        assert!(ok, "umount: {err}");
        t.set_unmounted();
        t.remount();
    }
    assert_all_read_back(&t, &fs_);
    drop(moto);
}

// ------------------------------------------------------------------------------------------
// A full disk

/// Unmounts a filesystem on drop.
struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = common::sh(&format!("umount -l '{}'", self.0.display()));
    }
}

/// A recall into a full filesystem fails with ENOSPC (not EIO), the stub stays a stub
/// (empty, its space given back), and once there is room it recalls byte-identical.
#[test]
fn a_full_disk_during_a_recall_gives_enospc_and_keeps_the_stub() {
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, "full-disk", &Vec::new(), |c| c);
    let (ok, _, err) = common::sh(&format!(
        "mount -t tmpfs -o size=4m,mode=0755 coldtier-test '{}'",
        t.src.display()
    ));
    assert!(ok, "mount tmpfs: {err}");
    let _tmpfs = Unmount(t.src.clone());
    let fs_ = files(&[("big.bin", 3 << 20)]);
    write_files(&t.src, &fs_);
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(t.state("big.bin"), "stub");
    // Fill what the stub freed (and more: as much as tmpfs gives).
    let (_, _, _) = common::sh(&format!(
        "dd if=/dev/zero of='{}' bs=64k 2>/dev/null; sync",
        t.m("filler").display()
    ));
    let e = errno_of(fs::read(t.m("big.bin")), "a recall into a full disk");
    assert_eq!(e, libc::ENOSPC, "{}", t.daemon_log_tail());
    assert_eq!(t.state("big.bin"), "stub");
    assert_eq!(
        fs::metadata(t.s("big.bin")).unwrap().len(),
        0,
        "the stub stays empty"
    );
    assert!(t.kinds("big.bin").contains(&"RECALL_FAILED".to_string()));
    fs::remove_file(t.m("filler")).unwrap();
    assert_all_read_back(&t, &fs_);
    t.umount();
}

/// Small files on a full filesystem are packed all the same (a pack within a part is built
/// in memory: nothing is written to the source to tier them), their space is given back,
/// and they recall byte-identical; the pack is backfilled to a replica, with nothing
/// staged on the source either; with most of them deleted and the disk full again, gc
/// repacks the rest (the old pack's span and the new pack in memory too).
#[test]
fn small_files_on_a_full_disk_are_packed_and_free_their_space() {
    let moto = start_moto();
    let rdir = tempfile::tempdir().unwrap();
    let mut t = TierMount::prepared(&moto, &moto.endpoint, "full-pack", &Vec::new(), |c| {
        c.set("pack", "enabled", "true").raw(&format!(
            "[[replica]]\nname = \"p\"\nkind = \"posix\"\nroot = {}\n",
            q(rdir.path().join("objects").to_str().unwrap())
        ))
    });
    let (ok, _, err) = common::sh(&format!(
        "mount -t tmpfs -o size=8m,mode=0755 coldtier-test '{}'",
        t.src.display()
    ));
    assert!(ok, "mount tmpfs: {err}");
    let _tmpfs = Unmount(t.src.clone());
    let names: Vec<String> = (0..60).map(|i| format!("small/{i:02}.dat")).collect();
    let spec: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 64 << 10)).collect();
    let fs_ = files(&spec);
    write_files(&t.src, &fs_);
    // The rest of the filesystem taken by a file the policy leaves alone (pinned).
    let (_, _, _) = common::sh(&format!(
        "dd if=/dev/zero of='{}' bs=64k 2>/dev/null; sync",
        t.src.join("filler").display()
    ));
    let free = |t: &TierMount| {
        let st = nix_statvfs(&t.src);
        st.0 * st.1
    };
    assert!(
        free(&t) < 64 << 10,
        "the source is full: {} bytes free",
        free(&t)
    );
    t.mount_with_env(&[]);
    t.ok(&["pin", t.m("filler").to_str().unwrap()]);
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
    assert_eq!(v["stubbed"].as_u64(), Some(fs_.len() as u64), "{v}");
    for (rel, _) in &fs_ {
        assert!(t.object_key(rel).contains("/packs/"), "{rel} is in a pack");
    }
    assert!(
        free(&t) >= (fs_.len() as u64) * (60 << 10),
        "the members' space is given back: {} bytes free",
        free(&t)
    );
    // The disk full again: the pack and its index are backfilled to the replica.
    let (_, _, _) = common::sh(&format!(
        "dd if=/dev/zero of='{}' bs=64k 2>/dev/null; sync",
        t.m("filler1").display()
    ));
    assert!(free(&t) < 64 << 10, "full again: {} bytes free", free(&t));
    t.ok(&["pin", t.m("filler1").to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&t.ok(&["replicate", t.mnt_str().as_str(), "--to", "p", "--json"]))
            .unwrap();
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
    assert!(v["copied"].as_u64().unwrap_or(0) >= 1, "{v}");
    fs::remove_file(t.m("filler1")).unwrap();
    // Most members deleted, the disk filled again: gc repacks the pack of the others.
    let old = t.object_key(&fs_[0].0);
    for (rel, _) in &fs_[..45] {
        fs::remove_file(t.m(rel)).unwrap();
    }
    let live = fs_[45..].to_vec();
    let (_, _, _) = common::sh(&format!(
        "dd if=/dev/zero of='{}' bs=64k 2>/dev/null; sync",
        t.m("filler2").display()
    ));
    assert!(free(&t) < 64 << 10, "full again: {} bytes free", free(&t));
    t.ok(&["pin", t.m("filler2").to_str().unwrap()]);
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, &(RETENTION_SECS + 60).to_string())]);
    let out = t.ok(&["gc", t.mnt_str().as_str()]);
    assert!(out.contains("repacked"), "{out}");
    for (rel, _) in &live {
        assert_ne!(t.object_key(rel), old, "{rel} is in the new pack");
        assert_eq!(t.state(rel), "stub", "{rel}");
    }
    // Room to recall them into, then they read back from the new pack.
    fs::remove_file(t.m("filler2")).unwrap();
    assert_all_read_back(&t, &live);
    t.umount();
}

/// (f_frsize, f_bavail) of the filesystem holding `p`.
fn nix_statvfs(p: &std::path::Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct to fill.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    (st.f_frsize as u64, st.f_bavail as u64)
}

// ------------------------------------------------------------------------------------------
// What the daemon keeps for itself

/// The secret key is in no byte the daemon writes (catalog, its WAL, a backup here and in
/// the bucket, the log) nor in any output (config show, events); everything the daemon
/// creates for itself is root's alone; a catalog directory others may write is refused.
#[test]
fn no_secret_is_stored_and_the_daemons_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-SECRET";
    let fs_ = files(&[("a.bin", 10_000)]);
    let (moto, _proxy, mut t) = proxied("secrets", &fs_, |c| {
        c.set("store", "secret_key", &q(SECRET)).set(
            "store",
            "session_token",
            &q(&format!("{SECRET}-token")),
        )
    });
    t.migrate_ok(&["--mode", "stub"]);
    let backups = t.dir.path().join("backups");
    t.ok(&[
        "catalog",
        "backup",
        &t.mnt_str(),
        "--to",
        backups.to_str().unwrap(),
    ]);
    let b: serde_json::Value =
        serde_json::from_str(&t.ok(&["catalog", "backup", &t.mnt_str(), "--to", "s3", "--json"]))
            .unwrap();
    let in_bucket = moto
        .raw_get(&t.bucket, b["object_key"].as_str().unwrap())
        .unwrap();
    let mut outputs = vec![
        t.ok(&["config", "show", &t.mnt_str(), "--json"]),
        t.ok(&["config", "show", &t.mnt_str()]),
        t.ok(&["events", &t.mnt_str(), "--json"]),
        t.ok(&["history", &t.ms("a.bin"), "--json"]),
    ];
    outputs.push(String::from_utf8_lossy(&in_bucket).into_owned());
    let mut files: Vec<std::path::PathBuf> = vec![t.catalog.clone(), t.log_file.clone()];
    files.push(std::path::PathBuf::from(format!(
        "{}-wal",
        t.catalog.display()
    )));
    files.extend(fs::read_dir(&backups).unwrap().map(|e| e.unwrap().path()));
    let holds = |bytes: &[u8]| bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
    for f in &files {
        if let Ok(bytes) = fs::read(f) {
            assert!(!holds(&bytes), "{} holds the secret", f.display());
        }
    }
    for o in &outputs {
        assert!(!o.contains(SECRET), "an output holds the secret: {o}");
    }
    assert!(outputs[1].contains("<redacted sha256:"), "{}", outputs[1]);

    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(t.catalog.parent().unwrap()), 0o700);
    for f in &files {
        if f.exists() {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
    assert_eq!(mode(&backups), 0o700);
    assert_eq!(mode(std::path::Path::new("/run/coldtier/mounts")), 0o700);
    assert_eq!(mode(std::path::Path::new("/run/coldtier/locks")), 0o700);
    let lock = std::path::PathBuf::from(format!("{}.lock", t.catalog.display()));
    assert_eq!(mode(&lock), 0o600);
    // Files created through the mount keep exactly the mode the caller asked for.
    let (ok, _, err) = common::sh(&format!(
        "umask 022 && touch '{}' && umask 002 && mkdir '{}'",
        t.ms("made.txt"),
        t.ms("made.d")
    ));
    assert!(ok, "{err}");
    assert_eq!(mode(&t.s("made.txt")), 0o644);
    assert_eq!(mode(&t.s("made.d")), 0o775);

    // A catalog directory others may write to is refused, naming it.
    t.umount();
    fs::set_permissions(
        t.catalog.parent().unwrap(),
        fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let out = t.try_mount(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the catalog directory") && err.contains("writable by everyone"),
        "{err}"
    );
    fs::set_permissions(
        t.catalog.parent().unwrap(),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    t.remount();
    assert_all_read_back(&t, &fs_);
}

/// Sends `sig` to the daemon of `t` and waits until its log has `marker` more times than
/// before.
fn signal_and_wait(t: &TierMount, sig: i32, marker: &str, log: &std::path::Path) {
    let before = fs::read_to_string(log)
        .unwrap_or_default()
        .matches(marker)
        .count();
    let pid = daemon_pid(&t.mnt).expect("daemon pid");
    // SAFETY: signalling a process of our own test.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    let t0 = std::time::Instant::now();
    while fs::read_to_string(log)
        .unwrap_or_default()
        .matches(marker)
        .count()
        <= before
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no `{marker}` in {} after the signal\n{}",
            log.display(),
            t.daemon_log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGHUP (logrotate's `postrotate kill -HUP`, `systemctl reload`) never unmounts: it
/// reopens the log file and reads the config again. What may change takes effect, recorded
/// as a new config version (a rotated secret included, redacted); what cannot change is
/// named and kept; a config that does not parse changes nothing.
#[test]
fn sighup_reloads_the_config_and_reopens_the_log() {
    let fs_ = files(&[("small.bin", 1_000), ("large.bin", 90_000)]);
    let (_moto, _proxy, t) = proxied("sighup", &fs_, |c| c);
    let cfg = fs::read_to_string(&t.config_path).unwrap();

    // The log rotated away: a new file, 0600, gets the lines from now on.
    let rotated = t.dir.path().join("daemon.log.1");
    fs::rename(&t.log_file, &rotated).unwrap();
    let changed = cfg
        .replace("min_size = 1", "min_size = 50000")
        .replace("[fuse]\n", "")
        .replace("max_attempts = 2", "max_attempts = 3")
        .replace("coldtier-test-secret", "a-rotated-secret")
        + "\n[fuse]\nthreads = 7\n";
    fs::write(&t.config_path, &changed).unwrap();
    signal_and_wait(&t, libc::SIGHUP, "config reloaded", &t.log_file);
    assert!(is_mountpoint(&t.mnt), "SIGHUP unmounted the share");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&t.log_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let log = fs::read_to_string(&t.log_file).unwrap();
    assert!(
        log.contains("cannot change while mounted") && log.contains("fuse.threads"),
        "{log}"
    );
    assert!(!log.contains("a-rotated-secret"), "{log}");
    let hist = t.ok(&["config", "history", &t.mnt_str(), "--json"]);
    assert_eq!(hist.lines().count(), 2, "{hist}");
    let shown = t.ok(&["config", "show", &t.mnt_str()]);
    assert!(shown.contains("min_size = 50000"), "{shown}");
    assert!(
        shown.contains("keep the values they had at mount") && shown.contains("fuse.threads"),
        "{shown}"
    );
    assert!(!shown.contains("a-rotated-secret"), "{shown}");
    // The new policy is in force: only the large file is a candidate.
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["stubbed"], 1, "{v}");
    assert_eq!(t.state("small.bin"), "resident");
    assert_eq!(t.state("large.bin"), "stub");

    // A config that does not parse: an ERROR line, nothing changes.
    fs::write(&t.config_path, "[policy\nmin_size = ").unwrap();
    signal_and_wait(&t, libc::SIGHUP, "reload failed", &t.log_file);
    assert!(is_mountpoint(&t.mnt));
    let hist = t.ok(&["config", "history", &t.mnt_str(), "--json"]);
    assert_eq!(hist.lines().count(), 2, "{hist}");
    assert_all_read_back(&t, &fs_);
}

/// Polls `coldtier jobs --json` until job `id` has finished; its row.
fn finished_job(t: &TierMount, id: u64) -> serde_json::Value {
    let t0 = std::time::Instant::now();
    loop {
        let out = t.ok(&["jobs", &t.mnt_str(), "--json"]);
        let job = parse_lines(&out)
            .into_iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("no job {id}: {out}"));
        if !job["finished_ns"].is_null() {
            return job;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "job {id} did not finish: {job}\n{}",
            t.daemon_log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file is either as it was (resident, no record) or fully copied (premigrated, or
/// a stub): none is left half-done.
fn assert_whole(t: &TierMount, fs_: &Files) -> (usize, usize) {
    let (mut untouched, mut done) = (0, 0);
    for (rel, _) in fs_ {
        match t.state(rel).as_str() {
            "resident" => {
                assert_eq!(xattr(&t.s(rel), "trusted.coldtier.copy"), None, "{rel}");
                untouched += 1;
            }
            "premigrated" | "stub" => done += 1,
            s => panic!("{rel}: {s}"),
        }
    }
    (untouched, done)
}

/// A migrate whose client goes away (Ctrl-C, a killed client) stops the run: the files
/// under way are finished, no other is started, and the job is recorded as cancelled;
/// `coldtier jobs cancel` does the same to a run whose client waits (it exits 1).
#[test]
fn a_run_stops_when_its_client_goes_away_or_on_jobs_cancel() {
    let spec: Vec<(String, usize)> = (0..40).map(|i| (format!("f{i:02}.bin"), 4_000)).collect();
    let spec: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&spec);
    let (_moto, proxy, t) = proxied("cancel", &fs_, |c| c.set("store", "concurrency", "1"));
    // Slow uploads: each PUT waits 300 ms.
    proxy.rules(
        json!([{"method": "PUT", "path_contains": "/data/", "action": "delay", "delay": 0.3}]),
    );
    let mut client = std::process::Command::new(common::bin())
        .args(["migrate", &t.mnt_str(), "--mode", "copy-only", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it start, then kill the client as Ctrl-C would.
    let t0 = std::time::Instant::now();
    while proxy.stats()["requests"]["PUT"].as_u64().unwrap_or(0) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no upload started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(client.id() as i32, libc::SIGINT) };
    let _ = client.wait();
    let job = finished_job(&t, 1);
    assert!(
        job["errors"].to_string().contains("cancelled"),
        "the job is recorded as cancelled: {job}"
    );
    let (untouched, done) = assert_whole(&t, &fs_);
    assert!(
        untouched > 0 && done > 0,
        "{untouched} untouched, {done} done"
    );
    assert!(t.daemon_log_tail().contains("the client went away"));

    // jobs cancel, with the client waiting.
    let client = std::process::Command::new(common::bin())
        .args(["migrate", &t.mnt_str(), "--mode", "copy-only", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let out = t.cli(&["jobs", "cancel", &t.mnt_str()]);
        if out.status.success() {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("job 2"),
                "{}",
                show(&out)
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", show(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["cancelled"], true, "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));
    assert_whole(&t, &fs_);
    // Nothing is running now: cancel says so, and a new run is accepted and finishes.
    let out = t.cli(&["jobs", "cancel", &t.mnt_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    proxy.reset();
    t.migrate_ok(&["--mode", "copy-only"]);
    let (untouched, _) = assert_whole(&t, &fs_);
    assert_eq!(untouched, 0);
    assert_all_read_back(&t, &fs_);
}

// ------------------------------------------------------------------------------------------
// kill -9 at random points

/// A small deterministic generator (xorshift64*): a failing round reproduces from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The daemon killed (SIGKILL) at random moments of a policy run and of recalls, for a
/// few rounds (`COLDTIER_KILL_ROUNDS`, default 3; `scripts/kill-test.sh` runs more): after
/// each, a remount, and every file reads back byte-identical, `verify` and `audit` pass;
/// at the end, after gc past the retention, the bucket holds exactly the objects the
/// files' records name. Where in the run each kill lands varies; what must hold does not.
#[test]
fn random_kills_during_migrate_and_recall_lose_nothing() {
    let rounds: u64 = std::env::var("COLDTIER_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("COLDTIER_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c01d);
    eprintln!("random kills: {rounds} rounds, seed {seed}");
    let mut rng = Rng(seed);
    let mut spec: Vec<(String, usize)> = (0..24)
        .map(|i| {
            (
                format!("d{}/f{i:02}.bin", i % 3),
                2_000 + (i * 7_919) % 90_000,
            )
        })
        .collect();
    spec.push(("big.bin".into(), 11 << 20));
    let spec: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&spec);
    // The cold restart: the mount is left dead and mounted again (tests/restart.rs kills
    // daemons whose supervisor takes over without unmounting).
    let (_moto, proxy, mut t) = proxied("random-kills", &fs_, |c| {
        c.set("store", "part_size", &q("5MiB"))
            .set("store", "concurrency", "2")
            .set("mount", "restart_on_crash", "false")
    });
    // Slow the store a little so that the kills land in the middle of things.
    proxy.rules(
        json!([{"method": "*", "path_contains": "/data/", "action": "delay", "delay": 0.02}]),
    );
    for round in 0..rounds {
        let recall_round = round % 2 == 1;
        let what = format!(
            "round {round} ({}), seed {seed}",
            if recall_round { "recall" } else { "migrate" }
        );
        let mut workers: Vec<std::process::Child> = Vec::new();
        if recall_round {
            // Stub whatever is not yet, then read everything in parallel.
            t.migrate_ok(&["--mode", "stub"]);
            for (rel, _) in &fs_ {
                workers.push(
                    std::process::Command::new("cat")
                        .arg(t.m(rel))
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap(),
                );
            }
        } else {
            workers.push(
                std::process::Command::new(common::bin())
                    .args(["migrate", &t.mnt_str(), "--mode", "stub"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        std::thread::sleep(Duration::from_millis(50 + rng.next() % 400));
        let pid = daemon_pid(&t.mnt).expect("daemon pid");
        // SAFETY: killing the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        for mut w in workers {
            let _ = w.wait();
        }
        assert!(
            t.wait_dead(Duration::from_secs(15)),
            "{what}: the daemon lives"
        );
        t.detach_dead();
        t.remount();
        assert_all_read_back(&t, &fs_);
        let (code, v) = t.verify(false);
        assert_eq!(code, 0, "{what}: verify: {v}");
        let audit = t.ok(&["audit", &t.mnt_str()]);
        assert!(audit.contains("event chain intact"), "{what}: {audit}");
    }
    proxy.reset();
    t.migrate_ok(&["--mode", "stub"]);
    assert_all_read_back(&t, &fs_);
    t.migrate_ok(&["--mode", "stub"]);
    assert_bucket_is_exactly_what_is_referenced(&mut t, &fs_, "after the kills");
    assert_all_read_back(&t, &fs_);
}

// ------------------------------------------------------------------------------------------
// Users other than root

/// Runs coldtier as user nobody (65534), no supplementary groups.
fn as_nobody(args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::bin())
        .args(args)
        .output()
        .unwrap()
}

/// A user other than root may see `status`, `ls` and `history` of the files that user may
/// read (as the kernel decides for that user); a file or directory it may not read stays
/// hidden (no name given away by -r); anything else says it must be run as root.
#[test]
fn other_users_see_the_state_of_the_files_they_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let fs_ = files(&[
        ("open.bin", 20_000),
        ("closed.bin", 20_000),
        ("private/inner.bin", 20_000),
    ]);
    let (_moto, _proxy, t) = proxied("users", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    fs::set_permissions(t.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.m("closed.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(t.m("private"), fs::Permissions::from_mode(0o700)).unwrap();

    let out = as_nobody(&["status", &t.ms("open.bin"), "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["state"], "stub", "{v}");

    let out = as_nobody(&["status", &t.ms("closed.bin")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        show(&out)
    );

    let out = as_nobody(&["status", "-r", &t.mnt_str(), "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("open.bin") && !listed.contains("closed.bin"),
        "{}",
        show(&out)
    );
    assert!(
        !listed.contains("inner.bin"),
        "a name in a directory nobody may list: {listed}"
    );

    let out = as_nobody(&["history", &t.ms("open.bin"), "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("STUBBED"));
    let out = as_nobody(&["history", &t.ms("closed.bin")]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));

    let out = as_nobody(&["ls", &t.mnt_str()]);
    assert!(out.status.success(), "{}", show(&out));
    let out = as_nobody(&["ls", &t.ms("private")]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));

    for args in [
        vec!["migrate", t.mnt_str().leak() as &str, "--dry-run"],
        vec!["pin", t.ms("open.bin").leak() as &str],
        vec!["recall", t.ms("open.bin").leak() as &str],
        vec!["stats", t.mnt_str().leak() as &str],
        vec!["events", t.mnt_str().leak() as &str],
    ] {
        let out = as_nobody(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("must be run as root"),
            "{args:?}: {}",
            show(&out)
        );
    }
    assert_eq!(t.state("open.bin"), "stub", "nothing changed");
}

/// Every command exits quietly when its output is closed (`| head`), and `history` of a
/// deleted file shows its events.
#[test]
fn closed_pipes_end_commands_quietly_and_deleted_files_keep_their_history() {
    // Enough files that each listing is larger than a pipe's buffer (64 KiB): the command
    // is still writing when `head` has gone.
    let spec: Vec<(String, usize)> = (0..600).map(|i| (format!("f{i:03}.bin"), 100)).collect();
    let spec: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&spec);
    let (_moto, _proxy, t) = proxied("pipes", &fs_, |c| {
        c.set("policy", "include", "[\"f000.bin\"]")
    });
    t.migrate_ok(&["--mode", "stub"]);
    let bin = common::bin();
    for cmd in [
        format!(
            "'{}' status -r --json '{}' | head -2",
            bin.display(),
            t.mnt_str()
        ),
        format!(
            "'{}' events --json '{}' | head -1",
            bin.display(),
            t.mnt_str()
        ),
        format!("'{}' ls '{}' --json | head -1", bin.display(), t.mnt_str()),
    ] {
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("set -o pipefail; {cmd}; echo \"status ${{PIPESTATUS[0]}}\" >&2"),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("coldtier:"),
            "{cmd}: {err}"
        );
        let code: i32 = err.trim().rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            code == 0 || code == 128 + libc::SIGPIPE,
            "{cmd}: exit {code}: {err}"
        );
    }
    fs::remove_file(t.m("f000.bin")).unwrap();
    let out = t.ok(&["history", &t.ms("f000.bin"), "--json"]);
    let kinds: Vec<String> = parse_lines(&out)
        .into_iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        kinds.contains(&"STUBBED".to_string()) && kinds.contains(&"DELETED".to_string()),
        "{kinds:?}"
    );
}

/// `[limits]` bandwidth limits hold for uploads and recalls and follow a reload (SIGHUP);
/// `policy.max_duration` stops a run cleanly (the files under way finish, no other starts,
/// `stopped` says why, the job is not a failure) and the next run goes on with the rest.
/// Only lower bounds on time are asserted: a slower machine only makes them truer.
#[test]
fn bandwidth_limits_follow_a_reload_and_max_duration_stops_a_run_the_next_resumes() {
    let moto = tier::start_moto();
    let names: Vec<String> = (0..10).map(|i| format!("f{i}.bin")).collect();
    let spec: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 64 * 1024)).collect();
    let fs_ = files(&spec);
    // One part at a time: four files in flight at most.
    let t = TierMount::new(&moto, "limits", &fs_, |c| {
        c.set("store", "concurrency", "1")
    });
    let base = fs::read_to_string(&t.config_path).unwrap();
    let reload = |text: &str| {
        fs::write(&t.config_path, text).unwrap();
        signal_and_wait(&t, libc::SIGHUP, "config reloaded", &t.log_file);
    };
    reload(&format!(
        "{}\n[limits]\nupload_bwlimit = \"64KiB\"\ndownload_bwlimit = \"64KiB\"\n",
        base.replace("[policy]\n", "[policy]\nmax_duration = \"1s\"\n")
    ));

    let t0 = std::time::Instant::now();
    let v = t.migrate_ok(&["--mode", "stub"]);
    let took = t0.elapsed();
    let done = v["stubbed"].as_u64().unwrap();
    assert!(
        v["stopped"].as_str().unwrap_or("").contains("max_duration"),
        "{v}"
    );
    assert!(
        (1..10).contains(&done),
        "a 1 s run at 64 KiB/s cannot do all ten: {v}"
    );
    // Each file sent 64 KiB through a bucket of 64 KiB/s that starts full.
    assert!(
        took >= Duration::from_secs(done - 1),
        "{done} files of 64 KiB at 64 KiB/s in {took:?}"
    );
    let stubs: Vec<&String> = names.iter().filter(|n| t.state(n) == "stub").collect();
    assert_eq!(stubs.len() as u64, done, "{v}");
    for n in &names {
        assert!(matches!(t.state(n).as_str(), "stub" | "resident"), "{n}");
    }
    let jobs = t.ok(&["jobs", t.mnt_str().as_str(), "--json"]);
    assert!(
        !jobs.contains("cancelled"),
        "a run stopped by its limit is not cancelled: {jobs}"
    );

    // Recalls through the mount take their bytes from the download bucket.
    let t0 = std::time::Instant::now();
    for n in stubs.iter().take(3) {
        let data = &fs_.iter().find(|(p, _)| p == *n).unwrap().1;
        assert_bytes(n, &fs::read(t.m(n)).unwrap(), data);
    }
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "3 x 64 KiB recalled at 64 KiB/s in {:?}",
        t0.elapsed()
    );

    // Limits lifted by a reload: the next run does the rest (and stubs the three recalled
    // files again, from their copies).
    reload(&base);
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["copied"].as_u64(), Some(10 - done), "{v}");
    assert_eq!(v["stubbed"].as_u64(), Some(10 - done + 3), "{v}");
    assert!(v["stopped"].is_null(), "{v}");
    for (n, data) in &fs_ {
        assert_bytes(n, &fs::read(t.m(n)).unwrap(), data);
    }
}
