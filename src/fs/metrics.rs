//! The overlay's metrics: FUSE requests by operation and READDIRPLUS entries.

use std::fmt::Write as _;

use crate::base::metrics::{counter, header, Counter};

/// Directory entries the daemon sent with their attributes and a lookup reference
/// (READDIRPLUS): entries the kernel needs no LOOKUP for.
pub static READDIRPLUS_ENTRIES: Counter = Counter::new();
/// Directory entries sent by name only in a READDIRPLUS (the kernel held the node with
/// the same attributes, still fresh): no attributes changed, no cached ACL dropped.
pub static READDIRPLUS_NAME_ONLY: Counter = Counter::new();

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
    Ioctl,
}

const FUSE_OPS: [(FuseOp, &str); 33] = [
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
    (FuseOp::Ioctl, "ioctl"),
];

/// FUSE requests received, by operation (reads and writes of passthrough files never reach
/// the daemon and are not counted).
static FUSE_REQUESTS: [Counter; FUSE_OPS.len()] = [const { Counter::new() }; FUSE_OPS.len()];

/// Counts one FUSE request of kind `op`.
pub fn fuse_request(op: FuseOp) {
    FUSE_REQUESTS[op as usize].inc();
}

/// Renders the overlay's metrics.
pub fn render(out: &mut String) {
    counter(
        out,
        "coldtier_readdirplus_entries_total",
        "Directory entries sent with their attributes (READDIRPLUS): no LOOKUP needed for them.",
        &READDIRPLUS_ENTRIES,
    );
    counter(
        out,
        "coldtier_readdirplus_name_only_total",
        "Directory entries sent by name only (READDIRPLUS): the kernel held them, fresh.",
        &READDIRPLUS_NAME_ONLY,
    );
    header(
        out,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_requests_are_counted_under_their_own_label() {
        for (i, (op, _)) in FUSE_OPS.iter().enumerate() {
            assert_eq!(*op as usize, i, "FUSE_OPS out of order at {op:?}");
        }
        let before = FUSE_REQUESTS[FuseOp::Readdirplus as usize].get();
        fuse_request(FuseOp::Readdirplus);
        fuse_request(FuseOp::Readdirplus);
        let mut out = String::new();
        render(&mut out);
        crate::base::metrics::assert_valid_exposition(&out);
        let line = out
            .lines()
            .find(|l| l.starts_with("coldtier_fuse_requests_total{op=\"readdirplus\"} "))
            .unwrap_or_else(|| panic!("{out}"));
        let n: u64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert!(n >= before + 2, "{line}");
        assert!(out.contains("coldtier_fuse_requests_total{op=\"copy_file_range\"} "));
    }
}
