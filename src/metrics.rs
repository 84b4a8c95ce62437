//! Prometheus metrics: process-wide atomics that the rest of the code bumps with one-line
//! calls (`metrics::RECALLED_BYTES.add(n)`), rendered in the text exposition format 0.0.4
//! by a tiny HTTP/1.1 server on a loopback address (`[metrics] listen`, off by default).
//!
//! No metrics crate: a counter is an `AtomicU64`, a gauge an `AtomicI64`, a histogram a
//! fixed array of bucket counters. One daemon serves one mount, so process-wide statics are
//! per mount. Gauges that the catalog already knows (files per state, restores pending)
//! are read from it at scrape time, never kept twice.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, FileState};
use crate::store::{
    GetRequest, GetResult, ListEntry, ObjectMeta, ObjectStore, PutRequest, PutResult,
    RestoreOutcome, RestoreTier, StoreErrorKind, StoreFuture,
};

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

// ---- the metrics ----------------------------------------------------------------------

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
/// Directory entries the daemon sent with their attributes and a lookup reference
/// (READDIRPLUS): entries the kernel needs no LOOKUP for.
pub static READDIRPLUS_ENTRIES: Counter = Counter::new();
/// 1 when the store check at mount found that the store refuses an upload whose body does
/// not match its checksum (its word proves a copy); 0 when copies are read back.
pub static STORE_VALIDATES_CHECKSUMS: Gauge = Gauge::new();
/// 1 while tiering is paused (`mount --paused`, `coldtier pause`).
pub static TIERING_PAUSED: Gauge = Gauge::new();
/// One write transaction of the catalog, the wait for the writer lock included.
pub static CATALOG_WRITE_SECONDS: Histogram = Histogram::new(&[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
]);

/// FUSE requests, as `coldtier_fuse_requests_total` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuseOp {
    Lookup,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    CopyFileRange,
}

const FUSE_OPS: [(FuseOp, &str); 32] = [
    (FuseOp::Lookup, "lookup"),
    (FuseOp::Getattr, "getattr"),
    (FuseOp::Setattr, "setattr"),
    (FuseOp::Readlink, "readlink"),
    (FuseOp::Mknod, "mknod"),
    (FuseOp::Mkdir, "mkdir"),
    (FuseOp::Unlink, "unlink"),
    (FuseOp::Rmdir, "rmdir"),
    (FuseOp::Symlink, "symlink"),
    (FuseOp::Rename, "rename"),
    (FuseOp::Link, "link"),
    (FuseOp::Open, "open"),
    (FuseOp::Read, "read"),
    (FuseOp::Write, "write"),
    (FuseOp::Flush, "flush"),
    (FuseOp::Release, "release"),
    (FuseOp::Fsync, "fsync"),
    (FuseOp::Opendir, "opendir"),
    (FuseOp::Readdir, "readdir"),
    (FuseOp::Readdirplus, "readdirplus"),
    (FuseOp::Releasedir, "releasedir"),
    (FuseOp::Fsyncdir, "fsyncdir"),
    (FuseOp::Statfs, "statfs"),
    (FuseOp::Setxattr, "setxattr"),
    (FuseOp::Getxattr, "getxattr"),
    (FuseOp::Listxattr, "listxattr"),
    (FuseOp::Removexattr, "removexattr"),
    (FuseOp::Access, "access"),
    (FuseOp::Create, "create"),
    (FuseOp::Fallocate, "fallocate"),
    (FuseOp::Lseek, "lseek"),
    (FuseOp::CopyFileRange, "copy_file_range"),
];

/// FUSE requests received, by operation (reads and writes of passthrough files never reach
/// the daemon and are not counted).
static FUSE_REQUESTS: [Counter; FUSE_OPS.len()] = [const { Counter::new() }; FUSE_OPS.len()];

/// Counts one FUSE request of kind `op`.
pub fn fuse_request(op: FuseOp) {
    FUSE_REQUESTS[op as usize].inc();
}

/// Store operations, as the error counters label them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Put,
    Head,
    Get,
    Restore,
    Delete,
    List,
    GetTags,
    SetTags,
}

const OPS: [StoreOp; 8] = [
    StoreOp::Put,
    StoreOp::Head,
    StoreOp::Get,
    StoreOp::Restore,
    StoreOp::Delete,
    StoreOp::List,
    StoreOp::GetTags,
    StoreOp::SetTags,
];

impl StoreOp {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Put => "put",
            StoreOp::Head => "head",
            StoreOp::Get => "get",
            StoreOp::Restore => "restore",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
            StoreOp::GetTags => "get_tags",
            StoreOp::SetTags => "set_tags",
        }
    }
}

const KINDS: [StoreErrorKind; 9] = [
    StoreErrorKind::NotFound,
    StoreErrorKind::AccessDenied,
    StoreErrorKind::InvalidObjectState,
    StoreErrorKind::Unreachable,
    StoreErrorKind::Throttled,
    StoreErrorKind::ChecksumMismatch,
    StoreErrorKind::InvalidConfig,
    StoreErrorKind::InvalidArgument,
    StoreErrorKind::Other,
];

/// The label of an error kind (the match is exhaustive: a new kind must be named here).
pub fn kind_label(k: StoreErrorKind) -> &'static str {
    match k {
        StoreErrorKind::NotFound => "not_found",
        StoreErrorKind::AccessDenied => "access_denied",
        StoreErrorKind::InvalidObjectState => "invalid_object_state",
        StoreErrorKind::Unreachable => "unreachable",
        StoreErrorKind::Throttled => "throttled",
        StoreErrorKind::ChecksumMismatch => "checksum_mismatch",
        StoreErrorKind::InvalidConfig => "invalid_config",
        StoreErrorKind::InvalidArgument => "invalid_argument",
        StoreErrorKind::Other => "other",
    }
}

static STORE_ERRORS: [[Counter; KINDS.len()]; OPS.len()] =
    [const { [const { Counter::new() }; KINDS.len()] }; OPS.len()];

/// Counts one failed store call.
pub fn store_error(op: StoreOp, kind: StoreErrorKind) {
    let o = OPS.iter().position(|&x| x == op).unwrap_or(0);
    let k = KINDS
        .iter()
        .position(|&x| x == kind)
        .unwrap_or(KINDS.len() - 1);
    STORE_ERRORS[o][k].inc();
}

/// Failed store calls of `op` with `kind` so far.
pub fn store_errors(op: StoreOp, kind: StoreErrorKind) -> u64 {
    let o = OPS.iter().position(|&x| x == op).unwrap_or(0);
    let k = KINDS
        .iter()
        .position(|&x| x == kind)
        .unwrap_or(KINDS.len() - 1);
    STORE_ERRORS[o][k].get()
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

static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();

/// The catalog whose file counts per state the scrape reports (set once by the daemon).
pub fn set_catalog(c: Arc<Catalog>) {
    let _ = CATALOG.set(c);
}

// ---- the store wrapper that counts errors ------------------------------------------------

/// An `ObjectStore` that counts its inner store's errors by operation and kind.
pub struct CountingStore(Arc<dyn ObjectStore>);

/// Wraps `store` so that its errors are counted.
pub fn count_errors(store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    Arc::new(CountingStore(store))
}

fn counted<'a, T: Send + 'a>(op: StoreOp, f: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
    Box::pin(async move {
        let r = f.await;
        if let Err(e) = &r {
            store_error(op, e.kind);
        }
        r
    })
}

impl ObjectStore for CountingStore {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn put(&self, req: PutRequest) -> StoreFuture<'_, PutResult> {
        counted(StoreOp::Put, self.0.put(req))
    }
    fn head<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, ObjectMeta> {
        counted(StoreOp::Head, self.0.head(key, version_id))
    }
    fn get<'a>(&'a self, req: GetRequest<'a>) -> StoreFuture<'a, GetResult> {
        counted(StoreOp::Get, self.0.get(req))
    }
    fn restore<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        days: u32,
        tier: RestoreTier,
    ) -> StoreFuture<'a, RestoreOutcome> {
        counted(
            StoreOp::Restore,
            self.0.restore(key, version_id, days, tier),
        )
    }
    fn delete<'a>(&'a self, key: &'a str, version_id: Option<&'a str>) -> StoreFuture<'a, ()> {
        counted(StoreOp::Delete, self.0.delete(key, version_id))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ListEntry>> {
        counted(StoreOp::List, self.0.list(prefix))
    }
    fn get_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, std::collections::BTreeMap<String, String>> {
        counted(StoreOp::GetTags, self.0.get_tags(key, version_id))
    }
    fn set_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        tags: std::collections::BTreeMap<String, String>,
    ) -> StoreFuture<'a, ()> {
        counted(StoreOp::SetTags, self.0.set_tags(key, version_id, tags))
    }
    fn validates_checksums<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        counted(StoreOp::Put, self.0.validates_checksums(key))
    }
    fn purge<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        counted(StoreOp::Delete, self.0.purge(key))
    }
    fn set_storage_class<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        class: crate::store::StorageClass,
    ) -> StoreFuture<'a, Option<String>> {
        counted(
            StoreOp::Put,
            self.0.set_storage_class(key, version_id, class),
        )
    }
}

// ---- rendering -------------------------------------------------------------------------

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
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

/// Every metric in the text exposition format 0.0.4.
pub fn render() -> String {
    let mut out = String::with_capacity(8192);
    header(
        &mut out,
        "coldtier_build_info",
        "gauge",
        "Always 1; the version label is the coldtier version.",
    );
    let _ = writeln!(
        out,
        "coldtier_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        &mut out,
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
        &mut out,
        "coldtier_recall_open_timeouts_total",
        "counter",
        "Opens that gave up waiting for a stub's data after recall.timeout (EAGAIN; the recall went on).",
    );
    let _ = writeln!(
        out,
        "coldtier_recall_open_timeouts_total {}",
        RECALLS_OPEN_TIMEOUT.get()
    );
    histogram(
        &mut out,
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
        (
            "coldtier_readdirplus_entries_total",
            "Directory entries sent with their attributes (READDIRPLUS): no LOOKUP needed for them.",
            &READDIRPLUS_ENTRIES,
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", c.get());
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
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", g.get().max(0));
    }
    header(
        &mut out,
        "coldtier_store_errors_total",
        "counter",
        "Failed object-store calls, by operation and error kind.",
    );
    for (o, op) in OPS.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "coldtier_store_errors_total{{op=\"{}\",kind=\"{}\"}} {}",
                op.as_str(),
                kind_label(*kind),
                STORE_ERRORS[o][k].get()
            );
        }
    }
    header(
        &mut out,
        "coldtier_fuse_requests_total",
        "counter",
        "FUSE requests received, by operation (I/O of passthrough files bypasses the daemon).",
    );
    for (i, (_, label)) in FUSE_OPS.iter().enumerate() {
        let _ = writeln!(
            out,
            "coldtier_fuse_requests_total{{op=\"{label}\"}} {}",
            FUSE_REQUESTS[i].get()
        );
    }
    histogram(
        &mut out,
        "coldtier_catalog_write_duration_seconds",
        "Catalog write transactions, the wait for the writer included.",
        &CATALOG_WRITE_SECONDS,
    );
    if let Some(cat) = CATALOG.get() {
        match cat.state_counts() {
            Ok(counts) => {
                let pending = counts
                    .iter()
                    .find(|c| c.state == FileState::RestorePending)
                    .map_or(0, |c| c.files);
                header(
                    &mut out,
                    "coldtier_restores_pending",
                    "gauge",
                    "Stubs whose archived object is being restored (state restore_pending).",
                );
                let _ = writeln!(out, "coldtier_restores_pending {pending}");
                header(
                    &mut out,
                    "coldtier_files",
                    "gauge",
                    "Files the catalog tracks, by state.",
                );
                for c in &counts {
                    let _ = writeln!(
                        out,
                        "coldtier_files{{state=\"{}\"}} {}",
                        c.state.as_str(),
                        c.files
                    );
                }
                header(
                    &mut out,
                    "coldtier_file_bytes",
                    "gauge",
                    "Bytes (file sizes) of the files the catalog tracks, by state.",
                );
                for c in &counts {
                    let _ = writeln!(
                        out,
                        "coldtier_file_bytes{{state=\"{}\"}} {}",
                        c.state.as_str(),
                        c.bytes
                    );
                }
            }
            Err(e) => tracing::warn!("metrics: catalog: {e}"),
        }
    }
    out
}

// ---- the HTTP server -------------------------------------------------------------------

/// Listens on `addr` and serves `GET /metrics` from a thread; returns the bound address.
pub fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = answer(s) {
                            tracing::debug!("metrics: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("metrics: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(local)
}

/// Answers one request (connections are served one at a time: scrapes are rare and the
/// answer is quick; the timeouts keep a stuck client from holding the thread).
fn answer(mut s: TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return respond(&mut s, "431 Request Header Fields Too Large", "", false);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut s, "400 Bad Request", "bad request line\n", false);
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut s, "400 Bad Request", "HTTP/1.x only\n", false);
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render();
            respond_with(
                &mut s,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                method == "HEAD",
            )
        }
        ("GET" | "HEAD", _) => respond(
            &mut s,
            "404 Not Found",
            "not found: metrics are at /metrics\n",
            method == "HEAD",
        ),
        _ => respond(
            &mut s,
            "405 Method Not Allowed",
            "only GET /metrics\n",
            false,
        ),
    }
}

fn respond(s: &mut TcpStream, status: &str, body: &str, head_only: bool) -> std::io::Result<()> {
    respond_with(s, status, "text/plain; charset=utf-8", body, head_only)
}

fn respond_with(
    s: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        }
    );
    if !head_only {
        out.push_str(body);
    }
    s.write_all(out.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn fuse_requests_are_counted_under_their_own_label() {
        for (i, (op, _)) in FUSE_OPS.iter().enumerate() {
            assert_eq!(*op as usize, i, "FUSE_OPS out of order at {op:?}");
        }
        let before = FUSE_REQUESTS[FuseOp::Readdirplus as usize].get();
        fuse_request(FuseOp::Readdirplus);
        fuse_request(FuseOp::Readdirplus);
        let out = render();
        let line = out
            .lines()
            .find(|l| l.starts_with("coldtier_fuse_requests_total{op=\"readdirplus\"} "))
            .unwrap_or_else(|| panic!("{out}"));
        let n: u64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert!(n >= before + 2, "{line}");
        assert!(out.contains("coldtier_fuse_requests_total{op=\"copy_file_range\"} "));
    }

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
    fn http_server_serves_metrics_and_404() {
        let addr = serve("127.0.0.1:0".parse().unwrap()).unwrap();
        store_error(StoreOp::Get, StoreErrorKind::Throttled);
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("# TYPE coldtier_recalls_total counter\n"), "{r}");
        assert!(r.contains("coldtier_recalls_total{result=\"ok\"} "), "{r}");
        let line = r
            .lines()
            .find(|l| l.starts_with("coldtier_store_errors_total{op=\"get\",kind=\"throttled\"}"))
            .unwrap();
        assert!(!line.ends_with(" 0"), "{line}");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let r = get(addr, "GET /other HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        let r = get(addr, "garbage\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = get(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }

    #[test]
    fn every_line_is_valid_exposition_format() {
        let text = render();
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP coldtier_") || line.starts_with("# TYPE coldtier_"),
                    "{line}"
                );
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("coldtier_"), "{line}");
            assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "bad value: {line}"
            );
        }
    }
}
