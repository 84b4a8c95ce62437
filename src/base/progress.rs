//! The progress of a long job as every layer reports it: the engine's policy runs and
//! checks, the daemon's relay, the wire (`control::protocol` carries it) and the CLI's bar.

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
