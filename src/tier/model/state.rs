//! The file state machine: the pure function that says what an action does to a file in a
//! given state (next state, events, what becomes of its object), or why it is refused.
//!
//! ```text
//!  resident --CopyVerified--> premigrated --Stub/Release--> stub --RecallStart--> recalling
//!     ^                          |    ^                      |  ^                   |   |
//!     |      WriteOrTruncate     |    '-----RecallDone-------+--+-------------------'   |
//!     '--------------------------'                           |  '---RecallFailed--------'
//!     ^                                       RestoreRequested (from stub or recalling)
//!     |  TruncateToZeroOfStub                                v
//!     '------------------ (stub, restore_pending) <-- restore_pending --RestoreReady--> recalling
//! ```
//!
//! The file's state is [`FileState`] from the catalog; `pinned` is a flag beside it. The
//! rules (docs/invariants.md; docs/architecture.md, "Tiering in the daemon"):
//! * data is freed (Stub, Release) only from `premigrated`, i.e. only when a verified copy
//!   exists, and never for a pinned file;
//! * a change of data in a `premigrated` file, or an O_TRUNC of a stub, makes it `resident`
//!   and supersedes its object; a stub must be recalled before any other write;
//! * an archived object goes `stub`/`recalling` -> `restore_pending` -> (ready) `recalling`;
//! * delete keeps the object (retention; only `gc` removes objects) and emits DELETED;
//! * every change of state or of the pinned flag is exactly one event; an action that
//!   changes nothing (pin a pinned file, write a resident file) is `Ok` with no events.
//!
//! Nothing here does I/O: the callers (migrate, recall, the overlay, the control socket)
//! ask first, act, then record `events` with the catalog.

use std::fmt;

pub use crate::catalog::{EventKind, FileState};

/// Something that happens to a tracked file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A copy of the file's current content is in the store and its checksum matched.
    CopyVerified,
    /// A policy run frees the local data (needs a verified copy; never when pinned).
    Stub,
    /// `coldtier release`: an operator frees the local data; same rules as [`Action::Stub`].
    Release,
    /// Someone opened a stub for data: the copy back from the store begins.
    RecallStart,
    /// The recalled data is complete, synced and checked.
    RecallDone,
    /// The recall (or the pending restore) gave up; the file is a stub again.
    RecallFailed,
    /// The object is archived: a restore was asked of the store.
    RestoreRequested,
    /// The store says the restored copy can be read: the recall begins.
    RestoreReady,
    /// The file's data changed (write, truncate, fallocate ...) while its data is local.
    WriteOrTruncate,
    /// Open with O_TRUNC (or truncate to 0) of a stub: the new content is empty, so the old
    /// object is not needed to produce it and no recall happens.
    TruncateToZeroOfStub,
    /// Never free this file's data.
    Pin,
    /// Undo [`Action::Pin`].
    Unpin,
    /// The file was unlinked (its last name, see policy's hard-link rule).
    Delete,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::CopyVerified,
        Action::Stub,
        Action::Release,
        Action::RecallStart,
        Action::RecallDone,
        Action::RecallFailed,
        Action::RestoreRequested,
        Action::RestoreReady,
        Action::WriteOrTruncate,
        Action::TruncateToZeroOfStub,
        Action::Pin,
        Action::Unpin,
        Action::Delete,
    ];
}

/// What an allowed action does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state afterwards; `None`: the file is gone (its catalog row is removed, with the
    /// DELETED event: `Catalog::delete_file`).
    pub next: Option<FileState>,
    /// The pinned flag afterwards.
    pub pinned: bool,
    /// The events to append, in order: one for each change, none for a no-op.
    pub events: Vec<EventKind>,
    /// The file's object stops being the live copy of its content (the content changed or
    /// the file was deleted). It is *not* deleted: it stays in the store until the
    /// retention period passes and `gc` removes it (invariant 6).
    pub supersede_object: bool,
}

impl Transition {
    /// True when nothing changes (and so nothing is recorded).
    pub fn is_noop(&self) -> bool {
        self.events.is_empty()
    }
}

/// Why an action is refused in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Pinned files are never released.
    Pinned,
    /// The file is resident: there is no verified copy, so its data cannot be freed.
    NotCopied,
    /// The file is premigrated: its content is already copied and verified.
    AlreadyCopied,
    /// The file's data is already freed.
    AlreadyStub,
    /// The file's data is not local, so there is nothing here to copy.
    DataNotLocal,
    /// The action needs a stub, and the file's data is local.
    NotAStub,
    /// The action needs a recall in progress, and there is none.
    NotRecalling,
    /// The action needs a pending restore, and there is none.
    NotRestorePending,
    /// A recall is in progress: wait for it (single flight), then act.
    RecallInProgress,
    /// The object is being restored from an archive tier; its data cannot be read yet.
    RestoreNotReady,
    /// A restore was already asked for.
    RestoreAlreadyPending,
    /// A write to a stub needs its data first: recall it, then write.
    NeedsRecall,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Pinned => "the file is pinned: its data is never freed",
            Refusal::NotCopied => "the file has no verified copy yet",
            Refusal::AlreadyCopied => "the file's content is already copied and verified",
            Refusal::AlreadyStub => "the file's data is already freed",
            Refusal::DataNotLocal => "the file's data is not local",
            Refusal::NotAStub => "the file's data is local (it is not a stub)",
            Refusal::NotRecalling => "no recall of the file is in progress",
            Refusal::NotRestorePending => "no restore of the file is pending",
            Refusal::RecallInProgress => "a recall of the file is in progress",
            Refusal::RestoreNotReady => "the file's object is still being restored",
            Refusal::RestoreAlreadyPending => "a restore of the file was already requested",
            Refusal::NeedsRecall => "the file is a stub: recall it before writing",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action refused in a state, with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{action:?} of a {from}{} file refused: {reason}", if *.pinned { " pinned" } else { "" })]
pub struct InvalidTransition {
    pub from: FileState,
    pub pinned: bool,
    pub action: Action,
    pub reason: Refusal,
}

/// The transition function: what `action` does to a file in state `from` with the pinned
/// flag `pinned`. Pure and total: every (state, pinned, action) has exactly one answer.
pub fn transition(
    from: FileState,
    pinned: bool,
    action: Action,
) -> Result<Transition, InvalidTransition> {
    use Action as A;
    use FileState as S;
    let refuse = |reason| InvalidTransition {
        from,
        pinned,
        action,
        reason,
    };
    let to = |next: FileState, event: EventKind| Transition {
        next: Some(next),
        pinned,
        events: vec![event],
        supersede_object: false,
    };
    let noop = Transition {
        next: Some(from),
        pinned,
        events: vec![],
        supersede_object: false,
    };
    let supersede = |next: FileState| Transition {
        next: Some(next),
        pinned,
        events: vec![EventKind::Superseded],
        supersede_object: true,
    };
    match action {
        // The flag is independent of the state: a pinned stub is legal (the caller recalls
        // it); what pinning forbids is freeing data.
        A::Pin if pinned => Ok(noop),
        A::Pin => Ok(Transition {
            pinned: true,
            events: vec![EventKind::Pinned],
            ..noop
        }),
        A::Unpin if !pinned => Ok(noop),
        A::Unpin => Ok(Transition {
            pinned: false,
            events: vec![EventKind::Unpinned],
            ..noop
        }),

        // Unlink needs no data, so it is allowed in every state, also during a recall or a
        // restore (those notice the row is gone). An object, if any, is kept.
        A::Delete => Ok(Transition {
            next: None,
            pinned,
            events: vec![EventKind::Deleted],
            supersede_object: from != S::Resident,
        }),

        A::Stub | A::Release if pinned => Err(refuse(Refusal::Pinned)),
        A::Stub | A::Release => match from {
            S::Premigrated => Ok(to(S::Stub, EventKind::Stubbed)),
            S::Resident => Err(refuse(Refusal::NotCopied)),
            S::Stub | S::RestorePending => Err(refuse(Refusal::AlreadyStub)),
            S::Recalling => Err(refuse(Refusal::RecallInProgress)),
        },

        A::CopyVerified => match from {
            S::Resident => Ok(to(S::Premigrated, EventKind::Verified)),
            S::Premigrated => Err(refuse(Refusal::AlreadyCopied)),
            S::Stub | S::RestorePending => Err(refuse(Refusal::DataNotLocal)),
            S::Recalling => Err(refuse(Refusal::RecallInProgress)),
        },

        A::RecallStart => match from {
            S::Stub => Ok(to(S::Recalling, EventKind::RecallStarted)),
            S::Resident | S::Premigrated => Err(refuse(Refusal::NotAStub)),
            S::Recalling => Err(refuse(Refusal::RecallInProgress)),
            S::RestorePending => Err(refuse(Refusal::RestoreNotReady)),
        },

        A::RecallDone => match from {
            S::Recalling => Ok(to(S::Premigrated, EventKind::Recalled)),
            _ => Err(refuse(Refusal::NotRecalling)),
        },

        A::RecallFailed => match from {
            S::Recalling | S::RestorePending => Ok(to(S::Stub, EventKind::RecallFailed)),
            _ => Err(refuse(Refusal::NotRecalling)),
        },

        // From a stub (the storage class says archived) or from a recall whose GET found
        // the object archived (InvalidObjectState).
        A::RestoreRequested => match from {
            S::Stub | S::Recalling => Ok(to(S::RestorePending, EventKind::RestoreRequested)),
            S::Resident | S::Premigrated => Err(refuse(Refusal::NotAStub)),
            S::RestorePending => Err(refuse(Refusal::RestoreAlreadyPending)),
        },

        // A restored copy is temporary (recall.restore_days), and someone asked for the
        // data: the recall starts at once.
        A::RestoreReady => match from {
            S::RestorePending => Ok(to(S::Recalling, EventKind::RecallStarted)),
            _ => Err(refuse(Refusal::NotRestorePending)),
        },

        A::WriteOrTruncate => match from {
            S::Resident => Ok(noop),
            S::Premigrated => Ok(supersede(S::Resident)),
            S::Stub => Err(refuse(Refusal::NeedsRecall)),
            S::Recalling => Err(refuse(Refusal::RecallInProgress)),
            S::RestorePending => Err(refuse(Refusal::RestoreNotReady)),
        },

        // During a recall the recaller is writing the backing file: the truncating opener
        // waits for it like any other opener, then this is a WriteOrTruncate.
        A::TruncateToZeroOfStub => match from {
            S::Stub | S::RestorePending => Ok(supersede(S::Resident)),
            S::Resident | S::Premigrated => Err(refuse(Refusal::NotAStub)),
            S::Recalling => Err(refuse(Refusal::RecallInProgress)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use EventKind as E;
    use FileState as S;
    use Refusal as R;

    type Expected = Result<(Option<FileState>, bool, Vec<EventKind>, bool), Refusal>;

    fn ok(next: FileState, pinned: bool, events: &[EventKind]) -> Expected {
        Ok((Some(next), pinned, events.to_vec(), false))
    }
    fn sup(next: FileState, pinned: bool) -> Expected {
        Ok((Some(next), pinned, vec![E::Superseded], true))
    }
    fn gone(pinned: bool, supersede: bool) -> Expected {
        Ok((None, pinned, vec![E::Deleted], supersede))
    }
    fn no(r: Refusal) -> Expected {
        Err(r)
    }

    /// Every (state, pinned, action), written out by hand (not derived from the code).
    #[rustfmt::skip]
    fn table() -> Vec<(FileState, bool, Action, Expected)> {
        vec![
            // ---- resident, unpinned
            (S::Resident, false, A::CopyVerified, ok(S::Premigrated, false, &[E::Verified])),
            (S::Resident, false, A::Stub, no(R::NotCopied)),
            (S::Resident, false, A::Release, no(R::NotCopied)),
            (S::Resident, false, A::RecallStart, no(R::NotAStub)),
            (S::Resident, false, A::RecallDone, no(R::NotRecalling)),
            (S::Resident, false, A::RecallFailed, no(R::NotRecalling)),
            (S::Resident, false, A::RestoreRequested, no(R::NotAStub)),
            (S::Resident, false, A::RestoreReady, no(R::NotRestorePending)),
            (S::Resident, false, A::WriteOrTruncate, ok(S::Resident, false, &[])),
            (S::Resident, false, A::TruncateToZeroOfStub, no(R::NotAStub)),
            (S::Resident, false, A::Pin, ok(S::Resident, true, &[E::Pinned])),
            (S::Resident, false, A::Unpin, ok(S::Resident, false, &[])),
            (S::Resident, false, A::Delete, gone(false, false)),
            // ---- resident, pinned
            (S::Resident, true, A::CopyVerified, ok(S::Premigrated, true, &[E::Verified])),
            (S::Resident, true, A::Stub, no(R::Pinned)),
            (S::Resident, true, A::Release, no(R::Pinned)),
            (S::Resident, true, A::RecallStart, no(R::NotAStub)),
            (S::Resident, true, A::RecallDone, no(R::NotRecalling)),
            (S::Resident, true, A::RecallFailed, no(R::NotRecalling)),
            (S::Resident, true, A::RestoreRequested, no(R::NotAStub)),
            (S::Resident, true, A::RestoreReady, no(R::NotRestorePending)),
            (S::Resident, true, A::WriteOrTruncate, ok(S::Resident, true, &[])),
            (S::Resident, true, A::TruncateToZeroOfStub, no(R::NotAStub)),
            (S::Resident, true, A::Pin, ok(S::Resident, true, &[])),
            (S::Resident, true, A::Unpin, ok(S::Resident, false, &[E::Unpinned])),
            (S::Resident, true, A::Delete, gone(true, false)),
            // ---- premigrated, unpinned
            (S::Premigrated, false, A::CopyVerified, no(R::AlreadyCopied)),
            (S::Premigrated, false, A::Stub, ok(S::Stub, false, &[E::Stubbed])),
            (S::Premigrated, false, A::Release, ok(S::Stub, false, &[E::Stubbed])),
            (S::Premigrated, false, A::RecallStart, no(R::NotAStub)),
            (S::Premigrated, false, A::RecallDone, no(R::NotRecalling)),
            (S::Premigrated, false, A::RecallFailed, no(R::NotRecalling)),
            (S::Premigrated, false, A::RestoreRequested, no(R::NotAStub)),
            (S::Premigrated, false, A::RestoreReady, no(R::NotRestorePending)),
            (S::Premigrated, false, A::WriteOrTruncate, sup(S::Resident, false)),
            (S::Premigrated, false, A::TruncateToZeroOfStub, no(R::NotAStub)),
            (S::Premigrated, false, A::Pin, ok(S::Premigrated, true, &[E::Pinned])),
            (S::Premigrated, false, A::Unpin, ok(S::Premigrated, false, &[])),
            (S::Premigrated, false, A::Delete, gone(false, true)),
            // ---- premigrated, pinned
            (S::Premigrated, true, A::CopyVerified, no(R::AlreadyCopied)),
            (S::Premigrated, true, A::Stub, no(R::Pinned)),
            (S::Premigrated, true, A::Release, no(R::Pinned)),
            (S::Premigrated, true, A::RecallStart, no(R::NotAStub)),
            (S::Premigrated, true, A::RecallDone, no(R::NotRecalling)),
            (S::Premigrated, true, A::RecallFailed, no(R::NotRecalling)),
            (S::Premigrated, true, A::RestoreRequested, no(R::NotAStub)),
            (S::Premigrated, true, A::RestoreReady, no(R::NotRestorePending)),
            (S::Premigrated, true, A::WriteOrTruncate, sup(S::Resident, true)),
            (S::Premigrated, true, A::TruncateToZeroOfStub, no(R::NotAStub)),
            (S::Premigrated, true, A::Pin, ok(S::Premigrated, true, &[])),
            (S::Premigrated, true, A::Unpin, ok(S::Premigrated, false, &[E::Unpinned])),
            (S::Premigrated, true, A::Delete, gone(true, true)),
            // ---- stub, unpinned
            (S::Stub, false, A::CopyVerified, no(R::DataNotLocal)),
            (S::Stub, false, A::Stub, no(R::AlreadyStub)),
            (S::Stub, false, A::Release, no(R::AlreadyStub)),
            (S::Stub, false, A::RecallStart, ok(S::Recalling, false, &[E::RecallStarted])),
            (S::Stub, false, A::RecallDone, no(R::NotRecalling)),
            (S::Stub, false, A::RecallFailed, no(R::NotRecalling)),
            (S::Stub, false, A::RestoreRequested, ok(S::RestorePending, false, &[E::RestoreRequested])),
            (S::Stub, false, A::RestoreReady, no(R::NotRestorePending)),
            (S::Stub, false, A::WriteOrTruncate, no(R::NeedsRecall)),
            (S::Stub, false, A::TruncateToZeroOfStub, sup(S::Resident, false)),
            (S::Stub, false, A::Pin, ok(S::Stub, true, &[E::Pinned])),
            (S::Stub, false, A::Unpin, ok(S::Stub, false, &[])),
            (S::Stub, false, A::Delete, gone(false, true)),
            // ---- stub, pinned
            (S::Stub, true, A::CopyVerified, no(R::DataNotLocal)),
            (S::Stub, true, A::Stub, no(R::Pinned)),
            (S::Stub, true, A::Release, no(R::Pinned)),
            (S::Stub, true, A::RecallStart, ok(S::Recalling, true, &[E::RecallStarted])),
            (S::Stub, true, A::RecallDone, no(R::NotRecalling)),
            (S::Stub, true, A::RecallFailed, no(R::NotRecalling)),
            (S::Stub, true, A::RestoreRequested, ok(S::RestorePending, true, &[E::RestoreRequested])),
            (S::Stub, true, A::RestoreReady, no(R::NotRestorePending)),
            (S::Stub, true, A::WriteOrTruncate, no(R::NeedsRecall)),
            (S::Stub, true, A::TruncateToZeroOfStub, sup(S::Resident, true)),
            (S::Stub, true, A::Pin, ok(S::Stub, true, &[])),
            (S::Stub, true, A::Unpin, ok(S::Stub, false, &[E::Unpinned])),
            (S::Stub, true, A::Delete, gone(true, true)),
            // ---- recalling, unpinned
            (S::Recalling, false, A::CopyVerified, no(R::RecallInProgress)),
            (S::Recalling, false, A::Stub, no(R::RecallInProgress)),
            (S::Recalling, false, A::Release, no(R::RecallInProgress)),
            (S::Recalling, false, A::RecallStart, no(R::RecallInProgress)),
            (S::Recalling, false, A::RecallDone, ok(S::Premigrated, false, &[E::Recalled])),
            (S::Recalling, false, A::RecallFailed, ok(S::Stub, false, &[E::RecallFailed])),
            (S::Recalling, false, A::RestoreRequested, ok(S::RestorePending, false, &[E::RestoreRequested])),
            (S::Recalling, false, A::RestoreReady, no(R::NotRestorePending)),
            (S::Recalling, false, A::WriteOrTruncate, no(R::RecallInProgress)),
            (S::Recalling, false, A::TruncateToZeroOfStub, no(R::RecallInProgress)),
            (S::Recalling, false, A::Pin, ok(S::Recalling, true, &[E::Pinned])),
            (S::Recalling, false, A::Unpin, ok(S::Recalling, false, &[])),
            (S::Recalling, false, A::Delete, gone(false, true)),
            // ---- recalling, pinned
            (S::Recalling, true, A::CopyVerified, no(R::RecallInProgress)),
            (S::Recalling, true, A::Stub, no(R::Pinned)),
            (S::Recalling, true, A::Release, no(R::Pinned)),
            (S::Recalling, true, A::RecallStart, no(R::RecallInProgress)),
            (S::Recalling, true, A::RecallDone, ok(S::Premigrated, true, &[E::Recalled])),
            (S::Recalling, true, A::RecallFailed, ok(S::Stub, true, &[E::RecallFailed])),
            (S::Recalling, true, A::RestoreRequested, ok(S::RestorePending, true, &[E::RestoreRequested])),
            (S::Recalling, true, A::RestoreReady, no(R::NotRestorePending)),
            (S::Recalling, true, A::WriteOrTruncate, no(R::RecallInProgress)),
            (S::Recalling, true, A::TruncateToZeroOfStub, no(R::RecallInProgress)),
            (S::Recalling, true, A::Pin, ok(S::Recalling, true, &[])),
            (S::Recalling, true, A::Unpin, ok(S::Recalling, false, &[E::Unpinned])),
            (S::Recalling, true, A::Delete, gone(true, true)),
            // ---- restore_pending, unpinned
            (S::RestorePending, false, A::CopyVerified, no(R::DataNotLocal)),
            (S::RestorePending, false, A::Stub, no(R::AlreadyStub)),
            (S::RestorePending, false, A::Release, no(R::AlreadyStub)),
            (S::RestorePending, false, A::RecallStart, no(R::RestoreNotReady)),
            (S::RestorePending, false, A::RecallDone, no(R::NotRecalling)),
            (S::RestorePending, false, A::RecallFailed, ok(S::Stub, false, &[E::RecallFailed])),
            (S::RestorePending, false, A::RestoreRequested, no(R::RestoreAlreadyPending)),
            (S::RestorePending, false, A::RestoreReady, ok(S::Recalling, false, &[E::RecallStarted])),
            (S::RestorePending, false, A::WriteOrTruncate, no(R::RestoreNotReady)),
            (S::RestorePending, false, A::TruncateToZeroOfStub, sup(S::Resident, false)),
            (S::RestorePending, false, A::Pin, ok(S::RestorePending, true, &[E::Pinned])),
            (S::RestorePending, false, A::Unpin, ok(S::RestorePending, false, &[])),
            (S::RestorePending, false, A::Delete, gone(false, true)),
            // ---- restore_pending, pinned
            (S::RestorePending, true, A::CopyVerified, no(R::DataNotLocal)),
            (S::RestorePending, true, A::Stub, no(R::Pinned)),
            (S::RestorePending, true, A::Release, no(R::Pinned)),
            (S::RestorePending, true, A::RecallStart, no(R::RestoreNotReady)),
            (S::RestorePending, true, A::RecallDone, no(R::NotRecalling)),
            (S::RestorePending, true, A::RecallFailed, ok(S::Stub, true, &[E::RecallFailed])),
            (S::RestorePending, true, A::RestoreRequested, no(R::RestoreAlreadyPending)),
            (S::RestorePending, true, A::RestoreReady, ok(S::Recalling, true, &[E::RecallStarted])),
            (S::RestorePending, true, A::WriteOrTruncate, no(R::RestoreNotReady)),
            (S::RestorePending, true, A::TruncateToZeroOfStub, sup(S::Resident, true)),
            (S::RestorePending, true, A::Pin, ok(S::RestorePending, true, &[])),
            (S::RestorePending, true, A::Unpin, ok(S::RestorePending, false, &[E::Unpinned])),
            (S::RestorePending, true, A::Delete, gone(true, true)),
        ]
    }

    #[test]
    fn table_covers_every_state_pin_and_action_once() {
        let t = table();
        assert_eq!(t.len(), FileState::ALL.len() * 2 * Action::ALL.len());
        for s in FileState::ALL {
            for p in [false, true] {
                for a in Action::ALL {
                    let n = t
                        .iter()
                        .filter(|(ts, tp, ta, _)| (*ts, *tp, *ta) == (s, p, a))
                        .count();
                    assert_eq!(n, 1, "{s} pinned={p} {a:?}");
                }
            }
        }
    }

    #[test]
    fn every_pair_gives_exactly_the_tabled_result() {
        for (from, pinned, action, want) in table() {
            let got = transition(from, pinned, action);
            let want = match want {
                Ok((next, p, events, supersede_object)) => Ok(Transition {
                    next,
                    pinned: p,
                    events,
                    supersede_object,
                }),
                Err(reason) => Err(InvalidTransition {
                    from,
                    pinned,
                    action,
                    reason,
                }),
            };
            assert_eq!(got, want, "{from} pinned={pinned} {action:?}");
        }
    }

    #[test]
    fn each_change_is_exactly_one_event_and_noops_none() {
        for s in FileState::ALL {
            for p in [false, true] {
                for a in Action::ALL {
                    if let Ok(t) = transition(s, p, a) {
                        let changed = t.next != Some(s) || t.pinned != p;
                        assert_eq!(t.events.len(), usize::from(changed), "{s} {p} {a:?}");
                        assert_eq!(t.is_noop(), !changed);
                    }
                }
            }
        }
    }

    #[test]
    fn data_is_freed_only_from_premigrated_and_never_when_pinned() {
        for s in FileState::ALL {
            for p in [false, true] {
                for a in Action::ALL {
                    if let Ok(t) = transition(s, p, a) {
                        if t.next == Some(S::Stub) && s != S::Stub {
                            // Entering `stub` frees data only via Stub/Release; the other
                            // way in is a failed recall, whose data was never complete.
                            if matches!(a, A::Stub | A::Release) {
                                assert_eq!(s, S::Premigrated);
                                assert!(!p);
                            } else {
                                assert_eq!(a, A::RecallFailed);
                                assert!(matches!(s, S::Recalling | S::RestorePending));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn objects_are_only_superseded_never_deleted_and_only_with_an_event() {
        for s in FileState::ALL {
            for p in [false, true] {
                for a in Action::ALL {
                    if let Ok(t) = transition(s, p, a) {
                        assert!(!t.events.contains(&E::ObjectDeleted));
                        if t.supersede_object {
                            assert!(s != S::Resident, "a resident file has no live object");
                            assert!(
                                t.events == [E::Superseded] || t.events == [E::Deleted],
                                "{s} {a:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Random walks through the machine: a file that is a stub has always passed through
    /// premigrated since its last data change, and no walk ever panics.
    #[test]
    fn random_walks_keep_the_invariants() {
        let mut rng = 0x243f_6a88_85a3_08d3u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..2000 {
            let (mut s, mut p) = (S::Resident, false);
            let mut verified_since_change = false;
            for _ in 0..50 {
                let a = Action::ALL[(next() % Action::ALL.len() as u64) as usize];
                let Ok(t) = transition(s, p, a) else { continue };
                let Some(n) = t.next else { break };
                match a {
                    A::CopyVerified => verified_since_change = true,
                    A::WriteOrTruncate | A::TruncateToZeroOfStub if t.supersede_object => {
                        verified_since_change = false
                    }
                    _ => {}
                }
                if n == S::Stub {
                    assert!(verified_since_change, "stub without a verified copy");
                }
                if n == S::Resident && s != S::Resident {
                    assert!(t.supersede_object);
                }
                (s, p) = (n, t.pinned);
            }
        }
    }

    #[test]
    fn refusals_read_well() {
        let e = transition(S::Premigrated, true, A::Release).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Release of a premigrated pinned file refused: the file is pinned: its data is \
             never freed"
        );
        let e = transition(S::Stub, false, A::WriteOrTruncate).unwrap_err();
        assert_eq!(
            e.to_string(),
            "WriteOrTruncate of a stub file refused: the file is a stub: recall it before writing"
        );
    }
}
