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
            if let Some((_, pack_id)) = crate::tier::stub::parse_pack_key(&u.object_key) {
                self.resolve_pack_upload(&u, pack_id);
                continue;
            }
            let recorded = match self.resolve_file_upload(&u.object_key, &u.path) {
                Some(r) => r,
                None => self
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

    /// An interrupted upload of `key` for the file at `path`: if the file's records name
    /// `key`, the catalog records the copy (VERIFIED, and STUBBED if the file is a stub by
    /// now) and this is `Some` (the outcome of that write); None: the file does not name
    /// it.
    fn resolve_file_upload(
        &self,
        key: &str,
        path: &str,
    ) -> Option<Result<(), crate::catalog::CatalogError>> {
        let file = backing::open_beneath(
            self.root(),
            Path::new(path),
            libc::O_PATH | libc::O_NOFOLLOW,
        )
        .ok()?;
        let rec = |mark| {
            marks::record(file.as_fd(), mark)
                .ok()
                .flatten()
                .filter(|r: &StubRecord| r.object_key == key)
        };
        let note = json!({
            "object_key": key,
            "note": "the copy was completed before the daemon stopped",
        });
        match (rec(marks::STUB), rec(marks::COPY)) {
            (Some(r), _) => {
                let mut row = self.row_for(&r, file.as_fd(), FileState::Premigrated);
                // An existing row may still describe an older copy (or none, after a
                // write superseded it): the record on the file is the truth.
                fill_from_record(&mut row, &r);
                let mut d = note.clone();
                d["version_id"] = json!(r.version_id);
                Some(
                    self.record(
                        &mut row,
                        Change::of(Action::CopyVerified, d)
                            .then(Action::Stub, json!({"object_key": r.object_key})),
                    ),
                )
            }
            (None, Some(r)) => {
                let mut row = self.row_for(&r, file.as_fd(), FileState::Resident);
                fill_from_record(&mut row, &r);
                let mut d = note.clone();
                d["version_id"] = json!(r.version_id);
                Some(self.record(&mut row, Change::of(Action::CopyVerified, d)))
            }
            _ => None,
        }
    }

    /// FAILED for a pack no file names (gc deletes it after the retention).
    fn pack_given_up(
        &self,
        u: &crate::catalog::Upload,
        version_id: Option<&str>,
        why: &str,
    ) -> Result<(), crate::catalog::CatalogError> {
        self.catalog
            .append_event(
                None,
                Some(&u.path),
                EventKind::Failed,
                json!({"object_key": u.object_key, "version_id": version_id, "error": why}),
            )
            .map(drop)
    }

    /// An interrupted pack (its intent outlives its members' records: docs/architecture.md
    /// "Packs"). A pack never recorded is given up (FAILED: no file names it). A recorded
    /// one's index lists its members: each whose record names the pack while the catalog
    /// does not say so gets its copy recorded, as a single file's would. Left for the next
    /// start if the index cannot be read now.
    fn resolve_pack_upload(&self, u: &crate::catalog::Upload, pack_id: &str) {
        let done = match self.catalog.pack(&u.object_key) {
            Err(e) => return tracing::error!("catalog: {e}"),
            Ok(None) => self.pack_given_up(
                u,
                None,
                "the daemon stopped before the pack was recorded: the object, if any, is discarded",
            ),
            Ok(Some(row)) => {
                let Ok(store) = self.store() else {
                    return tracing::warn!(key = %u.object_key, "an interrupted pack: no store to read its index from; resolved at the next start");
                };
                if tokio::runtime::Handle::try_current().is_ok() {
                    return;
                }
                let ix = self.rt.block_on(super::pack::fetch_index(
                    store.as_ref(),
                    &u.object_key,
                    pack_id,
                    row.size,
                ));
                let ix = match ix {
                    Ok(ix) => ix,
                    Err(e) => {
                        return tracing::warn!(key = %u.object_key, "an interrupted pack: its index: {e}; resolved at the next start")
                    }
                };
                let mut r = Ok(());
                for m in &ix.members {
                    let known = self
                        .catalog
                        .file_by_id(&m.file_id)
                        .ok()
                        .flatten()
                        .is_some_and(|f| f.object_key.as_deref() == Some(u.object_key.as_str()));
                    if !known {
                        if let Some(Err(e)) = self.resolve_file_upload(&u.object_key, &m.path) {
                            r = Err(e);
                        }
                    }
                }
                // A pack no member came to name: given up, for gc to delete.
                let named = self
                    .catalog
                    .files_naming(&u.object_key)
                    .map(|f| !f.is_empty())
                    .unwrap_or(true);
                if r.is_ok() && !named {
                    r = self.pack_given_up(
                        u,
                        row.version_id.as_deref(),
                        "the daemon stopped before any file named the pack: it is discarded",
                    );
                }
                r
            }
        };
        match done.and_then(|()| self.catalog.end_upload(&u.object_key)) {
            Ok(()) => {
                tracing::info!(key = %u.object_key, "resolved a pack the daemon was writing when it stopped")
            }
            Err(e) => {
                tracing::error!(key = %u.object_key, "catalog: cannot resolve an interrupted pack: {e}")
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
