//! coldtier: a FUSE overlay over a file share that tiers cold files to S3 (library part;
//! the binary in main.rs only parses the command line and calls in here).
//! docs/architecture.md draws the layers: base <- store, catalog, fs <- tier <- jobs,
//! daemon; control <- cli.

pub mod base;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fs;
pub mod jobs;
pub mod store;
pub mod tier;
