//! Recall budgets (`[recall]` max_concurrent, per_uid_per_minute, per_uid_bytes_per_minute,
//! per_minute, bytes_per_minute): a read that would start a recall over one of them waits
//! or gets EAGAIN (`over_budget`), and the refusal is a RECALL_REFUSED event (mode
//! `throttled`, naming the limit) and counted. Recalls started by `coldtier recall`, by the
//! deferred queue and by restore pollers are the admin's and not counted against users.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::RecallConfig;

const WINDOW: Duration = Duration::from_secs(60);

/// Recalls started in the last minute: (when, uid, bytes).
#[derive(Default)]
pub struct Budget {
    started: Mutex<VecDeque<(Instant, u32, u64)>>,
}

impl Budget {
    /// Whether `uid` may start a recall of `bytes` now, with `running` recalls in flight:
    /// Ok (and counted), or the limit it would pass.
    pub fn admit(
        &self,
        cfg: &RecallConfig,
        running: usize,
        uid: u32,
        bytes: u64,
    ) -> Result<(), &'static str> {
        let now = Instant::now();
        let mut s = self.started.lock();
        while s
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) >= WINDOW)
        {
            s.pop_front();
        }
        if cfg.max_concurrent.is_some_and(|m| running as u64 >= m) {
            return Err("recall.max_concurrent");
        }
        let (mut n, mut b, mut un, mut ub) = (0u64, 0u64, 0u64, 0u64);
        for &(_, u, x) in s.iter() {
            n += 1;
            b += x;
            if u == uid {
                un += 1;
                ub += x;
            }
        }
        // A byte budget smaller than one file lets that file through alone.
        let over = |used: u64, count_first: bool, limit: Option<u64>, add: u64| {
            limit.is_some_and(|l| used + add > l && (count_first || used > 0))
        };
        if over(n, true, cfg.per_minute, 1) {
            return Err("recall.per_minute");
        }
        if over(un, true, cfg.per_uid_per_minute, 1) {
            return Err("recall.per_uid_per_minute");
        }
        if over(b, false, cfg.bytes_per_minute, bytes) {
            return Err("recall.bytes_per_minute");
        }
        if over(ub, false, cfg.per_uid_bytes_per_minute, bytes) {
            return Err("recall.per_uid_bytes_per_minute");
        }
        s.push_back((now, uid, bytes));
        Ok(())
    }

    /// Whether `admit` would let it through now (nothing counted).
    pub fn would_admit(&self, cfg: &RecallConfig, running: usize, uid: u32, bytes: u64) -> bool {
        let r = self.admit(cfg, running, uid, bytes);
        if r.is_ok() {
            self.started.lock().pop_back();
        }
        r.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_count_bytes_uid_and_concurrency() {
        let b = Budget::default();
        let mut c = RecallConfig {
            per_uid_per_minute: Some(2),
            ..RecallConfig::default()
        };
        assert_eq!(b.admit(&c, 0, 7, 10), Ok(()));
        assert_eq!(b.admit(&c, 0, 7, 10), Ok(()));
        assert_eq!(b.admit(&c, 0, 7, 10), Err("recall.per_uid_per_minute"));
        assert_eq!(b.admit(&c, 0, 8, 10), Ok(()), "another uid");
        c.max_concurrent = Some(3);
        assert_eq!(b.admit(&c, 3, 9, 10), Err("recall.max_concurrent"));
        c.bytes_per_minute = Some(100);
        assert!(!b.would_admit(&c, 0, 9, 71));
        assert!(b.would_admit(&c, 0, 9, 70));
        assert_eq!(b.admit(&c, 0, 9, 70), Ok(()));
        // A file larger than a byte budget goes alone.
        let b = Budget::default();
        let c = RecallConfig {
            per_uid_bytes_per_minute: Some(100),
            ..RecallConfig::default()
        };
        assert_eq!(b.admit(&c, 0, 1, 1000), Ok(()));
        assert_eq!(b.admit(&c, 0, 1, 1), Err("recall.per_uid_bytes_per_minute"));
    }
}
