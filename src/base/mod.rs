//! The leaf of the crate: small things every other module may use. Nothing here imports
//! any other module of coldtier (tests/layers.rs checks it).

pub mod cancel;
pub mod cron;
pub mod failpoint;
pub mod logging;
pub mod metrics;
pub mod mountinfo;
pub mod notify;
pub mod private;
pub mod progress;
pub mod random;
pub mod throttle;
pub mod time;
pub mod units;
pub mod worker;
