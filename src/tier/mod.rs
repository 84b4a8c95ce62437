//! Tiering, the domain: which files go to the store, how a copy is proven, how a stub
//! comes back, and how every change is recorded. Layer: imports base, store, catalog and
//! fs; `jobs` and `daemon` import it.
//!
//! * `model/`: pure logic: the state machine, the stub record, the policy.
//! * `config`: the engine's config sections and its [`config::Settings`].
//! * `context`: [`context::Tiering`], what one mount's tiering holds.
//! * `record`: the one way a change of a file is recorded ([`context::Tiering::record`]).
//! * `marks`: the records on the backing files (the truth).
//! * `hooks`: what the overlay tells the engine (open, write, truncate, rename, unlink).
//! * `recall`: bringing a stub's data back, archive restores included.
//! * `bulk`: `coldtier recall` of many stubs, fetched at once and finished in batches.
//! * `migrate`: policy runs, the copy, its proof, the stub step.
//! * `gc`, `verify`, `rebuild`, `recovery`: deleting old objects, checking files against
//!   the bucket, rebuilding a lost catalog, putting in order what a crash left.
//! * `background`: the tagger and restore pollers (workers on the engine's runner).
//! * `metrics`: the engine's metrics.

pub mod background;
pub mod budget;
pub mod bulk;
pub mod config;
pub mod context;
pub mod gc;
pub mod hooks;
pub mod manual;
pub mod marks;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod pack;
pub mod readers;
pub mod rebuild;
pub mod recall;
pub mod record;
pub mod recovery;
pub mod repack;
pub mod replicate;
pub mod rules;
pub mod stream;
pub mod usage;
pub mod verify;

// The model's modules by their short paths (`tier::state`, `tier::stub`, `tier::policy`).
pub use model::{policy, state, stub};
