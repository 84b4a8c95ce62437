//! The command line: the clap definitions (`args`) and the client side of every command
//! that asks a mount's daemon over the control socket: each finds the mount of its path,
//! sends requests, and prints the answers (text for people, `--json` for scripts).
//! Exit codes: 0 done, 1 something failed (the output says what), 2 bad input.
//!
//! Layer: imports `control` and `base` only (docs/architecture.md). The commands that run
//! in this process (`mount`, `umount`, `catalog rebuild`) are dispatched by main.rs to the
//! daemon module, which imports their argument types from `args`.

pub mod args;
mod catalog;
mod files;
mod jobs;
mod manual;
pub mod output;
pub mod progress;
mod reports;
mod request;

pub use args::{Cli, Command};

/// A problem with what the user asked for: reported in one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Runs a command that talks to a daemon (or prints generated text). `mount`, `umount` and
/// `catalog rebuild` run in the process itself: main.rs dispatches them.
pub fn run(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Status(a) => files::status(a),
        Command::Pin(a) => files::pin(a, true),
        Command::Unpin(a) => files::pin(a, false),
        Command::Recall(a) => files::recall(a),
        Command::Release(a) => files::release(a),
        Command::History(a) => files::history(a),
        Command::Ls(a) => files::ls(a),
        Command::Migrate(a) => jobs::migrate(a),
        Command::Archive(a) => jobs::archive(a),
        Command::Replicate(a) => jobs::replicate(a),
        Command::Replicas(a) => jobs::replicas(a),
        Command::Gc(a) => jobs::gc(a),
        Command::Verify(a) => jobs::verify(a),
        Command::Jobs(a) => jobs::jobs(a),
        Command::Recalls(a) => jobs::recalls(a),
        Command::Mounts(a) => jobs::mounts(a),
        Command::Pause(a) => jobs::pause(a),
        Command::Resume(a) => jobs::resume(a),
        Command::Find(a) => reports::find(a),
        Command::Stats(a) => reports::stats(a),
        Command::Events(a) => reports::events(a),
        Command::Config(a) => reports::config(&a.command),
        Command::Audit(a) => reports::audit(a),
        Command::Catalog(args::CatalogCommand::Backup(a)) => catalog::backup(a),
        Command::Completions(a) => manual::completions(a),
        Command::Manpage(a) => manual::manpage(a),
        Command::Mount(_)
        | Command::Umount(_)
        | Command::Restart(_)
        | Command::Catalog(args::CatalogCommand::Rebuild(_)) => {
            unreachable!("run in the process itself: main.rs dispatches it")
        }
    }
}
