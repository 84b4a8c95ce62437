//! The engine's own background workers, on its runner (`Tiering::workers`): the tagger,
//! which sets the `coldtier-state` tag of objects (best effort: a tag only helps lifecycle
//! rules and people browsing the bucket), and one restore poller per file whose archived
//! object is being restored, which recalls the file once the restore is done.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Weak};

use crate::base::cancel::Cancel;
use crate::base::worker::{BoxFuture, Worker, WorkerState};
use crate::catalog::FileState;
use crate::tier::stub::StubRecord;

use super::context::Tiering;

/// One object to tag: key, version, the state to write.
pub type TagRequest = (String, Option<String>, &'static str);

/// Sets state tags, in the order they were asked for.
pub struct Tagger {
    pub t: Weak<Tiering>,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<TagRequest>,
    pub next: Option<TagRequest>,
    pub tagged: u64,
    pub failed: u64,
}

impl Worker for Tagger {
    fn name(&self) -> String {
        "tagger".into()
    }
    fn status(&self) -> String {
        format!(
            "{} queued, {} tagged, {} failed",
            self.rx.len() + usize::from(self.next.is_some()),
            self.tagged,
            self.failed
        )
    }
    fn wait_for_work(&mut self) -> BoxFuture<'_, WorkerState> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(r) => {
                    self.next = Some(r);
                    WorkerState::Busy
                }
                None => WorkerState::Done,
            }
        })
    }
    fn work<'a>(&'a mut self, _cancel: &'a Cancel) -> BoxFuture<'a, Result<WorkerState, String>> {
        Box::pin(async move {
            let Some((key, version, state)) = self.next.take().or_else(|| self.rx.try_recv().ok())
            else {
                return Ok(WorkerState::Idle);
            };
            let Some(store) = self.t.upgrade().and_then(|t| t.store_opt()) else {
                return Ok(WorkerState::Idle);
            };
            let tags = BTreeMap::from([("coldtier-state".to_string(), state.to_string())]);
            match store.set_tags(&key, version.as_deref(), tags).await {
                Ok(()) => self.tagged += 1,
                Err(e) => {
                    self.failed += 1;
                    tracing::warn!(key, "cannot tag the object {state}: {e}");
                }
            }
            Ok(if self.rx.is_empty() {
                WorkerState::Idle
            } else {
                WorkerState::Busy
            })
        })
    }
}

/// Polls the restore of one file's archived object (HEAD every `recall.poll_interval`)
/// and recalls the file once its object is readable; done when the file is no longer
/// waiting for a restore.
pub struct RestorePoller {
    pub t: Arc<Tiering>,
    pub node: u64,
    pub file: File,
    pub rec: StubRecord,
    pub polls: u64,
    pub last: String,
}

impl Drop for RestorePoller {
    fn drop(&mut self) {
        self.t.poller_gone(&self.rec.file_id);
    }
}

impl Worker for RestorePoller {
    fn name(&self) -> String {
        format!("restore poller {}", self.rec.object_key)
    }
    fn status(&self) -> String {
        format!("{} polls; {}", self.polls, self.last)
    }
    fn wait_for_work(&mut self) -> BoxFuture<'_, WorkerState> {
        Box::pin(async move {
            tokio::time::sleep(self.t.settings().recall.poll_interval).await;
            WorkerState::Busy
        })
    }
    fn work<'a>(&'a mut self, _cancel: &'a Cancel) -> BoxFuture<'a, Result<WorkerState, String>> {
        Box::pin(async move {
            self.polls += 1;
            match self.t.catalog.file_by_id(&self.rec.file_id) {
                Ok(Some(row)) if row.state == FileState::RestorePending => {}
                Ok(_) => return Ok(WorkerState::Done),
                Err(e) => {
                    self.last = format!("catalog: {e}");
                    tracing::warn!("restore poller: catalog: {e}");
                    return Ok(WorkerState::Idle);
                }
            }
            let Ok(store) = self.t.store() else {
                return Ok(WorkerState::Done);
            };
            match store
                .head(&self.rec.object_key, self.rec.version_id.as_deref())
                .await
            {
                Ok(m) if m.restore.readable() => self.t.failpoint("restore-poller-after-head"),
                Ok(_) => {
                    self.last = "restore under way".into();
                    return Ok(WorkerState::Idle);
                }
                Err(e) => {
                    self.last = e.to_string();
                    tracing::warn!(key = %self.rec.object_key, "restore poller: {e}");
                    return Ok(WorkerState::Idle);
                }
            }
            let Ok(w) = self.file.try_clone() else {
                return Ok(WorkerState::Done);
            };
            // Still the stub whose restore this polled, read under its gate with the claim
            // taken (as every recall starts: docs/invariants.md): while the HEAD was in
            // flight a read may have recalled it, and a writer changed it since.
            let mut rx = {
                let _held = self.t.gate.lock(self.node);
                let still = self.t.is_still_stub(self.file.as_fd(), &self.rec);
                self.t.failpoint("restore-poller-checked");
                match still {
                    Ok(true) => {}
                    Ok(false) => return Ok(WorkerState::Done),
                    Err(e) => {
                        self.last = format!("reading the stub record: {e:?}");
                        return Ok(WorkerState::Idle);
                    }
                }
                self.last = "restored: recalling".into();
                self.t
                    .recall_rx(self.node, OwnedFd::from(w), self.rec.clone())
            };
            let _ = rx.wait_for(|v| v.is_some()).await;
            Ok(WorkerState::Done)
        })
    }
}
