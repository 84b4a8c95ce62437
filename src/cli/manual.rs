//! The generated texts: shell completions and man pages, from the clap definitions.

mod pages;

use std::io::Write;

use super::args::{CompletionsArgs, ManpageArgs};
use super::BadInput;

pub(super) fn completions(a: &CompletionsArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "coldtier", &mut buf);
    std::io::stdout().write_all(&buf)?;
    Ok(())
}

pub(super) fn manpage(a: &ManpageArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let pages = pages::all(super::Cli::command());
    let Some(dir) = &a.dir else {
        let want = a.page.as_deref().unwrap_or("coldtier");
        let Some(page) = pages
            .iter()
            .find(|p| p.name == want || p.file_name() == want)
        else {
            let names: Vec<String> = pages.iter().map(|p| p.name.clone()).collect();
            return Err(BadInput(format!("no page {want}: one of {}", names.join(", "))).into());
        };
        std::io::stdout().write_all(page.text.as_bytes())?;
        return Ok(());
    };
    // A man tree: DIR/man1/coldtier*.1, DIR/man5/coldtier.toml.5.
    for page in &pages {
        let sub = dir.join(format!("man{}", page.section));
        std::fs::create_dir_all(&sub).map_err(|e| BadInput(format!("{}: {e}", sub.display())))?;
        let path = sub.join(page.file_name());
        std::fs::write(&path, &page.text)
            .map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
