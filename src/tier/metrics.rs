//! The tiering engine's metrics: recalls, migrations, the store check and pause.

use std::fmt::Write as _;
use std::time::Duration;

use crate::base::metrics::{counter, gauge, header, histogram, Counter, Gauge, Histogram};

/// Recalls finished, by result (`coldtier_recalls_total{result=...}`).
pub static RECALLS_OK: Counter = Counter::new();
pub static RECALLS_FAILED: Counter = Counter::new();
/// The open failed at once (EAGAIN): the object is archived, a restore is under way
/// (`recall.on_archived = "fail"`).
pub static RECALLS_ARCHIVED_WAIT: Counter = Counter::new();
/// The open gave up after `recall.wait_timeout` (ETIMEDOUT) waiting for a restore.
pub static RECALLS_TIMEOUT: Counter = Counter::new();
/// Opens that gave up waiting for a recall after `recall.timeout` (EAGAIN; the recall
/// went on).
pub static RECALLS_OPEN_TIMEOUT: Counter = Counter::new();
/// Successful recalls: from the first open to the data in place (restore waits included).
pub static RECALL_SECONDS: Histogram = Histogram::new(&[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
]);
pub static RECALLED_BYTES: Counter = Counter::new();
pub static MIGRATED_BYTES: Counter = Counter::new();
pub static MIGRATED_FILES: Counter = Counter::new();
/// Recalls running now (each may have many waiting openers).
pub static RECALLS_IN_FLIGHT: Gauge = Gauge::new();
/// Files being copied (or stubbed) by a policy run now.
pub static MIGRATIONS_IN_FLIGHT: Gauge = Gauge::new();
/// 1 when the store check at mount found that the store refuses an upload whose body does
/// not match its checksum (its word proves a copy); 0 when copies are read back.
pub static STORE_VALIDATES_CHECKSUMS: Gauge = Gauge::new();
/// 1 while tiering is paused (`mount --paused`, `coldtier pause`).
pub static TIERING_PAUSED: Gauge = Gauge::new();

/// Files a `defer` rule queued for the background recall, not yet recalled.
pub static RECALLS_QUEUED: Gauge = Gauge::new();
/// Reads waiting for a recall budget to allow their recall (`over_budget = "wait"`).
pub static RECALLS_WAITING_BUDGET: Gauge = Gauge::new();

/// Reads of stubs refused by `[[recall.rules]]`, by mode (`deny`, `defer`).
pub static RECALLS_DENIED: Counter = Counter::new();
pub static RECALLS_DEFERRED: Counter = Counter::new();
pub static RECALLS_THROTTLED: Counter = Counter::new();

/// Records a read of a stub refused by a rule.
pub fn recall_refused(mode: &str) {
    match mode {
        "deny" => RECALLS_DENIED.inc(),
        "throttled" => RECALLS_THROTTLED.inc(),
        _ => RECALLS_DEFERRED.inc(),
    }
}

/// Records a finished recall: `result` is Ok or the errno the opener got.
pub fn recall_done(result: Result<(), i32>, bytes: u64, elapsed: Duration) {
    match result {
        Ok(()) => {
            RECALLS_OK.inc();
            RECALLED_BYTES.add(bytes);
            RECALL_SECONDS.observe(elapsed);
        }
        Err(libc::EAGAIN) => RECALLS_ARCHIVED_WAIT.inc(),
        Err(libc::ETIMEDOUT) => RECALLS_TIMEOUT.inc(),
        Err(_) => RECALLS_FAILED.inc(),
    }
}

/// Records a verified-or-not copy that reached the store (a PUT that succeeded).
pub fn migrated(bytes: u64) {
    MIGRATED_FILES.inc();
    MIGRATED_BYTES.add(bytes);
}

/// Renders the engine's metrics.
pub fn render(out: &mut String) {
    header(
        out,
        "coldtier_recalls_total",
        "counter",
        "Recalls finished, by result: ok; failed; archived_wait (archived object, the open \
         failed at once while a restore runs); timeout (recall.wait_timeout passed).",
    );
    for (label, c) in [
        ("ok", &RECALLS_OK),
        ("failed", &RECALLS_FAILED),
        ("archived_wait", &RECALLS_ARCHIVED_WAIT),
        ("timeout", &RECALLS_TIMEOUT),
    ] {
        let _ = writeln!(
            out,
            "coldtier_recalls_total{{result=\"{label}\"}} {}",
            c.get()
        );
    }
    header(
        out,
        "coldtier_recalls_refused_total",
        "counter",
        "Reads of stubs refused, by mode: deny (EACCES) and defer (EAGAIN, queued) by [[recall.rules]]; throttled (over a [recall] budget: waited or EAGAIN).",
    );
    for (label, c) in [
        ("deny", &RECALLS_DENIED),
        ("defer", &RECALLS_DEFERRED),
        ("throttled", &RECALLS_THROTTLED),
    ] {
        let _ = writeln!(
            out,
            "coldtier_recalls_refused_total{{mode=\"{label}\"}} {}",
            c.get()
        );
    }
    counter(
        out,
        "coldtier_recall_open_timeouts_total",
        "Opens that gave up waiting for a stub's data after recall.timeout (EAGAIN; the recall went on).",
        &RECALLS_OPEN_TIMEOUT,
    );
    histogram(
        out,
        "coldtier_recall_duration_seconds",
        "Time of successful recalls, from the first open to the data in place.",
        &RECALL_SECONDS,
    );
    for (name, help, c) in [
        (
            "coldtier_recalled_bytes_total",
            "Bytes brought back from the store by recalls.",
            &RECALLED_BYTES,
        ),
        (
            "coldtier_migrated_bytes_total",
            "Bytes copied to the store (uploads that succeeded).",
            &MIGRATED_BYTES,
        ),
        (
            "coldtier_migrated_files_total",
            "Files copied to the store (uploads that succeeded).",
            &MIGRATED_FILES,
        ),
    ] {
        counter(out, name, help, c);
    }
    header(
        out,
        "coldtier_recall_queue_depth",
        "gauge",
        "Recalls not yet started: files queued by a defer rule (deferred), reads waiting for a \
         recall budget (budget).",
    );
    for (label, g) in [
        ("deferred", &RECALLS_QUEUED),
        ("budget", &RECALLS_WAITING_BUDGET),
    ] {
        let _ = writeln!(
            out,
            "coldtier_recall_queue_depth{{queue=\"{label}\"}} {}",
            g.get()
        );
    }
    for (name, help, g) in [
        (
            "coldtier_recalls_in_flight",
            "Recalls running now.",
            &RECALLS_IN_FLIGHT,
        ),
        (
            "coldtier_migrations_in_flight",
            "Files a policy run is copying or stubbing now.",
            &MIGRATIONS_IN_FLIGHT,
        ),
        (
            "coldtier_store_validates_checksums",
            "1 if the store refuses uploads that do not match their checksum (its word proves a copy); 0 if every copy is read back.",
            &STORE_VALIDATES_CHECKSUMS,
        ),
        (
            "coldtier_tiering_paused",
            "1 while policy runs, gc and catalog uploads are paused.",
            &TIERING_PAUSED,
        ),
    ] {
        gauge(out, name, help, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_results_are_counted_by_errno() {
        let (ok, failed, wait, timeout) = (
            RECALLS_OK.get(),
            RECALLS_FAILED.get(),
            RECALLS_ARCHIVED_WAIT.get(),
            RECALLS_TIMEOUT.get(),
        );
        recall_done(Ok(()), 10, Duration::from_millis(3));
        recall_done(Err(libc::EIO), 0, Duration::ZERO);
        recall_done(Err(libc::EAGAIN), 0, Duration::ZERO);
        recall_done(Err(libc::ETIMEDOUT), 0, Duration::ZERO);
        assert!(RECALLS_OK.get() > ok);
        assert!(RECALLS_FAILED.get() > failed);
        assert!(RECALLS_ARCHIVED_WAIT.get() > wait);
        assert!(RECALLS_TIMEOUT.get() > timeout);
        let mut out = String::new();
        render(&mut out);
        crate::base::metrics::assert_valid_exposition(&out);
        assert!(
            out.contains("# TYPE coldtier_recalls_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("coldtier_recalls_total{result=\"ok\"} "),
            "{out}"
        );
    }
}
