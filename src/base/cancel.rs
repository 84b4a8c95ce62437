//! A cancel flag shared between a job and whoever may stop it (the client that asked for
//! it going away, `coldtier jobs cancel`). The job looks at it between steps and stops
//! cleanly: nothing it does is left half-done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cancel({})", self.is_cancelled())
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Returns once the job is asked to stop.
    pub async fn cancelled(&self) {
        loop {
            // Created before the check: a `cancel` after the check wakes it.
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_wakes_on_cancel_and_a_late_one_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = Cancel::new();
        let c2 = c.clone();
        rt.block_on(async {
            let waiter = tokio::spawn(async move { c2.cancelled().await });
            tokio::task::yield_now().await;
            assert!(!c.is_cancelled());
            c.cancel();
            waiter.await.unwrap();
            c.cancelled().await;
        });
    }
}
