//! Catalog tests against real SQLite files in temporary directories.

use super::*;
use serde_json::json;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("catalog.db");
    (dir, path)
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

fn file(n: u32, state: FileState) -> FileRow {
    FileRow {
        state,
        size: 1000 + u64::from(n),
        mtime_ns: 1_700_000_000_000_000_000 + i64::from(n),
        ctime_ns: 1_700_000_000_000_000_001 + i64::from(n),
        ino: 10_000 + u64::from(n),
        ..FileRow::new(format!("id-{n:08}"), format!("dir{}/file{n:08}", n % 100))
    }
}

fn event_count(path: &Path) -> i64 {
    raw(path)
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap()
}

fn chain_broken_at(err: CatalogError) -> ChainError {
    match err {
        CatalogError::ChainBroken(e) => e,
        other => panic!("expected ChainBroken, got {other:?}"),
    }
}

#[test]
fn catalog_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Catalog>();
}

#[test]
fn open_twice_is_idempotent_and_keeps_data() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    cat.record_config("a = 1").unwrap();
    cat.transition(&file(1, FileState::Resident), EventKind::Scanned, json!({}))
        .unwrap();
    drop(cat);

    let cat = Catalog::open(&path).unwrap();
    let again = Catalog::open(&path).unwrap(); // a second open while the first is live
    assert_eq!(cat.current_config().unwrap().unwrap().version, 1);
    assert!(again.file_by_id("id-00000001").unwrap().is_some());
    assert_eq!(cat.verify_chain().unwrap(), 2);

    let c = raw(&path);
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let app: i64 = c
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn every_write_returns_durable_and_concurrent_writes_share_fsyncs() {
    let (_dir, path) = temp();
    let cat = std::sync::Arc::new(Catalog::open(&path).unwrap());
    let (committed, synced) = cat.durability();
    assert_eq!(committed, synced, "open leaves nothing unsynced");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let cat = cat.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    cat.append_event(
                        None,
                        None,
                        EventKind::Scanned,
                        serde_json::json!({"t": t, "i": i}),
                    )
                    .unwrap();
                    // Whatever this thread committed is on disk when the call returns.
                    let (_, synced) = cat.durability();
                    assert!(synced >= 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (committed, synced) = cat.durability();
    assert_eq!(
        committed, synced,
        "every commit was made durable before its call returned"
    );
    assert!((1..=400).contains(&committed), "{committed} commits");
    assert_eq!(cat.verify_chain().unwrap(), 400);
}

#[test]
fn writer_is_wal_with_group_commit() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let w = &cat.writer.lock().conn;
    let sync: i64 = w.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(
        sync, 1,
        "synchronous is NORMAL (1): write() fsyncs the WAL itself"
    );
    let mode: String = w
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let busy: i64 = w
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .unwrap();
    assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
}

#[test]
fn refuses_a_newer_schema() {
    let (_dir, path) = temp();
    drop(Catalog::open(&path).unwrap());
    raw(&path).pragma_update(None, "user_version", 99).unwrap();
    let err = Catalog::open(&path).unwrap_err();
    match &err {
        CatalogError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (99, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err
        .to_string()
        .contains("newer than this coldtier supports"));
}

#[test]
fn refuses_a_foreign_database() {
    let (dir, _) = temp();
    let path = dir.path().join("other.db");
    raw(&path)
        .execute_batch("CREATE TABLE something (x INTEGER)")
        .unwrap();
    let err = Catalog::open(&path).unwrap_err();
    assert!(
        matches!(err, CatalogError::NotACatalog { .. }),
        "got {err:?}"
    );
}

#[test]
fn config_versions_are_deduplicated_and_announced() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    assert!(cat.current_config().unwrap().is_none());

    let v1 = cat.record_config("threshold_days = 30\n").unwrap();
    let same = cat.record_config("threshold_days = 30\n").unwrap();
    assert_eq!(v1, same);
    assert_eq!(v1.version, 1);
    assert_eq!(cat.config_history().unwrap().len(), 1);
    // sha256sum of the text
    assert_eq!(
        v1.hash,
        "7bf1a4647cdcb6a18037c6ce23d4f515dcf3512dd99fbdb3abc7fecc5b4046dd"
    );

    let v2 = cat.record_config("threshold_days = 7\n").unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(cat.current_config().unwrap().unwrap(), v2);
    assert_eq!(cat.config_version(1).unwrap().unwrap(), v1);
    assert!(cat.config_version(3).unwrap().is_none());
    assert_eq!(cat.config_history().unwrap(), vec![v1.clone(), v2.clone()]);

    // One CONFIG_CHANGED event per new version, carrying that version.
    let events = cat.events_since(0, 100).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.kind == EventKind::ConfigChanged));
    assert_eq!(events[1].config_version, 2);
    assert_eq!(events[1].detail["version"], 2);
    assert_eq!(events[1].detail["previous"], 1);
    assert_eq!(events[1].detail["hash"], v2.hash.as_str());
    assert_eq!(events[1].time_ns, v2.time_ns);
    assert_eq!(events[0].detail["previous"], serde_json::Value::Null);

    // Going back to an old text is a new version.
    assert_eq!(
        cat.record_config("threshold_days = 30\n").unwrap().version,
        3
    );
}

#[test]
fn events_carry_the_config_version_in_force() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let before = cat
        .append_event(
            None,
            None,
            EventKind::Failed,
            json!({"why": "no config yet"}),
        )
        .unwrap();
    assert_eq!(before.config_version, 0);

    cat.record_config("threshold_days = 30").unwrap();
    let mut f = file(1, FileState::Premigrated);
    cat.transition(&f, EventKind::Verified, json!({})).unwrap();
    cat.record_config("threshold_days = 7").unwrap();
    f.state = FileState::Stub;
    let stubbed = cat
        .transition(&f, EventKind::Stubbed, json!({"freed": 1001}))
        .unwrap();
    assert_eq!(stubbed.config_version, 2);

    let history = cat.history(&f.file_id).unwrap();
    assert_eq!(
        history
            .iter()
            .map(|e| (e.kind, e.config_version))
            .collect::<Vec<_>>(),
        vec![(EventKind::Verified, 1), (EventKind::Stubbed, 2)]
    );
    // "What threshold was active when this file was stubbed?"
    let stub_event = history
        .iter()
        .find(|e| e.kind == EventKind::Stubbed)
        .unwrap();
    let config = cat.config_for_event(stub_event.id).unwrap().unwrap();
    assert_eq!(config.text, "threshold_days = 7");
    assert!(cat.config_for_event(before.id).unwrap().is_none());
}

#[test]
fn events_and_config_versions_are_append_only() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    cat.record_config("x").unwrap();
    cat.append_event(Some("f"), Some("p"), EventKind::Scanned, json!({}))
        .unwrap();
    let c = raw(&path);
    for sql in [
        "UPDATE events SET detail = '{\"a\":1}' WHERE id = 2",
        "DELETE FROM events WHERE id = 2",
        "DELETE FROM events",
    ] {
        let err = c.execute(sql, []).unwrap_err();
        assert!(
            err.to_string().contains("events are append-only"),
            "{sql}: {err}"
        );
    }
    for sql in [
        "UPDATE config_versions SET text = 'y'",
        "DELETE FROM config_versions",
    ] {
        let err = c.execute(sql, []).unwrap_err();
        assert!(
            err.to_string().contains("config versions are append-only"),
            "{sql}: {err}"
        );
    }
    // A raw insert that does not extend the chain is refused too.
    let err = c
        .execute(
            "INSERT INTO events (id, time_ns, kind, detail, config_version, prev_hash, hash) \
             VALUES (7, 0, 'SCANNED', '{}', 1, ?1, ?1)",
            [GENESIS_HASH],
        )
        .unwrap_err();
    assert!(err.to_string().contains("must extend the chain"), "{err}");
    assert_eq!(cat.verify_chain().unwrap(), 2);
}

/// A catalog with 6 events and a raw connection that may tamper with them.
fn tamperable() -> (tempfile::TempDir, Catalog, Connection) {
    let (dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    cat.record_config("v1").unwrap(); // event 1
    for n in 1..=5 {
        cat.transition(
            &file(n, FileState::Resident),
            EventKind::Scanned,
            json!({"n": n}),
        )
        .unwrap();
    }
    assert_eq!(cat.verify_chain().unwrap(), 6);
    let c = raw(&path);
    c.execute_batch("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;")
        .unwrap();
    (dir, cat, c)
}

#[test]
fn verify_chain_names_a_changed_row() {
    let (_dir, cat, c) = tamperable();
    c.execute("UPDATE events SET detail = '{\"n\":99}' WHERE id = 4", [])
        .unwrap();
    let e = chain_broken_at(cat.verify_chain().unwrap_err());
    assert_eq!(e.first_bad_id, 4);
    assert!(e.reason.contains("hash does not match"), "{}", e.reason);
}

#[test]
fn verify_chain_names_a_row_rewritten_with_a_fresh_hash() {
    let (_dir, cat, c) = tamperable();
    // The tamperer recomputes row 3's own hash; row 4's link to it breaks.
    let ev = cat.events_since(2, 1).unwrap().remove(0);
    let forged_detail = r#"{"n":42}"#;
    let forged = event_hash(&HashInput {
        prev_hash: &ev.prev_hash,
        id: ev.id,
        time_ns: ev.time_ns,
        file_id: ev.file_id.as_deref(),
        path: ev.path.as_deref(),
        kind: ev.kind.as_str(),
        detail: forged_detail,
        config_version: ev.config_version,
    });
    c.execute(
        "UPDATE events SET detail = ?1, hash = ?2 WHERE id = 3",
        [forged_detail, forged.as_str()],
    )
    .unwrap();
    let e = chain_broken_at(cat.verify_chain().unwrap_err());
    assert_eq!(e.first_bad_id, 4);
    assert!(e.reason.contains("hash of event 3"), "{}", e.reason);
}

#[test]
fn verify_chain_names_a_deleted_row() {
    let (_dir, cat, c) = tamperable();
    c.execute("DELETE FROM events WHERE id = 3", []).unwrap();
    let e = chain_broken_at(cat.verify_chain().unwrap_err());
    assert_eq!(e.first_bad_id, 4);
    assert!(e.reason.contains("event 3 is missing"), "{}", e.reason);
}

#[test]
fn verify_chain_names_a_deleted_first_row() {
    let (_dir, cat, c) = tamperable();
    c.execute("DELETE FROM events WHERE id = 1", []).unwrap();
    let e = chain_broken_at(cat.verify_chain().unwrap_err());
    assert_eq!(e.first_bad_id, 2);
    assert!(e.reason.contains("missing"), "{}", e.reason);
}

#[test]
fn verify_chain_names_reordered_rows() {
    let (_dir, cat, c) = tamperable();
    c.execute_batch(
        "UPDATE events SET id = 1003 WHERE id = 3;
         UPDATE events SET id = 3 WHERE id = 4;
         UPDATE events SET id = 4 WHERE id = 1003;",
    )
    .unwrap();
    let e = chain_broken_at(cat.verify_chain().unwrap_err());
    assert_eq!(e.first_bad_id, 3);
    assert!(e.reason.contains("prev_hash"), "{}", e.reason);
}

#[test]
fn transition_is_atomic_when_the_event_insert_fails() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let mut f = file(1, FileState::Premigrated);
    f.object_key = Some("pfx/id-00000001/1".into());
    cat.transition(&f, EventKind::Verified, json!({})).unwrap();

    // A real SQLite failure of the event insert, after the file row was written.
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER fail_stubbed BEFORE INSERT ON events WHEN NEW.kind = 'STUBBED'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let mut stub = f.clone();
    stub.state = FileState::Stub;
    stub.path = "moved/elsewhere".into();
    let err = cat
        .transition(&stub, EventKind::Stubbed, json!({}))
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(matches!(
        err,
        CatalogError::Sqlite {
            context: "inserting an event",
            ..
        }
    ));

    let now = cat.file_by_id(&f.file_id).unwrap().unwrap();
    assert_eq!(now.state, FileState::Premigrated, "file change rolled back");
    assert_eq!(now.path, f.path);
    assert!(cat.file_by_path("moved/elsewhere").unwrap().is_none());
    assert_eq!(event_count(&path), 1);
    assert_eq!(cat.verify_chain().unwrap(), 1);

    // And a refused file row appends no event.
    let other = FileRow {
        path: f.path.clone(),
        ..file(2, FileState::Resident)
    };
    let err = cat
        .transition(&other, EventKind::Scanned, json!({}))
        .unwrap_err();
    assert!(matches!(err, CatalogError::PathInUse { .. }), "{err:?}");
    assert_eq!(event_count(&path), 1);

    // Each failed write was the whole of its transaction (no savepoint: the rollback
    // took the transaction): the writer goes on, and the chain with it.
    raw(&path)
        .execute_batch("DROP TRIGGER fail_stubbed")
        .unwrap();
    cat.transition(&stub, EventKind::Stubbed, json!({}))
        .unwrap();
    assert_eq!(
        cat.file_by_id(&f.file_id).unwrap().unwrap().state,
        FileState::Stub
    );
    assert_eq!(cat.verify_chain().unwrap(), 2);
}

/// A batch of [`OWN_TRANSACTION`] transitions or more does not join the open transaction
/// (where it would run in a savepoint): it commits that one first and is the first of its
/// own. A smaller batch joins. The open transaction is held open by a writer counted as
/// waiting (so that its write does not commit), as while other threads queue.
#[test]
fn a_large_batch_starts_its_own_transaction() {
    let (_dir, path) = temp();
    let cat = Arc::new(Catalog::open(&path).unwrap());
    let batch = |from: u32, n: u32| -> Vec<_> {
        (from..from + n)
            .map(|n| (file(n, FileState::Resident), EventKind::Scanned, json!({})))
            .collect()
    };
    // Opens a transaction with one write in it, left open; `then` runs while it is.
    let with_one_open = |first: u32, then: &dyn Fn()| {
        let before = cat.ended();
        cat.waiting.fetch_add(1, Ordering::SeqCst);
        let c = Arc::clone(&cat);
        let t = std::thread::spawn(move || {
            c.transition(
                &file(first, FileState::Resident),
                EventKind::Scanned,
                json!({}),
            )
            .unwrap();
        });
        loop {
            {
                let w = cat.writer.lock();
                if w.open && w.members == 1 {
                    break;
                }
            }
            std::thread::yield_now();
        }
        cat.waiting.fetch_sub(1, Ordering::SeqCst);
        then();
        t.join().unwrap();
        cat.ended() - before
    };
    let small = batch(100, OWN_TRANSACTION as u32 - 1);
    let commits = with_one_open(1, &|| {
        cat.transition_batch_with(&small, false).unwrap();
    });
    assert_eq!(commits, 1, "a small batch joins the open transaction");
    let large = batch(200, OWN_TRANSACTION as u32);
    let commits = with_one_open(2, &|| {
        cat.transition_batch_with(&large, true).unwrap();
    });
    assert_eq!(
        commits, 2,
        "a large batch commits the open transaction and then its own"
    );
    let n = 2 + 2 * OWN_TRANSACTION as i64 - 1;
    assert_eq!(event_count(&path), n);
    assert_eq!(cat.verify_chain().unwrap(), n as u64);
    assert!(cat.file_by_id("id-00000001").unwrap().is_some());
    assert!(cat.file_by_id("id-00000231").unwrap().is_some());
}

#[test]
fn transition_batch_is_all_or_nothing() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let mut items: Vec<_> = (1..=3)
        .map(|n| (file(n, FileState::Resident), EventKind::Scanned, json!({})))
        .collect();
    items[2].0.path = items[0].0.path.clone(); // collides with the first
    assert!(cat.transition_batch(&items).is_err());
    assert_eq!(event_count(&path), 0);
    assert!(cat.file_by_id("id-00000001").unwrap().is_none());

    items[2].0.path = "unique".into();
    assert_eq!(cat.transition_batch(&items).unwrap(), 1..4);
    assert_eq!(cat.verify_chain().unwrap(), 3);
    assert_eq!(cat.transition_batch(&[]).unwrap(), 4..4);
}

/// A batch's events go in by statements of [`EVENTS_PER_INSERT`] rows (and the rest one
/// by one): a row refused inside one of them undoes the whole batch, files and events,
/// and the chain goes on from where it was.
#[test]
fn a_batch_whose_event_insert_fails_in_a_multi_row_statement_leaves_nothing() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let n = 2 * EVENTS_PER_INSERT as u32 + 5;
    let mut items: Vec<_> = (1..=n)
        .map(|n| (file(n, FileState::Resident), EventKind::Scanned, json!({})))
        .collect();
    // The failing row is in the middle of the second multi-row statement.
    let bad = EVENTS_PER_INSERT + EVENTS_PER_INSERT / 2;
    items[bad].1 = EventKind::Stubbed;
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER fail_stubbed BEFORE INSERT ON events WHEN NEW.kind = 'STUBBED'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let err = cat.transition_batch(&items).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(event_count(&path), 0);
    assert!(cat.file_by_id("id-00000001").unwrap().is_none());
    raw(&path)
        .execute_batch("DROP TRIGGER fail_stubbed")
        .unwrap();
    assert_eq!(cat.transition_batch(&items).unwrap(), 1..i64::from(n) + 1);
    assert_eq!(cat.verify_chain().unwrap(), u64::from(n));
    let events = cat.events_since(0, 100).unwrap();
    assert_eq!(events.len(), n as usize);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.id, i as i64 + 1);
        assert_eq!(e.file_id.as_deref(), Some(items[i].0.file_id.as_str()));
        assert_eq!(e.kind, items[i].1);
    }
}

#[test]
fn concurrent_appends_make_one_chain() {
    let (_dir, path) = temp();
    let cat = Arc::new(Catalog::open(&path).unwrap());
    cat.record_config("c").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let cat = Arc::clone(&cat);
            std::thread::spawn(move || {
                for i in 0..250u32 {
                    if i % 2 == 0 {
                        cat.append_event(
                            Some(&format!("t{t}")),
                            None,
                            EventKind::Scanned,
                            json!({"t": t, "i": i}),
                        )
                        .unwrap();
                    } else {
                        let f = FileRow::new(format!("t{t}-{i}"), format!("t{t}/{i}"));
                        cat.transition(&f, EventKind::Scanned, json!({"i": i}))
                            .unwrap();
                    }
                    // Readers alongside.
                    cat.events_since(0, 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(cat.verify_chain().unwrap(), 1001);
    let all = cat.events_since(0, 2000).unwrap();
    assert!(all.iter().enumerate().all(|(i, e)| e.id == i as i64 + 1));
    assert!(all.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    for t in 0..4 {
        assert_eq!(cat.history(&format!("t{t}")).unwrap().len(), 125);
    }
}

#[test]
fn readers_see_committed_data_while_the_writer_is_in_a_transaction() {
    let (_dir, path) = temp();
    let cat = Arc::new(Catalog::open(&path).unwrap());
    cat.transition(&file(1, FileState::Resident), EventKind::Scanned, json!({}))
        .unwrap();

    let mut w = cat.writer.lock();
    let tx = w
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    upsert_file(
        &tx,
        &file(2, FileState::Resident),
        EventKind::Scanned,
        0,
        &mut TotalsDelta::default(),
    )
    .unwrap();
    tx.execute(
        "UPDATE files SET state = 'stub' WHERE file_id = 'id-00000001'",
        [],
    )
    .unwrap();

    // Another thread reads while the write transaction is open, without waiting for it.
    let reader = Arc::clone(&cat);
    let seen = std::thread::spawn(move || {
        let start = Instant::now();
        let one = reader.file_by_id("id-00000001").unwrap();
        let two = reader.file_by_id("id-00000002").unwrap();
        let history = reader.history("id-00000001").unwrap();
        (one, two, history.len(), start.elapsed())
    })
    .join()
    .unwrap();
    assert_eq!(seen.0.unwrap().state, FileState::Resident, "committed data");
    assert!(seen.1.is_none(), "uncommitted data is not visible");
    assert_eq!(seen.2, 1);
    assert!(seen.3 < BUSY_TIMEOUT / 2, "reader waited {:?}", seen.3);

    tx.commit().unwrap();
    drop(w);
    assert_eq!(
        cat.file_by_id("id-00000001").unwrap().unwrap().state,
        FileState::Stub
    );
    assert!(cat.file_by_id("id-00000002").unwrap().is_some());
}

#[test]
fn files_lookups_rename_and_delete() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let mut a = file(1, FileState::Resident);
    a.ino = u64::MAX - 5; // above i64::MAX: stored bit for bit
    a.object_key = Some("k".into());
    a.version_id = Some("v".into());
    a.checksum_algo = Some("sha256".into());
    a.checksum = Some("00ff".into());
    a.md5 = Some("abcd".into());
    a.storage_class = Some("GLACIER".into());
    a.pinned = true;
    let ev = cat.transition(&a, EventKind::Scanned, json!({})).unwrap();
    let got = cat.file_by_id(&a.file_id).unwrap().unwrap();
    assert_eq!(got.updated_at, ev.time_ns);
    assert_eq!(
        FileRow {
            updated_at: 0,
            ..got
        },
        a
    );
    assert_eq!(
        cat.file_by_path(&a.path).unwrap().unwrap().file_id,
        a.file_id
    );
    assert!(cat.file_by_path("nope").unwrap().is_none());

    let b = file(2, FileState::Stub);
    cat.transition(&b, EventKind::Stubbed, json!({})).unwrap();

    // Rename keeps identity; a taken path or an unknown id is refused.
    cat.rename_path(&a.file_id, "renamed/a").unwrap();
    assert!(cat.file_by_path(&a.path).unwrap().is_none());
    assert_eq!(
        cat.file_by_path("renamed/a").unwrap().unwrap().file_id,
        a.file_id
    );
    assert!(matches!(
        cat.rename_path(&a.file_id, &b.path).unwrap_err(),
        CatalogError::PathInUse { other_file_id, .. } if other_file_id == b.file_id
    ));
    assert!(matches!(
        cat.rename_path("ghost", "x").unwrap_err(),
        CatalogError::NoSuchFile(_)
    ));
    let a2 = FileRow {
        path: "renamed/a".into(),
        state: FileState::Premigrated,
        ..a.clone()
    };
    let verified = cat
        .transition(&a2, EventKind::Verified, json!({"ok": true}))
        .unwrap();
    let h = cat.history(&a.file_id).unwrap();
    assert_eq!(
        h.iter()
            .map(|e| (e.kind, e.path.clone().unwrap()))
            .collect::<Vec<_>>(),
        vec![
            (EventKind::Scanned, a.path.clone()),
            (EventKind::Verified, "renamed/a".to_owned())
        ]
    );

    let counts = cat.state_counts().unwrap();
    assert_eq!(counts.len(), 5);
    assert_eq!(counts[1].state, FileState::Premigrated);
    assert_eq!((counts[1].files, counts[1].bytes), (1, a.size));
    assert_eq!((counts[2].files, counts[2].bytes), (1, b.size));
    assert_eq!(counts[0].files, 0);

    let del = cat
        .delete_file(&b.file_id, json!({"reason": "unlink"}))
        .unwrap();
    assert_eq!(del.kind, EventKind::Deleted);
    assert_eq!(del.detail["row"]["object_key"], serde_json::Value::Null);
    assert_eq!(del.detail["row"]["path"], b.path.as_str());
    assert_eq!(del.detail["detail"]["reason"], "unlink");
    assert!(cat.file_by_id(&b.file_id).unwrap().is_none());
    assert!(matches!(
        cat.delete_file(&b.file_id, json!({})).unwrap_err(),
        CatalogError::NoSuchFile(_)
    ));
    // The path is free again for a new identity.
    cat.transition(
        &FileRow::new("new-id", b.path.clone()),
        EventKind::Scanned,
        json!({}),
    )
    .unwrap();
    assert_eq!(cat.verify_chain().unwrap(), 5);
    // Stored events read back as they were returned when appended.
    assert_eq!(cat.events_since(2, 1).unwrap()[0], verified);
    assert_eq!(h[1], verified);
    assert_eq!(
        cat.last_event().unwrap().unwrap().path.as_deref(),
        Some(b.path.as_str())
    );

    let big = FileRow {
        size: u64::MAX,
        ..file(9, FileState::Resident)
    };
    assert!(matches!(
        cat.transition(&big, EventKind::Scanned, json!({})),
        Err(CatalogError::OutOfRange { what: "size", .. })
    ));
}

#[test]
fn files_by_state_orders_by_path_and_limits() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let items: Vec<_> = (1..=20)
        .map(|n| {
            let state = if n % 2 == 0 {
                FileState::Stub
            } else {
                FileState::Resident
            };
            (file(n, state), EventKind::Scanned, json!({}))
        })
        .collect();
    cat.transition_batch(&items).unwrap();
    let stubs = cat.files_by_state(FileState::Stub, 5).unwrap();
    assert_eq!(stubs.len(), 5);
    assert!(stubs.iter().all(|f| f.state == FileState::Stub));
    assert!(stubs.windows(2).all(|w| w[0].path < w[1].path));
    assert_eq!(cat.files_by_state(FileState::Stub, 100).unwrap().len(), 10);
    assert!(cat
        .files_by_state(FileState::Recalling, 100)
        .unwrap()
        .is_empty());
}

#[test]
fn jobs_record_runs() {
    let (_dir, path) = temp();
    let clock = Arc::new(AtomicI64::new(1_000_000_000));
    let c2 = Arc::clone(&clock);
    let cat = Catalog::open_with_clock(&path, Box::new(move || c2.load(Ordering::SeqCst))).unwrap();
    cat.record_config("cfg").unwrap();
    let id = cat.start_job("migrate", "scheduled").unwrap();
    let running = cat.job(id).unwrap().unwrap();
    assert_eq!(running.finished_ns, None);
    assert_eq!(running.config_version, 1);
    clock.fetch_add(2_500_000_000, Ordering::SeqCst);
    let counts = JobCounts {
        files_scanned: 10,
        files_copied: 4,
        bytes_copied: 4096,
        files_stubbed: 3,
        files_failed: MAX_JOB_ERRORS as u64 + 5,
        errors: (0..MAX_JOB_ERRORS + 5).map(|i| format!("e{i}")).collect(),
        bytes_stubbed: 2048,
    };
    let done = cat.finish_job(id, &counts).unwrap();
    assert_eq!(done.bytes_stubbed, 2048);
    assert_eq!(done.duration_ms, Some(2500));
    assert_eq!(done.finished_ns, Some(3_500_000_000));
    assert_eq!(
        (done.files_scanned, done.files_copied, done.bytes_copied),
        (10, 4, 4096)
    );
    assert_eq!(done.errors.len(), MAX_JOB_ERRORS + 1);
    assert_eq!(
        done.errors.last().unwrap(),
        "... and 5 more errors not kept"
    );
    assert!(matches!(
        cat.finish_job(id, &counts).unwrap_err(),
        CatalogError::JobAlreadyFinished(_)
    ));
    assert!(matches!(
        cat.finish_job(999, &counts).unwrap_err(),
        CatalogError::NoSuchJob(999)
    ));
    let id2 = cat.start_job("gc", "manual").unwrap();
    let jobs = cat.jobs(10).unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id2, id]);
    assert_eq!(jobs[1], done);
    assert_eq!(cat.jobs(1).unwrap().len(), 1);
}

#[test]
fn event_times_never_go_backwards() {
    let (_dir, path) = temp();
    let clock = Arc::new(AtomicI64::new(5_000));
    let c2 = Arc::clone(&clock);
    let cat = Catalog::open_with_clock(&path, Box::new(move || c2.load(Ordering::SeqCst))).unwrap();
    let a = cat
        .append_event(None, None, EventKind::Scanned, json!({}))
        .unwrap();
    clock.store(1_000, Ordering::SeqCst); // the clock steps back
    let b = cat
        .append_event(None, None, EventKind::Scanned, json!({}))
        .unwrap();
    assert_eq!((a.time_ns, b.time_ns), (5_000, 5_000));
    assert_eq!(cat.last_event().unwrap().unwrap(), b);
}

#[test]
fn enum_string_forms() {
    assert_eq!(FileState::RestorePending.to_string(), "restore_pending");
    assert_eq!(
        serde_json::to_string(&FileState::RestorePending).unwrap(),
        "\"restore_pending\""
    );
    assert_eq!(EventKind::RecallFailed.to_string(), "RECALL_FAILED");
    for s in FileState::ALL {
        assert_eq!(s.as_str().parse::<FileState>().unwrap(), s);
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    for k in EventKind::ALL {
        assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
    assert!("STUB".parse::<FileState>().is_err());
}

/// 100k files (and their 100k events) in one transaction, then the queries that `find` and
/// `stats` will need. Prints timings; asserts only on results.
#[test]
fn bench_100k_files() {
    const N: u32 = 100_000;
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    cat.record_config("bench").unwrap();
    let states = FileState::ALL;
    let items: Vec<_> = (0..N)
        .map(|n| {
            (
                file(n, states[n as usize % states.len()]),
                EventKind::Scanned,
                json!({"n": n}),
            )
        })
        .collect();

    let t = Instant::now();
    let ids = cat.transition_batch(&items).unwrap();
    let insert = t.elapsed();
    assert_eq!(ids, 2..i64::from(N) + 2);

    let t = Instant::now();
    let stubs = cat.files_by_state(FileState::Stub, 1000).unwrap();
    let by_state = t.elapsed();
    assert_eq!(stubs.len(), 1000);

    let t = Instant::now();
    let counts = cat.state_counts().unwrap();
    let count = t.elapsed();
    assert!(counts.iter().all(|c| c.files == u64::from(N) / 5));

    let t = Instant::now();
    let all_stubs = cat.files_by_state(FileState::Stub, usize::MAX).unwrap();
    let all_by_state = t.elapsed();
    assert_eq!(all_stubs.len(), N as usize / 5);

    let t = Instant::now();
    for n in (0..N).step_by(997) {
        let p = format!("dir{}/file{n:08}", n % 100);
        assert!(cat.file_by_path(&p).unwrap().is_some());
        assert_eq!(cat.history(&format!("id-{n:08}")).unwrap().len(), 1);
    }
    let lookups = t.elapsed();

    let t = Instant::now();
    assert_eq!(cat.verify_chain().unwrap(), u64::from(N) + 1);
    let verify = t.elapsed();

    println!(
        "bench_100k_files: insert {N} files + events in one transaction {insert:?}; \
         files_by_state(stub, 1000) {by_state:?}; all {} stubs {all_by_state:?}; \
         state_counts {count:?}; 101 x (file_by_path + history) {lookups:?}; \
         verify_chain {verify:?}",
        all_stubs.len()
    );
}

/// The queries behind lookups, listings, counts and appends are index searches (or a scan
/// of a covering index for counts), never a scan of a table: they stay fast at 1M files.
#[test]
fn hot_queries_use_indexes() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let c = raw(&path);
    let queries = [
        format!("SELECT {FILE_COLS} FROM files WHERE file_id = 'x'"),
        format!("SELECT {FILE_COLS} FROM files WHERE path = 'x'"),
        format!("SELECT {FILE_COLS} FROM files WHERE state = 'stub' ORDER BY path LIMIT 10"),
        "SELECT file_id FROM files WHERE path = 'x' AND file_id <> 'y'".to_owned(),
        "SELECT state, count(*), coalesce(sum(size), 0) FROM files \
         INDEXED BY files_state_size GROUP BY state"
            .to_owned(),
        "SELECT count(*) FROM files WHERE path >= 'dir1/' AND path < 'dir10'".to_owned(),
        format!("SELECT {EVENT_COLS} FROM events WHERE file_id = 'x' ORDER BY id"),
        format!("SELECT {EVENT_COLS} FROM events WHERE id > 5 ORDER BY id LIMIT 10"),
        "SELECT id, hash, time_ns FROM events ORDER BY id DESC LIMIT 1".to_owned(),
        format!("SELECT {CONFIG_COLS} FROM config_versions ORDER BY version DESC LIMIT 1"),
    ];
    for q in &queries {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {q}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        println!("{q}\n    -> {plan:?}");
        for step in &plan {
            // `SCAN t` for `ORDER BY pk DESC LIMIT 1` reads one row from the end.
            let ok = step.starts_with("SEARCH")
                || step.contains("COVERING INDEX")
                || (step.starts_with("SCAN events") && q.contains("ORDER BY id DESC"))
                || (step.starts_with("SCAN config_versions") && q.contains("DESC LIMIT 1"));
            assert!(ok, "{q}: plan step `{step}` scans a table");
            assert!(!step.contains("TEMP B-TREE"), "{q}: plan sorts: {step}");
        }
    }
    drop(cat);
}

/// Starts `n` threads that each record one transition of file `first + i` while the test
/// holds the writer, and returns once all of them wait for it.
fn queued_writers(
    cat: &Arc<Catalog>,
    n: u32,
    first: u32,
    path_of: impl Fn(u32) -> String,
) -> Vec<std::thread::JoinHandle<Result<Event>>> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let cat = Arc::clone(cat);
            let mut row = file(first + i, FileState::Resident);
            row.path = path_of(first + i);
            std::thread::spawn(move || cat.transition(&row, EventKind::Scanned, json!({"i": i})))
        })
        .collect();
    while cat.waiting.load(Ordering::SeqCst) < n as usize {
        std::thread::yield_now();
    }
    handles
}

#[test]
fn writes_that_queue_for_the_writer_share_one_commit() {
    let (_dir, path) = temp();
    let cat = Arc::new(Catalog::open(&path).unwrap());
    let (before, _) = cat.durability();
    let held = cat.writer.lock();
    let handles = queued_writers(&cat, 8, 1, |n| format!("dir/file{n}"));
    drop(held);
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let (after, synced) = cat.durability();
    assert_eq!(after - before, 1, "eight queued writes, one commit");
    assert_eq!(synced, after);
    assert_eq!(cat.verify_chain().unwrap(), 8);
    for n in 1..=8 {
        assert_eq!(cat.history(&format!("id-{n:08}")).unwrap().len(), 1);
    }
}

#[test]
fn a_failing_write_in_a_shared_commit_undoes_only_itself() {
    let (_dir, path) = temp();
    let cat = Arc::new(Catalog::open(&path).unwrap());
    cat.transition(
        &file(100, FileState::Resident),
        EventKind::Scanned,
        json!({}),
    )
    .unwrap();
    let taken = cat.file_by_id("id-00000100").unwrap().unwrap().path;
    let held = cat.writer.lock();
    // The third writer wants a path another file holds: PathInUse, after its savepoint
    // began; the others commit with it in one transaction.
    let handles = queued_writers(&cat, 5, 1, |n| {
        if n == 3 {
            taken.clone()
        } else {
            format!("dir/file{n}")
        }
    });
    drop(held);
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert!(matches!(r, Err(CatalogError::PathInUse { .. })), "{r:?}");
        } else {
            assert!(r.is_ok(), "writer {i}: {r:?}");
        }
    }
    assert!(cat.file_by_id("id-00000003").unwrap().is_none());
    assert_eq!(
        cat.verify_chain().unwrap(),
        5,
        "1 + the four that succeeded"
    );
    // The head the writer keeps between writes is still right.
    cat.transition(
        &file(200, FileState::Resident),
        EventKind::Scanned,
        json!({}),
    )
    .unwrap();
    assert_eq!(cat.verify_chain().unwrap(), 6);
}

#[test]
fn the_kept_head_follows_writes_of_other_connections() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    cat.append_event(None, None, EventKind::Scanned, json!({"n": 1}))
        .unwrap();
    // Another catalog handle (another process) appends in between.
    let other = Catalog::open(&path).unwrap();
    other
        .append_event(None, None, EventKind::Scanned, json!({"n": 2}))
        .unwrap();
    cat.append_event(None, None, EventKind::Scanned, json!({"n": 3}))
        .unwrap();
    assert_eq!(cat.verify_chain().unwrap(), 3);
}

#[test]
fn an_update_writes_only_the_columns_that_change() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let mut f = file(1, FileState::Resident);
    cat.transition(&f, EventKind::Scanned, json!({})).unwrap();
    f.state = FileState::Premigrated;
    f.object_key = Some("data/x/1".into());
    cat.transition(&f, EventKind::Verified, json!({})).unwrap();
    f.pinned = true;
    cat.transition(&f, EventKind::Pinned, json!({})).unwrap();
    let got = cat.file_by_id(&f.file_id).unwrap().unwrap();
    assert_eq!(
        (got.state, got.object_key.as_deref(), got.pinned, got.size),
        (FileState::Premigrated, Some("data/x/1"), true, f.size)
    );
    // The running totals (kept by the catalog's writes: state, size, class, pinned) follow.
    let totals: Vec<(String, i64, i64)> = raw(&path)
        .prepare("SELECT state, pinned, files FROM file_totals WHERE files > 0")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(totals, vec![("premigrated".to_string(), 1, 1)]);
    // Nothing changed but the time: the row stays as it was.
    cat.transition(&f, EventKind::Scanned, json!({})).unwrap();
    assert_eq!(cat.file_by_id(&f.file_id).unwrap().unwrap().path, f.path);
}

#[test]
fn a_closed_catalog_is_one_file() {
    let (_dir, path) = temp();
    {
        let cat = Catalog::open(&path).unwrap();
        cat.transition(&file(1, FileState::Resident), EventKind::Scanned, json!({}))
            .unwrap();
        // Readers in use too: they must not keep the WAL from being checkpointed.
        assert!(cat.file_by_id("id-00000001").unwrap().is_some());
    }
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    assert!(
        !Path::new(&wal).exists(),
        "the WAL is checkpointed and removed"
    );
    let copy = path.with_file_name("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let cat = Catalog::open(&copy).unwrap();
    assert!(cat.file_by_id("id-00000001").unwrap().is_some());
}

#[test]
fn only_pin_events_change_a_rows_pinned() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let mut f = file(1, FileState::Resident);
    cat.transition(&f, EventKind::Scanned, json!({})).unwrap();
    // A copy read the row before a pin...
    let stale = f.clone();
    f.pinned = true;
    cat.transition(&f, EventKind::Pinned, json!({})).unwrap();
    // ...and records its steps with what it read: the pin stays.
    let mut copied = stale.clone();
    copied.state = FileState::Premigrated;
    cat.transition_batch(&[
        (copied.clone(), EventKind::Copied, json!({})),
        (copied, EventKind::Verified, json!({})),
    ])
    .unwrap();
    let row = cat.file_by_id(&f.file_id).unwrap().unwrap();
    assert!(row.pinned, "a copy's records undid a pin");
    assert_eq!(row.state, FileState::Premigrated);
    // UNPINNED does change it.
    let mut u = row.clone();
    u.pinned = false;
    cat.transition(&u, EventKind::Unpinned, json!({})).unwrap();
    assert!(!cat.file_by_id(&f.file_id).unwrap().unwrap().pinned);
}

/// Versions an older coldtier recorded with a credential in clear are rewritten once: the
/// text loses the secret, the hash (named by the chain) stays, the table stays
/// append-only, and the bytes of the database and its WAL no longer hold the secret.
#[test]
fn old_config_versions_lose_their_secrets() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    let secret = "S3cr3t-in-clear-8f2d1c";
    let v1 = cat
        .record_config(&format!("[store]\nsecret_key = \"{secret}\"\n"))
        .unwrap();
    cat.record_config("[store]\nbucket = \"b\"\n").unwrap();
    let redact = |t: &str| t.replace(secret, "<redacted>");
    assert_eq!(cat.redact_config_texts(redact).unwrap(), 1);
    assert_eq!(cat.redact_config_texts(redact).unwrap(), 0, "once");
    let got = cat.config_version(1).unwrap().unwrap();
    assert_eq!(got.text, "[store]\nsecret_key = \"<redacted>\"\n");
    assert_eq!(got.hash, v1.hash, "the chain names the hash");
    assert_eq!(cat.verify_chain().unwrap(), 2);
    // Still append-only.
    let e = raw(&path)
        .execute(
            "UPDATE config_versions SET text = 'x' WHERE version = 1",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    drop(cat);
    for suffix in ["", "-wal"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{p:?} still holds the secret"
            );
        }
    }
}

/// The catalog and its WAL are root's alone (0600) in a directory of their own (0700),
/// also when an older coldtier made them 0644.
#[test]
fn the_catalog_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    cat.record_config("a = 1").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&wal), 0o600);
    drop(cat);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _cat = Catalog::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

/// An upload intent is recorded before the upload and ended by the event that records
/// its outcome (VERIFIED or FAILED naming the object), in the same transaction.
#[test]
fn upload_intents_end_with_their_outcome() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    cat.begin_upload("data/a/1", "id-00000001", "x/a").unwrap();
    cat.begin_upload("data/b/1", "b", "x/b").unwrap();
    cat.begin_upload("data/c/1", "c", "x/c").unwrap();
    let keys = |c: &Catalog| {
        c.open_uploads()
            .unwrap()
            .into_iter()
            .map(|u| u.object_key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&cat), ["data/a/1", "data/b/1", "data/c/1"]);
    let mut row = file(1, FileState::Premigrated);
    row.object_key = Some("data/a/1".into());
    cat.transition(&row, EventKind::Verified, json!({"object_key": "data/a/1"}))
        .unwrap();
    cat.append_event(
        Some("b"),
        Some("x/b"),
        EventKind::Failed,
        json!({"object_key": "data/b/1", "error": "x"}),
    )
    .unwrap();
    // Another kind naming the object does not end it, nor the outcome of another file
    // (a member of a pack whose intent is the pack's).
    cat.append_event(
        Some("other"),
        Some("x/other"),
        EventKind::Verified,
        json!({"object_key": "data/c/1"}),
    )
    .unwrap();
    cat.append_event(
        Some("c"),
        Some("x/c"),
        EventKind::Copied,
        json!({"object_key": "data/c/1"}),
    )
    .unwrap();
    assert_eq!(keys(&cat), ["data/c/1"]);
    drop(cat);
    let cat = Catalog::open(&path).unwrap();
    assert_eq!(keys(&cat), ["data/c/1"], "intents survive a restart");
}

/// A file_totals row: (state, storage class, pinned, files, bytes).
type TotalsRow = (String, String, i64, i64, i64);

/// file_totals as the catalog keeps them, and as the rows make them (non-empty groups).
fn totals_kept_and_counted(path: &Path) -> (Vec<TotalsRow>, Vec<TotalsRow>) {
    let c = raw(path);
    let q = |sql: &str| -> Vec<TotalsRow> {
        c.prepare(sql)
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    (
        q(
            "SELECT state, storage_class, pinned, files, bytes FROM file_totals \
           WHERE files != 0 OR bytes != 0 ORDER BY 1, 2, 3",
        ),
        q(
            "SELECT state, coalesce(storage_class, ''), pinned, count(*), sum(size) FROM files \
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        ),
    )
}

#[test]
fn totals_follow_every_kind_of_write() {
    let (_dir, path) = temp();
    let cat = Catalog::open(&path).unwrap();
    // A scan batch: new rows.
    let items: Vec<_> = (1..=20)
        .map(|n| (file(n, FileState::Resident), EventKind::Scanned, json!({})))
        .collect();
    cat.transition_batch(&items).unwrap();
    // Copied then verified in one batch (the first row is superseded, not written), with
    // a class; a size change; a pin (and a non-pin event that carries pinned = true,
    // which must not pin); a stub; a delete.
    let mut batch = Vec::new();
    for n in 1..=8 {
        let mut f = file(n, FileState::Resident);
        f.object_key = Some(format!("data/{n}/1"));
        f.storage_class = Some(if n % 2 == 0 { "GLACIER" } else { "STANDARD" }.into());
        batch.push((f.clone(), EventKind::Copied, json!({})));
        f.state = FileState::Premigrated;
        batch.push((f, EventKind::Verified, json!({})));
    }
    cat.transition_batch(&batch).unwrap();
    let mut f = file(9, FileState::Resident);
    f.size += 4096;
    cat.transition(&f, EventKind::Scanned, json!({})).unwrap();
    let mut f = file(10, FileState::Resident);
    f.pinned = true;
    cat.transition(&f, EventKind::Pinned, json!({})).unwrap();
    let mut f = file(11, FileState::Resident);
    f.pinned = true;
    cat.transition(&f, EventKind::Scanned, json!({})).unwrap();
    let mut f = batch[1].0.clone();
    f.state = FileState::Stub;
    cat.transition(&f, EventKind::Stubbed, json!({})).unwrap();
    cat.delete_file("id-00000003", json!({})).unwrap();
    // A batch that fails (a path in use) changes nothing, totals included.
    let before = totals_kept_and_counted(&path).0;
    let mut bad: Vec<_> = (30..=32)
        .map(|n| (file(n, FileState::Resident), EventKind::Scanned, json!({})))
        .collect();
    bad[2].0.path = file(1, FileState::Resident).path;
    assert!(cat.transition_batch(&bad).is_err());
    assert_eq!(totals_kept_and_counted(&path).0, before);

    let (kept, counted) = totals_kept_and_counted(&path);
    assert_eq!(kept, counted);
    // What the writes above make: 12 resident (1 pinned: the scan's pinned = true is not
    // a pin); of the odd files (STANDARD) 1 stubbed, 1 deleted and 2 premigrated; the 4
    // even ones premigrated in GLACIER.
    let files = |state: &str, class: &str| -> i64 {
        kept.iter()
            .filter(|t| t.0 == state && t.1 == class)
            .map(|t| t.3)
            .sum()
    };
    assert_eq!(files("resident", ""), 12);
    assert_eq!(files("premigrated", "STANDARD"), 2);
    assert_eq!(files("stub", "STANDARD"), 1);
    assert_eq!(files("premigrated", "GLACIER"), 4);
    assert_eq!(
        kept.iter().filter(|t| t.2 == 1).map(|t| t.3).sum::<i64>(),
        1
    );
    let res = cat.totals().unwrap();
    assert_eq!(res.iter().map(|t| t.files).sum::<u64>(), 19);
}

#[test]
fn a_v6_catalog_loses_its_totals_triggers_and_gets_its_totals_made_again() {
    let (_dir, path) = temp();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let mut c = raw(&path);
        let tx = c.transaction().unwrap();
        for sql in &schema::MIGRATIONS[..6] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 6).unwrap();
        for n in 0..10 {
            tx.execute(
                "INSERT INTO files (file_id, path, state, size, mtime_ns, ctime_ns, ino, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, 0, 0, 0, 0)",
                rusqlite::params![format!("i{n}"), format!("p{n}"), if n < 4 { "stub" } else { "resident" }, 10 * n],
            )
            .unwrap();
        }
        // Totals gone wrong (a hand edit): made again from the rows.
        tx.execute("UPDATE file_totals SET files = 99", []).unwrap();
        tx.commit().unwrap();
    }
    let cat = Catalog::open(&path).unwrap();
    let (kept, counted) = totals_kept_and_counted(&path);
    assert_eq!(kept, counted);
    assert_eq!(kept.len(), 2);
    let triggers: i64 = raw(&path)
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'files_totals_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0);
    // And they follow the writes after the upgrade.
    let mut f = cat.file_by_id("i5").unwrap().unwrap();
    f.state = FileState::Premigrated;
    cat.transition(&f, EventKind::Verified, json!({})).unwrap();
    let (kept, counted) = totals_kept_and_counted(&path);
    assert_eq!(kept, counted);
}
