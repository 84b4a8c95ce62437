//! Recording a change of a file in the catalog: the one way ([`Tiering::record`]) with its
//! durability, the rows rebuilt from a file's record, and the state tags of objects.

use std::os::fd::BorrowedFd;

use crate::catalog::{CatalogError, EventKind, FileRow, FileState};
use crate::tier::state::{self, Action};
use crate::tier::stub::StubRecord;

use super::context::Tiering;

/// The next state and events of `action` when the catalog's view refuses it (the files on
/// disk are the truth; the catalog catches up, with the event of what happened).
pub(super) fn forced(action: Action) -> (Option<FileState>, Vec<EventKind>) {
    use Action as A;
    use FileState as S;
    let (s, e) = match action {
        A::CopyVerified => (S::Premigrated, EventKind::Verified),
        A::Stub | A::Release => (S::Stub, EventKind::Stubbed),
        A::RecallStart | A::RestoreReady => (S::Recalling, EventKind::RecallStarted),
        A::RecallDone => (S::Premigrated, EventKind::Recalled),
        A::RecallFailed => (S::Stub, EventKind::RecallFailed),
        A::RestoreRequested => (S::RestorePending, EventKind::RestoreRequested),
        A::WriteOrTruncate | A::TruncateToZeroOfStub => (S::Resident, EventKind::Superseded),
        A::Pin => (S::Resident, EventKind::Pinned),
        A::Unpin => (S::Resident, EventKind::Unpinned),
        A::Delete => return (None, vec![EventKind::Deleted]),
    };
    (Some(s), vec![e])
}

/// Applies `action` to `row` (its state and pin flag) and returns the events to record;
/// None when the action removes the row. The catalog follows the files: if its view
/// refuses the step, the step is taken anyway, with a warning.
fn next_of(row: &mut FileRow, action: Action) -> Option<Vec<EventKind>> {
    let (next, events, pinned) = match state::transition(row.state, row.pinned, action) {
        Ok(t) => (t.next, t.events, t.pinned),
        Err(e) => {
            tracing::warn!(file_id = %row.file_id, path = %row.path,
                "catalog out of step with the file ({e}); recording what happened");
            let (n, ev) = forced(action);
            let pinned = match action {
                Action::Pin => true,
                Action::Unpin => false,
                _ => row.pinned,
            };
            (n, ev, pinned)
        }
    };
    let s = next?;
    row.state = s;
    row.pinned = pinned;
    Some(events)
}

/// A file's row as one event leaves it, the event, and its detail.
pub type Transition = (FileRow, EventKind, serde_json::Value);

/// When a recorded change must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before [`Tiering::record`] returns (fsync of the WAL).
    Now,
    /// With the next durable record, which follows shortly (a recall's RECALL_STARTED
    /// before its outcome, a run's steps before the run's end): the crash in between
    /// loses only a record the files on disk make up for.
    Lazy,
}

/// A change of one file: the actions, in order, each with its event detail.
#[derive(Debug)]
#[must_use = "a change is recorded by Tiering::record"]
pub struct Change {
    prior: Vec<Transition>,
    steps: Vec<(Action, serde_json::Value)>,
    durability: Durability,
}

impl Change {
    /// One action, recorded durably.
    pub fn of(action: Action, detail: serde_json::Value) -> Change {
        Change {
            prior: Vec::new(),
            steps: vec![(action, detail)],
            durability: Durability::Now,
        }
    }

    /// Several actions in order, recorded durably.
    pub fn steps(steps: Vec<(Action, serde_json::Value)>) -> Change {
        Change {
            prior: Vec::new(),
            steps,
            durability: Durability::Now,
        }
    }

    /// No action: only the transitions given with [`Change::after`], recorded lazily.
    pub fn none() -> Change {
        Change {
            prior: Vec::new(),
            steps: Vec::new(),
            durability: Durability::Lazy,
        }
    }

    /// Then `action` too.
    pub fn then(mut self, action: Action, detail: serde_json::Value) -> Change {
        self.steps.push((action, detail));
        self
    }

    /// After transitions already worked out (a copy's COPIED and VERIFIED), in the same
    /// transaction.
    pub fn after(mut self, prior: Vec<Transition>) -> Change {
        self.prior = prior;
        self
    }

    pub fn durability(mut self, d: Durability) -> Change {
        self.durability = d;
        self
    }
}

/// Records owed to files whose steps were taken (their xattrs are the truth already), to be
/// written together in one transaction ([`Tiering::record_owed`]); shared with
/// [`Tiering::owed`] so that a record of one of those files by anyone else (a reader's
/// recall, a write that supersedes the copy) writes them first, in order.
pub type Owed = std::sync::Arc<parking_lot::Mutex<Vec<(FileRow, Change)>>>;

/// [`Owed`] lists by the file ids they hold records of.
pub type OwedMap = parking_lot::Mutex<std::collections::HashMap<String, Owed>>;

/// Copies a record's object fields into a row.
pub fn fill_from_record(row: &mut FileRow, rec: &StubRecord) {
    row.size = rec.size;
    row.mtime_ns = rec.mtime_ns;
    row.ctime_ns = rec.ctime_ns;
    row.ino = rec.ino;
    row.object_key = Some(rec.object_key.clone());
    row.version_id = rec.version_id.clone();
    row.checksum_algo = Some(rec.checksum_algo.clone());
    row.checksum = Some(rec.checksum.clone());
    row.md5 = rec.md5.clone();
    row.storage_class = Some(rec.storage_class.clone());
}

impl Tiering {
    /// Makes `path` free for `file_id` in the catalog: a row of another file that still
    /// holds it (a file deleted or moved without the mount) is parked aside.
    pub fn claim_path(&self, file_id: &str, path: &str) {
        if let Ok(Some(other)) = self.catalog.file_id_at(path) {
            if other != file_id {
                let park = format!(".coldtier-moving/{other}");
                tracing::warn!(path, %other, "catalog: path held by another file's row; parking it");
                let _ = self.catalog.rename_path(&other, &park);
            }
        }
    }

    /// Records `change` of the file whose catalog row is `row`: each step's next state,
    /// pin flag and events, in order, in one catalog transaction, after the change's
    /// `prior` transitions (a row removed by a step is removed in a transaction of its own,
    /// after the others). The catalog follows the files: if its view refuses a step, the
    /// step is recorded anyway, with a warning. This is the only way the engine records
    /// a change of a file.
    pub fn record(&self, row: &mut FileRow, change: Change) -> Result<(), CatalogError> {
        self.settle_owed(&row.file_id);
        let durable = change.durability == Durability::Now;
        let mut items = change.prior;
        for (action, detail) in change.steps {
            match next_of(row, action) {
                None => {
                    if !items.is_empty() {
                        self.catalog
                            .transition_batch_with(&std::mem::take(&mut items), durable)?;
                    }
                    if self.catalog.file_by_id(&row.file_id)?.is_some() {
                        self.catalog.delete_file(&row.file_id, detail)?;
                    }
                }
                Some(events) => {
                    for kind in events {
                        items.push((row.clone(), kind, detail.clone()));
                    }
                }
            }
        }
        if !items.is_empty() {
            self.catalog.transition_batch_with(&items, durable)?;
        }
        Ok(())
    }

    /// Records the changes of many files in one catalog transaction, as [`Tiering::record`]
    /// records each (a bulk recall's switches). The transaction is durable if any change
    /// asks for it. None of the steps may remove a row (a delete is recorded by itself).
    pub fn record_batch(&self, changes: Vec<(&mut FileRow, Change)>) -> Result<(), CatalogError> {
        for (row, _) in &changes {
            self.settle_owed(&row.file_id);
        }
        self.record_batch_settled(changes)
    }

    /// [`Tiering::record_batch`] of files that owe no records.
    fn record_batch_settled(
        &self,
        changes: Vec<(&mut FileRow, Change)>,
    ) -> Result<(), CatalogError> {
        let mut durable = false;
        let mut items = Vec::new();
        for (row, change) in changes {
            durable |= change.durability == Durability::Now;
            items.extend(change.prior);
            for (action, detail) in change.steps {
                let events = next_of(row, action).expect("a batched change removes no row");
                for kind in events {
                    items.push((row.clone(), kind, detail.clone()));
                }
            }
        }
        if !items.is_empty() {
            self.catalog.transition_batch_with(&items, durable)?;
        }
        Ok(())
    }

    /// Owes `change` of the file with `row` to the catalog, in `owed` (written by
    /// [`Tiering::record_owed`], or first by any other record of that file).
    pub(super) fn owe(&self, owed: &Owed, row: FileRow, change: Change) {
        let id = row.file_id.clone();
        owed.lock().push((row, change));
        self.owed.lock().insert(id, owed.clone());
    }

    /// Writes the records in `owed` (and empties it), in one transaction. Its lock is held
    /// until they are written and the files no longer listed, so that a record of one of
    /// them made meanwhile waits and comes after.
    pub(super) fn record_owed(&self, owed: &Owed) {
        let mut list = owed.lock();
        if list.is_empty() {
            return;
        }
        let (mut rows, changes): (Vec<FileRow>, Vec<Change>) = list.drain(..).unzip();
        if let Err(e) = self.record_batch_settled(rows.iter_mut().zip(changes).collect()) {
            tracing::error!("catalog: cannot record the files of a batch: {e}");
        }
        let mut map = self.owed.lock();
        for r in &rows {
            if map
                .get(&r.file_id)
                .is_some_and(|o| std::sync::Arc::ptr_eq(o, owed))
            {
                map.remove(&r.file_id);
            }
        }
    }

    /// Writes the records owed to `file_id`, if any (with the others owed with them).
    fn settle_owed(&self, file_id: &str) {
        let owed = {
            let map = self.owed.lock();
            if map.is_empty() {
                return;
            }
            map.get(file_id).cloned()
        };
        if let Some(o) = owed {
            self.record_owed(&o);
        }
    }

    /// Sets the object's state tag, in the background (the tagger), best effort.
    pub fn tag_later(&self, key: String, version: Option<String>, state: &'static str) {
        // A pack's tags speak for all its members: one member deleted or changed does not
        // make the pack `deleted` (gc deletes it once no file names it).
        if crate::tier::stub::parse_pack_key(&key).is_some() {
            return;
        }
        if self.store_opt().is_some() {
            let _ = self.tags.send((key, version, state));
        }
    }

    /// The catalog row of a file with record `rec`; rebuilt from the record if the catalog
    /// lost it.
    pub fn row_for(&self, rec: &StubRecord, fd: BorrowedFd<'_>, state: FileState) -> FileRow {
        self.row_at(rec, self.rel_of(fd), state)
    }

    /// [`Tiering::row_for`] of the file at `path` (relative to the source), when the caller
    /// knows it; None: the catalog's path (or, without a row, a placeholder).
    pub fn row_at(&self, rec: &StubRecord, path: Option<String>, state: FileState) -> FileRow {
        match self.catalog.file_by_id(&rec.file_id) {
            Ok(Some(mut row)) => {
                if let Some(p) = path {
                    row.path = p;
                }
                row
            }
            other => {
                if let Err(e) = other {
                    tracing::error!("catalog: {e}");
                }
                new_row(rec, path, state)
            }
        }
    }

    /// [`Tiering::row_for`] of a file whose id has no catalog row yet (the one the copy
    /// being finished gave it): its row as the record says, under its path of now, with no
    /// catalog read.
    pub fn row_unrecorded(
        &self,
        rec: &StubRecord,
        fd: BorrowedFd<'_>,
        state: FileState,
    ) -> FileRow {
        new_row(rec, self.rel_of(fd), state)
    }
}

/// A row for `rec`'s file that the catalog does not have (yet).
fn new_row(rec: &StubRecord, path: Option<String>, state: FileState) -> FileRow {
    let mut row = FileRow::new(
        rec.file_id.clone(),
        path.unwrap_or_else(|| format!(".coldtier-unknown/{}", rec.file_id)),
    );
    fill_from_record(&mut row, rec);
    row.state = state;
    row
}
