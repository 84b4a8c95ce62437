//! A coldtier mount served through real file servers: nfs-ganesha (FSAL_VFS, NFSv3 and
//! NFSv4, read with libnfs-utils and tests/nfs_client.py) and Samba's smbd (driven with
//! smbclient), each started by the test on 127.0.0.1 (tests/common/share.rs), over a
//! mount whose store is a real moto S3 server (tests/common/tier.rs). What works today:
//! reading resident files and stubs byte-identical, writing, renaming and deleting, and
//! listings and `allinfo` of stubs that never reach the store. The same harness serves a
//! native directory (the benchmark compares the two), and its handle and attribute pieces
//! are checked on a native export.

mod common;
#[allow(dead_code)]
#[path = "common/faults.rs"]
mod faults;
#[path = "common/share.rs"]
mod share;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coldtier::store::testing::MotoServer;
use common::kill_and_wait_for_the_next;
use faults::FaultProxy;
use serde_json::{json, Value};
use share::*;
use tier::*;

/// name -> size of the files `fs_` holds directly in `dir` ("" for the top).
fn expected_sizes(fs_: &Files, dir: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (rel, content) in fs_ {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if parent == dir {
            out.insert(name.to_string(), content.len() as u64);
        }
    }
    out
}

/// `listing` with the subdirectories `dirs` taken out (their sizes are the file system's):
/// panics unless each of them is there.
fn files_of(
    mut listing: BTreeMap<String, u64>,
    dirs: &[&str],
    what: &str,
) -> BTreeMap<String, u64> {
    for d in dirs {
        assert!(
            listing.remove(*d).is_some(),
            "{what}: directory {d} missing from {listing:?}"
        );
    }
    listing
}

/// The `stream: [::$DATA], N bytes` size of an `allinfo` output.
fn allinfo_data_size(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("[::$DATA]"))?;
    line.rsplit_once(',')?
        .1
        .trim()
        .strip_suffix("bytes")?
        .trim()
        .parse()
        .ok()
}

/// Object data GETs in `reqs` (e.g. the requests since a point).
fn gets(t: &TierMount, reqs: &[Request]) -> usize {
    data_gets(reqs, &t.bucket, None)
}

// ------------------------------------------------------------------------------------------
// Resident files

#[test]
fn resident_files_read_back_byte_identical_through_ganesha_and_samba() {
    let moto = start_moto();
    let fs_ = files(&[
        ("top.bin", 3 * 1024 * 1024 + 17),
        ("small.txt", 5),
        ("empty.bin", 0),
        ("d1/a.bin", 70_000),
        ("d1/d2/b.bin", 1),
    ]);
    let t = TierMount::new(&moto, "share-resident", &fs_, |c| c);
    let g = Ganesha::start(&t.mnt);
    let s = Samba::start(&t.mnt);

    for (rel, content) in &fs_ {
        assert_bytes(&format!("{rel} via NFSv3"), &g.read(Nfs::V3, rel), content);
        assert_bytes(&format!("{rel} via NFSv4"), &g.read(Nfs::V4, rel), content);
        assert_bytes(&format!("{rel} via SMB"), &s.get(rel), content);
    }
    for (dir, subdirs) in [("", &["d1"][..]), ("d1", &["d2"][..]), ("d1/d2", &[][..])] {
        let want = expected_sizes(&fs_, dir);
        let what = format!("listing of {dir:?}");
        assert_eq!(files_of(s.sizes(dir), subdirs, &what), want, "SMB {what}");
        assert_eq!(
            files_of(g.sizes(Nfs::V3, dir), subdirs, &what),
            want,
            "NFSv3 {what}"
        );
        assert_eq!(
            files_of(g.sizes(Nfs::V4, dir), subdirs, &what),
            want,
            "NFSv4 {what}"
        );
    }
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "resident", "{rel}");
    }
}

// ------------------------------------------------------------------------------------------
// Writes, renames, deletes

#[test]
fn writing_renaming_and_deleting_through_samba_reach_the_mount() {
    let moto = start_moto();
    let fs_ = files(&[
        ("old.bin", 40_000),
        ("d1/keep.bin", 1234),
        ("cold/a.bin", 30_000),
        ("cold/b.bin", 5000),
    ]);
    let t = TierMount::new(&moto, "share-smb-write", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let s = Samba::start(&t.mnt);

    // A new file, in a subdirectory.
    let new = data(901, 2 * 1024 * 1024 + 3);
    s.put_bytes(&new, "d1/new.bin");
    assert_bytes(
        "d1/new.bin through the mount",
        &read_ok(&t.m("d1/new.bin")),
        &new,
    );
    assert_bytes(
        "d1/new.bin in the source",
        &read_ok(&t.s("d1/new.bin")),
        &new,
    );
    assert_bytes("d1/new.bin back through SMB", &s.get("d1/new.bin"), &new);
    assert_eq!(t.state("d1/new.bin"), "resident");

    // A stub overwritten (by a shorter file).
    let over = data(902, 999);
    s.put_bytes(&over, "old.bin");
    assert_bytes(
        "old.bin through the mount",
        &read_ok(&t.m("old.bin")),
        &over,
    );
    assert_eq!(
        t.state("old.bin"),
        "resident",
        "old.bin after the overwrite"
    );

    // Rename within a directory and across directories; delete.
    s.rename("d1/new.bin", "d1/renamed.bin");
    assert!(
        !t.m("d1/new.bin").exists(),
        "d1/new.bin still there after the rename"
    );
    assert_bytes("d1/renamed.bin", &read_ok(&t.m("d1/renamed.bin")), &new);
    s.rename("d1/renamed.bin", "moved.bin");
    assert!(!t.m("d1/renamed.bin").exists());
    assert_bytes("moved.bin", &read_ok(&t.m("moved.bin")), &new);
    assert_bytes("moved.bin in the source", &read_ok(&t.s("moved.bin")), &new);
    s.del("moved.bin");
    assert!(
        !t.m("moved.bin").exists(),
        "moved.bin still there after del"
    );
    assert!(
        !t.s("moved.bin").exists(),
        "moved.bin still in the source after del"
    );

    // A stub renamed and a stub deleted: no data is fetched for either.
    let before = settled_requests(&moto).len();
    s.rename("cold/a.bin", "cold/a2.bin");
    s.del("cold/b.bin");
    let reqs = settled_requests(&moto);
    assert_eq!(
        gets(&t, &reqs[before..]),
        0,
        "rename/del of stubs: {:?}",
        &reqs[before..]
    );
    assert_eq!(
        t.state("cold/a2.bin"),
        "stub",
        "cold/a2.bin after the rename"
    );
    assert!(!t.m("cold/a.bin").exists() && !t.m("cold/b.bin").exists());
    assert_bytes("cold/a2.bin", &read_ok(&t.m("cold/a2.bin")), &fs_[2].1);

    // What SMB lists now is what the mount holds.
    assert_eq!(
        files_of(s.sizes(""), &["d1", "cold"], "SMB listing"),
        BTreeMap::from([("old.bin".to_string(), over.len() as u64)]),
        "SMB listing after the changes"
    );
    assert_eq!(
        s.sizes("d1"),
        BTreeMap::from([("keep.bin".to_string(), 1234)]),
        "SMB listing of d1"
    );
    assert_eq!(
        s.sizes("cold"),
        BTreeMap::from([("a2.bin".to_string(), 30_000)]),
        "SMB listing of cold"
    );
    // A file written through SMB gets the archive bit, kept in user.DOSATTRIB on the
    // backing file (through the mount).
    s.put_bytes(b"x", "flag.txt");
    let attrs = s.attributes("flag.txt");
    assert_ne!(attrs & FILE_ATTRIBUTE_ARCHIVE, 0, "attributes {attrs:#x}");
    assert!(
        xattr(&t.s("flag.txt"), "user.DOSATTRIB").is_some(),
        "smbd stored no user.DOSATTRIB on the backing file"
    );
}

#[test]
fn writing_renaming_and_deleting_through_ganesha_reach_the_mount() {
    let moto = start_moto();
    let fs_ = files(&[
        ("old.bin", 10_000),
        ("d1/keep.bin", 77),
        ("cold/a.bin", 20_000),
        ("cold/b.bin", 3000),
    ]);
    let t = TierMount::new(&moto, "share-nfs-write", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    let g = Ganesha::start(&t.mnt);
    let local = t.dir.path().join("upload.bin");

    // NFSv3: nfs-cp writes files of any size.
    let big = data(911, 3 * 1024 * 1024 + 5);
    std::fs::write(&local, &big).unwrap();
    let out = g.nfs_cp_in(Nfs::V3, &local, "d1/v3.bin");
    assert!(out.ok(), "{}\n{}", out.show(), g.log_tail());
    assert_bytes(
        "d1/v3.bin through the mount",
        &read_ok(&t.m("d1/v3.bin")),
        &big,
    );
    assert_eq!(t.state("d1/v3.bin"), "resident");

    // NFSv3 through the session client: write, rename, unlink.
    let mut c = NfsSession::connect(&g, Nfs::V3);
    let small = data(912, 50_000);
    c.write("s.bin", &small).expect("NFSv3 write");
    assert_bytes("s.bin through the mount", &read_ok(&t.m("s.bin")), &small);
    c.rename("s.bin", "d1/s2.bin").expect("NFSv3 rename");
    assert!(!t.m("s.bin").exists(), "s.bin still there after the rename");
    assert_bytes("d1/s2.bin", &read_ok(&t.m("d1/s2.bin")), &small);
    c.unlink("d1/s2.bin").expect("NFSv3 unlink");
    assert!(
        !t.m("d1/s2.bin").exists(),
        "d1/s2.bin still there after unlink"
    );
    assert!(!t.s("d1/s2.bin").exists(), "d1/s2.bin still in the source");
    // A stub overwritten.
    c.write("old.bin", b"short")
        .expect("NFSv3 overwrite of a stub");
    assert_eq!(read_ok(&t.m("old.bin")), b"short");

    // A stub renamed and a stub unlinked: no data is fetched for either.
    let before = settled_requests(&moto).len();
    c.rename("cold/a.bin", "cold/a2.bin")
        .expect("NFSv3 rename of a stub");
    c.unlink("cold/b.bin").expect("NFSv3 unlink of a stub");
    let reqs = settled_requests(&moto);
    assert_eq!(
        gets(&t, &reqs[before..]),
        0,
        "rename/unlink of stubs: {:?}",
        &reqs[before..]
    );
    assert_eq!(
        t.state("cold/a2.bin"),
        "stub",
        "cold/a2.bin after the rename"
    );
    assert!(!t.m("cold/a.bin").exists() && !t.m("cold/b.bin").exists());
    assert_bytes("cold/a2.bin", &read_ok(&t.m("cold/a2.bin")), &fs_[2].1);

    // NFSv4: libnfs 4.0 writes up to 3,500 bytes (see tests/common/share.rs).
    let v4 = data(913, 3000);
    std::fs::write(&local, &v4).unwrap();
    let out = g.nfs_cp_in(Nfs::V4, &local, "v4.bin");
    assert!(out.ok(), "{}\n{}", out.show(), g.log_tail());
    assert_bytes("v4.bin through the mount", &read_ok(&t.m("v4.bin")), &v4);

    // And the files read back through NFS.
    assert_bytes("d1/v3.bin via NFSv4", &g.read(Nfs::V4, "d1/v3.bin"), &big);
    let back = t.dir.path().join("download.bin");
    let out = g.nfs_cp_out(Nfs::V3, "d1/v3.bin", &back);
    assert!(out.ok(), "{}", out.show());
    assert_bytes("d1/v3.bin copied out", &std::fs::read(&back).unwrap(), &big);
    assert_eq!(
        g.sizes(Nfs::V3, "d1"),
        BTreeMap::from([
            ("keep.bin".to_string(), 77),
            ("v3.bin".to_string(), big.len() as u64)
        ])
    );
}

// ------------------------------------------------------------------------------------------
// Stubs

#[test]
fn stubs_read_through_samba_and_ganesha_come_back_byte_identical() {
    let moto = start_moto();
    let fs_ = files(&[
        ("smb.bin", 300_000),
        ("d/v3.bin", 200_000),
        ("d/v4.bin", 100_001),
        ("big-smb.bin", 6 * 1024 * 1024 + 1),
    ]);
    let t = TierMount::new(&moto, "share-stub-read", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel} after migrate");
        assert_eq!(
            std::fs::metadata(t.s(rel)).unwrap().len(),
            0,
            "{rel}: backing not freed"
        );
    }
    let keys: BTreeMap<String, String> = fs_
        .iter()
        .map(|(rel, _)| (rel.clone(), t.object_key(rel)))
        .collect();
    let g = Ganesha::start(&t.mnt);
    let s = Samba::start(&t.mnt);
    let content = |rel: &str| fs_.iter().find(|(r, _)| r == rel).unwrap().1.clone();

    // Each stub's first read goes through one server, which waits for the recall.
    let before = settled_requests(&moto).len();
    assert_bytes("smb.bin via SMB", &s.get("smb.bin"), &content("smb.bin"));
    assert_bytes(
        "big-smb.bin via SMB",
        &s.get("big-smb.bin"),
        &content("big-smb.bin"),
    );
    assert_bytes(
        "d/v3.bin via NFSv3",
        &g.read(Nfs::V3, "d/v3.bin"),
        &content("d/v3.bin"),
    );
    assert_bytes(
        "d/v4.bin via NFSv4",
        &g.read(Nfs::V4, "d/v4.bin"),
        &content("d/v4.bin"),
    );
    let reqs = settled_requests(&moto);
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "premigrated", "{rel} after its read");
        assert!(
            data_gets(&reqs[before..], &t.bucket, Some(&keys[rel])) >= 1,
            "{rel}: no GET of its object"
        );
        assert_bytes(
            &format!("{rel} in the source after the recall"),
            &read_ok(&t.s(rel)),
            &content(rel),
        );
    }
    // Recalled, each reads the same through the other servers.
    for (rel, c) in &fs_ {
        assert_bytes(&format!("{rel} via SMB"), &s.get(rel), c);
        assert_bytes(&format!("{rel} via NFSv3"), &g.read(Nfs::V3, rel), c);
        assert_bytes(&format!("{rel} via NFSv4"), &g.read(Nfs::V4, rel), c);
    }
}

/// A mount with 24 stubs in `cold/` and one in `cold/sub/`.
fn stub_tree(
    moto: &std::sync::Arc<coldtier::store::testing::MotoServer>,
    bucket: &str,
) -> (TierMount, Files) {
    let spec: Vec<(String, usize)> = (0..24)
        .map(|i| (format!("cold/f{i:02}.bin"), 1 + i * 7919))
        .chain([("cold/sub/deep.bin".to_string(), 12_345)])
        .collect();
    let spec_ref: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&spec_ref);
    let t = TierMount::new(moto, bucket, &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    for (rel, _) in &fs_ {
        assert_eq!(t.state(rel), "stub", "{rel}");
    }
    (t, fs_)
}

/// Every file of `fs_` is still a stub whose backing file holds no data.
fn assert_still_stubs(t: &TierMount, fs_: &Files, what: &str) {
    for (rel, _) in fs_ {
        assert_eq!(t.state(rel), "stub", "{rel} after {what}");
        assert_eq!(
            std::fs::metadata(t.s(rel)).unwrap().len(),
            0,
            "{rel}: backing file recalled by {what}"
        );
    }
}

#[test]
fn listings_and_attribute_queries_of_stubs_through_samba_and_ganesha_send_no_get() {
    let moto = start_moto();
    let (t, fs_) = stub_tree(&moto, "share-stub-list");
    let g = Ganesha::start(&t.mnt);
    let s = Samba::start(&t.mnt);
    let want = expected_sizes(&fs_, "cold");
    let want_sub = expected_sizes(&fs_, "cold/sub");

    let before = settled_requests(&moto);
    // Samba: the listings, and per file the queries that do not open it for data: `ls NAME`
    // (attributes and size), `altname`, `setmode` (user.DOSATTRIB).
    assert_eq!(
        files_of(s.sizes("cold"), &["sub"], "SMB"),
        want,
        "SMB listing of the stubs"
    );
    assert_eq!(s.sizes("cold/sub"), want_sub, "SMB listing of cold/sub");
    for (rel, content) in &fs_ {
        let one = parse_smb_ls(&s.smbclient_ok(&format!("ls {}", Samba::smb_path(rel))));
        assert_eq!(one.len(), 1, "ls {rel}: {one:?}");
        assert_eq!(one[0].size, content.len() as u64, "ls {rel}");
        assert!(
            one[0].attrs.contains('o'),
            "ls {rel}: a stub listed without 'o' (offline): {one:?}"
        );
        let alt = s.smbclient_ok(&format!("altname {}", Samba::smb_path(rel)));
        assert!(!alt.trim().is_empty(), "altname {rel}: no name");
    }
    s.smbclient_ok("setmode \"cold\\f00.bin\" +h");
    let f00 = parse_smb_ls(&s.smbclient_ok("ls \"cold\\f00.bin\""));
    assert!(
        f00[0].attrs.contains('H'),
        "cold/f00.bin after setmode +h: {f00:?}"
    );
    // ganesha: the listings over both versions, and a GETATTR of every file.
    for v in [Nfs::V3, Nfs::V4] {
        assert_eq!(
            files_of(g.sizes(v, "cold"), &["sub"], "NFS"),
            want,
            "{v:?} listing"
        );
        assert_eq!(
            g.sizes(v, "cold/sub"),
            want_sub,
            "{v:?} listing of cold/sub"
        );
        let mut c = NfsSession::connect(&g, v);
        for (rel, content) in &fs_ {
            let st = c
                .stat(rel)
                .unwrap_or_else(|e| panic!("{v:?} stat {rel}: {e}"));
            assert_eq!(
                st["size"].as_u64(),
                Some(content.len() as u64),
                "{v:?} stat {rel}"
            );
        }
    }
    let after = settled_requests(&moto);
    let new = &after[before.len()..];
    assert_eq!(
        object_requests(new, &t.bucket).len(),
        0,
        "listings and attribute queries sent requests to S3: {new:?}"
    );
    assert_still_stubs(&t, &fs_, "listings and attribute queries");
}

/// smbclient's `allinfo` opens the file with FILE_READ_DATA (to enumerate snapshots:
/// FSCTL_SRV_ENUMERATE_SNAPSHOTS), smbd opens it `/proc/self/fd/N` O_RDONLY|O_NONBLOCK and
/// reads nothing: no recall (an open of a stub fetches nothing, tier/hooks.rs
/// `before_open`). The attributes and stream size it prints are right.
#[test]
fn allinfo_of_stubs_through_samba_sends_no_get() {
    let moto = start_moto();
    let (t, fs_) = stub_tree(&moto, "share-stub-allinfo");
    let s = Samba::start(&t.mnt);
    let before = settled_requests(&moto).len();
    for (rel, content) in &fs_ {
        let text = s.allinfo(rel);
        assert!(
            parse_allinfo_attributes(&text).is_some(),
            "allinfo {rel}:\n{text}"
        );
        assert_eq!(
            allinfo_data_size(&text),
            Some(content.len() as u64),
            "allinfo {rel}:\n{text}"
        );
    }
    let reqs = settled_requests(&moto);
    assert_eq!(gets(&t, &reqs[before..]), 0, "allinfo sent GETs");
    assert_still_stubs(&t, &fs_, "allinfo");
}

/// Through Samba a stub shows FILE_ATTRIBUTE_OFFLINE (0x1000); a file whose data is local
/// does not; the bit follows a recall and a release. Samba's own attribute changes on a
/// stub (hidden, read-only) are kept, stored without the derived bit, and fetch nothing.
#[test]
fn stubs_show_offline_through_samba_and_the_bit_follows_recall_and_release() {
    const OFFLINE: u32 = 0x1000;
    const HIDDEN: u32 = 0x2;
    let moto = start_moto();
    let fs_ = files(&[("a.bin", 50_000), ("b.bin", 7_000)]);
    let t = TierMount::new(&moto, "share-offline", &fs_, |c| c);
    t.migrate_ok(&["--mode", "stub"]);
    std::fs::write(t.m("new.bin"), b"resident").unwrap();
    let s = Samba::start(&t.mnt);
    let before = settled_requests(&moto).len();
    for (rel, _) in &fs_ {
        let a = s.attributes(rel);
        assert_eq!(a & OFFLINE, OFFLINE, "{rel}: stub without OFFLINE: {a:#x}");
    }
    let a = s.attributes("new.bin");
    assert_eq!(a & OFFLINE, 0, "resident file with OFFLINE: {a:#x}");

    // Samba sets hidden on a stub: shown with OFFLINE, stored without it, nothing fetched.
    s.smbclient_ok("setmode a.bin +h");
    let a = s.attributes("a.bin");
    assert_eq!(
        a & (HIDDEN | OFFLINE),
        HIDDEN | OFFLINE,
        "after setmode +h: {a:#x}"
    );
    let stored = xattr(&t.s("a.bin"), "user.DOSATTRIB").expect("no user.DOSATTRIB stored");
    let attrib = u32::from_le_bytes(stored[12..16].try_into().unwrap());
    assert_eq!(attrib & OFFLINE, 0, "OFFLINE stored: {stored:02x?}");
    assert_eq!(attrib & HIDDEN, HIDDEN, "hidden not stored: {stored:02x?}");
    let reqs = settled_requests(&moto);
    assert_eq!(
        gets(&t, &reqs[before..]),
        0,
        "allinfo and setmode sent GETs"
    );
    assert_still_stubs(&t, &fs_, "allinfo and setmode");

    // A recall (a read through the mount): no OFFLINE, hidden kept.
    assert_bytes("a.bin", &std::fs::read(t.m("a.bin")).unwrap(), &fs_[0].1);
    assert_eq!(t.state("a.bin"), "premigrated");
    let a = s.attributes("a.bin");
    assert_eq!(a & (HIDDEN | OFFLINE), HIDDEN, "after the recall: {a:#x}");
    // A release: OFFLINE again, hidden kept.
    t.ok(&["release", &t.ms("a.bin")]);
    assert_eq!(t.state("a.bin"), "stub");
    let a = s.attributes("a.bin");
    assert_eq!(
        a & (HIDDEN | OFFLINE),
        HIDDEN | OFFLINE,
        "after the release: {a:#x}"
    );
}

/// Once ganesha's cached attributes of a file expire, FSAL_VFS refreshes them through
/// `open_by_handle_at(O_RDONLY)` and reads nothing: no recall. With
/// `Attr_Expiration_Time = 0` every listing and GETATTR refreshes.
#[test]
fn ganesha_attribute_refreshes_of_stubs_send_no_get() {
    let moto = start_moto();
    let (t, fs_) = stub_tree(&moto, "share-stub-getattr");
    let g = Ganesha::start_with_attr_expiration(&t.mnt, 0);
    let before = settled_requests(&moto).len();
    for v in [Nfs::V3, Nfs::V4] {
        assert_eq!(
            files_of(g.sizes(v, "cold"), &["sub"], "NFS"),
            expected_sizes(&fs_, "cold")
        );
        let mut c = NfsSession::connect(&g, v);
        for (rel, content) in &fs_ {
            let st = c
                .stat(rel)
                .unwrap_or_else(|e| panic!("{v:?} stat {rel}: {e}"));
            assert_eq!(st["size"].as_u64(), Some(content.len() as u64));
        }
    }
    let reqs = settled_requests(&moto);
    assert_eq!(gets(&t, &reqs[before..]), 0, "GETATTRs sent GETs");
    assert_still_stubs(&t, &fs_, "GETATTRs");
}

// ------------------------------------------------------------------------------------------
// NFS handles through ganesha: across cache drops, ganesha restarts, a daemon kill and a
// remount (docs/architecture.md, "NFS handles" and "Restart without unmount")

/// Drops the kernel's page cache, dentries and inodes: the mount's inodes that nothing holds
/// are evicted (the daemon gets FORGET for them), so that a handle of one makes the kernel
/// ask the daemon for its node id (a LOOKUP of ".").
fn drop_caches() {
    // SAFETY: sync() takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

fn record(mnt: &Path) -> Vec<String> {
    common::runtime_record(mnt)
}

fn st_dev(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .dev()
}

/// Small tmpfs mounts that hold anonymous device numbers (the pool FUSE mounts take theirs
/// from, lowest free first) until one of them holds `dev`, so that the next mount cannot get
/// `dev` again: a remount then gets another device number, as after a reboot or when other
/// mounts came and went in between. Unmounted on drop.
struct DevSquatters {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl DevSquatters {
    fn holding(dev: u64) -> DevSquatters {
        let dir = tempfile::Builder::new()
            .prefix("coldtier-devs")
            .tempdir()
            .unwrap();
        let mut s = DevSquatters {
            dir,
            mounts: Vec::new(),
        };
        for i in 0..64 {
            let p = s.dir.path().join(i.to_string());
            std::fs::create_dir(&p).unwrap();
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64k", "coldtier-devs"])
                .arg(&p)
                .status()
                .expect("mount(8)");
            assert!(st.success(), "mount -t tmpfs {}: {st}", p.display());
            s.mounts.push(p.clone());
            if st_dev(&p) == dev {
                break;
            }
        }
        s
    }
}

/// A loop device (`mount.fsid`'s mounts are made on one) held attached to a file of its
/// own, so that the next `fuseblk` mount gets another.
struct LoopSquatter {
    dev: PathBuf,
    _file: tempfile::NamedTempFile,
}

impl LoopSquatter {
    fn holding(dev: u64) -> LoopSquatter {
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        assert_eq!(
            major, 7,
            "a fuseblk mount with mount.fsid is on a loop device"
        );
        let path = PathBuf::from(format!("/dev/loop{minor}"));
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(64 << 10).unwrap();
        // The unmount lets the device go (autoclear); wait for it to be free.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("losetup")
                .arg(&path)
                .arg(file.path())
                .output()
                .expect("losetup");
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "losetup {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LoopSquatter {
            dev: path,
            _file: file,
        }
    }
}

impl Drop for LoopSquatter {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

impl Drop for DevSquatters {
    fn drop(&mut self) {
        for p in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

/// A file's NFS handle, taken through ganesha (a LOOKUP; nothing read), and the bytes it
/// must read.
#[derive(Clone)]
struct Held {
    rel: String,
    fh: Vec<u8>,
    want: Vec<u8>,
}

/// Takes the NFSv3 handle of each file of `fs_` through `c` (an open: LOOKUP only, no
/// READ, so ganesha opens nothing and a stub stays a stub).
fn take_handles(c: &mut NfsSession, fs_: &Files) -> Vec<Held> {
    fs_.iter()
        .map(|(rel, want)| {
            let f = c
                .open(rel)
                .unwrap_or_else(|e| panic!("NFSv3 open {rel}: {e}"));
            Held {
                rel: rel.clone(),
                fh: f.fh,
                want: want.clone(),
            }
        })
        .collect()
}

/// Every handle of `live` reads its file's bytes through `c` (one READ of the whole file,
/// through the raw handle); every handle of `gone` is refused with NFS3ERR_STALE.
fn assert_handles(
    c: &mut NfsSession,
    via: &NfsFile,
    live: &[Held],
    gone: &[Held],
    when: &str,
    g: &Ganesha,
) {
    for h in live {
        let got = c
            .read_fh(&h.fh, via, 0, h.want.len() as u64)
            .unwrap_or_else(|e| {
                panic!(
                    "{when}: {}'s handle {}: {e}\n{}",
                    h.rel,
                    hex::encode(&h.fh),
                    g.log_tail()
                )
            });
        assert_bytes(
            &format!("{when}: {} through its handle", h.rel),
            &got,
            &h.want,
        );
    }
    assert_stale(c, via, gone, when);
}

/// Every handle of `gone` is refused with NFS3ERR_STALE (never read).
fn assert_stale(c: &mut NfsSession, via: &NfsFile, gone: &[Held], when: &str) {
    for h in gone {
        match c.read_fh(&h.fh, via, 0, 4096) {
            Ok(b) => panic!(
                "{when}: the handle of {} (deleted) read {} bytes{}",
                h.rel,
                b.len(),
                if b == h.want {
                    " (the deleted file's)"
                } else {
                    ""
                }
            ),
            Err(e) => assert_eq!(
                e.nfs3,
                Some(NFS3ERR_STALE),
                "{when}: the handle of {} (deleted): {e}",
                h.rel
            ),
        }
    }
}

/// The files of the handle tests: stubs (`stubs`, in `cold/`, tiered first) and resident
/// files written through the mount after the migration, some deep in directories (a
/// ganesha restart's first listing of the export's root brings the root's entries back
/// into the kernel; theirs it does not). `via.bin` is the open file that lends its
/// NFS context to raw handles.
fn handle_tree(
    moto: &Arc<MotoServer>,
    bucket: &str,
    stubs: &[(&str, usize)],
    fsid: Option<&str>,
) -> (TierMount, Files) {
    let stubs = files(stubs);
    let fsid = fsid.map(str::to_string);
    let t = TierMount::new(moto, bucket, &stubs, move |c| match fsid {
        Some(f) => c.set("mount", "fsid", &q(&f)),
        None => c,
    });
    t.migrate_ok(&["--mode", "stub"]);
    let resident: Files = [
        ("via.bin", 10),
        ("top.bin", 200_000),
        ("d/mid.bin", 5000),
        ("d/e/deep.bin", 1),
        ("d/e/f/deeper.bin", 70_001),
    ]
    .iter()
    .enumerate()
    .map(|(i, (rel, n))| (rel.to_string(), data(700 + i as u64, *n)))
    .collect();
    write_files(&t.mnt, &resident);
    for (rel, _) in &stubs {
        assert_eq!(t.state(rel), "stub", "{rel}");
    }
    for (rel, _) in &resident {
        assert_eq!(t.state(rel), "resident", "{rel}");
    }
    let mut all = resident;
    all.extend(stubs);
    (t, all)
}

/// Files whose handles are taken and which are then deleted: `gone.bin` through the mount
/// (behind ganesha's back), `d/gone-nfs.bin` through NFS, and `replaced.bin` through the
/// mount with another file created under its name (on ext4 most likely with the same inode
/// number: the old handle must not open the new file). Their handles are taken before any
/// of them is read: a file ganesha has read stays open in ganesha (its fd cache), and an
/// open file outlives its name, on any file system.
fn delete_after_taking_handles(t: &TierMount, c: &mut NfsSession) -> (Vec<Held>, Vec<u8>) {
    let gone: Files = vec![
        ("gone.bin".to_string(), data(801, 3000)),
        ("d/gone-nfs.bin".to_string(), data(802, 4000)),
        ("replaced.bin".to_string(), data(803, 5000)),
    ];
    write_files(&t.mnt, &gone);
    let held = take_handles(c, &gone);
    std::fs::remove_file(t.m("gone.bin")).unwrap();
    c.unlink("d/gone-nfs.bin")
        .unwrap_or_else(|e| panic!("NFSv3 unlink d/gone-nfs.bin: {e}"));
    assert!(!t.m("d/gone-nfs.bin").exists());
    std::fs::remove_file(t.m("replaced.bin")).unwrap();
    let new = data(804, 5000);
    std::fs::write(t.m("replaced.bin"), &new).unwrap();
    (held, new)
}

/// The listing of `d` through NFSv3 (a new client: MOUNT, LOOKUP of `d`, READDIRPLUS).
fn assert_listing_of_d(g: &Ganesha, fs_: &Files, when: &str) {
    assert_eq!(
        files_of(g.sizes(Nfs::V3, "d"), &["e"], when),
        expected_sizes(fs_, "d"),
        "{when}: NFSv3 listing of d"
    );
}

/// NFS handles a client took through ganesha read their files after each of: a cache drop
/// with ganesha running (the kernel forgets the mount's inodes that ganesha does not hold
/// open; ganesha's own cache still has the handles and opens them again through the kernel,
/// which asks the daemon for each node id), a daemon kill -9 (the supervisor's next daemon
/// knows no node id the kernel holds), a cache drop while ganesha is down (ganesha's start
/// empties its cache: every handle comes back from the client), and a ganesha restart. A
/// stub is read for the first time after each step (a recall for a node id the daemon
/// learns from the map). Handles of deleted files give NFS3ERR_STALE at every step, never
/// bytes. An NFSv4 open file reads on across the drop and the kill (a libnfs 4.0 NFSv4
/// context does not survive a ganesha restart). Without the node-handle map (the daemon
/// answering ESTALE for a node id it does not hold) the first handle read after the cache
/// drop fails with NFS3ERR_STALE (as docs/benchmarks.md's "File servers" method note saw).
#[test]
fn nfs_handles_through_ganesha_read_after_cache_drops_a_daemon_kill_and_ganesha_restarts() {
    let moto = start_moto();
    let steps = [
        "a cache drop with ganesha running",
        "a daemon kill -9",
        "a cache drop with ganesha stopped",
        "a ganesha restart",
    ];
    // The stub read for the first time after each step.
    let stubs = [
        "cold/s0.bin",
        "cold/s1.bin",
        "cold/deep/s2.bin",
        "cold/s3.bin",
    ];
    let (t, fs_) = handle_tree(
        &moto,
        "share-handles",
        &[
            (stubs[0], 300_000),
            (stubs[1], 150_001),
            (stubs[2], 77_777),
            (stubs[3], 1),
        ],
        None,
    );
    let mut g = Ganesha::start(&t.mnt);
    let mut c = NfsSession::connect(&g, Nfs::V3);
    let via = c.open("via.bin").expect("open via.bin");
    let held = take_handles(&mut c, &fs_);
    let (gone, replaced_by) = delete_after_taking_handles(&t, &mut c);
    assert_stale(&mut c, &via, &gone, "right after the deletes");
    // An NFSv4 client with a file open (its own file: what ganesha holds open for it stays
    // in the kernel's cache).
    let mut c4 = NfsSession::connect(&g, Nfs::V4);
    let v4_want = data(805, 9000);
    std::fs::write(t.m("d/e/v4.bin"), &v4_want).unwrap();
    let f4 = c4.open("d/e/v4.bin").expect("NFSv4 open d/e/v4.bin");
    assert_bytes(
        "NFSv4 d/e/v4.bin",
        &c4.read_all(&f4, 9000).unwrap(),
        &v4_want,
    );
    let fs_d: Files = fs_
        .iter()
        .filter(|(rel, _)| rel.starts_with("d/"))
        .cloned()
        .chain([("d/e/v4.bin".to_string(), v4_want.clone())])
        .collect();

    for (i, step) in steps.iter().enumerate() {
        match i {
            0 => drop_caches(),
            1 => {
                kill_and_wait_for_the_next(&t.mnt);
            }
            2 => {
                c4.close(f4.clone()).expect("NFSv4 close");
                g.stop();
                drop_caches();
                g.start_again();
            }
            _ => g.restart(),
        }
        let when = format!("after {step}");
        // The stubs of the steps to come are untouched; this step's is read now, first
        // through its handle.
        for later in &stubs[i + 1..] {
            assert_eq!(t.state(later), "stub", "{later} {when}");
        }
        let live: Vec<Held> = held
            .iter()
            .filter(|h| !stubs[i + 1..].contains(&h.rel.as_str()))
            .cloned()
            .collect();
        assert_handles(&mut c, &via, &live, &gone, &when, &g);
        assert_eq!(t.state(stubs[i]), "premigrated", "{} {when}", stubs[i]);
        if i < 2 {
            assert_bytes(
                &format!("{when}: NFSv4 d/e/v4.bin"),
                &c4.read_all(&f4, 9000)
                    .unwrap_or_else(|e| panic!("{when}: NFSv4 read: {e}")),
                &v4_want,
            );
        }
        assert_listing_of_d(&g, &fs_d, &when);
    }
    // The file now under the replaced file's name reads by its name.
    assert_bytes(
        "replaced.bin by name",
        &g.read(Nfs::V3, "replaced.bin"),
        &replaced_by,
    );
}

/// The state a remount test starts from: a mount exported by ganesha with a fixed
/// `Filesystem_Id`, handles taken, some files deleted, then ganesha stopped, coldtier
/// unmounted and mounted again on another device number, ganesha started again.
struct Remounted {
    // Dropped in this order: ganesha before the mount it holds a copy of.
    g: Ganesha,
    t: TierMount,
    /// The fsid an NFSv3 client saw before the remount.
    fsid_before: u64,
    /// The NFSv3 handle of via.bin before the remount.
    via_before: Vec<u8>,
    held: Vec<Held>,
    gone: Vec<Held>,
    old_dev: u64,
}

/// The fsid of `rel` through a new NFSv3 client (libnfs's `st_dev` is fattr3's fsid; over
/// NFSv4 libnfs 4.0 gives 0).
fn nfs_fsid(g: &Ganesha, rel: &str) -> u64 {
    let mut c = NfsSession::connect(g, Nfs::V3);
    let st = c
        .stat(rel)
        .unwrap_or_else(|e| panic!("NFSv3 stat {rel}: {e}\n{}", g.log_tail()));
    st["dev"]
        .as_u64()
        .unwrap_or_else(|| panic!("stat {rel}: {st}"))
}

fn remounted(bucket: &str, filesystem_id: Option<&str>, fsid: Option<&str>) -> Remounted {
    let moto = start_moto();
    let (mut t, fs_) = handle_tree(
        &moto,
        bucket,
        &[("cold/s0.bin", 300_000), ("cold/deep/s1.bin", 5)],
        fsid,
    );
    let mut g = Ganesha::start_with(
        &t.mnt,
        ExportOptions {
            filesystem_id: filesystem_id.map(str::to_string),
            ..ExportOptions::default()
        },
    );
    let mut c = NfsSession::connect(&g, Nfs::V3);
    let via = c.open("via.bin").expect("open via.bin");
    let held = take_handles(&mut c, &fs_);
    let (gone, _) = delete_after_taking_handles(&t, &mut c);
    let fsid_before = nfs_fsid(&g, "top.bin");
    drop(c);
    // ganesha first: its mount namespace holds a copy of the mount, which would keep the
    // FUSE connection and its daemon alive.
    g.stop();
    let old_dev = st_dev(&t.mnt);
    t.umount();
    // The old device number taken by another device: the remount gets a new one.
    let squatters = match fsid {
        None => (Some(DevSquatters::holding(old_dev)), None),
        Some(_) => (None, Some(LoopSquatter::holding(old_dev))),
    };
    t.remount();
    drop(squatters);
    assert_ne!(
        st_dev(&t.mnt),
        old_dev,
        "the mount got its old device number again"
    );
    // ganesha sees the mounts there were when it started: start it after the mount.
    g.start_again();
    Remounted {
        g,
        t,
        fsid_before,
        via_before: via.fh,
        held,
        gone,
        old_dev,
    }
}

/// A coldtier remount (umount, mount: a new FUSE device number) under an export with a
/// fixed `Filesystem_Id`: NFSv3 clients see the same fsid after it (without the setting,
/// ganesha reports the device number: the comparison fails; libnfs 4.0 shows no NFSv4
/// fsid). The handles taken before are
/// ganesha's: [flags, fsid, the mount's own handle]; ganesha 4.3's FSAL_VFS puts the file
/// system's `statfs` f_fsid in them, or its device number when that is 0 (FUSE's always
/// is), whatever `Filesystem_Id` says (that sets only the fsid attribute), so after the
/// remount it maps none of them to the export (`nfs_handles_taken_before_a_remount_read_after_it`,
/// ignored, is the whole wish). What the daemon answers for is the mount's handle inside:
/// with ganesha's fsid bytes set to the new mount's (those that differ between via.bin's
/// handles before and after), every handle reads its file's bytes, stubs included (first
/// read after the remount), and the deleted files' give NFS3ERR_STALE. Without the
/// node-handle map they would all be NFS3ERR_STALE. An old handle as it was gives
/// NFS3ERR_STALE or the file's own bytes, never another file's.
#[test]
fn after_a_remount_the_export_keeps_its_fsid_and_the_mount_handles_in_nfs_handles_resolve() {
    let r = remounted("share-remount", Some("100.1"), None);
    let g = &r.g;
    // Filesystem_Id = 100.1 as NFSv3's 64-bit fsid (as measured: minor in the high half).
    assert_eq!(
        r.fsid_before,
        (1 << 32) | 100,
        "the NFSv3 fsid before the remount"
    );
    assert_eq!(
        nfs_fsid(g, "top.bin"),
        r.fsid_before,
        "the NFSv3 fsid clients see after the remount"
    );
    let mut c = NfsSession::connect(g, Nfs::V3);
    let via = c.open("via.bin").expect("open via.bin after the remount");
    // The old handles as they were: the right bytes or NFS3ERR_STALE.
    for h in r.held.iter().chain(&r.gone) {
        match c.read_fh(&h.fh, &via, 0, h.want.len() as u64) {
            Ok(b) => {
                assert!(
                    r.held.iter().any(|l| l.rel == h.rel),
                    "{}: read after its deletion",
                    h.rel
                );
                assert_bytes(&format!("{}'s old handle", h.rel), &b, &h.want);
            }
            Err(e) => assert_eq!(e.nfs3, Some(NFS3ERR_STALE), "{}'s old handle: {e}", h.rel),
        }
    }
    // ganesha's fsid bytes: where via.bin's handles before and after the remount differ.
    assert_eq!(via.fh.len(), r.via_before.len(), "handle lengths");
    let diff: Vec<usize> = (0..via.fh.len())
        .filter(|&i| via.fh[i] != r.via_before[i])
        .collect();
    assert!(
        !diff.is_empty(),
        "via.bin's handle is the same after the remount (device {:x})",
        r.old_dev
    );
    let rebase = |h: &Held| -> Held {
        assert_eq!(h.fh.len(), via.fh.len(), "{}: handle length", h.rel);
        let mut fh = h.fh.clone();
        for &i in &diff {
            fh[i] = via.fh[i];
        }
        Held { fh, ..h.clone() }
    };
    let live: Vec<Held> = r.held.iter().map(rebase).collect();
    let gone: Vec<Held> = r.gone.iter().map(rebase).collect();
    assert_handles(
        &mut c,
        &via,
        &live,
        &gone,
        "after the remount, ganesha's fsid set to the new mount's",
        g,
    );
    assert_eq!(r.t.state("cold/s0.bin"), "premigrated");
}

/// With `mount.fsid` set, the mount is a `fuseblk` on a loop device whose image carries that
/// UUID, and ganesha names the filesystem by it (libblkid) instead of the device number:
/// the handles taken before a coldtier remount, as they were, read their files after it
/// (stubs included, first read after the remount), the deleted files' give
/// NFS3ERR_STALE, though the remount got another loop device (the old one is held by
/// another file meanwhile). Without it every handle is NFS3ERR_STALE (the test above).
#[test]
fn nfs_handles_taken_before_a_remount_read_after_it() {
    let uuid = "6f1c2e3a-0b4d-4c5e-8f90-a1b2c3d4e5f6";
    let r = remounted("share-remount-fsid", None, Some(uuid));
    let mut c = NfsSession::connect(&r.g, Nfs::V3);
    let via = c.open("via.bin").expect("open via.bin after the remount");
    assert_eq!(via.fh, r.via_before, "via.bin's handle after the remount");
    assert_handles(&mut c, &via, &r.held, &r.gone, "after the remount", &r.g);
    assert_eq!(r.t.state("cold/s0.bin"), "premigrated");
    // What the kernel lists and libblkid reads: fuseblk on a loop device with the UUID.
    assert_eq!(
        common::fstype_at(&r.t.mnt).as_deref(),
        Some("fuseblk.coldtier")
    );
    let dev = common::source_at(&r.t.mnt).expect("the mount's source");
    assert_ne!(st_dev(&r.t.mnt), r.old_dev);
    let out = Command::new("blkid")
        .args(["-p", "-s", "UUID", "-o", "value"])
        .arg(&dev)
        .output()
        .expect("blkid");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        uuid,
        "blkid of {dev}"
    );
    // The unmount lets the loop device go: it detaches itself.
    let mut r = r;
    r.g.stop();
    r.t.umount();
    let backing = format!(
        "/sys/block/{}/loop/backing_file",
        dev.trim_start_matches("/dev/")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&backing).exists() {
        assert!(
            Instant::now() < deadline,
            "{dev} still attached after the unmount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A second mount given the `mount.fsid` of a mount that is up is refused (exit 2, naming
/// the key and the mount that has it): nfs-ganesha would skip one of the two filesystems
/// and send its handles to the other. Another UUID mounts.
#[test]
fn a_second_mount_with_the_same_fsid_is_refused() {
    let moto = start_moto();
    let uuid = "1e2d3c4b-5a69-4788-9aab-bccddeeff001";
    let stubs = files(&[("a.bin", 10)]);
    let first = TierMount::new(&moto, "share-fsid-1", &stubs, |c| {
        c.set("mount", "fsid", &q(uuid))
    });
    assert_eq!(
        common::fstype_at(&first.mnt).as_deref(),
        Some("fuseblk.coldtier")
    );
    let mut second = TierMount::prepared(&moto, &moto.endpoint, "share-fsid-2", &stubs, |c| {
        c.set("mount", "fsid", &q(&uuid.to_uppercase()))
    });
    let out = second.try_mount(&[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mount.fsid") && err.contains(first.mnt.to_str().unwrap()),
        "{err}"
    );
    let mut third = TierMount::prepared(&moto, &moto.endpoint, "share-fsid-3", &stubs, |c| {
        c.set("mount", "fsid", &q("1e2d3c4b-5a69-4788-9aab-bccddeeff002"))
    });
    third.mount_with_env(&[]);
    assert_eq!(
        common::fstype_at(&third.mnt).as_deref(),
        Some("fuseblk.coldtier")
    );
}

/// The unmount of a `fuseblk` mount (`mount.fsid`) waits, in the kernel and
/// uninterruptibly, for the daemon's answer to FUSE_DESTROY, which a stopped or hung daemon
/// never gives. `coldtier umount` must not hang with it: after `--timeout` it fails, naming
/// the fusectl file that ends the wait; with `--force` it aborts the connection itself.
/// Either way the mount is gone once the connection is aborted, its loop device detaches,
/// the daemon exits when it runs again, and the files are intact.
#[test]
fn umount_of_a_fuseblk_mount_whose_daemon_is_stopped_never_hangs() {
    let moto = start_moto();
    for (force, uuid) in [
        (false, "5a0b9c8d-7e6f-4a3b-9c2d-1e0f2a3b4c01"),
        (true, "5a0b9c8d-7e6f-4a3b-9c2d-1e0f2a3b4c02"),
    ] {
        let bucket = format!("share-stopped-umount-{force}");
        let mut t = TierMount::new(&moto, &bucket, &files(&[("a.bin", 5000)]), |c| {
            c.set("mount", "fsid", &q(uuid))
        });
        std::fs::write(t.m("b.txt"), b"written through the mount").unwrap();
        let loopdev = common::source_at(&t.mnt).expect("the mount's source");
        assert!(loopdev.starts_with("/dev/loop"), "{loopdev}");
        let pid = faults::daemon_pid(&t.mnt).expect("the daemon's pid");
        // SAFETY: a signal to the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let mnt = t.mnt_str();
        let mut args = vec!["umount", "--timeout", "2"];
        if force {
            args.push("--force");
        }
        args.push(&mnt);
        let out = t.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if force {
            assert!(out.status.success(), "{err}");
            assert!(err.contains("aborting FUSE connection"), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.contains(&format!("daemon {pid}, which has not answered")),
                "{err}"
            );
            // The command it names ends the wait.
            let abort = err
                .split("echo 1 > ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("no abort command in: {err}"));
            assert!(abort.starts_with("/sys/fs/fuse/connections/"), "{err}");
            std::fs::write(abort, "1").unwrap();
        }
        t.set_unmounted();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let t0 = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "daemon {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!common::is_mountpoint(&t.mnt), "{mnt} is still a mount");
        let backing = format!("/sys/block/{}/loop/backing_file", &loopdev["/dev/".len()..]);
        let t0 = Instant::now();
        while Path::new(&backing).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{loopdev} is still attached"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            std::fs::read(t.src.join("b.txt")).unwrap(),
            b"written through the mount"
        );
        assert_eq!(std::fs::metadata(t.src.join("a.bin")).unwrap().len(), 5000);
    }
}

/// A client reading files through the export in a loop (each file opened, read whole and
/// compared, closed, over and over; NFSv3, and NFSv4 where asked) while the daemon is killed
/// (kill -9) twice sees no error and the right bytes: a kill only pauses it (ganesha's
/// requests wait in the kernel for the supervisor's next daemon). Then a stub's first read
/// through the export, slowed at the store, is cut by a third kill: the next daemon recalls
/// it again and the client gets the file. `tweak` adjusts the mount's config.
fn reads_through_ganesha_across_daemon_kills(
    bucket: &str,
    tweak: impl FnOnce(Config) -> Config,
    versions: &[Nfs],
) {
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let stubs = files(&[("cold/big.bin", 8 << 20)]);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, bucket, &stubs, tweak);
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(t.state("cold/big.bin"), "stub");
    let resident: Files = vec![
        ("a.bin".to_string(), data(901, (1 << 20) + 3)),
        ("d/b.bin".to_string(), data(902, 200_000)),
        ("d/e/c.bin".to_string(), data(903, 10)),
    ];
    write_files(&t.mnt, &resident);
    let g = Ganesha::start(&t.mnt);

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut readers = Vec::new();
    for &v in versions {
        let mut c = NfsSession::connect(&g, v);
        let (stop, rounds, errors, files) = (
            stop.clone(),
            rounds.clone(),
            errors.clone(),
            resident.clone(),
        );
        readers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for (rel, want) in &files {
                    let got = c.open(rel).and_then(|f| {
                        let b = c.read_all(&f, want.len() as u64);
                        c.close(f).and(b)
                    });
                    match got {
                        Ok(b) if b == *want => {}
                        Ok(b) => errors.lock().unwrap().push(format!(
                            "{v:?} {rel}: {} bytes, not the {} written",
                            b.len(),
                            want.len()
                        )),
                        Err(e) => errors.lock().unwrap().push(format!("{v:?} {rel}: {e}")),
                    }
                }
                rounds.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let progress = |n: u64| {
        let start = rounds.load(Ordering::SeqCst);
        let t0 = Instant::now();
        while rounds.load(Ordering::SeqCst) < start + n {
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "the readers are stuck"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    progress(10);
    let mut pids = vec![record(&t.mnt)[0].clone()];
    for _ in 0..2 {
        pids.push(kill_and_wait_for_the_next(&t.mnt).to_string());
        progress(10);
    }

    // A stub's first read through the export, its recall slowed at the store, cut by a kill.
    proxy.rules(
        json!([{"method": "GET", "path_contains": "/data/", "action": "delay", "delay": 1.5}]),
    );
    let mut c = NfsSession::connect(&g, Nfs::V3);
    let big = stubs[0].1.clone();
    let reader = std::thread::spawn(move || {
        let f = c.open("cold/big.bin")?;
        c.read_all(&f, 8 << 20)
    });
    let t0 = Instant::now();
    loop {
        let out = t.cli(&["status", "--json", &t.ms("cold/big.bin")]);
        let state = serde_json::from_slice::<Value>(
            out.stdout.split(|b| *b == b'\n').next().unwrap_or(b""),
        )
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string));
        if state.as_deref() == Some("recalling") {
            break;
        }
        if reader.is_finished() {
            let r = reader.join().unwrap().map(|b| b.len());
            panic!(
                "the stub's read ended before its recall was seen: {r:?}\n{}",
                g.log_tail()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the recall never started (state {state:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    pids.push(kill_and_wait_for_the_next(&t.mnt).to_string());
    proxy.rules(json!([]));
    let got = reader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the stub's read across the kill: {e}\n{}", g.log_tail()));
    assert_bytes("cold/big.bin through NFSv3 across the kill", &got, &big);
    // Its chunks are served as they land: the read can end just before the recall checks
    // the whole object and makes the file premigrated.
    assert_eq!(
        t.wait_state("cold/big.bin", "premigrated", Duration::from_secs(30)),
        "premigrated"
    );

    progress(10);
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "the readers saw {} errors; the first:\n{}",
        errors.len(),
        errors[..errors.len().min(20)].join("\n")
    );
    pids.dedup();
    assert_eq!(pids.len(), 4, "three kills, three new daemons: {pids:?}");
}

/// NFSv3 reads through ganesha (which opens each file once, then reads through its own fd)
/// across daemon kills, with kernel passthrough (the default).
#[test]
fn nfsv3_reads_through_ganesha_across_daemon_kills_see_no_error_and_the_right_bytes() {
    reads_through_ganesha_across_daemon_kills("share-kill-v3", |c| c, &[Nfs::V3]);
}

/// The same on a `fuseblk` mount (`mount.fsid`): the loop device stays with the mount
/// across the daemon kills, as the connection does.
#[test]
fn nfsv3_reads_across_daemon_kills_on_a_fuseblk_mount_see_no_error() {
    reads_through_ganesha_across_daemon_kills(
        "share-kill-blk",
        |c| c.set("mount", "fsid", &q("0f6e5d4c-3b2a-4190-8877-665544332211")),
        &[Nfs::V3],
    );
}

/// NFSv3 and NFSv4 reads (an NFSv4 OPEN is an open of the file on the mount, each time)
/// across daemon kills, every read served by the daemon (`fuse.passthrough = false`).
#[test]
fn nfsv3_and_nfsv4_reads_across_daemon_kills_without_passthrough_see_no_error() {
    reads_through_ganesha_across_daemon_kills(
        "share-kill-nopt",
        |c| c.set("fuse", "passthrough", "false"),
        &[Nfs::V3, Nfs::V4],
    );
}

/// NFSv3 and NFSv4 reads across daemon kills with kernel passthrough (the default): the
/// NFSv4 OPENs of the files ganesha still holds open for NFSv3 (the previous daemon's
/// passthrough opens) open again under the next daemon, with the passthrough registration
/// it took over (tests/restart.rs `a_file_held_open_across_a_restart_opens_again` is the
/// same without ganesha).
#[test]
fn nfsv3_and_nfsv4_reads_through_ganesha_across_daemon_kills_see_no_error() {
    reads_through_ganesha_across_daemon_kills("share-kill-v4", |c| c, &[Nfs::V3, Nfs::V4]);
}

// ------------------------------------------------------------------------------------------
// A native directory through the same harness

/// A temp directory with `fs_` in it (no coldtier).
fn native_tree(fs_: &Files) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("coldtier-native-share")
        .tempdir()
        .unwrap();
    write_files(dir.path(), fs_);
    dir
}

#[test]
fn the_harness_serves_a_native_directory_through_both_servers() {
    let fs_ = files(&[("a.bin", 123_456), ("d/b.bin", 10), ("d/c.bin", 0)]);
    let dir = native_tree(&fs_);
    let g = Ganesha::start(dir.path());
    let s = Samba::start(dir.path());
    for (rel, content) in &fs_ {
        assert_bytes(&format!("{rel} via NFSv3"), &g.read(Nfs::V3, rel), content);
        assert_bytes(&format!("{rel} via NFSv4"), &g.read(Nfs::V4, rel), content);
        assert_bytes(&format!("{rel} via SMB"), &s.get(rel), content);
    }
    let want = expected_sizes(&fs_, "d");
    assert_eq!(s.sizes("d"), want, "SMB listing");
    assert_eq!(g.sizes(Nfs::V3, "d"), want, "NFSv3 listing");
    assert_eq!(g.sizes(Nfs::V4, "d"), want, "NFSv4 listing");
    let nfs = g.list(Nfs::V3, "d");
    assert!(
        nfs.iter().all(|e| e.name.starts_with('.') || e.uid == 0),
        "NFSv3 owners (root files, No_Root_Squash): {nfs:?}"
    );
    let nfs4 = g.list(Nfs::V4, "d");
    assert!(
        nfs4.iter().all(|e| e.name.starts_with('.') || e.uid == 0),
        "NFSv4 owners (Only_Numeric_Owners): {nfs4:?}"
    );

    // Writes through both land in the directory.
    let w = data(921, 100_000);
    s.put_bytes(&w, "d/smb.bin");
    assert_bytes(
        "d/smb.bin",
        &std::fs::read(dir.path().join("d/smb.bin")).unwrap(),
        &w,
    );
    let up = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(up.path(), &w).unwrap();
    let out = g.nfs_cp_in(Nfs::V3, up.path(), "d/nfs.bin");
    assert!(out.ok(), "{}", out.show());
    assert_bytes(
        "d/nfs.bin",
        &std::fs::read(dir.path().join("d/nfs.bin")).unwrap(),
        &w,
    );
    drop(s);
    drop(g);
}

// ------------------------------------------------------------------------------------------
// The harness's pieces for the handle and offline-attribute tests, checked on a native
// export (whose handles and attributes are the file system's own).

#[test]
fn an_nfs_handle_taken_before_a_ganesha_restart_reads_after_it_on_a_native_export() {
    let fs_ = files(&[("h.bin", 200_000), ("other.bin", 4096)]);
    let dir = native_tree(&fs_);
    let mut g = Ganesha::start(dir.path());
    let (port, mnt_port) = (g.nfs_port, g.mnt_port);

    let mut c = NfsSession::connect(&g, Nfs::V3);
    let f = c.open("h.bin").expect("open h.bin");
    assert!(!f.fh.is_empty(), "an empty handle");
    let st = c.stat("h.bin").expect("stat h.bin");
    assert_eq!(st["size"].as_u64(), Some(200_000), "{st}");
    assert_bytes("h.bin before", &c.read_all(&f, 200_000).unwrap(), &fs_[0].1);

    g.restart();
    assert_eq!(
        (g.nfs_port, g.mnt_port),
        (port, mnt_port),
        "ports after the restart"
    );

    // The same session, the same open file: its handle from before the restart.
    assert_bytes(
        "h.bin after the restart",
        &c.read_all(&f, 200_000).unwrap(),
        &fs_[0].1,
    );
    // A new session: the handle bytes from before, lent to another open file.
    let mut c2 = NfsSession::connect(&g, Nfs::V3);
    let other = c2.open("other.bin").expect("open other.bin");
    assert_ne!(other.fh, f.fh, "two files with one handle");
    let got = c2
        .read_fh(&f.fh, &other, 0, 100_000)
        .expect("read through the old handle");
    assert_bytes("h.bin through the saved handle", &got, &fs_[0].1[..100_000]);
    // FSAL_VFS on ext4: the same file has the same handle after the restart.
    let again = c2.open("h.bin").expect("open h.bin again");
    assert_eq!(
        hex::encode(&again.fh),
        hex::encode(&f.fh),
        "h.bin's handle after the restart"
    );
    // A handle the server never gave is refused, not read.
    let mut bogus = f.fh.clone();
    let n = bogus.len();
    bogus[n - 1] ^= 0xff;
    bogus[n / 2] ^= 0xff;
    assert!(
        c2.read_fh(&bogus, &other, 0, 10).is_err(),
        "a corrupted handle was read"
    );
    c2.close(other).unwrap();
    c.close(f).unwrap();
}

#[test]
fn allinfo_attribute_bits_follow_setmode_on_a_native_share() {
    let fs_ = files(&[("plain.bin", 10), ("d/x.bin", 1)]);
    let dir = native_tree(&fs_);
    let s = Samba::start(dir.path());

    // A file nobody set attributes on: just "normal" (no user.DOSATTRIB yet, mode 0644).
    assert_eq!(s.attributes("plain.bin"), FILE_ATTRIBUTE_NORMAL);
    assert_ne!(
        s.attributes("d") & FILE_ATTRIBUTE_DIRECTORY,
        0,
        "d is a directory"
    );
    s.smbclient_ok("setmode plain.bin +h");
    assert_eq!(s.attributes("plain.bin"), FILE_ATTRIBUTE_HIDDEN);
    s.smbclient_ok("setmode plain.bin +rs");
    assert_eq!(
        s.attributes("plain.bin"),
        FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_SYSTEM
    );
    s.smbclient_ok("setmode plain.bin -hrs");
    s.smbclient_ok("setmode plain.bin +a");
    assert_eq!(s.attributes("plain.bin"), FILE_ATTRIBUTE_ARCHIVE);
    // smbd keeps them in the backing file's user.DOSATTRIB.
    assert!(xattr(&dir.path().join("plain.bin"), "user.DOSATTRIB").is_some());
    // The ls letters agree.
    let ls = s.ls("");
    let plain = ls
        .iter()
        .find(|e| e.name == "plain.bin")
        .expect("plain.bin listed");
    assert_eq!((plain.attrs.as_str(), plain.size), ("A", 10), "{ls:?}");
}

// ------------------------------------------------------------------------------------------
// The parsers, on fixed text

#[test]
fn parsers_read_smbclient_and_nfs_ls_output() {
    assert_eq!(parse_allinfo_attributes("attributes:  (80)\n"), Some(0x80));
    let allinfo = "altname: F.BIN\ncreate_time:    Sat Dec  5 13:45:36 2026 UTC\n\
                   attributes: A (20)\nstream: [::$DATA], 3000000 bytes\n";
    assert_eq!(
        parse_allinfo_attributes(allinfo),
        Some(FILE_ATTRIBUTE_ARCHIVE)
    );
    assert_eq!(allinfo_data_size(allinfo), Some(3_000_000));
    assert_eq!(
        parse_allinfo_attributes("attributes: AO (401020)"),
        Some(
            FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_OFFLINE | FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS
        )
    );
    assert_eq!(parse_allinfo_attributes("no such line"), None);

    let ls = "  .                                   D        0  Sat Dec  5 13:45:07 2026\n\
              \x20 a.txt                               N        3  Sat Dec  5 13:45:07 2026\n\
              \x20 name with space.bin                 A  3000000  Sat Dec  5 13:45:36 2026\n\
              \x20 sub                                 D        0  Sat Dec  5 13:45:36 2026\n\
              \n\t\t264212084 blocks of size 1024. 46108008 blocks available\n";
    let got = parse_smb_ls(ls);
    let want = [
        (".", "D", 0),
        ("a.txt", "N", 3),
        ("name with space.bin", "A", 3_000_000),
        ("sub", "D", 0),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (e, (n, a, s)) in got.iter().zip(want) {
        assert_eq!((e.name.as_str(), e.attrs.as_str(), e.size), (n, a, s));
    }

    let nfs = "-rw-r--r--  1     0     0      5000000 big\n\
               drwxr-xr-x  2  1000   100         4096 a dir\n";
    let got = parse_nfs_ls(nfs);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].name.as_str(), got[0].size, got[0].uid),
        ("big", 5_000_000, 0)
    );
    assert_eq!(
        (
            got[1].name.as_str(),
            got[1].mode.as_str(),
            got[1].uid,
            got[1].gid
        ),
        ("a dir", "drwxr-xr-x", 1000, 100)
    );
}
