//! The overlay filesystem: backing syscalls, inode table, the filesystem logic, the FUSE adapter.

pub mod backing;
pub mod backing_ids;
pub mod blockdev;
pub mod config;
pub mod dosattrib;
pub mod fuse;
pub mod gate;
pub mod inodes;
pub mod metrics;
pub mod overlay;
pub mod privs;
