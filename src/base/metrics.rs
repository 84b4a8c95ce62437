//! Prometheus metric primitives and the text exposition format 0.0.4: a counter is an
//! `AtomicU64`, a gauge an `AtomicI64`, a histogram a fixed array of bucket counters.
//! Each layer keeps its own metrics as statics next to the code that bumps them
//! (`tier::metrics`, `fs::metrics`, `store::counting`, `catalog::metrics`) and renders
//! them with the helpers here; the daemon's endpoint (`daemon::metrics`) composes them.
//!
//! No metrics crate (docs/architecture.md, "choices and why"): bumping a metric is one
//! relaxed atomic add on a static, with no registry, lock or allocation, and the whole
//! format is the three helpers below.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonically increasing count.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that goes up and down (things in flight).
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// +1 now, -1 when the guard drops (also on an early return or a panic).
    pub fn track(&'static self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

pub struct GaugeGuard(&'static Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

const MAX_BUCKETS: usize = 20;

/// A histogram of durations with fixed upper bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last slot past `bounds` is +Inf.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub const fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() <= MAX_BUCKETS);
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            sum_ns: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    /// Observes the time until the timer drops.
    pub fn start_timer(&'static self) -> HistogramTimer {
        HistogramTimer(self, Instant::now())
    }
    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.counts[..=self.bounds.len()]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

pub struct HistogramTimer(&'static Histogram, Instant);

impl Drop for HistogramTimer {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed());
    }
}

// ---- the exposition format ---------------------------------------------------------------

/// The `# HELP` and `# TYPE` lines of one metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A sample value as the format writes it.
pub fn float(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

/// A histogram: cumulative buckets, sum and count.
pub fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, "histogram", help);
    let mut cum = 0u64;
    for (i, b) in h.bounds.iter().enumerate() {
        cum += h.counts[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", float(*b));
    }
    cum += h.counts[h.bounds.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {}", float(sum));
    let _ = writeln!(out, "{name}_count {cum}");
}

/// A counter without labels.
pub fn counter(out: &mut String, name: &str, help: &str, c: &Counter) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", c.get());
}

/// A gauge without labels (never below 0).
pub fn gauge(out: &mut String, name: &str, help: &str, g: &Gauge) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {}", g.get().max(0));
}

/// Checks that `text` is valid exposition format of coldtier metrics (for tests of every
/// layer that renders some).
pub fn assert_valid_exposition(text: &str) {
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP coldtier_") || line.starts_with("# TYPE coldtier_"),
                "{line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(name.starts_with("coldtier_"), "{line}");
        assert!(
            value == "+Inf" || value.parse::<f64>().is_ok(),
            "bad value: {line}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        static H: Histogram = Histogram::new(&[0.1, 1.0]);
        H.observe(Duration::from_millis(50));
        H.observe(Duration::from_millis(500));
        H.observe(Duration::from_secs(5));
        let mut out = String::new();
        histogram(&mut out, "x", "help", &H);
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 5.55\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert_eq!(H.count(), 3);
    }

    #[test]
    fn gauges_track_and_never_render_below_zero() {
        static G: Gauge = Gauge::new();
        {
            let _a = G.track();
            let _b = G.track();
            assert_eq!(G.get(), 2);
        }
        assert_eq!(G.get(), 0);
        G.set(-3);
        let mut out = String::new();
        gauge(&mut out, "coldtier_x", "help", &G);
        assert!(out.ends_with("coldtier_x 0\n"), "{out}");
        assert_valid_exposition(&out);
    }
}
