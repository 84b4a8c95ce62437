//! The store decorator that counts failed calls by operation and error kind
//! (`coldtier_store_errors_total`).

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
