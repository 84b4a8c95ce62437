//! `[fuse]`: the overlay's own config section (how the mount talks to the kernel).

use std::time::Duration;

use serde::Deserialize;

/// `[fuse]`: how the mount talks to the kernel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FuseConfig {
    /// Serve resident files' reads and writes in the kernel (FUSE passthrough).
    pub passthrough: bool,
    /// Request-handling threads (0 = 2 x cores, at least 4).
    pub threads: usize,
    /// How long the kernel may cache attributes, e.g. "1s", "500ms". Changes made through
    /// the mount are always seen at once; this bounds how long a change made to the backing
    /// tree by other means (e.g. another NFS client of the source) can go unseen.
    pub attr_timeout: String,
    /// How long the kernel may cache name lookups.
    pub entry_timeout: String,
    /// O_PATH fds the inode table may hold before it reaches inodes by file handle
    /// (0 = three quarters of RLIMIT_NOFILE).
    pub inode_fds: usize,
    /// When directory listings carry each entry's attributes (READDIRPLUS).
    pub readdirplus: Readdirplus,
}

/// `fuse.readdirplus`: when the kernel asks for directory entries with their attributes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Readdirplus {
    /// Every listing: a walk that stats what it lists (`ls -l`, `find`, `du`, rsync, Samba
    /// and NFS re-export) needs no lookup per entry.
    #[default]
    Always,
    /// The kernel's adaptive mode: attributes for the first block of a listing and after
    /// a stat in the directory; cheaper for listings that only read names.
    Auto,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            passthrough: true,
            threads: 0,
            attr_timeout: "10s".into(),
            entry_timeout: "10s".into(),
            inode_fds: 0,
            readdirplus: Readdirplus::Always,
        }
    }
}

impl FuseConfig {
    pub fn attr_timeout(&self) -> Duration {
        crate::base::units::parse_duration(&self.attr_timeout).unwrap_or(Duration::from_secs(1))
    }

    pub fn entry_timeout(&self) -> Duration {
        crate::base::units::parse_duration(&self.entry_timeout).unwrap_or(Duration::from_secs(1))
    }

    pub fn threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        (cores * 2).max(4)
    }
}
