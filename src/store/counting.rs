//! The store decorator that counts failed calls by operation and error kind
//! (`coldtier_store_errors_total`), and keeps what an on-call admin alerts on: whether the
//! store answered the last call (`coldtier_store_up`) and when each kind of error was
//! last seen (`coldtier_store_last_error_timestamp_seconds`).

use std::fmt::Write as _;
use std::sync::Arc;

use crate::base::metrics::{header, Counter};
use crate::store::{
    GetRequest, GetResult, ListEntry, ObjectMeta, ObjectStore, PutRequest, PutResult,
    RestoreOutcome, RestoreTier, StoreErrorKind, StoreFuture,
};

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

/// 1 when the last store call was answered by the store (an answer that an object is
/// missing or archived counts: the store is there), 0 when it was not (unreachable,
/// credentials refused, a wrong configuration, a server error); -1 before the first call.
static STORE_UP: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
/// When each kind of error was last seen (ns since the epoch; 0: never).
static LAST_ERROR_NS: [std::sync::atomic::AtomicI64; KINDS.len()] =
    [const { std::sync::atomic::AtomicI64::new(0) }; KINDS.len()];
/// The kind of the last error (an index into KINDS, plus one; 0: none yet).
static LAST_ERROR_KIND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether an error of `kind` means the store did not answer (or cannot serve us at all).
fn store_down(kind: StoreErrorKind) -> bool {
    match kind {
        StoreErrorKind::Unreachable
        | StoreErrorKind::AccessDenied
        | StoreErrorKind::InvalidConfig
        | StoreErrorKind::Other => true,
        StoreErrorKind::NotFound
        | StoreErrorKind::InvalidObjectState
        | StoreErrorKind::Throttled
        | StoreErrorKind::ChecksumMismatch
        | StoreErrorKind::InvalidArgument => false,
    }
}

/// Notes the outcome of one store call for `coldtier_store_up` and the last-error gauges.
pub fn store_outcome(kind: Option<StoreErrorKind>) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(kind) = kind else {
        STORE_UP.store(1, Relaxed);
        return;
    };
    STORE_UP.store(if store_down(kind) { 0 } else { 1 }, Relaxed);
    if let Some(k) = KINDS.iter().position(|&x| x == kind) {
        LAST_ERROR_NS[k].store(crate::base::time::system_now_ns(), Relaxed);
        LAST_ERROR_KIND.store(k + 1, Relaxed);
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
        store_outcome(r.as_ref().err().map(|e| e.kind));
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
    fn get_range_chunks<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        size: u64,
        range: (u64, u64),
        sink: &'a (dyn Fn(bytes::Bytes) + Send + Sync),
    ) -> StoreFuture<'a, ()> {
        counted(
            StoreOp::Get,
            self.0.get_range_chunks(key, version_id, size, range, sink),
        )
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

    fn multipart_proven<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        counted(StoreOp::Put, self.0.multipart_proven(key))
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
    fn copy_source(&self) -> Option<crate::store::CopySource> {
        self.0.copy_source()
    }
    fn copy_from<'a>(
        &'a self,
        from: &'a crate::store::CopySource,
        key: &'a str,
        version_id: Option<&'a str>,
        size: u64,
        algo: crate::store::ChecksumAlgo,
    ) -> Option<StoreFuture<'a, crate::store::CopyResult>> {
        self.0
            .copy_from(from, key, version_id, size, algo)
            .map(|f| counted(StoreOp::Put, f))
    }
}

/// Renders the error counters.
pub fn render(out: &mut String) {
    header(
        out,
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
    use std::sync::atomic::Ordering::Relaxed;
    header(
        out,
        "coldtier_store_up",
        "gauge",
        "1 if the store answered the last call (or the last probe, every minute while \
         metrics are on), 0 if it did not (unreachable, access denied, bad configuration, \
         server error), -1 before the first call.",
    );
    let _ = writeln!(out, "coldtier_store_up {}", STORE_UP.load(Relaxed));
    header(
        out,
        "coldtier_store_last_error_timestamp_seconds",
        "gauge",
        "When a store call last failed with each error kind (0: never since the start).",
    );
    for (k, kind) in KINDS.iter().enumerate() {
        let _ = writeln!(
            out,
            "coldtier_store_last_error_timestamp_seconds{{kind=\"{}\"}} {}",
            kind_label(*kind),
            LAST_ERROR_NS[k].load(Relaxed) as f64 / 1e9
        );
    }
    header(
        out,
        "coldtier_store_last_error_info",
        "gauge",
        "Always 1; the kind label is the kind of the last failed store call (none: none yet).",
    );
    let last = match LAST_ERROR_KIND.load(Relaxed) {
        0 => "none",
        k => kind_label(KINDS[k - 1]),
    };
    let _ = writeln!(out, "coldtier_store_last_error_info{{kind=\"{last}\"}} 1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_operation_and_kind() {
        let before = store_errors(StoreOp::Get, StoreErrorKind::Throttled);
        store_error(StoreOp::Get, StoreErrorKind::Throttled);
        assert_eq!(
            store_errors(StoreOp::Get, StoreErrorKind::Throttled),
            before + 1
        );
        let mut out = String::new();
        render(&mut out);
        crate::base::metrics::assert_valid_exposition(&out);
        let line = out
            .lines()
            .find(|l| l.starts_with("coldtier_store_errors_total{op=\"get\",kind=\"throttled\"}"))
            .unwrap();
        assert!(!line.ends_with(" 0"), "{line}");
    }
}
