//! The progress of a long job as every layer reports it: the engine's policy runs and
//! checks, the daemon's relay, the wire (`control::protocol` carries it) and the CLI's bar.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What there is to do, once the daemon knows it (a policy run after its scan): the
/// progress bar's 100%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

/// One progress report of a request under way: what it does, files and bytes done so far,
/// and (when the daemon knows it) how much there is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub message: String,
    pub files: u64,
    pub bytes: u64,
    pub totals: Option<Totals>,
}

impl Progress {
    /// A report without totals.
    pub fn new(message: impl Into<String>, files: u64, bytes: u64) -> Progress {
        Progress {
            message: message.into(),
            files,
            bytes,
            totals: None,
        }
    }
}
/// Lets progress reports through at most once per `every`, the first one with totals
/// always (a bar needs them however fast the work is), and keeps the last one it held back
/// for [`Throttle::flush`], so that what is shown at the end is where the work ended.
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: Option<Progress>,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held: None,
        }
    }

    /// `p` if it may go now; else None (it is held).
    pub fn offer(&mut self, p: Progress) -> Option<Progress> {
        let now = Instant::now();
        if p.totals.is_none() && self.last.is_some_and(|l| now - l < self.every) {
            self.held = Some(p);
            return None;
        }
        self.held = None;
        self.last = Some(now);
        Some(p)
    }

    /// The last report held back, if any (at the end of the work).
    pub fn flush(&mut self) -> Option<Progress> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_totals_through_and_keeps_the_last_held_back() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        let p = |n| Progress::new("x", n, 0);
        assert_eq!(t.offer(p(1)), Some(p(1)), "the first goes");
        assert_eq!(t.offer(p(2)), None);
        assert_eq!(t.offer(p(3)), None);
        let with_totals = Progress {
            totals: Some(Totals { files: 9, bytes: 0 }),
            ..p(0)
        };
        assert_eq!(
            t.offer(with_totals.clone()),
            Some(with_totals),
            "totals always go"
        );
        assert_eq!(t.flush(), None, "what went is not held");
        assert_eq!(t.offer(p(4)), None);
        assert_eq!(t.flush(), Some(p(4)), "the last one held back");
        assert_eq!(t.flush(), None);
    }
}
