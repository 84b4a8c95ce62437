//! Tiering: the file state machine, the stub record, the migration policy and its
//! schedule (pure logic), and the parts that do the I/O: the records on backing files
//! (`marks`), the daemon-side engine with the overlay hooks and the recall (`engine`),
//! policy runs, release and gc (`migrate`), and the control-socket answers (`ops`).

pub mod background;
pub mod config;
pub mod engine;
pub mod marks;
pub mod metrics;
pub mod migrate;
pub mod policy;
pub mod rebuild;
pub mod reconcile;
pub mod state;
pub mod stub;
