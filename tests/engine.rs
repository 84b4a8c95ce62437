//! The tiering engine in-process (tests/common/engine.rs): every transition of a file,
//! the store's failures, the crash points of migrate and recall, concurrent opens, with
//! the in-memory store. No /dev/fuse, no S3 server: these run anywhere `cargo test` does,
//! in a fraction of the time of the mount tests, and assert on states, events, request
//! counts and bytes.

#[path = "common/engine.rs"]
mod engine;

use std::sync::Arc;

use coldtier::base::failpoint::{self, FailAction};
use coldtier::catalog::{EventKind, FileState};
use coldtier::store::{MemoryStore, StoreErrorKind};
use coldtier::tier::config::MigrateMode;
use engine::{data, eager_settings, Dirs, Engine};

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

fn kinds_of(e: &Engine, rel: &str) -> Vec<EventKind> {
    let row = e.t.catalog.file_by_path(rel).unwrap().expect("a row");
    e.t.catalog
        .history(&row.file_id)
        .unwrap()
        .into_iter()
        .map(|ev| ev.kind)
        .collect()
}

#[test]
fn copy_only_then_stub_then_recall_walks_the_states() {
    let dirs = Dirs::new();
    let e = Engine::start(&dirs, store(), eager_settings());
    let body = data(1, 300_000);
    e.write("a", &body).unwrap();
    assert_eq!(e.state("a"), FileState::Resident);

    let s = e.migrate(MigrateMode::CopyOnly);
    assert_eq!((s.copied, s.stubbed, s.failed), (1, 0, 0), "{:?}", s.errors);
    assert_eq!(e.state("a"), FileState::Premigrated);
    assert_eq!(e.catalog_state("a"), Some(FileState::Premigrated));
    assert_eq!(e.objects(), e.referenced());
    assert_eq!(e.objects().len(), 1);

    let before = e.blocks("a");
    let s = e.migrate(MigrateMode::Stub);
    assert_eq!((s.copied, s.stubbed), (0, 1), "{:?}", s.errors);
    assert_eq!(e.state("a"), FileState::Stub);
    // The data's blocks are freed; the record's xattr may keep one block.
    assert!(
        before >= 300_000 / 512 && e.blocks("a") <= 8,
        "{before} -> {}",
        e.blocks("a")
    );
    assert_eq!(
        e.size("a").unwrap(),
        body.len() as u64,
        "stat shows the logical size"
    );
    assert_eq!(
        e.counts.puts(),
        1,
        "stubbing a proven copy uploads nothing more"
    );

    let gets = e.counts.gets();
    assert_eq!(e.read("a").unwrap(), body);
    assert_eq!(e.counts.gets(), gets + 1, "one recall, one GET");
    assert_eq!(e.state("a"), FileState::Premigrated);
    let k = kinds_of(&e, "a");
    for want in [
        EventKind::Copied,
        EventKind::Verified,
        EventKind::Stubbed,
        EventKind::RecallStarted,
        EventKind::Recalled,
    ] {
        assert!(k.contains(&want), "{want:?} missing from {k:?}");
    }
    assert!(e.verify().is_empty(), "{:?}", e.verify());
    e.stop();
}

#[test]
fn a_write_supersedes_the_copy_and_gc_deletes_the_old_object() {
    let dirs = Dirs::new();
    let e = Engine::start(&dirs, store(), eager_settings());
    e.write("a", &data(2, 50_000)).unwrap();
    e.migrate(MigrateMode::Stub);
    assert_eq!(e.state("a"), FileState::Stub);
    let old = e.objects();
    // A write-open of a stub brings the data back at the first write (not at the open).
    let gets = e.counts.gets();
    e.write_at("a", 10, b"changed").unwrap();
    assert_eq!(e.counts.gets(), gets + 1);
    let mut want = data(2, 50_000);
    want[10..17].copy_from_slice(b"changed");
    assert_eq!(e.read("a").unwrap(), want);
    // Same size, new mtime: the close has the content compared with the copy in the
    // background; it differs, so the copy is superseded.
    e.wait_for("a", FileState::Resident);
    assert!(kinds_of(&e, "a").contains(&EventKind::Superseded));
    // The old object stays until gc (retention zero here), then goes.
    assert_eq!(e.objects(), old);
    let g = e.gc();
    assert_eq!(g["deleted"].as_array().unwrap().len(), 1, "{g}");
    assert!(e.objects().is_empty());
    e.stop();
}

#[test]
fn truncating_a_stub_to_zero_fetches_nothing() {
    let dirs = Dirs::new();
    let e = Engine::start(&dirs, store(), eager_settings());
    e.write("a", &data(3, 10_000)).unwrap();
    e.migrate(MigrateMode::Stub);
    let gets = e.counts.gets();
    e.write("a", b"new").unwrap();
    assert_eq!(e.counts.gets(), gets, "O_TRUNC of a stub needs no recall");
    assert_eq!(e.read("a").unwrap(), b"new");
    assert_eq!(e.state("a"), FileState::Resident);
    e.stop();
}

#[test]
fn pinned_files_are_never_stubbed_and_release_refuses_them() {
    let dirs = Dirs::new();
    let e = Engine::start(&dirs, store(), eager_settings());
    e.write("p", &data(4, 10_000)).unwrap();
    e.write("q", &data(5, 10_000)).unwrap();
    e.pin("p", true);
    let s = e.migrate(MigrateMode::Stub);
    assert_eq!(s.stubbed, 1, "{s:?}");
    assert_eq!(e.state("p"), FileState::Resident);
    assert_eq!(e.state("q"), FileState::Stub);
    e.pin("p", false);
    e.migrate(MigrateMode::CopyOnly);
    assert_eq!(e.state("p"), FileState::Premigrated);
    e.pin("p", true);
    let err = e.t.release(&e.backing("p")).unwrap_err();
    assert!(err.message.contains("pinned"), "{}", err.message);
    assert_eq!(e.state("p"), FileState::Premigrated);
    e.pin("p", false);
    e.t.release(&e.backing("p")).unwrap();
    assert_eq!(e.state("p"), FileState::Stub);
    e.stop();
}

#[test]
fn an_unreachable_store_fails_the_run_and_changes_no_file() {
    let dirs = Dirs::new();
    let st = store();
    let e = Engine::start(&dirs, st.clone(), eager_settings());
    e.write("a", &data(6, 20_000)).unwrap();
    st.set_unreachable(true);
    let s = e.migrate(MigrateMode::Stub);
    assert_eq!((s.copied, s.stubbed, s.failed), (0, 0, 1), "{s:?}");
    assert_eq!(e.state("a"), FileState::Resident);
    assert_eq!(e.read("a").unwrap(), data(6, 20_000));
    st.set_unreachable(false);
    let s = e.migrate(MigrateMode::Stub);
    assert_eq!(s.stubbed, 1, "{s:?}");
    e.stop();
}

#[test]
fn a_corrupt_object_fails_the_recall_and_the_file_stays_a_stub() {
    let dirs = Dirs::new();
    let st = store();
    let e = Engine::start(&dirs, st.clone(), eager_settings());
    e.write("a", &data(7, 40_000)).unwrap();
    e.migrate(MigrateMode::Stub);
    let key = e.objects().remove(0);
    assert!(st.corrupt(&key));
    assert_eq!(e.read("a").unwrap_err().0, libc::EIO);
    assert_eq!(e.state("a"), FileState::Stub);
    assert_eq!(e.size("a").unwrap(), 40_000);
    assert!(kinds_of(&e, "a").contains(&EventKind::RecallFailed));
    e.stop();
}

/// A store error fails that recall (the S3 store retries inside; what reaches the engine
/// is final) and leaves nothing stuck: the next open recalls.
#[test]
fn a_failed_recall_leaves_a_stub_the_next_open_recalls() {
    let dirs = Dirs::new();
    let st = store();
    let e = Engine::start(&dirs, st.clone(), eager_settings());
    e.write("a", &data(8, 40_000)).unwrap();
    e.migrate(MigrateMode::Stub);
    st.fail_next(1, StoreErrorKind::Throttled);
    assert_eq!(e.read("a").unwrap_err().0, libc::EIO);
    assert_eq!(e.state("a"), FileState::Stub);
    assert_eq!(e.read("a").unwrap(), data(8, 40_000));
    assert_eq!(e.state("a"), FileState::Premigrated);
    e.stop();
}

#[test]
fn concurrent_opens_of_a_stub_share_one_recall() {
    let dirs = Dirs::new();
    let e = Arc::new(Engine::start(&dirs, store(), eager_settings()));
    e.write("a", &data(9, 2_000_000)).unwrap();
    e.migrate(MigrateMode::Stub);
    let gets = e.counts.gets();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || e.read("a").unwrap())
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), data(9, 2_000_000));
    }
    assert_eq!(e.counts.gets(), gets + 1, "eight opens, one GET");
    let recalls = kinds_of(&e, "a")
        .iter()
        .filter(|k| **k == EventKind::Recalled)
        .count();
    assert_eq!(recalls, 1);
}

#[test]
fn rename_and_unlink_follow_the_file() {
    let dirs = Dirs::new();
    let e = Engine::start(&dirs, store(), eager_settings());
    e.write("a", &data(10, 5_000)).unwrap();
    e.write("b", &data(11, 5_000)).unwrap();
    e.migrate(MigrateMode::Stub);
    e.rename("a", "c").unwrap();
    assert_eq!(e.catalog_state("c"), Some(FileState::Stub));
    assert_eq!(e.catalog_state("a"), None);
    e.unlink("b").unwrap();
    assert_eq!(e.catalog_state("b"), None);
    assert_eq!(e.read("c").unwrap(), data(10, 5_000));
    // b's object is deleted by gc; c's stays (named by c's copy record).
    e.gc();
    assert_eq!(e.objects(), e.referenced());
    e.stop();
}

/// An engine whose objects go to Deep Archive, restored only when the test says so, and
/// polled for every 20 ms.
fn archive_engine(dirs: &Dirs) -> (Engine, Arc<MemoryStore>) {
    let st = Arc::new(MemoryStore::new().with_restore_delay(std::time::Duration::from_secs(3600)));
    let mut settings = eager_settings();
    settings.uploads.storage_class = coldtier::store::StorageClass::DeepArchive;
    settings.recall.poll_interval = std::time::Duration::from_millis(20);
    (Engine::start(dirs, st.clone(), settings), st)
}

#[test]
fn archived_objects_are_restored_then_recalled() {
    let dirs = Dirs::new();
    let (e, st) = archive_engine(&dirs);
    e.write("a", &data(12, 8_000)).unwrap();
    let s = e.migrate(MigrateMode::Stub);
    assert_eq!(s.stubbed, 1, "{s:?}");
    // on_archived = fail: the open fails at once while the restore runs.
    assert_eq!(e.read("a").unwrap_err().0, libc::EAGAIN);
    assert_eq!(e.state("a"), FileState::RestorePending);
    st.finish_restores();
    // The poller recalls it in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while e.state("a") != FileState::Premigrated {
        assert!(std::time::Instant::now() < deadline, "never recalled");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(e.read("a").unwrap(), data(12, 8_000));
    e.stop();
}

/// Each crash point of migrate and recall: the step stops there (a panic, in-process, is
/// where a crash would stop it), a new engine starts over the same tree, catalog and
/// store: every file reads back as it was, verify finds nothing, and after gc the bucket
/// holds exactly what the files' records name.
#[test]
fn a_crash_at_any_step_loses_nothing() {
    let migrate_points = [
        "migrate-after-intent",
        "migrate-after-put",
        "migrate-after-verify",
        "migrate-after-stub-xattr",
        "migrate-after-truncate",
    ];
    let recall_points = [
        "recall-after-truncate",
        "recall-after-data",
        "recall-after-premig-xattr",
    ];
    for point in migrate_points.iter().chain(&recall_points) {
        let dirs = Dirs::new();
        let st = store();
        let body = data(13, 70_000);
        {
            let e = Engine::start(&dirs, st.clone(), eager_settings());
            e.write("a", &body).unwrap();
            if recall_points.contains(point) {
                e.migrate(MigrateMode::Stub);
            }
            failpoint::arm(point, FailAction::Panic);
            if recall_points.contains(point) {
                assert!(e.read("a").is_err(), "{point}: the recall went through");
            } else {
                let s = e.migrate(MigrateMode::Stub);
                assert_eq!(s.failed, 1, "{point}: {s:?}");
            }
            failpoint::disarm_all();
            e.stop();
        }
        let e = Engine::start(&dirs, st.clone(), eager_settings());
        assert_eq!(e.read("a").unwrap(), body, "{point}");
        assert!(e.verify().is_empty(), "{point}: {:?}", e.verify());
        // Again, whole: the crash left nothing in the way.
        e.migrate(MigrateMode::Stub);
        assert_eq!(e.state("a"), FileState::Stub, "{point}");
        assert_eq!(e.read("a").unwrap(), body, "{point}");
        e.gc();
        assert_eq!(e.objects(), e.referenced(), "{point}");
        e.stop();
    }
}

/// Found by the model test (tests/engine_model.rs): a copy, a write that changes the size,
/// then a crash after the stub step's truncate.
#[test]
fn a_crash_after_the_truncate_of_a_rewritten_file_keeps_the_catalog_in_step() {
    let dirs = Dirs::new();
    let st = store();
    {
        let e = Engine::start(&dirs, st.clone(), eager_settings());
        e.write("f", &data(18, 1)).unwrap();
        e.migrate(MigrateMode::CopyOnly);
        e.write_at("f", 0, &data(15, 491)).unwrap();
        failpoint::arm("migrate-after-truncate", FailAction::Panic);
        let s = e.migrate(MigrateMode::Stub);
        failpoint::disarm_all();
        assert_eq!(s.failed, 1, "{s:?}");
        e.stop();
    }
    let e = Engine::start(&dirs, st.clone(), eager_settings());
    let row = e.t.catalog.file_by_path("f").unwrap().unwrap();
    assert_eq!(row.state, FileState::Stub);
    assert_eq!(row.size, 491, "the row describes the new copy");
    assert_eq!(Some(row.object_key.unwrap()), e.referenced().pop());
    assert_eq!(e.read("f").unwrap(), data(15, 491));
    assert!(e.verify().is_empty(), "{:?}", e.verify());
}

/// The run says what it has to do (typed totals, the progress bar's 100%) once it has
/// chosen its candidates, before it reports any file done.
#[test]
fn a_policy_run_reports_its_totals_before_its_files() {
    use coldtier::base::progress::{Progress, Totals};
    let dirs = Dirs::new();
    let e = Engine::start(&dirs, store(), eager_settings());
    for (i, n) in [1000usize, 2000, 3000].iter().enumerate() {
        e.write(&format!("f{i}"), &data(20 + i as u64, *n)).unwrap();
    }
    let mut seen: Vec<Progress> = Vec::new();
    let mut hear = |p: Progress| seen.push(p);
    let s = e
        .block_on(e.t.run_policy(
            MigrateMode::Stub,
            "test",
            &mut hear,
            &coldtier::base::cancel::Cancel::new(),
        ))
        .unwrap();
    assert_eq!(s.stubbed, 3, "{s:?}");
    let with_totals: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].totals.is_some())
        .collect();
    assert_eq!(with_totals.len(), 1, "{seen:?}");
    let at = with_totals[0];
    assert_eq!(
        seen[at].totals,
        Some(Totals {
            files: 3,
            bytes: 6000
        })
    );
    assert!(seen[..at].iter().all(|p| p.files == 0), "{seen:?}");
    assert_eq!(seen.last().map(|p| (p.files, p.bytes)), Some((3, 6000)));
    e.stop();
}

/// Waits until armed failpoint `name` has been reached (fails after a minute).
fn wait_for_hit(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while failpoint::hits(name) == 0 {
        assert!(std::time::Instant::now() < deadline, "{name} never reached");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The bulk recall (`coldtier recall`) reads a stub's record and claims the file under the
/// file's gate, as a read does. Paused between the two (a failpoint inside the gate), a
/// read and a write of the same file meanwhile wait for it, join its recall, and the
/// write lands on the recalled bytes. Before the fix the bulk recall read the record
/// outside the gate: the read's recall and the write went through during the pause, and
/// the bulk recall then emptied the file and wrote the old object over the write.
#[test]
fn a_bulk_recall_never_writes_over_a_file_recalled_and_written_meanwhile() {
    let dirs = Dirs::new();
    let e = Arc::new(Engine::start(&dirs, store(), eager_settings()));
    let body = data(40, 30_000);
    e.write("a", &body).unwrap();
    let s = e.migrate(MigrateMode::Stub);
    assert_eq!(s.stubbed, 1, "{s:?}");
    failpoint::arm("bulk-recall-before-claim", FailAction::Pause(1500));
    let bulk = {
        let e = e.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            e.block_on(
                e.t.recall_paths(vec![(0, "a".into())], 4, &mut |(_, r)| out.push(r.is_ok())),
            );
            out
        })
    };
    // The bulk recall is in its pause, the stub's record read: the write's recall waits
    // for it (with the fix) or overtakes it (without).
    wait_for_hit("bulk-recall-before-claim");
    e.write_at("a", 100, b"written after the recall").unwrap();
    assert_eq!(bulk.join().unwrap(), vec![true]);
    failpoint::disarm_all();
    e.settle();
    let mut want = body.clone();
    want[100..124].copy_from_slice(b"written after the recall");
    assert_eq!(e.read("a").unwrap(), want, "the write was lost");
}

/// A restore poller whose file was recalled (by a read, once the restore was done) and
/// written while the poller's HEAD was in flight leaves the file alone: it checks, under
/// the file's gate, that the file is still the stub it polls for before it recalls it.
#[test]
fn a_restore_poller_never_recalls_over_a_file_recalled_and_written_meanwhile() {
    let dirs = Dirs::new();
    let (e, st) = archive_engine(&dirs);
    let body = data(41, 20_000);
    e.write("a", &body).unwrap();
    assert_eq!(e.migrate(MigrateMode::Stub).stubbed, 1);
    // The poller stops after its next HEAD, before it recalls, until `go` exists.
    let go = dirs.dir.path().join("go");
    failpoint::arm(
        "restore-poller-after-head",
        FailAction::Hold(go.display().to_string()),
    );
    failpoint::arm("restore-poller-checked", FailAction::Pause(0));
    assert_eq!(e.read("a").unwrap_err().0, libc::EAGAIN);
    st.finish_restores();
    // Wait until the poller has seen the restore done (it is in its pause).
    wait_for_hit("restore-poller-after-head");
    // Meanwhile a read recalls it, and a write changes it.
    e.write_at("a", 7, b"new bytes").unwrap();
    let mut want = body.clone();
    want[7..16].copy_from_slice(b"new bytes");
    assert_eq!(e.read("a").unwrap(), want);
    let gets = e.counts.gets();
    // The poller goes on: it finds the file no longer that stub and stops.
    std::fs::write(&go, b"").unwrap();
    wait_for_hit("restore-poller-checked");
    failpoint::disarm_all();
    e.settle();
    assert_eq!(e.read("a").unwrap(), want, "the write was lost");
    assert_eq!(e.counts.gets(), gets, "the poller fetched the object again");
    e.stop();
}
