//! Background workers and the one runner they all run on (the shape of garage's
//! background runner): a worker alternates between waiting for work and doing a piece of
//! it; the runner drives that loop on the tokio runtime, keeps each worker's status, run
//! and error counts and last error (`coldtier jobs workers`), cancels the piece of work
//! in progress on request (`coldtier jobs cancel --worker`), and stops every worker at
//! unmount. The workers themselves are domain code (`crate::jobs`, and the engine's
//! tagger and restore pollers); this file knows none of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

use super::cancel::Cancel;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a worker does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// More work now: `work` again.
    Busy,
    /// Nothing to do: `wait_for_work`.
    Idle,
    /// Finished for good: the runner forgets it.
    Done,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Busy => "busy",
            WorkerState::Idle => "idle",
            WorkerState::Done => "done",
        }
    }
}

/// A piece of background work.
pub trait Worker: Send + 'static {
    /// Its name in `coldtier jobs workers` and in log lines ("policy scheduler").
    fn name(&self) -> String;

    /// What it is waiting for or working on ("next run at 2026-12-06 03:00 UTC").
    fn status(&self) -> String {
        String::new()
    }

    /// Does one piece of work. `cancel` is set when someone cancels this piece (the
    /// worker goes on waiting for the next). An error is recorded as the worker's last
    /// error, and the worker then waits for work.
    fn work<'a>(&'a mut self, cancel: &'a Cancel) -> BoxFuture<'a, Result<WorkerState, String>>;

    /// Waits until there is work (`Busy`) or nothing will ever come (`Done`).
    fn wait_for_work(&mut self) -> BoxFuture<'_, WorkerState>;
}

/// One worker as `coldtier jobs workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerInfo {
    pub id: u64,
    pub name: String,
    /// "busy", "idle" or "done".
    pub state: String,
    pub status: String,
    /// Pieces of work done (successful or not).
    pub runs: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// When the last error happened (ns since the epoch).
    pub last_error_ns: Option<i64>,
}

struct Slot {
    id: u64,
    name: String,
    info: Mutex<WorkerInfo>,
    /// The cancel flag of the piece of work in progress.
    cancel: Mutex<Cancel>,
    /// The worker's `status()` text, refreshed around each step.
    status: Mutex<String>,
}

/// Runs workers on a tokio runtime.
pub struct Runner {
    rt: tokio::runtime::Handle,
    slots: Mutex<(u64, Vec<Arc<Slot>>)>,
    stop: Cancel,
}

impl Runner {
    pub fn new(rt: tokio::runtime::Handle) -> Arc<Runner> {
        Arc::new(Runner {
            rt,
            slots: Mutex::new((0, Vec::new())),
            stop: Cancel::new(),
        })
    }

    /// Starts `w`, first waiting for work (or working at once with `busy`); returns its id.
    pub fn spawn(self: &Arc<Self>, mut w: impl Worker, busy: bool) -> u64 {
        let name = w.name();
        let slot = {
            let mut s = self.slots.lock();
            s.0 += 1;
            let slot = Arc::new(Slot {
                id: s.0,
                name: name.clone(),
                info: Mutex::new(WorkerInfo {
                    id: s.0,
                    name: name.clone(),
                    state: WorkerState::Idle.as_str().into(),
                    status: String::new(),
                    runs: 0,
                    errors: 0,
                    last_error: None,
                    last_error_ns: None,
                }),
                cancel: Mutex::new(Cancel::new()),
                status: Mutex::new(w.status()),
            });
            s.1.push(slot.clone());
            slot
        };
        let id = slot.id;
        let me = self.clone();
        let stop = self.stop.clone();
        self.rt.spawn(async move {
            let mut state = if busy {
                WorkerState::Busy
            } else {
                WorkerState::Idle
            };
            loop {
                *slot.status.lock() = w.status();
                state = match state {
                    WorkerState::Done => break,
                    WorkerState::Idle => {
                        slot.info.lock().state = state.as_str().into();
                        tokio::select! {
                            s = w.wait_for_work() => s,
                            _ = stop.cancelled() => break,
                        }
                    }
                    WorkerState::Busy => {
                        // The flag first: a cancel seen as "busy" reaches this piece.
                        let cancel = Cancel::new();
                        *slot.cancel.lock() = cancel.clone();
                        slot.info.lock().state = state.as_str().into();
                        let r = tokio::select! {
                            r = w.work(&cancel) => r,
                            _ = stop.cancelled() => break,
                        };
                        let mut info = slot.info.lock();
                        info.runs += 1;
                        match r {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::error!(worker = %slot.name, "{e}");
                                info.errors += 1;
                                info.last_error = Some(e);
                                info.last_error_ns = Some(super::time::system_now_ns());
                                WorkerState::Idle
                            }
                        }
                    }
                };
            }
            me.slots.lock().1.retain(|s| s.id != slot.id);
        });
        id
    }

    /// Every worker still running, in the order they started.
    pub fn list(&self) -> Vec<WorkerInfo> {
        self.slots
            .lock()
            .1
            .iter()
            .map(|s| {
                let mut i = s.info.lock().clone();
                i.status = s.status.lock().clone();
                i
            })
            .collect()
    }

    /// Cancels the piece of work worker `id` is doing; false if there is no such worker.
    pub fn cancel(&self, id: u64) -> bool {
        let s = self.slots.lock();
        match s.1.iter().find(|s| s.id == id) {
            Some(slot) => {
                slot.cancel.lock().cancel();
                true
            }
            None => false,
        }
    }

    /// Stops every worker (at unmount): each stops where it waits or works, at its next
    /// await; none starts anything new.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Works `n` times, failing on the second, then is done.
    struct Counter {
        left: u32,
        done: Arc<Mutex<Vec<u32>>>,
        wake: Arc<tokio::sync::Notify>,
    }

    impl Worker for Counter {
        fn name(&self) -> String {
            "counter".into()
        }
        fn status(&self) -> String {
            format!("{} left", self.left)
        }
        fn work<'a>(
            &'a mut self,
            _cancel: &'a Cancel,
        ) -> BoxFuture<'a, Result<WorkerState, String>> {
            Box::pin(async move {
                self.done.lock().push(self.left);
                self.left -= 1;
                if self.left == 1 {
                    return Err("second piece failed".into());
                }
                Ok(if self.left == 0 {
                    WorkerState::Done
                } else {
                    WorkerState::Busy
                })
            })
        }
        fn wait_for_work(&mut self) -> BoxFuture<'_, WorkerState> {
            let wake = self.wake.clone();
            Box::pin(async move {
                wake.notified().await;
                WorkerState::Busy
            })
        }
    }

    /// Waits for a cancel inside its work.
    struct Sleeper {
        cancelled: Arc<tokio::sync::Notify>,
    }

    impl Worker for Sleeper {
        fn name(&self) -> String {
            "sleeper".into()
        }
        fn work<'a>(
            &'a mut self,
            cancel: &'a Cancel,
        ) -> BoxFuture<'a, Result<WorkerState, String>> {
            Box::pin(async move {
                cancel.cancelled().await;
                self.cancelled.notify_one();
                Ok(WorkerState::Idle)
            })
        }
        fn wait_for_work(&mut self) -> BoxFuture<'_, WorkerState> {
            Box::pin(std::future::pending())
        }
    }

    async fn until(f: impl Fn() -> bool) {
        while !f() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn workers_run_record_errors_and_are_forgotten_when_done() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runner = Runner::new(rt.handle().clone());
        let done = Arc::new(Mutex::new(Vec::new()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let id = runner.spawn(
            Counter {
                left: 3,
                done: done.clone(),
                wake: wake.clone(),
            },
            true,
        );
        rt.block_on(async {
            // 3 -> 2 (busy), 2 -> 1 fails (idle, waits)
            until(|| {
                runner
                    .list()
                    .first()
                    .is_some_and(|i| i.errors == 1 && i.state == "idle")
            })
            .await;
            let info = runner.list().remove(0);
            assert_eq!((info.id, info.runs, info.name.as_str()), (id, 2, "counter"));
            assert_eq!(info.last_error.as_deref(), Some("second piece failed"));
            assert_eq!(info.status, "1 left");
            assert!(info.last_error_ns.is_some());
            wake.notify_one();
            until(|| runner.list().is_empty()).await;
        });
        assert_eq!(*done.lock(), vec![3, 2, 1]);
    }

    #[test]
    fn cancel_reaches_the_work_in_progress_and_stop_ends_every_worker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runner = Runner::new(rt.handle().clone());
        let cancelled = Arc::new(tokio::sync::Notify::new());
        let id = runner.spawn(
            Sleeper {
                cancelled: cancelled.clone(),
            },
            true,
        );
        rt.block_on(async {
            until(|| runner.list().first().is_some_and(|i| i.state == "busy")).await;
            assert!(runner.cancel(id));
            assert!(!runner.cancel(id + 100));
            cancelled.notified().await;
            until(|| runner.list().first().is_some_and(|i| i.state == "idle")).await;
            runner.stop();
            until(|| runner.list().is_empty()).await;
        });
    }
}
