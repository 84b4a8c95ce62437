//! At start: what a crash left is put in order (upload intents resolved, recalls that
//! were under way reset, pending restores polled again).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use serde_json::json;

use crate::catalog::{EventKind, FileState};
use crate::fs::backing::{self};
use crate::tier::marks;
use crate::tier::state::Action;
use crate::tier::stub::StubRecord;

use super::context::Tiering;
use super::record::{fill_from_record, Change};

impl Tiering {
    /// At start: the uploads a crash interrupted are resolved. An upload whose file's
    /// records name its object reached its copy record: the catalog records the copy
    /// (VERIFIED, and STUBBED if the file is a stub by now). Any other is given up: a
    /// FAILED event names the object (which may or may not exist) for gc to delete after
    /// the retention. Either event ends the intent.
    pub fn resolve_uploads(&self) {
        let open = match self.catalog.open_uploads() {
            Ok(u) => u,
            Err(e) => return tracing::error!("catalog: {e}"),
        };
        for u in open {
            let file = backing::open_beneath(
                self.root(),
                Path::new(&u.path),
                libc::O_PATH | libc::O_NOFOLLOW,
            )
            .ok();
            let rec = |mark| {
                file.as_ref()
                    .and_then(|f| marks::record(f.as_fd(), mark).ok().flatten())
                    .filter(|r: &StubRecord| r.object_key == u.object_key)
            };
            let (copy, stub) = (rec(marks::COPY), rec(marks::STUB));
            let note = json!({
                "object_key": u.object_key,
                "note": "the copy was completed before the daemon stopped",
            });
            let recorded = match (stub, copy, &file) {
                (Some(r), _, Some(f)) => {
                    let mut row = self.row_for(&r, f.as_fd(), FileState::Premigrated);
                    // An existing row may still describe an older copy (or none, after a
                    // write superseded it): the record on the file is the truth.
                    fill_from_record(&mut row, &r);
                    let mut d = note.clone();
                    d["version_id"] = json!(r.version_id);
                    self.record(
                        &mut row,
                        Change::of(Action::CopyVerified, d)
                            .then(Action::Stub, json!({"object_key": r.object_key})),
                    )
                }
                (None, Some(r), Some(f)) => {
                    let mut row = self.row_for(&r, f.as_fd(), FileState::Resident);
                    fill_from_record(&mut row, &r);
                    let mut d = note.clone();
                    d["version_id"] = json!(r.version_id);
                    self.record(&mut row, Change::of(Action::CopyVerified, d))
                }
                _ => self
                    .catalog
                    .append_event(
                        Some(&u.file_id),
                        Some(&u.path),
                        EventKind::Failed,
                        json!({
                            "object_key": u.object_key,
                            "version_id": null,
                            "error": "the daemon stopped during the copy: the object, if any, is discarded",
                        }),
                    )
                    .map(drop),
            };
            match recorded {
                Ok(()) => {
                    tracing::info!(key = %u.object_key, path = %u.path, "resolved an upload the daemon was doing when it stopped")
                }
                Err(e) => {
                    tracing::error!(key = %u.object_key, "catalog: cannot resolve an interrupted upload: {e}")
                }
            }
        }
    }

    /// At start: pending restores get their pollers again; rows left `recalling` by a
    /// crash are put back in line with their files.
    pub fn resume(&self) {
        self.resolve_uploads();
        for state in [FileState::RestorePending, FileState::Recalling] {
            let rows = match self.catalog.files_by_state(state, usize::MAX) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("catalog: {e}");
                    continue;
                }
            };
            for mut row in rows {
                let Ok(fd) = backing::open_beneath(
                    self.root(),
                    Path::new(&row.path),
                    libc::O_RDWR | libc::O_NOFOLLOW,
                ) else {
                    continue;
                };
                let file = File::from(fd);
                let stub = marks::record(file.as_fd(), marks::STUB).ok().flatten();
                match (state, stub) {
                    (FileState::RestorePending, Some(rec)) => {
                        if let Ok(st) = backing::stat_fd(file.as_fd()) {
                            self.spawn_poller(self.node_id(&st), &file, &rec);
                        }
                    }
                    (FileState::Recalling, Some(rec)) => {
                        self.reset_stub(&file, &rec);
                        let d = json!({"error": "the daemon stopped during the recall"});
                        let _ = self.record(&mut row, Change::of(Action::RecallFailed, d));
                    }
                    (FileState::Recalling, None) => {
                        let d = json!({"note": "recall completed before the daemon stopped"});
                        let _ = self.record(&mut row, Change::of(Action::RecallDone, d));
                    }
                    _ => {}
                }
            }
        }
    }
}
