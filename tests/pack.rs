//! Small files packed into pack objects (issue 16, part 1): a real coldtier mount over
//! moto and over s3s-fs with `[pack] enabled`. The packs open with GNU tar (byte-identical
//! members), each member's recall is one ranged GET of the pack, verify --deep reads the
//! members back, an archived pack is restored once for all its members, gc keeps a pack
//! while any file names it and deletes it (and its index) after the last.

mod common;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use coldtier::store::testing::S3sServer;
use serde_json::Value;
use tier::*;

/// 40 small files (in directories, one with a path longer than ustar's 100 bytes, one
/// with a UTF-8 name) and one large file.
fn tree() -> Files {
    let long = format!("deep/{}/{}.dat", "d".repeat(60), "n".repeat(70));
    let mut spec: Vec<(String, usize)> = (0..38)
        .map(|i| (format!("dir{}/f{i:02}.txt", i % 4), 1 + (i * 7919) % 60_000))
        .collect();
    spec.push((long, 4096));
    spec.push(("ünïcode/ñame.bin".into(), 513));
    // macOS's folder icon file, common on SMB shares: a control character in its name.
    spec.push(("mac/Icon\r".into(), 300));
    spec.push(("big.bin".into(), 3 << 20));
    let refs: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    files(&refs)
}

fn packed(c: Config) -> Config {
    c.set("pack", "enabled", "true")
        .set("pack", "max_member_size", &q("1MiB"))
        .set("pack", "target_size", &q("1MiB"))
}

/// Lists and extracts `tar` with GNU tar into `dir`; the member names it lists.
fn untar(tar: &Path, dir: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .args(["--quoting-style=literal", "-tf"])
        .arg(tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -t: {}", show(&out));
    // split, not lines(): a name may end in `\r`.
    let names = String::from_utf8(out.stdout)
        .unwrap()
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    fs::create_dir_all(dir).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -x: {}", show(&out));
    names
}

/// Checks every pack's members against the tree: each small file is in exactly one pack,
/// byte-identical after `tar -x`, as its index says.
fn check_packs(fs_: &Files, packs: &[(String, Vec<u8>, Value)], scratch: &Path) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, (key, tar_bytes, index)) in packs.iter().enumerate() {
        let tar = scratch.join(format!("p{i}.tar"));
        fs::write(&tar, tar_bytes).unwrap();
        let dir = scratch.join(format!("x{i}"));
        let names = untar(&tar, &dir);
        assert_eq!(index["format"], "coldtier-pack-index", "{index}");
        assert!(key.ends_with(&format!("{}.tar", index["pack_id"].as_str().unwrap())));
        let members = index["members"].as_array().unwrap();
        assert_eq!(members.len(), names.len(), "{key}: {names:?}");
        for m in members {
            let path = m["path"].as_str().unwrap();
            assert!(
                names.iter().any(|n| n == path),
                "{path} not in tar -t {names:?}"
            );
            let want = &fs_.iter().find(|(r, _)| r == path).unwrap().1;
            assert_bytes(
                &format!("{path} from tar -x"),
                &fs::read(dir.join(path)).unwrap(),
                want,
            );
            let (off, size) = (m["offset"].as_u64().unwrap(), m["size"].as_u64().unwrap());
            assert_eq!(size, want.len() as u64);
            assert_bytes(
                &format!("{path} at its index offset"),
                &tar_bytes[off as usize..(off + size) as usize],
                want,
            );
            assert!(seen.insert(path.to_string()), "{path} in two packs");
        }
    }
    let small: Vec<&String> = fs_
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !["big.bin", "large.bin"].contains(&r.as_str()))
        .collect();
    assert_eq!(seen.len(), small.len(), "every small file is packed once");
}

#[test]
fn packs_on_moto_open_with_tar_recall_with_one_ranged_get_and_gc_after_the_last_member() {
    let moto = start_moto();
    let fs_ = tree();
    // No repack here (a pack with one member left would be): gc_repacks_... tests it.
    let mut t = TierMount::new(&moto, "packs", &fs_, |c| {
        packed(c).set("pack", "repack_below", "0")
    });
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
    assert_eq!(v["stubbed"].as_u64(), Some(fs_.len() as u64), "{v}");

    // The bucket: packs and their indexes, and one object for the large file.
    let keys = t.objects();
    let tars: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("t/packs/") && k.ends_with(".tar"))
        .collect();
    let idx: Vec<&String> = keys.iter().filter(|k| k.ends_with(".index.json")).collect();
    let data: Vec<&String> = keys.iter().filter(|k| k.starts_with("t/data/")).collect();
    assert!(
        tars.len() >= 2,
        "a 1 MiB target makes several packs: {keys:?}"
    );
    assert_eq!(idx.len(), tars.len(), "{keys:?}");
    assert_eq!(
        data.len(),
        1,
        "only big.bin has an object of its own: {keys:?}"
    );
    for (rel, _) in &fs_ {
        let st = t.status(rel);
        assert_eq!(st["state"], "stub", "{rel}: {st}");
        let key = st["object_key"].as_str().unwrap();
        assert_eq!(key.contains("/packs/"), rel != "big.bin", "{rel}: {st}");
        // The stub's blocks are freed.
        assert_eq!(fs::metadata(t.s(rel)).unwrap().len(), 0, "{rel}");
    }
    let stats: Value =
        serde_json::from_str(&t.ok(&["stats", t.mnt_str().as_str(), "--json"])).unwrap();
    assert_eq!(
        stats["packs"]["packs"].as_u64(),
        Some(tars.len() as u64),
        "{stats}"
    );
    assert_eq!(
        stats["packs"]["members"].as_u64(),
        Some(fs_.len() as u64 - 1),
        "{stats}"
    );
    let text = t.ok(&["stats", t.mnt_str().as_str()]);
    assert!(
        text.contains(&format!(
            "packs: {} holding {} files",
            tars.len(),
            fs_.len() - 1
        )),
        "{text}"
    );
    let kinds = t.kinds(&fs_[0].0);
    assert_eq!(
        only(&kinds, &["COPIED", "VERIFIED", "STUBBED"]),
        ["COPIED", "VERIFIED", "STUBBED"]
    );

    // Each pack opens with GNU tar; its members are the files, byte for byte.
    let packs: Vec<(String, Vec<u8>, Value)> = tars
        .iter()
        .map(|k| {
            let (st, body) = moto.http("GET", &format!("/packs/{k}"), &[], b"").unwrap();
            assert_eq!(st, 200, "{k}");
            let ik = k.replace(".tar", ".index.json");
            let (st, ib) = moto.http("GET", &format!("/packs/{ik}"), &[], b"").unwrap();
            assert_eq!(st, 200, "{ik}");
            ((*k).clone(), body, serde_json::from_slice(&ib).unwrap())
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    check_packs(&fs_, &packs, scratch.path());
    // status names each member's pack and offset (as its index does).
    for m in packs[0].2["members"].as_array().unwrap() {
        let st = t.status(m["path"].as_str().unwrap());
        assert_eq!(st["pack_offset"], m["offset"], "{st}");
        assert_eq!(st["object_key"].as_str(), Some(packs[0].0.as_str()), "{st}");
    }
    let text = t.ok(&["status", t.m(&fs_[0].0).to_str().unwrap()]);
    assert!(text.contains(" @"), "{text}");
    // find --pack: the members of every pack (all but big.bin), or of one pack (the
    // files its index lists), each with its pack id.
    let mnt = t.mnt_str();
    let found = |pack: &str| -> Vec<Value> {
        parse_lines(&t.ok(&["find", mnt.as_str(), "--pack", pack, "--json"]))
    };
    let any = found("any");
    assert_eq!(any.len(), fs_.len() - 1, "find --pack any: {any:?}");
    assert!(any.iter().all(|f| f["rel_path"] != "big.bin"), "{any:?}");
    let first_id = packs[0]
        .0
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".tar");
    let mut listed: Vec<String> = packs[0].2["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let one = found(first_id);
    let mut got: Vec<String> = one
        .iter()
        .map(|f| f["rel_path"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, listed, "find --pack {first_id}");
    assert!(one.iter().all(|f| f["pack_id"] == first_id), "{one:?}");
    let bad = t.cli(&["find", mnt.as_str(), "--pack", "nope"]);
    assert!(!bad.status.success(), "find --pack nope: {}", show(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--pack"),
        "{}",
        show(&bad)
    );

    // A member's recall is one GET of its pack (a ranged one: the pack is larger).
    let rel = &fs_[5].0;
    let key = t.object_key(rel);
    let bucket_key = key.clone();
    let before = data_gets(&settled_requests(&moto), "packs", Some(&bucket_key));
    assert_bytes(rel, &read_ok(&t.m(rel)), &fs_[5].1);
    let after = data_gets(&settled_requests(&moto), "packs", Some(&bucket_key));
    assert_eq!(after - before, 1, "one GET of {bucket_key} for one member");
    assert_eq!(t.state(rel), "premigrated");
    // Reading the others in order: a member's GET reads ahead in its pack, the members
    // after it come from that span (each still checked against its own checksum).
    let reqs = settled_requests(&moto);
    let gets = |reqs: &[Request]| -> usize {
        tars.iter().map(|k| data_gets(reqs, "packs", Some(k))).sum()
    };
    let before = gets(&reqs);
    assert_all_read_back(&t, &fs_);
    let reqs = settled_requests(&moto);
    let members = fs_.len() - 2;
    assert!(
        gets(&reqs) - before <= members / 2,
        "{} GETs of packs for {members} members read in order",
        gets(&reqs) - before
    );

    // verify reads every member back from its pack.
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep: {v}");

    // A bulk recall fetches each pack once for all its members.
    t.ok(&["release", "-r", t.mnt_str().as_str()]);
    let reqs = settled_requests(&moto);
    let before: Vec<usize> = packs
        .iter()
        .map(|p| data_gets(&reqs, "packs", Some(&p.0)))
        .collect();
    t.ok(&["recall", "-r", t.mnt_str().as_str()]);
    let reqs = settled_requests(&moto);
    for (p, b) in packs.iter().zip(&before) {
        assert_eq!(
            data_gets(&reqs, "packs", Some(&p.0)) - b,
            1,
            "one GET of {} for all its members",
            p.0
        );
    }
    for (rel, content) in &fs_ {
        assert_eq!(t.state(rel), "premigrated", "{rel}");
        assert_bytes(rel, &fs::read(t.s(rel)).unwrap(), content);
    }

    // Release them again, then delete all members of one pack but one, and change one
    // through the mount: the pack stays while a file names it.
    t.ok(&["release", "-r", t.mnt_str().as_str()]);
    let first = &packs[0].2["members"];
    let members: Vec<String> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap().to_string())
        .collect();
    for m in &members[1..] {
        fs::remove_file(t.m(m)).unwrap();
    }
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, &(RETENTION_SECS + 60).to_string())]);
    t.ok(&["gc", t.mnt_str().as_str()]);
    let keys = t.objects();
    assert!(
        keys.contains(&packs[0].0),
        "a pack a file names stays: {keys:?}"
    );
    let last = &members[0];
    let want = &fs_.iter().find(|(r, _)| r == last).unwrap().1;
    assert_bytes(last, &read_ok(&t.m(last)), want);
    // The last member changes: its copy is superseded; gc then deletes the pack and its
    // index (after the retention).
    fs::write(t.m(last), b"new content").unwrap();
    t.ok(&["gc", t.mnt_str().as_str()]);
    let keys = t.objects();
    assert!(
        !keys.contains(&packs[0].0),
        "the pack nobody names is gone: {keys:?}"
    );
    assert!(
        !keys.contains(&packs[0].0.replace(".tar", ".index.json")),
        "its index too: {keys:?}"
    );
    for p in &packs[1..] {
        assert!(keys.contains(&p.0), "other packs stay: {keys:?}");
    }
    for (rel, content) in &fs_ {
        if !members.contains(rel) {
            assert_bytes(rel, &read_ok(&t.m(rel)), content);
        }
    }
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep after gc: {v}");
}

#[test]
fn packs_on_s3s_fs_are_tar_files_in_its_tree_and_recall_byte_identical() {
    let sdir = tempfile::tempdir().unwrap();
    let s3s = S3sServer::start(sdir.path()).unwrap_or_else(|e| panic!("{e}"));
    s3s.create_bucket("packs3s").unwrap();
    // Beside the members, a file of three parts' size: s3s-fs proves no multipart upload,
    // so it goes in one streamed PUT, which s3s-fs's answer proves (no read-back).
    let mut fs_ = tree();
    fs_.extend(files(&[("large.bin", 2 * (5 << 20) + 4321)]));
    let t = TierMount::at_endpoint(&s3s.endpoint, "packs3s", &fs_, |c| {
        packed(c)
            .set("store", "access_key", &q(&s3s.key_id))
            .set("store", "secret_key", &q(&s3s.secret))
            .set("store", "request_checksum", &q("when_required"))
            .set("store", "part_size", &q("5MiB"))
    });
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
    assert_eq!(v["stubbed"].as_u64(), Some(fs_.len() as u64), "{v}");
    let h = t.history("large.bin");
    let event = |kind: &str| {
        h.iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}: {h:?}"))
            .clone()
    };
    assert_eq!(event("COPIED")["detail"]["parts"], 1, "{h:?}");
    assert_eq!(
        event("VERIFIED")["detail"]["verify"],
        "checksum (upload answer)",
        "{h:?}"
    );
    // s3s-fs keeps each object as a file: the packs are tar files on its disk.
    let dir = sdir.path().join("packs3s/t/packs");
    let mut packs = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if let Some(stem) = name.strip_suffix(".tar") {
            let index: Value =
                serde_json::from_slice(&fs::read(dir.join(format!("{stem}.index.json"))).unwrap())
                    .unwrap();
            packs.push((format!("t/packs/{name}"), fs::read(&p).unwrap(), index));
        }
    }
    assert!(packs.len() >= 2, "{}", dir.display());
    let scratch = tempfile::tempdir().unwrap();
    check_packs(&fs_, &packs, scratch.path());
    assert_all_read_back(&t, &fs_);
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep: {v}");

    // gc past the retention deletes a deleted file's object from s3s-fs, which has no
    // versions and cannot list them.
    let mut t = t;
    let large = sdir.path().join("packs3s").join(t.object_key("large.bin"));
    assert!(large.exists(), "{}", large.display());
    fs::remove_file(t.m("large.bin")).unwrap();
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, &(RETENTION_SECS + 60).to_string())]);
    let v: Value = serde_json::from_str(&t.ok(&["gc", t.mnt_str().as_str(), "--json"])).unwrap();
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["deleted"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(!large.exists(), "gc deleted the object from s3s-fs");
}

/// A pack of at most a part is built in memory and goes in one PUT; a larger one (a target
/// above the part size) is built in a temporary file on the source and goes in parts. Both
/// are proven, and every member recalls byte-identical.
#[test]
fn a_pack_within_a_part_goes_from_memory_in_one_put_and_a_larger_one_in_parts() {
    let moto = start_moto();
    // Ten members of 900 KiB: a 7 MiB target closes the first pack at seven (about
    // 6.2 MiB: above the 5 MiB part), the other three make a pack within a part.
    let spec: Vec<(String, usize)> = (0..10)
        .map(|i| (format!("m/{i:02}.dat"), 900 << 10))
        .collect();
    let refs: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&refs);
    let t = TierMount::new(&moto, "packparts", &fs_, |c| {
        packed(c)
            .set("pack", "target_size", &q("7MiB"))
            .set("store", "part_size", &q("5MiB"))
    });
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
    assert_eq!(v["stubbed"].as_u64(), Some(fs_.len() as u64), "{v}");
    let db = rusqlite::Connection::open_with_flags(
        &t.catalog,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut packs: Vec<(u64, u64, u64)> = db
        .prepare("SELECT detail FROM events WHERE kind = 'PACKED' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| {
            let d: Value = serde_json::from_str(&d.unwrap()).unwrap();
            let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("{k}: {d}"));
            (n("members"), n("bytes"), n("parts"))
        })
        .collect();
    packs.sort();
    assert_eq!(packs.len(), 2, "{packs:?}");
    let ((small_n, small_bytes, small_parts), (big_n, big_bytes, big_parts)) = (packs[0], packs[1]);
    assert_eq!((small_n, big_n), (3, 7), "{packs:?}");
    assert!(small_bytes <= 5 << 20 && big_bytes > 5 << 20, "{packs:?}");
    assert_eq!(small_parts, 1, "a pack within a part is one PUT: {packs:?}");
    assert_eq!(
        big_parts, 2,
        "a pack above the part goes in parts: {packs:?}"
    );
    assert_all_read_back(&t, &fs_);
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep: {v}");
}

/// A member's stub keeps its record inside the inode: no block, no `id` xattr beside the
/// compact record (docs/architecture.md "Compact stub records"), and it is still the same
/// file to every part of coldtier: status, rename, recall, release, verify.
#[test]
fn a_member_stub_costs_no_block_and_stays_the_same_file() {
    use std::os::unix::fs::MetadataExt;
    let moto = start_moto();
    let fs_ = tree();
    let t = TierMount::new(&moto, "packinode", &fs_, packed);
    t.migrate_ok(&["--mode", "stub"]);
    let members: Vec<&str> = fs_
        .iter()
        .map(|(r, _)| r.as_str())
        .filter(|r| *r != "big.bin")
        .collect();
    let id_of = |rel: &str| t.status(rel)["file_id"].as_str().unwrap().to_string();
    let check_compact = |rel: &str, backing: &Path| {
        let rec = xattr(backing, "trusted.coldtier.stub").expect("a stub record");
        assert_eq!(rec[0], 2, "{rel}: the compact form ({} bytes)", rec.len());
        assert!(rec.len() <= 56, "{rel}: {} bytes", rec.len());
        assert_eq!(xattr(backing, "trusted.coldtier.id"), None, "{rel}");
        assert_eq!(xattr(backing, "trusted.coldtier.copy"), None, "{rel}");
        let md = fs::symlink_metadata(backing).unwrap();
        assert_eq!(
            (md.len(), md.blocks()),
            (0, 0),
            "{rel}: a stub without a block"
        );
    };
    for rel in &members {
        assert_eq!(t.status(rel)["state"], "stub", "{rel}");
        check_compact(rel, &t.s(rel));
    }
    // The file not packed has an object of its own: the other compact form (3).
    let big = xattr(&t.s("big.bin"), "trusted.coldtier.stub").unwrap();
    assert_eq!(big[0], 3);
    assert_eq!(xattr(&t.s("big.bin"), "trusted.coldtier.id"), None);

    // Renamed through the mount, a compact stub is the same file to the catalog.
    let (moved_from, moved_to) = (members[0], "moved.txt");
    let id = id_of(moved_from);
    fs::rename(t.m(moved_from), t.m(moved_to)).unwrap();
    assert_eq!(id_of(moved_to), id);
    assert_eq!(t.status(moved_to)["state"], "stub");
    check_compact(moved_to, &t.s(moved_to));

    // Recalled, a member gets its id xattr back (the file stays tracked) and loses the
    // stub record; released again, it is a compact stub again.
    let want = &fs_.iter().find(|(r, _)| r == moved_from).unwrap().1;
    assert_bytes("moved.txt", &fs::read(t.m(moved_to)).unwrap(), want);
    assert_eq!(t.status(moved_to)["state"], "premigrated");
    assert_eq!(
        xattr(&t.s(moved_to), "trusted.coldtier.id").as_deref(),
        Some(id.as_bytes())
    );
    assert_eq!(xattr(&t.s(moved_to), "trusted.coldtier.stub"), None);
    t.ok(&["release", t.m(moved_to).to_str().unwrap()]);
    assert_eq!(t.status(moved_to)["state"], "stub");
    assert_eq!(id_of(moved_to), id);
    check_compact(moved_to, &t.s(moved_to));

    // Its times set through the mount, a compact stub keeps its object's mtime in the full
    // record (the compact one has no room for it) and shows the new one.
    let touched = members[2];
    let t_id = id_of(touched);
    let new_mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(t.m(touched))
        .unwrap()
        .set_modified(new_mtime)
        .unwrap();
    assert_eq!(
        fs::metadata(t.m(touched)).unwrap().modified().unwrap(),
        new_mtime
    );
    assert_eq!(t.status(touched)["state"], "stub");
    assert_eq!(id_of(touched), t_id);
    assert_eq!(xattr(&t.s(touched), "trusted.coldtier.stub").unwrap()[0], 1);

    // A stub truncated through the mount stays tracked under its id, now resident.
    let cut = members[1];
    let cut_id = id_of(cut);
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(t.m(cut))
        .unwrap();
    assert_eq!(t.status(cut)["state"], "resident");
    assert_eq!(id_of(cut), cut_id);
    assert_eq!(
        xattr(&t.s(cut), "trusted.coldtier.id").as_deref(),
        Some(cut_id.as_bytes())
    );

    let mut want_all: Files = fs_
        .iter()
        .filter(|(r, _)| r != moved_from && r != cut)
        .cloned()
        .collect();
    want_all.push((moved_to.into(), want.clone()));
    want_all.push((cut.into(), Vec::new()));
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep: {v}");
    assert_all_read_back(&t, &want_all);
}

/// A pack member stubbed before compact records (its full record and `id` xattr, in a
/// block) gets its compact record at the next policy run, and its block back.
#[test]
fn old_member_stubs_become_compact_at_the_next_policy_run() {
    use coldtier::tier::stub::{FileFacts, StubRecord};
    use std::os::unix::fs::MetadataExt;
    let moto = start_moto();
    let fs_ = files(&[("a.txt", 3000), ("d/b.txt", 5000), ("c.txt", 10)]);
    let t = TierMount::new(&moto, "packold", &fs_, packed);
    t.migrate_ok(&["--mode", "stub"]);
    let set = |p: &Path, name: &str, value: &[u8]| {
        let (c, n) = (cpath(p), std::ffi::CString::new(name).unwrap());
        // SAFETY: NUL-terminated strings; value is valid for its length.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
    };
    let mut ids = Vec::new();
    for (rel, _) in &fs_ {
        // What an older version wrote: the full record, the id beside it.
        let b = t.s(rel);
        let md = fs::symlink_metadata(&b).unwrap();
        let facts = FileFacts {
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
        };
        let compact = xattr(&b, "trusted.coldtier.stub").unwrap();
        let rec = StubRecord::decode_compact(&compact, facts).unwrap();
        set(&b, "trusted.coldtier.id", rec.file_id.as_bytes());
        set(&b, "trusted.coldtier.stub", &rec.encode().unwrap());
        assert_eq!(
            fs::symlink_metadata(&b).unwrap().blocks(),
            8,
            "{rel}: in a block"
        );
        ids.push(rec.file_id);
    }
    // A dry run changes nothing; a stub run rewrites them.
    t.migrate_ok(&["--mode", "dry-run"]);
    assert_eq!(xattr(&t.s("a.txt"), "trusted.coldtier.stub").unwrap()[0], 1);
    t.migrate_ok(&["--mode", "stub"]);
    for ((rel, _), id) in fs_.iter().zip(&ids) {
        let b = t.s(rel);
        assert_eq!(xattr(&b, "trusted.coldtier.stub").unwrap()[0], 2, "{rel}");
        assert_eq!(xattr(&b, "trusted.coldtier.id"), None, "{rel}");
        assert_eq!(fs::symlink_metadata(&b).unwrap().blocks(), 0, "{rel}");
        assert_eq!(
            t.status(rel)["file_id"].as_str(),
            Some(id.as_str()),
            "{rel}"
        );
        assert_eq!(t.state(rel), "stub", "{rel}");
    }
    assert!(
        t.daemon_log_tail()
            .contains("stub records rewritten in their compact form"),
        "{}",
        t.daemon_log_tail()
    );
    let (code, v) = t.verify(true);
    assert_eq!(code, 0, "verify --deep: {v}");
    assert_all_read_back(&t, &fs_);
}

#[test]
fn an_archived_pack_is_restored_once_for_all_its_members() {
    let moto = start_moto();
    moto.set_restore_seconds(3).unwrap();
    let fs_ = files(&[
        ("a.txt", 1000),
        ("b.txt", 2000),
        ("c/d.txt", 3000),
        ("e.txt", 10),
    ]);
    let t = TierMount::new(&moto, "packglacier", &fs_, |c| {
        packed(c).set("store", "storage_class", &q("GLACIER")).set(
            "recall",
            "on_archived",
            &q("fail"),
        )
    });
    let migrated = Instant::now();
    t.migrate_ok(&["--mode", "stub"]);
    let key = t.object_key("a.txt");
    for (rel, _) in &fs_ {
        let st = t.status(rel);
        assert_eq!(
            st["object_key"].as_str(),
            Some(key.as_str()),
            "one pack: {st}"
        );
        assert_eq!(st["storage_class"], "GLACIER", "{st}");
    }
    if let Some(left) = Duration::from_millis(3500).checked_sub(migrated.elapsed()) {
        std::thread::sleep(left);
    }
    // Each member's first read finds the pack archived: EAGAIN, a restore in progress.
    for (rel, _) in &fs_ {
        let e = errno_of(fs::read(t.m(rel)), rel);
        assert_eq!(e, libc::EAGAIN, "{rel}: errno {e}\n{}", t.daemon_log_tail());
    }
    assert_eq!(
        restore_posts(&settled_requests(&moto), "packglacier"),
        1,
        "one RestoreObject for the pack of four members"
    );
    for (rel, content) in &fs_ {
        let state = t.wait_state(rel, "premigrated", Duration::from_secs(60));
        assert_eq!(state, "premigrated", "{rel}\n{}", t.daemon_log_tail());
        assert_bytes(rel, &read_ok(&t.m(rel)), content);
    }
    assert_eq!(restore_posts(&settled_requests(&moto), "packglacier"), 1);
    let shared: usize = fs_
        .iter()
        .map(|(rel, _)| {
            t.history(rel)
                .iter()
                .filter(|e| e["kind"] == "RESTORE_REQUESTED")
                .filter(|e| e["detail"]["outcome"] == "SharedWithPack")
                .count()
        })
        .sum();
    assert_eq!(shared, 3, "three members waited on the first one's restore");
}

/// Every object in the bucket after gc past the retention is named: the objects and packs
/// the files' records name, and those packs' indexes.
fn assert_bucket_holds_what_is_named(t: &mut TierMount, fs_: &Files, what: &str) {
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "{what}: verify: {v}");
    t.umount();
    t.mount_with_env(&[(GC_SKEW_ENV, &(RETENTION_SECS + 60).to_string())]);
    t.ok(&["gc", &t.mnt_str()]);
    let mut named = std::collections::BTreeSet::new();
    for (rel, _) in fs_ {
        let k = t.object_key(rel);
        if let Some(stem) = k.strip_suffix(".tar") {
            named.insert(format!("{stem}.index.json"));
        }
        named.insert(k);
    }
    let held: std::collections::BTreeSet<String> = t
        .objects()
        .into_iter()
        .filter(|k| k.contains("/data/") || k.contains("/packs/"))
        .collect();
    assert_eq!(
        held, named,
        "{what}: the bucket after gc past the retention"
    );
}

#[test]
fn a_kill_at_each_step_of_a_pack_leaves_every_file_readable_and_nothing_unknown() {
    let moto = start_moto();
    let fs_ = files(&[
        ("a.txt", 5000),
        ("d/b.txt", 70_000),
        ("d/c.txt", 1),
        ("big.bin", 2 << 20),
    ]);
    for fp in [
        "pack-after-first-member",
        "pack-after-intent",
        "pack-after-put",
        "pack-after-index",
        "pack-after-record",
        // A member's `id` xattr removed, its compact stub record not yet written.
        "migrate-after-id-xattr-removed",
        "migrate-after-stub-xattr",
        "migrate-after-truncate",
        // In the middle of a pack's members: the third one's stub record written, its
        // catalog records not (the pack's intent resolves it at the restart).
        "migrate-after-stub-xattr:after=2",
        "migrate-after-truncate:after=1",
    ] {
        let bucket = format!("pk-{}", fp.replace([':', '='], "-"));
        let mut t = TierMount::new(&moto, &bucket, &fs_, |c| {
            packed(c).set("mount", "restart_on_crash", "false")
        });
        t.umount();
        let mnt = t.mnt_str();
        t.dies_running(&[], fp, &["migrate", mnt.as_str(), "--mode", "stub"]);
        t.remount();
        for (rel, _) in &fs_ {
            let st = t.state(rel);
            assert!(
                ["resident", "premigrated", "stub"].contains(&st.as_str()),
                "{fp}: {rel} is {st} after the restart"
            );
        }
        // The catalog agrees with the records on the files: every stub's row names its
        // pack (else gc could delete a pack a stub still needs).
        let (code, v) = t.verify(false);
        assert_eq!(code, 0, "{fp}: verify after the restart: {v}");
        assert_all_read_back(&t, &fs_);
        t.migrate_ok(&["--mode", "stub"]);
        for (rel, _) in &fs_ {
            assert_eq!(t.state(rel), "stub", "{fp}: {rel} after migrating again");
        }
        assert_all_read_back(&t, &fs_);
        assert_bucket_holds_what_is_named(&mut t, &fs_, fp);
    }
}

/// A pack opens its members ahead of reading them. Paused after its first member, with the
/// others open: one member deleted and one replaced (a new file renamed over it) through
/// the mount, one rewritten in place. Whichever was read first, nothing is lost: the
/// deleted one stays gone, the replaced path keeps its new bytes and stays resident, the
/// rewritten one is packed with its new bytes or left resident, and every other member is
/// stubbed and reads back byte-identical.
#[test]
fn members_changed_after_their_pack_opened_them_lose_nothing() {
    let moto = start_moto();
    let spec: Vec<(String, usize)> = (0..20)
        .map(|i| (format!("r/f{i:02}"), 20_000 + i))
        .collect();
    let refs: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&refs);
    let mut t = TierMount::new(&moto, "pk-race", &fs_, |c| {
        c.set("pack", "enabled", "true")
            .set("mount", "restart_on_crash", "false")
    });
    t.umount();
    // The run waits after its first member's read until `go` exists.
    let go = t.dir.path().join("go");
    let migrate = t.stub_run_paused_at(&format!("pack-after-first-member:hold={}", go.display()));
    let (gone, replaced, rewritten) = ("r/f03", "r/f07", "r/f11");
    fs::remove_file(t.m(gone)).unwrap();
    let new_bytes = vec![b'n'; 12_345];
    fs::write(t.m("r/new.tmp"), &new_bytes).unwrap();
    fs::rename(t.m("r/new.tmp"), t.m(replaced)).unwrap();
    let rewritten_bytes = vec![b'w'; 20_011];
    fs::write(t.m(rewritten), &rewritten_bytes).unwrap();
    fs::write(&go, b"").unwrap();
    let out = migrate.join().unwrap();
    assert!(
        t.daemon_log_tail().contains("pack-after-first-member"),
        "{}",
        t.daemon_log_tail()
    );
    eprintln!("{}", show(&out));
    assert!(!t.m(gone).exists(), "{gone} came back");
    assert_eq!(t.state(replaced), "resident", "{replaced}");
    assert_bytes(replaced, &read_ok(&t.m(replaced)), &new_bytes);
    assert_bytes(rewritten, &read_ok(&t.m(rewritten)), &rewritten_bytes);
    for (rel, body) in &fs_ {
        if [gone, replaced, rewritten].contains(&rel.as_str()) {
            continue;
        }
        assert_eq!(t.state(rel), "stub", "{rel}\n{}", show(&out));
        assert_bytes(rel, &read_ok(&t.m(rel)), body);
    }
    // What the catalog says agrees with the files, and a second run leaves nothing behind.
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "verify: {v}");
    t.umount();
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    for rel in [replaced, rewritten] {
        assert_eq!(t.state(rel), "stub", "{rel} at the second run");
    }
    assert_bytes(replaced, &read_ok(&t.m(replaced)), &new_bytes);
    assert_bytes(rewritten, &read_ok(&t.m(rewritten)), &rewritten_bytes);
}

/// Members read in pack order through the mount: each read past the end of the span the
/// read before fetched doubles the span (1, 2, 4 MiB ...), so 6 MiB of members cost three
/// GETs of their pack, not six; every member is checked and byte-identical.
#[test]
fn members_read_in_order_grow_the_read_ahead() {
    let moto = start_moto();
    let spec: Vec<(String, usize)> = (0..200)
        .map(|i| (format!("m/f{i:03}"), 30 * 1024 + i))
        .collect();
    let refs: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&refs);
    let t = TierMount::new(&moto, "pk-ra", &fs_, |c| {
        c.set("pack", "enabled", "true")
            .set("pack", "target_size", &q("16MiB"))
    });
    t.migrate_ok(&["--mode", "stub"]);
    let key = t.object_key(&fs_[0].0);
    let bucket_key = key.clone();
    // The members in the order of their bytes in the pack.
    let mut members: Vec<(u64, &str, &Vec<u8>)> = fs_
        .iter()
        .map(|(rel, body)| {
            let st = t.status(rel);
            assert_eq!(
                st["object_key"].as_str(),
                Some(key.as_str()),
                "one pack: {st}"
            );
            (st["pack_offset"].as_u64().unwrap(), rel.as_str(), body)
        })
        .collect();
    members.sort();
    let before = data_gets(&settled_requests(&moto), "pk-ra", Some(&bucket_key));
    for (_, rel, body) in &members {
        assert_bytes(rel, &read_ok(&t.m(rel)), body);
    }
    let gets = data_gets(&settled_requests(&moto), "pk-ra", Some(&bucket_key)) - before;
    assert!(
        (1..=3).contains(&gets),
        "{gets} GETs of the pack for 6 MiB of members read in order"
    );
}

/// A member read through the mount (so recalled) after its stub step and before the pack
/// run writes its members' catalog records: its COPIED, VERIFIED and STUBBED are written
/// first, then its recall's events, and the catalog agrees with the file.
#[test]
fn a_member_recalled_before_its_packs_records_are_written_keeps_the_catalog_in_step() {
    let moto = start_moto();
    let fs_ = files(&[("a.txt", 5000), ("d/b.txt", 70_000), ("d/c.txt", 10)]);
    let mut t = TierMount::new(&moto, "pk-owed", &fs_, packed);
    t.umount();
    // The run waits before its members' records until `go` exists.
    let go = t.dir.path().join("go");
    let fp = format!("pack-before-records:hold={}", go.display());
    t.mount_with_env(&[(FAILPOINT_ENV, fp.as_str())]);
    let mnt = t.mnt_str();
    let run =
        std::thread::spawn(move || common::coldtier(&["migrate", mnt.as_str(), "--mode", "stub"]));
    let t0 = Instant::now();
    while xattr(&t.s("a.txt"), STUB_XATTR).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "a.txt never became a stub\n{}",
            t.daemon_log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_bytes("a.txt", &read_ok(&t.m("a.txt")), &fs_[0].1);
    fs::write(&go, b"").unwrap();
    let out = run.join().unwrap();
    assert!(out.status.success(), "migrate: {}", show(&out));
    let kinds: Vec<String> = t
        .history("a.txt")
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    let want = [
        "COPIED",
        "VERIFIED",
        "STUBBED",
        "RECALL_STARTED",
        "RECALLED",
    ];
    assert!(
        kinds.len() >= want.len() && kinds[kinds.len() - want.len()..] == want,
        "a.txt: {kinds:?}"
    );
    assert_eq!(t.state("a.txt"), "premigrated");
    assert_eq!(t.state("d/b.txt"), "stub");
    let (code, v) = t.verify(false);
    assert_eq!(code, 0, "verify: {v}");
}

#[test]
fn a_lost_catalog_is_rebuilt_from_the_packs_indexes_and_hostile_indexes_are_refused() {
    let moto = start_moto();
    let fs_ = tree();
    let mut t = TierMount::new(&moto, "pkrebuild", &fs_, packed);
    t.migrate_ok(&["--mode", "stub"]);
    let before: std::collections::BTreeMap<String, Value> =
        fs_.iter().map(|(r, _)| (r.clone(), t.status(r))).collect();
    t.umount();
    t.remove_catalog();
    let rebuild = |t: &TierMount| {
        let out = t.cli(&[
            "catalog",
            "rebuild",
            t.src.to_str().unwrap(),
            "--config",
            t.config_path.to_str().unwrap(),
            "--json",
        ]);
        let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
        (out.status.code(), v)
    };
    let (code, r) = rebuild(&t);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["stubs"], fs_.len(), "{r}");
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

    // One pack's index rewritten by someone with write access to the bucket (a member
    // with a path outside SOURCE): all its members are refused, the others come back.
    t.ok(&["release", "-r", t.mnt_str().as_str()]);
    let key = t.object_key(&fs_[0].0);
    let ik = key.replace(".tar", ".index.json");
    let (st, body) = moto
        .http("GET", &format!("/pkrebuild/{ik}"), &[], b"")
        .unwrap();
    assert_eq!(st, 200);
    let mut ix: Value = serde_json::from_slice(&body).unwrap();
    let n = ix["members"].as_array().unwrap().len();
    ix["members"][0]["path"] = serde_json::json!("../../etc/shadow");
    let (st, _) = moto
        .http(
            "PUT",
            &format!("/pkrebuild/{ik}"),
            &[],
            ix.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(st, 200);
    t.umount();
    t.remove_catalog();
    let (code, r) = rebuild(&t);
    assert_eq!(code, Some(1), "a rebuild with problems says so: {r}");
    let problems = r["problems"].as_array().unwrap();
    assert_eq!(
        problems.len(),
        n,
        "every member of the hostile pack refused: {r}"
    );
    assert!(
        problems
            .iter()
            .all(|p| p.as_str().unwrap().contains("its index")),
        "{r}"
    );
    assert_eq!(r["stubs"], fs_.len() - n, "{r}");
    t.remount();
    // The refused stubs are still stubs on disk (verify reports them), and the others read.
    for (rel, content) in &fs_ {
        if t.object_key(rel) != key {
            assert_bytes(rel, &read_ok(&t.m(rel)), content);
        }
    }
}

#[test]
fn packs_replicate_to_s3s_fs_once_each_and_a_member_recalls_from_the_replica() {
    let moto = start_moto();
    let sdir = tempfile::tempdir().unwrap();
    let s3s = S3sServer::start(sdir.path()).unwrap_or_else(|e| panic!("{e}"));
    s3s.create_bucket("pkreplica").unwrap();
    let fs_ = tree();
    let t = TierMount::new(&moto, "pkprimary", &fs_, |c| {
        packed(c).raw(&format!(
            "[[replica]]\nname = \"s\"\nkind = \"s3\"\nendpoint = {}\nregion = \"us-east-1\"\n\
             bucket = \"pkreplica\"\nprefix = \"r\"\npath_style = true\naccess_key = {}\n\
             secret_key = {}\nrequest_checksum = \"when_required\"\n",
            q(&s3s.endpoint),
            q(&s3s.key_id),
            q(&s3s.secret)
        ))
    });
    t.migrate_ok(&["--mode", "stub"]);
    let mnt = t.mnt_str();
    let packs: std::collections::BTreeSet<String> = fs_
        .iter()
        .map(|(r, _)| t.object_key(r))
        .filter(|k| k.ends_with(".tar"))
        .collect();
    let v: Value =
        serde_json::from_str(&t.ok(&["replicate", mnt.as_str(), "--to", "s", "--json"])).unwrap();
    // Each pack once, and the large file's object.
    assert_eq!(v["copied"].as_u64(), Some(packs.len() as u64 + 1), "{v}");
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}");
    // On s3s-fs's disk: each pack and its index, the pack a tar GNU tar lists.
    for k in &packs {
        let rel = k.strip_prefix("t/").unwrap();
        let tar = sdir.path().join("pkreplica/r").join(rel);
        let out = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
        assert!(out.status.success(), "{}: {}", tar.display(), show(&out));
        assert!(sdir
            .path()
            .join("pkreplica/r")
            .join(rel.replace(".tar", ".index.json"))
            .exists());
    }
    let (code, r) = t.verify(true);
    assert_eq!(
        code, 0,
        "verify --deep checks the replica's members too: {r}"
    );
    // The primary loses one pack: its members recall from the replica.
    let lost = packs.iter().next().unwrap();
    let (st, _) = moto
        .http("DELETE", &format!("/pkprimary/{lost}"), &[], b"")
        .unwrap();
    assert!(st == 204 || st == 200, "{st}");
    let mut from_replica = 0;
    for (rel, content) in &fs_ {
        if t.object_key(rel) == *lost {
            assert_bytes(rel, &read_ok(&t.m(rel)), content);
            let h = t.history(rel);
            let last = h.iter().rev().find(|e| e["kind"] == "RECALLED").unwrap();
            assert_eq!(last["detail"]["from_replica"], "s", "{last}");
            from_replica += 1;
        }
    }
    assert!(from_replica > 0);
    assert_all_read_back(&t, &fs_);
}

#[test]
fn gc_repacks_a_mostly_dead_pack_and_a_kill_at_each_step_loses_nothing() {
    let moto = start_moto();
    let spec: Vec<(String, usize)> = (0..20)
        .map(|i| (format!("r/f{i:02}"), 3000 + i * 500))
        .collect();
    let refs: Vec<(&str, usize)> = spec.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let fs_ = files(&refs);
    let skew = (RETENTION_SECS + 60).to_string();
    for fp in [
        None,
        Some("repack-after-record"),
        Some("repack-after-switch"),
    ] {
        let bucket = format!("repack-{}", fp.unwrap_or("clean"));
        let mut t = TierMount::new(&moto, &bucket, &fs_, |c| {
            packed(c).set("mount", "restart_on_crash", "false")
        });
        t.migrate_ok(&["--mode", "stub"]);
        let old = t.object_key(&fs_[0].0);
        // 14 of 20 members deleted: the pack is mostly dead bytes.
        for (rel, _) in &fs_[..14] {
            fs::remove_file(t.m(rel)).unwrap();
        }
        let live = &fs_[14..];
        t.umount();
        if fp.is_none() {
            t.mount_with_env(&[(GC_SKEW_ENV, &skew)]);
            let out = t.ok(&["gc", t.mnt_str().as_str(), "--dry-run"]);
            assert!(out.contains("would repack"), "{out}");
            assert!(t.objects().contains(&old), "a dry run repacks nothing");
            t.umount();
        }
        let mut env = vec![(GC_SKEW_ENV, skew.as_str())];
        if let Some(fp) = fp {
            env.push((FAILPOINT_ENV, fp));
        }
        t.mount_with_env(&env);
        let out = t.cli(&["gc", t.mnt_str().as_str()]);
        if let Some(fp) = fp {
            assert!(!out.status.success(), "{fp}: gc survived: {}", show(&out));
            assert!(
                t.wait_dead(Duration::from_secs(15)),
                "{fp}: the daemon did not die"
            );
            t.detach_dead();
            t.mount_with_env(&[(GC_SKEW_ENV, &skew)]);
            // Every live file reads back whatever pack its record names now.
            assert_all_read_back(&t, &live.to_vec());
            let out = t.cli(&["gc", t.mnt_str().as_str()]);
            assert!(
                out.status.success(),
                "{fp}: gc after the restart: {}",
                show(&out)
            );
        } else {
            assert!(out.status.success(), "{}", show(&out));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("repacked"), "{text}");
        }
        let what = fp.unwrap_or("clean");
        let new = t.object_key(&live[0].0);
        assert_ne!(new, old, "{what}: repacked");
        for (rel, _) in live {
            assert_eq!(t.object_key(rel), new, "{what}: {rel} names the new pack");
        }
        let keys = t.objects();
        assert!(
            !keys.contains(&old),
            "{what}: the old pack is deleted after the retention: {keys:?}"
        );
        assert!(
            !keys.contains(&old.replace(".tar", ".index.json")),
            "{what}: {keys:?}"
        );
        assert!(keys.contains(&new), "{what}: {keys:?}");
        // The new pack holds exactly the live members, byte-identical.
        let (st, body) = moto
            .http("GET", &format!("/{bucket}/{new}"), &[], b"")
            .unwrap();
        assert_eq!(st, 200);
        let scratch = tempfile::tempdir().unwrap();
        let tar = scratch.path().join("new.tar");
        fs::write(&tar, &body).unwrap();
        let mut names = untar(&tar, &scratch.path().join("x"));
        names.sort();
        let mut want: Vec<String> = live.iter().map(|(r, _)| r.clone()).collect();
        want.sort();
        assert_eq!(names, want, "{what}");
        for (rel, content) in live {
            assert_bytes(
                rel,
                &fs::read(scratch.path().join("x").join(rel)).unwrap(),
                content,
            );
        }
        // Released again, every live file recalls from the new pack.
        t.ok(&["release", "-r", t.mnt_str().as_str()]);
        assert_all_read_back(&t, &live.to_vec());
        assert!(
            t.kinds(&live[0].0).iter().any(|k| k == "REPACKED"),
            "{what}"
        );
        let (code, v) = t.verify(true);
        assert_eq!(code, 0, "{what}: verify --deep: {v}");
    }
}

/// A `stream` rule reads a packed stub without recalling it: its bytes come from its
/// range of the pack (the transient stream starts at the member's offset), and it stays a
/// stub.
#[test]
fn a_packed_stub_streams_its_own_bytes_and_stays_a_stub() {
    let moto = start_moto();
    let fs_ = files(&[("a.txt", 30_000), ("b.txt", 50_000), ("c.txt", 7000)]);
    let t = TierMount::new(&moto, "pkstream", &fs_, |c| {
        packed(c).set(
            "recall",
            "rules",
            r#"[{program = ["tail"], action = "stream"}]"#,
        )
    });
    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(t.object_key("a.txt"), t.object_key("c.txt"), "one pack");
    for (rel, content) in &fs_ {
        let out = Command::new("tail")
            .args(["-c", "5000"])
            .arg(t.m(rel))
            .output()
            .unwrap();
        assert!(out.status.success(), "tail of {rel}: {}", show(&out));
        assert_bytes(
            &format!("tail of {rel}"),
            &out.stdout,
            &content[content.len() - 5000..],
        );
        assert_eq!(t.state(rel), "stub", "{rel} after a stream read");
    }
    let kinds = t.kinds("b.txt");
    assert!(kinds.iter().any(|k| k == "STREAMED"), "{kinds:?}");
    // An ordinary read then recalls it, byte-identical.
    assert_all_read_back(&t, &fs_);
}

/// `policy.copies = 2` with packs: the pack run writes each pack and its index to the
/// first replica (from its local copy) before any member is stubbed, and records it; a
/// release then needs nothing more, and a member recalls from the replica when the
/// primary lost the pack.
#[test]
fn policy_copies_writes_each_pack_to_the_replica_before_its_members_are_stubbed() {
    let moto = start_moto();
    let rdir = tempfile::tempdir().unwrap();
    let fs_ = files(&[("a.txt", 20_000), ("b.txt", 30_000), ("c/d.txt", 40_000)]);
    let root = rdir.path().join("replica");
    let t = TierMount::new(&moto, "pkcopies", &fs_, |c| {
        packed(c).set("policy", "copies", "2").raw(&format!(
            "[[replica]]\nname = \"p\"\nkind = \"posix\"\nroot = {}\n",
            q(root.to_str().unwrap())
        ))
    });
    let v = t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(v["stubbed"].as_u64(), Some(3), "{v}");
    let key = t.object_key("a.txt");
    let rel = key.strip_prefix("t/").unwrap();
    // The replica holds the pack and its index, byte-identical to the primary's.
    let (st, body) = moto
        .http("GET", &format!("/pkcopies/{key}"), &[], b"")
        .unwrap();
    assert_eq!(st, 200);
    let copy = walk_find(&root, rel.rsplit('/').next().unwrap());
    assert_eq!(
        copy.as_deref().map(fs::read).map(Result::unwrap),
        Some(body),
        "the pack on the replica"
    );
    let index = rel
        .rsplit('/')
        .next()
        .unwrap()
        .replace(".tar", ".index.json");
    assert!(
        walk_find(&root, &index).is_some(),
        "its index on the replica"
    );
    let r = t.ok(&["replicas", t.mnt_str().as_str(), "--json"]);
    let r: Value = serde_json::from_str(r.lines().next().unwrap()).unwrap();
    assert_eq!(r["missing"].as_u64(), Some(0), "{r}");
    // The primary loses the pack: every member recalls from the replica.
    let (st, _) = moto
        .http("DELETE", &format!("/pkcopies/{key}"), &[], b"")
        .unwrap();
    assert!(st == 204 || st == 200, "{st}");
    assert_all_read_back(&t, &fs_);
    let h = t.history("b.txt");
    let last = h.iter().rev().find(|e| e["kind"] == "RECALLED").unwrap();
    assert_eq!(last["detail"]["from_replica"], "p", "{last}");
}

/// The first file named `name` below `dir`.
fn walk_find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = walk_find(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}
