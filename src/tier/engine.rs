//! The paths code outside `tier` used before the engine was cut into parts; they go once
//! every user names the part.

pub use super::context::{
    ns_of, split_ns, MountView, RunningJob, StepError, StoreState, Tiering, KEY_PREFIX,
};
pub use super::hooks::content_matches;
pub use super::record::{fill_from_record, Transition};
