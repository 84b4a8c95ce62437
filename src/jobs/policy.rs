//! The policy scheduler: a policy run at each time `policy.schedule` names (UTC), in the
//! mode the settings say (both as a reload leaves them); none while tiering is paused.

use std::sync::Arc;

use crate::base::cancel::Cancel;
use crate::base::worker::{BoxFuture, Worker, WorkerState};
use crate::tier::context::Tiering;

pub struct PolicyScheduler {
    pub t: Arc<Tiering>,
}

impl Worker for PolicyScheduler {
    fn name(&self) -> String {
        "policy scheduler".into()
    }
    fn status(&self) -> String {
        let s = self.t.settings();
        if self.t.store_opt().is_none() {
            return "no [store]: no scheduled runs".into();
        }
        format!(
            "{}, mode {}{}{}",
            super::schedule::next_text(s.policy.schedule.as_ref(), "policy.schedule"),
            s.policy.mode.as_str(),
            s.policy
                .window
                .map(|w| format!(", window {w} UTC"))
                .unwrap_or_default(),
            s.policy
                .max_duration
                .map(|d| format!(", at most {}s", d.as_secs()))
                .unwrap_or_default(),
        )
    }
    fn wait_for_work(&mut self) -> BoxFuture<'_, WorkerState> {
        Box::pin(super::schedule::wait(
            &self.t,
            |s| s.policy.schedule.clone(),
            "policy run",
        ))
    }
    fn work<'a>(&'a mut self, cancel: &'a Cancel) -> BoxFuture<'a, Result<WorkerState, String>> {
        Box::pin(async move {
            if self.t.paused() {
                tracing::info!("scheduled policy run skipped: tiering is paused");
                return Ok(WorkerState::Idle);
            }
            let policy = self.t.settings().policy.clone();
            if let Some(w) = policy.window {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                if w.remaining(now).is_none() {
                    tracing::info!("scheduled policy run skipped: outside policy.window {w} (UTC)");
                    return Ok(WorkerState::Idle);
                }
            }
            let mode = policy.mode;
            let mut quiet = |_: crate::base::progress::Progress| {};
            self.t
                .run_policy(mode, "scheduled", &mut quiet, cancel)
                .await
                .map_err(|e| format!("scheduled policy run failed: {e}"))?;
            Ok(WorkerState::Idle)
        })
    }
}
