//! Restart without unmount: the daemon killed (SIGKILL) or handed over (`coldtier
//! restart`) under a live mount while clients read and write; the supervisor starts
//! another daemon on the same FUSE connection. Clients see a pause, never an error; the
//! bytes are right; a recall cut by the kill is done by the next daemon; NFS handles
//! taken before still open their files.

mod common;
#[allow(dead_code)]
#[path = "common/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "common/tier.rs"]
mod tier;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, coldtier, kill_and_wait_for_the_next, show, Mounted};
use faults::FaultProxy;
use serde_json::json;
use tier::*;

fn record(mnt: &Path) -> Vec<String> {
    common::runtime_record(mnt)
}

/// The pid of the daemon serving `mnt` now.
fn daemon(mnt: &Path) -> i32 {
    record(mnt)[0].parse().unwrap()
}

/// Clients that keep reading and writing through the mount and count what fails.
struct Clients {
    stop: Arc<AtomicBool>,
    errors: Arc<parking_lot::Mutex<Vec<String>>>,
    rounds: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    fn start(mnt: &Path, files: &[(PathBuf, Vec<u8>)]) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let errors: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        let rounds = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        // Readers: each file read whole and compared, over and over.
        for (path, body) in files.iter().cloned() {
            let (stop, errors, rounds) = (stop.clone(), errors.clone(), rounds.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match std::fs::read(&path) {
                        Ok(got) if got == body => {}
                        Ok(got) => errors.lock().push(format!(
                            "{}: {} bytes, not the {} written",
                            path.display(),
                            got.len(),
                            body.len()
                        )),
                        Err(e) => errors.lock().push(format!("read {}: {e}", path.display())),
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        // A writer holding one file open across the restarts (its handle is the previous
        // daemon's after a kill): writes and reads back through the same handle.
        let (s2, e2, r2) = (stop.clone(), errors.clone(), rounds.clone());
        let held = mnt.join("held.bin");
        threads.push(std::thread::spawn(move || {
            let mut f = match std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&held)
            {
                Ok(f) => f,
                Err(e) => return e2.lock().push(format!("open held.bin: {e}")),
            };
            let mut i = 0u64;
            while !s2.load(Ordering::SeqCst) {
                let line = format!("{i:016}\n");
                let off = (i % 1000) * 17;
                let r = f
                    .seek(SeekFrom::Start(off))
                    .and_then(|_| f.write_all(line.as_bytes()))
                    .and_then(|_| f.seek(SeekFrom::Start(off)))
                    .and_then(|_| {
                        let mut b = vec![0u8; line.len()];
                        f.read_exact(&mut b).map(|_| b)
                    });
                match r {
                    Ok(b) if b == line.as_bytes() => {}
                    Ok(_) => e2
                        .lock()
                        .push(format!("held.bin: round {i} read back different")),
                    Err(e) => e2.lock().push(format!("held.bin round {i}: {e}")),
                }
                i += 1;
                r2.fetch_add(1, Ordering::SeqCst);
            }
        }));
        Clients {
            stop,
            errors,
            rounds,
            threads,
        }
    }

    /// Waits until the clients have done `n` more rounds (they run across the restart).
    fn progress(&self, n: u64) {
        let start = self.rounds.load(Ordering::SeqCst);
        let t0 = Instant::now();
        while self.rounds.load(Ordering::SeqCst) < start + n {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the clients are stuck"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let e = self.errors.lock().clone();
        e
    }
}

fn some_files(m: &Mounted) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::create_dir_all(m.m("d")).unwrap();
    let files: Vec<(PathBuf, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                m.m(&format!("d/f{i}")),
                common::data(i, 3_000 + 150_000 * i as usize),
            )
        })
        .collect();
    for (p, b) in &files {
        std::fs::write(p, b).unwrap();
    }
    files
}

#[test]
fn a_killed_daemon_is_replaced_and_clients_see_no_error() {
    kills_under_load(None);
}

/// The same with every read and write served by the daemon: the kernel's open handles are
/// the previous daemon's, opened again by the next one on their first use.
#[test]
fn without_passthrough_the_handles_open_across_the_kill_go_on() {
    kills_under_load(Some("[fuse]\npassthrough = false\n"));
}

fn kills_under_load(config: Option<&str>) {
    let mut m = Mounted::with_config(config);
    let files = some_files(&m);
    let first = daemon(&m.mnt);
    let supervisor: i32 = record(&m.mnt)[3].parse().unwrap();
    assert!(supervisor > 0 && alive(supervisor));
    let clients = Clients::start(&m.mnt, &files);
    clients.progress(100);
    let mut pids = vec![first];
    for _ in 0..3 {
        pids.push(kill_and_wait_for_the_next(&m.mnt));
        clients.progress(100);
    }
    let errors = clients.finish();
    assert!(
        errors.is_empty(),
        "clients saw errors:\n{}",
        errors.join("\n")
    );
    // Each kill gave a new daemon, all under the same supervisor; the mount never went.
    pids.dedup();
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert_eq!(record(&m.mnt)[3], supervisor.to_string());
    assert!(alive(supervisor));
    // The new daemon answers the control socket too.
    let out = coldtier(&["status", m.m("d/f1").to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    m.umount();
    assert!(
        !alive(supervisor) || {
            std::thread::sleep(Duration::from_millis(500));
            !alive(supervisor)
        }
    );
}

#[test]
fn coldtier_restart_hands_the_mount_over_without_an_error() {
    let mut m = Mounted::new();
    let files = some_files(&m);
    let clients = Clients::start(&m.mnt, &files);
    clients.progress(100);
    for _ in 0..2 {
        let old = daemon(&m.mnt);
        let out = coldtier(&["restart", m.mnt.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
        let new = daemon(&m.mnt);
        assert_ne!(old, new);
        assert!(!alive(old), "the old daemon {old} is still there");
        assert!(String::from_utf8_lossy(&out.stderr).contains("handed the mount over"));
        clients.progress(100);
    }
    let errors = clients.finish();
    assert!(
        errors.is_empty(),
        "clients saw errors:\n{}",
        errors.join("\n")
    );
    m.umount();
}

#[test]
fn the_supervisor_gives_up_after_repeated_crashes() {
    let mut m = Mounted::new();
    std::fs::write(m.m("a"), b"a").unwrap();
    let supervisor: i32 = record(&m.mnt)[3].parse().unwrap();
    // Five restarts within the minute are allowed; the sixth crash leaves the mount dead.
    for _ in 0..5 {
        kill_and_wait_for_the_next(&m.mnt);
    }
    let last = daemon(&m.mnt);
    // SAFETY: killing the daemon this test started.
    unsafe { libc::kill(last, libc::SIGKILL) };
    let t0 = Instant::now();
    while alive(supervisor) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the supervisor goes on"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let e = std::fs::metadata(m.m("a")).unwrap_err();
    assert!(
        matches!(
            e.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        ),
        "{e}"
    );
    let _ = coldtier(&["umount", "--lazy", m.mnt.to_str().unwrap()]);
    if common::is_mountpoint(&m.mnt) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&m.mnt)
            .status();
    }
    m.mark_unmounted();
}

/// A stub being recalled when its daemon is killed: the read waits and gets the right
/// bytes from the next daemon, which recalls it again; nothing is left half-done.
#[test]
fn a_recall_cut_by_a_kill_is_done_by_the_next_daemon() {
    let fs_ = files(&[("big.bin", 12 << 20), ("small.txt", 5_000)]);
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto.endpoint);
    let mut t = TierMount::prepared(&moto, &proxy.endpoint, "restart-recall", &fs_, |c| c);
    t.mount_with_env(&[]);
    t.migrate_ok(&["--mode", "stub"]);
    assert_eq!(t.state("big.bin"), "stub");
    // A slow store: the recall is surely under way when the daemon is killed.
    proxy.rules(
        json!([{"method": "GET", "path_contains": "/data/", "action": "delay", "delay": 1.5}]),
    );
    let path = t.m("big.bin");
    let reader = std::thread::spawn(move || std::fs::read(path));
    let t0 = Instant::now();
    let state_now = |t: &TierMount| -> Option<String> {
        let out = t.cli(&["status", "--json", t.m("big.bin").to_str().unwrap()]);
        let v: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next()?).ok()?;
        v["state"].as_str().map(str::to_string)
    };
    while state_now(&t).as_deref() != Some("recalling") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the recall never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_and_wait_for_the_next(&t.mnt);
    proxy.rules(json!([]));
    let got = reader.join().unwrap().expect("the read across the kill");
    assert!(got == fs_[0].1, "big.bin read back different");
    // A streaming recall serves its chunks as they land: the read can end just before the
    // recall checks the whole object and makes the file premigrated.
    assert_eq!(
        t.wait_state("big.bin", "premigrated", Duration::from_secs(30)),
        "premigrated"
    );
    assert_all_read_back(&t, &fs_);
    let out = t.cli(&["verify", t.mnt_str().as_str()]);
    assert!(out.status.success(), "{}", show(&out));
    t.umount();
}

/// Files created and opened just before the kill (their node ids younger than the
/// node-handle map's batch): the handles go on in the next daemon, with and without
/// passthrough. An open makes its node id durable before the kernel gets the handle.
#[test]
fn handles_opened_just_before_a_kill_go_on() {
    for config in [None, Some("[fuse]\npassthrough = false\n")] {
        let m = Mounted::with_config(config);
        std::fs::create_dir(m.m("fresh")).unwrap();
        let mut held: Vec<std::fs::File> = (0..20)
            .map(|i| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(m.m(&format!("fresh/f{i}")))
                    .unwrap();
                f.write_all(format!("before {i}\n").as_bytes()).unwrap();
                f
            })
            .collect();
        let dir = std::fs::File::open(m.m("fresh")).unwrap();
        kill_and_wait_for_the_next(&m.mnt);
        for (i, f) in held.iter_mut().enumerate() {
            f.write_all(format!("after {i}\n").as_bytes())
                .unwrap_or_else(|e| panic!("f{i} ({config:?}): {e}"));
            f.seek(SeekFrom::Start(0)).unwrap();
            let mut got = String::new();
            f.read_to_string(&mut got)
                .unwrap_or_else(|e| panic!("f{i} ({config:?}): {e}"));
            assert_eq!(got, format!("before {i}\nafter {i}\n"));
        }
        // The directory handle too.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor this test holds.
        assert_eq!(
            unsafe { libc::fstat(fd, &mut st) },
            0,
            "{config:?}: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    }
}

/// A file a process holds open across restarts opens again, with kernel passthrough (the
/// default): the kernel's inode keeps the backing file the previous daemon registered for
/// it and refuses another (fs/fuse/iomode.c: EBUSY, which open(2) answers as EIO), so the
/// next daemon opens it with the same registration, taken over from the table the previous
/// one kept (fs/backing_ids.rs), and keeps it while files from before may use it. Through
/// nfs-ganesha (tests/share.rs), which keeps files open: NFSv4 OPENs of them across kills.
#[test]
fn a_file_held_open_across_a_restart_opens_again() {
    let mut m = Mounted::new();
    std::fs::write(m.m("f"), b"held").unwrap();
    let held = std::fs::File::open(m.m("f")).unwrap();
    let mut failures = Vec::new();
    kill_and_wait_for_the_next(&m.mnt);
    if let Err(e) = std::fs::read(m.m("f")) {
        failures.push(format!("open after a kill -9: {e}"));
    }
    let out = coldtier(&["restart", m.mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    if let Err(e) = std::fs::read(m.m("f")) {
        failures.push(format!("open after coldtier restart: {e}"));
    }
    // A second restart: the registration taken over and given back is there again.
    kill_and_wait_for_the_next(&m.mnt);
    match std::fs::OpenOptions::new().append(true).open(m.m("f")) {
        Ok(mut f) => f.write_all(b"+").unwrap(),
        Err(e) => failures.push(format!("open for writing after a second kill: {e}")),
    }
    let mut got = Vec::new();
    let mut held = held;
    held.read_to_end(&mut got).unwrap();
    assert_eq!(
        got, b"held+",
        "read through the handle from before the restarts"
    );
    drop(held);
    // Nothing holds it from before: the kernel forgets the inode (and the daemon closes
    // the registration it took over); it opens with a new one.
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(std::fs::read(m.m("f")).unwrap(), b"held+");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    m.umount();
}

/// A plain umount(8) returns before the daemon has finished; a `coldtier mount` of the same
/// source at once waits for the exiting daemon (up to 15 s) instead of refusing.
#[test]
fn a_mount_right_after_a_plain_umount_waits_for_the_exiting_daemon() {
    let moto = start_moto();
    let mut t = TierMount::prepared(
        &moto,
        &moto.endpoint,
        "quick-remount",
        &vec![("f".to_string(), b"data".to_vec())],
        |c| c,
    );
    // The old daemon waits in its exit until `go` exists.
    let go = t.dir.path().join("go");
    let fp = format!("exit-after-unmount:hold={}", go.display());
    t.mount_with_env(&[("COLDTIER_TEST_FAILPOINT", fp.as_str())]);
    let old = daemon(&t.mnt);
    let out = std::process::Command::new("umount")
        .arg(&t.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "umount: {}", show(&out));
    t.set_unmounted();
    // The old daemon waits in its exit: it is alive while the new mount starts, and lets
    // go a moment later (the new mount waits for it either way).
    assert!(
        alive(old),
        "the old daemon exited at once: the case is not exercised"
    );
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        std::fs::write(go, b"").unwrap();
    });
    t.mount_with_env(&[]);
    release.join().unwrap();
    assert!(!alive(old), "the new daemon runs beside the old one");
    assert_ne!(daemon(&t.mnt), old);
    assert_eq!(std::fs::read(t.mnt.join("f")).unwrap(), b"data");
}
