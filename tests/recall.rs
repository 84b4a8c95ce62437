//! Streaming recall (docs/architecture.md, "Streaming recall"; docs/semantics.md, "Reading
//! a stub"): a stub whose record has chunk sums is fetched chunk by chunk with ranged GETs,
//! each chunk verified and readable as it lands, the chunks a reader waits for first. Each
//! test runs a real mount whose store is moto behind the fault proxy, which logs every
//! request with its Range header and holds back (hangs) the GETs a test names: what is
//! asserted is which requests were sent and answered, never how long anything took.

mod common;
#[allow(dead_code)]
#[path = "common/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use coldtier::store::testing::MotoServer;
use faults::*;
use serde_json::{json, Value};
use tier::*;

const MIB: usize = 1 << 20;
/// The chunk of objects up to 1 GiB (store::chunks::MIN_CHUNK_LOG2).
const CHUNK: usize = 4 * MIB;

/// Reads `rel` whole through a fresh open, checks its bytes, then waits for its recall to
/// end premigrated (a reader can finish before the recall has checked the whole object).
fn read_whole_and_settle(t: &TierMount, rel: &str, want: &[u8], what: &str) {
    let mut got = Vec::new();
    if let Err(e) = fs::File::open(t.m(rel)).and_then(|mut f| f.read_to_end(&mut got)) {
        panic!("{what}: reading {rel}: {e}\n{}", t.daemon_log_tail());
    }
    assert_bytes(what, &got, want);
    assert_eq!(
        t.wait_state(rel, "premigrated", Duration::from_secs(60)),
        "premigrated",
        "{}",
        t.daemon_log_tail()
    );
}

/// A mount whose store is moto behind a fault proxy, with `fs_` stubbed.
fn stubbed(bucket: &str, fs_: &Files) -> (Arc<MotoServer>, FaultProxy, TierMount) {
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, bucket, fs_, |c| c);
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    for (rel, _) in fs_ {
        assert_eq!(t.state(rel), "stub", "{rel}");
    }
    proxy.reset();
    (moto, proxy, t)
}

/// The proxy's log of GETs of data objects: (Range header, status; null while unanswered).
fn data_gets(proxy: &FaultProxy) -> Vec<(String, Value)> {
    proxy.stats()["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"] == "GET" && e["path"].as_str().unwrap().contains("/data/"))
        .map(|e| {
            (
                e["range"].as_str().unwrap_or("").to_string(),
                e["status"].clone(),
            )
        })
        .collect()
}

/// The pieces a recall fetches: the first chunk in 16 head blocks, then whole chunks.
fn piece_ranges(total: usize) -> Vec<String> {
    let b = CHUNK / 16;
    let mut v: Vec<String> = (0..16)
        .map(|i| format!("bytes={}-{}", i * b, (i + 1) * b - 1))
        .collect();
    v.extend((1..total.div_ceil(CHUNK)).map(|i| range_of_chunk(i, total)));
    v
}

/// Data GETs of `range` go through; every other data GET is held (never answered until
/// the rules are reset).
fn hold_all_but(proxy: &FaultProxy, range: String) {
    proxy.rules(json!([
        {"method": "GET", "path_contains": "/data/", "range_contains": range, "action": "delay", "delay": 0.0},
        {"method": "GET", "path_contains": "/data/", "action": "hang"},
    ]));
}

/// `cat PATH > /dev/null` on a thread of its own; its outcome when joined.
fn cat_in_background(path: std::path::PathBuf) -> std::thread::JoinHandle<std::process::Output> {
    std::thread::spawn(move || {
        std::process::Command::new("cat")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap()
    })
}

/// The Range of the first head block (what a read at 0 waits for).
fn first_block() -> String {
    format!("bytes=0-{}", CHUNK / 16 - 1)
}

fn range_of_chunk(i: usize, total: usize) -> String {
    let start = i * CHUNK;
    let end = (start + CHUNK).min(total) - 1;
    format!("bytes={start}-{end}")
}

/// A read far into a stub is answered from the one chunk that holds it: with every other
/// GET held back by the proxy, the read returns the right bytes, and the only data GET
/// answered is that chunk's. Let go, the other chunks follow and the file is whole.
#[test]
fn a_read_far_into_a_stub_is_served_from_its_chunk_while_the_others_are_held() {
    let total = 40 * MIB; // 10 chunks
    let fs_ = files(&[("big.bin", total)]);
    let (_moto, proxy, t) = stubbed("stream-far", &fs_);
    let body = &fs_[0].1;
    let off = 7 * CHUNK + 100; // chunk 7
    hold_all_but(&proxy, range_of_chunk(7, total));
    let f = fs::File::open(t.m("big.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, off as u64).unwrap();
    assert_bytes("4 KiB at chunk 7", &buf, &body[off..off + 4096]);
    let gets = data_gets(&proxy);
    let answered: Vec<&(String, Value)> = gets.iter().filter(|g| !g.1.is_null()).collect();
    assert_eq!(
        answered.len(),
        1,
        "one data GET answered before the read returned: {gets:?}"
    );
    assert_eq!(answered[0].0, range_of_chunk(7, total), "{gets:?}");
    assert_eq!(answered[0].1, 206, "{gets:?}");
    // Chunk 7 was asked for first, and alone (the others only once it was in: they do
    // not share the link with the bytes a reader waits for).
    assert_eq!(
        gets[0].0,
        range_of_chunk(7, total),
        "order of GETs: {gets:?}"
    );
    drop(f);
    // Let the others go: the recall completes (the held GETs are retried, or the recall
    // is started again by the next read), byte-identical.
    proxy.reset();
    read_whole_and_settle(&t, "big.bin", body, "the whole file after the recall");
}

/// Readers at different offsets of one stub, all at once, all get their bytes; each chunk
/// is fetched once, with one ranged GET.
#[test]
fn concurrent_readers_at_different_offsets_get_their_bytes_and_each_chunk_is_fetched_once() {
    let total = 40 * MIB + 12345; // 11 chunks, the last one short
    let fs_ = files(&[("big.bin", total)]);
    let (_moto, proxy, t) = stubbed("stream-many", &fs_);
    let body = Arc::new(fs_[0].1.clone());
    let offsets = [
        0,
        total - 5000,
        5 * CHUNK - 10, // across chunks 4 and 5
        2 * CHUNK + 1,
        9 * CHUNK,
        CHUNK / 2,
        8 * CHUNK + 77,
        total - 1,
    ];
    let path = t.m("big.bin");
    let threads: Vec<_> = offsets
        .iter()
        .map(|&off| {
            let (body, path) = (body.clone(), path.clone());
            std::thread::spawn(move || {
                let f = fs::File::open(&path).unwrap();
                let len = (64 * 1024).min(total - off);
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, off as u64).unwrap();
                assert_bytes(
                    &format!("{len} bytes at {off}"),
                    &buf,
                    &body[off..off + len],
                );
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    read_whole_and_settle(&t, "big.bin", &body, "the whole file");
    let gets = data_gets(&proxy);
    let mut ranges: Vec<String> = gets.iter().map(|g| g.0.clone()).collect();
    ranges.sort();
    let mut want = piece_ranges(total);
    want.sort();
    assert_eq!(ranges, want, "one ranged GET per piece: {gets:?}");
}

/// A chunk whose bytes do not match its sum fails every reader waiting for the file with
/// EIO and leaves the stub (its blocks freed again); a RECALL_FAILED event says why. Once
/// the store answers right, the next read recalls it byte-identical.
#[test]
fn a_corrupted_chunk_fails_its_readers_with_eio_and_leaves_the_stub() {
    let total = 24 * MIB; // 6 chunks
    let fs_ = files(&[("big.bin", total)]);
    let (_moto, proxy, t) = stubbed("stream-corrupt", &fs_);
    proxy.rules(json!([
        {"method": "GET", "path_contains": "/data/", "range_contains": range_of_chunk(3, total), "action": "corrupt_response_body"},
    ]));
    let f = fs::File::open(t.m("big.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = f
        .read_exact_at(&mut buf, (3 * CHUNK + 10) as u64)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    drop(f);
    // The failure is recorded before any reader hears of it: right after the EIO the
    // file is a stub again; its data goes just after (readers first, then the file).
    assert_eq!(t.state("big.bin"), "stub", "{}", t.daemon_log_tail());
    let t0 = std::time::Instant::now();
    while fs::metadata(t.s("big.bin")).unwrap().len() != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the backing file is never emptied\n{}",
            t.daemon_log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let events: Vec<String> = t
        .history("big.bin")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        events.iter().any(|k| k == "RECALL_FAILED"),
        "history: {events:?}"
    );
    proxy.reset();
    read_whole_and_settle(&t, "big.bin", &fs_[0].1, "after the store answers right");
}

/// The daemon killed (SIGKILL) in the middle of a streaming recall, after a reader got a
/// chunk and while the others are held: the next daemon finds a stub (the chunks that
/// landed are never taken for a whole file), and the read across the kill and the ones
/// after get every byte right.
#[test]
fn a_kill_in_the_middle_of_a_stream_leaves_a_stub_that_recalls_byte_identical() {
    let total = 24 * MIB; // 6 chunks
    let fs_ = files(&[("big.bin", total)]);
    let (_moto, proxy, t) = stubbed("stream-kill", &fs_);
    let body = fs_[0].1.clone();
    hold_all_but(&proxy, range_of_chunk(1, total));
    let f = fs::File::open(t.m("big.bin")).unwrap();
    let mut buf = vec![0u8; 8192];
    f.read_exact_at(&mut buf, (CHUNK + 5) as u64).unwrap();
    assert_bytes(
        "chunk 1 before the kill",
        &buf,
        &body[CHUNK + 5..CHUNK + 5 + 8192],
    );
    // A reader waiting on a held chunk when the daemon dies.
    let path = t.m("big.bin");
    let waiting = std::thread::spawn(move || fs::read(path));
    common::kill_and_wait_for_the_next(&t.mnt);
    proxy.reset();
    let got = waiting.join().unwrap().expect("the read across the kill");
    assert_bytes("the read across the kill", &got, &body);
    // The handle opened before the kill reads on, too.
    f.read_exact_at(&mut buf, (5 * CHUNK) as u64).unwrap();
    assert_bytes(
        "the old handle after the kill",
        &buf,
        &body[5 * CHUNK..5 * CHUNK + 8192],
    );
    read_whole_and_settle(&t, "big.bin", &body, "after the kill");
}

/// `[[recall.rules]]`: who may recall. `deny` gives EACCES and fetches nothing; `stream`
/// gives the bytes and leaves the file a stub with no blocks; `defer` gives EAGAIN and
/// recalls the file in the background; the shipped rules stream for a virus scanner; each
/// refusal or stream is an event naming the program and the uid; an ordinary reader
/// recalls, and its RECALL_STARTED names it.
#[test]
fn recall_rules_deny_defer_and_stream_and_events_say_who() {
    let fs_ = files(&[
        ("denied.bin", 12 * MIB),
        ("streamed.bin", 12 * MIB),
        ("small.bin", 100_000),
        ("deferred.bin", 5000),
        ("scanned.bin", 12 * MIB),
        ("read.bin", 12 * MIB),
        ("copied.bin", 12 * MIB),
    ]);
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, "rules", &fs_, |c| {
        c.set(
            "recall",
            "rules",
            r#"[{program = ["head", "cp"], action = "deny"}, {program = ["tail"], action = "stream"}, {uid = [65534], action = "defer"}]"#,
        )
    });
    // nobody must reach the mount.
    for d in [t.dir.path(), &t.mnt] {
        fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    proxy.reset();
    let body = |rel: &str| fs_.iter().find(|f| f.0 == rel).unwrap().1.clone();
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // deny: EACCES, nothing fetched, still a stub.
    let (ok, _, err) = run(std::process::Command::new("head")
        .args(["-c", "10"])
        .arg(t.m("denied.bin")));
    assert!(
        !ok && err.contains("Permission denied"),
        "head of a denied stub: {err}"
    );
    assert_eq!(t.state("denied.bin"), "stub");
    // A copy by a denied program inside the mount (cp uses copy_file_range, which FUSE
    // carries when both files are on the mount): refused too.
    let dest = t.m("copy-out");
    let (ok, _, err) = run(std::process::Command::new("cp")
        .arg(t.m("copied.bin"))
        .arg(&dest));
    assert!(
        !ok && err.contains("Permission denied"),
        "cp of a denied stub: {err}"
    );
    assert_eq!(t.state("copied.bin"), "stub");
    assert!(
        data_gets(&proxy).is_empty(),
        "a denied read fetched: {:?}",
        data_gets(&proxy)
    );

    // stream: the bytes, and the file stays a stub with no blocks.
    use std::os::unix::fs::MetadataExt;
    let stub_blocks = |rel: &str| fs::metadata(t.s(rel)).unwrap().blocks();
    let before: Vec<u64> = ["streamed.bin", "small.bin"]
        .iter()
        .map(|r| stub_blocks(r))
        .collect();
    // A small file's compact record stays inside the inode; a 12 MiB file's (chunk sums)
    // keeps its xattr block.
    assert_eq!(before[1], 0, "small.bin: a stub without a block");
    for (i, rel) in ["streamed.bin", "small.bin"].into_iter().enumerate() {
        let (ok, out, err) = run(std::process::Command::new("tail")
            .args(["-c", "5000"])
            .arg(t.m(rel)));
        assert!(ok, "tail of {rel}: {err}");
        let b = body(rel);
        assert_bytes(&format!("tail of {rel}"), &out, &b[b.len() - 5000..]);
        assert_eq!(t.state(rel), "stub", "{rel} after a stream read");
        // Empty, and no more blocks than before the read (its record's, if any).
        let md = fs::metadata(t.s(rel)).unwrap();
        assert_eq!(
            (md.len(), md.blocks()),
            (0, before[i]),
            "{rel}: backing file"
        );
    }
    // The shipped rules: a virus scanner (a program named clamscan) streams.
    let scanner = t.dir.path().join("clamscan");
    fs::copy("/bin/cat", &scanner).unwrap();
    let (ok, out, err) = run(std::process::Command::new(&scanner).arg(t.m("scanned.bin")));
    assert!(ok, "clamscan: {err}");
    assert_bytes("clamscan's read", &out, &body("scanned.bin"));
    assert_eq!(t.state("scanned.bin"), "stub");

    // defer: EAGAIN for nobody, then the file comes back in the background.
    let (ok, _, err) = run(std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "cat",
        ])
        .arg(t.m("deferred.bin")));
    assert!(
        !ok && err.contains("Resource temporarily unavailable"),
        "deferred: ok={ok} {err}\n{}",
        t.daemon_log_tail()
    );
    assert_eq!(
        t.wait_state("deferred.bin", "premigrated", Duration::from_secs(60)),
        "premigrated",
        "{}",
        t.daemon_log_tail()
    );

    // An ordinary reader recalls.
    read_whole_and_settle(&t, "read.bin", &body("read.bin"), "an ordinary read");

    // The events say who.
    let find = |rel: &str, kind: &str| -> Value {
        t.history(rel)
            .into_iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in the history of {rel}: {:?}", t.history(rel)))
    };
    let d = &find("denied.bin", "RECALL_REFUSED")["detail"];
    assert_eq!(
        (d["mode"].as_str(), d["program"].as_str()),
        (Some("deny"), Some("head")),
        "{d}"
    );
    let d = &find("deferred.bin", "RECALL_REFUSED")["detail"];
    assert_eq!(
        (d["mode"].as_str(), d["uid"].as_u64()),
        (Some("defer"), Some(65534)),
        "{d}"
    );
    let d = &find("streamed.bin", "STREAMED")["detail"];
    assert_eq!(d["program"].as_str(), Some("tail"), "{d}");
    let d = &find("scanned.bin", "STREAMED")["detail"];
    assert_eq!(
        (d["program"].as_str(), d["rule"].as_str()),
        (Some("clamscan"), Some("the shipped rules")),
        "{d}"
    );
    let d = &find("read.bin", "RECALL_STARTED")["detail"];
    assert_eq!(d["who"]["uid"].as_u64(), Some(0), "{d}");

    // `coldtier stats` sums them by program and by user.
    let out = t.cli(&["stats", "--json", "--since", "1h", t.mnt_str().as_str()]);
    assert!(out.status.success(), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tally = |by: &str, key: &str, name: Value| -> Value {
        v["recalls"][by]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x[key] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in recalls.{by}: {v}"))
    };
    assert_eq!(
        tally("by_program", "program", json!("head"))["refused"],
        1,
        "{v}"
    );
    assert_eq!(
        tally("by_program", "program", json!("tail"))["streamed"],
        2,
        "{v}"
    );
    assert_eq!(
        tally("by_program", "program", json!("clamscan"))["streamed"],
        1,
        "{v}"
    );
    assert_eq!(tally("by_uid", "uid", json!(65534))["refused"], 1, "{v}");
    assert!(
        tally("by_uid", "uid", json!(0))["recalls"].as_u64() >= Some(1),
        "{v}"
    );
    let text = String::from_utf8_lossy(&t.cli(&["stats", t.mnt_str().as_str()]).stdout).to_string();
    assert!(
        text.contains("reads of stubs since") && text.contains("clamscan"),
        "{text}"
    );
}

/// `coldtier recalls` lists a recall in flight (file, size, bytes done, who) and `recalls
/// cancel` stops it cleanly: its reader gets ECANCELED, the file is a stub again with no
/// data, RECALL_FAILED says it was cancelled; the next read recalls it byte-identical.
#[test]
fn coldtier_recalls_lists_a_recall_in_flight_and_cancel_stops_it() {
    let total = 24 * MIB; // 6 chunks
    let fs_ = files(&[("big.bin", total)]);
    let (_moto, proxy, t) = stubbed("recalls-list", &fs_);
    // The first head block comes, the rest is held: the recall stays in flight.
    hold_all_but(&proxy, first_block());
    let path = t.m("big.bin");
    let reader = cat_in_background(path);
    let listed = |t: &TierMount| -> Vec<Value> {
        let out = t.cli(&["recalls", "--json", t.mnt_str().as_str()]);
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // Wait (bounded) for the recall to show, with its first chunk done.
    let t0 = std::time::Instant::now();
    let row = loop {
        let rows = listed(&t);
        if let Some(r) = rows
            .iter()
            .find(|r| r["done"].as_u64() == Some(CHUNK as u64 / 16))
        {
            break r.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no recall in flight: {rows:?}\nGETs: {:?}\n{}",
            data_gets(&proxy),
            t.daemon_log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(row["path"], "big.bin", "{row}");
    assert_eq!(row["state"], "streaming", "{row}");
    assert_eq!(row["size"].as_u64(), Some(total as u64), "{row}");
    assert_eq!(row["who"]["program"], "cat", "{row}");
    assert_eq!(row["who"]["uid"].as_u64(), Some(0), "{row}");
    // The text form names it too.
    let out = t.cli(&["recalls", t.mnt_str().as_str()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("big.bin"),
        "{}",
        show(&out)
    );

    let out = t.cli(&["recalls", "cancel", t.mnt_str().as_str(), "--uid", "0"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cancelled: big.bin"),
        "{}",
        show(&out)
    );
    let got = reader.join().unwrap();
    assert!(!got.status.success(), "cat of a cancelled recall succeeded");
    assert!(
        String::from_utf8_lossy(&got.stderr).contains("Operation canceled"),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        t.wait_state("big.bin", "stub", Duration::from_secs(30)),
        "stub"
    );
    assert_eq!(fs::metadata(t.s("big.bin")).unwrap().len(), 0);
    assert!(listed(&t).is_empty(), "{:?}", listed(&t));
    let failed = t
        .history("big.bin")
        .into_iter()
        .find(|e| e["kind"] == "RECALL_FAILED")
        .expect("RECALL_FAILED");
    assert!(
        failed["detail"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled"),
        "{failed}"
    );
    // Nothing left to cancel.
    let out = t.cli(&["recalls", "cancel", t.mnt_str().as_str(), "--all"]);
    assert!(!out.status.success());
    proxy.reset();
    read_whole_and_settle(&t, "big.bin", &fs_[0].1, "after the cancel");
}

/// Budgets: with `recall.max_concurrent = 1` and `over_budget = "eagain"`, a read that
/// would start a second recall while one is in flight gets EAGAIN and a RECALL_REFUSED
/// event (mode throttled, naming the limit); once the first is over, it recalls.
#[test]
fn a_recall_over_budget_gets_eagain_and_an_event() {
    let total = 24 * MIB;
    let fs_ = files(&[("a.bin", total), ("b.bin", 5000)]);
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, "budget", &fs_, |c| {
        c.set("recall", "max_concurrent", "1")
            .set("recall", "over_budget", &q("eagain"))
    });
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    hold_all_but(&proxy, first_block());
    let path = t.m("a.bin");
    let reader = cat_in_background(path);
    let t0 = std::time::Instant::now();
    while !String::from_utf8_lossy(&t.cli(&["recalls", t.mnt_str().as_str()]).stdout)
        .contains("a.bin")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first recall never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = std::process::Command::new("cat")
        .arg(t.m("b.bin"))
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second recall went over max_concurrent"
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("Resource temporarily unavailable"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(t.state("b.bin"), "stub");
    let ev = t
        .history("b.bin")
        .into_iter()
        .find(|e| e["kind"] == "RECALL_REFUSED")
        .expect("RECALL_REFUSED");
    assert_eq!(ev["detail"]["mode"], "throttled", "{ev}");
    assert_eq!(ev["detail"]["rule"], "recall.max_concurrent", "{ev}");
    // The first one stopped, the second goes through.
    assert!(t
        .cli(&["recalls", "cancel", t.mnt_str().as_str(), "--all"])
        .status
        .success());
    let _ = reader.join().unwrap();
    proxy.reset();
    assert_eq!(
        t.wait_state("a.bin", "stub", Duration::from_secs(30)),
        "stub"
    );
    read_whole_and_settle(&t, "b.bin", &fs_[1].1, "b.bin under budget");
}
