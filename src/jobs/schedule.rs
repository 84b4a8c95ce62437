//! Waiting for the next time a schedule of the settings in force names (UTC), starting
//! over whenever a reload replaces the settings.

use crate::base::cron::Schedule;
use crate::base::worker::WorkerState;
use crate::tier::config::Settings;
use crate::tier::context::Tiering;

/// Sleeps until the next time `schedule` names (UTC); false when there is none.
async fn sleep_until_next(schedule: &Schedule, what: &str) -> bool {
    let now = std::time::SystemTime::now();
    let Some(next) = schedule.next_after(now) else {
        return false;
    };
    let wait = next.duration_since(now).unwrap_or_default();
    tracing::info!(in_secs = wait.as_secs(), schedule = %schedule, "next scheduled {what}");
    tokio::time::sleep(wait).await;
    true
}

/// Waits for the next time the schedule `pick` takes from the settings in force names,
/// starting over whenever they are reloaded: `Busy` when it comes, `Done` when the
/// engine is gone (the daemon is stopping).
pub async fn wait(t: &Tiering, pick: fn(&Settings) -> Option<Schedule>, what: &str) -> WorkerState {
    let mut reloads = t.reloads();
    loop {
        reloads.borrow_and_update();
        // Without a store there is nothing to tier or back up there: no runs until a
        // reload adds one.
        let schedule = pick(&t.settings()).filter(|_| t.store_opt().is_some());
        let due = async {
            match &schedule {
                Some(s) => sleep_until_next(s, what).await,
                None => false,
            }
        };
        tokio::select! {
            due = due => {
                if due {
                    return WorkerState::Busy;
                }
                // No schedule (or no next time): wait for a reload.
                if reloads.changed().await.is_err() {
                    return WorkerState::Done;
                }
            }
            changed = reloads.changed() => {
                if changed.is_err() {
                    return WorkerState::Done;
                }
            }
        }
    }
}

/// "next at 2026-12-06 03:00:00 UTC" for a worker's status, or why there is none.
pub fn next_text(schedule: Option<&Schedule>, key: &str) -> String {
    match schedule.and_then(|s| s.next_after(std::time::SystemTime::now())) {
        Some(t) => format!(
            "next at {}",
            crate::base::time::format_time(crate::base::time::ns_of_system_time(t))
        ),
        None => format!("no schedule ({key} = \"off\")"),
    }
}
