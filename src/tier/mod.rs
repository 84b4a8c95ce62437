//! Tiering: the file state machine, the stub record, the migration policy and its
//! schedule. Everything here so far is pure logic; scan, migrate and recall (which do the
//! I/O) build on it.

pub mod policy;
pub mod schedule;
pub mod state;
pub mod stub;
