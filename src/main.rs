//! coldtier: parse the command line, run it, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;
use coldtier::cli::args::{CatalogCommand, Cli, Command};
use coldtier::{cli, daemon};

/// The commands that run in this process go to the daemon module (`mount`, `umount`,
/// `restart`, the offline `catalog rebuild`); the others talk to a daemon through `cli`.
fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Mount(a) => daemon::mount(a, &cli.log),
        Command::Umount(a) => daemon::umount(a),
        Command::Restart(a) => daemon::restart(a),
        Command::Catalog(CatalogCommand::Rebuild(a)) => daemon::rebuild::run(a),
        c => cli::run(c),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Mount(_)) {
        // A command whose output is closed (`coldtier events --json | head`) ends quietly,
        // as other Unix tools do, instead of failing on EPIPE (Rust ignores SIGPIPE).
        // The daemon keeps ignoring it: a client that goes away must not end it.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldtier: {e:#}");
            if e.downcast_ref::<cli::BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
