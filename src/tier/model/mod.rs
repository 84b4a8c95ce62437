//! The engine's pure model: no I/O, no store, no catalog handle. `state` is the file state
//! machine (every transition and the events it records), `stub` the stub and copy records
//! and the object keys, `policy` which files a run picks. Each has its own tests; the rest
//! of `tier` does the I/O around them.

pub mod policy;
pub mod state;
pub mod stub;
