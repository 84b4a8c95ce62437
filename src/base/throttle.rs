//! Bandwidth limits: a token bucket that async transfers take bytes from before (uploads)
//! or after (downloads) moving them. The rate can change at any time (a config reload);
//! 0 means no limit. Debts are allowed: a taker of more bytes than the bucket holds takes
//! them all and waits until the bucket is back at zero, so that a 16 MiB part is not split
//! and the long-run rate is the one set, with bursts of at most one second's worth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Bucket {
    /// Bytes per second; 0: unlimited.
    rate: AtomicU64,
    /// (tokens, when they were counted): tokens may be negative (a debt).
    state: parking_lot::Mutex<Option<(f64, Instant)>>,
}

impl Bucket {
    pub const fn new() -> Self {
        Bucket {
            rate: AtomicU64::new(0),
            state: parking_lot::Mutex::new(None),
        }
    }

    /// Sets the rate in bytes per second (0: no limit). Takers already waiting keep the
    /// wait they computed; the next ones see the new rate.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        if self.rate.swap(bytes_per_sec, Ordering::Relaxed) != bytes_per_sec {
            *self.state.lock() = None;
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// How long a taker of `n` bytes must wait now, after taking them (zero: go on).
    pub fn reserve(&self, n: u64, now: Instant) -> Duration {
        let rate = self.rate();
        if rate == 0 || n == 0 {
            return Duration::ZERO;
        }
        let rate_f = rate as f64;
        let mut st = self.state.lock();
        // A full bucket (one second's worth) to begin with.
        let (tokens, at) = st.unwrap_or((rate_f, now));
        let refilled =
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate_f).min(rate_f);
        let left = refilled - n as f64;
        *st = Some((left, now));
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / rate_f)
        }
    }

    /// Takes `n` bytes, waiting as long as the rate asks.
    pub async fn take(&self, n: u64) {
        let wait = self.reserve(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl Default for Bucket {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_run_rate_is_the_one_set_with_a_burst_of_one_second() {
        let b = Bucket::new();
        let t0 = Instant::now();
        assert_eq!(b.reserve(1 << 30, t0), Duration::ZERO, "no limit");
        b.set_rate(1000);
        // The first second's worth goes at once, then each byte costs a millisecond.
        assert_eq!(b.reserve(1000, t0), Duration::ZERO);
        assert_eq!(b.reserve(500, t0), Duration::from_millis(500));
        // A taker that comes after the others' wait waits its own share only.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.reserve(250, t1), Duration::from_millis(250));
        // 10 s later the bucket is full again, never fuller.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.reserve(1000, t2), Duration::ZERO);
        assert_eq!(b.reserve(1, t2), Duration::from_millis(1));
        // A big take is not split: it waits for all of it.
        let t3 = t2 + Duration::from_secs(10);
        assert_eq!(b.reserve(5000, t3), Duration::from_secs(4));
        // A new rate starts afresh; 0 lifts the limit.
        b.set_rate(2000);
        assert_eq!(b.reserve(2000, t3), Duration::ZERO);
        assert_eq!(b.reserve(1000, t3), Duration::from_millis(500));
        b.set_rate(0);
        assert_eq!(b.reserve(1 << 40, t3), Duration::ZERO);
    }
}
